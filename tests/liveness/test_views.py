"""Seed 000's tables as views (device status, connections, details), the original UI's read paths,
state history, and an admin's Stopped."""

from __future__ import annotations

from typing import Any

from fleet.integrations.reporter.wire import device_uid
from fleet.store.liveness_views import account_of
from tests.liveness.conftest import Account, Fleet


async def report(
    fleet: Fleet, who: Account, action: str, name: str, connection: str | None = None, **extra: Any
) -> dict[str, Any]:
    params = {"device_id": name, "period": "60", **extra}
    if connection is not None:
        params["connection"] = connection
    response = await fleet.client.get(f"/report/{action}", params=params, headers=who.ingest)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def ids_by_name(fleet: Fleet, who: Account) -> dict[str, int]:
    items = (await fleet.get("/api/v1/liveness", who))["items"]
    return {item["name"]: item["device_id"] for item in items}


async def test_connections_and_the_original_ui(fleet: Fleet) -> None:
    acme = await fleet.account("acme")
    for name in ("a1", "a2", "a3"):
        await report(fleet, acme, "ongoing", name, "\tssid=HOME")
    await report(fleet, acme, "stop", "a3", "ssid=HOME")
    await report(fleet, acme, "ongoing", "b1", "ssid=HOME_2")
    await report(fleet, acme, "ongoing", "e1", "ethernet=b8:27:eb:00:00:01")
    await report(fleet, acme, "ongoing", "x1")  # no connection: in no connection's list
    fleet.clock.advance(66)
    await report(fleet, acme, "ongoing", "a1", "ssid=HOME")
    assert await fleet.liveness.fire_due() == 4  # a2, b1, e1, x1

    listed = await fleet.get("/api/v1/connections", acme)
    assert listed["next_cursor"] is None
    assert listed["items"] == [
        {
            "connection": "ethernet=b8:27:eb:00:00:01",
            "devices": 1,
            "states": {"New": 0, "Reporting": 0, "Offline": 1, "Stopped": 0},
        },
        {
            "connection": "ssid=HOME",
            "devices": 3,
            "states": {"New": 0, "Reporting": 1, "Offline": 1, "Stopped": 1},
        },
        {
            "connection": "ssid=HOME_2",
            "devices": 1,
            "states": {"New": 0, "Reporting": 0, "Offline": 1, "Stopped": 0},
        },
    ]
    # Found by prefix, as the seed's key listing did; `_` is not a wildcard.
    ssids = await fleet.get("/api/v1/connections", acme, prefix="ssid=")
    assert [c["connection"] for c in ssids["items"]] == ["ssid=HOME", "ssid=HOME_2"]
    assert (await fleet.get("/api/v1/connections", acme, prefix="ssid=HOME_"))["items"][0][
        "connection"
    ] == "ssid=HOME_2"
    # Paging one connection at a time walks them all, in order.
    names, cursor = [], None
    while True:
        page = await fleet.get(
            "/api/v1/connections", acme, limit=1, **({"cursor": cursor} if cursor else {})
        )
        names += [c["connection"] for c in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert names == [c["connection"] for c in listed["items"]]
    bad = await fleet.client.get("/api/v1/connections?cursor=bm9wZQ", headers=acme.api)
    assert bad.status_code == 400 and "invalid cursor" in bad.json()["detail"]

    home = await fleet.get("/api/v1/connections/ssid=HOME", acme)
    assert [(d["name"], d["state"]) for d in home["items"]] == [
        ("a1", "Reporting"),
        ("a2", "Offline"),
        ("a3", "Stopped"),
    ]
    mac = await fleet.get("/api/v1/connections/ethernet=b8:27:eb:00:00:01", acme)
    assert [d["name"] for d in mac["items"]] == ["e1"]
    missing = await fleet.client.get("/api/v1/connections/ssid=NOWHERE", headers=acme.api)
    assert missing.status_code == 404 and missing.json() == {
        "detail": "connection ssid=NOWHERE not found"
    }

    # The original UI's paths: the same views, reporters by DeviceID.
    legacy = await fleet.get("/api/connection/list", acme)
    assert legacy["items"] == listed["items"]
    on_home = await fleet.get("/api/connection/ssid=HOME", acme)
    assert [(d["id"], d["state"]) for d in on_home["items"]] == [
        (device_uid(acme.id, "a1"), "Reporting"),
        (device_uid(acme.id, "a2"), "Offline"),
        (device_uid(acme.id, "a3"), "Stopped"),
    ]
    devices = await fleet.get("/api/device/list", acme)
    assert len(devices["items"]) == 6
    assert set(devices["items"][0]) == {"id", "state", "connection", "timestamp", "friendly_name"}
    a2 = device_uid(acme.id, "a2")
    status = await fleet.get(f"/api/device/status/{a2}", acme)
    assert status == {
        "id": a2,
        "state": "Offline",
        "connection": "ssid=HOME",
        "timestamp": status["timestamp"],
    }
    assert status["timestamp"] == int(fleet.clock.now.timestamp() * 1000)
    assert await fleet.get(f"/api/device/details/{a2}", acme) == {"friendly_name": None}
    for url in (f"/api/device/status/{'0' * 64}", "/api/device/details/nope"):
        response = await fleet.client.get(url, headers=acme.api)
        assert response.status_code == 404 and "not found" in response.json()["detail"]


async def test_details_are_editable(fleet: Fleet) -> None:
    acme = await fleet.account("acme")
    await report(fleet, acme, "ongoing", "pi", "ssid=HOME")
    device_id = (await ids_by_name(fleet, acme))["pi"]
    url = f"/api/v1/devices/{device_id}/details"
    assert await fleet.get(url, acme) == {"friendly_name": None}
    put = await fleet.client.put(url, headers=acme.api, json={"friendly_name": "Kitchen Pi"})
    assert put.status_code == 200 and put.json() == {"friendly_name": "Kitchen Pi"}
    assert await fleet.get(url, acme) == {"friendly_name": "Kitchen Pi"}
    uid = device_uid(acme.id, "pi")
    assert (await fleet.get(f"/api/device/details/{uid}", acme))["friendly_name"] == "Kitchen Pi"
    assert (await fleet.get("/api/v1/liveness", acme))["items"][0]["friendly_name"] == "Kitchen Pi"
    bad = await fleet.client.put(url, headers=acme.api, json={"friendly_name": 5, "x": 1})
    assert bad.status_code == 422
    # Reports do not overwrite what an admin wrote.
    await report(fleet, acme, "stop", "pi")
    assert await fleet.get(url, acme) == {"friendly_name": "Kitchen Pi"}


async def test_an_admin_stops_a_device_and_it_raises_nothing(fleet: Fleet) -> None:
    acme = await fleet.account("acme")
    await report(fleet, acme, "ongoing", "pi", "ssid=HOME")
    device_id = (await ids_by_name(fleet, acme))["pi"]
    url = f"/api/v1/devices/{device_id}/liveness"
    fleet.clock.advance(70)
    await fleet.run_job("liveness-timers")
    alarms = await fleet.get("/api/v1/alarms", acme, active="true")
    assert [a["alarm_type"] for a in alarms["items"]] == ["OFFLINE"]

    stopped = await fleet.client.post(url, headers=acme.api, json={"state": "Stopped"})
    assert stopped.status_code == 200, stopped.text
    assert stopped.json()["state"] == "Stopped" and stopped.json()["stopped_by_admin"] is True
    assert (await fleet.get("/api/v1/alarms", acme, active="true"))["items"] == []
    # Reports are recorded but change nothing; no timer, no alarm, however long it is silent.
    held = await report(fleet, acme, "ongoing", "pi", "ssid=WORK")
    assert held["state"] == "Stopped" and held["changed"] is False
    fleet.clock.advance(3600)
    await fleet.run_job("liveness-timers")
    current = await fleet.get(url, acme)
    assert current["state"] == "Stopped" and current["due_at"] is None
    assert current["connection"] == "ssid=WORK"
    assert (await fleet.get("/api/v1/alarms", acme, active="true"))["items"] == []

    monitored = await fleet.client.post(url, headers=acme.api, json={"state": "Monitored"})
    assert monitored.json()["state"] == "Stopped" and monitored.json()["stopped_by_admin"] is False
    assert (await report(fleet, acme, "ongoing", "pi", "ssid=WORK"))["state"] == "Reporting"
    for body in ({"state": "Offline"}, {}, {"state": "Stopped", "why": "x"}):
        response = await fleet.client.post(url, headers=acme.api, json=body)
        assert response.status_code == 422, body
    gone = await fleet.client.post(
        "/api/v1/devices/999999/liveness", headers=acme.api, json={"state": "Stopped"}
    )
    assert gone.status_code == 404 and gone.json() == {"detail": "device 999999 not found"}

    history = await fleet.get(f"{url}/history", acme, limit=2)
    assert [(h["previous"], h["state"]) for h in history["items"]] == [
        ("Stopped", "Reporting"),
        ("Offline", "Stopped"),
    ]
    older = await fleet.get(f"{url}/history", acme, limit=2, cursor=history["next_cursor"])
    assert [(h["previous"], h["state"]) for h in older["items"]] == [
        ("Reporting", "Offline"),
        ("New", "Reporting"),
    ]
    assert older["next_cursor"] is None


async def test_device_account_mapping(fleet: Fleet) -> None:
    """DEVICE_ACCOUNT_MAPPING: every device's account, for Fleet's own use."""
    acme, beta = await fleet.account("acme"), await fleet.account("beta")
    await report(fleet, acme, "ongoing", "pi")
    await report(fleet, beta, "ongoing", "pi")
    async with fleet.runtime.engine.connect() as conn:
        for who in (acme, beta):
            (device_id,) = (await ids_by_name(fleet, who)).values()
            assert await account_of(conn, device_id) == who.id
        assert await account_of(conn, 999_999) is None
