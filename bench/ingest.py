"""Ingest benchmark: Fleet beside the ceiling and the naive baseline, on one machine and broker.

    .venv/bin/python -m bench.ingest                    # the full run: a few minutes on 2 cores
    .venv/bin/python -m bench.ingest --quick            # a reduced run (about a minute)
    .venv/bin/fleet bench ingest --json figures.json    # the same, from the fleet command

One run starts a private Mosquitto (bench/broker.py; `--broker` uses another), generates every
message once (alarm-panel protobuf heartbeats from `--devices` panels, HMAC-framed), and feeds the
same messages from one publisher process to each mode in turn, each in processes of its own:

* ceiling (bench/ceiling.py): a bare paho subscriber that only counts, QoS 0 and QoS 1;
* naive (bench/naive.py): seed 001's per-message pseudo-code, one transaction per message;
* fleet: Fleet's `FleetRuntime` (what `fleet serve` runs), SQLite and PostgreSQL, QoS 0 and 1;
* workers: `--workers N` `fleet ingest` processes on PostgreSQL, splitting the devices by hash
  (FLEET_INGEST_PARTITION k/N: each reads every message) or, with `--split account` and
  `--namespaces M`, by account (FLEET_ALARM_TOPIC_FILTER: each subscribes to its accounts' bases);
* memory: bytes per known device in Fleet's caches, `--memory-devices` panels without a broker.

Each mode: messages/s flat out, draining a backlog published while the consumer was stopped (the
consumer's capacity) and with the publisher running alongside (what this one machine does end to
end), then a run paced at half of the latter (`--rate`) for the message-to-commit latency; CPU
seconds and peak RSS per process. bench/README.md explains it all.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import json
import logging
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol

import psycopg
from rich.console import Console
from rich.table import Table

from bench.broker import MAX_INFLIGHT, BrokerError, PrivateMosquitto
from bench.ceiling import start_ceiling
from bench.common import (
    ALARM_EVERY,
    KEY,
    BenchError,
    Commit,
    ConsumerProcess,
    Databases,
    Publisher,
    PublishJob,
    Workload,
    cpu_delta,
    cpu_snapshot,
    discard_session,
    latency_summary,
    make_workload,
    peak_rss_mb,
    reset_peak_rss,
    seed_devices,
    with_descendants,
)
from bench.naive import start_naive
from fleet.ingest.mqtt_link import BrokerAddress, InboundMessage, parse_mqtt_url
from fleet.ingest.partition import Partition
from fleet.integrations.alarm_panel.topics import hostname_from_mac
from fleet.sim.alarm_panel import random_mac

log = logging.getLogger("bench.ingest")

DEFAULT_DEVICES = 10_000
DEFAULT_MESSAGES = 60_000  # below 65,535: see bench/README.md, "Limits"
DEFAULT_NAIVE_MESSAGES = 5_000
DEFAULT_PACED_SECONDS = 5.0
DEFAULT_MEMORY_DEVICES = 100_000
MODES = ("ceiling", "naive", "fleet", "workers", "memory")
POLL_SECONDS = 0.005
DRAIN_HOLD_SECONDS = 20.0
DB_POLL_SECONDS = 0.02
MIN_PACED = 200


# --------------------------------------------------------------------------- Fleet, in a process


def _fleet_main(
    conn: Connection,
    progress: Any,
    *,
    settings: dict[str, Any],
    account_id: int,
    profile: str | None,
) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(_fleet_serve(conn, progress, settings, account_id, profile))


async def _fleet_serve(
    conn: Connection,
    progress: Any,
    settings: dict[str, Any],
    account_id: int,
    profile: str | None,
) -> None:
    """A FleetRuntime as `fleet serve` runs it (ingest, jobs, event hub), its pipeline's batches
    timed, every committed message recorded as (hostname, sequence, commit time), and the
    `alarm.raised` events the hub hands a subscriber recorded with their delivery time."""
    from fleet.config import Settings
    from fleet.events.model import EventFilter, StreamClosed
    from fleet.runtime import FleetRuntime

    runtime = FleetRuntime(Settings(**settings))
    pipeline = runtime.pipeline
    stats = pipeline.stats
    commits: list[Commit] = []
    arrivals: list[float] = []  # commit - arrival (the pipeline's own latency)
    alarms: dict[int, float] = {}
    # For each alarm: its arrival in Fleet and its commit, by hostname (where its latency goes).
    alarm_commits: dict[str, tuple[float, float]] = {}
    timing = {"busy": 0.0, "transaction": 0.0, "batches": 0, "messages": 0, "sweeps": 0}
    timing.update(sweep=0.0, gc_seconds=0.0, gc_max=0.0, gc_full=0)
    process, commit, sweep = pipeline.process, pipeline._commit, pipeline.sweep
    write_ahead, finish = pipeline._write_ahead, pipeline._finish

    collecting = {"since": 0.0}

    def gc_pause(phase: str, info: dict[str, int]) -> None:
        # Collections stop every thread (the GIL): a full one in a heap of many device states
        # takes long enough to show in the commit latency.
        if phase == "start":
            collecting["since"] = time.perf_counter()
            return
        pause = time.perf_counter() - collecting["since"]
        timing["gc_seconds"] += pause
        timing["gc_max"] = max(timing["gc_max"], pause)
        timing["gc_full"] += info.get("generation") == 2

    gc.callbacks.append(gc_pause)

    async def timed_process(batch: list[InboundMessage], **options: Any) -> None:
        started = time.perf_counter()
        await process(batch, **options)
        timing["busy"] += time.perf_counter() - started
        timing["batches"] += 1
        timing["messages"] += len(batch)

    async def counted_finish(batch: list[InboundMessage], parts: Any, **options: Any) -> None:
        # Where a batch is counted: at once, or when its writes have committed (write-ahead).
        await finish(batch, parts, **options)
        progress.value = sum(stats.accepted.values()) + sum(stats.rejected.values())

    def record(outcome: Any, committed: float) -> None:
        # In the measured process: kept to two comprehensions (a loop of appends took 5 % of
        # the ingest's samples at 35,000 msg/s).
        applied = outcome.applied
        commits.extend([(m.hostname, m.frame_sequence, committed) for m in applied])
        arrivals.extend([committed - m.source.received for m in applied])
        for message in [m for m in applied if m.kind == "alarm"]:
            alarm_commits[message.hostname] = (message.source.received, committed)

    async def timed_commit(prepared: list[Any]) -> Any:
        started = time.perf_counter()
        try:
            outcome = await commit(prepared)
        finally:
            timing["transaction"] += time.perf_counter() - started
        record(outcome, time.time())
        return outcome

    async def timed_write_ahead(decisions: Any) -> Any:
        # A batch decided in memory: its writes commit while the loop goes on (overlapping
        # the loop's time, so "in transaction" is no longer a share of it).
        started = time.perf_counter()
        try:
            outcome, committed = await write_ahead(decisions)
        finally:
            timing["transaction"] += time.perf_counter() - started
        record(outcome, committed)
        return outcome, committed

    async def timed_sweep() -> None:
        # The liveness sweep runs in the ingest loop, between batches, once a second, after
        # the writes in flight have committed (their wait is not the sweep's).
        await pipeline._settle()
        started = time.perf_counter()
        await sweep()
        timing["sweep"] += time.perf_counter() - started
        timing["sweeps"] += 1

    pipeline.process = timed_process  # type: ignore[method-assign]
    pipeline._commit = timed_commit  # type: ignore[method-assign]
    pipeline._write_ahead = timed_write_ahead  # type: ignore[method-assign]
    pipeline._finish = counted_finish  # type: ignore[method-assign]
    pipeline.sweep = timed_sweep  # type: ignore[method-assign]
    try:
        await runtime.start(migrate=False)
        subscription = await runtime.event_hub.subscribe(
            account_id, None, EventFilter(types=frozenset({"alarm.raised"}))
        )
    except Exception as exc:
        conn.send(("error", f"Fleet did not start: {type(exc).__name__}: {exc}"))
        await runtime.stop()
        return

    async def follow_alarms() -> None:
        with contextlib.suppress(StreamClosed):
            while True:
                for event in await subscription.next_batch():
                    if event.device_id is not None:
                        alarms.setdefault(event.device_id, time.time())

    follower = asyncio.create_task(follow_alarms())
    profiler: cProfile.Profile | None = None
    conn.send(("ready", None))
    while True:
        try:
            command, argument = await asyncio.to_thread(conn.recv)
        except (EOFError, OSError):
            command, argument = "stop", None
        if command == "profile":
            if argument:
                profiler = cProfile.Profile()
                profiler.enable()
            elif profiler is not None and profile:
                profiler.disable()
                profiler.dump_stats(profile)
                profiler = None
        task = next((t for t in runtime._tasks if t.get_name() == "ingest"), None)
        answer = {
            "state": {
                "pending": runtime.link.pending(),
                "connected": runtime.link.connected,
                "ingest": "running"
                if task is not None and not task.done()
                else repr(task.exception() if task and not task.cancelled() else task),
                "accepted": dict(stats.accepted),
            },
            "commits": commits[:],
            "last": commits[-1][2] if commits else None,
            "arrivals": arrivals[:],
            "alarms": dict(alarms),
            "alarm_commits": dict(alarm_commits),
            "rejected": dict(stats.rejected),
            **timing,
        }
        commits.clear()
        arrivals.clear()
        timing.update(busy=0.0, transaction=0.0, batches=0, messages=0, sweeps=0, sweep=0.0)
        timing.update(gc_seconds=0.0, gc_max=0.0, gc_full=0)
        if command == "stop":
            # paho's "disconnected" on the way out is not news here.
            logging.getLogger("fleet.ingest.mqtt_link").setLevel(logging.ERROR)
            follower.cancel()
            subscription.close()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
            await runtime.stop()
        with contextlib.suppress(OSError):
            conn.send(("ok", answer))
        if command == "stop":
            return


def fleet_settings(
    url: str, broker_url: str, client_id: str, qos: int, workload: Workload, opts: Options
) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "database_url": url,
        "mqtt_url": broker_url,
        "mqtt_client_id": client_id,
        "mqtt_qos": qos,
        "alarm_topic_base": workload.bases[0],
        "alarm_topic_filter": ",".join(workload.topic_filters),
        "alarm_hmac_key": KEY.hex(),
    }
    if opts.batch_max is not None:
        settings["ingest_batch_max"] = opts.batch_max
    if opts.batch_wait_ms is not None:
        settings["ingest_batch_wait_ms"] = opts.batch_wait_ms
    return settings


# --------------------------------------------------------------------------- consumers


class Consumer(Protocol):
    pids: list[int]
    poll_seconds: float

    def begin(self, job: PublishJob) -> None: ...

    async def progress(self) -> int: ...

    async def collect(self) -> dict[str, Any]: ...

    async def stop(self) -> dict[str, Any] | None: ...


class SpawnedConsumer:
    """Ceiling, naive or Fleet: one process of its own that counts what it has processed."""

    poll_seconds = POLL_SECONDS

    def __init__(self, process: ConsumerProcess) -> None:
        self.process = process
        self.pids = [process.pid]
        self._base = 0

    def begin(self, job: PublishJob) -> None:
        self._base = self.process.progress()

    async def progress(self) -> int:
        """Messages processed since `begin`."""
        return self.process.progress() - self._base

    async def collect(self) -> dict[str, Any]:
        return dict(await self.process.request("collect"))

    async def request(self, command: str, argument: Any = None) -> Any:
        return await self.process.request(command, argument)

    async def stop(self) -> dict[str, Any] | None:
        final = await self.process.stop()
        return None if final is None else dict(final)


def _read(path: Path) -> str:
    return path.read_text(errors="replace")


def _loadavg() -> list[float] | None:
    with contextlib.suppress(OSError, ValueError):
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    return None


class IngestWorkers:
    """N `python -m fleet ingest` processes on one PostgreSQL database, splitting the devices by
    hash (`split` "hash": FLEET_INGEST_PARTITION k/N) or by account ("account": worker k
    subscribes to the workload's topic bases k, k + N, …, with a client id of its own). What
    they have committed is read from the database, cheaply: each worker applies
    its share of the messages in order, so once the device of one of its messages shows that
    message's sequence in `last_frame_seq`, every earlier message of that worker is committed
    too. The bench looks up about 64 such checkpoints per worker (and each worker's last
    message) by primary key; scanning `device_status` instead would cost PostgreSQL more CPU
    than the workers' own writes."""

    poll_seconds = DB_POLL_SECONDS
    CHECKPOINTS = 64

    def __init__(
        self,
        count: int,
        env: dict[str, str],
        database_url: str,
        workload: Workload,
        split: str = "hash",
    ) -> None:
        self.count = count
        self.env = env
        self.split = split
        bases = workload.bases
        if split == "account" and len(bases) < count:
            raise BenchError(f"--split account: {len(bases)} namespaces for {count} workers")
        # Worker k's topic bases, when split by account; its partition, when split by hash.
        self.bases = [bases[k::count] for k in range(count)]
        self.partitions = [Partition(k, count) for k in range(count)]
        self.database_url = database_url
        self.workload = workload
        self.device_ids = {host: index + 1 for index, host in enumerate(workload.hostnames)}
        self.logs = Path(tempfile.mkdtemp(prefix="fleet-bench-workers-"))
        self.procs: list[subprocess.Popen[bytes]] = []
        self.pids: list[int] = []
        self.db: psycopg.AsyncConnection[Any] | None = None
        # (messages of its share up to and including it, device id, sequence) per checkpoint
        self._checkpoints: list[list[tuple[int, int, int]]] = []

    def begin(self, job: PublishJob) -> None:
        frames = self.workload.segments[job.segment][job.start : job.stop]
        keys = self.workload.keys[job.segment][job.start : job.stop]
        shares: list[list[tuple[int, int]]] = [[] for _ in range(self.count)]
        for (topic, _payload), (host, seq) in zip(frames, keys, strict=True):
            shares[self._owner(topic)].append((self.device_ids[host], seq))
        self._checkpoints = []
        for share in shares:
            step = max(1, len(share) // self.CHECKPOINTS)
            marks = sorted({*range(step - 1, len(share), step), len(share) - 1} - {-1})
            self._checkpoints.append([(i + 1, *share[i]) for i in marks])

    def _owner(self, topic: str) -> int:
        if self.split == "account":
            base = topic.partition("/")[0]
            return next(k for k, bases in enumerate(self.bases) if base in bases)
        return next(k for k, part in enumerate(self.partitions) if part.owns(topic))

    def _worker_env(self, index: int) -> dict[str, str]:
        if self.split == "account":
            client_id = self.env["FLEET_MQTT_CLIENT_ID"]
            return {
                "FLEET_ALARM_TOPIC_FILTER": ",".join(f"{b}/pb/d/+/+" for b in self.bases[index]),
                "FLEET_MQTT_CLIENT_ID": f"{client_id}-{index}of{self.count}",
            }
        return {"FLEET_INGEST_PARTITION": f"{index}/{self.count}"}

    async def progress(self) -> int:
        """Messages of the current job committed (to the checkpoint below, per worker)."""
        assert self.db is not None
        ids = list({device for marks in self._checkpoints for _, device, _ in marks})
        cursor = await self.db.execute(
            "SELECT device_id, last_frame_seq FROM device_status WHERE device_id = ANY(%s)",
            (ids,),
        )
        seen = {device: seq or 0 for device, seq in await cursor.fetchall()}
        done = 0
        for marks in self._checkpoints:
            passed = [count for count, device, seq in marks if seen.get(device, 0) >= seq]
            done += max(passed, default=0)
        return done

    def _spawn(self) -> None:
        checkout = Path(__file__).resolve().parent.parent
        for index in range(self.count):
            with open(self.logs / f"worker{index}.log", "wb") as log_file:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "fleet", "ingest"],
                    env={**os.environ, **self.env, **self._worker_env(index)},
                    stdout=subprocess.DEVNULL,
                    stderr=log_file,
                    cwd=checkout,
                )
            self.procs.append(proc)
            self.pids.append(proc.pid)

    async def start(self, within: float = 60.0) -> None:
        await asyncio.to_thread(self._spawn)
        deadline = time.monotonic() + within
        for index, proc in enumerate(self.procs):
            path = self.logs / f"worker{index}.log"
            # `fleet ingest` says so once connected and subscribed.
            while "ingesting from" not in (text := await asyncio.to_thread(_read, path)):
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = text[-800:]
                    raise BenchError(
                        f"fleet ingest worker {index}/{self.count} did not start: {tail}"
                    )
                await asyncio.sleep(0.05)
        self.db = await psycopg.AsyncConnection.connect(self.database_url, autocommit=True)

    async def collect(self) -> dict[str, Any]:
        """Each device's last applied message and when its batch applied it (last_seen, taken
        when the batch starts its transaction: the commit follows within that transaction)."""
        assert self.db is not None
        cursor = await self.db.execute(
            "SELECT d.hostname, s.last_frame_seq, extract(epoch FROM s.last_seen) "
            "FROM device_status s JOIN devices d ON d.id = s.device_id "
            "WHERE s.last_seen IS NOT NULL"
        )
        rows = await cursor.fetchall()
        return {"commits": [(h, int(seq), float(t)) for h, seq, t in rows], "last": None}

    def peak_rss(self) -> list[float | None]:
        return [peak_rss_mb(pid) for pid in self.pids]

    async def stop(self) -> dict[str, Any] | None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)  # `fleet ingest` stops its runtime on Ctrl+C
        for proc in self.procs:
            try:
                await asyncio.to_thread(proc.wait, 10)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait)
        if self.db is not None:
            await self.db.close()
        errors = []
        for path in sorted(self.logs.glob("*.log")):
            errors += [
                line
                for line in path.read_text(errors="replace").splitlines()
                if "ERROR" in line or "Traceback" in line
            ]
        for path in self.logs.glob("*"):
            path.unlink()
        self.logs.rmdir()
        return {"errors": errors[:5]}


