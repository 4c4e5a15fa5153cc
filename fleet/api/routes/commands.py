"""Commands: send one to a device, follow it, list a device's commands."""

from __future__ import annotations

from fastapi import APIRouter

from fleet.api.deps import CommandId, ConnDep, ContextDep, DeviceId, PrincipalDep
from fleet.api.errors import NOT_FOUND, InvalidInput, NotFound
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
from fleet.api.schemas import CommandIn, CommandOut
from fleet.services.commands import DeviceNotFound
from fleet.services.transports import CommandRejected
from fleet.store import history
from fleet.store.devices import device_exists

router = APIRouter(tags=["commands"])
INITIATED_BY_MAX = 50  # command_log.initiated_by is VARCHAR(50)


@router.post("/devices/{device_id}/commands", status_code=201, responses=NOT_FOUND)
async def send_command(
    device_id: DeviceId, command: CommandIn, principal: PrincipalDep, ctx: ContextDep
) -> CommandOut:
    """Record the command and publish it to the device. The answer is the log entry: SENT once
    the broker took it, PENDING (retried later) while the broker link is down, FAILED if the
    device cannot be reached this way; follow it with `GET /commands/{id}`."""
    # The account prefix says who acted even when actor names repeat across accounts.
    initiated_by = f"{principal.account_name}:{command.initiated_by or 'api'}"
    try:
        row = await ctx.commands.send(
            account_id=principal.account_id,
            device_id=device_id,
            command_type=command.type,
            payload=command.payload,
            initiated_by=initiated_by[:INITIATED_BY_MAX],
            timeout_seconds=command.timeout_seconds,
            max_retries=command.max_retries,
        )
    except DeviceNotFound as exc:
        raise NotFound("device", device_id) from exc
    except CommandRejected as exc:
        raise InvalidInput(str(exc), ("body", "payload"), "command_rejected") from exc
    return CommandOut.model_validate(row)


@router.get("/commands/{command_id}", responses=NOT_FOUND)
async def get_command(
    command_id: CommandId, principal: PrincipalDep, ctx: ContextDep
) -> CommandOut:
    row = await ctx.commands.get(account_id=principal.account_id, command_id=command_id)
    if row is None:
        raise NotFound("command", command_id)
    return CommandOut.model_validate(row)


@router.get("/devices/{device_id}/commands", responses={**NOT_FOUND, **BAD_CURSOR})
async def list_commands(
    device_id: DeviceId,
    principal: PrincipalDep,
    conn: ConnDep,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> Page[CommandOut]:
    """The device's commands, newest first."""
    before_id = decode_cursor(cursor, "commands", int)[0] if cursor else None
    if not await device_exists(conn, principal.account_id, device_id):
        raise NotFound("device", device_id)
    rows = await history.list_commands(
        conn, principal.account_id, device_id, before_id=before_id, limit=limit + 1
    )
    rows, next_cursor = cut_page(rows, limit, lambda row: encode_cursor("commands", row["id"]))
    return Page[CommandOut].model_validate({"items": rows, "next_cursor": next_cursor})
