"""Liveness for every kind: alarm panels follow their integration's own online/offline (nothing
added to their ingest), other kinds report through `observe` and the database timers."""

from __future__ import annotations

import random
import time
from typing import Any

import sqlalchemy as sa

from fleet.ingest.mqtt_link import InboundMessage
from fleet.integrations.alarm_panel.handler import AlarmPanelHandler
from fleet.integrations.alarm_panel.prepare import PanelMessage, prepare
from fleet.sim.alarm_panel import SimulatedPanel
from fleet.store import accounts
from fleet.store import events as event_log
from fleet.store.tables import device_status, devices
from fleet.store.tables_liveness import liveness
from tests.liveness.conftest import Account, Fleet

KEY = bytes.fromhex("11" * 32)
BASE = "panels"


class Panels:
    """The alarm-panel ingest's handler on the test's database, fed as the pipeline feeds it."""

    def __init__(self, fleet: Fleet, account: Account) -> None:
        self.fleet = fleet
        self.account = account
        self.handler = AlarmPanelHandler(periodic_seconds=300, offline_after_seconds=300)
        self.panel = SimulatedPanel(base=BASE, key=KEY, rng=random.Random(7))

    async def send(self, outgoing: tuple[str, bytes]) -> None:
        topic, payload = outgoing
        message = prepare(InboundMessage(topic, payload, 1, 1, time.time(), 0), KEY, 4096)
        assert isinstance(message, PanelMessage)
        async with self.fleet.runtime.engine.begin() as conn:
            outcome = await self.handler.apply(
                conn, [(self.account.id, message)], self.fleet.clock()
            )
            await event_log.append(conn, outcome.events)

    async def sweep(self) -> None:
        async with self.fleet.runtime.engine.begin() as conn:
            outcome = await self.handler.sweep(conn, self.fleet.clock())
            await event_log.append(conn, outcome.events)


async def liveness_of(fleet: Fleet, who: Account, device_id: int) -> dict[str, Any]:
    result: dict[str, Any] = await fleet.get(f"/api/v1/devices/{device_id}/liveness", who)
    return result


async def open_alarms(fleet: Fleet, who: Account) -> list[str]:
    page = await fleet.get("/api/v1/alarms", who, active="true")
    return [item["alarm_type"] for item in page["items"]]


async def test_alarm_panels_follow_their_ingest(fleet: Fleet) -> None:
    acme = await fleet.account("acme")
    async with fleet.runtime.engine.begin() as conn:
        await accounts.add_namespace(conn, acme.id, "alarm_panel", BASE)
    panels = Panels(fleet, acme)
    clock = fleet.clock

    await panels.send(panels.panel.login(clock().timestamp()))
    async with fleet.runtime.engine.connect() as conn:
        device_id = await conn.scalar(
            sa.select(devices.c.id).where(devices.c.account_id == acme.id)
        )
        # The ingest itself wrote no liveness: the follower does, from its events.
        assert (await conn.execute(sa.select(liveness))).all() == []
    assert isinstance(device_id, int)
    assert await fleet.run_job("liveness-follow") >= 1
    state = await liveness_of(fleet, acme, device_id)
    assert state["state"] == "Reporting" and state["period_seconds"] == 300
    assert state["due_at"] is None  # the panel ingest's own sweep decides silence

    # Heartbeats while online change nothing (no events to follow).
    clock.advance(60)
    await panels.send(panels.panel.heartbeat(clock().timestamp()))
    assert await fleet.run_job("liveness-follow") == 0

    # Silent past FLEET_OFFLINE_AFTER_SECONDS: the sweep says offline, liveness says Offline
    # and raises the Offline alarm; any message brings it back and clears the alarm.
    clock.advance(301)
    await panels.sweep()
    await fleet.run_job("liveness-follow")
    assert (await liveness_of(fleet, acme, device_id))["state"] == "Offline"
    assert await open_alarms(fleet, acme) == ["OFFLINE"]
    clock.advance(5)
    await panels.send(panels.panel.heartbeat(clock().timestamp()))
    await fleet.run_job("liveness-follow")
    assert (await liveness_of(fleet, acme, device_id))["state"] == "Reporting"
    assert await open_alarms(fleet, acme) == []

    # A last will: Offline at once.
    await panels.send(panels.panel.last_will(clock().timestamp()))
    await fleet.run_job("liveness-follow")
    assert (await liveness_of(fleet, acme, device_id))["state"] == "Offline"

    # An admin stops it: the Offline alarm is cleared and its comings and goings change nothing.
    url = f"/api/v1/devices/{device_id}/liveness"
    assert (await fleet.client.post(url, headers=acme.api, json={"state": "Stopped"})).json()[
        "state"
    ] == "Stopped"
    assert await open_alarms(fleet, acme) == []
    await panels.send(panels.panel.heartbeat(clock().timestamp()))
    await fleet.run_job("liveness-follow")
    assert (await liveness_of(fleet, acme, device_id))["state"] == "Stopped"
    # Released while the panel is online: Reporting again at once (it will not say so itself).
    released = await fleet.client.post(url, headers=acme.api, json={"state": "Monitored"})
    assert released.json()["state"] == "Reporting"

    offline_panels = await fleet.get("/api/v1/devices", acme, state="offline", kind="alarm_panel")
    assert offline_panels["items"] == []
    history = await fleet.get(f"{url}/history", acme)
    assert [(h["previous"], h["state"]) for h in reversed(history["items"])] == [
        ("New", "Reporting"),
        ("Reporting", "Offline"),
        ("Offline", "Reporting"),
        ("Reporting", "Offline"),
        ("Offline", "Stopped"),
        ("Stopped", "Reporting"),
    ]


