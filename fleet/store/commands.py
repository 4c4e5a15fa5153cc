"""command_log queries. Every read is scoped to an account through the device it targets."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from fleet.services.transports import TargetDevice
from fleet.store.tables import command_log, device_status, devices

FINISHED = ("COMPLETED", "FAILED", "TIMEOUT", "CANCELLED")


async def target_device(
    conn: AsyncConnection, account_id: int, device_id: int
) -> TargetDevice | None:
    row = (
        await conn.execute(
            sa.select(
                devices.c.id, devices.c.kind, devices.c.uid, devices.c.hostname, devices.c.namespace
            ).where(devices.c.id == device_id, devices.c.account_id == account_id)
        )
    ).first()
    if row is None:
        return None
    return TargetDevice(row.id, row.kind, row.uid, row.hostname, row.namespace)


async def next_sequence(conn: AsyncConnection, device_id: int) -> int:
    """A strictly increasing per-device counter: the device drops any frame not above the last."""
    result = await conn.execute(
        sa.update(device_status)
        .where(device_status.c.device_id == device_id)
        .values(command_sequence=device_status.c.command_sequence + 1)
        .returning(device_status.c.command_sequence)
    )
    value = result.scalar_one_or_none()
    if value is None:
        await conn.execute(sa.insert(device_status).values(device_id=device_id, command_sequence=1))
        return 1
    return int(value)


async def insert_command(conn: AsyncConnection, values: dict[str, Any]) -> int:
    result = await conn.execute(sa.insert(command_log).values(**values).returning(command_log.c.id))
    return int(result.scalar_one())


async def update_command(conn: AsyncConnection, command_id: int, **values: Any) -> None:
    await conn.execute(
        sa.update(command_log).where(command_log.c.id == command_id).values(**values)
    )


async def get_command(
    conn: AsyncConnection, account_id: int, command_id: int
) -> dict[str, Any] | None:
    row = (
        await conn.execute(
            sa.select(command_log)
            .join(devices, devices.c.id == command_log.c.device_id)
            .where(command_log.c.id == command_id, devices.c.account_id == account_id)
        )
    ).first()
    return None if row is None else dict(row._mapping)


async def by_request_id(
    conn: AsyncConnection, device_id: int, request_id: str
) -> dict[str, Any] | None:
    row = (
        await conn.execute(
            sa.select(command_log).where(
                command_log.c.device_id == device_id, command_log.c.request_id == request_id
            )
        )
    ).first()
    return None if row is None else dict(row._mapping)


async def due_for_retry(conn: AsyncConnection, now: datetime, limit: int) -> list[dict[str, Any]]:
    """PENDING commands whose retry time has come (the broker refused them, or they timed out)."""
    query = (
        sa.select(command_log)
        .where(command_log.c.status == "PENDING", command_log.c.next_retry_at <= now)
        .order_by(command_log.c.next_retry_at)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        # Several Fleet processes may run this job; each row goes to exactly one of them.
        query = query.with_for_update(skip_locked=True)
    return [dict(row._mapping) for row in await conn.execute(query)]


async def sent_before(conn: AsyncConnection, cutoff: datetime, limit: int) -> list[dict[str, Any]]:
    query = (
        sa.select(command_log)
        .where(command_log.c.status == "SENT", command_log.c.sent_at < cutoff)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return [dict(row._mapping) for row in await conn.execute(query)]


async def by_id(conn: AsyncConnection, command_id: int) -> dict[str, Any] | None:
    row = (await conn.execute(sa.select(command_log).where(command_log.c.id == command_id))).first()
    return None if row is None else dict(row._mapping)


async def device_of(conn: AsyncConnection, device_id: int) -> TargetDevice | None:
    row = (
        await conn.execute(
            sa.select(
                devices.c.id, devices.c.kind, devices.c.uid, devices.c.hostname, devices.c.namespace
            ).where(devices.c.id == device_id)
        )
    ).first()
    return (
        None
        if row is None
        else TargetDevice(row.id, row.kind, row.uid, row.hostname, row.namespace)
    )
