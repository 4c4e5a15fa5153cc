"""Device reads and manual edits for the API. Every query is scoped to one account.

Repositories never commit: the caller owns the transaction.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from fleet.store.liveness_views import liveness_state, state_condition
from fleet.store.tables import device_status, devices

# Fleet's own bookkeeping in device_status: how it talks to the device, not what the device is.
INTERNAL_STATUS_COLUMNS = frozenset({"sync_attempts", "last_frame_seq", "command_sequence"})
MANUAL_FIELDS = frozenset({"location_desc", "installation_date", "notes", "active"})

_DEVICE_COLUMNS = [c for c in devices.c if c.name not in {"account_id", "namespace"}]
_STATUS_COLUMNS = [c for c in device_status.c if c.name not in INTERNAL_STATUS_COLUMNS]
# Both tables have updated_at: status columns travel under a prefix and are regrouped below.
_PREFIX = "status__"


def _select() -> sa.Select[Any]:
    return sa.select(
        *_DEVICE_COLUMNS, *(c.label(_PREFIX + c.name) for c in _STATUS_COLUMNS)
    ).select_from(devices.outerjoin(device_status, device_status.c.device_id == devices.c.id))


def _to_dict(row: sa.Row[Any]) -> dict[str, Any]:
    values = dict(row._mapping)
    device = {c.name: values[c.name] for c in _DEVICE_COLUMNS}
    status = {c.name: values[_PREFIX + c.name] for c in _STATUS_COLUMNS}
    device["status"] = None if status["device_id"] is None else status
    return device


def _like_pattern(text: str) -> str:
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def list_devices(
    conn: AsyncConnection,
    account_id: int,
    *,
    online: bool | None = None,
    state: str | None = None,
    kind: str | None = None,
    search: str | None = None,
    after_id: int | None = None,
    limit: int,
) -> list[dict[str, Any]]:
    """Devices in id order, the ones after `after_id`: at most `limit` rows."""
    query = _select().where(devices.c.account_id == account_id)
    if online is not None:
        # A device that never reported has no status row: it counts as offline.
        query = query.where(sa.func.coalesce(device_status.c.is_online, sa.false()) == online)
    if state is not None and (lively := liveness_state(state)) is not None:
        query = query.where(state_condition(lively))  # Reporting, Offline, Stopped, New
    elif state is not None:
        query = query.where(sa.func.upper(device_status.c.device_state) == state.upper())
    if kind is not None:
        query = query.where(devices.c.kind == kind)
    if search:
        pattern = _like_pattern(search)
        query = query.where(
            sa.or_(
                sa.func.lower(devices.c.hostname).like(pattern, escape="\\"),
                sa.func.lower(devices.c.mac_address).like(pattern, escape="\\"),
            )
        )
    if after_id is not None:
        query = query.where(devices.c.id > after_id)
    rows = await conn.execute(query.order_by(devices.c.id).limit(limit))
    return [_to_dict(row) for row in rows]


async def get_device(
    conn: AsyncConnection, account_id: int, device_id: int
) -> dict[str, Any] | None:
    row = (
        await conn.execute(
            _select().where(devices.c.id == device_id, devices.c.account_id == account_id)
        )
    ).first()
    return None if row is None else _to_dict(row)


async def device_exists(conn: AsyncConnection, account_id: int, device_id: int) -> bool:
    found = await conn.scalar(
        sa.select(devices.c.id).where(devices.c.id == device_id, devices.c.account_id == account_id)
    )
    return found is not None


async def update_manual_fields(
    conn: AsyncConnection, account_id: int, device_id: int, values: dict[str, Any]
) -> bool:
    """Set hand-maintained fields; False when the account has no such device."""
    unknown = set(values) - MANUAL_FIELDS
    if unknown:
        raise ValueError(f"not manual fields: {sorted(unknown)}")
    if not values:
        return await device_exists(conn, account_id, device_id)
    result = await conn.execute(
        sa.update(devices)
        .where(devices.c.id == device_id, devices.c.account_id == account_id)
        .values(**values)
    )
    return result.rowcount > 0


async def delete_device(conn: AsyncConnection, account_id: int, device_id: int) -> bool:
    """Delete a device; the foreign keys cascade its status, history, alarms and commands."""
    result = await conn.execute(
        sa.delete(devices).where(devices.c.id == device_id, devices.c.account_id == account_id)
    )
    return result.rowcount > 0
