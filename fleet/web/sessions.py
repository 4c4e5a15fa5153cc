"""Dashboard sign-in sessions: a random id in the browser's cookie, its SHA-256 in `web_sessions`.

Repositories never commit: the caller owns the transaction.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from fleet.store.accounts import Principal
from fleet.store.tables import accounts
from fleet.store.tables_web import web_sessions

# What a session acts as: everything an API key may do, and nothing an ingest token may not.
SESSION_KIND = "session"
_MAX_TOKEN_CHARS = 100


def hash_session_id(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


async def create_session(
    conn: AsyncConnection, account_id: int, now: datetime, lifetime: timedelta
) -> str:
    """Start a session and return its id: the only moment the plain id exists."""
    session_id = secrets.token_urlsafe(32)  # 256 bits: unguessable, so SHA-256 is enough
    await conn.execute(
        sa.insert(web_sessions).values(
            id_hash=hash_session_id(session_id),
            account_id=account_id,
            created_at=now,
            expires_at=now + lifetime,
        )
    )
    return session_id


async def resolve_session(
    conn: AsyncConnection, session_id: str, now: datetime
) -> Principal | None:
    """The account a live session acts for; None for an unknown, ended or expired one."""
    if not session_id or len(session_id) > _MAX_TOKEN_CHARS:
        return None
    digest = hash_session_id(session_id)
    row = (
        await conn.execute(
            sa.select(
                web_sessions.c.id_hash, web_sessions.c.expires_at, accounts.c.id, accounts.c.name
            )
            .join(accounts, accounts.c.id == web_sessions.c.account_id)
            .where(web_sessions.c.id_hash == digest)
        )
    ).first()
    if row is None or not hmac.compare_digest(row.id_hash, digest) or row.expires_at <= now:
        return None
    return Principal(account_id=int(row.id), account_name=row.name, key_kind=SESSION_KIND)


async def end_session(conn: AsyncConnection, session_id: str) -> None:
    if session_id and len(session_id) <= _MAX_TOKEN_CHARS:
        await conn.execute(
            sa.delete(web_sessions).where(web_sessions.c.id_hash == hash_session_id(session_id))
        )


async def purge_expired(conn: AsyncConnection, now: datetime) -> int:
    result = await conn.execute(sa.delete(web_sessions).where(web_sessions.c.expires_at <= now))
    return result.rowcount or 0
