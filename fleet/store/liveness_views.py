"""Seed 000's tables as views of the registry, every one scoped to an account:

- DEVICE_STATUS (latest StateChange per device): `list_status`, `get_status`, `status_by_uid`;
- CONNECTION_DEVICE_STATUS (devices per connection): `connections`, `connection_devices`;
- DEVICE_DETAILS: `get_details`, `put_details`;
- DEVICE_ACCOUNT_MAPPING (every device's account): `account_of`, for Fleet's own use only.

A device with no liveness row yet is New. Repositories never commit.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from fleet.core.liveness import STATES, State
from fleet.store.liveness import DEFAULT_DETAILS, upsert_insert
from fleet.store.tables import devices
from fleet.store.tables_liveness import device_details, liveness, liveness_history

_BY_NAME = {name.lower(): name for name in STATES}
_state = sa.func.coalesce(liveness.c.state, State.NEW.value)


def liveness_state(text: str) -> str | None:
    """'offline' → 'Offline'; None when `text` is not a liveness state."""
    return _BY_NAME.get(text.strip().lower())


def state_condition(state: str) -> sa.ColumnElement[bool]:
    """Devices (of a query on `devices`) whose liveness is `state` (no row yet counts as New)."""
    rows = sa.select(liveness.c.device_id).where(liveness.c.device_id == devices.c.id)
    if state == State.NEW.value:
        return ~rows.where(liveness.c.state != State.NEW.value).exists()
    return rows.where(liveness.c.state == state).exists()


def _select() -> sa.Select[Any]:
    return sa.select(
        devices.c.id.label("device_id"),
        devices.c.uid,
        devices.c.kind,
        devices.c.hostname,
        _state.label("state"),
        liveness.c.connection,
        liveness.c.since,
        liveness.c.last_report_at,
        liveness.c.period_seconds,
        liveness.c.due_at,
        sa.func.coalesce(liveness.c.held, sa.false()).label("held"),
        liveness.c.last_report,
        device_details.c.details,
    ).select_from(
        devices.outerjoin(liveness, liveness.c.device_id == devices.c.id).outerjoin(
            device_details, device_details.c.device_id == devices.c.id
        )
    )


def _row(row: Any) -> dict[str, Any]:
    values = dict(row._mapping)
    details = values.pop("details") or {}
    values["friendly_name"] = details.get("friendly_name")
    values["held"] = bool(values["held"])
    return values


async def list_status(
    conn: AsyncConnection,
    account_id: int,
    *,
    state: str | None = None,
    kind: str | None = None,
    after_id: int | None = None,
    limit: int,
) -> list[dict[str, Any]]:
    query = _select().where(devices.c.account_id == account_id)
    if state is not None:
        query = query.where(_state == state)
    if kind is not None:
        query = query.where(devices.c.kind == kind)
    if after_id is not None:
        query = query.where(devices.c.id > after_id)
    rows = await conn.execute(query.order_by(devices.c.id).limit(limit))
    return [_row(row) for row in rows]


async def get_status(
    conn: AsyncConnection, account_id: int, device_id: int
) -> dict[str, Any] | None:
    row = (
        await conn.execute(
            _select().where(devices.c.account_id == account_id, devices.c.id == device_id)
        )
    ).first()
    return None if row is None else _row(row)


async def status_by_uid(
    conn: AsyncConnection, account_id: int, uid: str, kind: str
) -> dict[str, Any] | None:
    row = (
        await conn.execute(
            _select().where(
                devices.c.account_id == account_id, devices.c.kind == kind, devices.c.uid == uid
            )
        )
    ).first()
    return None if row is None else _row(row)


async def history(
    conn: AsyncConnection,
    account_id: int,
    device_id: int,
    *,
    before_id: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int,
) -> list[dict[str, Any]]:
    """The device's StateChanges, newest first."""
    query = (
        sa.select(liveness_history, devices.c.uid)
        .join(devices, devices.c.id == liveness_history.c.device_id)
        .where(devices.c.account_id == account_id, liveness_history.c.device_id == device_id)
    )
    if before_id is not None:
        query = query.where(liveness_history.c.id < before_id)
    if since is not None:
        query = query.where(liveness_history.c.at >= since)
    if until is not None:
        query = query.where(liveness_history.c.at < until)
    rows = await conn.execute(query.order_by(liveness_history.c.id.desc()).limit(limit))
    return [dict(row._mapping) for row in rows]


