"""Event-stream latency: an alarm published on MQTT → its `alarm.raised` on open WebSockets.

    .venv/bin/python -m bench.event_latency                      # 1,000 clients, 50 alarms, SQLite
    .venv/bin/python -m bench.event_latency --db postgres --clients 1000 --alarms 100

One Fleet process (a real `FleetRuntime`: MqttLink + IngestPipeline + EventHub, and the HTTP API
on uvicorn, all on 127.0.0.1) on Mosquitto and a fresh SQLite or PostgreSQL database. `--clients`
WebSocket clients, spread over `--client-procs` processes so that reading them does not compete
with Fleet's event loop, connect to `/api/v1/events/ws` with the account's API key. A simulated
panel registers, then raises and clears an alarm `--alarms` times, one at a time: each raise is
timed from just before `publish()` to the moment each client's `recv()` returns the event
(CLOCK_MONOTONIC, shared by the processes of one machine). It reports p50/p90/p99/max over every
(alarm, client) pair, and how many deliveries were missing when the run's deadline hit.

Loopback only, bounded (at most 5,000 clients; every wait has a deadline; `--deadline` caps the
whole run), and it cleans up after itself (database dropped, broker session discarded).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import platform
import random
import resource
import shutil
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import sqlalchemy as sa
import uvicorn
from paho.mqtt.enums import CallbackAPIVersion

from bench.common import sibling_database
from fleet.api import ApiContext, build_api
from fleet.config import Settings
from fleet.ingest.mqtt_link import parse_mqtt_url
from fleet.runtime import FleetRuntime
from fleet.sim.alarm_panel import SimulatedPanel
from fleet.store import accounts
from fleet.store.migrate import upgrade
from fleet.store.tables import devices

KEY = bytes.fromhex("6b" * 32)  # the bench's own HMAC key, shared by its panel and its ingest
MAX_CLIENTS = 5000
CONNECT_CONCURRENCY = 100
DEFAULT_PG_ADMIN = os.environ.get(
    "FLEET_BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/test"
)


@dataclass
class Options:
    clients: int = 1000
    alarms: int = 50
    db: str = "sqlite"  # or postgres
    broker: str = "mqtt://127.0.0.1:1883"
    pg_admin: str = DEFAULT_PG_ADMIN
    client_procs: int = 2
    batch_wait_ms: float = 50.0  # FLEET_INGEST_BATCH_WAIT_MS, the default
    deflate: bool = True  # clients offer permessage-deflate, as browsers do
    deadline: float = 300.0  # seconds for the whole run
    per_alarm_timeout: float = 10.0
    quiet: bool = False


@dataclass
class Result:
    clients: int
    alarms: int
    db: str
    deliveries: int
    missing: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    connect_seconds: float
    machine: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- client processes


def _client_main(conn: Connection, url: str, key: str, count: int, deflate: bool) -> None:
    """Runs in its own process: `count` WebSocket clients; reports each alarm's arrival times."""
    try:
        asyncio.run(_clients(conn, url, key, count, deflate))
    except Exception as exc:  # reported, not raised: the parent decides
        with contextlib.suppress(Exception):
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


async def _clients(conn: Connection, url: str, key: str, count: int, deflate: bool) -> None:
    from websockets.asyncio.client import connect

    arrivals: dict[int, list[float]] = defaultdict(list)  # alarm id -> monotonic arrival times
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    ready = 0
    all_ready = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def client() -> None:
        nonlocal ready
        async with gate:
            ws = await connect(
                url,
                additional_headers={"Authorization": f"Bearer {key}"},
                open_timeout=30,
                max_size=2**20,
                compression="deflate" if deflate else None,
            )
        async with ws:
            first = json.loads(await ws.recv())
            assert first.get("control") == "ready", first
            ready += 1
            if ready == count:
                all_ready.set()
            async for raw in ws:
                now = time.monotonic()
                message = json.loads(raw)
                if message.get("type") == "alarm.raised":
                    alarm_id = int(message["data"]["id"])
                    arrivals[alarm_id].append(now)
                    if len(arrivals[alarm_id]) == count:
                        conn.send(("alarm", alarm_id))

    tasks = [asyncio.create_task(client()) for _ in range(count)]
    waiter = asyncio.create_task(all_ready.wait())
    done, _ = await asyncio.wait({waiter, *tasks}, return_when=asyncio.FIRST_COMPLETED)
    if waiter not in done:
        failed = next(t for t in done if t.exception() is not None)
        raise RuntimeError(f"a client failed to connect: {failed.exception()}")
    conn.send(("ready", count))
    # Wait for "stop" without blocking the loop, then hand over the arrival times.
    await loop.run_in_executor(None, conn.recv)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    conn.send(("arrivals", dict(arrivals)))


# --------------------------------------------------------------------------- the Fleet side


