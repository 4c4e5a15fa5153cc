"""The liveness service: every way a device's liveness changes goes through here, and every change
leaves the same traces in one transaction: the `liveness` row (state and timer), a
`liveness_history` row, a `device.state` event, and the Offline alarm raised or cleared (with its
`alarm.raised` / `alarm.cleared` event).

What moves a device:
- a reporter's `/report/{ongoing|stop}` (`report`, batched: one transaction for the reports that
  arrive together);
- a timer falling due (`fire_due`, a job: claims due rows with FOR UPDATE SKIP LOCKED);
- kinds whose integration decides silence itself (alarm panels, `EVENT_DRIVEN_KINDS`): their
  `device.online` / `device.offline` events, followed from the event log (`follow_events`), with
  a slow `reconcile` against `device_status` for anything missed (nothing on their hot path);
- any other kind's integration calls `observe` once per batch with the devices it heard from;
- an admin (`set_held`): Stopped, raising nothing, until released.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from prometheus_client import Histogram
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from fleet.core.events import Event
from fleet.core.liveness import (
    DEFAULT_PERIOD_SECONDS,
    AdminResume,
    AdminStop,
    Input,
    Liveness,
    Ongoing,
    Silent,
    State,
    Stop,
    TimerFired,
)
from fleet.integrations.reporter import KIND as REPORTER
from fleet.integrations.reporter.wire import ReportRequest, device_uid
from fleet.services.group_commit import GroupCommit
from fleet.services.liveness_changes import Changes, flush
from fleet.store import liveness as store
from fleet.store.liveness import Tracked
from fleet.store.tables import device_status, devices, events
from fleet.store.tables_liveness import liveness, liveness_cursors

log = logging.getLogger(__name__)

# Kinds whose integration tracks online/offline itself and says so with device.online /
# device.offline events (the alarm panels' sweep and last will): liveness follows them.
EVENT_DRIVEN_KINDS = frozenset({"alarm_panel"})
ONLINE_EVENTS = ("device.online", "device.offline")
FOLLOWER = "online-events"
# How many due timers one transaction fires; the job loops until none is due.
FIRE_BATCH = 1000
# How many events the follower scans per transaction, and rows the reconcile fixes per run.
FOLLOW_SCAN = 5000
RECONCILE_BATCH = 1000
# Reports waiting together are written in one transaction of at most this many.
REPORT_BATCH_MAX = 500

REPORT_BATCH = Histogram(
    "fleet_report_batch_size",
    "Reports written together in one transaction",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
)
TIMER_LATENESS = Histogram(
    "fleet_liveness_timer_lateness_seconds",
    "From a liveness timer's due time to its firing",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class ReportOutcome:
    device_id: int
    uid: str
    state: State
    connection: str | None
    since: datetime | None
    changed: bool
    registered: bool


class BadToken(Exception):
    """Not an account's ingest token (unknown, or an API key): the report is not recorded."""


