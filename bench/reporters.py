"""Reporters at fleet scale: N devices reporting every `period` seconds to a real Fleet.

    .venv/bin/python -m bench.reporters --devices 100000 --db sqlite --json out.json

A fresh database; Fleet as `fleet serve --no-ingest` runs it (create_app under uvicorn on
127.0.0.1, its jobs firing timers), in a process of its own; load processes with httpx clients,
bounded in concurrency, sending what deployed reporters send (GET with the token in the query,
or POST with a form `report`; each device always the same way). It measures:

1. report requests per second handled: a first pass that registers every device, then a
   steady pass where every device reports again (what 100,000 devices with 60 s periods need
   is 100,000 / 60 = 1,667/s);
2. timer lateness (fired at - due, from the StateChange times): with every device armed, 1% of
   the timers moved to fall due over `--fire-window` s; then all of them (every device goes
   silent at once, spread over one period);
3. database bytes: per device after registration, growth per device per day while reporting
   (reports update rows in place; history is written only on a change), and per Offline
   transition (history, event, alarm).

Nothing here is asserted; tests/liveness/test_bench_smoke.py runs it tiny to keep it working.
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
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import psycopg
import sqlalchemy as sa

from bench.common import sibling_database
from fleet.config import Settings
from fleet.store import accounts
from fleet.store.engine import create_sync_engine
from fleet.store.migrate import upgrade
from fleet.store.tables_liveness import liveness, liveness_history

DEFAULT_PG_ADMIN = os.environ.get(
    "FLEET_BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/test"
)
REPORT = json.dumps(
    {
        "connection_used": {"SSID": "bench"},
        "connections": [{"connection": {"SSID": "bench"}, "stats": {"power_dbs": -61}}],
    }
)


@dataclass
class Figures:
    database: str
    devices: int
    period_seconds: float
    concurrency: int
    loaders: int
    client: str = "httpx"
    register_rps: float = 0.0
    register_cpu_us: float = 0.0  # Fleet's process CPU time per request
    steady_rps: float = 0.0
    steady_cpu_us: float = 0.0
    steady_mean_batch: float = 0.0  # reports per transaction (fleet_report_batch_size)
    steady_capacity_per_core_rps: float = 0.0  # 1 s / steady_cpu_us: a figure that a busy
    # machine (other processes taking CPU from Fleet) does not distort
    steady_p50_ms: float = 0.0
    steady_p99_ms: float = 0.0
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    needed_rps: float = 0.0
    few_fired: int = 0
    few_lateness_p50_ms: float = 0.0
    few_lateness_p99_ms: float = 0.0
    few_lateness_max_ms: float = 0.0
    all_fired: int = 0
    all_lateness_p50_ms: float = 0.0
    all_lateness_p99_ms: float = 0.0
    all_lateness_max_ms: float = 0.0
    bytes_per_device: float = 0.0
    steady_growth_bytes_per_device_day: float = 0.0
    bytes_per_offline_transition: float = 0.0
    machine: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- the database


class Database:
    def __init__(self, kind: str, pg_admin: str, workdir: Path) -> None:
        self.kind = kind
        self.pg_admin = pg_admin
        self.name = f"fleet_bench_{uuid.uuid4().hex[:8]}"
        self.path = workdir / "bench.db"
        if kind == "sqlite":
            self.url = f"sqlite:///{self.path}"
        else:
            self.url = sibling_database(pg_admin, self.name)

    def create(self) -> None:
        if self.kind == "postgres":
            with psycopg.connect(self.pg_admin, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{self.name}"')
        upgrade(self.url)

    def drop(self) -> None:
        if self.kind == "postgres":
            with psycopg.connect(self.pg_admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def size(self) -> int:
        engine = create_sync_engine(self.url)
        try:
            with engine.connect() as conn:
                if self.kind == "sqlite":
                    conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
                    pages = conn.exec_driver_sql("PRAGMA page_count").scalar_one()
                    free = conn.exec_driver_sql("PRAGMA freelist_count").scalar_one()
                    page = conn.exec_driver_sql("PRAGMA page_size").scalar_one()
                    return int((pages - free) * page)
                return int(
                    conn.exec_driver_sql("SELECT pg_database_size(current_database())").scalar_one()
                )
        finally:
            engine.dispose()

    def execute(self, statement: Any, params: Any = None) -> Any:
        engine = create_sync_engine(self.url)
        try:
            with engine.begin() as conn:
                result = conn.execute(statement, params) if params else conn.execute(statement)
                return result.all() if result.returns_rows else result.rowcount
        finally:
            engine.dispose()

    def vacuum(self) -> None:
        if self.kind == "postgres":
            with psycopg.connect(self.url, autocommit=True) as conn:
                conn.execute("VACUUM ANALYZE")

    @contextlib.contextmanager
    def autovacuum(self, every: float = 10.0) -> Iterator[None]:
        """VACUUM ANALYZE now and then, as PostgreSQL's autovacuum would (test servers often
        run without it: plans made on empty-table statistics are slow, dead rows pile up)."""
        if self.kind != "postgres":
            yield
            return
        stop = threading.Event()

        def run() -> None:
            while not stop.wait(every):
                with (
                    contextlib.suppress(psycopg.Error),
                    psycopg.connect(self.url, autocommit=True) as conn,
                ):
                    conn.execute("VACUUM ANALYZE")

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()


async def _account(url: str) -> str:
    from fleet.store.engine import create_engine

    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            account_id = await accounts.create_account(conn, "bench")
            return await accounts.issue_key(conn, account_id, kind="ingest")
    finally:
        await engine.dispose()


# --------------------------------------------------------------------------- the server process


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far, from /proc (Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _batches(base: str) -> tuple[float, float]:
    """(reports, transactions) so far, from Fleet's /metrics."""
    text = httpx.get(f"{base}/metrics", timeout=30).text
    values = {}
    for line in text.splitlines():
        for name in ("fleet_report_batch_size_sum", "fleet_report_batch_size_count"):
            if line.startswith(name + " "):
                values[name] = float(line.split()[1])
    return values.get("fleet_report_batch_size_sum", 0.0), values.get(
        "fleet_report_batch_size_count", 0.0
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _serve(url: str, port: int, broker_port: int) -> None:
    """Fleet as `fleet serve --no-ingest` runs it, in this (child) process."""
    import logging

    import uvicorn

    from fleet.app import create_app

    logging.basicConfig(level=logging.WARNING)
    settings = Settings(
        database_url=url,
        mqtt_url="embedded",
        mqtt_listen=f"127.0.0.1:{broker_port}",
        http_listen=f"127.0.0.1:{port}",
        log_level="WARNING",
    )
    app = create_app(settings, ingest=False, migrate=False)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


async def _wait_up(base: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=base) as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get("/healthz")).status_code == 200:
                    return
            await asyncio.sleep(0.2)
    raise RuntimeError("Fleet did not come up")


