from datetime import datetime, timedelta

from tests.api.conftest import T0, Api

ALARM_FIELDS = {
    "id",
    "device_id",
    "hostname",
    "sequence",
    "timestamp",
    "alarm_type",
    "event_state",
    "priority",
    "active",
    "physical_state",
    "output_type",
    "pattern_type",
    "duration_seconds",
    "elapsed_seconds",
    "acknowledged_at",
    "resolved_at",
    "created_at",
    "updated_at",
}


def minutes(n: int) -> datetime:
    return T0 + timedelta(minutes=n)


async def test_order_filters_and_paging(api: Api) -> None:
    acme = await api.seed.tenant("acme")
    gate = await api.seed.device(acme, hostname="ESG_ALARM_000000000001")
    yard = await api.seed.device(acme, hostname="ESG_ALARM_000000000002")
    seed = api.seed
    old_critical = await seed.alarm(gate, minutes(0), priority="CRITICAL", alarm_type="FIRE")
    new_high = await seed.alarm(yard, minutes(5), priority="HIGH")
    old_high = await seed.alarm(gate, minutes(1), priority="HIGH", event_state="STARTING")
    test_low = await seed.alarm(yard, minutes(2), priority="LOW", event_state="TEST")
    # Not active: resolved, or in a closed state although unresolved.
    resolved = await seed.alarm(gate, minutes(9), priority="CRITICAL", resolved_at=minutes(10))
    stopped = await seed.alarm(yard, minutes(8), priority="MEDIUM", event_state="STOPPING")
    ended = await seed.alarm(gate, minutes(7), priority="MEDIUM", event_state="INACTIVE")
    output = await seed.alarm(
        yard, minutes(3), alarm_type="OUTPUT_EVENT", priority="LOW", event_state="INACTIVE"
    )
    expected = [old_critical, new_high, old_high, test_low, resolved, stopped, ended, output]

    items = await api.walk("/api/v1/alarms", acme, limit=3)
    assert [a["id"] for a in items] == expected
    first = items[0]
    assert set(first) == ALARM_FIELDS
    assert first["alarm_type"] == "FIRE" and first["priority"] == "CRITICAL"
    assert first["event_state"] == "ACTIVE" and first["active"] is True
    assert first["hostname"] == "ESG_ALARM_000000000001" and first["device_id"] == gate
    assert first["timestamp"] == T0.isoformat()

    async def ids(**params: object) -> list[int]:
        return [a["id"] for a in await api.walk("/api/v1/alarms", acme, **params)]

    assert await ids(active="true") == expected[:4]
    assert await ids(active="false") == expected[4:]
    assert await ids(device_id=gate) == [old_critical, old_high, resolved, ended]
    assert await ids(alarm_type="OUTPUT_EVENT") == [output]
    assert await ids(priority="MEDIUM") == [stopped, ended]
    assert await ids(since=minutes(5).isoformat()) == [new_high, resolved, stopped, ended]
    assert await ids(until=minutes(2).isoformat()) == [old_critical, old_high]
    assert await ids(active="true", priority="HIGH", limit=1) == [new_high, old_high]
    for bad in ({"alarm_type": "PANIC9"}, {"priority": "high"}, {"active": "sometimes"}):
        response = await api.client.get("/api/v1/alarms", headers=acme.headers, params=bad)
        assert response.status_code == 422, bad


async def test_paging_is_stable_under_inserts(api: Api) -> None:
    acme = await api.seed.tenant("acme")
    device_id = await api.seed.device(acme)
    made = [await api.seed.alarm(device_id, minutes(i), priority="HIGH") for i in range(5)]
    page = (
        await api.client.get("/api/v1/alarms", headers=acme.headers, params={"limit": 2})
    ).json()
    assert [a["id"] for a in page["items"]] == [made[4], made[3]]
    # A newer alarm sorts before the cursor: it must not shift the pages that follow.
    await api.seed.alarm(device_id, minutes(30), priority="HIGH")
    rest = await api.walk("/api/v1/alarms", acme, limit=2, cursor=page["next_cursor"])
    assert [a["id"] for a in rest] == [made[2], made[1], made[0]]


async def test_get_acknowledge_resolve(api: Api) -> None:
    acme = await api.seed.tenant("acme")
    device_id = await api.seed.device(acme)
    alarm_id = await api.seed.alarm(device_id, T0, priority="CRITICAL", alarm_type="PANIC2")
    url = f"/api/v1/alarms/{alarm_id}"

    alarm = (await api.client.get(url, headers=acme.headers)).json()
    assert alarm["acknowledged_at"] is None and alarm["resolved_at"] is None and alarm["active"]

    acked = await api.client.post(f"{url}/acknowledge", headers=acme.headers)
    assert acked.status_code == 200, acked.text
    acknowledged_at = acked.json()["acknowledged_at"]
    assert acknowledged_at is not None and acked.json()["active"] is True
    again = await api.client.post(f"{url}/acknowledge", headers=acme.headers)
    assert again.json()["acknowledged_at"] == acknowledged_at  # the first time is kept

    resolved = (await api.client.post(f"{url}/resolve", headers=acme.headers)).json()
    assert resolved["resolved_at"] is not None and resolved["event_state"] == "INACTIVE"
    assert resolved["active"] is False
    assert resolved["acknowledged_at"] == acknowledged_at
    twice = (await api.client.post(f"{url}/resolve", headers=acme.headers)).json()
    assert twice["resolved_at"] == resolved["resolved_at"]

    active = await api.walk("/api/v1/alarms", acme, active="true")
    assert active == []
    for path in ("", "/acknowledge", "/resolve"):
        method = api.client.get if path == "" else api.client.post
        response = await method(f"/api/v1/alarms/{alarm_id + 100}{path}", headers=acme.headers)
        assert response.status_code == 404
        assert response.json() == {"detail": f"alarm {alarm_id + 100} not found"}
