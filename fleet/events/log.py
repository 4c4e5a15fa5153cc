"""The queries of the event stream over the `events` table (fleet/store/events.py appends).

Every function takes the caller's connection except `prune`, which owns its short transactions.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from fleet.events.model import EventFilter, StreamEvent
from fleet.store.tables import events

_COLUMNS = (
    events.c.id,
    events.c.account_id,
    events.c.type,
    events.c.device_id,
    events.c.data,
    events.c.created_at,
)
PRUNE_BATCH = 5000


def _time(value: datetime) -> str:
    # The API's spelling of an aware UTC time (pydantic's): 2025-03-01T12:00:00.123456Z
    return value.isoformat().replace("+00:00", "Z")


def to_event(row: Any) -> StreamEvent:
    """A row as the stream hands it out, its JSON built once for every client."""
    body = {
        "cursor": row.id,
        "type": row.type,
        "device_id": row.device_id,
        "data": row.data,
        "time": _time(row.created_at),
    }
    return StreamEvent(
        cursor=int(row.id),
        account_id=int(row.account_id),
        type=str(row.type),
        device_id=row.device_id,
        json=json.dumps(body, separators=(",", ":"), ensure_ascii=False, default=str),
    )


async def read_all(
    conn: AsyncConnection, after: int, *, upto: int | None = None, limit: int | None = None
) -> list[StreamEvent]:
    """Every account's events after `after` (and up to `upto`), in cursor order."""
    query = sa.select(*_COLUMNS).where(events.c.id > after).order_by(events.c.id)
    if upto is not None:
        query = query.where(events.c.id <= upto)
    if limit is not None:
        query = query.limit(limit)
    return [to_event(row) for row in await conn.execute(query)]


async def read_account(
    conn: AsyncConnection,
    account_id: int,
    after: int,
    upto: int,
    flt: EventFilter,
    limit: int,
) -> list[StreamEvent]:
    """One account's events in (after, upto] that pass the filter, in cursor order."""
    query = (
        sa.select(*_COLUMNS)
        .where(events.c.account_id == account_id, events.c.id > after, events.c.id <= upto)
        .order_by(events.c.id)
        .limit(limit)
    )
    if flt.types is not None:
        query = query.where(events.c.type.in_(sorted(flt.types)))
    if flt.device_id is not None:
        query = query.where(events.c.device_id == flt.device_id)
    return [to_event(row) for row in await conn.execute(query)]


async def id_range(conn: AsyncConnection) -> tuple[int | None, int | None]:
    """(oldest, newest) cursor kept, or (None, None) when the log is empty."""
    row = (await conn.execute(sa.select(sa.func.min(events.c.id), sa.func.max(events.c.id)))).one()
    return (
        None if row[0] is None else int(row[0]),
        None if row[1] is None else int(row[1]),
    )


# Every transaction that may still commit an event holds ROW EXCLUSIVE on `events` from before it
# draws its id from the sequence (the lock is taken when the INSERT is parsed or its plan locked)
# until it ends. So once every holder seen after a read has ended, no id below what that read
# saw can appear any more. DELETEs (retention) hold it too: they only make the wait longer.
_WRITERS = sa.text(
    """
    SELECT DISTINCT virtualtransaction FROM pg_locks
    WHERE locktype = 'relation'
      AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND relation = CAST('events' AS regclass)
      AND mode = 'RowExclusiveLock'
      AND pid IS DISTINCT FROM pg_backend_pid()
    """
)


async def writers_in_flight(conn: AsyncConnection, among: Sequence[str] | None = None) -> list[str]:
    """PostgreSQL: the transactions that may still add rows to `events` (all, or those of
    `among` still running)."""
    found = [str(v) for v in (await conn.execute(_WRITERS)).scalars()]
    if among is None:
        return found
    wanted = set(among)
    return [v for v in found if v in wanted]


async def prune(engine: AsyncEngine, cutoff: datetime, batch: int = PRUNE_BATCH) -> int:
    """Delete events created before `cutoff`, oldest first, in short transactions.

    The newest event is always kept, whatever its age: on SQLite a table emptied to its last row
    would hand out ids again from the top of what is left, and cursors must never go back.
    """
    removed = 0
    newest = sa.select(sa.func.max(events.c.id)).scalar_subquery()
    while True:
        victims = (
            sa.select(events.c.id)
            .where(events.c.created_at < cutoff, events.c.id < newest)
            .order_by(events.c.id)
            .limit(batch)
            .scalar_subquery()
        )
        async with engine.begin() as conn:
            result = await conn.execute(sa.delete(events).where(events.c.id.in_(victims)))
        count = result.rowcount or 0
        removed += count
        if count < batch:
            return removed