# --------------------------------------------------------------------------- results


@dataclass
class Mode:
    kind: str  # ceiling | naive | fleet | workers
    database: str | None
    qos: int
    processes: int = 1
    split: str = "hash"  # workers: FLEET_INGEST_PARTITION, or "account" (topic bases)

    @property
    def name(self) -> str:
        if self.kind == "ceiling":
            return f"ceiling QoS {self.qos}"
        if self.kind == "naive":
            return f"naive {self.database}"
        name = f"Fleet {self.database} QoS {self.qos}"
        if self.kind == "fleet":
            return name
        name = f"{name}, {self.processes} x fleet ingest"
        return f"{name} by account" if self.split == "account" else name


@dataclass
class ModeResult:
    mode: str
    kind: str
    database: str | None
    qos: int
    processes: int
    messages: int = 0  # flat-out messages published to it
    processed: int = 0  # ... that it processed (committed, or refused with a reason)
    complete: bool = False
    seconds: float | None = None  # first publish -> last commit (last receive for the ceiling)
    msg_per_s: float | None = None
    publish_seconds: float | None = None  # first publish -> the broker had the last one
    vs_ceiling: float | None = None  # msg/s over the ceiling's at the same QoS
    vs_naive: float | None = None  # msg/s over the naive baseline's on the same database
    live: dict[str, Any] = field(default_factory=dict)  # flat out, publisher alongside
    latency: dict[str, Any] = field(default_factory=dict)  # paced run at half the live rate
    arrival_latency: dict[str, Any] = field(default_factory=dict)  # Fleet: arrival -> commit
    alarm_latency: dict[str, Any] = field(default_factory=dict)  # publish -> hub delivery
    gc: dict[str, Any] = field(default_factory=dict)  # Fleet's collections in the paced run
    rows_stored: int | None = None  # heartbeats rows written by the flat-out run
    batches: int | None = None
    mean_batch: float | None = None
    busy_pct: float | None = None  # share of the flat-out run Fleet's loop spent in batches
    transaction_pct: float | None = None  # ... inside the database transaction
    sweep_pct: float | None = None  # ... in the liveness sweep (which holds up the batches)
    sweep_ms: float | None = None  # mean duration of one sweep
    cpu: dict[str, float] = field(default_factory=dict)  # CPU s per process, flat-out run
    cpu_consumers: list[float] = field(default_factory=list)  # ... each worker's
    cpu_us_per_msg: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: dict[str, Any] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    wall_seconds: float | None = None  # the whole mode: start, warm-up, both runs, clean-up
    note: str = ""


