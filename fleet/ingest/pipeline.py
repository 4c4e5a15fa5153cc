"""The ingest loop: collect a batch from the broker link, apply it in one transaction, then ack.

Batches close when they are full, when `batch_wait` has passed since their first message, or when
the link goes quiet for `IDLE_FLUSH_SECONDS` (a QoS 1 broker sends only a window of unacknowledged
messages, then waits for our acks: waiting longer would only add latency). A batch whose
transaction fails is retried until it commits; its messages are acknowledged only after that.

While more messages wait, a batch of heartbeats from known panels (the steady state) is decided in
memory and its writes commit while the loop decodes and decides the next batch: the database's
time overlaps Python's (measured: a third of a batch's time was the loop waiting for PostgreSQL).
Transactions still run one at a time and in order, and each batch is acknowledged after its own
commit. If such writes fail, the batch and the one decided on top of it are decided again from the
database's state (see `_settle`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from prometheus_client import Histogram
from sqlalchemy.ext.asyncio import AsyncEngine

from fleet.core.events import Event
from fleet.ingest.integration import Integration
from fleet.ingest.mqtt_link import InboundMessage, Link
from fleet.ingest.namespaces import NamespaceResolver
from fleet.ingest.partition import Partition, device_of
from fleet.ingest.rejections import IngestStats, Rejection
from fleet.integrations.alarm_panel.codec import device_id_sync_payload
from fleet.integrations.alarm_panel.handler import (
    NAME,
    AlarmPanelHandler,
    BatchOutcome,
    Decisions,
)
from fleet.integrations.alarm_panel.prepare import PanelMessage, prepare
from fleet.services.commands import CommandService, DeviceNotFound
from fleet.services.transports import CommandRejected
from fleet.store import events as event_log
from fleet.store.refusals import refused_for_its_content

log = logging.getLogger(__name__)

IDLE_FLUSH_SECONDS = 0.002
LATENCY_SAMPLES = 50
URGENT_SUFFIXES = ("/alarm",)
URGENT_SPLIT_MIN = 50  # messages in a batch before its alarms get a transaction of their own
SWEEP_INTERVAL_SECONDS = 1.0
ROUTE_CACHE_SIZE = 200_000  # topics whose integration is remembered (cleared when full)
# A failed transaction (database restarting) is retried after 0.5 s, doubling to 10 s.
RETRY_MIN_SECONDS = 0.5
RETRY_MAX_SECONDS = 10.0
# After this many failures of one batch while the database answers, look for a poison message.
POISON_AFTER_FAILURES = 2

COMMIT_LATENCY = Histogram(
    "fleet_ingest_commit_latency_seconds",
    "From a message's arrival to the commit of its batch",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

Clock = Callable[[], datetime]
EventSink = Callable[[list[Event]], Any]
# Returns once events already handed to the EventSink have been delivered (or it gave up waiting).
UrgentEventSink = Callable[[list[Event]], Awaitable[None]]


def _has_urgent(messages: list[InboundMessage]) -> bool:
    return any(m.topic.endswith(URGENT_SUFFIXES) for m in messages)


def _urgent_first(
    batch: list[InboundMessage],
) -> tuple[list[InboundMessage], list[InboundMessage]]:
    """(the batch's alarms with every message of their devices, the rest), each in arrival
    order, told apart by topic alone (before anything is decoded). A device's messages stay
    together and in order (its anti-replay and CDC need that); only other devices' messages are
    overtaken. Small batches are not split: one more transaction would cost more than it
    saves."""
    if len(batch) < URGENT_SPLIT_MIN:
        return [], batch
    devices = {device_of(m.topic) for m in batch if m.topic.endswith(URGENT_SUFFIXES)}
    if not devices:
        return [], batch
    urgent: list[InboundMessage] = []
    rest: list[InboundMessage] = []
    for message in batch:
        (urgent if device_of(message.topic) in devices else rest).append(message)
    return urgent, rest


def utcnow() -> datetime:
    return datetime.now(UTC)


Owned = list[tuple[int, PanelMessage]]  # (account id, message)
CommittedPart = tuple[BatchOutcome, float]  # what a transaction applied, and when it committed


@dataclass
class _InFlight:
    """A batch decided in memory whose writes are committing while the loop goes on."""

    batch: list[InboundMessage]  # all of it: acknowledged after the commit
    parts: list[CommittedPart]  # its parts committed already (its alarms)
    rest: list[PanelMessage]  # what the writes store (decided again if they fail)
    owned: Owned
    writes: asyncio.Task[CommittedPart]
    acked: bool = False  # by `_ack_when_written`, as soon as the writes committed


class IngestPipeline:
    def __init__(
        self,
        engine: AsyncEngine,
        link: Link,
        handler: AlarmPanelHandler,
        namespaces: NamespaceResolver,
        commands: CommandService,
        *,
        hmac_key: bytes,
        max_payload: int,
        batch_max: int,
        batch_wait: float,
        clock: Clock = utcnow,
        event_sink: EventSink | None = None,
        urgent_event_sink: UrgentEventSink | None = None,
        partition: Partition | None = None,
    ) -> None:
        self.engine = engine
        self.link = link
        self.handler = handler
        self.namespaces = namespaces
        self.commands = commands
        self.hmac_key = hmac_key
        self.max_payload = max_payload
        self.batch_max = batch_max
        self.batch_wait = batch_wait
        self.clock = clock
        self.event_sink = event_sink
        self.urgent_event_sink = urgent_event_sink
        self.partition = partition
        self.stats = IngestStats()
        self.integrations: dict[str, Integration] = {}
        self._routes: dict[str, Integration | None] = {}
        self.latencies: list[float] = []  # commit latency samples, for benchmarks
        self.keep_latencies = False
        self._stop = asyncio.Event()
        self._in_flight: _InFlight | None = None

    def add_integration(self, integration: Integration) -> None:
        """Route the topics `integration` matches to it (checked before the alarm panels)."""
        self.integrations[integration.name] = integration
        self._routes.clear()

    def stop(self) -> None:
        """Stop after the batch in progress (run() returns once it is committed)."""
        self._stop.set()
        self.link.interrupt_wait()

    async def run(self) -> None:
        last_sweep = time.monotonic()
        try:
            while not self._stop.is_set():
                await self.link.wait_for_messages(SWEEP_INTERVAL_SECONDS)
                batch = await self._collect()
                if batch:
                    try:
                        await self.process(batch, settle=False)
                        if not self.link.pending():
                            # Nothing to overlap the writes with: acknowledge them now.
                            await self._settle()
                    except Exception:
                        if self._stop.is_set():
                            raise
                        # A fault of Fleet's own (the database's are retried inside): the
                        # ingest must go on with the next batch, not end without a word.
                        log.exception("ingest: a batch of %d messages failed", len(batch))
                if time.monotonic() - last_sweep >= SWEEP_INTERVAL_SECONDS:
                    last_sweep = time.monotonic()
                    await self.sweep()
        finally:
            if self._in_flight is not None and not self._in_flight.writes.done():
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._in_flight.writes)
        await self._settle()

    async def _collect(self) -> list[InboundMessage]:
        batch = self.link.drain(self.batch_max)
        if not batch:
            return batch
        deadline = time.monotonic() + self.batch_wait
        # An alarm does not wait for its batch to fill: operators see it as soon as it commits.
        urgent = _has_urgent(batch)
        while not urgent and len(batch) < self.batch_max and time.monotonic() < deadline:
            await asyncio.sleep(IDLE_FLUSH_SECONDS)
            more = self.link.drain(self.batch_max - len(batch))
            if not more:
                break
            batch.extend(more)
            urgent = _has_urgent(more)
        return batch

    async def process(self, batch: list[InboundMessage], *, settle: bool = True) -> None:
        """Apply one batch; returns once it has committed and been acknowledged. With `settle`
        False (the ingest loop), a batch that can be decided in memory returns with its writes
        still committing: the next call (or `_settle`) finishes it."""
        parts: list[CommittedPart] = []
        urgent_messages, rest = _urgent_first(batch)
        if any(self._route(message.topic) for message in urgent_messages):
            urgent_messages, rest = [], batch  # another family's topic beside a panel's: in order
        urgent, _ = self._prepare(urgent_messages)
        if urgent:
            # Alarms do not wait for the rest of their batch, not even for it to be decoded:
            # their small transaction commits first (after the writes in flight) and their
            # events go out at once; the acknowledgement still waits for all.
            await self._settle()
            parts.append((await self._commit(urgent), time.time()))
            await self._deliver_now(parts[-1][0])
        prepared, others = self._prepare(rest)
        # Decided now, while the previous batch's writes may still be committing.
        ahead = self._decide_ahead(prepared) if prepared and not others else None
        try:
            if not await self._settle(also_forget=ahead[0] if ahead else ()):
                ahead = None  # built on the failed writes' decisions: decided again below
        except BaseException:
            if ahead is not None:
                self.handler.forget(ahead[0])
            raise
        if ahead is not None:
            owned, decisions = ahead
            writes = asyncio.create_task(self._write_ahead(decisions), name="ingest-writes")
            flight = _InFlight(batch, parts, prepared, owned, writes)
            writes.add_done_callback(functools.partial(self._ack_when_written, flight))
            self._in_flight = flight
            if settle:
                await self._settle()
            return
        if prepared:
            parts.append((await self._commit(prepared), time.time()))
        for name, messages in others.items():
            await self._commit_other(self.integrations[name], messages)
        await self._finish(batch, parts)

    def _prepare(
        self, messages: list[InboundMessage]
    ) -> tuple[list[PanelMessage], dict[str, list[InboundMessage]]]:
        """The panels' messages decoded (the bad ones counted as rejected), and the other
        families' messages by integration; another worker's devices are left out."""
        prepared: list[PanelMessage] = []
        others: dict[str, list[InboundMessage]] = {}
        partition = self.partition
        for message in messages:
            if partition is not None and not partition.owns(message.topic):
                continue  # another worker's device (acknowledged with the batch, in order)
            integration = self._route(message.topic)
            if integration is not None:
                others.setdefault(integration.name, []).append(message)
                continue
            result = prepare(message, self.hmac_key, self.max_payload)
            if isinstance(result, Rejection):
                self.stats.reject(NAME, result)
            elif result is not None:
                prepared.append(result)
        return prepared, others

    def _decide_ahead(self, prepared: list[PanelMessage]) -> tuple[Owned, Decisions] | None:
        """The batch's decisions, made in memory, if it needs nothing from the database (every
        namespace resolved, every message a heartbeat of a loaded panel)."""
        known = self.namespaces.known
        owned: Owned = []
        for message in prepared:
            account_id = known(message.base)
            if account_id is None:
                return None
            owned.append((account_id, message))
        try:
            decisions = self.handler.decide_known(owned, self.clock())
        except Exception:
            # A fault of Fleet's own: what it decided so far is dropped (the panels' state is
            # reloaded) and the batch takes the path with the database's retries.
            log.exception("ingest: deciding a batch of %d in memory failed", len(owned))
            self.handler.forget(owned)
            return None
        return None if decisions is None else (owned, decisions)

    async def _write_ahead(self, decisions: Decisions) -> CommittedPart:
        async with self.engine.begin() as conn:
            await self.handler.write(conn, decisions)
            await event_log.append(conn, decisions.outcome.events)
        return decisions.outcome, time.time()

    async def _settle(self, also_forget: Iterable[tuple[int, PanelMessage]] = ()) -> bool:
        """Wait for the writes in flight, then acknowledge and hand on their batch. False if
        they failed: the panels of that batch, and of `also_forget` (decided on top of it),
        are reloaded, and the batch goes through `_commit` (retried until the database takes
        it, a poison message isolated), decided again."""
        flight, self._in_flight = self._in_flight, None
        if flight is None:
            return True
        settled = True
        try:
            part = await flight.writes
        except Exception:
            log.warning(
                "ingest: writes of a batch of %d failed; applying it again", len(flight.rest)
            )
            self.handler.forget(flight.owned)
            self.handler.forget(also_forget)
            settled = False
            part = (await self._commit(flight.rest), time.time())
        flight.parts.append(part)
        await self._finish(flight.batch, flight.parts, acked=flight.acked)
        return settled

    def _ack_when_written(self, flight: _InFlight, writes: asyncio.Task[CommittedPart]) -> None:
        """Acknowledge a batch the moment its writes commit, not when the loop next settles
        them: at QoS 1 the broker sends no more than its window of unacknowledged messages."""
        if not writes.cancelled() and writes.exception() is None:
            self.link.ack(flight.batch)
            flight.acked = True

    async def _finish(
        self, batch: list[InboundMessage], parts: list[CommittedPart], *, acked: bool = False
    ) -> None:
        """After the batch's transactions committed: acknowledge it (unless that is done), then
        hand on its events."""
        if not acked:
            self.link.ack(batch)
        outcome = BatchOutcome()
        for part, _ in parts:
            outcome.absorb(part)
        self.stats.batches += 1
        try:
            await self._after_commit(outcome)
        finally:  # committed and acknowledged: counted, whatever came after
            for part, committed in parts:
                self._count(part, committed)

    def _count(self, outcome: BatchOutcome, committed: float) -> None:
        for kind, count in Counter(applied.kind for applied in outcome.applied).items():
            self.stats.accept(NAME, kind, count)
        # The histogram gets an even sample of at most LATENCY_SAMPLES per batch: observing
        # every message of a 2,000-message batch would cost more than deciding its CDC.
        step = max(1, len(outcome.applied) // LATENCY_SAMPLES)
        for applied in outcome.applied[::step]:
            COMMIT_LATENCY.observe(committed - applied.source.received)
        if self.keep_latencies:
            self.latencies.extend(committed - a.source.received for a in outcome.applied)
        for rejection in outcome.rejected:
            self.stats.reject(NAME, rejection)

    def _route(self, topic: str) -> Integration | None:
        if not self.integrations:
            return None
        # Devices publish on a few topics each: each topic is matched once, then looked up.
        routes = self._routes
        if topic in routes:
            return routes[topic]
        found = next((i for i in self.integrations.values() if i.matches(topic)), None)
        if len(routes) >= ROUTE_CACHE_SIZE:
            routes.clear()
        routes[topic] = found
        return found

    async def _commit_other(self, integration: Integration, messages: list[InboundMessage]) -> None:
        delay = RETRY_MIN_SECONDS
        while True:
            try:
                async with self.engine.begin() as conn:
                    outcome = await integration.handle(conn, messages, self.clock())
                    await event_log.append(conn, outcome.events)
                break
            except Exception:
                if self._stop.is_set():
                    raise
                log.exception("%s batch failed; retrying in %.1f s", integration.name, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_SECONDS)
        for kind in outcome.applied:
            self.stats.accept(integration.name, kind)
        for rejection in outcome.rejected:
            self.stats.reject(integration.name, rejection)
        if outcome.events and self.event_sink is not None:
            self.event_sink(outcome.events)

    async def _commit(self, prepared: list[PanelMessage]) -> BatchOutcome:
        """Commit the batch, retrying while the database is unreachable or refuses writes. A
        batch the database keeps refusing for what it carries (a value out of range: SQLSTATE
        22/23) holds a poison message: it is split until that message is found and rejected, so
        it cannot stall the ingest and the good messages around it are kept."""
        delay = RETRY_MIN_SECONDS
        failures = 0
        while True:
            try:
                return await self._apply_once(prepared)
            except Exception as exc:
                if self._stop.is_set():
                    raise
                failures += 1
                if (
                    failures >= POISON_AFTER_FAILURES
                    and refused_for_its_content(exc)
                    and await self._database_answers()
                ):
                    return await self._isolate(prepared, exc)
                log.exception("ingest batch of %d failed; retrying in %.1f s", len(prepared), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_SECONDS)

    async def _apply_once(self, prepared: list[PanelMessage]) -> BatchOutcome:
        owned: list[tuple[int, PanelMessage]] = []
        try:
            async with self.engine.begin() as conn:
                outcome = BatchOutcome()
                # A batch holds a handful of namespaces: each is resolved once.
                bases: dict[str, int | None] = {}
                for base in {message.base for message in prepared}:
                    bases[base] = await self.namespaces.resolve(conn, base)
                for message in prepared:
                    account_id = bases[message.base]
                    if account_id is None:
                        outcome.rejected.append(
                            Rejection("unknown_namespace", message.source.topic, message.base)
                        )
                    else:
                        owned.append((account_id, message))
                applied = await self.handler.apply(conn, owned, self.clock())
                await event_log.append(conn, applied.events)
        except BaseException:
            self.handler.forget(owned)
            raise
        outcome.applied, outcome.sync_requests = applied.applied, applied.sync_requests
        outcome.rejected += applied.rejected
        outcome.events = applied.events
        return outcome

    async def _isolate(self, prepared: list[PanelMessage], error: Exception) -> BatchOutcome:
        if len(prepared) == 1:
            log.error("the database refuses a message; rejected: %s", error)
            return BatchOutcome(
                rejected=[Rejection("store_error", prepared[0].source.topic, str(error)[:200])]
            )
        middle = len(prepared) // 2
        merged = BatchOutcome()
        for half in (prepared[:middle], prepared[middle:]):  # in order: devices stay in order
            try:
                part = await self._apply_once(half)
            except Exception as exc:
                # The database's own trouble (it stopped taking writes meanwhile) is waited out
                # like any other: never a reason to reject a message.
                if refused_for_its_content(exc):
                    part = await self._isolate(half, exc)
                else:
                    part = await self._commit(half)
            merged.absorb(part)
        return merged

    async def _database_answers(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
            return True
        except Exception:
            return False

    async def sweep(self) -> None:
        await self._settle()  # one transaction at a time, in order
        try:
            async with self.engine.begin() as conn:
                outcome = await self.handler.sweep(conn, self.clock())
                await event_log.append(conn, outcome.events)
        except Exception:
            log.exception("liveness sweep failed; it runs again in %.0f s", SWEEP_INTERVAL_SECONDS)
            return
        await self._after_commit(outcome)

    async def _after_commit(self, outcome: BatchOutcome) -> None:
        for account_id, device_id in outcome.sync_requests:
            await self._send_sync(account_id, device_id)
        self._notify(outcome)

    async def _deliver_now(self, outcome: BatchOutcome) -> None:
        """The alarms' events reach the event stream before the rest of the batch takes the
        loop (its decisions would otherwise hold the stream's read of the log)."""
        events = outcome.events
        self._notify(outcome)
        if events and self.urgent_event_sink is not None:
            await self.urgent_event_sink(events)

    def _notify(self, outcome: BatchOutcome) -> None:
        """Hand the committed events on (once per event: a part notified early is marked)."""
        if outcome.events and self.event_sink is not None:
            self.event_sink(outcome.events)
        outcome.events = []

    async def _send_sync(self, account_id: int, device_id: int) -> None:
        """The device-id sync is an ordinary command in the ledger (auth level 1, no retries:
        the sync's own backoff decides when to send the next one)."""
        try:
            await self.commands.send(
                account_id=account_id,
                device_id=device_id,
                command_type="CONFIG",
                payload=device_id_sync_payload(device_id),
                initiated_by="system:device-sync",
                auth_level=1,
                max_retries=0,
                notes="SET_DEVICE_ID",
            )
        except (DeviceNotFound, CommandRejected) as exc:
            log.warning("device-id sync for device %d not sent: %s", device_id, exc)
        except Exception:
            # After the batch committed: the database went away meanwhile. The sync's own
            # schedule sends it again; the ingest goes on.
            log.exception("device-id sync for device %d not sent", device_id)