# --------------------------------------------------------------------------- the load processes


def _loader_main(
    pipe: Connection,
    base: str,
    token: str,
    names: list[str],
    concurrency: int,
    post: float,
    period: str,
    client_kind: str,
) -> None:
    """Send one report per name, `concurrency` at a time, each time the parent says "go"."""
    pipe.send("ready")
    while True:
        command = pipe.recv()
        if command == "stop":
            return
        result = asyncio.run(
            _load(base, token, names, concurrency, post, period, client_kind, int(command))
        )
        pipe.send(result)


class RawClient:
    """A minimal HTTP/1.1 keep-alive client (`--client raw`): a load generator that leaves the
    CPU to Fleet, where httpx needs several times Fleet's own CPU per request."""

    def __init__(self, base: str) -> None:
        address = base.split("//", 1)[1]
        self.host, port = address.rsplit(":", 1)
        self.port = int(port)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, target: str, headers: dict[str, str], body: bytes) -> int:
        if self.reader is None or self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        lines = [
            f"{method} {target} HTTP/1.1",
            f"Host: {self.host}",
            f"Content-Length: {len(body)}",
        ]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        status = int((await self.reader.readline()).split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def _load(
    base: str,
    token: str,
    names: list[str],
    concurrency: int,
    post: float,
    period: str,
    client_kind: str,
    seed: int,
) -> dict[str, Any]:
    rng = random.Random(seed)
    latencies: list[float] = []
    errors = 0
    kinds: Counter[str] = Counter()
    queue = list(names)
    rng.shuffle(queue)
    form = urlencode({"report": REPORT}).encode()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60.0) as client:

        async def send(raw: RawClient, params: dict[str, str], as_post: bool) -> int:
            if client_kind == "raw":
                if as_post:
                    return await raw.request(
                        "POST",
                        f"/report/ongoing?{urlencode(params)}",
                        {"Authorization": f"Bearer {token}",
                         "Content-Type": "application/x-www-form-urlencoded"},
                        form,
                    )  # fmt: skip
                target = f"/report/ongoing?{urlencode({**params, 'token': token})}"
                return await raw.request("GET", target, {}, b"")
            if as_post:
                response = await client.post(
                    "/report/ongoing",
                    params=params,
                    data={"report": REPORT},
                    headers={"Authorization": f"Bearer {token}"},
                )
            else:
                response = await client.get("/report/ongoing", params={**params, "token": token})
            return response.status_code

        async def worker() -> None:
            nonlocal errors
            raw = RawClient(base)
            try:
                while queue:
                    name = queue.pop()
                    params = {"device_id": name, "connection": f"\tssid=net-{name[-2:]}",
                              "period": period}  # fmt: skip
                    started = time.perf_counter()
                    as_post = zlib.crc32(name.encode()) % 1000 < post * 1000
                    try:
                        status = await send(raw, params, as_post)
                        if status != 200:
                            errors += 1
                            kinds[f"HTTP {status}"] += 1
                    except (httpx.HTTPError, OSError, ValueError, IndexError) as exc:
                        errors += 1
                        kinds[type(exc).__name__] += 1
                        raw.close()
                        raw = RawClient(base)
                    latencies.append(time.perf_counter() - started)
            finally:
                raw.close()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {
        "count": len(names),
        "elapsed": elapsed,
        "latencies": latencies,
        "errors": errors,
        "kinds": dict(kinds),
    }


