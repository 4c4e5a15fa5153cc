"""The bulk-task dispatcher, a job of `fleet serve`: starts tasks at `scheduledAt`, hands their
devices to the command ledger at each task's rate, and moves each task's status after its devices
(counts, abort rule, completion), announcing `task.progress` and `task.updated` events.

Several Fleet processes may run it on one PostgreSQL database. A batch is claimed in one
transaction: the task row is locked with `FOR UPDATE SKIP LOCKED` (one worker per task at a time,
so the task's pacing is shared), the next undispatched task_devices rows are locked the same way,
their ledger commands are inserted as SENT and the rows linked to them; only after that commit
are the commands published. A device is therefore dispatched by one worker, once. Everything
lives in the database, so a restarted Fleet resumes where the last commit left the task.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from fleet.core import ledger
from fleet.core import tasks as rules
from fleet.core.events import Event
from fleet.integrations.meter_hes import KIND as METER
from fleet.integrations.meter_hes.integration import MeterHesIntegration
from fleet.integrations.meter_hes.transport import MeterHesTransport
from fleet.jobs.scheduler import Job
from fleet.services.commands import Claimed, CommandService, NewCommand
from fleet.services.transports import TargetDevice
from fleet.store import commands as command_repo
from fleet.store import events as event_log
from fleet.store import tasks as repo

if TYPE_CHECKING:
    from fleet.runtime import FleetRuntime

log = logging.getLogger(__name__)

# The job runs every JOB_INTERVAL_SECONDS (the scheduler's tick, 0.5 s, is the floor). One run
# dispatches for at most SLICE_SECONDS, then leaves the event loop to the rest of Fleet; at most
# BURST_SECONDS of unused pacing is kept, so a task resumes at its rate, not in a flood.
JOB_INTERVAL_SECONDS = 0.25
SLICE_SECONDS = 0.5
BURST_SECONDS = 0.5
# Tasks looked at per run (oldest started first).
ACTIVE_TASKS_PER_RUN = 50

DISPATCHED = Counter(
    "fleet_task_commands_dispatched", "Task devices this process handed to the command ledger"
)


class _Raced(Exception):
    """Another worker changed the claimed rows first (SQLite has no row locks): roll back."""


class TaskDispatcher:
    def __init__(
        self,
        engine: AsyncEngine,
        commands: CommandService,
        *,
        batch_max: int = 500,
        max_in_flight: int = 1000,
        slice_seconds: float = SLICE_SECONDS,
        burst_seconds: float = BURST_SECONDS,
    ) -> None:
        self.engine = engine
        self.commands = commands
        self.batch_max = batch_max
        self.max_in_flight = max_in_flight
        self.slice_seconds = slice_seconds
        self.burst_seconds = burst_seconds
        self.dispatched = 0  # by this process, for tests and benchmarks
        self._account_names: dict[int, str] = {}

    def _now(self) -> Any:
        return self.commands.clock()

    async def run_once(self) -> int:
        """One round over the tasks; returns how many devices this process dispatched."""
        await self.start_due()
        async with self.engine.connect() as conn:
            active = await repo.in_progress_ids(conn, ACTIVE_TASKS_PER_RUN)
        sent = 0
        for task_id in active:
            sent += await self.dispatch(task_id)
        for task_id in active:
            await self.reconcile(task_id)
        return sent

    async def start_due(self) -> list[str]:
        now = self._now()
        started: list[str] = []
        async with self.engine.begin() as conn:
            events: list[Event] = []
            for task in await repo.due_queued(conn, now, ACTIVE_TASKS_PER_RUN):
                if await repo.start_task(conn, task["task_id"], now):
                    started.append(task["task_id"])
                    events.append(_task_event(task, "IN_PROGRESS"))
            await event_log.append(conn, events)
        return started

    # --- dispatch ------------------------------------------------------------------------------
    async def dispatch(self, task_id: str) -> int:
        """Dispatch the task's devices for up to one slice, at its rate."""
        deadline = time.monotonic() + self.slice_seconds
        sent = 0
        while time.monotonic() < deadline:
            count, more = await self._one_batch(task_id)
            sent += count
            if not more:
                break
        return sent

    async def _one_batch(self, task_id: str) -> tuple[int, bool]:
        # A claimed batch is always published, even when Fleet is stopping: the stop waits for
        # it (a claim whose publish never happens would only be re-sent by its deadline).
        work = asyncio.ensure_future(self._claim_and_publish(task_id))
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            if not work.done():
                await asyncio.wait([work])
            raise

    async def _claim_and_publish(self, task_id: str) -> tuple[int, bool]:
        try:
            claims, more = await self._claim(task_id)
        except _Raced:
            return 0, False
        if not claims:
            return 0, more
        await self.commands.publish(claims)
        self.dispatched += len(claims)
        DISPATCHED.inc(len(claims))
        return len(claims), more

    async def _claim(self, task_id: str) -> tuple[list[Claimed], bool]:
        now = self._now()
        async with self.engine.begin() as conn:
            task = await repo.lock_task(conn, task_id, ("IN_PROGRESS",), wait=False)
            if task is None:  # finished, or another worker holds it right now
                return [], False
            rule = _rule(task)
            if rule is not None:
                counts = rules.Counts(await repo.counts(conn, task_id))
                if rules.abort_reason(rule, counts) is not None:
                    return [], False  # reconcile stops the task
            allowance = rules.dispatch_allowance(
                now,
                task["paced_until"],
                float(task["rate_per_second"]),
                burst_seconds=self.burst_seconds,
                batch_max=self.batch_max,
                room=self.max_in_flight - await repo.in_flight(conn, task_id),
            )
            if allowance.devices <= 0:
                return [], False
            rows = await repo.claim_undispatched(conn, task_id, allowance.devices)
            if not rows:
                return [], False
            initiated_by = ledger.initiated_by(
                await self._account_name(conn, task["account_id"]), task["requested_by"]
            )
            claims = await self.commands.insert_sent(
                conn,
                [
                    NewCommand(
                        TargetDevice(r["id"], r["kind"], r["uid"], r["hostname"], r["namespace"]),
                        task["command_type"],
                        task["command_params"],
                        initiated_by,
                        task_id=task_id,
                        max_retries=task["max_retries"],
                        timeout_seconds=task["timeout_seconds"],
                    )
                    for r in rows
                ],
                now,
            )
            changed = await repo.mark_dispatched(
                conn,
                [(r["task_device_id"], c.command_id) for r, c in zip(rows, claims, strict=True)],
                now,
            )
            if changed not in (-1, len(rows)):
                raise _Raced()
            await repo.update_task(
                conn, task_id, paced_until=allowance.paid(len(rows)), updated_at=now
            )
        # More may be due at once only if the batch size, not the pacing, cut this claim. A claim
        # that took all that was due ends the run: looping would take a device or two per
        # transaction for the whole slice, holding the task's lock against other processes.
        return claims, len(rows) == self.batch_max

    async def _account_name(self, conn: AsyncConnection, account_id: int) -> str:
        name = self._account_names.get(account_id)
        if name is None:
            name = self._account_names[account_id] = await repo.account_name(conn, account_id)
        return name

    # --- status ----------------------------------------------------------------------------------
    async def reconcile(self, task_id: str) -> str | None:
        """Counts, abort rule and completion of an IN_PROGRESS task; returns its new status."""
        now = self._now()
        async with self.engine.begin() as conn:
            task = await repo.lock_task(conn, task_id, ("IN_PROGRESS",), wait=False)
            if task is None:
                return None
            counts = rules.Counts(await repo.counts(conn, task_id))
            change = rules.advance("IN_PROGRESS", task["scheduled_at"], counts, now, _rule(task))
            if change is not None and change.stop_remaining:
                reason = change.reason or "task stopped"
                await repo.cancel_undispatched(conn, task_id, reason, now)
                # Commands waiting for a retry are not sent again; those in flight finish.
                await command_repo.cancel_open_of_task(conn, task_id, ("PENDING",), reason, now)
                counts = rules.Counts(await repo.counts(conn, task_id))
            values: dict[str, Any] = {}
            events: list[Event] = []
            as_dict = counts.as_dict()
            if as_dict != task["counts"]:
                values.update(counts=as_dict, updated_at=now)
                events.append(
                    Event(
                        task["account_id"],
                        "task.progress",
                        None,
                        {"taskId": task_id, "counts": as_dict, "total": counts.total},
                    )
                )
            if change is not None:
                values.update(
                    status=change.status,
                    status_reason=change.reason,
                    finished_at=now,
                    updated_at=now,
                )
                events.append(_task_event(task, change.status, change.reason))
            if values:
                await repo.update_task(conn, task_id, **values)
            await event_log.append(conn, events)
        return None if change is None else change.status


