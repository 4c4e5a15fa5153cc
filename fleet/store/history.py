"""A device's past for the API: its heartbeats rows and the commands it was sent.

Every query joins to devices and filters by account. Lists are newest first and take the key of
the last row already served (keyset paging), so they stay stable while new rows arrive.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from fleet.store.tables import command_log, devices, heartbeats

_HEARTBEAT_COLUMNS = [c for c in heartbeats.c if c.name != "device_id"]


def _owned_by(account_id: int, device_id: int) -> sa.ColumnElement[bool]:
    return sa.and_(devices.c.id == device_id, devices.c.account_id == account_id)


async def list_heartbeats(
    conn: AsyncConnection,
    account_id: int,
    device_id: int,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    change_type: str | None = None,
    before: tuple[datetime, int] | None = None,
    limit: int,
) -> list[dict[str, Any]]:
    """Rows with since <= time < until, newest first, strictly after the (time, id) `before`."""
    query = (
        sa.select(*_HEARTBEAT_COLUMNS)
        .join(devices, devices.c.id == heartbeats.c.device_id)
        .where(_owned_by(account_id, device_id))
    )
    if since is not None:
        query = query.where(heartbeats.c.time >= since)
    if until is not None:
        query = query.where(heartbeats.c.time < until)
    if change_type is not None:
        query = query.where(heartbeats.c.change_type == change_type)
    if before is not None:
        time, row_id = before
        query = query.where(
            sa.or_(
                heartbeats.c.time < time,
                sa.and_(heartbeats.c.time == time, heartbeats.c.id < row_id),
            )
        )
    query = query.order_by(heartbeats.c.time.desc(), heartbeats.c.id.desc()).limit(limit)
    return [dict(row._mapping) for row in await conn.execute(query)]


async def list_commands(
    conn: AsyncConnection,
    account_id: int,
    device_id: int,
    *,
    before_id: int | None = None,
    limit: int,
) -> list[dict[str, Any]]:
    """command_log rows of one device, newest (highest id) first."""
    query = (
        sa.select(command_log)
        .join(devices, devices.c.id == command_log.c.device_id)
        .where(_owned_by(account_id, device_id))
    )
    if before_id is not None:
        query = query.where(command_log.c.id < before_id)
    query = query.order_by(command_log.c.id.desc()).limit(limit)
    return [dict(row._mapping) for row in await conn.execute(query)]
