"""Liveness of the calling account's devices: every kind is New, Reporting, Offline or Stopped.

The seed's DEVICE_STATUS (`GET /liveness`), each device's state and StateChange history, an
admin's Stopped, and DEVICE_DETAILS (the friendly name an admin gives a device).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from fleet.api.deps import ConnDep, DeviceId, PrincipalDep, TimeRangeDep
from fleet.api.errors import NOT_FOUND, NotFound
from fleet.api.liveness_deps import LivenessDep
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
from fleet.api.schemas import Text
from fleet.api.schemas_liveness import (
    DeviceDetails,
    LivenessCommand,
    LivenessHistoryOut,
    LivenessOut,
    LivenessState,
)
from fleet.core.liveness import millis
from fleet.store import liveness_views as views

router = APIRouter(tags=["liveness"])


def liveness_out(row: dict[str, Any]) -> LivenessOut:
    return LivenessOut(
        device_id=row["device_id"],
        id=row["uid"],
        kind=row["kind"],
        name=row["hostname"],
        friendly_name=row["friendly_name"],
        state=row["state"],
        connection=row["connection"],
        since=row["since"],
        timestamp=None if row["since"] is None else millis(row["since"]),
        last_report_at=row["last_report_at"],
        period_seconds=row["period_seconds"],
        due_at=row["due_at"],
        stopped_by_admin=row["held"],
    )


@router.get("/liveness", responses=BAD_CURSOR)
async def list_liveness(
    principal: PrincipalDep,
    conn: ConnDep,
    state: LivenessState | None = None,
    kind: Annotated[Text | None, Query(max_length=32, description="e.g. reporter.")] = None,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> Page[LivenessOut]:
    """Every device's liveness (the seed's DEVICE_STATUS), in device id order."""
    after_id = decode_cursor(cursor, "liveness", int)[0] if cursor else None
    rows = await views.list_status(
        conn, principal.account_id, state=state, kind=kind, after_id=after_id, limit=limit + 1
    )
    rows, next_cursor = cut_page(
        rows, limit, lambda row: encode_cursor("liveness", row["device_id"])
    )
    return Page[LivenessOut](items=[liveness_out(row) for row in rows], next_cursor=next_cursor)


@router.get("/devices/{device_id}/liveness", responses=NOT_FOUND)
async def get_liveness(device_id: DeviceId, principal: PrincipalDep, conn: ConnDep) -> LivenessOut:
    row = await views.get_status(conn, principal.account_id, device_id)
    if row is None:
        raise NotFound("device", device_id)
    return liveness_out(row)


@router.post("/devices/{device_id}/liveness", responses=NOT_FOUND)
async def set_liveness(
    device_id: DeviceId,
    command: LivenessCommand,
    principal: PrincipalDep,
    conn: ConnDep,
    service: LivenessDep,
) -> LivenessOut:
    """`{"state": "Stopped"}` holds the device Stopped (decommissioned, paused): its timer is
    disarmed, an open Offline alarm is cleared, it raises nothing and its reports change nothing.
    `{"state": "Monitored"}` lifts the hold; its next report moves it again."""
    held = command.state == "Stopped"
    if await service.set_held(principal.account_id, device_id, held) is None:
        raise NotFound("device", device_id)
    row = await views.get_status(conn, principal.account_id, device_id)
    assert row is not None
    return liveness_out(row)


@router.get("/devices/{device_id}/liveness/history", responses={**NOT_FOUND, **BAD_CURSOR})
async def liveness_history(
    device_id: DeviceId,
    principal: PrincipalDep,
    conn: ConnDep,
    period: TimeRangeDep,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> Page[LivenessHistoryOut]:
    """The device's StateChanges, newest first; `since`/`until` bound their time."""
    before_id = decode_cursor(cursor, "liveness_history", int)[0] if cursor else None
    if await views.get_details(conn, principal.account_id, device_id) is None:
        raise NotFound("device", device_id)
    rows = await views.history(
        conn,
        principal.account_id,
        device_id,
        before_id=before_id,
        since=period.since,
        until=period.until,
        limit=limit + 1,
    )
    rows, next_cursor = cut_page(
        rows, limit, lambda row: encode_cursor("liveness_history", row["id"])
    )
    items = [
        LivenessHistoryOut(
            id=row["uid"],
            state=row["state"],
            previous=row["previous"],
            connection=row["connection"],
            timestamp=millis(row["at"]),
            at=row["at"],
        )
        for row in rows
    ]
    return Page[LivenessHistoryOut](items=items, next_cursor=next_cursor)


@router.get("/devices/{device_id}/details", responses=NOT_FOUND)
async def get_details(device_id: DeviceId, principal: PrincipalDep, conn: ConnDep) -> DeviceDetails:
    """The seed's DeviceDetails; `{"friendly_name": null}` until an admin sets it."""
    details = await views.get_details(conn, principal.account_id, device_id)
    if details is None:
        raise NotFound("device", device_id)
    return DeviceDetails.model_validate({"friendly_name": details.get("friendly_name")})


@router.put("/devices/{device_id}/details", responses=NOT_FOUND)
async def put_details(
    device_id: DeviceId, details: DeviceDetails, principal: PrincipalDep, conn: ConnDep
) -> DeviceDetails:
    """Replace the device's details."""
    if not await views.put_details(conn, principal.account_id, device_id, details.model_dump()):
        raise NotFound("device", device_id)
    await conn.commit()
    return details
