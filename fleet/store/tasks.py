"""tasks and task_devices queries. Reads for the API are scoped to an account; the dispatcher's
claims lock rows (`FOR UPDATE SKIP LOCKED` on PostgreSQL) so two Fleet processes never take the
same task batch or device.

Repositories never commit: the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from fleet.store import bulk
from fleet.store.tables import accounts, devices
from fleet.store.tables_tasks import task_devices, tasks

CHUNK = 5000


def _skip_locked(conn: AsyncConnection, query: sa.Select[Any], *of: sa.Table) -> sa.Select[Any]:
    if conn.dialect.name == "postgresql":
        return query.with_for_update(skip_locked=True, of=list(of) or None)
    return query


async def insert_task(conn: AsyncConnection, values: dict[str, Any]) -> None:
    await conn.execute(sa.insert(tasks).values(**values))


TASK_DEVICE_COLUMNS = ("task_id", "device_id", "device_uid", "command_status", "last_updated")


async def insert_task_devices(conn: AsyncConnection, rows: Sequence[tuple[Any, ...]]) -> None:
    """Rows as tuples in TASK_DEVICE_COLUMNS order; one statement per CHUNK rows."""
    for start in range(0, len(rows), CHUNK):
        await bulk.insert_rows(conn, task_devices, TASK_DEVICE_COLUMNS, rows[start : start + CHUNK])


async def get_task(conn: AsyncConnection, account_id: int, task_id: str) -> dict[str, Any] | None:
    row = (
        await conn.execute(
            sa.select(tasks).where(tasks.c.task_id == task_id, tasks.c.account_id == account_id)
        )
    ).first()
    return None if row is None else dict(row._mapping)


async def lock_task(
    conn: AsyncConnection, task_id: str, statuses: Collection[str], *, wait: bool
) -> dict[str, Any] | None:
    """The task row, locked for this transaction on PostgreSQL, if it is in `statuses`.
    `wait=False` skips a task another worker holds."""
    query = sa.select(tasks).where(tasks.c.task_id == task_id, tasks.c.status.in_(list(statuses)))
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=not wait)
    row = (await conn.execute(query)).first()
    return None if row is None else dict(row._mapping)


async def update_task(conn: AsyncConnection, task_id: str, **values: Any) -> None:
    await conn.execute(sa.update(tasks).where(tasks.c.task_id == task_id).values(**values))


async def find_by_correlation(
    conn: AsyncConnection, account_id: int, correlation_id: str
) -> str | None:
    value = await conn.scalar(
        sa.select(tasks.c.task_id).where(
            tasks.c.account_id == account_id, tasks.c.correlation_id == correlation_id
        )
    )
    return None if value is None else str(value)


async def counts(conn: AsyncConnection, task_id: str) -> dict[str, int]:
    rows = await conn.execute(
        sa.select(task_devices.c.command_status, sa.func.count())
        .where(task_devices.c.task_id == task_id)
        .group_by(task_devices.c.command_status)
    )
    return {str(status): int(count) for status, count in rows}


async def list_tasks(
    conn: AsyncConnection,
    account_id: int,
    *,
    status: str | None,
    before: tuple[datetime, str] | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Newest first, strictly after the (created_at, task_id) `before`."""
    query = sa.select(tasks).where(tasks.c.account_id == account_id)
    if status is not None:
        query = query.where(tasks.c.status == status)
    if before is not None:
        created_at, task_id = before
        query = query.where(
            sa.or_(
                tasks.c.created_at < created_at,
                sa.and_(tasks.c.created_at == created_at, tasks.c.task_id < task_id),
            )
        )
    query = query.order_by(tasks.c.created_at.desc(), tasks.c.task_id.desc()).limit(limit)
    return [dict(row._mapping) for row in await conn.execute(query)]


async def list_task_devices(
    conn: AsyncConnection,
    task_id: str,
    *,
    statuses: Collection[str] | None,
    after_id: int | None,
    limit: int,
) -> list[dict[str, Any]]:
    query = sa.select(task_devices).where(task_devices.c.task_id == task_id)
    if statuses:
        query = query.where(task_devices.c.command_status.in_(list(statuses)))
    if after_id is not None:
        query = query.where(task_devices.c.id > after_id)
    query = query.order_by(task_devices.c.id).limit(limit)
    return [dict(row._mapping) for row in await conn.execute(query)]