def _database(opts: Options) -> tuple[str, Any]:
    """A fresh, migrated database and a function that removes it."""
    if opts.db == "sqlite":
        folder = tempfile.mkdtemp(prefix="fleet-bench-events-")
        url = f"sqlite:///{folder}/fleet.db"
        upgrade(url)
        return url, lambda: shutil.rmtree(folder, ignore_errors=True)
    name = f"fleet_bench_ev_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(opts.pg_admin, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = sibling_database(opts.pg_admin, name)
    upgrade(url)

    def drop() -> None:
        with psycopg.connect(opts.pg_admin, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return url, drop


def _discard_session(host: str, port: int, client_id: str) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
    with contextlib.suppress(OSError):
        client.connect(host, port)
        client.loop_start()
        time.sleep(0.05)
        client.disconnect()
        client.loop_stop()


def _raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


async def run(opts: Options) -> Result:
    if not 1 <= opts.clients <= MAX_CLIENTS:
        raise SystemExit(f"--clients must be between 1 and {MAX_CLIENTS}")
    broker = parse_mqtt_url(opts.broker)
    if broker.host not in {"127.0.0.1", "localhost", "::1"}:
        raise SystemExit("the benchmark runs on loopback only: --broker mqtt://127.0.0.1:PORT")
    try:
        with socket.create_connection((broker.host, broker.port), timeout=2):
            pass
    except OSError as exc:
        raise SystemExit(f"no MQTT broker at {broker.host}:{broker.port}: {exc}") from exc
    procs = max(1, min(opts.client_procs, opts.clients))
    _raise_fd_limit(opts.clients * 2 + 512)
    deadline = time.monotonic() + opts.deadline
    url, drop_database = await asyncio.to_thread(_database, opts)
    base = f"bev{uuid.uuid4().hex[:8]}"
    client_id = f"fleet-bench-events-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        database_url=url,
        mqtt_url=opts.broker,
        mqtt_client_id=client_id,
        alarm_topic_base=base,
        alarm_topic_filter=f"{base}/pb/d/+/+",
        alarm_hmac_key=KEY.hex(),
        ingest_batch_wait_ms=opts.batch_wait_ms,
        events_client_buffer=10_000,
    )
    runtime = FleetRuntime(settings)
    server: uvicorn.Server | None = None
    serving: asyncio.Task[None] | None = None
    publisher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{client_id}-pub")
    workers: list[tuple[Any, Connection]] = []
    try:
        async with runtime.engine.begin() as conn:
            account_id = await accounts.create_account(conn, "bench")
            key = await accounts.issue_key(conn, account_id)
            await accounts.add_namespace(conn, account_id, "alarm_panel", base)
        await runtime.start(migrate=False)
        app = build_api(
            ApiContext(
                settings=settings,
                engine=runtime.engine,
                commands=runtime.commands,
                event_hub=runtime.event_hub,
            )
        )
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            lifespan="off",
            log_level="warning",
            ws="websockets-sansio",
            backlog=4096,
            timeout_graceful_shutdown=2,
        )
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve())
        while not server.started:
            if serving.done() or time.monotonic() > deadline:
                raise SystemExit("the HTTP server did not start")
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        ws_url = f"ws://127.0.0.1:{port}/api/v1/events/ws?cursor=0"

        # The clients, in processes of their own.
        started = time.monotonic()
        spawn = multiprocessing.get_context("spawn")
        for index in range(procs):
            share = opts.clients // procs + (1 if index < opts.clients % procs else 0)
            ours, theirs = spawn.Pipe()
            worker = spawn.Process(
                target=_client_main,
                args=(theirs, ws_url, key, share, opts.deflate),
                daemon=True,
            )
            worker.start()
            theirs.close()
            workers.append((worker, ours))
        for _, pipe in workers:
            kind, value = await _receive(pipe, deadline)
            if kind != "ready":
                raise SystemExit(f"clients did not connect: {value}")
        connect_seconds = time.monotonic() - started
        _say(opts, f"{opts.clients} clients connected in {connect_seconds:.1f} s")

        # One panel registers, then raises and clears its alarm, one alarm at a time.
        publisher.connect(broker.host, broker.port)
        publisher.loop_start()
        panel = SimulatedPanel(base=base, key=KEY, rng=random.Random(7))
        topic, payload = panel.login(time.time())
        publisher.publish(topic, payload, 1).wait_for_publish(5)
        while sum(runtime.pipeline.stats.accepted.values()) < 1:
            if time.monotonic() > deadline:
                raise SystemExit("the panel never registered")
            await asyncio.sleep(0.01)
        async with runtime.engine.connect() as conn:  # as if the device-id sync had been applied
            panel.device_db_id = int((await conn.execute(sa.select(devices.c.id))).scalar_one())
        published: dict[int, float] = {}  # alarm id -> monotonic publish time
        for _ in range(opts.alarms):
            if time.monotonic() > deadline:
                break
            topic, payload = panel.alarm(time.time(), "PANIC1", active=True)
            t0 = time.monotonic()
            publisher.publish(topic, payload, 1)
            earlier = set(published)
            for _, pipe in workers:
                # Each process says when all its clients have this alarm (a late message about
                # an earlier alarm is skipped).
                while True:
                    kind, value = await _receive(pipe, min(deadline, t0 + opts.per_alarm_timeout))
                    if kind != "alarm" or int(value) not in earlier:
                        break
                if kind == "alarm":
                    published.setdefault(int(value), t0)
            topic, payload = panel.alarm(time.time(), "PANIC1", active=False)
            publisher.publish(topic, payload, 1).wait_for_publish(5)
            await asyncio.sleep(0.05)

        # Collect.
        latencies: list[float] = []
        delivered = 0
        for _, pipe in workers:
            pipe.send("stop")
        for _, pipe in workers:
            kind, value = await _receive(pipe, time.monotonic() + 30)
            if kind != "arrivals":
                continue
            for alarm_id, times in value.items():
                if alarm_id in published:
                    latencies.extend(t - published[alarm_id] for t in times)
                    delivered += len(times)
        latencies.sort()
        expected = opts.clients * opts.alarms
        return Result(
            clients=opts.clients,
            alarms=opts.alarms,
            db=opts.db,
            deliveries=delivered,
            missing=max(0, expected - delivered),
            p50_ms=_percentile(latencies, 0.50) * 1000,
            p90_ms=_percentile(latencies, 0.90) * 1000,
            p99_ms=_percentile(latencies, 0.99) * 1000,
            max_ms=(latencies[-1] if latencies else float("nan")) * 1000,
            mean_ms=(statistics.fmean(latencies) if latencies else float("nan")) * 1000,
            connect_seconds=round(connect_seconds, 2),
            machine={
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "platform": platform.platform(),
                "client_procs": procs,
                "ingest_batch_wait_ms": opts.batch_wait_ms,
                "permessage_deflate": opts.deflate,
            },
        )
    finally:
        for worker, pipe in workers:
            with contextlib.suppress(OSError):
                pipe.close()
            worker.join(5)
            if worker.is_alive():
                worker.kill()
        with contextlib.suppress(Exception):
            publisher.disconnect()
            publisher.loop_stop()
        if server is not None and serving is not None:
            server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(serving, 10)
        await runtime.stop()
        await asyncio.to_thread(_discard_session, broker.host, broker.port, client_id)
        await asyncio.to_thread(drop_database)


