"""Bulk command tasks (seed 002) and the ledger's control of one command (cancel)."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Path, Query
from fastapi.responses import JSONResponse

from fleet.api.deps import CommandId, ContextDep, PrincipalDep
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
from fleet.api.schemas import ErrorOut
from fleet.api.task_schemas import (
    CommandCancelIn,
    DeviceCommandStatus,
    DryRunOut,
    LedgerEntryOut,
    RerunIn,
    TaskAccepted,
    TaskCancelIn,
    TaskDeviceOut,
    TaskIn,
    TaskOut,
    TaskStatus,
    TaskSummaryOut,
)
from fleet.core import ledger
from fleet.core.tasks import DEVICE_STATUSES, AbortRule
from fleet.services.commands import CommandFinished, CommandNotFound
from fleet.services.tasks import (
    TaskConflict,
    TaskInputError,
    TaskNotFound,
    TaskRequest,
    TaskService,
)
from fleet.store.task_targets import TargetFilter

router = APIRouter(tags=["tasks"])

CONFLICT: dict[int | str, dict[str, Any]] = {409: {"model": ErrorOut}}
TaskIdPath = Annotated[str, Path(min_length=1, max_length=36, description="The task's id.")]
DevicesLimit = Annotated[
    int, Query(ge=1, le=1000, description="Devices in this page of the document (at most 1000).")
]
StatusFilter = Annotated[
    list[DeviceCommandStatus] | None,
    Query(description="Only devices in these commandStatus values (repeat the parameter)."),
]
DEVICES_PAGE = 100


def _service(ctx: ContextDep) -> TaskService:
    return TaskService(ctx.engine, ctx.commands, default_rate=ctx.settings.task_dispatch_rate)


def _task_not_found(task_id: str) -> HTTPException:
    return HTTPException(status_code=404, detail=f"task {task_id} not found")


def _notify(ctx: ContextDep) -> None:
    hub = getattr(ctx, "event_hub", None)
    if hub is not None:
        hub.notify()


def _summary(task: dict[str, Any]) -> dict[str, Any]:
    # The counts the dispatcher last announced (live ones in the document view); a task it has
    # not looked at yet has every device PENDING.
    counts = task["counts"] or {
        status: task["device_count"] if status == "PENDING" else 0 for status in DEVICE_STATUSES
    }
    abort = (
        {"failedPercent": task["abort_failed_percent"], "minFinished": task["abort_min_finished"]}
        if task["abort_failed_percent"] is not None
        else None
    )
    return {
        "taskId": task["task_id"],
        "correlationId": task["correlation_id"],
        "commandType": task["command_type"],
        "commandParams": task["command_params"],
        "scheduledAt": task["scheduled_at"],
        "status": task["status"],
        "statusReason": task["status_reason"],
        "requestedBy": task["requested_by"],
        "target": task["target"],
        "ratePerSecond": task["rate_per_second"],
        "abort": abort,
        "maxRetries": task["max_retries"],
        "timeoutSeconds": task["timeout_seconds"],
        "parentTaskId": task["parent_task_id"],
        "createdAt": task["created_at"],
        "updatedAt": task["updated_at"],
        "startedAt": task["started_at"],
        "finishedAt": task["finished_at"],
        "total": task["device_count"],
        "counts": counts,
    }


def _device(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "deviceId": row["device_uid"],
        "commandStatus": row["command_status"],
        "error": row["error_message"],
        "lastUpdated": row["last_updated"],
        "commandId": row["command_id"],
    }


def _request(body: TaskIn) -> TaskRequest:
    if (body.devices is None) == (body.filter is None):
        raise InvalidInput("give either devices (a list of ids) or filter, not both", ("body",))
    where = body.filter
    return TaskRequest(
        command_type=body.commandType,
        command_params=body.commandParams,
        devices=body.devices,
        filter=(
            TargetFilter(where.kind, where.firmwareVersion, where.online, where.tag, where.zone)
            if where is not None
            else None
        ),
        scheduled_at=body.scheduledAt,
        correlation_id=body.correlationId,
        requested_by=body.requestedBy,
        rate_per_second=body.ratePerSecond,
        abort=AbortRule(body.abort.failedPercent, body.abort.minFinished) if body.abort else None,
        max_retries=body.maxRetries,
        timeout_seconds=body.timeoutSeconds,
    )


def _task_cursor(row: dict[str, Any]) -> str:
    # Task ids are text, which the shared cursor helpers do not carry: same format, own key.
    raw = json.dumps({"s": "tasks", "k": [row["created_at"].isoformat(), row["task_id"]]})
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_task_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        created, task_id = data["k"]
        moment = datetime.fromisoformat(created)
        if data["s"] != "tasks" or not isinstance(task_id, str) or moment.tzinfo is None:
            raise ValueError("not a task cursor")
        return moment, task_id
    except (binascii.Error, ValueError, TypeError, KeyError, UnicodeDecodeError) as exc:
        raise HTTPException(
            status_code=400,
            detail="invalid cursor: pass next_cursor exactly as received, or omit it",
        ) from exc


def _invalid(exc: TaskInputError) -> InvalidInput:
    return InvalidInput(exc.detail, exc.loc, exc.kind)


@router.post(
    "/tasks",
    status_code=202,
    response_model=TaskAccepted,
    responses={
        200: {"model": DryRunOut, "description": "dryRun: the devices it would reach"},
        **CONFLICT,
    },
)
async def create_task(
    body: TaskIn, principal: PrincipalDep, ctx: ContextDep
) -> TaskAccepted | JSONResponse:
    """Accept a command for many devices at once (202, even for tens of thousands). The task
    starts at `scheduledAt`, is dispatched at `ratePerSecond`, stops on its `abort` rule; follow
    it with `GET /tasks/{taskId}`. Unknown meter ids of a meter command are registered."""
    request = _request(body)
    service = _service(ctx)
    try:
        if body.dryRun:
            plan = await service.dry_run(principal.account_id, request)
            return JSONResponse(DryRunOut.model_validate(plan).model_dump(mode="json"))
        created = await service.create(principal.account_id, request)
    except TaskInputError as exc:
        raise _invalid(exc) from exc
    except TaskConflict as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from exc
    _notify(ctx)
    return TaskAccepted(
        taskId=created["taskId"], devices=created["devices"], registered=created["registered"]
    )


@router.get("/tasks", responses=BAD_CURSOR)
async def list_tasks(
    principal: PrincipalDep,
    ctx: ContextDep,
    status: TaskStatus | None = None,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> Page[TaskSummaryOut]:
    """The account's tasks, newest first (counts as last announced by the dispatcher)."""
    before = _decode_task_cursor(cursor) if cursor else None
    rows = await _service(ctx).list(
        principal.account_id, status=status, before=before, limit=limit + 1
    )
    rows, next_cursor = cut_page(rows, limit, _task_cursor)
    return Page[TaskSummaryOut].model_validate(
        {"items": [_summary(row) for row in rows], "next_cursor": next_cursor}
    )


