"""`fleet simulate` with every kind at once, against a real Fleet (uvicorn, real Mosquitto, both
databases): alarm panels in load-test mode, probes over HTTP, and the meter head-end answering a
task. What each part sent is what Fleet took in."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import sqlalchemy as sa

from fleet.app import create_app
from fleet.ingest.mqtt_link import BrokerAddress
from fleet.runtime import FleetRuntime
from fleet.sim.session import (
    HesPlan,
    PanelPlan,
    Progress,
    ReporterPlan,
    SimulationPlan,
    run_simulation,
)
from fleet.store import accounts
from fleet.store.migrate import upgrade
from fleet.store.tables import devices
from tests.events.support import serve
from tests.ingest.harness import KEY, discard_session
from tests.tasks.harness import fleet_settings, until, until_value

PANELS = 20
PANEL_MESSAGES = 200  # logins first, then heartbeats (and now and then an alarm)
PROBES = 6


async def test_every_kind_reaches_fleet(
    db_url: str, mqtt_server: tuple[str, int], topic_base: str
) -> None:
    host, port = mqtt_server
    settings = fleet_settings(db_url, host, port, topic_base)
    await asyncio.to_thread(upgrade, db_url)
    app = create_app(settings, migrate=False)
    runtime: FleetRuntime = app.state.runtime
    async with runtime.engine.begin() as conn:
        account_id = await accounts.create_account(conn, f"sim-{uuid.uuid4().hex[:6]}")
        await accounts.add_namespace(conn, account_id, "alarm_panel", topic_base)
        api_key = await accounts.issue_key(conn, account_id)
        token = await accounts.issue_key(conn, account_id, "ingest")
    await runtime.start(migrate=False)
    served = await serve(app)
    shown: list[str] = []
    try:
        plan = SimulationPlan(
            broker=BrokerAddress(host, port),
            panels=PanelPlan(PANELS, topic_base, KEY, rate=0, total=PANEL_MESSAGES),
            reporters=ReporterPlan(PROBES, served.http, token, period=60, rate=30),
            hes=HesPlan(settings.hes_topic_prefix),
            duration=3.0,
            seed=7,
        )

        def show(progress: Progress) -> None:
            shown.append(progress.line())

        simulation = asyncio.create_task(run_simulation(plan, show))
        async with httpx.AsyncClient(
            base_url=served.http, headers={"Authorization": f"Bearer {api_key}"}
        ) as api:
            await asyncio.sleep(0.5)  # the head-end has subscribed by now
            meters = [f"sim-meter-{i}" for i in range(5)]
            response = await api.post(
                "/api/v1/tasks",
                json={
                    "commandType": "SET_TOU",
                    "commandParams": {"tou_profile_id": "TOU-1"},
                    "devices": meters,
                },
            )
            assert response.status_code == 202, response.text
            task_id = response.json()["taskId"]

            async def task() -> object:
                return (await api.get(f"/api/v1/tasks/{task_id}")).json()

            doc = await until_value(task, lambda d: d["status"] == "COMPLETED", 15)  # type: ignore[index]
            assert doc["counts"]["SUCCESS"] == len(meters)  # type: ignore[index]
            progress = await simulation

            # Every panel message was taken in (QoS 0 on loopback: none lost).
            stats = runtime.pipeline.stats

            def panel_messages() -> int:
                return sum(stats.accepted[kind] for kind in ("login", "hb", "alarm"))

            await until(lambda: panel_messages() >= PANEL_MESSAGES, 10)
            assert panel_messages() == PANEL_MESSAGES
            assert stats.accepted["login"] == PANELS and not stats.rejected
            assert stats.accepted["response"] == len(meters)  # the head-end's answers
            async with runtime.engine.connect() as conn:
                kinds = dict(
                    (
                        await conn.execute(
                            sa.select(devices.c.kind, sa.func.count())
                            .where(devices.c.account_id == account_id)
                            .group_by(devices.c.kind)
                        )
                    ).all()
                )
            assert kinds == {"alarm_panel": PANELS, "reporter": PROBES, "meter": len(meters)}
            # The probes' reports: each registered and Reporting, none refused.
            listed = (await api.get("/api/v1/liveness", params={"limit": 100})).json()["items"]
            reporting = {d["device_id"] for d in listed if d["state"] == "Reporting"}
            assert len(reporting) >= PROBES
    finally:
        await served.close()
        await runtime.stop()
        discard_session(host, port, settings.mqtt_client_id)
    panels_sent, panel_errors = progress.parts["panels"]
    reports_sent, report_errors = progress.parts["reporters"]
    assert (panels_sent, panel_errors) == (PANEL_MESSAGES, 0)
    assert report_errors == 0 and reports_sent >= 30  # ~30/s for ~3 s, the first at once
    assert progress.parts["meter head-end answers"] == (len(meters), 0)
    assert shown and "reporters: sent" in shown[-1] and "panels: sent" in shown[-1]
