"""Registering meters by hand and tagging devices (issue 3): meters never announce themselves
on the broker (the head-end speaks for them); tags are what bulk tasks can target."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException
from sqlalchemy import exc as sa_exc

from fleet.api.deps import ConnDep, DeviceId, PrincipalDep
from fleet.api.errors import NOT_FOUND, NotFound
from fleet.api.schemas import ErrorOut
from fleet.api.task_schemas import DeviceCreateIn, RegisteredDeviceOut, TagsIn
from fleet.integrations.meter_hes import KIND as METER
from fleet.store import task_targets as store

router = APIRouter(prefix="/devices", tags=["devices"])
CONFLICT: dict[int | str, dict[str, Any]] = {409: {"model": ErrorOut}}


def _out(row: dict[str, Any]) -> RegisteredDeviceOut:
    return RegisteredDeviceOut.model_validate({**row, "tags": row["tags"] or []})


@router.post("", status_code=201, responses=CONFLICT)
async def register_device(
    body: DeviceCreateIn, principal: PrincipalDep, conn: ConnDep
) -> RegisteredDeviceOut:
    """Register a meter (`kind: meter`) under its head-end id. A meter id belongs to one account
    (the head-end addresses meters by id alone): 409 when it is taken. A task may also register
    meters on first use."""
    taken = await store.meter_uids_elsewhere(conn, principal.account_id, [body.uid], METER)
    if taken:
        raise HTTPException(status_code=409, detail=f"meter id {body.uid!r} is already taken")
    existing = await store.by_uids(conn, principal.account_id, [body.uid])
    if any(found.kind == METER for found in existing.get(body.uid, [])):
        raise HTTPException(status_code=409, detail=f"meter {body.uid!r} is already registered")
    tags = list(dict.fromkeys(body.tags))
    try:
        [found] = await store.register(
            conn, principal.account_id, METER, [body.uid], tags=tags, notes=body.notes
        )
        row = await store.device_row(conn, principal.account_id, found.id)
        await conn.commit()
    except sa_exc.IntegrityError as exc:  # registered meanwhile by another request
        raise HTTPException(
            status_code=409, detail=f"meter id {body.uid!r} is already taken"
        ) from exc
    assert row is not None
    return _out(row)


@router.put("/{device_id}/tags", responses=NOT_FOUND)
async def set_tags(
    device_id: DeviceId, body: TagsIn, principal: PrincipalDep, conn: ConnDep
) -> RegisteredDeviceOut:
    """Replace the device's tags (labels that a task's `filter.tag` selects)."""
    if not await store.set_tags(
        conn, principal.account_id, device_id, list(dict.fromkeys(body.tags))
    ):
        raise NotFound("device", device_id)
    row = await store.device_row(conn, principal.account_id, device_id)
    await conn.commit()
    assert row is not None
    return _out(row)
