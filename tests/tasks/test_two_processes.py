"""Two real `fleet serve` processes on one PostgreSQL database and one broker: each device of a
task is dispatched by exactly one of them, once, and both take part."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fleet.sim.meter_hes import SimulatedHes
from fleet.store import accounts
from fleet.store.engine import create_engine

pytestmark = [pytest.mark.postgres, pytest.mark.broker]

ROOT = Path(__file__).resolve().parents[2]
METERS = 600


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _serve(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "fleet", "serve"],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@pytest.fixture
def processes(
    pg_url: str, mqtt_server: tuple[str, int], topic_base: str, tmp_path: Path
) -> Iterator[list[tuple[subprocess.Popen[bytes], str]]]:
    host, port = mqtt_server
    started: list[tuple[subprocess.Popen[bytes], str]] = []
    for index in range(2):
        http_port = _free_port()
        env = {
            "FLEET_DATABASE_URL": pg_url,
            "FLEET_MQTT_URL": f"mqtt://{host}:{port}",
            "FLEET_MQTT_CLIENT_ID": f"fleet-2p-{index}-{uuid.uuid4().hex[:6]}",
            "FLEET_HTTP_LISTEN": f"127.0.0.1:{http_port}",
            "FLEET_ALARM_TOPIC_BASE": topic_base,
            "FLEET_ALARM_TOPIC_FILTER": f"{topic_base}/pb/d/+/+",
            "FLEET_ALARM_HMAC_KEY": "22" * 32,
            "FLEET_HES_TOPIC_PREFIX": f"{topic_base}/hes",
            # The head-end's answers are split between the two processes.
            "FLEET_HES_SHARE_GROUP": f"g{topic_base}",
            "FLEET_TASK_DISPATCH_BATCH": "50",
            "FLEET_LOG_LEVEL": "WARNING",
        }
        started.append(
            (_serve(env, tmp_path / f"fleet-{index}.log"), f"http://127.0.0.1:{http_port}")
        )
    try:
        yield started
    finally:
        for process, _url in started:
            process.send_signal(signal.SIGTERM)
        for process, _url in started:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        for index in range(2):
            sys.stderr.write((tmp_path / f"fleet-{index}.log").read_text()[-3000:])


async def _up(client: httpx.AsyncClient, url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"fleet serve exited with {process.returncode}")
        try:
            if (await client.get(f"{url}/healthz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"fleet serve at {url} did not come up")


def _dispatched(metrics: str) -> float:
    match = re.search(r"^fleet_task_commands_dispatched_total (\S+)$", metrics, re.MULTILINE)
    assert match, "the dispatch counter is missing from /metrics"
    return float(match.group(1))


async def test_two_processes_send_each_device_once(
    processes: list[tuple[subprocess.Popen[bytes], str]],
    pg_url: str,
    mqtt_server: tuple[str, int],
    topic_base: str,
) -> None:
    engine = create_engine(pg_url)
    async with engine.begin() as conn:
        account_id = await accounts.create_account(conn, "two-processes")
        key = await accounts.issue_key(conn, account_id)
    await engine.dispose()
    headers = {"Authorization": f"Bearer {key}"}
    host, port = mqtt_server
    meters = [f"meter-{i:05d}" for i in range(METERS)]
    with SimulatedHes(host, port, f"{topic_base}/hes") as hes:
        async with httpx.AsyncClient(timeout=10) as client:
            for process, url in processes:
                await _up(client, url, process)
            (_p1, first), (_p2, second) = processes
            body = {
                "commandType": "SET_TOU",
                "commandParams": {"tou_profile_id": "TOU-2025-TEST"},
                "devices": meters,
                # 3 s of dispatching: several job runs of each process, even if one of them
                # is still busy with its first round of jobs when the task arrives.
                "ratePerSecond": 200,
            }
            created = await client.post(f"{first}/api/v1/tasks", headers=headers, json=body)
            assert created.status_code == 202, created.text
            task_id = created.json()["taskId"]
            deadline = time.monotonic() + 30
            while True:
                doc = (await client.get(f"{second}/api/v1/tasks/{task_id}", headers=headers)).json()
                if doc["status"] != "IN_PROGRESS" and doc["status"] != "QUEUED":
                    break
                assert time.monotonic() < deadline, doc["counts"]
                await asyncio.sleep(0.2)
            assert doc["status"] == "COMPLETED", doc
            assert doc["counts"]["SUCCESS"] == METERS
            shares = [
                _dispatched((await client.get(f"{url}/metrics")).text) for _p, url in processes
            ]
    # Each meter got exactly one command, from one of the two processes; both took part.
    assert Counter(c["deviceId"] for c in hes.commands) == Counter(meters)
    assert hes.stats.repeats == 0
    assert sum(shares) == METERS and min(shares) > 0, shares