@dataclass
class Phase:
    target: int
    processed: int = 0
    complete: bool = False
    seconds: float | None = None
    msg_per_s: float | None = None
    published: dict[str, Any] = field(default_factory=dict)
    collected: dict[str, Any] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    cpu_each: list[float] = field(default_factory=list)  # per consumer process, if several
    stopped: str = ""


@dataclass
class Options:
    devices: int = DEFAULT_DEVICES
    messages: int = DEFAULT_MESSAGES
    naive_messages: int = DEFAULT_NAIVE_MESSAGES
    paced_seconds: float = DEFAULT_PACED_SECONDS
    memory_devices: int = DEFAULT_MEMORY_DEVICES
    modes: tuple[str, ...] = MODES
    databases: tuple[str, ...] = ("sqlite", "postgres")
    qos_levels: tuple[int, ...] = (0, 1)
    workers: tuple[int, ...] = (1, 2)
    split: str = "hash"  # how the workers mode splits the devices: "hash" or "account"
    namespaces: int = 1  # topic bases (accounts) the panels are spread over
    alarm_every: int = ALARM_EVERY  # one paced message in this many is an alarm raise
    broker: str | None = None  # None: a private Mosquitto
    max_inflight: int = MAX_INFLIGHT  # ... with this max_inflight_messages
    pg_admin: str = os.environ.get(
        "FLEET_BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/test"
    )
    pg_template: str | None = None
    rate: float = 0.0  # the paced run's rate; 0: half of the mode's flat-out msg/s
    window: int = 0
    batch_max: int | None = None
    batch_wait_ms: float | None = None
    timeout: float = 120.0
    stall: float = 5.0
    seed: int = 1
    strict: bool = False
    profile: str | None = None  # directory for a cProfile of each Fleet flat-out run
    quick: bool = False


@dataclass
class Context:
    opts: Options
    workload: Workload
    dbs: Databases
    publisher: Publisher
    address: BrokerAddress
    broker_url: str
    broker: PrivateMosquitto | None
    console: Console
    hostname_index: dict[str, int] = field(default_factory=dict)

    @property
    def broker_pid(self) -> int | None:
        return None if self.broker is None else self.broker.pid


# --------------------------------------------------------------------------- running a mode


