"""The read paths of seed 000's original UI ("viewr"), over the same views and scoped to the
caller's account like every other route: reporters by their 64-hex DeviceID, and connections.

`/api/device/list`, `/api/device/status/{id}`, `/api/device/details/{id}`, `/api/connection/list`,
`/api/connection/{id}`. Lists have Fleet's shape (`items`, `next_cursor`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path

from fleet.api.deps import ConnDep, PrincipalDep, get_principal
from fleet.api.errors import NOT_FOUND
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
from fleet.api.routes import connections
from fleet.api.schemas_liveness import ConnectionOut, DeviceDetails, StateChangeOut
from fleet.core.liveness import millis
from fleet.integrations.reporter import KIND as REPORTER
from fleet.store import liveness_views as views

router = APIRouter(
    prefix="/api",
    tags=["original UI"],
    dependencies=[Depends(get_principal)],  # build_api adds the API's documented responses
)

DeviceUid = Annotated[
    str, Path(max_length=64, description="The reporter's DeviceID (64 hex digits).")
]


class LegacyDeviceOut(StateChangeOut):
    friendly_name: str | None


def _state_change(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["uid"],
        "state": row["state"],
        "connection": row["connection"],
        "timestamp": None if row["since"] is None else millis(row["since"]),
    }


def _not_found(uid: str) -> HTTPException:
    return HTTPException(status_code=404, detail=f"device {uid} not found")


async def _reporter(conn: ConnDep, account_id: int, uid: str) -> dict[str, Any]:
    row = await views.status_by_uid(conn, account_id, uid.lower(), REPORTER)
    if row is None:
        raise _not_found(uid)
    return row


@router.get("/device/list", responses=BAD_CURSOR)
async def legacy_device_list(
    principal: PrincipalDep,
    conn: ConnDep,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> Page[LegacyDeviceOut]:
    """The account's reporters with their latest StateChange and friendly name."""
    after_id = decode_cursor(cursor, "legacy_devices", int)[0] if cursor else None
    rows = await views.list_status(
        conn, principal.account_id, kind=REPORTER, after_id=after_id, limit=limit + 1
    )
    rows, next_cursor = cut_page(
        rows, limit, lambda row: encode_cursor("legacy_devices", row["device_id"])
    )
    items = [
        LegacyDeviceOut(**_state_change(row), friendly_name=row["friendly_name"]) for row in rows
    ]
    return Page[LegacyDeviceOut](items=items, next_cursor=next_cursor)


@router.get("/device/status/{device_id}", responses=NOT_FOUND)
async def legacy_device_status(
    device_id: DeviceUid, principal: PrincipalDep, conn: ConnDep
) -> StateChangeOut:
    """DEVICE_STATUS: the reporter's latest StateChange."""
    row = await _reporter(conn, principal.account_id, device_id)
    return StateChangeOut(**_state_change(row))


@router.get("/device/details/{device_id}", responses=NOT_FOUND)
async def legacy_device_details(
    device_id: DeviceUid, principal: PrincipalDep, conn: ConnDep
) -> DeviceDetails:
    """DEVICE_DETAILS: `{"friendly_name": …}`."""
    row = await _reporter(conn, principal.account_id, device_id)
    return DeviceDetails(friendly_name=row["friendly_name"])


@router.get("/connection/list", responses=BAD_CURSOR)
async def legacy_connection_list(
    principal: PrincipalDep,
    conn: ConnDep,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> Page[ConnectionOut]:
    """Connections with their device count per state."""
    return await connections.list_connections(principal, conn, None, limit, cursor)


@router.get("/connection/{connection:path}", responses={**NOT_FOUND, **BAD_CURSOR})
async def legacy_connection(
    connection: connections.ConnectionName,
    principal: PrincipalDep,
    conn: ConnDep,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> Page[StateChangeOut]:
    """CONNECTION_DEVICE_STATUS: the StateChange of each device on this connection."""
    page = await connections.devices_on(conn, principal.account_id, connection, limit, cursor)
    items = [
        StateChangeOut(
            id=item.id, state=item.state, connection=item.connection, timestamp=item.timestamp
        )
        for item in page.items
    ]
    return Page[StateChangeOut](items=items, next_cursor=page.next_cursor)