async def test_reconcile_adopts_panels_and_repairs_missed_transitions(fleet: Fleet) -> None:
    acme = await fleet.account("acme")
    async with fleet.runtime.engine.begin() as conn:
        ids = []
        for n, online in enumerate((True, False, True)):
            result = await conn.execute(
                sa.insert(devices)
                .values(account_id=acme.id, kind="alarm_panel", uid=f"AA:00:00:00:00:0{n}")
                .returning(devices.c.id)
            )
            ids.append(int(result.scalar_one()))
            await conn.execute(
                sa.insert(device_status).values(
                    device_id=ids[-1],
                    is_online=online,
                    last_seen=fleet.clock() if n < 2 else None,
                )
            )
    # Devices from before liveness existed: adopted as they are, without alarms or history.
    assert await fleet.run_job("liveness-reconcile") == 3
    states = [(await liveness_of(fleet, acme, i))["state"] for i in ids]
    assert states == ["Reporting", "Offline", "Reporting"]
    assert await open_alarms(fleet, acme) == []
    assert await fleet.run_job("liveness-reconcile") == 0  # nothing left to do
    # A transition whose event was missed (e.g. pruned): repaired like any other.
    async with fleet.runtime.engine.begin() as conn:
        await conn.execute(
            sa.update(device_status)
            .where(device_status.c.device_id == ids[0])
            .values(is_online=False)
        )
    assert await fleet.run_job("liveness-reconcile") == 1
    assert (await liveness_of(fleet, acme, ids[0]))["state"] == "Offline"
    assert await open_alarms(fleet, acme) == ["OFFLINE"]


async def test_other_kinds_report_through_observe_and_timers(fleet: Fleet) -> None:
    acme = await fleet.account("acme")
    async with fleet.runtime.engine.begin() as conn:
        result = await conn.execute(
            sa.insert(devices)
            .values(account_id=acme.id, kind="firmware_device", uid="fw-1")
            .returning(devices.c.id)
        )
        device_id = int(result.scalar_one())
    assert (await liveness_of(fleet, acme, device_id))["state"] == "New"
    assert [d["id"] for d in (await fleet.get("/api/v1/devices", acme, state="New"))["items"]] == [
        device_id
    ]

    async def heard() -> None:
        async with fleet.runtime.engine.begin() as conn:
            emitted = await fleet.liveness.observe(conn, [device_id])
        assert all(e.device_id == device_id for e in emitted)

    await heard()  # the integration's batch, once per batch
    state = await liveness_of(fleet, acme, device_id)
    assert state["state"] == "Reporting" and state["period_seconds"] == 300  # the kind's interval
    fleet.clock.advance(304)
    await heard()
    fleet.clock.advance(304)
    await fleet.run_job("liveness-timers")
    assert (await liveness_of(fleet, acme, device_id))["state"] == "Reporting"
    fleet.clock.advance(2)
    await fleet.run_job("liveness-timers")
    assert (await liveness_of(fleet, acme, device_id))["state"] == "Offline"
    assert await open_alarms(fleet, acme) == ["OFFLINE"]