async def _receive(pipe: Connection, until: float) -> tuple[str, Any]:
    """The next message of a client process, or ("timeout", None) at `until` (monotonic)."""
    while True:
        if pipe.poll():
            try:
                message: tuple[str, Any] = pipe.recv()
            except EOFError:
                return ("error", "client process ended")
            if message[0] == "error":
                raise SystemExit(f"client process: {message[1]}")
            return message
        if time.monotonic() > until:
            return ("timeout", None)
        await asyncio.sleep(0.001)


def _say(opts: Options, text: str) -> None:
    if not opts.quiet:
        print(text, file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=Options.clients)
    parser.add_argument("--alarms", type=int, default=Options.alarms)
    parser.add_argument("--db", choices=["sqlite", "postgres"], default=Options.db)
    parser.add_argument("--broker", default=Options.broker)
    parser.add_argument("--pg-admin", default=DEFAULT_PG_ADMIN)
    parser.add_argument("--client-procs", type=int, default=Options.client_procs)
    parser.add_argument(
        "--batch-wait-ms",
        type=float,
        default=Options.batch_wait_ms,
        help="FLEET_INGEST_BATCH_WAIT_MS of the Fleet under test (default: Fleet's default)",
    )
    parser.add_argument(
        "--no-deflate",
        action="store_true",
        help="clients do not offer permessage-deflate (browsers do; Fleet accepts it)",
    )
    parser.add_argument("--deadline", type=float, default=Options.deadline)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    opts = Options(
        clients=args.clients,
        alarms=args.alarms,
        db=args.db,
        broker=args.broker,
        pg_admin=args.pg_admin,
        client_procs=args.client_procs,
        batch_wait_ms=args.batch_wait_ms,
        deflate=not args.no_deflate,
        deadline=args.deadline,
    )
    result = asyncio.run(run(opts))
    print(
        f"{result.db}: {result.clients} clients x {result.alarms} alarms, "
        f"{result.deliveries} deliveries ({result.missing} missing): "
        f"p50 {result.p50_ms:.1f} ms, p90 {result.p90_ms:.1f} ms, p99 {result.p99_ms:.1f} ms, "
        f"max {result.max_ms:.1f} ms (mean {result.mean_ms:.1f} ms)"
    )
    if args.json:
        args.json.write_text(json.dumps(asdict(result), indent=2))
    return 1 if result.missing else 0


if __name__ == "__main__":
    sys.exit(main())