def _rule(task: dict[str, Any]) -> rules.AbortRule | None:
    if task["abort_failed_percent"] is None:
        return None
    return rules.AbortRule(
        float(task["abort_failed_percent"]), int(task["abort_min_finished"] or 1)
    )


def _task_event(task: dict[str, Any], status: str, reason: str | None = None) -> Event:
    data: dict[str, Any] = {"taskId": task["task_id"], "status": status}
    if reason:
        data["reason"] = reason
    return Event(task["account_id"], "task.updated", None, data)


def install(runtime: FleetRuntime) -> TaskDispatcher:
    """Commands and bulk tasks in a Fleet process: the meter head-end transport and its answers
    on the ingest, the ledger's default retries, the task service and the dispatcher job."""
    settings = runtime.settings
    runtime.commands.max_retries = settings.command_max_retries
    runtime.commands.transports[METER] = MeterHesTransport(runtime.link, settings.hes_topic_prefix)
    runtime.add_integration(
        MeterHesIntegration(settings.hes_topic_prefix, settings.hes_share_group)
    )
    dispatcher = TaskDispatcher(
        runtime.engine,
        runtime.commands,
        batch_max=settings.task_dispatch_batch,
        max_in_flight=settings.task_max_in_flight,
    )
    runtime.jobs.append(Job("tasks", JOB_INTERVAL_SECONDS, dispatcher.run_once))
    return dispatcher