def _like_prefix(prefix: str) -> str:
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"{escaped}%"


async def connections(
    conn: AsyncConnection,
    account_id: int,
    *,
    prefix: str | None = None,
    after: str | None = None,
    limit: int,
) -> list[dict[str, Any]]:
    """Connections in name order, each with its device count per state."""
    names = sa.select(liveness.c.connection).where(
        liveness.c.account_id == account_id, liveness.c.connection.is_not(None)
    )
    if prefix:
        names = names.where(liveness.c.connection.like(_like_prefix(prefix), escape="\\"))
    if after is not None:
        names = names.where(liveness.c.connection > after)
    page = names.distinct().order_by(liveness.c.connection).limit(limit).subquery()
    rows = await conn.execute(
        sa.select(liveness.c.connection, liveness.c.state, sa.func.count().label("n"))
        .where(
            liveness.c.account_id == account_id,
            liveness.c.connection.in_(sa.select(page.c.connection)),
        )
        .group_by(liveness.c.connection, liveness.c.state)
    )
    found: dict[str, dict[str, int]] = {}
    for row in rows:
        found.setdefault(row.connection, dict.fromkeys(STATES, 0))[row.state] = int(row.n)
    return [
        {"connection": name, "devices": sum(counts.values()), "states": counts}
        for name, counts in sorted(found.items())
    ]


async def connection_devices(
    conn: AsyncConnection,
    account_id: int,
    connection: str,
    *,
    after_id: int | None = None,
    limit: int,
) -> list[dict[str, Any]]:
    """The devices reporting over `connection` now, in id order."""
    query = _select().where(
        devices.c.account_id == account_id,
        liveness.c.account_id == account_id,
        liveness.c.connection == connection,
    )
    if after_id is not None:
        query = query.where(devices.c.id > after_id)
    rows = await conn.execute(query.order_by(devices.c.id).limit(limit))
    return [_row(row) for row in rows]


async def _owned(conn: AsyncConnection, account_id: int, device_id: int) -> bool:
    found = await conn.scalar(
        sa.select(devices.c.id).where(devices.c.id == device_id, devices.c.account_id == account_id)
    )
    return found is not None


async def get_details(
    conn: AsyncConnection, account_id: int, device_id: int
) -> dict[str, Any] | None:
    """The device's details (the seed's default when none were written); None: no such device."""
    row = (
        await conn.execute(
            sa.select(devices.c.id, device_details.c.details)
            .select_from(
                devices.outerjoin(device_details, device_details.c.device_id == devices.c.id)
            )
            .where(devices.c.id == device_id, devices.c.account_id == account_id)
        )
    ).first()
    if row is None:
        return None
    return {**DEFAULT_DETAILS, **(row.details or {})}


async def put_details(
    conn: AsyncConnection, account_id: int, device_id: int, details: dict[str, Any]
) -> bool:
    if not await _owned(conn, account_id, device_id):
        return False
    statement = upsert_insert(conn, device_details).values(
        device_id=device_id, details=details, updated_at=sa.func.now()
    )
    await conn.execute(
        statement.on_conflict_do_update(
            index_elements=["device_id"],
            set_={"details": statement.excluded.details, "updated_at": sa.func.now()},
        )
    )
    return True


async def account_of(conn: AsyncConnection, device_id: int) -> int | None:
    """DEVICE_ACCOUNT_MAPPING: which account a device belongs to (Fleet's own use: never an
    answer to a caller, who only ever sees their own account's devices)."""
    value = await conn.scalar(sa.select(devices.c.account_id).where(devices.c.id == device_id))
    return None if value is None else int(value)
