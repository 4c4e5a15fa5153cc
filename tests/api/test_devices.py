from datetime import timedelta

import sqlalchemy as sa

from fleet.api.schemas import DeviceStatusOut
from fleet.store.devices import INTERNAL_STATUS_COLUMNS
from fleet.store.tables import alarm_events, command_log, device_status, devices, heartbeats
from tests.api.conftest import T0, Api

DEVICE_FIELDS = {
    "id",
    "kind",
    "uid",
    "hostname",
    "mac_address",
    "country",
    "zone",
    "latitude",
    "longitude",
    "location_desc",
    "installation_date",
    "notes",
    "active",
    "created_at",
    "updated_at",
    "status",
}


async def test_device_shape_and_status(api: Api) -> None:
    acme = await api.seed.tenant("acme")
    with_status = await api.seed.device(
        acme,
        status={
            "is_online": True,
            "device_state": "NORMAL",
            "temperature": 21.5,
            "last_seen": T0,
            "sync_attempts": 4,
            "command_sequence": 9,
        },
    )
    bare = await api.seed.device(acme)

    response = await api.client.get(f"/api/v1/devices/{with_status}", headers=acme.headers)
    assert response.status_code == 200
    device = response.json()
    assert set(device) == DEVICE_FIELDS
    assert device["id"] == with_status and device["kind"] == "alarm_panel"
    assert isinstance(device["latitude"], float) and abs(device["latitude"] + 33.4489) < 1e-6
    assert device["created_at"].endswith("+00:00")
    status = device["status"]
    assert status["is_online"] is True and status["device_state"] == "NORMAL"
    assert status["last_seen"] == T0.isoformat()
    assert not set(status) & INTERNAL_STATUS_COLUMNS
    expected = {c.name for c in device_status.c} - INTERNAL_STATUS_COLUMNS
    assert set(status) == expected == set(DeviceStatusOut.model_fields)

    response = await api.client.get(f"/api/v1/devices/{bare}", headers=acme.headers)
    assert response.json()["status"] is None


async def test_list_filters(api: Api) -> None:
    acme = await api.seed.tenant("acme")
    online = await api.seed.device(
        acme,
        hostname="ESG_ALARM_AABBCCDDEEFF",
        mac_address="AA:BB:CC:DD:EE:FF",
        status={"is_online": True, "device_state": "NORMAL"},
    )
    offline = await api.seed.device(acme, status={"is_online": False, "device_state": "ALARM"})
    never_seen = await api.seed.device(acme, kind="lorawan", hostname="gw-01", mac_address=None)

    async def ids(**params: object) -> list[int]:
        items = await api.walk("/api/v1/devices", acme, **params)
        return [item["id"] for item in items]

    assert await ids() == [online, offline, never_seen]
    assert await ids(online="true") == [online]
    assert await ids(online="false") == [offline, never_seen]
    assert await ids(state="NORMAL") == [online]
    assert await ids(state="alarm") == [offline]
    assert await ids(kind="lorawan") == [never_seen]
    assert await ids(search="ccdd") == [online]  # hostname, any case
    assert await ids(search="cc:dd:ee") == [online]  # MAC
    assert await ids(search="GW-") == [never_seen]
    assert await ids(search="%") == []  # LIKE wildcards are literal
    assert await ids(search="_") == [online, offline]  # '_' occurs in ESG_ALARM_ only


async def test_paging_walks_every_device_once_even_with_inserts(api: Api) -> None:
    acme = await api.seed.tenant("acme")
    created = [await api.seed.device(acme) for _ in range(7)]
    first = await api.client.get("/api/v1/devices", headers=acme.headers, params={"limit": 3})
    body = first.json()
    assert [d["id"] for d in body["items"]] == created[:3] and body["next_cursor"]
    created.append(await api.seed.device(acme))  # arrives between pages
    rest = await api.walk("/api/v1/devices", acme, limit=3, cursor=body["next_cursor"])
    assert [d["id"] for d in body["items"] + rest] == created
    # limit bounds
    for limit in ("0", "501", "x"):
        response = await api.client.get(
            "/api/v1/devices", headers=acme.headers, params={"limit": limit}
        )
        assert response.status_code == 422
    response = await api.client.get("/api/v1/devices", headers=acme.headers)
    assert response.json()["next_cursor"] is None


