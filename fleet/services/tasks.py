"""Bulk command tasks (seed 002): create, dry-run, read, cancel, re-run the failed devices.

A task is written at once (task row + one task_devices row per device, one transaction) and
answered 202; the dispatcher job (fleet/jobs/dispatcher.py) starts it at `scheduledAt` and hands
its devices to the command ledger at the task's rate. Every device's command is an ordinary
ledger command (command_log.task_id names the task), so retries, timeouts, responses and
cancellation work the same as for a single command.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from fleet.core import tasks as rules
from fleet.core.events import Event
from fleet.integrations.meter_hes import KIND as METER
from fleet.integrations.meter_hes.topics import valid_meter_id
from fleet.services.commands import CommandService
from fleet.services.transports import CommandRejected
from fleet.store import commands as command_repo
from fleet.store import events as event_log
from fleet.store import task_targets as targets
from fleet.store import tasks as repo
from fleet.store.task_targets import Found, TargetFilter

# One task reaches at most this many devices (a bigger roll-out is several tasks).
MAX_TASK_DEVICES = 50_000
_SHOWN = 10  # ids quoted in an error message


class TaskInputError(ValueError):
    """Bad input found past request validation: answered 422 with where it was."""

    def __init__(self, detail: str, loc: Sequence[str], kind: str = "value_error") -> None:
        super().__init__(detail)
        self.detail = detail
        self.loc = tuple(loc)
        self.kind = kind


class TaskNotFound(LookupError):
    pass


class TaskConflict(ValueError):
    """The request cannot apply to the task in its current state (answered 409)."""


@dataclass(frozen=True, slots=True)
class TaskRequest:
    command_type: str
    command_params: dict[str, Any] = field(default_factory=dict)
    devices: Sequence[str | int] | None = None
    filter: TargetFilter | None = None
    scheduled_at: datetime | None = None
    correlation_id: str | None = None
    requested_by: str | None = None
    rate_per_second: float | None = None
    abort: rules.AbortRule | None = None
    max_retries: int | None = None
    timeout_seconds: float | None = None
    parent_task_id: str | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    """Who a task reaches: devices found in the account, and meters to register."""

    found: list[Found]
    register: list[str]

    @property
    def count(self) -> int:
        return len(self.found) + len(self.register)


def _quote(values: Sequence[object]) -> str:
    shown = ", ".join(str(v) for v in values[:_SHOWN])
    return shown + (f" and {len(values) - _SHOWN} more" if len(values) > _SHOWN else "")


class TaskService:
    def __init__(
        self,
        engine: AsyncEngine,
        commands: CommandService,
        *,
        default_rate: float = 100.0,
    ) -> None:
        self.engine = engine
        self.commands = commands
        self.default_rate = default_rate

    def _now(self) -> datetime:
        return self.commands.clock()

    # --- validation and targets --------------------------------------------------------------
    def _kinds_for(self, request: TaskRequest) -> list[str]:
        """The device kinds that take the command, after checking its type and parameters."""
        by_type = self.commands.command_types()
        kinds = by_type.get(request.command_type)
        if not kinds:
            raise TaskInputError(
                f"unknown command type {request.command_type!r}; known types: "
                f"{', '.join(sorted(by_type))}",
                ("body", "commandType"),
                "unknown_command_type",
            )
        for kind in kinds:
            try:
                self.commands.transport_for(kind).validate(
                    request.command_type, request.command_params
                )
            except CommandRejected as exc:
                raise TaskInputError(
                    str(exc), ("body", "commandParams"), "command_rejected"
                ) from exc
        return kinds

    async def plan(self, conn: AsyncConnection, account_id: int, request: TaskRequest) -> Plan:
        kinds = self._kinds_for(request)
        if request.devices is not None:
            plan = await self._plan_list(conn, account_id, request, kinds)
        elif request.filter is not None:
            plan = await self._plan_filter(conn, account_id, request.filter, kinds)
        else:
            raise TaskInputError("give either devices or filter", ("body",))
        if plan.count > MAX_TASK_DEVICES:
            raise TaskInputError(
                f"a task reaches at most {MAX_TASK_DEVICES} devices, this one {plan.count}",
                ("body", "devices" if request.devices is not None else "filter"),
            )
        return plan

    async def _plan_list(
        self, conn: AsyncConnection, account_id: int, request: TaskRequest, kinds: list[str]
    ) -> Plan:
        loc = ("body", "devices")
        listed = list(request.devices or [])
        if not listed:
            raise TaskInputError("devices must not be empty", loc)
        seen = Counter(listed)
        repeated = [value for value, count in seen.items() if count > 1]
        if repeated:
            raise TaskInputError(f"duplicate device ids: {_quote(repeated)}", loc, "duplicate")
        uids = [value for value in listed if isinstance(value, str)]
        ids = [value for value in listed if isinstance(value, int)]
        by_uid = await targets.by_uids(conn, account_id, uids)
        by_id = await targets.by_ids(conn, account_id, ids)
        found: list[Found] = []
        missing: list[str | int] = []
        register: list[str] = []
        wrong_kind: list[Found] = []
        for value in listed:
            if isinstance(value, int):
                device = by_id.get(value)
                candidates = [device] if device is not None else []
            else:
                candidates = by_uid.get(value, [])
            if not candidates:
                if isinstance(value, str) and METER in kinds:
                    register.append(value)
                else:
                    missing.append(value)
                continue
            fitting = [c for c in candidates if c.kind in kinds]
            if fitting:
                found.append(fitting[0])
            else:
                wrong_kind.append(candidates[0])
        if register:
            bad = [uid for uid in register if not valid_meter_id(uid)]
            if bad:
                raise TaskInputError(
                    f"not valid meter ids (letters, digits and . _ : - only, at most 64): "
                    f"{_quote(bad)}",
                    loc,
                )
            taken = await targets.meter_uids_elsewhere(conn, account_id, register, METER)
            missing.extend(uid for uid in register if uid in taken)
            register = [uid for uid in register if uid not in taken]
        if missing:
            raise TaskInputError(
                f"devices not found in this account: {_quote(missing)}", loc, "unknown_device"
            )
        if wrong_kind:
            shown = [f"{d.uid} ({d.kind})" for d in wrong_kind]
            raise TaskInputError(
                f"{request.command_type} goes to devices of kind {', '.join(kinds)}; "
                f"these cannot take it: {_quote(shown)}",
                loc,
                "wrong_kind",
            )
        if len({d.id for d in found}) != len(found):
            raise TaskInputError("the list names one device twice (by id and by uid)", loc)
        return Plan(found, register)

    async def _plan_filter(
        self, conn: AsyncConnection, account_id: int, where: TargetFilter, kinds: list[str]
    ) -> Plan:
        loc = ("body", "filter")
        if where.empty():
            raise TaskInputError(
                "the filter needs at least one of kind, firmwareVersion, online, tag, zone", loc
            )
        if where.kind is not None and where.kind not in kinds:
            raise TaskInputError(
                f"devices of kind {where.kind!r} cannot take this command "
                f"(it goes to {', '.join(kinds)})",
                (*loc, "kind"),
                "wrong_kind",
            )
        found = await targets.by_filter(conn, account_id, where, kinds)
        if not found:
            raise TaskInputError("no device of this account matches the filter", loc, "no_match")
        return Plan(found, [])

    # --- create --------------------------------------------------------------------------------
    async def dry_run(self, account_id: int, request: TaskRequest) -> dict[str, Any]:
        async with self.engine.connect() as conn:
            plan = await self.plan(conn, account_id, request)
        return {
            "dryRun": True,
            "commandType": request.command_type,
            "count": plan.count,
            "devices": [{"deviceId": d.uid, "id": d.id, "kind": d.kind} for d in plan.found]
            + [{"deviceId": uid, "id": None, "kind": METER} for uid in plan.register],
            "wouldRegister": plan.register,
        }

    async def create(self, account_id: int, request: TaskRequest) -> dict[str, Any]:
        """Write the task and its devices; returns {taskId, devices, registered}."""
        now = self._now()
        try:
            async with self.engine.begin() as conn:
                if request.correlation_id is not None:
                    existing = await repo.find_by_correlation(
                        conn, account_id, request.correlation_id
                    )
                    if existing is not None:
                        raise TaskConflict(
                            f"a task with correlationId {request.correlation_id!r} exists: "
                            f"{existing}"
                        )
                plan = await self.plan(conn, account_id, request)
                registered = await targets.register(conn, account_id, METER, plan.register)
                reached = plan.found + registered
                task_id = str(uuid.uuid4())
                await repo.insert_task(
                    conn, self._task_row(task_id, account_id, request, reached, now)
                )
                await repo.insert_task_devices(
                    conn, [(task_id, d.id, d.uid, "PENDING", now) for d in reached]
                )
                await event_log.append(
                    conn,
                    [
                        Event(
                            account_id,
                            "task.updated",
                            None,
                            {"taskId": task_id, "status": "QUEUED", "devices": len(reached)},
                        )
                    ],
                )
        except sa_exc.IntegrityError as exc:
            # Two requests raced for one correlationId or one new meter id.
            raise TaskConflict(
                "another request created the same task or meter at the same time; retry"
            ) from exc
        return {"taskId": task_id, "devices": len(reached), "registered": len(registered)}

    def _task_row(
        self,
        task_id: str,
        account_id: int,
        request: TaskRequest,
        reached: list[Found],
        now: datetime,
    ) -> dict[str, Any]:
        target: dict[str, Any] = (
            {"filter": request.filter.as_dict()}
            if request.filter is not None
            else {"devices": len(reached)}
        )
        return {
            "task_id": task_id,
            "account_id": account_id,
            "correlation_id": request.correlation_id,
            "command_type": request.command_type,
            "command_params": request.command_params,
            "target": target,
            "scheduled_at": request.scheduled_at or now,
            "status": "QUEUED",
            # As the caller gave it; its commands carry '<account>:<requestedBy>' (initiated_by).
            "requested_by": request.requested_by,
            "rate_per_second": request.rate_per_second or self.default_rate,
            "abort_failed_percent": request.abort.failed_percent if request.abort else None,
            "abort_min_finished": request.abort.min_finished if request.abort else None,
            "max_retries": request.max_retries,
            "timeout_seconds": request.timeout_seconds,
            "parent_task_id": request.parent_task_id,
            "device_count": len(reached),
            "created_at": now,
            "updated_at": now,
        }

    # --- read --------------------------------------------------------------------------------
    async def get(self, account_id: int, task_id: str) -> dict[str, Any] | None:
        """The task row with its live counts per device status."""
        async with self.engine.connect() as conn:
            task = await repo.get_task(conn, account_id, task_id)
            if task is None:
                return None
            task["counts"] = rules.Counts(await repo.counts(conn, task_id)).as_dict()
        return task

    async def devices(
        self,
        account_id: int,
        task_id: str,
        *,
        statuses: Sequence[str] | None,
        after_id: int | None,
        limit: int,
    ) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            if await repo.get_task(conn, account_id, task_id) is None:
                raise TaskNotFound(task_id)
            return await repo.list_task_devices(
                conn, task_id, statuses=statuses, after_id=after_id, limit=limit
            )

    async def list(
        self,
        account_id: int,
        *,
        status: str | None,
        before: tuple[datetime, str] | None,
        limit: int,
    ) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            return await repo.list_tasks(
                conn, account_id, status=status, before=before, limit=limit
            )

    # --- control -----------------------------------------------------------------------------
    async def cancel(self, account_id: int, task_id: str, by: str) -> dict[str, Any]:
        """Cancel a task that has not finished: its undispatched devices and every command of
        it not finished become CANCELLED (late answers are recorded and ignored)."""
        now = self._now()
        async with self.engine.begin() as conn:
            if await repo.get_task(conn, account_id, task_id) is None:
                raise TaskNotFound(task_id)
            # Waits for a dispatcher that holds the task: its batch is then SENT and cancelled.
            task = await repo.lock_task(conn, task_id, ("QUEUED", "IN_PROGRESS"), wait=True)
            if task is None:
                current = await repo.get_task(conn, account_id, task_id)
                status = current["status"] if current else "gone"
                raise TaskConflict(f"task {task_id} is already {status}")
            reason = f"task cancelled by {by}"[:500]
            await repo.cancel_undispatched(conn, task_id, reason, now)
            await command_repo.cancel_open_of_task(
                conn, task_id, ("PENDING", "SENT", "ACKNOWLEDGED"), reason, now
            )
            counts = rules.Counts(await repo.counts(conn, task_id)).as_dict()
            await repo.update_task(
                conn,
                task_id,
                status="CANCELLED",
                status_reason=reason,
                finished_at=now,
                updated_at=now,
                counts=counts,
            )
            await event_log.append(
                conn,
                [
                    Event(
                        account_id,
                        "task.updated",
                        None,
                        {"taskId": task_id, "status": "CANCELLED", "reason": reason},
                    )
                ],
            )
        task = await self.get(account_id, task_id)
        assert task is not None
        return task

    async def rerun(
        self,
        account_id: int,
        task_id: str,
        *,
        statuses: Sequence[str],
        overrides: dict[str, Any],
    ) -> dict[str, Any]:
        """A new task with the same command for this task's devices in `statuses` (by default
        FAILED and TIMEOUT). The task must have finished."""
        async with self.engine.connect() as conn:
            task = await repo.get_task(conn, account_id, task_id)
            if task is None:
                raise TaskNotFound(task_id)
            if task["status"] not in rules.TASK_FINISHED:
                raise TaskConflict(
                    f"task {task_id} is {task['status']}: re-run it once it has finished"
                )
            chosen = await repo.devices_in_status(conn, task_id, statuses)
        if not chosen:
            raise TaskConflict(f"task {task_id} has no device in {', '.join(statuses)}")
        request = TaskRequest(
            command_type=task["command_type"],
            command_params=task["command_params"],
            devices=[int(row["device_id"]) for row in chosen],
            scheduled_at=overrides.get("scheduled_at"),
            correlation_id=overrides.get("correlation_id"),
            requested_by=overrides.get("requested_by"),
            rate_per_second=overrides.get("rate_per_second") or task["rate_per_second"],
            abort=(
                rules.AbortRule(task["abort_failed_percent"], task["abort_min_finished"] or 1)
                if task["abort_failed_percent"] is not None
                else None
            ),
            max_retries=task["max_retries"],
            timeout_seconds=task["timeout_seconds"],
            parent_task_id=task_id,
        )
        return await self.create(account_id, request)
