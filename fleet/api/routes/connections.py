"""Connections of the calling account (the seed's CONNECTION_DEVICE_STATUS): which connections its
devices report over, how many devices are in each state on each, and who they are."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query

from fleet.api.deps import ConnDep, PrincipalDep
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
from fleet.api.routes.liveness import liveness_out
from fleet.api.schemas import Text
from fleet.api.schemas_liveness import ConnectionOut, LivenessOut
from fleet.store import liveness_views as views

router = APIRouter(prefix="/connections", tags=["liveness"])

ConnectionName = Annotated[
    str,
    Path(
        max_length=256,
        description="A connection as reported, e.g. `ssid=HOME` (URL-encoded).",
    ),
]


@router.get("", responses=BAD_CURSOR)
async def list_connections(
    principal: PrincipalDep,
    conn: ConnDep,
    prefix: Annotated[
        Text | None,
        Query(max_length=256, description="Only connections starting with this, e.g. `ssid=`."),
    ] = None,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> Page[ConnectionOut]:
    """Connections in name order, each with its device count per liveness state."""
    after = _after_name(cursor) if cursor else None
    rows = await views.connections(
        conn, principal.account_id, prefix=prefix, after=after, limit=limit + 1
    )
    rows, next_cursor = cut_page(rows, limit, lambda row: _cursor_of(row["connection"]))
    return Page[ConnectionOut].model_validate({"items": rows, "next_cursor": next_cursor})


@router.get("/{connection:path}", responses={**NOT_FOUND, **BAD_CURSOR})
async def connection_devices(
    connection: ConnectionName,
    principal: PrincipalDep,
    conn: ConnDep,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> Page[LivenessOut]:
    """The devices reporting over this connection now, with their state."""
    return await devices_on(conn, principal.account_id, connection, limit, cursor)


async def devices_on(
    conn: ConnDep, account_id: int, connection: str, limit: int, cursor: str | None
) -> Page[LivenessOut]:
    after_id = decode_cursor(cursor, "connection_devices", int)[0] if cursor else None
    rows = await views.connection_devices(
        conn, account_id, connection, after_id=after_id, limit=limit + 1
    )
    if not rows and after_id is None:
        raise _not_found(connection)
    rows, next_cursor = cut_page(
        rows, limit, lambda row: encode_cursor("connection_devices", row["device_id"])
    )
    return Page[LivenessOut](items=[liveness_out(row) for row in rows], next_cursor=next_cursor)


def _not_found(connection: str) -> HTTPException:
    return HTTPException(status_code=404, detail=f"connection {connection} not found")


# The shared cursors hold integers and times; a connection name is a string key, so its list
# has a cursor of the same shape (opaque base64 JSON tagged with the list) holding a string.
def _cursor_of(name: str) -> str:
    raw = json.dumps({"s": "connections", "k": [name]}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _after_name(cursor: str) -> str:
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        (name,) = data["k"]
        if data["s"] != "connections" or not isinstance(name, str):
            raise ValueError("cursor of another list")
        return name
    except (binascii.Error, ValueError, TypeError, KeyError, UnicodeDecodeError) as exc:
        raise HTTPException(
            status_code=400,
            detail="invalid cursor: pass next_cursor exactly as received, or omit it",
        ) from exc
