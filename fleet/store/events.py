"""The event log: append inside the caller's transaction, read by account and cursor."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from fleet.core.events import Event
from fleet.store.tables import events


async def append(conn: AsyncConnection, batch: Sequence[Event]) -> None:
    if batch:
        await conn.execute(
            sa.insert(events),
            [
                {
                    "account_id": e.account_id,
                    "type": e.type,
                    "device_id": e.device_id,
                    "data": e.data,
                }
                for e in batch
            ],
        )


async def read_after(
    conn: AsyncConnection,
    account_id: int,
    cursor: int,
    *,
    limit: int = 500,
    types: Sequence[str] | None = None,
    device_id: int | None = None,
) -> list[dict[str, Any]]:
    query = (
        sa.select(events)
        .where(events.c.account_id == account_id, events.c.id > cursor)
        .order_by(events.c.id)
        .limit(limit)
    )
    if types:
        query = query.where(events.c.type.in_(list(types)))
    if device_id is not None:
        query = query.where(events.c.device_id == device_id)
    return [dict(row._mapping) for row in await conn.execute(query)]


async def last_id(conn: AsyncConnection) -> int:
    return int(await conn.scalar(sa.select(sa.func.coalesce(sa.func.max(events.c.id), 0))) or 0)


async def delete_before(conn: AsyncConnection, cutoff: datetime) -> int:
    result = await conn.execute(sa.delete(events).where(events.c.created_at < cutoff))
    return result.rowcount or 0
