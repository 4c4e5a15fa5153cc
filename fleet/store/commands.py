"""command_log queries. Every read for the API is scoped to an account through the device a
command targets. Status changes go through `transition`: a conditional UPDATE (only from the
status the caller decided on), so two workers, or a response racing a timeout, never both win;
it keeps the command's task device (task_devices) in step in the same transaction.

Repositories never commit: the caller owns the transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from fleet.core import ledger
from fleet.core.tasks import device_status as task_device_status
from fleet.services.transports import TargetDevice
from fleet.store.bulk_in import one_of
from fleet.store.tables import command_log, device_status, devices
from fleet.store.tables_tasks import task_devices

FINISHED = tuple(sorted(ledger.FINISHED))
_TARGET_COLUMNS = (
    devices.c.id,
    devices.c.kind,
    devices.c.uid,
    devices.c.hostname,
    devices.c.namespace,
)
# Large IN lists are split: SQLite and asyncpg both cap the bound parameters of one statement.
CHUNK = 5000


def _target(row: Any) -> TargetDevice:
    return TargetDevice(row.id, row.kind, row.uid, row.hostname, row.namespace)


def _locked(conn: AsyncConnection, query: sa.Select[Any], *of: sa.Table) -> sa.Select[Any]:
    """Several Fleet processes may run the same job: on PostgreSQL each row goes to one of
    them (SQLite has a single writer and no row locks)."""
    if conn.dialect.name == "postgresql":
        return query.with_for_update(skip_locked=True, of=list(of) or None)
    return query


def canonical_request_id(value: str) -> str | None:
    """The request id as stored, or None for text that is no UUID (an answer nobody asked for;
    binding it to the UUID column would fail the whole transaction on PostgreSQL)."""
    if not value or len(value) > 64:
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


async def target_device(
    conn: AsyncConnection, account_id: int, device_id: int
) -> TargetDevice | None:
    row = (
        await conn.execute(
            sa.select(*_TARGET_COLUMNS).where(
                devices.c.id == device_id, devices.c.account_id == account_id
            )
        )
    ).first()
    return None if row is None else _target(row)


async def device_of(conn: AsyncConnection, device_id: int) -> TargetDevice | None:
    row = (await conn.execute(sa.select(*_TARGET_COLUMNS).where(devices.c.id == device_id))).first()
    return None if row is None else _target(row)


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


async def next_sequences(conn: AsyncConnection, device_ids: Collection[int]) -> dict[int, int]:
    """`next_sequence` for many distinct devices in a few statements (bulk dispatch)."""
    found: dict[int, int] = {}
    ids = list(device_ids)
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        result = await conn.execute(
            sa.update(device_status)
            .where(device_status.c.device_id.in_(chunk))
            .values(command_sequence=device_status.c.command_sequence + 1)
            .returning(device_status.c.device_id, device_status.c.command_sequence)
        )
        found.update({int(row[0]): int(row[1]) for row in result})
    missing = [device_id for device_id in ids if device_id not in found]
    if missing:
        await conn.execute(
            sa.insert(device_status),
            [{"device_id": device_id, "command_sequence": 1} for device_id in missing],
        )
        found.update(dict.fromkeys(missing, 1))
    return found


async def insert_command(conn: AsyncConnection, values: dict[str, Any]) -> int:
    result = await conn.execute(sa.insert(command_log).values(**values).returning(command_log.c.id))
    return int(result.scalar_one())


async def insert_commands(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> list[int]:
    """Many rows in a few statements; the ids come back in the order of `rows`. (Matched by
    request id: an ordered RETURNING would make SQLAlchemy insert row by row on SQLite.)"""
    if not rows:
        return []
    result = await conn.execute(
        sa.insert(command_log).returning(command_log.c.id, command_log.c.request_id), list(rows)
    )
    # Both databases hand request ids back as the canonical text they were given as.
    ids = {str(request_id): int(command_id) for command_id, request_id in result}
    return [ids[row["request_id"]] for row in rows]


async def update_command(conn: AsyncConnection, command_id: int, **values: Any) -> None:
    await conn.execute(
        sa.update(command_log).where(command_log.c.id == command_id).values(**values)
    )


async def transition(
    conn: AsyncConnection,
    command_id: int,
    expected: Collection[str],
    values: dict[str, Any],
    now: datetime,
    task_id: str | None = None,
) -> bool:
    """Move a command out of one of the `expected` statuses; False when it was not in one any
    more (another worker or a response got there first). Keeps its task device in step."""
    result = await conn.execute(
        sa.update(command_log)
        .where(command_log.c.id == command_id, command_log.c.status.in_(list(expected)))
        .values(**values)
    )
    if result.rowcount != 1:
        return False
    if task_id is not None and "status" in values:
        await sync_task_devices(
            conn, [(command_id, values["status"], values.get("error_message"))], now
        )
    return True


async def transition_many(
    conn: AsyncConnection, changes: Sequence[tuple[int, str, dict[str, Any]]]
) -> set[int]:
    """Many `transition`s, a few statements: (command id, expected status, values). Returns the
    ids that were not in their expected status any more (not changed). Does not touch
    task_devices (the caller syncs them in one go)."""
    groups: dict[tuple[str, ...], list[tuple[int, str, dict[str, Any]]]] = {}
    for change in changes:
        groups.setdefault(tuple(sorted(change[2])), []).append(change)
    raced: set[int] = set()
    for keys, group in groups.items():
        statement = (
            sa.update(command_log)
            .where(
                command_log.c.id == sa.bindparam("b_id"),
                command_log.c.status == sa.bindparam("b_expected"),
            )
            .values({key: sa.bindparam(f"b_{key}", type_=command_log.c[key].type) for key in keys})
        )
        params = [
            {"b_id": command_id, "b_expected": expected, **{f"b_{k}": v for k, v in values.items()}}
            for command_id, expected, values in group
        ]
        result = await conn.execute(statement, params)
        if result.rowcount is not None and 0 <= result.rowcount < len(group):
            # Some row moved on before this transaction wrote it (SQLite has no row locks):
            # find which, by what they hold now.
            wanted = {command_id: values["status"] for command_id, _e, values in group}
            current = await conn.execute(
                sa.select(command_log.c.id, command_log.c.status).where(
                    command_log.c.id.in_(list(wanted))
                )
            )
            raced.update(row.id for row in current if row.status != wanted[row.id])
    return raced


async def sync_task_devices(
    conn: AsyncConnection, changes: Iterable[tuple[int, str, str | None]], now: datetime
) -> None:
    """(command id, ledger status, error) → the commandStatus of the task device it serves."""
    params = [
        {
            "b_command_id": command_id,
            "b_status": task_device_status(status),
            "b_error": error,
            "b_now": now,
        }
        for command_id, status, error in changes
    ]
    if params:
        await conn.execute(
            sa.update(task_devices)
            .where(task_devices.c.command_id == sa.bindparam("b_command_id"))
            .values(
                command_status=sa.bindparam("b_status"),
                error_message=sa.bindparam("b_error"),
                last_updated=sa.bindparam("b_now"),
            ),
            params,
        )


async def note(conn: AsyncConnection, command_id: int, line: str) -> None:
    """Append a line to the command's notes while they are shorter than NOTES_MAX."""
    notes = sa.func.coalesce(command_log.c.notes, "")
    await conn.execute(
        sa.update(command_log)
        .where(
            command_log.c.id == command_id,
            sa.func.length(notes) < ledger.NOTES_MAX,
        )
        .values(notes=sa.case((notes == "", line), else_=notes + "\n" + line))
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


async def by_id(conn: AsyncConnection, command_id: int) -> dict[str, Any] | None:
    row = (await conn.execute(sa.select(command_log).where(command_log.c.id == command_id))).first()
    return None if row is None else dict(row._mapping)


async def by_request_id(
    conn: AsyncConnection, device_id: int, request_id: str
) -> dict[str, Any] | None:
    canonical = canonical_request_id(request_id)
    if canonical is None:
        return None
    row = (
        await conn.execute(
            sa.select(command_log).where(
                command_log.c.device_id == device_id, command_log.c.request_id == canonical
            )
        )
    ).first()
    return None if row is None else dict(row._mapping)


async def by_request_ids(
    conn: AsyncConnection, request_ids: Collection[str], *, lock: bool = False
) -> dict[str, dict[str, Any]]:
    """Commands by (canonical) request id, with their device's uid and account. `lock`: on
    PostgreSQL the rows stay locked for the transaction (waiting for another worker's), so the
    decisions taken on them hold until the commit."""
    found: dict[str, dict[str, Any]] = {}
    ids = sorted(request_ids)
    for start in range(0, len(ids), CHUNK):
        query = (
            sa.select(command_log, devices.c.uid.label("device_uid"), devices.c.account_id)
            .join(devices, devices.c.id == command_log.c.device_id)
            .where(one_of(conn, command_log.c.request_id, ids[start : start + CHUNK]))
            .order_by(command_log.c.id)  # one lock order for every worker: no deadlock
        )
        if lock and conn.dialect.name == "postgresql":
            query = query.with_for_update(of=command_log)
        rows = await conn.execute(query)
        for row in rows:
            values = dict(row._mapping)
            found[str(values["request_id"])] = values
    return found


async def due_deadlines(
    conn: AsyncConnection, now: datetime, default_timeout: timedelta, limit: int
) -> list[dict[str, Any]]:
    """Commands in flight whose answer is overdue (rows sent before migration 0003 have no
    deadline: they use the default timeout)."""
    query = (
        sa.select(command_log, devices.c.account_id)
        .join(devices, devices.c.id == command_log.c.device_id)
        .where(
            command_log.c.status.in_(sorted(ledger.IN_FLIGHT)),
            sa.or_(
                command_log.c.deadline_at <= now,
                sa.and_(
                    command_log.c.deadline_at.is_(None),
                    command_log.c.sent_at < now - default_timeout,
                ),
            ),
        )
        .order_by(command_log.c.id)
        .limit(limit)
    )
    return [dict(row._mapping) for row in await conn.execute(_locked(conn, query, command_log))]


async def due_for_retry(conn: AsyncConnection, now: datetime, limit: int) -> list[dict[str, Any]]:
    """PENDING commands whose retry time has come (the broker refused them, or they timed out),
    with their device (kind, uid, hostname, namespace) for the transport."""
    query = (
        sa.select(
            command_log,
            devices.c.account_id,
            devices.c.kind.label("device_kind"),
            devices.c.uid.label("device_uid"),
            devices.c.hostname.label("device_hostname"),
            devices.c.namespace.label("device_namespace"),
        )
        .join(devices, devices.c.id == command_log.c.device_id)
        .where(command_log.c.status == "PENDING", command_log.c.next_retry_at <= now)
        .order_by(command_log.c.next_retry_at)
        .limit(limit)
    )
    return [dict(row._mapping) for row in await conn.execute(_locked(conn, query, command_log))]


async def cancel_open_of_task(
    conn: AsyncConnection, task_id: str, statuses: Collection[str], reason: str, now: datetime
) -> int:
    """Cancel a task's commands that are in one of `statuses`; returns how many."""
    ids = (
        (
            await conn.execute(
                sa.select(command_log.c.id).where(
                    command_log.c.task_id == task_id, command_log.c.status.in_(list(statuses))
                )
            )
        )
        .scalars()
        .all()
    )
    cancelled = 0
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        done = (
            (
                await conn.execute(
                    sa.update(command_log)
                    .where(command_log.c.id.in_(chunk), command_log.c.status.in_(list(statuses)))
                    .values(
                        status="CANCELLED",
                        next_retry_at=None,
                        deadline_at=None,
                        error_message=reason,
                    )
                    .returning(command_log.c.id)
                )
            )
            .scalars()
            .all()
        )
        cancelled += len(done)
        if done:
            await conn.execute(
                sa.update(task_devices)
                .where(task_devices.c.command_id.in_(done))
                .values(command_status="CANCELLED", error_message=reason, last_updated=now)
            )
    return cancelled