async def test_patch_manual_fields(api: Api) -> None:
    acme = await api.seed.tenant("acme")
    device_id = await api.seed.device(acme, notes="old")
    url = f"/api/v1/devices/{device_id}"
    response = await api.client.patch(
        url,
        headers=acme.headers,
        json={
            "location_desc": "Gate 3",
            "installation_date": "2024-05-01T10:00:00-04:00",
            "active": False,
        },
    )
    assert response.status_code == 200, response.text
    device = response.json()
    assert device["location_desc"] == "Gate 3" and device["active"] is False
    assert device["installation_date"] == "2024-05-01T14:00:00+00:00"
    assert device["notes"] == "old"  # omitted: unchanged

    response = await api.client.patch(url, headers=acme.headers, json={"notes": None})
    assert response.json()["notes"] is None and response.json()["location_desc"] == "Gate 3"

    for bad in ({"hostname": "evil"}, {"zone": 4}, {"active": None}, {"active": "maybe"}):
        response = await api.client.patch(url, headers=acme.headers, json=bad)
        assert response.status_code == 422, bad
        assert isinstance(response.json()["detail"], str) and response.json()["errors"]
    response = await api.client.get(url, headers=acme.headers)
    assert response.json()["active"] is False  # nothing of the rejected bodies applied


async def test_delete_cascades(api: Api) -> None:
    acme = await api.seed.tenant("acme")
    doomed = await api.seed.device(acme, status={"is_online": True})
    kept = await api.seed.device(acme, status={"is_online": True})
    for device_id in (doomed, kept):
        await api.seed.heartbeat(device_id, T0)
        await api.seed.alarm(device_id, T0)
    sent = await api.client.post(
        f"/api/v1/devices/{doomed}/commands",
        headers=acme.headers,
        json={"type": "SYSTEM", "payload": {"action": "REBOOT"}},
    )
    assert sent.status_code == 201, sent.text

    response = await api.client.delete(f"/api/v1/devices/{doomed}", headers=acme.headers)
    assert response.status_code == 204 and response.content == b""
    response = await api.client.get(f"/api/v1/devices/{doomed}", headers=acme.headers)
    assert response.status_code == 404
    response = await api.client.delete(f"/api/v1/devices/{doomed}", headers=acme.headers)
    assert response.status_code == 404

    async with api.engine.connect() as conn:
        for table, column in (
            (devices, devices.c.id),
            (device_status, device_status.c.device_id),
            (heartbeats, heartbeats.c.device_id),
            (alarm_events, alarm_events.c.device_id),
            (command_log, command_log.c.device_id),
        ):
            count = sa.select(sa.func.count()).select_from(table)
            assert await conn.scalar(count.where(column == doomed)) == 0, table.name
            if table is not command_log:
                assert await conn.scalar(count.where(column == kept)) == 1, table.name


async def test_heartbeats_filters_and_paging(api: Api) -> None:
    acme = await api.seed.tenant("acme")
    device_id = await api.seed.device(acme)
    other = await api.seed.device(acme)
    await api.seed.heartbeat(other, T0)
    for minute in range(6):
        await api.seed.heartbeat(
            device_id,
            T0 + timedelta(minutes=minute),
            change_type="ALARM" if minute % 2 else "SENSOR_DATA",
            temperature=20.0 + minute,
            panic1=bool(minute % 2),
        )
    # Two rows at the same instant: the (time, id) key must still page them apart.
    await api.seed.heartbeat(
        device_id,
        T0 + timedelta(minutes=5),
        change_type="MULTIPLE",
        change_kinds="ALARM,SENSOR_DATA",
    )
    url = f"/api/v1/devices/{device_id}/heartbeats"

    rows = await api.walk(url, acme, limit=2)
    assert len(rows) == 7
    assert [row["time"] for row in rows] == sorted((row["time"] for row in rows), reverse=True)
    assert set(rows[0]) == {
        "time",
        "temperature",
        "humidity",
        "fan_pwm_duty",
        "panic1",
        "panic2",
        "siren",
        "turret",
        "box_sw",
        "change_type",
        "change_kinds",
    }
    assert rows[0]["change_type"] == "MULTIPLE"
    assert rows[0]["change_kinds"] == ["ALARM", "SENSOR_DATA"]
    assert rows[1]["change_kinds"] == []

    alarms = await api.walk(url, acme, change_type="ALARM")
    assert [row["temperature"] for row in alarms] == [25.0, 23.0, 21.0]
    window = await api.walk(
        url, acme, since=(T0 + timedelta(minutes=1)).isoformat(), until="2025-03-01T12:03:00"
    )
    assert [row["temperature"] for row in window] == [22.0, 21.0]
    since_offset = await api.walk(url, acme, since="2025-03-01T09:04:00-03:00")
    assert len(since_offset) == 3  # 12:04Z, 12:05Z twice

    response = await api.client.get(
        url, headers=acme.headers, params={"since": T0.isoformat(), "until": T0.isoformat()}
    )
    assert response.status_code == 422 and "since" in response.json()["detail"]
    assert response.json()["errors"][0]["loc"] == ["query", "until"]
    response = await api.client.get("/api/v1/devices/999999/heartbeats", headers=acme.headers)
    assert response.status_code == 404