class Loaders:
    def __init__(self, count: int, base: str, token: str, names: list[str], concurrency: int,
                 post: float, period: float, client_kind: str) -> None:  # fmt: skip
        context = multiprocessing.get_context("spawn")
        self.error_kinds: Counter[str] = Counter()
        self.pipes: list[Connection] = []
        self.processes = []
        per = max(1, concurrency // count)
        for index in range(count):
            parent, child = context.Pipe()
            share = names[index::count]
            process = context.Process(
                target=_loader_main,
                args=(child, base, token, share, per, post, str(period), client_kind),
                daemon=True,
            )
            process.start()
            self.pipes.append(parent)
            self.processes.append(process)
        for pipe in self.pipes:  # imported and waiting: start-up is not in the timings
            assert pipe.recv() == "ready"

    def run(self, seed: int) -> tuple[float, list[float], int]:
        """Every loader sends its share once; returns (requests/s, latencies, errors)."""
        started = time.perf_counter()
        for pipe in self.pipes:
            pipe.send(seed)
        results = [pipe.recv() for pipe in self.pipes]
        elapsed = time.perf_counter() - started
        count = sum(r["count"] for r in results)
        latencies = [lat for r in results for lat in r["latencies"]]
        for result in results:
            self.error_kinds.update(result["kinds"])  # adds the counts
        return count / elapsed, latencies, sum(r["errors"] for r in results)

    def stop(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send("stop")
        for process in self.processes:
            process.join(10)


# --------------------------------------------------------------------------- timer lateness


def _percentile(values: Sequence[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _arm(db: Database, ids: list[int], start: datetime, window: float) -> dict[int, datetime]:
    """Move these devices' timers so they fall due spread evenly over `window` from `start`."""
    rng = random.Random(1)
    due = {device_id: start + timedelta(seconds=rng.uniform(0, window)) for device_id in ids}
    statement = (
        sa.update(liveness)
        .where(liveness.c.device_id == sa.bindparam("b_id"))
        .values(due_at=sa.bindparam("due"))
    )
    params = [{"b_id": device_id, "due": when} for device_id, when in due.items()]
    for chunk in range(0, len(params), 20_000):
        db.execute(statement, params[chunk : chunk + 20_000])
    return due


def _lateness(db: Database, due: dict[int, datetime], since_id: int, timeout: float) -> list[float]:
    """Wait until every timer in `due` fired (or timeout); returns fired - due, in seconds."""
    deadline = time.monotonic() + timeout
    fired: dict[int, datetime] = {}
    engine = create_sync_engine(db.url)
    try:
        while time.monotonic() < deadline and len(fired) < len(due):
            time.sleep(0.2)
            with engine.connect() as conn:  # only what is new since the last look
                rows = conn.execute(
                    sa.select(
                        liveness_history.c.id, liveness_history.c.device_id, liveness_history.c.at
                    ).where(liveness_history.c.id > since_id, liveness_history.c.state == "Offline")
                ).all()
            for row in rows:
                since_id = max(since_id, row.id)
                if row.device_id in due:
                    fired[row.device_id] = row.at
    finally:
        engine.dispose()
    return [(fired[i] - due[i]).total_seconds() for i in fired]


def _last_history_id(db: Database) -> int:
    rows = db.execute(sa.select(sa.func.coalesce(sa.func.max(liveness_history.c.id), 0)))
    return int(rows[0][0])


# --------------------------------------------------------------------------- the run


def run(args: argparse.Namespace, database: str, log: Any) -> Figures:
    workdir = Path(tempfile.mkdtemp(prefix="fleet-bench-reporters-"))
    db = Database(database, args.pg_admin, workdir)
    figures = Figures(
        database=database,
        devices=args.devices,
        period_seconds=args.period,
        concurrency=args.concurrency,
        loaders=args.loaders,
        client=args.client,
        needed_rps=args.devices / args.period,
        machine={"python": sys.version.split()[0], "cpus": os.cpu_count(),
                 "platform": platform.platform()},
    )  # fmt: skip
    db.create()
    server = None
    loaders = None
    autovacuum = contextlib.ExitStack()
    try:
        token = asyncio.run(_account(db.url))
        port = _free_port()
        context = multiprocessing.get_context("spawn")
        server = context.Process(target=_serve, args=(db.url, port, _free_port()), daemon=True)
        server.start()
        base = f"http://127.0.0.1:{port}"
        asyncio.run(_wait_up(base))
        names = [f"probe-{n:06d}" for n in range(args.devices)]
        loaders = Loaders(
            args.loaders,
            base,
            token,
            names,
            args.concurrency,
            args.post_fraction,
            args.sent_period,
            args.client,
        )
        empty = db.size()

        assert server.pid is not None
        cpu = _cpu_seconds(server.pid)
        autovacuum.enter_context(db.autovacuum())
        rps, _, errors = loaders.run(seed=1)
        figures.register_rps = rps
        figures.register_cpu_us = (_cpu_seconds(server.pid) - cpu) / args.devices * 1e6
        log(f"[{database}] registered {args.devices} devices: {rps:,.0f} requests/s, "
            f"{figures.register_cpu_us:.0f} us of Fleet's CPU each")  # fmt: skip
        db.vacuum()
        registered = db.size()
        figures.bytes_per_device = (registered - empty) / args.devices

        started = time.monotonic()
        cpu = _cpu_seconds(server.pid)
        reports, transactions = _batches(base)
        rps, latencies, more_errors = loaders.run(seed=2)
        more_reports, more_transactions = _batches(base)
        figures.steady_mean_batch = (more_reports - reports) / max(
            1.0, more_transactions - transactions
        )
        steady_seconds = time.monotonic() - started
        figures.steady_rps = rps
        figures.steady_cpu_us = (_cpu_seconds(server.pid) - cpu) / args.devices * 1e6
        figures.steady_capacity_per_core_rps = 1e6 / figures.steady_cpu_us
        figures.steady_p50_ms = statistics.median(latencies) * 1000
        figures.steady_p99_ms = _percentile(latencies, 0.99) * 1000
        figures.errors = errors + more_errors
        figures.error_kinds = dict(loaders.error_kinds)
        after_steady = db.size()
        figures.steady_growth_bytes_per_device_day = (
            (after_steady - registered) / args.devices / steady_seconds * 86400
        )
        # More passes of the same reports: on PostgreSQL the first one leaves a second version
        # of every row (MVCC) that VACUUM then lets the next ones reuse, so the growth that
        # lasts is that of the last pass.
        for extra in range(args.steady_passes - 1):
            before_pass = db.size()
            started = time.monotonic()
            loaders.run(seed=3 + extra)
            figures.steady_growth_bytes_per_device_day = (
                (db.size() - before_pass) / args.devices / (time.monotonic() - started) * 86400
            )
        log(
            f"[{database}] steady reports: {rps:,.0f} requests/s, p99 "
            f"{figures.steady_p99_ms:.1f} ms, {figures.steady_mean_batch:.0f} per transaction, "
            f"{figures.steady_cpu_us:.0f} us of Fleet's CPU each "
            f"= {figures.steady_capacity_per_core_rps:,.0f}/s per core "
            f"(needed: {figures.needed_rps:,.0f}/s)"
        )

        ids = [int(row[0]) for row in db.execute(sa.select(liveness.c.device_id))]
        rng = random.Random(3)
        # 1. A few timers fall due while every other device stays armed.
        few = rng.sample(ids, max(1, len(ids) // 100))
        start = datetime.now(UTC) + timedelta(seconds=args.arm_delay)
        since = _last_history_id(db)
        due = _arm(db, few, start, args.fire_window)
        late = _lateness(db, due, since, args.fire_window + 30)
        figures.few_fired = len(late)
        figures.few_lateness_p50_ms = _percentile(late, 0.5) * 1000
        figures.few_lateness_p99_ms = _percentile(late, 0.99) * 1000
        figures.few_lateness_max_ms = max(late, default=0) * 1000
        log(f"[{database}] {len(late)} of {len(ids)} armed fired: p99 late "
            f"{figures.few_lateness_p99_ms:.0f} ms")  # fmt: skip
        # 2. Every device goes silent: all timers fall due over one period.
        before_fire = db.size()
        rest = [i for i in ids if i not in due]
        start = datetime.now(UTC) + timedelta(seconds=args.arm_delay)
        since = _last_history_id(db)
        due = _arm(db, rest, start, args.all_window)
        late = _lateness(db, due, since, args.all_window + 60)
        figures.all_fired = len(late)
        figures.all_lateness_p50_ms = _percentile(late, 0.5) * 1000
        figures.all_lateness_p99_ms = _percentile(late, 0.99) * 1000
        figures.all_lateness_max_ms = max(late, default=0) * 1000
        figures.bytes_per_offline_transition = (db.size() - before_fire) / max(1, len(late))
        log(f"[{database}] all {len(late)} fired over {args.all_window:.0f} s: p99 late "
            f"{figures.all_lateness_p99_ms:.0f} ms")  # fmt: skip
    finally:
        autovacuum.close()
        if loaders is not None:
            loaders.stop()
        if server is not None:
            server.terminate()
            server.join(15)
        db.drop()
        shutil.rmtree(workdir, ignore_errors=True)
    return figures


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--period", type=float, default=60.0, help="the devices' report period")
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="sqlite")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight, total")
    parser.add_argument("--loaders", type=int, default=2, help="load-generating processes")
    parser.add_argument("--client", choices=["httpx", "raw"], default="httpx",
                        help="httpx, or a minimal keep-alive client that leaves the CPU to "
                        "Fleet (on a small machine httpx saturates before Fleet does)")  # fmt: skip
    parser.add_argument("--post-fraction", type=float, default=0.5,
                        help="share of reports sent as POST with a form report")  # fmt: skip
    parser.add_argument("--fire-window", type=float, default=10.0,
                        help="seconds over which the 1%% of timers fall due")  # fmt: skip
    parser.add_argument("--all-window", type=float, default=60.0,
                        help="seconds over which every timer falls due")  # fmt: skip
    parser.add_argument("--sent-period", type=float, default=3600.0,
                        help="the period the devices announce in the load passes: long, so that "
                        "no timer fires while they run (capacity is compared with "
                        "devices / --period; the lateness runs re-arm the timers)")  # fmt: skip
    parser.add_argument("--steady-passes", type=int, default=1,
                        help="steady passes; the growth figure is the last one's")  # fmt: skip
    parser.add_argument("--arm-delay", type=float, default=2.0,
                        help="seconds from re-arming the timers to the first due")  # fmt: skip
    parser.add_argument("--pg-admin", default=DEFAULT_PG_ADMIN)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    return parser.parse_args(argv)


def _print(line: str) -> None:
    print(line, flush=True)


def main(argv: Sequence[str] | None = None, log: Any = _print) -> list[Figures]:
    args = parse_args(argv)
    databases = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    results = [run(args, database, log) for database in databases]
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    for result in results:
        log(json.dumps(asdict(result), indent=2))
    return results


if __name__ == "__main__":
    main()
