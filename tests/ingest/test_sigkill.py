"""At-least-once: a worker killed with SIGKILL mid-run and started again loses no message and
stores no duplicate history row."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid

import paho.mqtt.client as mqtt
import pytest
import sqlalchemy as sa
from paho.mqtt.enums import CallbackAPIVersion

from fleet.integrations.alarm_panel.codec import encode_heartbeat
from fleet.integrations.alarm_panel.framing import encode_frame
from fleet.integrations.alarm_panel.topics import device_topic
from fleet.sim.alarm_panel import SimulatedPanel
from fleet.store import accounts
from fleet.store.engine import create_engine
from fleet.store.tables import heartbeats
from tests.ingest.conftest import PrivateBroker
from tests.ingest.harness import KEY, discard_session

pytestmark = pytest.mark.broker

PANELS = 40
ROUNDS = 60
PUBLISH_CHUNK = 100
PUBLISH_PAUSE = 0.02


def messages(base: str) -> list[tuple[str, bytes]]:
    """Logins, then heartbeats whose temperature moves 1 °C each time: every one is stored."""
    import random

    panels = [SimulatedPanel(base=base, key=KEY, rng=random.Random(i)) for i in range(PANELS)]
    out = [panel.login(time.time()) for panel in panels]
    for step in range(ROUNDS):
        for panel in panels:
            payload = encode_heartbeat(
                timestamp=int(time.time()), temperature=20.0 + (step % 2), humidity=40.0
            )
            topic = device_topic(base, panel.hostname, "hb")
            out.append((topic, encode_frame(KEY, panel._next_sequence(), payload)))
    return out


def start_worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    # FLEET_TEST_WORKER_LOG=path keeps the worker's log when this test needs debugging.
    with open(os.environ.get("FLEET_TEST_WORKER_LOG", os.devnull), "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "fleet", "ingest"],
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


async def kill(worker: subprocess.Popen[bytes], engine: sa.ext.asyncio.AsyncEngine) -> int:
    """Kill the worker; what is stored is counted after the kill, so it is exact."""
    worker.send_signal(signal.SIGKILL)
    worker.wait(10)
    return await count_rows(engine)


async def count_rows(engine: sa.ext.asyncio.AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(
            (await conn.execute(sa.select(sa.func.count()).select_from(heartbeats))).scalar() or 0
        )


async def wait_rows(engine, at_least: int, timeout: float) -> int:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while (n := await count_rows(engine)) < at_least:
        if time.monotonic() > deadline:
            return n
        await asyncio.sleep(0.05)
    return n


async def test_sigkill_mid_run_loses_nothing_and_duplicates_nothing(
    db_url: str, private_broker: PrivateBroker, topic_base: str
) -> None:
    """On a broker of the test's own without a queue limit: Mosquitto's default drops what is
    queued past 1,000 messages for a disconnected session, which would be the broker's loss."""
    host, port = "127.0.0.1", private_broker.port
    engine = create_engine(db_url)
    async with engine.begin() as conn:
        account = await accounts.create_account(conn, "killed")
        await accounts.add_namespace(conn, account, "alarm_panel", topic_base)
    client_id = f"fleet-kill-{uuid.uuid4().hex[:8]}"
    env = {
        "FLEET_DATABASE_URL": db_url,
        "FLEET_MQTT_URL": f"mqtt://{host}:{port}",
        "FLEET_MQTT_CLIENT_ID": client_id,
        "FLEET_ALARM_TOPIC_BASE": topic_base,
        "FLEET_ALARM_TOPIC_FILTER": f"{topic_base}/pb/d/+/+",
        "FLEET_ALARM_HMAC_KEY": KEY.hex(),
        "FLEET_INGEST_BATCH_WAIT_MS": "20",
    }
    worker = start_worker(env)
    publisher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{client_id}-pub")
    publisher.connect(host, port)
    publisher.loop_start()
    try:
        batch = messages(topic_base)
        # The worker's session must exist before the run: repeat the first login until it is
        # stored (a copy that arrives twice is dropped as a replay).
        infos = []
        for _ in range(30):
            infos.append(publisher.publish(*batch[0], qos=1))
            if await wait_rows(engine, 1, 1.0) >= 1:
                break
        else:
            raise AssertionError("the worker did not start")
        # Published in paced chunks, and the worker is killed as soon as a tenth is stored, while
        # the rest is still being published: a worker that keeps up with an unpaced publisher
        # would store everything before the first look (a kill after the run proves nothing).
        stored_before_kill = None
        rest = batch[1:]
        for start in range(0, len(rest), PUBLISH_CHUNK):
            infos += [
                publisher.publish(t, p, qos=1) for t, p in rest[start : start + PUBLISH_CHUNK]
            ]
            await asyncio.sleep(PUBLISH_PAUSE)
            if stored_before_kill is None and await count_rows(engine) >= len(batch) // 10:
                stored_before_kill = await kill(worker, engine)
        if stored_before_kill is None:
            await wait_rows(engine, len(batch) // 10, 30)
            stored_before_kill = await kill(worker, engine)
        assert stored_before_kill < len(batch), "killed too late to prove anything"
        for info in infos:
            info.wait_for_publish(10)
        worker = start_worker(env)
        final = await wait_rows(engine, len(batch), 60)
        await asyncio.sleep(1.0)  # anything extra (a duplicate) would land now
        final = await count_rows(engine)
        assert final == len(batch), f"{final} rows for {len(batch)} messages"
        async with engine.connect() as conn:
            per_device = (
                await conn.execute(
                    sa.select(heartbeats.c.device_id, sa.func.count()).group_by(
                        heartbeats.c.device_id
                    )
                )
            ).all()
        assert len(per_device) == PANELS and all(n == ROUNDS + 1 for _, n in per_device)
    finally:
        worker.kill()
        worker.wait(10)
        publisher.disconnect()
        publisher.loop_stop()
        discard_session(host, port, client_id)
        await engine.dispose()
