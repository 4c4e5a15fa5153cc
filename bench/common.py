"""What every mode of the ingest benchmark shares, so that they are measured alike: the generated
messages, the publisher process, the databases (a seeded template, a fresh clone per mode), the
consumer-process protocol, and the accounting of CPU seconds and peak memory per process."""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing
import os
import random
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import sqlalchemy as sa
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy.engine import make_url

from fleet.ingest.mqtt_link import BrokerAddress
from fleet.sim.alarm_panel import SimulatedPanel, random_mac
from fleet.store import accounts
from fleet.store.engine import create_engine
from fleet.store.migrate import upgrade
from fleet.store.tables import device_status, devices

KEY = bytes.fromhex("5a" * 32)  # the bench's own HMAC key: its panels and its consumers share it
DEFAULT_PG_ADMIN = os.environ.get(
    "FLEET_BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/test"
)
Frame = tuple[str, bytes]
Key = tuple[str, int]  # (hostname, frame sequence): names one message of the workload
Commit = tuple[str, int, float]  # (hostname, frame sequence, time.time() of its commit)
ALARM_EVERY = 250  # one message in this many of the paced phase is an alarm raise
PACE_SLACK_SECONDS = 0.0005


def process_context() -> Any:
    """Processes for the publisher and the consumers: forked from a server process that has
    imported the bench (and Fleet) once, so that a mode does not pay seconds of imports. Forked
    from that single-threaded server, never from the threaded parent."""
    context = multiprocessing.get_context("forkserver")
    # Not bench.ingest itself: under `python -m bench.ingest` each child runs it as __mp_main__.
    context.set_forkserver_preload(
        ["fleet.runtime", "bench.common", "bench.ceiling", "bench.naive"]
    )
    return context


class BenchError(Exception):
    """A mode that could not reach its timed phase."""


def percentile(sorted_values: Sequence[float], fraction: float) -> float | None:
    if not sorted_values:
        return None
    index = max(0, math.ceil(fraction * len(sorted_values)) - 1)
    return sorted_values[index]


def latency_summary(values: list[float]) -> dict[str, float | int | None]:
    """p50/p99/max in milliseconds of latencies given in seconds."""
    values = sorted(values)
    out: dict[str, float | int | None] = {"samples": len(values)}
    for name, fraction in (("p50_ms", 0.5), ("p99_ms", 0.99), ("max_ms", 1.0)):
        value = percentile(values, fraction)
        out[name] = None if value is None else round(value * 1000, 1)
    return out


# --------------------------------------------------------------------------- the workload


@dataclass
class Workload:
    """Every message of a run, generated (encoded, HMAC-framed) once before any clock starts and
    published alike to every mode: the untimed warm-up (one login, then one heartbeat, per
    device: every device online with a full set of readings), the flat-out heartbeats (drained,
    then live), then the paced ones with an alarm raise every ALARM_EVERY messages."""

    base: str
    hostnames: list[str]
    macs: list[str]  # 'AA:BB:CC:DD:EE:FF', the devices' uid
    segments: dict[str, list[Frame]]
    keys: dict[str, list[Key]]
    alarms: list[int] = field(default_factory=list)  # positions in "paced" of alarm raises
    # (country, zone, latitude, longitude) as each login reports it: registered with it, so that
    # the warm-up does not also move every device (one UPDATE of `devices` each)
    locations: list[tuple[Any, ...]] = field(default_factory=list)
    # The topic bases, one account each; device i publishes under namespaces[i % len]. Empty:
    # one, `base`.
    namespaces: list[str] = field(default_factory=list)

    @property
    def devices(self) -> int:
        return len(self.hostnames)

    @property
    def bases(self) -> list[str]:
        return self.namespaces or [self.base]

    def namespace_of(self, index: int) -> str:
        """The topic base of the device at `index` (in the workload's order)."""
        bases = self.bases
        return bases[index % len(bases)]

    @property
    def topic_filters(self) -> list[str]:
        """What a consumer of every device subscribes to."""
        return [f"{base}/pb/d/+/+" for base in self.bases]


