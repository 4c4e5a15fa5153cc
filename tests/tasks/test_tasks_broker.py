"""Bulk tasks end to end over the real broker: Fleet's runtime (ingest, ledger, dispatcher job)
and the simulated head-end answering through Mosquitto, on SQLite and PostgreSQL; an alarm-panel
zone reboot answered by simulated panels; and a restart in the middle of a task."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter

import paho.mqtt.client as mqtt
import pytest
import sqlalchemy as sa

from fleet.sim.alarm_panel import SimulatedPanel
from fleet.sim.meter_hes import SimulatedHes
from fleet.store.tables import command_log
from fleet.store.tables_tasks import task_devices
from tests.ingest.harness import KEY
from tests.tasks.harness import fleet_settings, start_fleet, stop_fleet, until

pytestmark = pytest.mark.broker

SET_TOU = {"commandType": "SET_TOU", "commandParams": {"tou_profile_id": "TOU-2025-TEST"}}


async def test_meter_task_over_the_broker(
    db_url: str, mqtt_server: tuple[str, int], topic_base: str
) -> None:
    host, port = mqtt_server
    settings = fleet_settings(db_url, host, port, topic_base, command_timeout_seconds=2)
    fleet = await start_fleet(settings)
    fleet.runtime.commands.retry_base_seconds = 0.2  # retry soon, not after 5 s
    meters = [f"meter-{i:03d}" for i in range(60)]
    failing = frozenset(meters[:3])
    silent = frozenset(meters[3:4])  # never answers: retried, then TIMEOUT
    hes = SimulatedHes(
        host, port, settings.hes_topic_prefix, ack=True, fail=failing, silent=silent, delay=0.05
    ).start()
    try:
        body = {
            **SET_TOU,
            "devices": meters,
            "ratePerSecond": 200,
            "maxRetries": 1,
            "timeoutSeconds": 0.5,
            "correlationId": "broker-1",
            "requestedBy": "ops",
        }
        task_id = await fleet.post_task(body)
        doc = await fleet.finished(task_id, timeout=30)
        assert doc["status"] == "FAILED" and doc["statusReason"] == "4 of 60 devices failed"
        assert doc["counts"]["SUCCESS"] == 56 and doc["counts"]["FAILED"] == 3
        assert doc["counts"]["TIMEOUT"] == 1
        by_id = {d["deviceId"]: d for d in (await fleet.task(task_id, limit=100))["devices"]}
        assert by_id[meters[0]]["error"] == "meter refused the write"
        assert by_id[meters[3]]["error"] == "no response within 0.5 s"
        # Every meter got its command once; only the silent one a second attempt (same id).
        received = Counter(c["deviceId"] for c in hes.commands)
        assert received == Counter({m: 2 if m in silent else 1 for m in meters})
        assert hes.stats.executed == 60 and hes.stats.repeats == 1
        async with fleet.runtime.engine.connect() as conn:
            rows = (await conn.execute(sa.select(command_log))).all()
        assert len(rows) == 60
        assert sum(1 for r in rows if r.acknowledged_at is not None) == 59  # all but the silent
        assert {r.initiated_by for r in rows} == {f"{(await _account(fleet))}:ops"}
        assert sum(1 for r in rows if r.response_data and r.response_data["receivedAt"]) == 59
    finally:
        hes.stop()
        await stop_fleet(fleet)


async def _account(fleet) -> str:  # type: ignore[no-untyped-def]
    from fleet.store.tasks import account_name

    async with fleet.runtime.engine.connect() as conn:
        return await account_name(conn, fleet.account_id)


async def test_zone_reboot_of_alarm_panels_is_a_task(
    sqlite_url: str, mqtt_server: tuple[str, int], topic_base: str
) -> None:
    host, port = mqtt_server
    fleet = await start_fleet(fleet_settings(sqlite_url, host, port, topic_base))
    panels = [SimulatedPanel(base=topic_base, key=KEY, rng=random.Random(i)) for i in range(4)]
    for i, panel in enumerate(panels):
        panel.zone = 5 if i < 3 else 6
    by_host = {p.hostname: p for p in panels}
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    answered: list[str] = []

    def on_message(c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        panel = by_host[message.topic.split("/")[3]]
        reply = panel.handle_command(message.payload, time.time())
        if reply is not None:
            answered.append(panel.hostname)
            c.publish(*reply, qos=1)

    client.on_message = on_message
    client.connect(host, port)
    client.subscribe(f"{topic_base}/pb/d/+/cmd", qos=1)
    client.loop_start()
    try:
        for panel in panels:
            client.publish(*panel.login(time.time()), qos=1).wait_for_publish(5)
        await until(lambda: fleet.runtime.pipeline.stats.accepted["login"] == 4)
        await until(lambda: len(answered) >= 4)  # the device-id syncs, answered
        body = {
            "commandType": "SYSTEM",
            "commandParams": {"action": "REBOOT"},
            "filter": {"zone": 5},
            "requestedBy": "night-shift",
        }
        task_id = await fleet.post_task(body)
        doc = await fleet.finished(task_id)
        assert doc["status"] == "COMPLETED" and doc["counts"]["SUCCESS"] == 3
        rebooted = {d["deviceId"] for d in doc["devices"]}
        assert rebooted == {_mac(p.hostname) for p in panels[:3]}
        async with fleet.runtime.engine.connect() as conn:
            rows = (
                await conn.execute(sa.select(command_log).where(command_log.c.task_id == task_id))
            ).all()
        assert len(rows) == 3 and {r.status for r in rows} == {"COMPLETED"}
        assert {r.command_type for r in rows} == {"SYSTEM"}
    finally:
        client.loop_stop()
        client.disconnect()
        await stop_fleet(fleet)


def _mac(hostname: str) -> str:
    digits = hostname[-12:]
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


async def test_restart_in_the_middle_resumes_the_task(
    db_url: str, mqtt_server: tuple[str, int], topic_base: str
) -> None:
    """Fleet stops while a task is half dispatched; a new Fleet (same database, same broker
    session) finishes it: every meter gets its command exactly once."""
    host, port = mqtt_server
    settings = fleet_settings(db_url, host, port, topic_base)
    meters = [f"m-{i:04d}" for i in range(240)]
    hes = SimulatedHes(host, port, settings.hes_topic_prefix).start()
    first = await start_fleet(settings)
    account_id = first.account_id
    try:
        task_id = await first.post_task({**SET_TOU, "devices": meters, "ratePerSecond": 200})
        await until(lambda: first.runtime.dispatcher.dispatched >= 100, timeout=10)
        await stop_fleet(first, keep_session=True)
        dispatched_before = first.runtime.dispatcher.dispatched
        assert dispatched_before < 240
        await asyncio.sleep(0.3)  # answers for the first half wait in the broker session
        second = await start_fleet(settings, account_id=account_id)
        try:
            doc = await second.finished(task_id, timeout=30)
            assert doc["status"] == "COMPLETED" and doc["counts"]["SUCCESS"] == 240
            assert second.runtime.dispatcher.dispatched == 240 - dispatched_before
        finally:
            await stop_fleet(second)
        assert Counter(c["deviceId"] for c in hes.commands) == Counter(meters)
        assert hes.stats.repeats == 0
    finally:
        hes.stop()
    from fleet.store.engine import create_engine

    engine = create_engine(db_url)
    try:
        async with engine.connect() as conn:
            linked = await conn.scalar(
                sa.select(sa.func.count(sa.distinct(task_devices.c.command_id)))
            )
            total = await conn.scalar(sa.select(sa.func.count()).select_from(command_log))
        assert linked == 240 and total == 240
    finally:
        await engine.dispose()
