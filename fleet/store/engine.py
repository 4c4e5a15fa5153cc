"""Engines for one database URL: an async one for the service, a sync one for Alembic.

Users write plain `sqlite:///…` or `postgresql://…`; the drivers are Fleet's choice
(aiosqlite/asyncpg for the service, sqlite3/psycopg for migrations).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

_ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}
_SYNC_DRIVERS = {"sqlite": "sqlite", "postgresql": "postgresql+psycopg"}


def _with_driver(url: str, drivers: dict[str, str]) -> URL:
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "postgres":
        backend = "postgresql"
    if backend not in drivers:
        raise ValueError(
            f"unsupported database {backend!r} in FLEET_DATABASE_URL: use sqlite:///file.db "
            "or postgresql://user@host/db"
        )
    return parsed.set(drivername=drivers[backend])


def async_url(url: str) -> URL:
    return _with_driver(url, _ASYNC_DRIVERS)


def sync_url(url: str) -> URL:
    return _with_driver(url, _SYNC_DRIVERS)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the API read while the ingest writes; foreign keys make ON DELETE CASCADE work;
    # NORMAL sync is durable across a process crash (WAL), which is what SQLite mode promises.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def create_engine(url: str, *, pool_size: int = 10, pre_ping: bool = True) -> AsyncEngine:
    """`pre_ping` tests each pooled connection as it is taken (a connection the database closed
    meanwhile is replaced, not handed out): on asyncpg that costs three round trips (BEGIN,
    `;`, ROLLBACK) before every transaction. Only for a user that retries a failed transaction
    anyway (the ingest) is it worth leaving out."""
    target = async_url(url)
    if target.get_backend_name() == "sqlite":
        engine = create_async_engine(target)
    else:
        engine = create_async_engine(
            target, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=pre_ping
        )
    if target.get_backend_name() == "sqlite":
        sa.event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def create_sync_engine(url: str) -> sa.Engine:
    target = sync_url(url)
    engine = sa.create_engine(target)
    if target.get_backend_name() == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    return engine