async def _document(
    ctx: ContextDep,
    account_id: int,
    task_id: str,
    statuses: Sequence[str] | None,
    cursor: str | None,
    limit: int,
) -> TaskOut:
    service = _service(ctx)
    after_id = decode_cursor(cursor, "task_devices", int)[0] if cursor else None
    task = await service.get(account_id, task_id)
    if task is None:
        raise _task_not_found(task_id)
    rows = await service.devices(
        account_id, task_id, statuses=statuses, after_id=after_id, limit=limit + 1
    )
    rows, next_cursor = cut_page(rows, limit, lambda row: encode_cursor("task_devices", row["id"]))
    return TaskOut.model_validate(
        {**_summary(task), "devices": [_device(r) for r in rows], "next_cursor": next_cursor}
    )


@router.get("/tasks/{task_id}", responses={**NOT_FOUND, **BAD_CURSOR})
async def get_task(
    task_id: TaskIdPath,
    principal: PrincipalDep,
    ctx: ContextDep,
    status: StatusFilter = None,
    limit: DevicesLimit = DEVICES_PAGE,
    cursor: CursorQuery = None,
) -> TaskOut:
    """Seed 002's document view: the task, its counts per device status (live), and a page of
    its devices (`cursor=<next_cursor>` for the next page)."""
    return await _document(ctx, principal.account_id, task_id, status, cursor, limit)


