"""The ingest's PostgreSQL side alone: what it costs to rewrite one device_status row.

Every accepted heartbeat changes its panel's device_status row (last_seen, the frame sequence
kept for anti-replay, uptime and the climate readings): one row per message is what an exact live
picture costs. This bench times that write alone on a migrated database holding N devices, in
two forms:

* Fleet's: `fleet.store.bulk.update_rows`, as the ingest calls it (one `UPDATE … FROM unnest`
  per set of columns, a batch of devices per transaction, with the columns the ingest writes
  for a heartbeat);
* the seed's: one `UPDATE … WHERE device_id = …` per message, each in its own transaction.

It prints rows per second, and per row the wall time and the CPU of PostgreSQL's backend (from
/proc) and of this process (the driver's encoding). `--random-page-cost` sets the planner's
setting on the bench's connection (the unnest join is a hash join over the table or an index
nested loop depending on it and on the batch).

    .venv/bin/python -m bench.status_update                     # 10,000 and 100,000 devices
    .venv/bin/python -m bench.status_update --devices 10000 --batch 400 --random-page-cost 1.1
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import random
import resource
import statistics
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from bench.common import cpu_seconds
from fleet.store import accounts, bulk
from fleet.store.engine import create_engine
from fleet.store.migrate import upgrade
from fleet.store.tables import device_status, devices

PG_ADMIN = os.environ.get("FLEET_BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/test")
SEED_CHUNK = 5000


@dataclass
class Figures:
    form: str
    rows: int
    wall: float  # seconds
    backend_cpu: float | None  # seconds, None where /proc does not show the backend
    client_cpu: float

    def per_row(self, seconds: float | None) -> float | None:
        return None if seconds is None else 1e6 * seconds / self.rows


def _client_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _seed(conn: AsyncConnection, count: int) -> list[int]:
    """An account with `count` alarm panels, each with its (empty) status row."""
    account_id = await accounts.create_account(conn, f"status-bench-{uuid.uuid4().hex[:6]}")
    ids: list[int] = []
    for start in range(0, count, SEED_CHUNK):
        rows = [
            {"account_id": account_id, "kind": "alarm_panel", "uid": f"status-bench-{n}"}
            for n in range(start, min(count, start + SEED_CHUNK))
        ]
        result = await conn.execute(sa.insert(devices).returning(devices.c.id), rows)
        chunk = [int(device_id) for device_id in result.scalars()]
        await conn.execute(sa.insert(device_status), [{"device_id": i} for i in chunk])
        ids += chunk
    return ids


async def _timed(conn: AsyncConnection, form: str, rows: int, work: Any) -> Figures:
    backend = int(await conn.scalar(sa.text("SELECT pg_backend_pid()")) or 0)
    cpu_before, client_before = cpu_seconds(backend), _client_cpu()
    started = time.perf_counter()
    await work()
    wall = time.perf_counter() - started
    cpu_after = cpu_seconds(backend)
    backend_cpu = (
        None if cpu_before is None or cpu_after is None else max(0.0, cpu_after - cpu_before)
    )
    return Figures(form, rows, wall, backend_cpu, _client_cpu() - client_before)


async def measure(
    url: str,
    devices_count: int,
    batch: int,
    rounds: int,
    seed_rows: int,
    *,
    runs: int = 1,
    random_page_cost: float | None = None,
    seed: int = 1,
) -> list[Figures]:
    """Seed `devices_count` panels into the migrated database at `url`, then time `rounds`
    batches of `batch` rows in Fleet's form and `seed_rows` rows in the seed's, `runs` times
    alternately; each figure is the median of the runs. The values are built before the clock
    starts: what is timed is the write, and the client's CPU is the driver's and bulk's."""
    rng = random.Random(seed)
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            ids = await _seed(conn, devices_count)
            await conn.execute(sa.text("ANALYZE device_status"))
        async with engine.connect() as conn:
            if random_page_cost is not None:
                await conn.execute(sa.text(f"SET random_page_cost = {float(random_page_cost)}"))
                await conn.commit()
            sequence = 0

            def heartbeat(now: datetime) -> dict[str, Any]:
                """A heartbeat's status values, the columns the ingest writes for each
                (`status_fields.heartbeat_changes`; `now` is its batch's time)."""
                return {
                    "is_online": True,
                    "last_seen": now,
                    "last_frame_seq": sequence,
                    "uptime": 1000 * sequence + rng.randrange(1000),
                    "temperature": 20.0 + rng.random(),
                    "humidity": 40.0 + rng.random(),
                    "fan_pwm_duty": rng.randrange(100),
                }

            def batches() -> list[dict[int, dict[str, Any]]]:
                nonlocal sequence
                built = []
                for _ in range(rounds):
                    sequence += 1
                    now = datetime.now(UTC)
                    chosen = rng.sample(ids, min(batch, len(ids)))
                    built.append({i: heartbeat(now) for i in chosen})
                return built

            def single_rows() -> list[dict[str, Any]]:
                nonlocal sequence
                built = []
                for _ in range(seed_rows):
                    sequence += 1
                    built.append({"id": rng.choice(ids), **heartbeat(datetime.now(UTC))})
                return built

            async def fleet_form(built: list[dict[int, dict[str, Any]]]) -> None:
                for updates in built:
                    await bulk.update_rows(conn, device_status, "device_id", updates)
                    await conn.commit()

            statement = sa.update(device_status).where(
                device_status.c.device_id == sa.bindparam("id")
            )

            async def seed_form(built: list[dict[str, Any]]) -> None:
                for params in built:
                    await conn.execute(statement, params)
                    await conn.commit()

            await fleet_form(batches())  # warm: statements prepared, pages cached
            measured: list[list[Figures]] = []
            for _ in range(runs):
                measured.append(
                    [
                        await _timed(
                            conn,
                            f"Fleet: batches of {batch}",
                            rounds * batch,
                            functools.partial(fleet_form, batches()),
                        ),
                        await _timed(
                            conn,
                            "seed: a transaction per row",
                            seed_rows,
                            functools.partial(seed_form, single_rows()),
                        ),
                    ]
                )
        return [_median([run[i] for run in measured]) for i in range(len(measured[0]))]
    finally:
        await engine.dispose()


