"""The event stream: every account's events, in cursor order, to every connected client.

One `EventHub` per Fleet process tails the `events` table (all accounts; the cursor is the row
id) and fans each new event out to the subscriptions of its account. Producers append events in
the transaction of the change and call `hub.notify()` after the commit; on PostgreSQL the hub
also NOTIFYs the other Fleet processes (fleet/events/pg_wakeup.py), and polls the table on a
slow timer in case a wake-up was lost.

The hub only hands out events up to its *horizon*: the cursor below which nothing can appear
any more. On SQLite writers are serialised, so every committed row is final. On PostgreSQL ids
come from a sequence and a transaction that drew a smaller id may commit after one that drew a
larger id: the hub delivers the gap-free run of ids after its horizon at once, and when it meets
a gap it waits until every transaction that was writing `events` when it looked has ended
(`log.writers_in_flight`), then reads that range again and moves on: an id still missing then
was rolled back. Catch-up reads and the JSON page are bounded by the horizon too, so no reader
ever steps over a row that commits later.

A subscription starts at a cursor: it reads the database (pulled by the client, so a slow reader
only slows itself) until it reaches the hub's in-memory tail of recent events, then goes live.
A live subscription has a bounded buffer; a client that lets it fill is dropped and told the
cursor to resume from, so a slow client never makes Fleet's memory grow.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from prometheus_client import Counter, Gauge
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from fleet.events import log as event_log
from fleet.events.model import (
    CursorExpired,
    EventFilter,
    HubUnavailable,
    StreamClosed,
    StreamEvent,
    StreamOverflow,
)
from fleet.events.pg_wakeup import PgWakeups
from fleet.stopping import cancel_and_wait

log = logging.getLogger(__name__)

CLIENTS = Gauge("fleet_event_stream_clients", "Open event stream subscriptions (SSE + WebSocket).")
OVERFLOWS = Counter(
    "fleet_event_stream_overflows", "Clients disconnected for falling too far behind."
)
DELIVERED = Counter("fleet_event_stream_events", "Events read from the log and fanned out.")

READ_BATCH = 2000  # rows per read of the tail
# Events handed to the subscriptions between two yields to the event loop, so that the senders of
# fast clients drain their buffers while a large commit is fanned out: only clients that really
# fall behind fill theirs. A WebSocket sender also sends 4 events per turn of the loop.
PUBLISH_CHUNK = 4
RING_SIZE = 8192  # recent events kept in memory (all accounts): where catching-up clients go live
POLL_SECONDS = 1.0  # the tail is read this often even without a wake-up
GAP_POLL_SECONDS = 0.02  # while waiting for the writers of a gap to end
GAP_TIMEOUT_SECONDS = 30.0  # a writer open longer than this no longer holds the stream back
READY_TIMEOUT_SECONDS = 10.0
RETRY_MAX_SECONDS = 5.0


@dataclass(slots=True)
class _Gap:
    target: int  # everything up to here is final once `writers` have ended
    writers: list[str]
    since: float


class Subscription:
    """One client's view of its account's stream. Iterate with `next_batch()`."""

    def __init__(
        self,
        hub: EventHub,
        account_id: int,
        position: int,
        flt: EventFilter,
        buffer_max: int,
        *,
        reset: bool = False,
    ) -> None:
        self._hub = hub
        self.account_id = account_id
        self.filter = flt
        self.buffer_max = buffer_max
        self.start = position  # where the stream starts (sent to the client as `ready`)
        self.reset = reset  # the cursor asked for was older than the events kept, or unknown
        self.position = position  # every event up to here has been read or queued
        self.delivered = position  # the cursor of the last event handed out
        self.live = False
        self.high_water = 0  # the most events ever buffered (tests check the bound)
        self._buffer: deque[StreamEvent] = deque()
        self._wake = asyncio.Event()
        self._overflow: int | None = None
        self._closed = False

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    async def next_batch(self, limit: int = 500) -> list[StreamEvent]:
        """The next events in cursor order (waits for them). Raises StreamOverflow when the
        client fell too far behind, StreamClosed when the hub stops."""
        while True:
            if self._overflow is not None:
                raise StreamOverflow(self._overflow)
            if self._closed:
                raise StreamClosed()
            if self._buffer:
                batch = [self._buffer.popleft() for _ in range(min(limit, len(self._buffer)))]
                self.delivered = batch[-1].cursor
                return batch
            if not self.live:
                batch = await self._hub._catch_up(self, limit)
                if batch:
                    self.delivered = batch[-1].cursor
                    return batch
                continue
            self._wake.clear()
            await self._wake.wait()

    def close(self) -> None:
        """The client went away: forget it (idempotent)."""
        self._closed = True
        self._buffer.clear()
        self._hub._forget(self)
        self._wake.set()

    # --- called by the hub, synchronously ------------------------------------------------------
    def _extend(self, events: list[StreamEvent]) -> None:
        self._buffer.extend(events)
        self.high_water = max(self.high_water, len(self._buffer))
        if events:
            self._wake.set()

    def _offer(self, event: StreamEvent) -> None:
        if event.cursor <= self.position:
            return
        self.position = event.cursor
        if not self.filter.matches(event):
            return
        if len(self._buffer) >= self.buffer_max:
            # Drop what is queued (memory is the point) and tell the client where to resume: its
            # last event handed out, since nothing after it reached the socket.
            self._buffer.clear()
            self._overflow = self.delivered
            self._hub._forget(self)
            self._hub.overflows += 1
            OVERFLOWS.inc()
            log.info(
                "event client of account %d fell %d events behind: told to resume from %d",
                self.account_id,
                self.buffer_max,
                self.delivered,
            )
            self._wake.set()
            return
        self._buffer.append(event)
        self.high_water = max(self.high_water, len(self._buffer))
        self._wake.set()


class EventHub:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        retention_hours: float = 72.0,
        client_buffer: int = 1000,
        ring_size: int = RING_SIZE,
        poll_seconds: float = POLL_SECONDS,
        listen: bool = True,
    ) -> None:
        self.engine = engine
        self.retention = timedelta(hours=retention_hours)
        self.client_buffer = client_buffer
        self.poll_seconds = poll_seconds
        # SQLite serialises writers: a row it shows is never preceded by one that commits later.
        self._gapless = engine.dialect.name == "sqlite"
        self.horizon = 0  # every event up to this cursor is committed and known (or never will be)
        self._ring: deque[StreamEvent] = deque()
        self._ring_size = ring_size
        self._ring_floor = 0  # the ring holds every event in (ring_floor, horizon]
        self._live: dict[int, set[Subscription]] = {}
        self._subs: set[Subscription] = set()
        self._gap: _Gap | None = None
        self._wake = asyncio.Event()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.wakeups = (
            PgWakeups(engine, self._wake.set)
            if listen and engine.dialect.name == "postgresql"
            else None
        )
        self.overflows = 0  # clients dropped for a full buffer, since start
        # Reads of the log begun and ended, for settle().
        self._reads_started = self._reads_done = 0
        self._read_done = asyncio.Event()
        self.skipped_gaps = 0  # gaps given up on after GAP_TIMEOUT_SECONDS

    # --- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        if self._task is not None:
            return
        if self.wakeups is not None:
            self.wakeups.start()
        self._task = asyncio.create_task(self._run(), name="event-hub")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)
        if self.wakeups is not None:
            await self.wakeups.stop()
        for sub in list(self._subs):
            sub.close()
        self._ready.clear()

    async def wait_ready(self) -> None:
        try:
            async with asyncio.timeout(READY_TIMEOUT_SECONDS):
                await self._ready.wait()
        except TimeoutError as exc:
            raise HubUnavailable(
                "the event stream is not ready: its database is unreachable"
            ) from exc

    def notify(self) -> None:
        """Call after committing events: wakes this hub and, on PostgreSQL, every other Fleet
        process's. Cheap, never blocks, safe to call often (wake-ups coalesce)."""
        self._wake.set()
        if self.wakeups is not None:
            self.wakeups.notify()

    async def settle(self, patience: float) -> None:
        """notify(), then wait (at most `patience` seconds) until a read of the log that began
        after this call has ended: events committed before the call have then been delivered,
        unless an older writer still holds them back. For a producer whose events must not
        wait behind its own next piece of work (the ingest, after an alarm)."""
        target = self._reads_started + 1
        self.notify()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(patience):
                while self._reads_done < target:
                    self._read_done.clear()
                    await self._read_done.wait()

    @property
    def clients(self) -> int:
        return len(self._subs)

    # --- subscribing ---------------------------------------------------------------------------
    async def subscribe(
        self,
        account_id: int,
        cursor: int | None,
        flt: EventFilter | None = None,
        *,
        buffer: int | None = None,
    ) -> Subscription:
        """A subscription from `cursor` (None: from now on). A cursor older than the events kept,
        or newer than any event, starts the stream now with `reset` set."""
        await self.wait_ready()
        reset = False
        if cursor is None:
            position = self.horizon
        else:
            try:
                await self._check_cursor(cursor)
                position = cursor
            except CursorExpired as exc:
                reset, position = True, exc.restart
        sub = Subscription(
            self,
            account_id,
            position,
            flt or EventFilter(),
            buffer or self.client_buffer,
            reset=reset,
        )
        self._subs.add(sub)
        CLIENTS.inc()
        return sub

    async def page(
        self, account_id: int, cursor: int, flt: EventFilter, limit: int
    ) -> list[StreamEvent]:
        """Up to `limit` events after `cursor` that are final (for polling). Raises
        CursorExpired for a cursor older than the events kept."""
        await self.wait_ready()
        await self._check_cursor(cursor)
        bound = self.horizon
        async with self.engine.connect() as conn:
            return await event_log.read_account(conn, account_id, cursor, bound, flt, limit)

    async def _check_cursor(self, cursor: int) -> None:
        """0 is the beginning of what is kept; other cursors must still be in the log's range."""
        if cursor == 0:
            return
        async with self.engine.connect() as conn:
            oldest, newest = await event_log.id_range(conn)
        # The newest event is never pruned, so an empty log with a cursor, or a cursor past the
        # newest, means a database that is not the one the cursor came from.
        if oldest is None or cursor < oldest - 1 or cursor > max(newest or 0, self.horizon):
            raise CursorExpired(cursor, self.horizon)

    async def _catch_up(self, sub: Subscription, limit: int) -> list[StreamEvent]:
        """The subscription's next events from the database, until it can go live."""
        while True:
            if self._go_live(sub):
                return []
            bound = self.horizon
            async with self.engine.connect() as conn:
                batch = await event_log.read_account(
                    conn, sub.account_id, sub.position, bound, sub.filter, limit
                )
            if sub._closed:
                raise StreamClosed()
            sub.position = batch[-1].cursor if len(batch) == limit else bound
            if batch:
                return batch

    def _go_live(self, sub: Subscription) -> bool:
        """Synchronously: the ring's events after the subscription's position, then every new
        one as it comes. False when the ring does not reach back that far (read more first)."""
        if sub.position < self.horizon:
            if sub.position < self._ring_floor:
                return False
            recent: list[StreamEvent] = []
            for event in reversed(self._ring):
                if event.cursor <= sub.position:
                    break
                if event.account_id == sub.account_id and sub.filter.matches(event):
                    recent.append(event)
            if len(recent) > sub.buffer_max:
                return False
            recent.reverse()
            sub._extend(recent)
            sub.position = self.horizon
        sub.live = True
        self._live.setdefault(sub.account_id, set()).add(sub)
        return True

    def _forget(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.discard(sub)
            CLIENTS.dec()
        subs = self._live.get(sub.account_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._live[sub.account_id]

    # --- retention -----------------------------------------------------------------------------
    async def prune(self, now: datetime | None = None) -> int:
        """Delete events older than the retention window (a job in runtime.jobs)."""
        cutoff = (now or datetime.now(UTC)) - self.retention
        removed = await event_log.prune(self.engine, cutoff)
        if removed:
            log.info("event stream: %d events older than %s removed", removed, cutoff)
        return removed

    # --- the tail ------------------------------------------------------------------------------
    async def _run(self) -> None:
        delay = GAP_POLL_SECONDS
        while not self._ready.is_set():
            try:
                await self._initialise()
            except Exception as exc:
                log.warning("event stream: cannot read the event log (%s); retrying", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_SECONDS)
        delay = GAP_POLL_SECONDS
        while True:
            timeout = GAP_POLL_SECONDS if self._gap is not None else self.poll_seconds
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            self._wake.clear()
            self._reads_started += 1
            try:
                await self._advance()
                delay = GAP_POLL_SECONDS
            except Exception as exc:
                log.warning("event stream: reading the event log failed (%s); retrying", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_SECONDS)
                self._wake.set()
            finally:
                self._reads_done += 1
                self._read_done.set()

    async def _initialise(self) -> None:
        """The horizon starts at the newest event once every writer seen then has ended."""
        async with self.engine.connect() as conn:
            _, newest = await event_log.id_range(conn)
            if not self._gapless:
                writers = await event_log.writers_in_flight(conn)
                deadline = time.monotonic() + GAP_TIMEOUT_SECONDS
                while writers and time.monotonic() < deadline:
                    await asyncio.sleep(GAP_POLL_SECONDS)
                    writers = await event_log.writers_in_flight(conn, writers)
        self.horizon = self._ring_floor = newest or 0
        self._ready.set()

    async def _advance(self) -> None:
        async with self.engine.connect() as conn:
            while True:
                if self._gap is not None and not await self._close_gap(conn):
                    return
                batch = await event_log.read_all(conn, self.horizon, limit=READ_BATCH)
                if not batch:
                    return
                if self._gapless:
                    await self._deliver(batch, batch[-1].cursor)
                    if len(batch) < READ_BATCH:
                        return
                    continue
                run = 0
                while run < len(batch) and batch[run].cursor == self.horizon + run + 1:
                    run += 1
                if run:
                    await self._deliver(batch[:run], batch[run - 1].cursor)
                if run == len(batch):
                    if len(batch) < READ_BATCH:
                        return
                    continue
                # A gap: ids below what we saw may still commit. Who could still write them?
                writers = await event_log.writers_in_flight(conn)
                self._gap = _Gap(batch[-1].cursor, writers, time.monotonic())
                if writers:
                    return  # looked at again every GAP_POLL_SECONDS

    async def _close_gap(self, conn: AsyncConnection) -> bool:
        """True when the pending gap is settled (and what it held is published)."""
        gap = self._gap
        assert gap is not None
        if self.horizon >= gap.target:
            self._gap = None
            return True
        if gap.writers:
            gap.writers = await event_log.writers_in_flight(conn, gap.writers)
        if gap.writers:
            if time.monotonic() - gap.since < GAP_TIMEOUT_SECONDS:
                return False
            self.skipped_gaps += 1
            log.warning(
                "event stream: a transaction writing events has been open for over %.0f s; "
                "delivering past cursor %d without waiting for it (an event it commits later "
                "would be missed by live clients)",
                GAP_TIMEOUT_SECONDS,
                self.horizon,
            )
        # Every writer seen after the read has ended: a fresh read sees all that will ever be
        # committed up to the target.
        batch = await event_log.read_all(conn, self.horizon, upto=gap.target)
        await self._deliver(batch, gap.target)
        self._gap = None
        return True

    async def _deliver(self, batch: list[StreamEvent], horizon: int) -> None:
        """Publish final events in chunks, the horizon moving with each."""
        for start in range(0, len(batch), PUBLISH_CHUNK):
            chunk = batch[start : start + PUBLISH_CHUNK]
            self._publish(chunk, chunk[-1].cursor)
            await asyncio.sleep(0)
        self._publish([], horizon)

    def _publish(self, batch: list[StreamEvent], horizon: int) -> None:
        """Synchronously: into the ring, to the live subscriptions, and the horizon moves."""
        for event in batch:
            self._ring.append(event)
            if len(self._ring) > self._ring_size:
                self._ring_floor = self._ring.popleft().cursor
            subs = self._live.get(event.account_id)
            if subs:
                for sub in tuple(subs):
                    sub._offer(event)
        self.horizon = max(self.horizon, horizon)
        DELIVERED.inc(len(batch))