@router.get("/tasks/{task_id}/devices", responses={**NOT_FOUND, **BAD_CURSOR})
async def list_task_devices(
    task_id: TaskIdPath,
    principal: PrincipalDep,
    ctx: ContextDep,
    status: StatusFilter = None,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> Page[TaskDeviceOut]:
    """The task's devices in order, optionally only some statuses (e.g. FAILED)."""
    after_id = decode_cursor(cursor, "task_devices", int)[0] if cursor else None
    try:
        rows = await _service(ctx).devices(
            principal.account_id, task_id, statuses=status, after_id=after_id, limit=limit + 1
        )
    except TaskNotFound as exc:
        raise _task_not_found(task_id) from exc
    rows, next_cursor = cut_page(rows, limit, lambda row: encode_cursor("task_devices", row["id"]))
    return Page[TaskDeviceOut].model_validate(
        {"items": [_device(r) for r in rows], "next_cursor": next_cursor}
    )


@router.post("/tasks/{task_id}/cancel", responses={**NOT_FOUND, **CONFLICT})
async def cancel_task(
    task_id: TaskIdPath,
    principal: PrincipalDep,
    ctx: ContextDep,
    body: Annotated[TaskCancelIn | None, Body()] = None,
) -> TaskOut:
    """Stop a QUEUED or IN_PROGRESS task: devices not yet sent, and commands not finished, are
    CANCELLED (an answer arriving later is recorded and ignored). 409 once it has finished."""
    by = ledger.initiated_by(principal.account_name, body.requestedBy if body else None)
    try:
        await _service(ctx).cancel(principal.account_id, task_id, by)
    except TaskNotFound as exc:
        raise _task_not_found(task_id) from exc
    except TaskConflict as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from exc
    _notify(ctx)
    return await _document(ctx, principal.account_id, task_id, None, None, DEVICES_PAGE)


@router.post("/tasks/{task_id}/rerun", status_code=202, responses={**NOT_FOUND, **CONFLICT})
async def rerun_task(
    task_id: TaskIdPath,
    principal: PrincipalDep,
    ctx: ContextDep,
    body: Annotated[RerunIn | None, Body()] = None,
) -> TaskAccepted:
    """A new task with the same command for the devices that failed (FAILED and TIMEOUT, or the
    `statuses` given). The task must have finished; the new one names it as `parentTaskId`."""
    options = body or RerunIn()
    try:
        created = await _service(ctx).rerun(
            principal.account_id,
            task_id,
            statuses=options.statuses,
            overrides={
                "scheduled_at": options.scheduledAt,
                "correlation_id": options.correlationId,
                "requested_by": options.requestedBy,
                "rate_per_second": options.ratePerSecond,
            },
        )
    except TaskNotFound as exc:
        raise _task_not_found(task_id) from exc
    except TaskInputError as exc:
        raise _invalid(exc) from exc
    except TaskConflict as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from exc
    _notify(ctx)
    return TaskAccepted(
        taskId=created["taskId"], devices=created["devices"], registered=created["registered"]
    )


@router.post(
    "/commands/{command_id}/cancel", tags=["commands"], responses={**NOT_FOUND, **CONFLICT}
)
async def cancel_command(
    command_id: CommandId,
    principal: PrincipalDep,
    ctx: ContextDep,
    body: Annotated[CommandCancelIn | None, Body()] = None,
) -> LedgerEntryOut:
    """Cancel a command that has not finished (PENDING, SENT or ACKNOWLEDGED → CANCELLED). An
    answer arriving later is recorded in its notes and ignored. 409 once it has finished."""
    by = ledger.initiated_by(principal.account_name, body.initiated_by if body else None)
    try:
        row = await ctx.commands.cancel(
            account_id=principal.account_id, command_id=command_id, by=by
        )
    except CommandNotFound as exc:
        raise NotFound("command", command_id) from exc
    except CommandFinished as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from exc
    _notify(ctx)
    return LedgerEntryOut.model_validate(row)