def _median(same: list[Figures]) -> Figures:
    cpus = [f.backend_cpu for f in same if f.backend_cpu is not None]
    return Figures(
        same[0].form,
        same[0].rows,
        statistics.median(f.wall for f in same),
        statistics.median(cpus) if cpus else None,
        statistics.median(f.client_cpu for f in same),
    )


def _admin(sql: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql)


async def _run_on_new_database(args: argparse.Namespace, count: int) -> list[Figures]:
    name = f"fleet_bench_status_{uuid.uuid4().hex[:8]}"
    url = f"{PG_ADMIN.rpartition('/')[0]}/{name}"
    await asyncio.to_thread(_admin, f'CREATE DATABASE "{name}"')
    try:
        await asyncio.to_thread(upgrade, url)
        return await measure(
            url,
            count,
            args.batch,
            args.rounds,
            args.seed_rows,
            runs=args.runs,
            random_page_cost=args.random_page_cost,
        )
    finally:
        await asyncio.to_thread(_admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _print(count: int, figures: list[Figures]) -> None:
    print(f"{count:,} devices:")
    for f in figures:
        cpu = f.per_row(f.backend_cpu)
        print(
            f"  {f.form:30s} {f.rows / f.wall:>9,.0f} rows/s  wall {f.per_row(f.wall):6.1f} µs/row"
            f"  PostgreSQL CPU {'?' if cpu is None else f'{cpu:5.1f}'} µs/row"
            f"  client CPU {f.per_row(f.client_cpu):5.1f} µs/row"
        )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", default="10000,100000", help="comma-separated")
    parser.add_argument("--batch", type=int, default=2000, help="rows per transaction (Fleet)")
    parser.add_argument("--rounds", type=int, default=50, help="batches timed (Fleet)")
    parser.add_argument("--seed-rows", type=int, default=5000, help="rows timed (the seed's)")
    parser.add_argument("--runs", type=int, default=3, help="median of this many runs")
    parser.add_argument("--random-page-cost", type=float, default=None)
    args = parser.parse_args(argv)
    for count in (int(n) for n in args.devices.split(",") if n.strip()):
        _print(count, asyncio.run(_run_on_new_database(args, count)))


if __name__ == "__main__":
    main()
