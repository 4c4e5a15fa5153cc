"""Bulk-task benchmark: create and dispatch a 10,000-device task against the simulated head-end
through a real Mosquitto, on SQLite and/or PostgreSQL.

    .venv/bin/python -m bench.tasks                          # sqlite + postgres, 10,000 meters
    .venv/bin/python -m bench.tasks --db sqlite --devices 20000 --rate 5000 --failure-rate 0.02
    .venv/bin/python -m bench.tasks --json out.json

Each run: a fresh database (temporary SQLite file, or `fleet_bench_tasks_<random>` on the
PostgreSQL server, dropped afterwards), a `FleetRuntime` (ingest, ledger, dispatcher job: what
`fleet serve` runs) on the broker, an account, the simulated head-end (fleet/sim/meter_hes.py, in
this process) answering every command on the broker, and the HTTP API in front (called in-process
through ASGI). It reports:

- creation: the `POST /api/v1/tasks` round trip for N new meter ids (registered on first use);
- dispatch: devices handed to the broker per second, from the task's start to its last send;
- completion: from the POST to the task's final status (every answer ingested), and the rate at
  which answers were applied.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import httpx
import psycopg
import sqlalchemy as sa

from fleet.api import ApiContext, build_api
from fleet.config import Settings
from fleet.ingest.mqtt_link import parse_mqtt_url
from fleet.runtime import FleetRuntime
from fleet.sim.meter_hes import SimulatedHes
from fleet.store import accounts
from fleet.store.migrate import upgrade
from fleet.store.tables import command_log
from fleet.store.tables_tasks import tasks

log = logging.getLogger("bench.tasks")

DEFAULT_BROKER = "mqtt://127.0.0.1:1883"
DEFAULT_PG_ADMIN = os.environ.get(
    "FLEET_BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/test"
)


@dataclass
class TaskFigures:
    database: str
    devices: int
    rate_asked: float
    creation_seconds: float
    dispatch_seconds: float
    dispatch_per_second: float
    completion_seconds: float
    answers_per_second: float
    status: str
    succeeded: int
    failed: int
    commands_received: int  # by the head-end, repeats included
    repeats: int
    ingest: dict[str, int]  # answers applied / ignored / refused, by kind or reason


async def run_task_bench(
    database_url: str,
    host: str,
    port: int,
    *,
    devices: int,
    rate: float,
    failure_rate: float = 0.0,
    timeout: float = 300.0,
    label: str = "",
) -> TaskFigures:
    base = f"bt{uuid.uuid4().hex[:8]}"
    settings = Settings(
        database_url=database_url,
        mqtt_url=f"mqtt://{host}:{port}",
        mqtt_client_id=f"fleet-bench-{base}",
        alarm_topic_base=base,
        alarm_topic_filter=f"{base}/pb/d/+/+",
        alarm_hmac_key="5a" * 32,
        hes_topic_prefix=f"{base}/hes",
        log_level="WARNING",
    )
    runtime = FleetRuntime(settings)
    async with runtime.engine.begin() as conn:
        account_id = await accounts.create_account(conn, f"bench-{base}")
        key = await accounts.issue_key(conn, account_id)
    hes = SimulatedHes(host, port, settings.hes_topic_prefix, failure_rate=failure_rate, seed=1)
    hes.start()
    await runtime.start(migrate=False)
    app = build_api(ApiContext(settings=settings, engine=runtime.engine, commands=runtime.commands))
    headers = {"Authorization": f"Bearer {key}"}
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://bench", timeout=120
        ) as client:
            body = {
                "commandType": "SET_TOU",
                "commandParams": {"tou_profile_id": "TOU-2025-BENCH"},
                "devices": [f"meter-{i:06d}" for i in range(devices)],
                "ratePerSecond": rate,
                "requestedBy": "bench",
            }
            started = time.perf_counter()
            response = await client.post("/api/v1/tasks", headers=headers, json=body)
            created = time.perf_counter()
            if response.status_code != 202:
                raise RuntimeError(f"POST /tasks answered {response.status_code}: {response.text}")
            task_id = response.json()["taskId"]
            deadline = started + timeout
            while True:
                doc = (
                    await client.get(
                        f"/api/v1/tasks/{task_id}", headers=headers, params={"limit": 1}
                    )
                ).json()
                if doc["status"] in ("COMPLETED", "FAILED", "CANCELLED"):
                    break
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"task not finished in {timeout} s: {doc['counts']}")
                await asyncio.sleep(0.05)
            finished = time.perf_counter()
        async with runtime.engine.connect() as conn:
            _first_sent, last_sent = (
                await conn.execute(
                    sa.select(
                        sa.func.min(command_log.c.sent_at), sa.func.max(command_log.c.sent_at)
                    )
                )
            ).one()
            started_at = await conn.scalar(
                sa.select(tasks.c.started_at).where(tasks.c.task_id == task_id)
            )
        dispatch = _seconds(started_at, last_sent) or 1e-9
        answering = finished - created
        return TaskFigures(
            database=label or database_url.split(":", 1)[0],
            devices=devices,
            rate_asked=rate,
            creation_seconds=round(created - started, 3),
            dispatch_seconds=round(dispatch, 3),
            dispatch_per_second=round(devices / dispatch, 1),
            completion_seconds=round(finished - started, 3),
            answers_per_second=round(devices / answering, 1),
            status=doc["status"],
            succeeded=doc["counts"]["SUCCESS"],
            failed=doc["counts"]["FAILED"] + doc["counts"]["TIMEOUT"],
            commands_received=hes.stats.received,
            repeats=hes.stats.repeats,
            ingest={
                **runtime.pipeline.stats.accepted,
                **{f"refused:{k}": v for k, v in runtime.pipeline.stats.rejected.items()},
            },
        )
    finally:
        await runtime.stop()
        hes.stop()
        _forget_session(host, port, settings.mqtt_client_id)


def _seconds(start: datetime | None, end: datetime | None) -> float:
    if start is None or end is None:
        return 0.0
    return (end - start).total_seconds()


def _forget_session(host: str, port: int, client_id: str) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
    client.connect(host, port)
    client.loop_start()
    time.sleep(0.05)
    client.disconnect()
    client.loop_stop()


async def _one_database(kind: str, args: argparse.Namespace) -> TaskFigures:
    address = parse_mqtt_url(args.broker)
    if kind == "sqlite":
        folder = tempfile.mkdtemp(prefix="fleet-bench-tasks-")
        url = f"sqlite:///{folder}/fleet.db"
        try:
            await asyncio.to_thread(upgrade, url)
            return await run_task_bench(
                url,
                address.host,
                address.port,
                devices=args.devices,
                rate=args.rate,
                failure_rate=args.failure_rate,
                label="sqlite",
            )
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    name = f"fleet_bench_tasks_{uuid.uuid4().hex[:8]}"
    admin = args.pg_admin
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"{admin.rpartition('/')[0]}/{name}"
    try:
        await asyncio.to_thread(upgrade, url)
        return await run_task_bench(
            url,
            address.host,
            address.port,
            devices=args.devices,
            rate=args.rate,
            failure_rate=args.failure_rate,
            label="postgres",
        )
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=5_000, help="task ratePerSecond")
    parser.add_argument("--failure-rate", type=float, default=0.0)
    parser.add_argument("--broker", default=DEFAULT_BROKER)
    parser.add_argument("--pg-admin", default=DEFAULT_PG_ADMIN)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    kinds = ("sqlite", "postgres") if args.db == "both" else (args.db,)
    figures: list[dict[str, Any]] = []
    for kind in kinds:
        result = asyncio.run(_one_database(kind, args))
        figures.append(asdict(result))
        print(
            f"{result.database:8} {result.devices} devices: created in "
            f"{result.creation_seconds:.2f} s; dispatched {result.dispatch_per_second:,.0f}/s "
            f"({result.dispatch_seconds:.2f} s, asked {result.rate_asked:,.0f}/s); "
            f"{result.status} after {result.completion_seconds:.2f} s "
            f"(answers applied {result.answers_per_second:,.0f}/s); "
            f"{result.succeeded} succeeded, {result.failed} failed; head-end got "
            f"{result.commands_received} commands, {result.repeats} repeats"
        )
    if args.json:
        with open(args.json, "w") as out:
            json.dump(figures, out, indent=2)
    return figures


if __name__ == "__main__":
    main()