async def due_queued(conn: AsyncConnection, now: datetime, limit: int) -> list[dict[str, Any]]:
    query = (
        sa.select(tasks)
        .where(tasks.c.status == "QUEUED", tasks.c.scheduled_at <= now)
        .order_by(tasks.c.scheduled_at)
        .limit(limit)
    )
    return [dict(row._mapping) for row in await conn.execute(_skip_locked(conn, query, tasks))]


async def in_progress_ids(conn: AsyncConnection, limit: int) -> list[str]:
    rows = await conn.execute(
        sa.select(tasks.c.task_id)
        .where(tasks.c.status == "IN_PROGRESS")
        .order_by(tasks.c.started_at)
        .limit(limit)
    )
    return [str(value) for value in rows.scalars()]


async def claim_undispatched(
    conn: AsyncConnection, task_id: str, limit: int
) -> list[dict[str, Any]]:
    """The next devices of the task not yet handed to the ledger, with what their transport
    needs; locked (skipping rows another worker holds) on PostgreSQL."""
    query = (
        sa.select(
            task_devices.c.id.label("task_device_id"),
            devices.c.id,
            devices.c.kind,
            devices.c.uid,
            devices.c.hostname,
            devices.c.namespace,
        )
        .join(devices, devices.c.id == task_devices.c.device_id)
        .where(
            task_devices.c.task_id == task_id,
            task_devices.c.command_status == "PENDING",
            task_devices.c.command_id.is_(None),
        )
        .order_by(task_devices.c.id)
        .limit(limit)
    )
    return [
        dict(row._mapping) for row in await conn.execute(_skip_locked(conn, query, task_devices))
    ]


async def mark_dispatched(
    conn: AsyncConnection, pairs: Sequence[tuple[int, int]], now: datetime
) -> int:
    """(task device id, command id): the device's command is in the ledger, SENT. Only rows
    still undispatched change; returns how many did (-1 when the driver cannot tell)."""
    if not pairs:
        return 0
    result = await conn.execute(
        sa.update(task_devices)
        .where(
            task_devices.c.id == sa.bindparam("b_id"),
            task_devices.c.command_id.is_(None),
            task_devices.c.command_status == "PENDING",
        )
        .values(
            command_id=sa.bindparam("b_command_id"),
            command_status="SENT",
            error_message=None,
            last_updated=now,
        ),
        [{"b_id": td_id, "b_command_id": command_id} for td_id, command_id in pairs],
    )
    return int(result.rowcount) if result.rowcount is not None else -1


async def cancel_undispatched(
    conn: AsyncConnection, task_id: str, reason: str, now: datetime
) -> int:
    result = await conn.execute(
        sa.update(task_devices)
        .where(
            task_devices.c.task_id == task_id,
            task_devices.c.command_status == "PENDING",
            task_devices.c.command_id.is_(None),
        )
        .values(command_status="CANCELLED", error_message=reason, last_updated=now)
    )
    return result.rowcount or 0


async def devices_in_status(
    conn: AsyncConnection, task_id: str, statuses: Collection[str]
) -> list[dict[str, Any]]:
    rows = await conn.execute(
        sa.select(task_devices.c.device_id, task_devices.c.device_uid, devices.c.kind)
        .join(devices, devices.c.id == task_devices.c.device_id)
        .where(
            task_devices.c.task_id == task_id,
            task_devices.c.command_status.in_(list(statuses)),
        )
        .order_by(task_devices.c.id)
    )
    return [dict(row._mapping) for row in rows]


async def start_task(conn: AsyncConnection, task_id: str, now: datetime) -> bool:
    """QUEUED → IN_PROGRESS; False when the task was not QUEUED any more (cancelled)."""
    result = await conn.execute(
        sa.update(tasks)
        .where(tasks.c.task_id == task_id, tasks.c.status == "QUEUED")
        .values(status="IN_PROGRESS", started_at=now, updated_at=now)
    )
    return result.rowcount == 1


async def account_name(conn: AsyncConnection, account_id: int) -> str:
    return str(await conn.scalar(sa.select(accounts.c.name).where(accounts.c.id == account_id)))


async def in_flight(conn: AsyncConnection, task_id: str) -> int:
    """The task's commands handed to the ledger and not finished (waiting for an answer or for
    a retry)."""
    value = await conn.scalar(
        sa.select(sa.func.count())
        .select_from(task_devices)
        .where(
            task_devices.c.task_id == task_id,
            task_devices.c.command_status.in_(["PENDING", "SENT", "ACKNOWLEDGED"]),
            task_devices.c.command_id.is_not(None),
        )
    )
    return int(value or 0)