def make_panels(bases: list[str], count: int, seed: int) -> list[SimulatedPanel]:
    """`count` panels, the i-th publishing under bases[i % len(bases)]."""
    rng = random.Random(seed)
    panels: list[SimulatedPanel] = []
    macs: set[bytes] = set()
    while len(panels) < count:
        panel_rng = random.Random(rng.getrandbits(64))
        mac = random_mac(panel_rng)
        if mac not in macs:
            macs.add(mac)
            base = bases[len(panels) % len(bases)]
            panels.append(SimulatedPanel(base=base, key=KEY, rng=panel_rng, mac=mac))
    return panels


def make_workload(
    devices: int,
    flat: int,
    paced: int,
    seed: int,
    base: str,
    live: int = 0,
    namespaces: int = 1,
    alarm_every: int = ALARM_EVERY,
) -> Workload:
    """With `namespaces` > 1 the panels are spread over that many topic bases (`{base}n0`, …),
    one account each. One paced message in `alarm_every` is an alarm raise."""
    bases = [base] if namespaces <= 1 else [f"{base}n{k}" for k in range(namespaces)]
    panels = make_panels(bases, devices, seed)
    for index, panel in enumerate(panels):
        # Device ids are assigned in this order when the template is seeded: every message
        # carries its device's id, as from a panel that was synced long ago.
        panel.device_db_id = index + 1
    now = time.time()
    names = ("warmup", "flat", "live", "paced")
    segments: dict[str, list[Frame]] = {name: [] for name in names}
    keys: dict[str, list[Key]] = {name: [] for name in names}

    def add(segment: str, panel: SimulatedPanel, frame: Frame) -> None:
        segments[segment].append(frame)
        keys[segment].append((panel.hostname, panel.sequence))

    for panel in panels:
        add("warmup", panel, panel.login(now))
    for panel in panels:
        add("warmup", panel, panel.heartbeat(now))
    for index in range(flat + live):
        panel = panels[index % devices]
        add("flat" if index < flat else "live", panel, panel.heartbeat(now))
    alarms: list[int] = []
    every = max(2, min(alarm_every, paced // 4 or 2))
    for index in range(paced):
        if index % every == every // 2 and len(alarms) < devices:
            # Each alarm from a panel of its own, so that its event names it.
            panel = panels[(len(alarms) * 7919) % devices]
            alarms.append(index)
            add("paced", panel, panel.alarm(now, "PANIC1", active=True))
        else:
            panel = panels[(flat + live + index) % devices]
            add("paced", panel, panel.heartbeat(now))
    return Workload(
        base=base,
        hostnames=[p.hostname for p in panels],
        macs=[":".join(f"{b:02X}" for b in p.mac) for p in panels],
        segments=segments,
        keys=keys,
        alarms=alarms,
        locations=[_reported_location(frame) for frame in segments["warmup"][:devices]],
        namespaces=bases if namespaces > 1 else [],
    )


def _reported_location(frame: Frame) -> tuple[Any, ...]:
    from fleet.ingest.mqtt_link import InboundMessage
    from fleet.integrations.alarm_panel import status_fields
    from fleet.integrations.alarm_panel.codec import StatusReport
    from fleet.integrations.alarm_panel.prepare import PanelMessage, prepare

    message = prepare(InboundMessage(frame[0], frame[1], 0, 0, 0.0, 0), KEY, 1 << 20)
    assert isinstance(message, PanelMessage) and isinstance(message.report, StatusReport)
    return status_fields.location(message.report)


# --------------------------------------------------------------------------- the publisher process


@dataclass(frozen=True)
class PublishJob:
    segment: str
    start: int
    stop: int
    qos: int
    rate: float = 0.0  # messages per second, 0: as fast as paho can
    window: int = 0  # most messages published but not yet processed by the consumer, 0: no cap
    timeout: float = 120.0  # for the broker's acknowledgements, and for a window that stays full
    record: bool = False  # return each message's publish time


def _publisher_main(
    conn: Connection,
    processed: Any,
    address: BrokerAddress,
    client_id: str,
    segments: dict[str, list[Frame]],
) -> None:
    """Runs in its own process: publish the jobs it is sent, report timings, until "stop"."""
    connected = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
    # paho's own window of 20 unacknowledged QoS 1 publishes would pace the publisher by round
    # trips to the broker; the broker acknowledges at once, so let paho send without a window.
    client.max_inflight_messages_set(0)
    client.on_connect = lambda *_args: connected.set()
    if address.username:
        client.username_pw_set(address.username, address.password)
    try:
        client.connect(address.host, address.port, keepalive=60)
        client.loop_start()
        if not connected.wait(10):
            conn.send(("error", f"publisher could not connect to {address.host}:{address.port}"))
            return
        conn.send(("ready", os.getpid()))
        while True:
            command, job = conn.recv()
            if command == "stop":
                break
            conn.send(("done", _publish_all(client, segments[job.segment], job, processed)))
    finally:
        client.disconnect()
        client.loop_stop()
        conn.close()


def _publish_all(
    client: mqtt.Client, frames: list[Frame], job: PublishJob, processed: Any
) -> dict[str, Any]:
    cpu = time.process_time()
    infos = []
    times: list[float] = []
    blocked = 0.0
    first = time.time()
    for index, (topic, payload) in enumerate(frames[job.start : job.stop]):
        if job.rate > 0:
            # Evenly, as the traffic of many devices reaches a broker: never more than about
            # half a millisecond ahead of the schedule (bursts with gaps between them would
            # close Fleet's batches early, on its 2 ms idle flush, and make them small).
            ahead = first + index / job.rate - time.time()
            if ahead > PACE_SLACK_SECONDS:
                time.sleep(ahead)
        if job.window and index - processed.value >= job.window:
            waiting = time.monotonic()
            while index - processed.value >= job.window:
                if time.monotonic() - waiting > job.timeout:
                    break
                time.sleep(0.001)
            blocked += time.monotonic() - waiting
            if index - processed.value >= job.window:
                break  # the consumer stopped making progress: report what was sent
        if job.record:
            times.append(time.time())
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
        "failed": failed + (job.stop - job.start) - len(infos),
        "window_wait": blocked,
        "cpu": time.process_time() - cpu,
        "times": times if job.record else None,
    }


class Publisher:
    """The parent's handle on the publisher process. It gets every message once, at start; each
    job then publishes a slice of a segment."""

    def __init__(self, address: BrokerAddress, client_id: str, workload: Workload) -> None:
        context = process_context()
        self._conn, child = context.Pipe()
        # How many messages of the current job the consumer has processed (for --window).
        self.processed = context.Value("q", 0, lock=False)
        self._process = context.Process(
            target=_publisher_main,
            args=(child, self.processed, address, client_id, workload.segments),
            name="bench-publisher",
            daemon=True,
        )
        self._process.start()
        child.close()
        self.result: dict[str, Any] | None = None
        self.pid: int = self._process.pid or 0

    async def _reply(self, within: float) -> Any:
        if not await asyncio.to_thread(self._conn.poll, within):
            raise BenchError(f"the publisher process did not answer within {within:.0f} s")
        kind, value = self._conn.recv()
        if kind == "error":
            raise BenchError(value)
        return value

    async def ready(self, within: float = 60.0) -> None:
        await self._reply(within)

    def start(self, job: PublishJob) -> None:
        self.result = None
        self.processed.value = 0
        self._conn.send(("publish", job))

    def poll(self) -> bool:
        """Non-blocking: has the current job finished? (then `result` holds its timings)"""
        if self.result is None and self._conn.poll():
            self.result = self._conn.recv()[1]
        return self.result is not None

    async def finish(self, within: float) -> dict[str, Any]:
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


def discard_session(address: BrokerAddress, client_id: str) -> None:
    """Connect once with a clean session and `client_id`: the broker forgets that persistent
    session (it would otherwise keep queueing messages for it)."""
    connected = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
    client.on_connect = lambda *_args: connected.set()
    if address.username:
        client.username_pw_set(address.username, address.password)
    try:
        client.connect(address.host, address.port)
    except OSError:
        return
    client.loop_start()
    connected.wait(5)
    client.disconnect()
    client.loop_stop()


# --------------------------------------------------------------------------- consumer processes


class ConsumerProcess:
    """A consumer started with `target(conn, progress, **kwargs)`: it answers ("ready", info) once
    subscribed, then each (command, argument) the parent sends with one reply, until "stop".
    `progress` is a shared counter of the messages it has processed so far."""

    def __init__(self, target: Callable[..., None], name: str, **kwargs: Any) -> None:
        context = process_context()
        self._conn, child = context.Pipe()
        self.progress_value = context.Value("q", 0, lock=False)
        self._process = context.Process(
            target=target,
            args=(child, self.progress_value),
            kwargs=kwargs,
            name=name,
            daemon=False,  # Fleet may start a child of its own (FLEET_INGEST_RECEIVER=process)
        )
        self._process.start()
        child.close()
        self.pid: int = self._process.pid or 0
        self.info: Any = None

    async def _reply(self, within: float) -> Any:
        deadline = time.monotonic() + within
        while not await asyncio.to_thread(self._conn.poll, 0.2):
            if not self._process.is_alive():
                raise BenchError(f"the {self._process.name} process exited")
            if time.monotonic() > deadline:
                raise BenchError(f"the {self._process.name} process did not answer in {within} s")
        kind, value = self._conn.recv()
        if kind == "error":
            raise BenchError(f"{self._process.name}: {value}")
        return value

    async def ready(self, within: float = 60.0) -> Any:
        self.info = await self._reply(within)
        return self.info

    async def request(self, command: str, argument: Any = None, within: float = 60.0) -> Any:
        self._conn.send((command, argument))
        return await self._reply(within)

    def progress(self) -> int:
        return int(self.progress_value.value)

    async def stop(self, within: float = 30.0) -> Any:
        final = None
        with contextlib.suppress(BenchError, OSError, EOFError, BrokenPipeError):
            final = await self.request("stop", within=within)
        await asyncio.to_thread(self._process.join, 10)
        if self._process.is_alive():
            self._process.kill()
            await asyncio.to_thread(self._process.join)
        self._process.close()
        self._conn.close()
        return final


def child_loop(conn: Connection, handle: Callable[[str, Any], Any]) -> None:
    """A consumer's side of the protocol, for the synchronous ones: `handle` answers each
    command; "stop" ends the loop after its answer."""
    while True:
        try:
            command, argument = conn.recv()
        except (EOFError, OSError):
            return
        try:
            answer = handle(command, argument)
        except Exception as exc:  # reported to the parent, which fails the mode with it
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
            continue
        conn.send(("ok", answer))
        if command == "stop":
            return


# --------------------------------------------------------------------------- databases


def sibling_database(url: str, name: str) -> str:
    """`url` with its database replaced by `name`, the rest (host, a Unix socket's
    `?host=/var/run/postgresql`, user) kept."""
    return make_url(url).set(database=name).render_as_string(hide_password=False)


async def seed_devices(url: str, workload: Workload, *, migrate: bool) -> int:
    """The bench's accounts, one per namespace (the workload's topic bases), and every device
    with an empty status row, ids 1..N in the workload's order; returns the first account's
    id."""
    if migrate:
        await asyncio.to_thread(upgrade, url)
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            taken = await conn.scalar(sa.select(sa.func.count()).select_from(devices))
            if taken:
                raise BenchError(f"the bench database already holds {taken} devices")
            account_of: dict[str, int] = {}
            for base in workload.bases:
                account_of[base] = await accounts.create_account(conn, f"bench-{base}")
                await accounts.add_namespace(conn, account_of[base], "alarm_panel", base)
            rows = [
                {
                    "id": index + 1,
                    "account_id": account_of[workload.namespace_of(index)],
                    "kind": "alarm_panel",
                    "uid": mac,
                    "mac_address": mac,
                    "hostname": hostname,
                    "namespace": workload.namespace_of(index),
                    **dict(
                        zip(("country", "zone", "latitude", "longitude"), location, strict=True)
                    ),
                }
                for index, (hostname, mac, location) in enumerate(
                    zip(workload.hostnames, workload.macs, workload.locations, strict=True)
                )
            ]
            for start in range(0, len(rows), 5000):
                chunk = rows[start : start + 5000]
                await conn.execute(sa.insert(devices), chunk)
                await conn.execute(
                    sa.insert(device_status), [{"device_id": row["id"]} for row in chunk]
                )
            if conn.dialect.name == "postgresql":
                await conn.execute(
                    sa.text(
                        "SELECT setval(pg_get_serial_sequence('devices', 'id'), "
                        "(SELECT max(id) FROM devices))"
                    )
                )
        return account_of[workload.bases[0]]
    finally:
        await engine.dispose()


async def apply_directly(url: str, base: str, frames: list[Frame]) -> dict[str, int]:
    """Feed `frames` to a Fleet pipeline on `url` without a broker (its link never connects);
    returns what it accepted and rejected, by kind and reason. (`base` is only the default
    namespace: every namespace registered in the database is resolved.)"""
    from fleet.config import Settings
    from fleet.ingest.mqtt_link import InboundMessage
    from fleet.runtime import FleetRuntime

    runtime = FleetRuntime(
        Settings(
            database_url=url,
            mqtt_url="mqtt://127.0.0.1:9",
            alarm_topic_base=base,
            alarm_topic_filter=f"{base}/pb/d/+/+",
            alarm_hmac_key=KEY.hex(),
        )
    )
    try:
        for first in range(0, len(frames), 2000):
            now = time.time()
            await runtime.pipeline.process(
                [InboundMessage(t, p, 0, 0, now, 0) for t, p in frames[first : first + 2000]]
            )
        stats = runtime.pipeline.stats
        return {**stats.accepted, **{f"rejected:{k}": v for k, v in stats.rejected.items()}}
    finally:
        await runtime.dispose_engines()


class Databases:
    """One seeded template per database kind for the whole run (migrated, or cloned from
    `pg_template`), and a fresh copy of it for each mode, dropped after the mode. The "warm"
    template is the state Fleet leaves after the warm-up messages (for the naive baseline, which
    keeps nothing in memory and so needs no warm-up of its own)."""

    def __init__(self, pg_admin: str, pg_template: str | None, workload: Workload) -> None:
        self.pg_admin = pg_admin
        self.pg_template = pg_template
        self.workload = workload
        self.run_id = uuid.uuid4().hex[:8]
        self._dir = Path(tempfile.mkdtemp(prefix="fleet-bench-"))
        self._templates: dict[str, str] = {}
        self._clones: dict[str, str] = {}  # url -> database or file name
        self.account_id: int | None = None

    def _admin(self, sql: str) -> None:
        with psycopg.connect(self.pg_admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql)

    def _pg_url(self, name: str) -> str:
        return sibling_database(self.pg_admin, name)

    async def prepare(self, kind: str) -> None:
        if kind in self._templates:
            return
        if kind == "sqlite":
            path = self._dir / "template.db"
            account = await seed_devices(f"sqlite:///{path}", self.workload, migrate=True)
            self._templates[kind] = str(path)
        else:
            name = f"fleet_bench_tpl_{self.run_id}"
            template = f' TEMPLATE "{self.pg_template}"' if self.pg_template else ""
            await asyncio.to_thread(self._admin, f'CREATE DATABASE "{name}"{template}')
            self._templates[kind] = name
            account = await seed_devices(
                self._pg_url(name), self.workload, migrate=not self.pg_template
            )
        if self.account_id is not None and account != self.account_id:
            raise BenchError("the SQLite and PostgreSQL templates gave different account ids")
        self.account_id = account

    async def prepare_warm(self, kind: str) -> str:
        key = f"{kind}-warm"
        if key not in self._templates:
            url = await self.clone(kind)
            warmup = self.workload.segments["warmup"]
            applied = await apply_directly(url, self.workload.bases[0], warmup)
            if sum(applied.values()) != len(warmup) or any(k.startswith("rej") for k in applied):
                raise BenchError(f"the warm-up was not applied in full: {applied}")
            self._templates[key] = self._clones.pop(url)
        return self._templates[key]

    async def clone(self, kind: str, *, warm: bool = False) -> str:
        await self.prepare(kind)
        template = await self.prepare_warm(kind) if warm else self._templates[kind]
        name = f"fleet_bench_{self.run_id}_{uuid.uuid4().hex[:6]}"
        if kind == "sqlite":
            path = self._dir / f"{name}.db"
            await asyncio.to_thread(shutil.copyfile, template, path)
            url = f"sqlite:///{path}"
            self._clones[url] = str(path)
        else:
            await asyncio.to_thread(self._admin, f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
            url = self._pg_url(name)
            self._clones[url] = name
        return url

    def pg_name(self, url: str) -> str | None:
        return None if url.startswith("sqlite") else self._clones.get(url)

    def drop(self, url: str) -> None:
        name = self._clones.pop(url, None)
        if name is None:
            return
        if url.startswith("sqlite"):
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(OSError):
                    os.unlink(name + suffix)
            return
        with contextlib.suppress(psycopg.Error):
            self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def close(self) -> None:
        for url in list(self._clones):
            self.drop(url)
        for key in ("postgres", "postgres-warm"):
            name = self._templates.get(key)
            if name is not None:
                with contextlib.suppress(psycopg.Error):
                    self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        shutil.rmtree(self._dir, ignore_errors=True)


# --------------------------------------------------------------------------- process accounting


def _clock_ticks() -> int:
    try:
        return os.sysconf("SC_CLK_TCK")
    except (ValueError, OSError, AttributeError):
        return 100


TICKS = _clock_ticks()


def _stat_fields(pid: int) -> tuple[str, list[str]] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.find("(") + 1 : stat.rfind(")")], stat[stat.rfind(")") + 2 :].split()


def with_descendants(pids: list[int]) -> list[int]:
    """`pids` and every process below them (a Fleet ingest's MQTT receiver, say), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        fields = _stat_fields(int(entry)) if entry.isdigit() else None
        if fields is not None:
            children.setdefault(int(fields[1][1]), []).append(int(entry))  # [state, ppid, …]
    found, todo = [], list(pids)
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of `pid` (all its threads) so far, from /proc."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    rest = fields[1]
    return (int(rest[11]) + int(rest[12])) / TICKS


def peak_rss_mb(pid: int) -> float | None:
    """The process's peak resident set (VmHWM), in MiB."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return None


def reset_peak_rss(pid: int) -> None:
    """Start the process's VmHWM again from its current RSS (Linux: clear_refs 5)."""
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")


def _is_ours_postgres(pid: str, database: str | None) -> bool:
    """PostgreSQL's own processes and the backends serving `database`; other sessions'
    backends are someone else's load ("other" in the report)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (OSError, UnicodeDecodeError):
        return False
    client = "(" in cmdline or "[local]" in cmdline  # "postgres: 15/main: user db host(port) …"
    return not client or (database is not None and f" {database} " in cmdline)


@dataclass
class CpuSnapshot:
    groups: dict[str, dict[int, float]]  # label -> pid -> CPU seconds
    machine_total: float | None = None  # jiffies, from /proc/stat
    machine_idle: float | None = None


def cpu_snapshot(
    pids: dict[str, list[int]], database: str | None, broker_pid: int | None
) -> CpuSnapshot:
    """CPU seconds so far of the given processes (by label), of Mosquitto (`broker_pid`, or
    every process named mosquitto), of PostgreSQL serving `database`, and the machine's."""
    groups: dict[str, dict[int, float]] = {label: {} for label in pids}
    groups.setdefault("mosquitto", {})
    groups.setdefault("postgres", {})
    for label, members in pids.items():
        for pid in members:
            seconds = cpu_seconds(pid)
            if seconds is not None:
                groups[label][pid] = seconds
    if broker_pid is not None:
        seconds = cpu_seconds(broker_pid)
        if seconds is not None:
            groups["mosquitto"][broker_pid] = seconds
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is None:
            continue
        comm, rest = fields
        service: str | None = None
        if comm == "mosquitto" and broker_pid is None:
            service = "mosquitto"
        elif comm == "postgres" and _is_ours_postgres(entry, database):
            service = "postgres"
        if service is not None:
            groups[service][int(entry)] = (int(rest[11]) + int(rest[12])) / TICKS
    snap = CpuSnapshot(groups)
    with contextlib.suppress(OSError, IndexError, ValueError):
        values = [float(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        snap.machine_total = sum(values[:8])
        snap.machine_idle = values[3] + values[4]
    return snap


def cpu_delta(before: CpuSnapshot, after: CpuSnapshot) -> dict[str, float]:
    """CPU seconds per label between two snapshots; a process that started in between counts
    whole, one that ended is left out. Adds the machine's busy seconds and share, and "other":
    what the rest of the machine used meanwhile."""
    out: dict[str, float] = {}
    for label, members in after.groups.items():
        used = 0.0
        for pid, seconds in members.items():
            used += seconds - before.groups.get(label, {}).get(pid, 0.0)
        out[label] = round(used, 2)
    if after.machine_total is not None and before.machine_total is not None:
        total = after.machine_total - before.machine_total
        idle = (after.machine_idle or 0.0) - (before.machine_idle or 0.0)
        if total > 0:
            busy = (total - idle) / TICKS
            out["machine_busy_pct"] = round(100 * (1 - idle / total), 1)
            out["machine_busy_s"] = round(busy, 2)
            out["other"] = round(max(0.0, busy - sum(out[label] for label in after.groups)), 2)
    return out