class LivenessService:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        intervals: Mapping[str, float],
        clock: Clock = utcnow,
        event_sink: Callable[[list[Event]], Any] | None = None,
    ) -> None:
        self.engine = engine
        self.intervals = dict(intervals)
        self.clock = clock
        self.event_sink = event_sink
        # One writer of liveness at a time in this process; PostgreSQL row locks (and SQLite's
        # single writer) order it against other processes.
        self._lock = asyncio.Lock()
        self._reports: GroupCommit[tuple[str, ReportRequest], ReportOutcome] = GroupCommit(
            self._apply_reports, REPORT_BATCH_MAX
        )

    def interval(self, kind: str) -> float:
        return self.intervals.get(kind, DEFAULT_PERIOD_SECONDS)

    # --- the transaction every change goes through --------------------------------------------
    async def _begin(self, conn: AsyncConnection) -> None:
        """On SQLite, take the write lock before reading what the decisions depend on (a no-op
        write does it), so a second process's job cannot decide on the same rows meanwhile."""
        if conn.dialect.name == "sqlite":
            await conn.execute(
                sa.update(liveness_cursors).where(sa.false()).values(last_event_id=0)
            )

    def _published(self, emitted: list[Event]) -> None:
        if emitted and self.event_sink is not None:
            self.event_sink(emitted)

    # --- reporters ----------------------------------------------------------------------------
    async def report(self, token: str, request: ReportRequest) -> ReportOutcome:
        """Record one report for the account of the ingest `token`; returns once it is committed.
        Raises `BadToken` (nothing recorded) when the token is not an account's ingest token."""
        return await self._reports.submit((token, request))

    async def _apply_reports(
        self, batch: list[tuple[str, ReportRequest]]
    ) -> list[ReportOutcome | Exception]:
        REPORT_BATCH.observe(len(batch))
        async with self._lock:
            now = self.clock()
            async with self.engine.begin() as conn:
                await self._begin(conn)
                # The batch's tokens, checked together in its own transaction: one query for
                # all of them rather than a connection and a query per request.
                owners = await store.ingest_accounts(conn, [token for token, _ in batch])
                accepted = [(owners[token], request) for token, request in batch if token in owners]
                work = Changes(now)
                ids, registered = await self._resolve_reporters(conn, accepted, work)
                tracked = await store.load(conn, ids.values())
                changed: list[bool] = []
                reports: dict[int, dict[str, Any]] = {}
                for account_id, request in accepted:
                    device_id = ids[(account_id, device_uid(account_id, request.name))]
                    before = work.current.get(device_id, tracked[device_id])
                    event: Input
                    if request.action == "ongoing":
                        period = (
                            request.period_seconds
                            or before.liveness.period_seconds
                            or DEFAULT_PERIOD_SECONDS
                        )
                        event = Ongoing(period, request.connection)
                    else:
                        event = Stop(request.connection)
                    changed.append(work.apply(before, event).change is not None)
                    if request.report is not None:
                        reports[device_id] = request.report
                emitted = await flush(conn, work)
                await store.set_last_report(conn, reports)
        self._published(emitted)
        outcomes: list[ReportOutcome | Exception] = []
        verdicts = iter(changed)
        for token, request in batch:
            if token not in owners:
                outcomes.append(BadToken())  # never the token itself: it could reach a log
                continue
            account_id = owners[token]
            uid = device_uid(account_id, request.name)
            device = work.current[ids[(account_id, uid)]]
            outcomes.append(
                ReportOutcome(
                    device_id=device.device_id,
                    uid=uid,
                    state=device.liveness.state,
                    connection=device.liveness.connection,
                    since=device.liveness.since,
                    changed=next(verdicts),
                    registered=device.device_id in registered,
                )
            )
        return outcomes

    async def _resolve_reporters(
        self, conn: AsyncConnection, batch: list[tuple[int, ReportRequest]], work: Changes
    ) -> tuple[dict[tuple[int, str], int], set[int]]:
        """(account, DeviceID) → device id for the batch; unknown reporters register themselves."""
        names: dict[int, dict[str, str]] = {}
        for account_id, request in batch:
            names.setdefault(account_id, {})[device_uid(account_id, request.name)] = request.name
        ids: dict[tuple[int, str], int] = {}
        registered: set[int] = set()
        for account_id, by_uid in names.items():
            found = await store.find_devices(conn, account_id, REPORTER, by_uid)
            missing = {uid: name for uid, name in by_uid.items() if uid not in found}
            created = await store.register_devices(conn, account_id, REPORTER, missing)
            for uid, device_id in created.items():
                registered.add(device_id)
                work.events.append(
                    Event(
                        account_id,
                        "device.registered",
                        device_id,
                        {"id": uid, "kind": REPORTER, "name": by_uid[uid]},
                    )
                )
                log.info("registered reporter %s as device %d", by_uid[uid], device_id)
            found.update(created)
            if len(found) < len(by_uid):  # registered by another process meanwhile
                found.update(await store.find_devices(conn, account_id, REPORTER, by_uid))
            ids.update({(account_id, uid): device_id for uid, device_id in found.items()})
        return ids, registered

    # --- timers -------------------------------------------------------------------------------
    async def fire_due(self, limit: int = FIRE_BATCH) -> int:
        """Fire every timer due by now: Reporting devices go Offline. Returns how many fired."""
        fired = 0
        while True:
            if not await self._anything_due(self.clock()):
                return fired  # the usual tick: one indexed read, no lock, no transaction
            async with self._lock:
                now = self.clock()
                async with self.engine.begin() as conn:
                    await self._begin(conn)
                    claimed = await store.claim_due(conn, now, limit)
                    for tracked in claimed.values():
                        if tracked.liveness.due_at is not None:
                            TIMER_LATENESS.observe((now - tracked.liveness.due_at).total_seconds())
                    work = Changes(now)
                    for tracked in claimed.values():
                        work.apply(tracked, TimerFired())
                    emitted = await flush(conn, work)
            self._published(emitted)
            fired += sum(1 for _, d in work.changes if d.change and d.change.state == State.OFFLINE)
            if len(claimed) < limit:
                return fired

    async def _anything_due(self, now: datetime) -> bool:
        async with self.engine.connect() as conn:
            return await conn.scalar(store.any_due(now)) is not None

    # --- kinds with their own online/offline ------------------------------------------------
    async def follow_events(self) -> int:
        """Apply the device.online / device.offline events written since the last call."""
        async with self.engine.connect() as conn:
            newest = await conn.scalar(sa.select(sa.func.max(events.c.id)))
            cursor = await conn.scalar(
                sa.select(liveness_cursors.c.last_event_id).where(
                    liveness_cursors.c.name == FOLLOWER
                )
            )
        if newest is None or (cursor is not None and newest <= cursor):
            return 0  # nothing new: no lock, no transaction
        async with self._lock:
            now = self.clock()
            async with self.engine.begin() as conn:
                await self._begin(conn)
                cursor = await store.read_cursor(conn, FOLLOWER)
                window = (
                    sa.select(events.c.id)
                    .where(events.c.id > cursor)
                    .order_by(events.c.id)
                    .limit(FOLLOW_SCAN)
                    .subquery()
                )
                upper = await conn.scalar(sa.select(sa.func.max(window.c.id)))
                if upper is None:
                    return 0
                rows = (
                    await conn.execute(
                        sa.select(events.c.type, events.c.device_id)
                        .where(
                            events.c.id > cursor,
                            events.c.id <= upper,
                            events.c.type.in_(ONLINE_EVENTS),
                        )
                        .order_by(events.c.id)
                    )
                ).all()
                tracked = await store.load(conn, [row.device_id for row in rows])
                work = Changes(now)
                for row in rows:
                    device = tracked.get(row.device_id)
                    if device is None or device.kind not in EVENT_DRIVEN_KINDS:
                        continue
                    device = work.current.get(device.device_id, device)
                    if row.type == "device.online":
                        work.apply(device, Ongoing(self.interval(device.kind), arm=False))
                    else:
                        work.apply(device, Silent())
                emitted = await flush(conn, work)
                await store.write_cursor(conn, FOLLOWER, int(upper))
        self._published(emitted)
        return len(rows)

    async def reconcile(self) -> int:
        """Bring event-driven kinds in line with device_status: adopt devices liveness has not
        seen yet (no alarm for what happened before), and correct any missed transition."""
        async with self._lock:
            now = self.clock()
            async with self.engine.begin() as conn:
                await self._begin(conn)
                online = sa.func.coalesce(device_status.c.is_online, sa.false())
                rows = (
                    await conn.execute(
                        sa.select(devices.c.id, online.label("online"), device_status.c.last_seen)
                        .select_from(
                            devices.join(
                                device_status, device_status.c.device_id == devices.c.id
                            ).outerjoin(liveness, liveness.c.device_id == devices.c.id)
                        )
                        .where(
                            devices.c.kind.in_(sorted(EVENT_DRIVEN_KINDS)),
                            sa.or_(
                                liveness.c.device_id.is_(None),
                                sa.and_(
                                    sa.not_(liveness.c.held),
                                    sa.or_(
                                        sa.and_(
                                            online,
                                            liveness.c.state != State.REPORTING.value,
                                        ),
                                        sa.and_(
                                            sa.not_(online),
                                            liveness.c.state == State.REPORTING.value,
                                        ),
                                    ),
                                ),
                            ),
                        )
                        .order_by(devices.c.id)
                        .limit(RECONCILE_BATCH)
                    )
                ).all()
                tracked = await store.load(conn, [row.id for row in rows])
                work = Changes(now)
                adopted: list[Tracked] = []
                for row in rows:
                    device = tracked[row.id]
                    if not device.stored:
                        state = (
                            State.REPORTING
                            if row.online
                            else State.OFFLINE
                            if row.last_seen
                            else State.NEW
                        )
                        adopted.append(
                            replace(
                                device,
                                liveness=Liveness(
                                    state=state,
                                    since=row.last_seen,
                                    last_report_at=row.last_seen,
                                    period_seconds=self.interval(device.kind),
                                ),
                            )
                        )
                    elif row.online:
                        work.apply(device, Ongoing(self.interval(device.kind), arm=False))
                    else:
                        work.apply(device, Silent())
                await store.insert_rows(conn, adopted)
                emitted = await flush(conn, work)
        self._published(emitted)
        return len(rows)

    # --- other integrations -------------------------------------------------------------------
    async def observe(
        self,
        conn: AsyncConnection,
        device_ids: Sequence[int],
        *,
        interval_seconds: float | None = None,
    ) -> list[Event]:
        """An integration heard from these devices: call once per batch, inside its transaction
        (the events are written there too). Each device is Reporting until its kind's expected
        interval (or `interval_seconds`) + grace passes without another call."""
        await self._begin(conn)
        tracked = await store.load(conn, device_ids)
        work = Changes(self.clock())
        for device in tracked.values():
            period = interval_seconds or self.interval(device.kind)
            work.apply(device, Ongoing(period))
        return await flush(conn, work)

    # --- admins -------------------------------------------------------------------------------
    async def set_held(self, account_id: int, device_id: int, held: bool) -> Tracked | None:
        """Stop a device (held: it raises nothing, its reports change nothing) or release it.
        None when the account has no such device."""
        async with self._lock:
            now = self.clock()
            async with self.engine.begin() as conn:
                await self._begin(conn)
                device = (await store.load(conn, [device_id])).get(device_id)
                if device is None or device.account_id != account_id:
                    return None
                work = Changes(now)
                work.apply(device, AdminStop() if held else AdminResume())
                if not held and device.kind in EVENT_DRIVEN_KINDS:
                    # Its integration will not say "online" again while it stays online.
                    is_online = await conn.scalar(
                        sa.select(device_status.c.is_online).where(
                            device_status.c.device_id == device_id
                        )
                    )
                    if is_online:
                        current = work.current[device_id]
                        work.apply(current, Ongoing(self.interval(device.kind), arm=False))
                emitted = await flush(conn, work)
        self._published(emitted)
        return work.current[device_id]


def intervals_from(settings: Any) -> dict[str, float]:
    """Expected report interval per kind: FLEET_LIVENESS_INTERVALS, and the alarm panels' own
    offline time (their integration decides silence with it)."""
    return {**settings.liveness_intervals, "alarm_panel": settings.offline_after_seconds}