def _signal_all(pids: list[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


async def run_phase(
    ctx: Context,
    consumer: Consumer,
    job: PublishJob,
    *,
    database: str | None = None,
    drain: bool = False,
) -> Phase:
    """Publish one job to a running consumer and wait until it has processed every message (or
    stopped making progress for --stall seconds after publishing ended, or --timeout).

    With `drain`, the consumer's processes are stopped (SIGSTOP) while the job is published, so
    that the broker holds every message, then resumed (SIGCONT): the rate is the consumer's
    alone, from the resume to its last commit, without the publisher taking CPU meanwhile (in
    production devices publish from elsewhere). Otherwise publisher and consumer run together
    and the rate counts from the first publish."""
    opts, publisher = ctx.opts, ctx.publisher
    phase = Phase(target=job.stop - job.start)
    await consumer.collect()  # forget what earlier phases recorded
    consumer.begin(job)
    trees = {pid: with_descendants([pid]) for pid in consumer.pids}
    pids = {
        "consumer": [pid for tree in trees.values() for pid in tree],
        "publisher": [publisher.pid],
    }
    started = time.time()
    if drain:
        _signal_all(pids["consumer"], signal.SIGSTOP)
        try:
            publisher.start(job)
            # Not longer than the MQTT keepalive allows a silent client (Fleet's is 30 s).
            with contextlib.suppress(BenchError):
                await publisher.finish(DRAIN_HOLD_SECONDS)
        finally:
            started = time.time()
            before = cpu_snapshot(pids, database, ctx.broker_pid)
            _signal_all(pids["consumer"], signal.SIGCONT)
    else:
        before = cpu_snapshot(pids, database, ctx.broker_pid)
        publisher.start(job)
        started = time.time()
    deadline = time.monotonic() + opts.timeout
    last_move, seen = time.monotonic(), -1
    reached: float | None = None
    while True:
        done = await consumer.progress()
        publisher.processed.value = done
        now = time.monotonic()
        if done >= phase.target:
            reached = time.time()
            break
        publisher.poll()
        if done != seen:
            seen, last_move = done, now
        elif publisher.result is not None and now - last_move > opts.stall:
            phase.stopped = f"nothing processed for {opts.stall:.0f} s after publishing ended"
            break
        if now > deadline:
            phase.stopped = f"timed out after {opts.timeout:.0f} s"
            break
        await asyncio.sleep(consumer.poll_seconds)
    after = cpu_snapshot(pids, database, ctx.broker_pid)
    phase.cpu = cpu_delta(before, after)
    if len(consumer.pids) > 1:
        phase.cpu_each = [
            round(
                sum(
                    after.groups["consumer"].get(member, 0.0)
                    - before.groups["consumer"].get(member, 0.0)
                    for member in tree
                ),
                2,
            )
            for tree in trees.values()
        ]
    phase.published = await publisher.finish(opts.timeout)
    phase.processed = min(done, phase.target)
    phase.complete = done >= phase.target
    phase.collected = await consumer.collect()
    last = phase.collected.get("last") or reached
    if last is not None and phase.processed:
        origin = started if drain else phase.published["first"]
        phase.seconds = round(last - origin, 3)
        if phase.seconds > 0:
            phase.msg_per_s = round(phase.processed / phase.seconds, 1)
    return phase


async def settle(consumer: Consumer, quiet: float = 0.5, within: float = 20.0) -> None:
    """Wait until the consumer has had nothing to do for `quiet` seconds."""
    deadline = time.monotonic() + within
    seen, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        now, done = time.monotonic(), await consumer.progress()
        if done != seen:
            seen, since = done, now
        elif now - since >= quiet:
            return
        await asyncio.sleep(0.05)


def count_rows(url: str) -> int:
    if url.startswith("sqlite"):
        import sqlite3

        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as db:
            return int(db.execute("SELECT count(*) FROM heartbeats").fetchone()[0])
    with psycopg.connect(url, connect_timeout=5) as conn:
        row = conn.execute("SELECT count(*) FROM heartbeats").fetchone()
        return int(row[0]) if row else 0


async def start_consumer(
    ctx: Context, mode: Mode, url: str | None, client_id: str
) -> SpawnedConsumer | IngestWorkers:
    workload, opts = ctx.workload, ctx.opts
    topic = ",".join(workload.topic_filters)
    account_id = ctx.dbs.account_id or 0
    consumer: SpawnedConsumer | IngestWorkers
    if mode.kind == "ceiling":
        consumer = SpawnedConsumer(start_ceiling(ctx.address, client_id, topic, mode.qos))
    elif mode.kind == "naive":
        assert url is not None
        consumer = SpawnedConsumer(
            start_naive(ctx.address, client_id, topic, mode.qos, url, account_id)
        )
    elif mode.kind == "fleet":
        assert url is not None
        profile = None
        if opts.profile:
            directory = Path(opts.profile)
            await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
            profile = str(directory / f"fleet-{mode.database}-qos{mode.qos}.pstats")
        consumer = SpawnedConsumer(
            ConsumerProcess(
                _fleet_main,
                "fleet",
                settings=fleet_settings(url, ctx.broker_url, client_id, mode.qos, workload, opts),
                account_id=account_id,
                profile=profile,
            )
        )
    else:
        assert url is not None
        settings = fleet_settings(url, ctx.broker_url, client_id, mode.qos, workload, opts)
        env = {f"FLEET_{name.upper()}": str(value) for name, value in settings.items()}
        env["FLEET_LOG_LEVEL"] = "WARNING"
        consumer = IngestWorkers(mode.processes, env, url, workload, mode.split)
        await consumer.start()
        return consumer
    assert isinstance(consumer, SpawnedConsumer)
    await consumer.process.ready()
    return consumer


def client_ids(mode: Mode, client_id: str) -> list[str]:
    if mode.kind == "workers":
        return [f"{client_id}-{k}of{mode.processes}" for k in range(mode.processes)]
    return [client_id]


async def run_mode(ctx: Context, mode: Mode) -> ModeResult:
    opts, workload = ctx.opts, ctx.workload
    result = ModeResult(mode.name, mode.kind, mode.database, mode.qos, mode.processes)
    started = time.monotonic()
    client_id = f"fleet-bench-{mode.kind}-{uuid.uuid4().hex[:8]}"
    url: str | None = None
    consumer: SpawnedConsumer | IngestWorkers | None = None
    pg_name: str | None = None
    try:
        if mode.database is not None:
            # The naive baseline starts where Fleet's warm-up leaves the database; Fleet warms
            # up itself (the warm-up loads each device into its memory, as a running Fleet has).
            url = await ctx.dbs.clone(mode.database, warm=mode.kind == "naive")
            pg_name = ctx.dbs.pg_name(url)
        consumer = await start_consumer(ctx, mode, url, client_id)
        if ctx.broker is not None and ctx.broker.pid is not None:
            reset_peak_rss(ctx.broker.pid)
        if mode.kind in ("fleet", "workers"):
            size = len(workload.segments["warmup"])
            job = PublishJob("warmup", 0, size, mode.qos, timeout=opts.timeout)
            warm = await run_phase(ctx, consumer, job)
            if not warm.complete:
                raise BenchError(
                    f"warm-up: {warm.processed:,} of {size:,} messages processed "
                    f"({warm.stopped}; consumer: {warm.collected.get('state')})"
                )
            await settle(consumer)
        count = opts.naive_messages if mode.kind == "naive" else opts.messages
        count = min(count, len(workload.segments["flat"]))
        rows_before = await asyncio.to_thread(count_rows, url) if url else 0
        if opts.profile and mode.kind == "fleet":
            assert isinstance(consumer, SpawnedConsumer)
            await consumer.request("profile", True)
        job = PublishJob("flat", 0, count, mode.qos, timeout=opts.timeout)
        flat = await run_phase(ctx, consumer, job, database=pg_name, drain=True)
        if opts.profile and mode.kind == "fleet":
            assert isinstance(consumer, SpawnedConsumer)
            await consumer.request("profile", False)
        _fill_flat(result, flat, count)
        if url:
            result.rows_stored = await asyncio.to_thread(count_rows, url) - rows_before
        if not flat.complete:
            raise BenchError("the flat-out run did not complete: no live or paced run")
        await settle(consumer, quiet=0.3)
        count = min(count, len(workload.segments["live"]))
        job = PublishJob("live", 0, count, mode.qos, window=opts.window, timeout=opts.timeout)
        live = await run_phase(ctx, consumer, job, database=pg_name)
        result.live = _live_figures(live)
        capacity = live.msg_per_s if live.complete else None
        if mode.kind != "ceiling" and capacity:
            await settle(consumer, quiet=0.3)
            await _paced(ctx, consumer, mode, result, capacity)
        if isinstance(consumer, IngestWorkers):
            result.peak_rss_mb["consumer"] = consumer.peak_rss()
        else:
            result.peak_rss_mb["consumer"] = peak_rss_mb(consumer.pids[0])
        if ctx.broker is not None and ctx.broker.pid is not None:
            result.peak_rss_mb["mosquitto"] = peak_rss_mb(ctx.broker.pid)
    except BenchError as exc:
        result.note = "; ".join(part for part in (result.note, str(exc)) if part)
    finally:
        if consumer is not None:
            final = await consumer.stop()
            if final and final.get("errors"):
                result.note = "; ".join(
                    part for part in (result.note, f"errors: {final['errors']}") if part
                )
        for cid in client_ids(mode, client_id):
            await asyncio.to_thread(discard_session, ctx.address, cid)
        if url is not None and pg_name is None:
            # (PostgreSQL databases are dropped at the end: DROP DATABASE checkpoints, which
            # would only slow down the next mode.)
            await asyncio.to_thread(ctx.dbs.drop, url)
        result.wall_seconds = round(time.monotonic() - started, 1)
    return result


def _live_figures(live: Phase) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "messages": live.target,
        "processed": live.processed,
        "complete": live.complete,
        "msg_per_s": live.msg_per_s,
        "seconds": live.seconds,
        "publish_seconds": round(live.published["flushed"] - live.published["first"], 3),
        "cpu": live.cpu,
    }
    if live.processed:
        figures["cpu_us_per_msg"] = {
            name: round(live.cpu[name] / live.processed * 1e6, 1)
            for name in ("consumer", "publisher", "mosquitto", "postgres")
            if live.cpu.get(name)
        }
    if not live.complete:
        figures["note"] = f"{live.stopped}: {live.processed:,} of {live.target:,} processed"
    return figures


def _fill_flat(result: ModeResult, flat: Phase, count: int) -> None:
    result.messages = count
    result.processed = flat.processed
    result.complete = flat.complete
    result.seconds = flat.seconds
    result.msg_per_s = flat.msg_per_s
    result.publish_seconds = round(flat.published["flushed"] - flat.published["first"], 3)
    result.cpu = flat.cpu
    result.cpu_consumers = flat.cpu_each
    if flat.processed:
        for name in ("consumer", "publisher", "mosquitto", "postgres"):
            if flat.cpu.get(name):
                result.cpu_us_per_msg[name] = round(flat.cpu[name] / flat.processed * 1e6, 1)
    collected = flat.collected
    result.rejected = {k: v for k, v in collected.get("rejected", {}).items() if v}
    if collected.get("batches"):
        result.batches = collected["batches"]
        result.mean_batch = round(collected["messages"] / collected["batches"], 1)
        if flat.seconds:
            result.busy_pct = round(100 * collected["busy"] / flat.seconds, 1)
            result.transaction_pct = round(100 * collected["transaction"] / flat.seconds, 1)
            result.sweep_pct = round(100 * collected["sweep"] / flat.seconds, 1)
        if collected.get("sweeps"):
            result.sweep_ms = round(1000 * collected["sweep"] / collected["sweeps"], 1)
    if not flat.complete:
        missing = flat.published.get("published", 0) - flat.processed
        result.note = f"{flat.stopped}: {flat.processed:,} of {count:,} processed" + (
            f" ({missing:,} published but never processed)" if missing > 0 else ""
        )


async def _paced(
    ctx: Context, consumer: Consumer, mode: Mode, result: ModeResult, capacity: float
) -> None:
    """The latency run: the paced messages at half the measured capacity (or --rate)."""
    opts, workload = ctx.opts, ctx.workload
    rate = opts.rate or capacity / 2
    available = len(workload.segments["paced"])
    count = min(available, max(min(MIN_PACED, available), round(rate * opts.paced_seconds)))
    job = PublishJob("paced", 0, count, mode.qos, rate=rate, timeout=opts.timeout, record=True)
    phase = await run_phase(ctx, consumer, job)
    published_at = dict(zip(workload.keys["paced"][:count], phase.published["times"], strict=True))
    latencies = [
        at - published_at[(host, seq)]
        for host, seq, at in phase.collected.get("commits", [])
        if (host, seq) in published_at
    ]
    result.latency = {
        "rate": round(rate, 1),
        "messages": count,
        "achieved_rate": round(
            count / max(1e-9, phase.published["sent"] - phase.published["first"]), 1
        ),
        "complete": phase.complete,
        "basis": (
            "publish → batch applied (device_status.last_seen of each device's last message)"
            if mode.kind == "workers"
            else "publish → commit"
        ),
        **latency_summary(latencies),
    }
    if phase.collected.get("batches") and phase.seconds:
        result.latency["loop_busy_pct"] = round(100 * phase.collected["busy"] / phase.seconds, 1)
    if phase.seconds:
        result.latency["machine_busy_pct"] = phase.cpu.get("machine_busy_pct")
    if "arrivals" in phase.collected:
        result.arrival_latency = latency_summary(phase.collected["arrivals"])
        result.gc = {
            "seconds": round(phase.collected["gc_seconds"], 3),
            "max_ms": round(phase.collected["gc_max"] * 1000, 1),
            "full": phase.collected["gc_full"],
        }
    alarms = phase.collected.get("alarms")
    if alarms is not None:
        delays = []
        alarm_commits = phase.collected.get("alarm_commits", {})
        stages: dict[str, list[float]] = {"to_fleet": [], "to_commit": [], "to_stream": []}
        for position in workload.alarms:
            if position >= count:
                break
            key = workload.keys["paced"][position]
            device_id = ctx.hostname_index[key[0]] + 1
            if device_id in alarms:
                delays.append(alarms[device_id] - published_at[key])
            if key[0] in alarm_commits and device_id in alarms:
                received, committed = alarm_commits[key[0]]
                stages["to_fleet"].append(received - published_at[key])
                stages["to_commit"].append(committed - received)
                stages["to_stream"].append(alarms[device_id] - committed)
        expected = sum(1 for position in workload.alarms if position < count)
        result.alarm_latency = {"alarms": expected, **latency_summary(delays)}
        # Where an alarm's time goes: publish → Fleet's receiver, → commit, → the event stream.
        result.alarm_latency["stages"] = {
            name: latency_summary(values) for name, values in stages.items()
        }


# --------------------------------------------------------------------------- memory per device


def _memory_main(conn: Connection, progress: Any, *, devices: int, seed: int) -> None:
    logging.basicConfig(level=logging.WARNING)
    try:
        answer = asyncio.run(_memory_measure(devices, seed))
    except Exception as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", answer))


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


async def _memory_measure(devices: int, seed: int) -> dict[str, Any]:
    """Register `devices` panels (seeded in SQLite), then send each one heartbeat through the
    pipeline directly (no broker): each device is then known to Fleet's caches, as after a
    restart. The first devices pay for one-off costs (compiled statements, imports) and are left
    out. RSS growth per device is measured without tracemalloc (whose own traces would inflate
    it); then the Python heap that the last `traced` devices add is measured with tracemalloc."""
    from fleet.config import Settings
    from fleet.runtime import FleetRuntime
    from fleet.sim.alarm_panel import SimulatedPanel

    base = f"mem{uuid.uuid4().hex[:8]}"
    rng = random.Random(seed)
    macs: dict[bytes, None] = {}
    while len(macs) < devices:
        macs[random_mac(rng)] = None
    registry = Workload(
        base=base,
        hostnames=[hostname_from_mac(mac) for mac in macs],
        macs=[":".join(f"{b:02X}" for b in mac) for mac in macs],
        segments={},
        keys={},
        # Where panels are, as their logins report it (two NUMERIC(10,7) each: Decimals).
        locations=[
            (
                "ES",
                rng.randint(1, 9),
                Decimal(f"{40.4 + rng.uniform(-0.2, 0.2):.7f}"),
                Decimal(f"{-3.7 + rng.uniform(-0.2, 0.2):.7f}"),
            )
            for _ in range(devices)
        ],
    )
    directory = Path(tempfile.mkdtemp(prefix="fleet-bench-memory-"))
    url = f"sqlite:///{directory / 'fleet.db'}"
    try:
        await seed_devices(url, registry, migrate=True)
        del registry
        runtime = FleetRuntime(
            Settings(
                database_url=url,
                mqtt_url="mqtt://127.0.0.1:9",  # never connected: messages go in directly
                alarm_topic_base=base,
                alarm_topic_filter=f"{base}/pb/d/+/+",
                alarm_hmac_key=KEY.hex(),
            )
        )
        pipeline = runtime.pipeline
        mac_list = list(macs)
        del macs

        async def feed(start: int, stop: int) -> None:
            for first in range(start, stop, 2000):
                now = time.time()
                batch = []
                for index in range(first, min(stop, first + 2000)):
                    panel = SimulatedPanel(
                        base=base, key=KEY, rng=random.Random(index), mac=mac_list[index]
                    )
                    panel.device_db_id = index + 1
                    topic, payload = panel.heartbeat(now)
                    batch.append(InboundMessage(topic, payload, 0, 0, now, 0))
                await pipeline.process(batch)

        warm = min(1000, max(1, devices // 10))
        traced = min(10_000, max(1, devices // 10))
        started = time.monotonic()
        await feed(0, warm)
        gc.collect()
        rss_before = _rss_bytes()
        await feed(warm, devices - traced)
        gc.collect()
        rss_after = _rss_bytes()
        tracemalloc.start()
        await feed(devices - traced, devices)
        gc.collect()
        heap, _peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        known = len(pipeline.handler.states)
        seconds = time.monotonic() - started
        await runtime.dispose_engines()
        rss_per_device = (rss_after - rss_before) / max(1, devices - traced - warm)
        return {
            "devices": devices,
            "known": known,
            "heap_bytes_per_device": round(heap / traced),
            "rss_bytes_per_device": round(rss_per_device),
            # the process with every device known (the traced ones at the untraced rate)
            "rss_mb": round((rss_after + traced * rss_per_device) / 2**20, 1),
            "seconds": round(seconds, 1),
            "rejected": dict(pipeline.stats.rejected),
        }
    finally:
        await asyncio.to_thread(shutil.rmtree, directory, True)


async def measure_memory(opts: Options) -> dict[str, Any]:
    process = ConsumerProcess(_memory_main, "memory", devices=opts.memory_devices, seed=opts.seed)
    try:
        return dict(await process.ready(within=max(120.0, opts.memory_devices / 500)))
    finally:
        await process.stop()


# --------------------------------------------------------------------------- the whole run


def plan(opts: Options) -> list[Mode]:
    modes: list[Mode] = []
    if "ceiling" in opts.modes:
        modes += [Mode("ceiling", None, qos) for qos in opts.qos_levels]
    if "naive" in opts.modes:
        modes += [Mode("naive", db, 0) for db in opts.databases]
    if "fleet" in opts.modes:
        modes += [Mode("fleet", db, qos) for db in opts.databases for qos in opts.qos_levels]
    if "workers" in opts.modes and "postgres" in opts.databases:
        modes += [Mode("workers", "postgres", 1, n, opts.split) for n in opts.workers]
    return modes


def add_ratios(results: list[ModeResult]) -> None:
    ceiling = {r.qos: r.msg_per_s for r in results if r.kind == "ceiling" and r.msg_per_s}
    naive = {r.database: r.msg_per_s for r in results if r.kind == "naive" and r.msg_per_s}
    for r in results:
        if r.kind in ("fleet", "workers") and r.msg_per_s:
            if ceiling.get(r.qos):
                r.vs_ceiling = round(r.msg_per_s / ceiling[r.qos], 2)
            if naive.get(r.database):
                r.vs_naive = round(r.msg_per_s / naive[r.database], 1)


async def run_bench(opts: Options, console: Console) -> dict[str, Any]:
    machine = machine_info(opts)
    broker: PrivateMosquitto | None = None
    if opts.broker is None:
        broker = await asyncio.to_thread(PrivateMosquitto(max_inflight=opts.max_inflight).start)
        broker_url = broker.url
    else:
        broker_url = opts.broker
    address = parse_mqtt_url(broker_url)
    base = f"bench{uuid.uuid4().hex[:8]}"
    modes = plan(opts)
    results: list[ModeResult] = []
    memory: dict[str, Any] | None = None
    dbs: Databases | None = None
    publisher: Publisher | None = None
    started = time.monotonic()
    try:
        if modes:
            console.print(
                f"generating {2 * opts.devices:,} warm-up messages and "
                f"{3 * opts.messages:,} heartbeats …"
            )
            workload = await asyncio.to_thread(
                make_workload,
                opts.devices,
                opts.messages,
                opts.messages,
                opts.seed,
                base,
                opts.messages,
                opts.namespaces,
                opts.alarm_every,
            )
            dbs = Databases(opts.pg_admin, opts.pg_template, workload)
            publisher = Publisher(address, f"fleet-bench-pub-{base}", workload)
            needed = sorted({mode.database for mode in modes if mode.database is not None})
            console.print(f"seeding {', '.join(needed) or 'no'} template databases …")
            for kind in needed:
                try:
                    await dbs.prepare(kind)
                    if any(mode.kind == "naive" for mode in modes):
                        await dbs.prepare_warm(kind)
                except psycopg.Error as exc:
                    raise BenchError(
                        f"PostgreSQL at {opts.pg_admin}: {str(exc).strip()} "
                        "(--pg-admin names a role that may create databases; --db sqlite "
                        "leaves PostgreSQL out)"
                    ) from exc
            await publisher.ready()
            console.print(f"ready after {time.monotonic() - started:.1f} s")
            ctx = Context(
                opts,
                workload,
                dbs,
                publisher,
                address,
                broker_url,
                broker,
                console,
                {hostname: index for index, hostname in enumerate(workload.hostnames)},
            )
            for mode in modes:
                console.print(f"[bold]{mode.name}[/] …")
                results.append(await run_mode(ctx, mode))
                console.print("   " + summary_line(results[-1]))
        if "memory" in opts.modes and opts.memory_devices:
            console.print(f"[bold]memory[/]: {opts.memory_devices:,} devices …")
            try:
                memory = await measure_memory(opts)
            except BenchError as exc:
                memory = {"devices": opts.memory_devices, "note": str(exc)}
    finally:
        if publisher is not None:
            await asyncio.to_thread(publisher.stop)
        if dbs is not None:
            await asyncio.to_thread(dbs.close)
        dropped = broker.dropped_warnings() if broker is not None else None
        if broker is not None:
            await asyncio.to_thread(broker.stop)
    add_ratios(results)
    machine["loadavg_after"] = _loadavg()
    return {
        "machine": machine,
        "options": asdict(opts),
        "broker": {
            "url": broker_url,
            "private": broker is not None,
            "max_inflight_messages": broker.max_inflight if broker is not None else None,
            "max_queued_messages": broker.max_queued if broker is not None else None,
            "dropped_warnings": dropped,
        },
        "seconds": round(time.monotonic() - started, 1),
        "modes": [asdict(result) for result in results],
        "memory": memory,
    }


# --------------------------------------------------------------------------- report


def machine_info(opts: Options) -> dict[str, Any]:
    info: dict[str, Any] = {
        "nproc": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "cpu_model": platform.processor() or platform.machine(),
        "ram_gib": None,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["ram_gib"] = round(int(line.split()[1]) / 1024 / 1024, 1)
                break
    with contextlib.suppress(OSError, ValueError):
        # Other work on the machine skews every figure: recorded so that a reader can tell.
        info["loadavg_before"] = [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            [PrivateMosquitto().binary, "-h"], capture_output=True, text=True, timeout=5
        ).stdout
        info["mosquitto"] = out.splitlines()[0].split()[-1] if out else None
    if "postgres" in opts.databases:
        with (
            contextlib.suppress(psycopg.Error),
            psycopg.connect(opts.pg_admin, connect_timeout=5) as conn,
        ):
            row = conn.execute("SHOW server_version").fetchone()
            info["postgres"] = row[0].split()[0] if row else None
    return info


def _fmt(value: float | None, digits: int = 0) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def summary_line(r: ModeResult) -> str:
    text = f"{_fmt(r.msg_per_s)} msg/s drained ({r.processed:,}/{r.messages:,})"
    if r.live:
        text += f", {_fmt(r.live.get('msg_per_s'))} msg/s live"
    if r.latency:
        text += (
            f"; at {_fmt(r.latency['rate'])}/s p50 {_fmt(r.latency['p50_ms'], 1)} ms, "
            f"p99 {_fmt(r.latency['p99_ms'], 1)} ms (machine busy "
            f"{_fmt(r.latency.get('machine_busy_pct'))} %"
            + (
                f", Fleet's loop {_fmt(r.latency['loop_busy_pct'])} %"
                if "loop_busy_pct" in r.latency
                else ""
            )
            + ")"
        )
    if r.alarm_latency:
        text += f"; alarm p99 {_fmt(r.alarm_latency.get('p99_ms'), 1)} ms"
        stages = r.alarm_latency.get("stages") or {}
        if stages.get("to_commit", {}).get("samples"):
            text += " (p50/p99 ms: to Fleet {}/{}, to commit {}/{}, to stream {}/{})".format(
                *(
                    _fmt(stages[name].get(q), 1)
                    for name in ("to_fleet", "to_commit", "to_stream")
                    for q in ("p50_ms", "p99_ms")
                )
            )
    if r.gc:
        text += f"; longest GC pause {r.gc['max_ms']} ms ({r.gc['full']} full)"
    text += f" ({_fmt(r.wall_seconds, 1)} s)"
    return text + (f" [yellow]{r.note}[/]" if r.note else "")


def render(console: Console, report: dict[str, Any]) -> None:
    machine, broker = report["machine"], report["broker"]
    load = machine.get("loadavg_before")
    console.print(
        f"[bold]machine[/]: {machine['nproc']} CPUs ({machine['cpu_model']}), "
        f"{machine['ram_gib']} GiB RAM, Python {machine['python']}, "
        f"PostgreSQL {machine.get('postgres', '—')}, Mosquitto {machine.get('mosquitto', '—')}"
        + (f"; load average {load[0]:.2f} before the run" if load else "")
    )
    console.print(
        f"[bold]broker[/]: {broker['url']}"
        + (
            f" (private: max_inflight_messages {broker['max_inflight_messages']}, "
            f"max_queued_messages {broker['max_queued_messages']}; "
            f"drop warnings in its log: {broker['dropped_warnings']})"
            if broker["private"]
            else ""
        )
    )
    opts = report["options"]
    table = Table(
        title=f"{opts['devices']:,} devices; {opts['messages']:,} heartbeats flat out, drained "
        f"then live ({opts['naive_messages']:,} for naive), then paced at half the live rate"
    )
    for name in (
        "mode",
        "msg/s",
        "live msg/s",
        "x ceiling",
        "x naive",
        "paced /s",
        "p50 ms",
        "p99 ms",
        "alarm p99",
        "CPU s cons/pub/mosq/pg/other",
        "peak RSS MB",
        "rows",
    ):
        table.add_column(name, justify="left" if name == "mode" else "right")
    for run in report["modes"]:
        latency, cpu = run["latency"], run["cpu"]
        rss = run["peak_rss_mb"].get("consumer")
        rss_text = "+".join(_fmt(v) for v in rss) if isinstance(rss, list) else _fmt(rss)
        table.add_row(
            run["mode"],
            _fmt(run["msg_per_s"]) + ("" if run["complete"] else "*"),
            _fmt(run["live"].get("msg_per_s")) + ("" if run["live"].get("complete", True) else "*"),
            _fmt(run["vs_ceiling"], 2),
            _fmt(run["vs_naive"], 1),
            _fmt(latency.get("rate")),
            _fmt(latency.get("p50_ms"), 1),
            _fmt(latency.get("p99_ms"), 1),
            _fmt(run["alarm_latency"].get("p99_ms"), 1),
            "/".join(
                _fmt(cpu.get(name), 1)
                for name in ("consumer", "publisher", "mosquitto", "postgres", "other")
            ),
            rss_text,
            _fmt(run["rows_stored"]),
        )
    if report["modes"]:
        console.print(table)
        detail = Table(title="Where the time went, flat-out (drained) runs")
        for name in (
            "mode",
            "publish s",
            "run s",
            "machine busy %",
            "CPU µs/msg cons/pub/mosq/pg",
            "batches",
            "mean batch",
            "loop busy %",
            "in transaction %",
            "sweep % (ms each)",
        ):
            detail.add_column(name, justify="left" if name == "mode" else "right")
        for run in report["modes"]:
            per_msg = run["cpu_us_per_msg"]
            detail.add_row(
                run["mode"],
                _fmt(run["publish_seconds"], 2),
                _fmt(run["seconds"], 2),
                _fmt(run["cpu"].get("machine_busy_pct")),
                "/".join(
                    _fmt(per_msg.get(name))
                    for name in ("consumer", "publisher", "mosquitto", "postgres")
                ),
                _fmt(run["batches"]),
                _fmt(run["mean_batch"]),
                _fmt(run["busy_pct"], 1),
                _fmt(run["transaction_pct"], 1),
                f"{_fmt(run['sweep_pct'], 1)} ({_fmt(run['sweep_ms'], 1)})"
                if run["batches"]
                else "—",
            )
        console.print(detail)
    memory = report.get("memory")
    if memory:
        if "note" in memory:
            console.print(f"[bold]memory[/]: [yellow]{memory['note']}[/]")
        else:
            console.print(
                f"[bold]memory[/]: {memory['known']:,} known devices: "
                f"{memory['heap_bytes_per_device']:,} B/device of Python heap (tracemalloc), "
                f"{memory['rss_bytes_per_device']:,} B/device of RSS; "
                f"the process's RSS with them all: {memory['rss_mb']:,} MB "
                f"({memory['seconds']:.0f} s)"
            )
    for run in report["modes"]:
        if run["note"]:
            console.print(f"[yellow]* {run['mode']}[/]: {run['note']}")
    console.print(f"{report['seconds']:.0f} s in all")


# --------------------------------------------------------------------------- entry point


def _csv(text: str, allowed: Sequence[str], what: str) -> tuple[str, ...]:
    items = tuple(item.strip() for item in text.split(",") if item.strip())
    unknown = [item for item in items if item not in allowed]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown {what}: {', '.join(unknown)}")
    return items


def parse_args(
    argv: Sequence[str] | None, prog: str = "python -m bench.ingest"
) -> tuple[Options, Path | None]:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--quick", action="store_true", help="a reduced run (about a minute)")
    parser.add_argument("--devices", "--panels", type=int, default=None, help="simulated panels")
    parser.add_argument("--messages", type=int, default=None, help="heartbeats flat out")
    parser.add_argument("--naive-messages", type=int, default=None, help="... for naive")
    parser.add_argument(
        "--paced-seconds", type=float, default=None, help="length of the latency run"
    )
    parser.add_argument(
        "--memory-devices", type=int, default=None, help="devices for the memory figure"
    )
    parser.add_argument(
        "--modes",
        default=",".join(MODES),
        type=lambda text: _csv(text, MODES, "mode"),
        help=f"comma-separated, of {','.join(MODES)}",
    )
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--qos", choices=("0", "1", "both"), default="both")
    parser.add_argument(
        "--workers",
        default=None,
        help="fleet ingest processes for the workers mode, comma-separated (default 1,2; "
        "--quick: 2)",
    )
    parser.add_argument(
        "--split",
        choices=("hash", "account"),
        default="hash",
        help="workers mode: split the devices by hash (FLEET_INGEST_PARTITION, each worker "
        "reads every message) or by account (each subscribes to its topic bases; needs "
        "--namespaces)",
    )
    parser.add_argument(
        "--namespaces",
        type=int,
        default=1,
        help="spread the panels over this many topic bases, one account each (ceiling and "
        "workers modes)",
    )
    parser.add_argument(
        "--alarm-every",
        type=int,
        default=ALARM_EVERY,
        help=f"one paced message in this many is an alarm raise (default {ALARM_EVERY}: most "
        "batches at half capacity then hold one)",
    )
    parser.add_argument(
        "--broker", default=None, help="mqtt://[user:pass@]host:port (default: a private one)"
    )
    parser.add_argument(
        "--max-inflight",
        type=int,
        default=MAX_INFLIGHT,
        help=f"the private broker's max_inflight_messages (default {MAX_INFLIGHT}, 0: no limit)",
    )
    parser.add_argument(
        "--pg-admin", default=Options.pg_admin, help="URL allowed to CREATE/DROP DATABASE"
    )
    parser.add_argument("--pg-template", default=None, help="clone this migrated database")
    parser.add_argument(
        "--rate", type=float, default=0.0, help="rate of the latency run (default: half)"
    )
    parser.add_argument(
        "--window",
        type=int,
        default=0,
        help="live run: keep at most this many messages published but not yet processed "
        "(0: no cap)",
    )
    parser.add_argument("--batch-max", type=int, default=None, help="FLEET_INGEST_BATCH_MAX")
    parser.add_argument(
        "--batch-wait-ms", type=float, default=None, help="FLEET_INGEST_BATCH_WAIT_MS"
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per phase")
    parser.add_argument(
        "--stall", type=float, default=5.0, help="give up after this long without progress"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--profile", default=None, help="write a cProfile per Fleet run here")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument(
        "--strict", action="store_true", help="exit 1 unless every mode processed everything"
    )
    args = parser.parse_args(argv)
    quick = args.quick

    def pick(value: Any, full: Any, reduced: Any) -> Any:
        return value if value is not None else (reduced if quick else full)

    try:
        workers = tuple(int(n) for n in pick(args.workers, "1,2", "2").split(",") if n.strip())
    except ValueError:
        parser.error("--workers takes process counts, e.g. 2 or 1,2")
    opts = Options(
        devices=pick(args.devices, DEFAULT_DEVICES, 2_000),
        messages=pick(args.messages, DEFAULT_MESSAGES, 10_000),
        naive_messages=pick(args.naive_messages, DEFAULT_NAIVE_MESSAGES, 2_000),
        paced_seconds=pick(args.paced_seconds, DEFAULT_PACED_SECONDS, 2.0),
        memory_devices=pick(args.memory_devices, DEFAULT_MEMORY_DEVICES, 10_000),
        modes=args.modes,
        databases=("sqlite", "postgres") if args.db == "both" else (args.db,),
        qos_levels=(0, 1) if args.qos == "both" else (int(args.qos),),
        workers=workers,
        split=args.split,
        namespaces=args.namespaces,
        alarm_every=args.alarm_every,
        broker=args.broker,
        max_inflight=args.max_inflight,
        pg_admin=args.pg_admin,
        pg_template=args.pg_template,
        rate=args.rate,
        window=args.window,
        batch_max=args.batch_max,
        batch_wait_ms=args.batch_wait_ms,
        timeout=args.timeout,
        stall=args.stall,
        seed=args.seed,
        strict=args.strict,
        profile=args.profile,
        quick=quick,
    )
    if opts.devices < 1 or opts.messages < 1 or opts.naive_messages < 1:
        parser.error("--devices, --messages and --naive-messages must be at least 1")
    if any(n < 1 for n in opts.workers):
        parser.error("--workers counts must be at least 1")
    if opts.namespaces < 1:
        parser.error("--namespaces must be at least 1")
    if opts.alarm_every < 2:
        parser.error("--alarm-every must be at least 2")
    if opts.namespaces > 1 and {"naive", "fleet"} & set(opts.modes):
        # Their figures follow one account (the naive baseline's store, the alarms' events).
        parser.error("--namespaces applies to the ceiling and workers modes: add --modes")
    if opts.split == "account" and "workers" in opts.modes:
        short = [n for n in opts.workers if n > opts.namespaces]
        if short:
            parser.error(
                f"--split account: --namespaces {opts.namespaces} is fewer than {short[0]} workers"
            )
    return opts, args.json


def main(
    argv: Sequence[str] | None = None,
    console: Console | None = None,
    prog: str = "python -m bench.ingest",
) -> dict[str, Any]:
    """Run the benchmark; print the tables and return (and with --json, write) the figures."""
    opts, json_path = parse_args(argv, prog)
    if console is None:
        console = Console()
        if not console.is_terminal:  # piped into a file: do not squeeze the tables into 80 columns
            console = Console(width=180)
    report = asyncio.run(run_bench(opts, console))
    render(console, report)
    if json_path is not None:
        json_path.write_text(json.dumps(report, indent=2) + "\n")
        console.print(f"figures written to {json_path}")
    return report


def exit_status(report: dict[str, Any]) -> int:
    """1 if a mode never reached its timed run (or, with --strict, left anything unprocessed)."""
    failed = [run for run in report["modes"] if run["msg_per_s"] is None]
    partial = [run for run in report["modes"] if not run["complete"]]
    return 1 if failed or (report["options"]["strict"] and partial) else 0


def cli(argv: Sequence[str] | None = None, prog: str = "python -m bench.ingest") -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return exit_status(main(argv, prog=prog))
    except (BenchError, BrokerError) as exc:
        Console(stderr=True).print(f"[red]error:[/] {exc}")
        return 2


if __name__ == "__main__":
    sys.exit(cli())
