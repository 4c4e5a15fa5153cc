"""Devices of the calling account: list, read, hand-edit, delete, and their heartbeats history."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Response

from fleet.api.deps import ConnDep, DeviceId, PrincipalDep, TimeRangeDep
from fleet.api.errors import NOT_FOUND, NotFound
from fleet.api.pagination import (
    BAD_CURSOR,
    DEFAULT_LIMIT,
    CursorQuery,
    LimitQuery,
    Page,
    cut_page,
    decode_cursor,
    encode_cursor,
)
from fleet.api.schemas import ChangeType, DeviceOut, DevicePatch, HeartbeatOut, Text
from fleet.store import devices as store
from fleet.store import history

router = APIRouter(prefix="/devices", tags=["devices"])


@router.get("", responses=BAD_CURSOR)
async def list_devices(
    principal: PrincipalDep,
    conn: ConnDep,
    online: Annotated[bool | None, Query(description="Only online (or offline) devices.")] = None,
    state: Annotated[
        Text | None,
        Query(
            max_length=20,
            description="device_state, e.g. NORMAL, or liveness: Reporting, Offline, Stopped, "
            "New (any case).",
        ),
    ] = None,
    kind: Annotated[Text | None, Query(max_length=32, description="e.g. alarm_panel.")] = None,
    search: Annotated[
        Text | None,
        Query(max_length=64, description="Case-insensitive part of the hostname or MAC."),
    ] = None,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> Page[DeviceOut]:
    """Devices in id order."""
    after_id = decode_cursor(cursor, "devices", int)[0] if cursor else None
    rows = await store.list_devices(
        conn,
        principal.account_id,
        online=online,
        state=state,
        kind=kind,
        search=search,
        after_id=after_id,
        limit=limit + 1,
    )
    rows, next_cursor = cut_page(rows, limit, lambda row: encode_cursor("devices", row["id"]))
    return Page[DeviceOut].model_validate({"items": rows, "next_cursor": next_cursor})


@router.get("/{device_id}", responses=NOT_FOUND)
async def get_device(device_id: DeviceId, principal: PrincipalDep, conn: ConnDep) -> DeviceOut:
    row = await store.get_device(conn, principal.account_id, device_id)
    if row is None:
        raise NotFound("device", device_id)
    return DeviceOut.model_validate(row)


@router.patch("/{device_id}", responses=NOT_FOUND)
async def update_device(
    device_id: DeviceId, changes: DevicePatch, principal: PrincipalDep, conn: ConnDep
) -> DeviceOut:
    """Set the hand-maintained fields; omitted fields keep their value."""
    values = changes.model_dump(exclude_unset=True)
    if not await store.update_manual_fields(conn, principal.account_id, device_id, values):
        raise NotFound("device", device_id)
    row = await store.get_device(conn, principal.account_id, device_id)
    await conn.commit()
    assert row is not None
    return DeviceOut.model_validate(row)


@router.delete("/{device_id}", status_code=204, response_class=Response, responses=NOT_FOUND)
async def delete_device(device_id: DeviceId, principal: PrincipalDep, conn: ConnDep) -> Response:
    """Delete the device with its status, heartbeats, alarms and commands."""
    if not await store.delete_device(conn, principal.account_id, device_id):
        raise NotFound("device", device_id)
    await conn.commit()
    return Response(status_code=204)


@router.get("/{device_id}/heartbeats", responses={**NOT_FOUND, **BAD_CURSOR})
async def list_heartbeats(
    device_id: DeviceId,
    principal: PrincipalDep,
    conn: ConnDep,
    period: TimeRangeDep,
    change_type: ChangeType | None = None,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> Page[HeartbeatOut]:
    """Stored heartbeats rows (significant changes and periodic snapshots), newest first."""
    before = decode_cursor(cursor, "heartbeats", datetime, int) if cursor else None
    if not await store.device_exists(conn, principal.account_id, device_id):
        raise NotFound("device", device_id)
    rows = await history.list_heartbeats(
        conn,
        principal.account_id,
        device_id,
        since=period.since,
        until=period.until,
        change_type=change_type,
        before=before,
        limit=limit + 1,
    )
    rows, next_cursor = cut_page(
        rows, limit, lambda row: encode_cursor("heartbeats", row["time"], row["id"])
    )
    items = [{**row, "change_kinds": _kinds(row["change_kinds"])} for row in rows]
    return Page[HeartbeatOut].model_validate({"items": items, "next_cursor": next_cursor})


def _kinds(column: str | None) -> list[str]:
    return [kind for kind in (column or "").split(",") if kind]
