"""Ingest throughput and commit latency of a real Fleet stack: Mosquitto plus SQLite or PostgreSQL.

    .venv/bin/python -m bench.ingest --db both --qos both --json out.json

For each database x QoS: a fresh database, a `FleetRuntime` subscribed at that QoS to a topic base
of its own, M simulated panels that log in (and are registered) first, then N pre-encoded
heartbeats published round-robin from a separate process, so that the publisher does not compete
for the ingest's GIL and event loop. bench/README.md explains how to read the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import multiprocessing
import os
import platform
import random
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import sqlalchemy as sa
from paho.mqtt.enums import CallbackAPIVersion
from rich.console import Console
from rich.table import Table

from fleet.config import Settings
from fleet.ingest.mqtt_link import BrokerAddress, InboundMessage, parse_mqtt_url
from fleet.ingest.pipeline import IngestPipeline
from fleet.runtime import FleetRuntime
from fleet.sim.alarm_panel import SimulatedPanel, random_mac
from fleet.store import accounts
from fleet.store.migrate import upgrade
from fleet.store.tables import devices, heartbeats

log = logging.getLogger("bench.ingest")

DEFAULT_MESSAGES = 20_000
DEFAULT_PANELS = 1_000
DEFAULT_BROKER = "mqtt://127.0.0.1:1883"
DEFAULT_PG_ADMIN = os.environ.get(
    "FLEET_BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/test"
)
KEY = bytes.fromhex("5a" * 32)  # the bench's own HMAC key: its panels and its ingest share it
POLL_SECONDS = 0.005
Frame = tuple[str, bytes]


class BenchError(Exception):
    """A run that could not reach its timed phase (e.g. the panels never all registered)."""


# --------------------------------------------------------------------------- the publisher process


@dataclass(frozen=True)
class PublishJob:
    frames: list[Frame]
    qos: int
    rate: float = 0.0  # messages per second, 0: as fast as paho can
    window: int = 0  # most messages published but not yet processed by the ingest, 0: no cap
    timeout: float = 120.0  # for the broker's acknowledgements, and for a window that stays full


def _publisher_main(
    conn: Connection,
    processed: Any,
    host: str,
    port: int,
    client_id: str,
    user: str | None,
    pw: str | None,
) -> None:
    """Runs in its own process: publish the frames it is sent, report timings, until "stop"."""
    connected = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
    # paho's own window of 20 unacknowledged QoS 1 publishes would pace the publisher by round
    # trips to the broker; the broker acknowledges at once, so let paho send without a window.
    client.max_inflight_messages_set(0)
    client.on_connect = lambda *_args: connected.set()
    if user:
        client.username_pw_set(user, pw)
    try:
        client.connect(host, port, keepalive=60)
        client.loop_start()
        if not connected.wait(10):
            conn.send(("error", f"publisher could not connect to {host}:{port}"))
            return
        conn.send(("ready", None))
        while True:
            command, job = conn.recv()
            if command == "stop":
                break
            conn.send(("done", _publish_all(client, job, processed)))
    finally:
        client.disconnect()
        client.loop_stop()
        conn.close()


def _publish_all(client: mqtt.Client, job: PublishJob, processed: Any) -> dict[str, float]:
    cpu = time.process_time()
    infos = []
    blocked = 0.0
    first = time.time()
    for index, (topic, payload) in enumerate(job.frames):
        if job.rate > 0 and index % 50 == 0:
            ahead = first + index / job.rate - time.time()
            if ahead > 0:
                time.sleep(ahead)
        if job.window and index - processed.value >= job.window:
            waiting = time.monotonic()
            while index - processed.value >= job.window:
                if time.monotonic() - waiting > job.timeout:
                    break
                time.sleep(0.001)
            blocked += time.monotonic() - waiting
            if index - processed.value >= job.window:
                break  # the ingest stopped making progress: report what was sent
        infos.append(client.publish(topic, payload, job.qos))
    sent = time.time()
    deadline = sent + job.timeout
    failed = 0
    for info in infos:
        try:
            info.wait_for_publish(max(0.0, deadline - time.time()))
        except (ValueError, RuntimeError):  # never queued: not connected, queue full
            failed += 1
            continue
        if not info.is_published():
            failed += 1
    return {
        "first": first,
        "sent": sent,
        "flushed": time.time(),
        "published": len(infos) - failed,
        "failed": failed + len(job.frames) - len(infos),
        "window_wait": blocked,
        "cpu": time.process_time() - cpu,
    }


class Publisher:
    """The parent's handle on the publisher process (spawned: no fork of a threaded parent)."""

    def __init__(self, address: BrokerAddress, client_id: str) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        # How many messages of the current job the ingest has processed (for --window).
        self.processed = context.Value("q", 0, lock=False)
        self._process = context.Process(
            target=_publisher_main,
            args=(
                child,
                self.processed,
                address.host,
                address.port,
                client_id,
                address.username,
                address.password,
            ),
            name="bench-publisher",
            daemon=True,
        )
        self._process.start()
        child.close()
        self.result: dict[str, float] | None = None

    async def _reply(self, within: float) -> Any:
        if not await asyncio.to_thread(self._conn.poll, within):
            raise BenchError(f"the publisher process did not answer within {within:.0f} s")
        kind, value = self._conn.recv()
        if kind == "error":
            raise BenchError(value)
        return value

    async def ready(self, within: float = 30.0) -> None:
        await self._reply(within)

    def start(self, job: PublishJob) -> None:
        self.result = None
        self.processed.value = 0
        self._conn.send(("publish", job))

    def poll(self) -> bool:
        """Non-blocking: has the current publish finished? (then `result` holds its timings)"""
        if self.result is None and self._conn.poll():
            self.result = self._conn.recv()[1]
        return self.result is not None

    async def finish(self, within: float) -> dict[str, float]:
        if self.result is None:
            self.result = await self._reply(within)
        assert self.result is not None
        return self.result

    def stop(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._conn.send(("stop", None))
        self._process.join(10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._process.close()
        self._conn.close()


# --------------------------------------------------------------------------- services


def discard_session(address: BrokerAddress, client_id: str) -> None:
    """Connect once with a clean session and the ingest's client id: the broker forgets the
    persistent session (it would otherwise queue messages for it forever)."""
    connected = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
    client.on_connect = lambda *_args: connected.set()
    if address.username:
        client.username_pw_set(address.username, address.password)
    try:
        client.connect(address.host, address.port)
    except OSError as exc:
        log.warning("could not discard the MQTT session %s: %s", client_id, exc)
        return
    client.loop_start()
    connected.wait(5)
    client.disconnect()
    client.loop_stop()


class BenchDatabase:
    """A fresh database for one run: a temporary SQLite file, or `fleet_bench_<random>` on the
    PostgreSQL server of `pg_admin` (cloned from `pg_template` if given), dropped afterwards."""

    def __init__(self, kind: str, pg_admin: str, pg_template: str | None) -> None:
        self.kind = kind
        self.pg_admin = pg_admin
        self.pg_template = pg_template
        self.name = f"fleet_bench_{uuid.uuid4().hex[:10]}"
        self._dir: str | None = None
        self.migrated = False

    def _admin(self, sql: str) -> None:
        with psycopg.connect(self.pg_admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql)

    def create(self) -> str:
        if self.kind == "sqlite":
            self._dir = tempfile.mkdtemp(prefix="fleet-bench-")
            return f"sqlite:///{Path(self._dir) / 'fleet.db'}"
        template = f' TEMPLATE "{self.pg_template}"' if self.pg_template else ""
        self._admin(f'CREATE DATABASE "{self.name}"{template}')
        self.migrated = bool(self.pg_template)
        base, _, _ = self.pg_admin.rpartition("/")
        return f"{base}/{self.name}"

    def drop(self) -> None:
        if self.kind == "sqlite":
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)
            return
        try:
            self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        except psycopg.Error as exc:
            log.warning("could not drop the bench database %s: %s", self.name, exc)


def make_panels(base: str, count: int, seed: int) -> list[SimulatedPanel]:
    rng = random.Random(seed)
    panels: list[SimulatedPanel] = []
    macs: set[bytes] = set()
    while len(panels) < count:
        panel_rng = random.Random(rng.getrandbits(64))
        mac = random_mac(panel_rng)
        if mac not in macs:
            macs.add(mac)
            panels.append(SimulatedPanel(base=base, key=KEY, rng=panel_rng, mac=mac))
    return panels


# --------------------------------------------------------------------------- measuring


class BatchTimer:
    """Wraps the pipeline's `process` (and `_commit`) to time each batch: when it ended, how many
    heartbeats it accepted, and the time spent inside the database transaction."""

    def __init__(self, pipeline: IngestPipeline) -> None:
        self.pipeline = pipeline
        self.busy = 0.0
        self.in_transaction = 0.0
        self.sizes: list[int] = []
        self.last_commit: float | None = None
        process, commit = pipeline.process, getattr(pipeline, "_commit", None)

        async def timed_process(batch: list[InboundMessage]) -> None:
            started = time.perf_counter()
            hb_before = pipeline.stats.accepted["hb"]
            await process(batch)
            self.busy += time.perf_counter() - started
            self.sizes.append(len(batch))
            if pipeline.stats.accepted["hb"] > hb_before:
                self.last_commit = time.time()

        pipeline.process = timed_process  # type: ignore[method-assign]
        if commit is not None:

            async def timed_commit(prepared: list[Any]) -> Any:
                started = time.perf_counter()
                try:
                    return await commit(prepared)
                finally:
                    self.in_transaction += time.perf_counter() - started

            pipeline._commit = timed_commit  # type: ignore[method-assign]

    def reset(self) -> None:
        self.busy = 0.0
        self.in_transaction = 0.0
        self.sizes = []
        self.last_commit = None


def _clock_ticks() -> int:
    try:
        return os.sysconf("SC_CLK_TCK")
    except (ValueError, OSError, AttributeError):
        return 100


@dataclass
class CpuSnapshot:
    ingest: float  # this process, all threads
    machine_total: float | None = None  # jiffies, from /proc/stat
    machine_idle: float | None = None
    services: dict[int, tuple[str, float]] = field(default_factory=dict)  # pid -> (name, s)


def _counts_for_run(comm: str, pid: str, database: str | None) -> bool:
    """Mosquitto, and PostgreSQL's own processes plus the backends serving `database`; other
    sessions' backends are someone else's load ("other" in the report)."""
    if comm == "mosquitto":
        return True
    if comm != "postgres":
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (OSError, UnicodeDecodeError):
        return False
    client = "(" in cmdline or "[local]" in cmdline  # "postgres: 15/main: user db host(port) …"
    return not client or (database is not None and f" {database} " in cmdline)


def cpu_snapshot(database: str | None = None) -> CpuSnapshot:
    """CPU seconds used so far by this process, by Mosquitto and by the PostgreSQL processes
    serving `database`, and the machine's jiffies (from /proc; only the process's own time
    where /proc is missing)."""
    snap = CpuSnapshot(ingest=time.process_time())
    ticks = _clock_ticks()
    with contextlib.suppress(OSError, IndexError, ValueError):
        values = [float(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        snap.machine_total = sum(values[:8])
        snap.machine_idle = values[3] + values[4]
    for pid in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not pid.isdigit():
            continue
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        comm = stat[stat.find("(") + 1 : stat.rfind(")")]
        if _counts_for_run(comm, pid, database):
            rest = stat[stat.rfind(")") + 2 :].split()
            snap.services[int(pid)] = (comm, (int(rest[11]) + int(rest[12])) / ticks)
    return snap


def cpu_delta(before: CpuSnapshot, after: CpuSnapshot) -> dict[str, float]:
    """Per process, so that a PostgreSQL backend that started during the window counts whole
    and one that exited is left out (its last seconds are lost, not subtracted)."""
    out = {"ingest": round(after.ingest - before.ingest, 2), "mosquitto": 0.0, "postgres": 0.0}
    for pid, (name, seconds) in after.services.items():
        previous = before.services.get(pid)
        used = seconds - previous[1] if previous is not None and previous[0] == name else seconds
        out[name] = round(out[name] + used, 2)
    if after.machine_total is not None and before.machine_total is not None:
        total = after.machine_total - before.machine_total
        idle = (after.machine_idle or 0.0) - (before.machine_idle or 0.0)
        if total > 0:
            out["machine_busy_pct"] = round(100 * (1 - idle / total), 1)
            out["machine_busy_s"] = round((total - idle) / _clock_ticks(), 2)
    return out


def percentile(sorted_values: Sequence[float], fraction: float) -> float | None:
    if not sorted_values:
        return None
    index = max(0, math.ceil(fraction * len(sorted_values)) - 1)
    return sorted_values[index]


@dataclass
class RunResult:
    database: str
    qos: int
    messages: int  # heartbeats the publisher was asked to send
    panels: int
    published: int = 0  # acknowledged by the broker (QoS 1) or written to the socket (QoS 0)
    received: int = 0  # reached the ingest: accepted + rejected + still buffered
    accepted: int = 0  # heartbeats committed
    rejected: dict[str, int] = field(default_factory=dict)
    complete: bool = False  # every published heartbeat was committed
    seconds: float | None = None  # first publish -> commit of the last accepted heartbeat
    msg_per_s: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    batches: int = 0
    mean_batch: float | None = None
    rows_stored: int = 0  # heartbeats rows the CDC rule stored during the timed phase
    login_seconds: float | None = None  # warm-up: first login -> all registered, ingest idle
    publish_seconds: float | None = None  # first publish -> last one acked by the broker
    window_wait_seconds: float | None = None  # publisher held back by --window
    ingest_busy_pct: float | None = None  # share of `seconds` the pipeline spent in batches
    transaction_pct: float | None = None  # share of `seconds` inside the database transaction
    cpu: dict[str, float] = field(default_factory=dict)
    note: str = ""


@dataclass
class Options:
    messages: int = DEFAULT_MESSAGES
    panels: int = DEFAULT_PANELS
    databases: tuple[str, ...] = ("sqlite", "postgres")
    qos_levels: tuple[int, ...] = (0, 1)
    broker: str = DEFAULT_BROKER
    pg_admin: str = DEFAULT_PG_ADMIN
    pg_template: str | None = None
    rate: float = 0.0
    window: int = 0
    batch_max: int | None = None
    batch_wait_ms: float | None = None
    timeout: float = 120.0
    stall: float = 5.0
    seed: int = 1
    strict: bool = False


async def _until(condition: Callable[[], bool], within: float) -> bool:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(POLL_SECONDS)
    return True


async def _settle(runtime: FleetRuntime, quiet: float = 0.3, within: float = 30.0) -> None:
    """Wait until the ingest has had nothing to do for `quiet` seconds (any device-id sync a
    login triggered, and its echo on the command topic, is done)."""
    stats, link = runtime.pipeline.stats, runtime.link
    deadline = time.monotonic() + within
    seen, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        now = time.monotonic()
        if stats.batches != seen or link.pending():
            seen, since = stats.batches, now
        elif now - since >= quiet:
            return
        await asyncio.sleep(POLL_SECONDS)


async def _count_rows(runtime: FleetRuntime, account_id: int) -> int:
    async with runtime.engine.connect() as conn:
        query = (
            sa.select(sa.func.count())
            .select_from(heartbeats.join(devices, devices.c.id == heartbeats.c.device_id))
            .where(devices.c.account_id == account_id)
        )
        return int(await conn.scalar(query) or 0)


async def run_one(db_kind: str, qos: int, opts: Options) -> RunResult:
    result = RunResult(db_kind, qos, opts.messages, opts.panels)
    address = parse_mqtt_url(opts.broker)
    run_id = uuid.uuid4().hex[:8]
    base = f"bench{run_id}"
    client_id = f"fleet-bench-{run_id}"
    database = BenchDatabase(db_kind, opts.pg_admin, opts.pg_template)
    runtime: FleetRuntime | None = None
    publisher: Publisher | None = None
    started = False
    try:
        url = await asyncio.to_thread(database.create)
        if not database.migrated:
            await asyncio.to_thread(upgrade, url)
        overrides: dict[str, Any] = {}
        if opts.batch_max is not None:
            overrides["ingest_batch_max"] = opts.batch_max
        if opts.batch_wait_ms is not None:
            overrides["ingest_batch_wait_ms"] = opts.batch_wait_ms
        settings = Settings(
            database_url=url,
            mqtt_url=opts.broker,
            mqtt_client_id=client_id,
            mqtt_qos=qos,
            alarm_topic_base=base,
            alarm_topic_filter=f"{base}/pb/d/+/+",
            alarm_hmac_key=KEY.hex(),
            **overrides,
        )
        runtime = FleetRuntime(settings)
        async with runtime.engine.begin() as conn:
            account_id = await accounts.create_account(conn, f"bench-{base}")
            await accounts.add_namespace(conn, account_id, "alarm_panel", base)
        pipeline = runtime.pipeline
        pipeline.keep_latencies = True
        timer = BatchTimer(pipeline)
        await runtime.start(migrate=False)
        started = True
        publisher = Publisher(address, f"{client_id}-pub")
        await publisher.ready()
        panels = make_panels(base, opts.panels, opts.seed)
        await _login(runtime, publisher, panels, account_id, opts, result)
    except BenchError as exc:
        result.note = str(exc)
    else:
        assert runtime is not None and publisher is not None
        pg_name = database.name if db_kind == "postgres" else None
        await _timed_phase(runtime, publisher, panels, account_id, pg_name, timer, opts, result)
    finally:
        if publisher is not None:
            await asyncio.to_thread(publisher.stop)
        if runtime is not None:
            if started:
                await runtime.stop()
            else:
                await runtime.engine.dispose()
            await asyncio.to_thread(discard_session, address, client_id)
        await asyncio.to_thread(database.drop)
    return result


async def _login(
    runtime: FleetRuntime,
    publisher: Publisher,
    panels: list[SimulatedPanel],
    account_id: int,
    opts: Options,
    result: RunResult,
) -> None:
    """One login per panel; wait until all are registered and the ingest is idle again.

    Each login already carries the device id its panel is about to be given (a database numbers
    new devices in arrival order), as a panel that was synced before does. A login with a wrong
    id makes the ingest send that panel a device-id sync command (four transactions, run inside
    the ingest loop) and resend it until the panel reports the right id: with panels that never
    answer, that storm would still be running during the timed phase.
    """
    stats = runtime.pipeline.stats
    async with runtime.engine.connect() as conn:
        offset = int(await conn.scalar(sa.select(sa.func.max(devices.c.id))) or 0)
    for index, panel in enumerate(panels):
        panel.device_db_id = offset + index + 1
    started = time.monotonic()
    now = time.time()
    logins = [panel.login(now) for panel in panels]
    publisher.start(PublishJob(logins, result.qos, window=opts.window, timeout=opts.timeout))

    def all_answered() -> bool:
        done = stats.accepted["login"] + sum(stats.rejected.values())
        publisher.processed.value = done
        return done >= len(panels)  # registered, or refused: waiting longer will not help

    await _until(all_answered, opts.timeout)
    await publisher.finish(opts.timeout)
    if stats.accepted["login"] < len(panels):
        rejected = dict(stats.rejected)
        hint = f"rejected: {rejected}" if rejected else "none rejected"
        if result.qos == 1 and not rejected:
            hint += (
                "; the broker may have dropped logins (max_queued_messages, see bench/README.md)"
            )
        raise BenchError(
            f"only {stats.accepted['login']} of {len(panels)} panels registered ({hint})"
        )
    await _settle(runtime)
    result.login_seconds = round(time.monotonic() - started, 3)
    async with runtime.engine.connect() as conn:
        rows = await conn.execute(
            sa.select(devices.c.hostname, devices.c.id).where(devices.c.account_id == account_id)
        )
        ids = {hostname: device_id for hostname, device_id in rows}
    resynced = sum(panel.device_db_id != ids[panel.hostname] for panel in panels)
    if resynced:
        result.note = f"{resynced} panels got another device id than their login carried"
    # The heartbeats carry the right id, so the first one of each panel ends any sync.
    for panel in panels:
        panel.device_db_id = ids[panel.hostname]


async def _timed_phase(
    runtime: FleetRuntime,
    publisher: Publisher,
    panels: list[SimulatedPanel],
    account_id: int,
    database: str | None,
    timer: BatchTimer,
    opts: Options,
    result: RunResult,
) -> None:
    pipeline, link = runtime.pipeline, runtime.link
    stats = pipeline.stats
    now = time.time()
    frames = [panels[i % len(panels)].heartbeat(now) for i in range(opts.messages)]
    rows_before = await _count_rows(runtime, account_id)
    hb_before, batches_before = stats.accepted["hb"], stats.batches
    rejected_before = Counter(stats.rejected)
    pipeline.latencies.clear()
    timer.reset()
    cpu_before = cpu_snapshot(database)

    def processed() -> int:
        rejected = sum((stats.rejected - rejected_before).values())
        return stats.accepted["hb"] - hb_before + rejected

    def received() -> int:
        return processed() + link.pending()

    publisher.start(PublishJob(frames, result.qos, opts.rate, opts.window, opts.timeout))
    deadline = time.monotonic() + opts.timeout
    last_progress, seen = time.monotonic(), -1
    stopped = ""
    while stats.accepted["hb"] - hb_before < opts.messages:
        now_mono = time.monotonic()
        publisher.poll()
        publisher.processed.value = processed()
        progress = received()
        if progress != seen:
            seen, last_progress = progress, now_mono
        elif publisher.result is not None and now_mono - last_progress > opts.stall:
            stopped = f"no message arrived for {opts.stall:.0f} s after publishing ended"
            break
        if now_mono > deadline:
            stopped = f"timed out after {opts.timeout:.0f} s"
            break
        await asyncio.sleep(POLL_SECONDS)
    cpu_after = cpu_snapshot(database)
    published = await publisher.finish(opts.timeout)

    result.published = int(published["published"])
    result.received = received()
    result.accepted = stats.accepted["hb"] - hb_before
    result.rejected = dict(stats.rejected - rejected_before)
    result.complete = result.accepted == opts.messages
    result.batches = stats.batches - batches_before
    result.mean_batch = round(sum(timer.sizes) / len(timer.sizes), 1) if timer.sizes else None
    result.publish_seconds = round(published["flushed"] - published["first"], 3)
    result.window_wait_seconds = round(published["window_wait"], 3)
    if timer.last_commit is not None and result.accepted:
        seconds = timer.last_commit - published["first"]
        result.seconds = round(seconds, 3)
        result.msg_per_s = round(result.accepted / seconds, 1) if seconds > 0 else None
        if seconds > 0:
            result.ingest_busy_pct = round(100 * timer.busy / seconds, 1)
            result.transaction_pct = round(100 * timer.in_transaction / seconds, 1)
    latencies = sorted(pipeline.latencies)
    for name, fraction in (("p50_ms", 0.5), ("p99_ms", 0.99), ("max_ms", 1.0)):
        value = percentile(latencies, fraction)
        setattr(result, name, None if value is None else round(value * 1000, 2))
    result.rows_stored = await _count_rows(runtime, account_id) - rows_before
    result.cpu = cpu_delta(cpu_before, cpu_after)
    result.cpu["publisher"] = round(published["cpu"], 2)
    if "machine_busy_s" in result.cpu:
        ours = sum(result.cpu[name] for name in ("ingest", "publisher", "mosquitto", "postgres"))
        result.cpu["other"] = round(max(0.0, result.cpu["machine_busy_s"] - ours), 2)
    if not result.complete:
        missing = result.published - result.received
        detail = (
            f"{result.received:,} of {result.published:,} published heartbeats reached the "
            f"ingest ({missing:,} missing), {result.accepted:,} committed"
        )
        if result.qos == 1 and missing > 0:
            detail += (
                "; at QoS 1 Mosquitto drops what exceeds its per-client queue "
                "(max_queued_messages, default 1000) while the ingest holds its window of "
                "unacknowledged messages (max_inflight_messages, default 20); --window 800 "
                "keeps the publisher within that queue, or raise both limits for the ingest's "
                "client (see bench/README.md)"
            )
        result.note = "; ".join(
            part for part in (result.note, f"{stopped}: {detail}" if stopped else detail) if part
        )


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
        info["loadavg_1m"] = float(Path("/proc/loadavg").read_text().split()[0])
    if "postgres" in opts.databases:
        with (
            contextlib.suppress(psycopg.Error),
            psycopg.connect(opts.pg_admin, connect_timeout=5) as conn,
        ):
            row = conn.execute("SHOW server_version").fetchone()
            info["postgres"] = row[0] if row else None
    return info


def _fmt(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def render(console: Console, machine: dict[str, Any], opts: Options, runs: list[RunResult]) -> None:
    console.print(
        f"[bold]machine[/]: {machine['nproc']} CPUs ({machine['cpu_model']}), "
        f"{machine['ram_gib']} GiB RAM, Python {machine['python']}"
        + (f", load {machine['loadavg_1m']:.2f} before the runs" if "loadavg_1m" in machine else "")
        + (f", PostgreSQL {machine['postgres']}" if machine.get("postgres") else "")
    )
    table = Table(
        title=f"Fleet ingest: {opts.messages:,} heartbeats from {opts.panels:,} panels "
        f"via {opts.broker}"
    )
    for name in ("database", "qos", "messages", "received", "msg/s", "p50 ms", "p99 ms"):
        table.add_column(name, justify="left" if name == "database" else "right")
    for name in ("batches", "rows stored", "rejected"):
        table.add_column(name, justify="right")
    for run in runs:
        mark = "" if run.complete else "*"
        table.add_row(
            run.database,
            str(run.qos),
            f"{run.messages:,}",
            f"{run.received:,}",
            _fmt(run.msg_per_s, 0) + mark,
            _fmt(run.p50_ms),
            _fmt(run.p99_ms),
            f"{run.batches:,}",
            f"{run.rows_stored:,}",
            f"{sum(run.rejected.values()):,}",
        )
    console.print(table)
    detail = Table(title="where the time went (timed phase)")
    for name in (
        "database",
        "qos",
        "login s",
        "publish s",
        "commit-last s",
        "mean batch",
        "ingest busy %",
        "in transaction %",
        "CPU s ingest/pub/mosq/pg/other",
        "machine busy %",
    ):
        detail.add_column(name, justify="left" if name == "database" else "right")
    for run in runs:
        cpu = run.cpu
        detail.add_row(
            run.database,
            str(run.qos),
            _fmt(run.login_seconds, 2),
            _fmt(run.publish_seconds, 2),
            _fmt(run.seconds, 2),
            _fmt(run.mean_batch),
            _fmt(run.ingest_busy_pct),
            _fmt(run.transaction_pct),
            "/".join(
                _fmt(cpu.get(name), 1)
                for name in ("ingest", "publisher", "mosquitto", "postgres", "other")
            ),
            _fmt(cpu.get("machine_busy_pct")),
        )
    console.print(detail)
    for run in runs:
        if not run.complete or run.note:
            console.print(f"[yellow]* {run.database} qos {run.qos}[/]: {run.note}")


# --------------------------------------------------------------------------- entry point


def parse_args(argv: Sequence[str] | None) -> tuple[Options, Path | None]:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ingest", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--messages", type=int, default=DEFAULT_MESSAGES, help="heartbeats")
    parser.add_argument("--panels", type=int, default=DEFAULT_PANELS, help="simulated panels")
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--qos", choices=("0", "1", "both"), default="both")
    parser.add_argument("--broker", default=DEFAULT_BROKER, help="mqtt://[user:pass@]host:port")
    parser.add_argument(
        "--pg-admin", default=DEFAULT_PG_ADMIN, help="URL allowed to CREATE/DROP DATABASE"
    )
    parser.add_argument("--pg-template", default=None, help="clone this migrated database")
    parser.add_argument(
        "--rate", type=float, default=0.0, help="publish at most this many msg/s (0: flat out)"
    )
    parser.add_argument(
        "--window",
        type=int,
        default=0,
        help="keep at most this many heartbeats published but not yet committed (0: no cap)",
    )
    parser.add_argument("--batch-max", type=int, default=None, help="FLEET_INGEST_BATCH_MAX")
    parser.add_argument(
        "--batch-wait-ms", type=float, default=None, help="FLEET_INGEST_BATCH_WAIT_MS"
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per phase")
    parser.add_argument(
        "--stall", type=float, default=5.0, help="give up after this long without a message"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument(
        "--strict", action="store_true", help="exit 1 unless every message was committed"
    )
    args = parser.parse_args(argv)
    if args.messages < 1 or args.panels < 1:
        parser.error("--messages and --panels must be at least 1")
    opts = Options(
        messages=args.messages,
        panels=args.panels,
        databases=("sqlite", "postgres") if args.db == "both" else (args.db,),
        qos_levels=(0, 1) if args.qos == "both" else (int(args.qos),),
        broker=args.broker,
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
    )
    return opts, args.json


async def run_all(opts: Options, console: Console) -> list[RunResult]:
    runs = []
    for db_kind in opts.databases:
        for qos in opts.qos_levels:
            console.print(f"running {db_kind} qos {qos} …")
            runs.append(await run_one(db_kind, qos, opts))
    return runs


def main(argv: Sequence[str] | None = None, console: Console | None = None) -> dict[str, Any]:
    """Run the benchmark; print the tables and return (and with --json, write) the figures."""
    opts, json_path = parse_args(argv)
    if console is None:
        console = Console()
        if not console.is_terminal:  # piped into a file: do not squeeze the tables into 80 columns
            console = Console(width=160)
    machine = machine_info(opts)
    runs = asyncio.run(run_all(opts, console))
    render(console, machine, opts, runs)
    report = {
        "machine": machine,
        "options": asdict(opts),
        "runs": [asdict(run) for run in runs],
    }
    if json_path is not None:
        json_path.write_text(json.dumps(report, indent=2) + "\n")
        console.print(f"figures written to {json_path}")
    return report


def _cli() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    report = main()
    # A run that never reached its timed phase is a failure; a partial one (QoS 1 messages the
    # broker dropped) is a result, reported as such, unless --strict asks for every message.
    failed = [run for run in report["runs"] if run["seconds"] is None]
    partial = [run for run in report["runs"] if not run["complete"]]
    sys.exit(1 if failed or (report["options"]["strict"] and partial) else 0)


if __name__ == "__main__":
    _cli()
