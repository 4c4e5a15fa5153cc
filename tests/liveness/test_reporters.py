"""Real reporter traffic (GET with a query, POST with a form `report`, leading-tab connections)
through the whole app, with a clock the test moves, through every transition of the liveness
state machine, including a restart between arming a timer and its firing."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import httpx
import sqlalchemy as sa

from fleet.integrations.reporter.wire import device_uid
from fleet.store.tables import alarm_events
from fleet.store.tables_liveness import liveness, liveness_history
from tests.liveness.conftest import T0, Account, Fleet, FleetFactory


async def ongoing_get(fleet: Fleet, who: Account, name: str, **params: Any) -> httpx.Response:
    """What a plain-GET reporter sends: everything in the query, the token too."""
    query = {"device_id": name, "period": "60", "token": who.ingest_token, **params}
    return await fleet.client.get("/report/ongoing", params=query)


async def post_report(
    fleet: Fleet, who: Account, action: str, name: str, report: dict[str, Any] | None, **params: Any
) -> httpx.Response:
    """What a reporter with a MonitorReport sends: a urlencoded form `report`, bearer token."""
    form = {"report": json.dumps(report)} if report is not None else None
    return await fleet.client.post(
        f"/report/{action}", params={"device_id": name, **params}, data=form, headers=who.ingest
    )


def ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def row(fleet: Fleet, device_id: int) -> dict[str, Any]:
    async with fleet.runtime.engine.connect() as conn:
        found = (
            await conn.execute(sa.select(liveness).where(liveness.c.device_id == device_id))
        ).one()
    return dict(found._mapping)


async def history(fleet: Fleet, who: Account, device_id: int) -> list[tuple[str, str, str | None]]:
    page = await fleet.get(f"/api/v1/devices/{device_id}/liveness/history", who)
    return [
        (item["previous"], item["state"], item["connection"]) for item in reversed(page["items"])
    ]


async def open_offline_alarms(fleet: Fleet, who: Account, device_id: int) -> list[dict[str, Any]]:
    page = await fleet.get("/api/v1/alarms", who, device_id=device_id, active="true")
    return [item for item in page["items"] if item["alarm_type"] == "OFFLINE"]


async def state_changes(fleet: Fleet, device_id: int) -> list[dict[str, Any]]:
    return [e["data"] for e in await fleet.events("device.state") if e["device_id"] == device_id]


async def test_every_transition_with_real_traffic_and_a_restart(fleets: FleetFactory) -> None:
    fleet = await fleets.start()
    clock = fleets.clock
    acme = await fleet.account("acme")

    # New → Reporting: an unknown name registers itself; the tab before the connection goes.
    first = ok(await ongoing_get(fleet, acme, "PiZeroW0", connection="\tssid=HOME"))
    uid = device_uid(acme.id, "PiZeroW0")
    assert first == {
        "id": uid,
        "state": "Reporting",
        "connection": "ssid=HOME",
        "timestamp": int(T0.timestamp() * 1000),
        "changed": True,
        "registered": True,
    }
    assert len(uid) == 64 and int(uid, 16) >= 0
    (device,) = (await fleet.get("/api/v1/liveness", acme))["items"]
    device_id = device["device_id"]
    assert device["id"] == uid and device["name"] == "PiZeroW0" and device["kind"] == "reporter"
    assert (await row(fleet, device_id))["due_at"] == T0.replace(second=5, minute=1)  # 60 + 5 s
    assert await fleet.get(f"/api/v1/devices/{device_id}/details", acme) == {"friendly_name": None}
    registered = await fleet.events("device.registered")
    assert [e["data"]["id"] for e in registered] == [uid]

    # The same report again: recorded (the timer moves), but no StateChange.
    clock.advance(30)
    again = ok(await ongoing_get(fleet, acme, "PiZeroW0", connection="\tssid=HOME"))
    assert again["changed"] is False and again["registered"] is False
    assert again["timestamp"] == first["timestamp"]  # still the time of the last change
    assert (await row(fleet, device_id))["due_at"] == clock.now.replace(minute=1, second=35)
    assert len(await state_changes(fleet, device_id)) == 1

    # POST with a form report, no connection in the query: the report's connection_used counts.
    clock.advance(30)
    report = {
        "connection_used": {"SSID": "OFFICE"},
        "connections": [
            {"connection": {"SSID": "OFFICE"}, "stats": {"power_dbs": -60}},
            {"connection": {"Ethernet": "b8:27:eb:00:00:01"}, "stats": {"power_dbs": None}},
        ],
    }
    moved = ok(await post_report(fleet, acme, "ongoing", "PiZeroW0", report, period="60"))
    assert moved["state"] == "Reporting" and moved["connection"] == "ssid=OFFICE"
    assert moved["changed"] is True  # same state, another connection: the views must follow
    armed_at = clock.now
    stored = await row(fleet, device_id)
    assert stored["last_report"]["connections"][1]["connection"] == "ethernet=b8:27:eb:00:00:01"

    # Reporting → Offline when the timer fires (period + 5 s after the last report), not before.
    clock.advance(64.9)
    await fleet.run_job("liveness-timers")
    assert (await fleet.get(f"/api/v1/devices/{device_id}/liveness", acme))["state"] == "Reporting"
    clock.advance(0.2)
    await fleet.run_job("liveness-timers")
    offline = await fleet.get(f"/api/v1/devices/{device_id}/liveness", acme)
    assert offline["state"] == "Offline" and offline["due_at"] is None
    assert offline["since"] == clock.now.isoformat()
    (alarm,) = await open_offline_alarms(fleet, acme, device_id)
    assert alarm["priority"] == "HIGH" and alarm["event_state"] == "ACTIVE"
    raised = await fleet.events("alarm.raised")
    assert [(e["device_id"], e["data"]["id"]) for e in raised] == [(device_id, alarm["id"])]
    offline_ids = [
        d["id"] for d in (await fleet.get("/api/v1/devices", acme, state="offline"))["items"]
    ]
    assert offline_ids == [device_id]
    assert (await fleet.get("/api/v1/devices", acme, state="Reporting"))["items"] == []
    assert armed_at < clock.now

    # Offline → Reporting on the next report, and the Offline alarm is cleared.
    clock.advance(10)
    back = ok(await ongoing_get(fleet, acme, "PiZeroW0", connection="ssid=OFFICE", period="30"))
    assert back["state"] == "Reporting" and back["changed"] is True
    assert await open_offline_alarms(fleet, acme, device_id) == []
    cleared = await fleet.events("alarm.cleared")
    assert [(e["device_id"], e["data"]["id"]) for e in cleared] == [(device_id, alarm["id"])]
    assert (await row(fleet, device_id))["period_seconds"] == 30

    # Reporting → Stopped (POST stop without a report): the timer is disarmed for good.
    clock.advance(5)
    stop = ok(await post_report(fleet, acme, "stop", "PiZeroW0", None))
    assert stop["state"] == "Stopped" and stop["connection"] == "ssid=OFFICE"
    assert (await row(fleet, device_id))["due_at"] is None
    clock.advance(3600)
    await fleet.run_job("liveness-timers")
    assert (await fleet.get(f"/api/v1/devices/{device_id}/liveness", acme))["state"] == "Stopped"

    # Stopped → Reporting, armed; then Fleet restarts (new app, new runtime, same database)
    # before the timer is due; the new process fires it.
    ok(await ongoing_get(fleet, acme, "PiZeroW0", connection="ssid=OFFICE", period="20"))
    due = (await row(fleet, device_id))["due_at"]
    assert due == clock.now + timedelta(seconds=25)
    await fleets.stop(fleet)
    fleet = await fleets.start()
    clock.advance(24)
    await fleet.run_job("liveness-timers")
    assert (await fleet.get(f"/api/v1/devices/{device_id}/liveness", acme))["state"] == "Reporting"
    clock.advance(1.5)
    await fleet.run_job("liveness-timers")
    assert (await fleet.get(f"/api/v1/devices/{device_id}/liveness", acme))["state"] == "Offline"
    assert len(await open_offline_alarms(fleet, acme, device_id)) == 1

    # Offline → Stopped: a stop while Offline also clears the alarm.
    ok(await post_report(fleet, acme, "stop", "PiZeroW0", None))
    assert await open_offline_alarms(fleet, acme, device_id) == []

    assert await history(fleet, acme, device_id) == [
        ("New", "Reporting", "ssid=HOME"),
        ("Reporting", "Reporting", "ssid=OFFICE"),
        ("Reporting", "Offline", "ssid=OFFICE"),
        ("Offline", "Reporting", "ssid=OFFICE"),
        ("Reporting", "Stopped", "ssid=OFFICE"),
        ("Stopped", "Reporting", "ssid=OFFICE"),
        ("Reporting", "Offline", "ssid=OFFICE"),
        ("Offline", "Stopped", "ssid=OFFICE"),
    ]
    changes = await state_changes(fleet, device_id)
    assert [(c["previous"], c["state"]) for c in changes] == [
        (p, s) for p, s, _ in await history(fleet, acme, device_id)
    ]
    assert all(c["id"] == uid and isinstance(c["timestamp"], int) for c in changes)


async def test_a_first_stop_and_new_devices(fleet: Fleet) -> None:
    acme = await fleet.account("acme")
    # New → Stopped: a device whose first words are "stop".
    stopped = ok(
        await fleet.client.get(
            "/report/stop", params={"device_id": "probe-2", "token": acme.ingest_token}
        )
    )
    assert stopped["state"] == "Stopped" and stopped["registered"] is True
    # A device registered by another kind is New until it reports (no liveness row yet).
    new = await fleet.get("/api/v1/devices", acme, state="New")
    assert new["items"] == []
    listed = await fleet.get("/api/v1/liveness", acme, state="Stopped")
    assert [item["name"] for item in listed["items"]] == ["probe-2"]
    async with fleet.runtime.engine.connect() as conn:
        rows = (await conn.execute(sa.select(liveness_history))).all()
        alarms = (await conn.execute(sa.select(alarm_events))).all()
    assert [(r.previous, r.state) for r in rows] == [("New", "Stopped")]
    assert alarms == []


async def test_refusals_say_why(fleet: Fleet) -> None:
    acme = await fleet.account("acme")
    token = acme.ingest_token

    async def refused(status: int, method: str, url: str, **kwargs: Any) -> str:
        response = await fleet.client.request(method, url, **kwargs)
        assert response.status_code == status, (url, kwargs, response.text)
        detail: str = response.json()["detail"]
        return detail

    q = {"token": token}
    assert "device_id is missing" in await refused(400, "GET", "/report/ongoing", params=q)
    assert "device_id is missing" in await refused(
        400, "GET", "/report/ongoing", params={**q, "device_id": "  "}
    )
    assert "period must be a number" in await refused(
        400, "GET", "/report/ongoing", params={**q, "device_id": "a", "period": "soon"}
    )
    assert "period must be more than 0" in await refused(
        400, "GET", "/report/ongoing", params={**q, "device_id": "a", "period": "0"}
    )
    assert "period must be more than 0" in await refused(
        400, "GET", "/report/ongoing", params={**q, "device_id": "a", "period": "nan"}
    )
    assert "report is not valid JSON" in await refused(
        400, "POST", "/report/ongoing", params={**q, "device_id": "a"}, data={"report": "{oops"}
    )
    assert "connection_used must be" in await refused(
        400,
        "POST",
        "/report/ongoing",
        params={**q, "device_id": "a"},
        data={"report": json.dumps({"connection_used": {"Carrier": "pigeon"}})},
    )
    assert "power_dbs" in await refused(
        400,
        "POST",
        "/report/stop",
        params={**q, "device_id": "a"},
        data={
            "report": json.dumps(
                {"connections": [{"connection": {"SSID": "x"}, "stats": {"power_dbs": "loud"}}]}
            )
        },
    )
    assert "expected a form" in await refused(
        400, "POST", "/report/ongoing", params={**q, "device_id": "a"}, json={"report": {}}
    )
    assert "control characters" in await refused(
        400, "GET", "/report/ongoing", params={**q, "device_id": "a\x01b"}
    )
    # Credentials: none, a wrong one, an API key (not an ingest token) → 401.
    params = {"device_id": "a"}
    assert "missing ingest token" in await refused(401, "GET", "/report/ongoing", params=params)
    assert "invalid ingest token" in await refused(
        401, "GET", "/report/ongoing", params={**params, "token": token + "x"}
    )
    assert "not an API key" in await refused(
        401, "POST", "/report/stop", params=params, headers=acme.api
    )
    # An ingest token opens nothing else.
    for url in ("/api/v1/devices", "/api/v1/liveness", "/api/v1/connections", "/api/device/list"):
        assert "ingest token" in await refused(401, "GET", url, headers=acme.ingest)
    assert (await fleet.client.get("/report/sideways", params=q)).status_code == 404
    # Nothing was registered by any of this.
    assert (await fleet.get("/api/v1/liveness", acme))["items"] == []


async def test_the_same_name_in_two_accounts_is_two_devices(fleet: Fleet) -> None:
    acme, beta = await fleet.account("acme"), await fleet.account("beta")
    a = ok(await ongoing_get(fleet, acme, "probe", connection="ssid=SHARED"))
    b = ok(await ongoing_get(fleet, beta, "probe", connection="ssid=SHARED"))
    assert a["id"] != b["id"] and a["registered"] and b["registered"]
    assert a["id"] == device_uid(acme.id, "probe")
    for who, uid in ((acme, a["id"]), (beta, b["id"])):
        items = (await fleet.get("/api/v1/connections/ssid=SHARED", who))["items"]
        assert [item["id"] for item in items] == [uid]
        listed = (await fleet.get("/api/device/list", who))["items"]
        assert [item["id"] for item in listed] == [uid]
