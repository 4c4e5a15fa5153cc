import base64
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fleet.api import ApiContext, build_api
from fleet.api.schemas import AlarmType, ChangeType, CommandStatus, EventState, Priority
from fleet.config import Settings
from fleet.services.commands import CommandService
from fleet.store import accounts
from fleet.store.engine import create_engine
from fleet.store.tables import ALARM_TYPES, CHANGE_TYPES, COMMAND_STATUSES, EVENT_STATES, PRIORITIES
from tests.api.conftest import T0, Api, Tenant


def api_operations(api: Api) -> list[tuple[str, str]]:
    return [
        (method.upper(), path)
        for path, operations in api.app.openapi()["paths"].items()
        for method in operations
        if path.startswith("/api/")
    ]


def test_enum_names_match_the_schema() -> None:
    for literal, names in (
        (ChangeType, CHANGE_TYPES),
        (AlarmType, ALARM_TYPES),
        (EventState, EVENT_STATES),
        (Priority, PRIORITIES),
        (CommandStatus, COMMAND_STATUSES),
    ):
        assert literal.__args__ == names  # type: ignore[attr-defined]


async def test_every_api_route_needs_an_api_key(api: Api) -> None:
    acme = await api.seed.tenant("acme")
    async with api.engine.begin() as conn:
        ingest_key = await accounts.issue_key(conn, acme.id, kind="ingest")
    attempts = {
        "missing": {},
        "not bearer": {"Authorization": f"Basic {acme.key}"},
        "empty": {"Authorization": "Bearer "},
        "unknown": {"Authorization": "Bearer fleet_nope"},
        "too long": {"Authorization": "Bearer " + "x" * 5000},
        "ingest": {"Authorization": f"Bearer {ingest_key}"},
    }
    operations = api_operations(api)
    assert len(operations) >= 12
    for method, path in operations:
        url = path.replace("{device_id}", "1").replace("{alarm_id}", "1")
        url = url.replace("{command_id}", "1")
        for why, headers in attempts.items():
            response = await api.client.request(method, url, headers=headers)
            assert response.status_code == 401, (method, url, why)
            assert response.headers["www-authenticate"] == "Bearer"
            assert isinstance(response.json()["detail"], str)
            if why == "ingest":
                assert "ingest token" in response.json()["detail"]
    ok = await api.client.get("/api/v1/devices", headers=acme.headers)
    assert ok.status_code == 200


async def test_health_and_metrics_need_no_key(api: Api) -> None:
    health = await api.client.get("/healthz")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    metrics = await api.client.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "python_info" in metrics.text or "process_" in metrics.text
    docs = await api.client.get("/docs")
    assert docs.status_code == 200
    assert (await api.client.get("/openapi.json")).json()["info"]["title"] == "Fleet"


def _cursor(data: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


async def _seeded(api: Api) -> tuple[Tenant, int, int]:
    acme = await api.seed.tenant("acme")
    device_id = await api.seed.device(acme)
    await api.seed.heartbeat(device_id, T0)
    alarm_id = await api.seed.alarm(device_id, T0)
    return acme, device_id, alarm_id


BAD_IDS = ["abc", "-1", "0", "1.5", "2147483648", "99999999999999999999999", "%00", "1e3"]
BAD_CURSORS = [
    "garbage",
    "!!!",
    "é",
    "x" * 600,
    _cursor([1]),
    _cursor({"s": "devices"}),
    _cursor({"s": "devices", "k": ["1"]}),
    _cursor({"s": "devices", "k": [2**70]}),
    _cursor({"s": "devices", "k": [True]}),
    _cursor({"s": "alarms", "k": [1]}),
    _cursor({"s": "heartbeats", "k": ["2025-01-01T00:00:00", 1]}),
    _cursor({"s": "heartbeats", "k": ["tomorrow", 1]}),
    _cursor({"s": "alarms", "k": [1, 1, "2025-01-01T00:00:00+00:00"]}),
    base64.urlsafe_b64encode(b"\xff\xfe").decode(),
]
BAD_TIMES = ["yesterday", "2025-13-45", "9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+01:00"]


async def test_no_500_on_bad_input(api: Api) -> None:
    acme, device_id, alarm_id = await _seeded(api)
    calls: list[tuple[str, str, dict[str, Any]]] = []
    for bad in BAD_IDS:
        for path in (
            "devices/{}",
            "devices/{}/heartbeats",
            "devices/{}/commands",
            "alarms/{}",
            "commands/{}",
        ):
            calls.append(("GET", "/api/v1/" + path.format(bad), {}))
        calls.append(("DELETE", f"/api/v1/devices/{bad}", {}))
        calls.append(("POST", f"/api/v1/alarms/{bad}/resolve", {}))
        calls.append(("GET", "/api/v1/alarms", {"params": {"device_id": bad}}))
    lists = (
        "/api/v1/devices",
        f"/api/v1/devices/{device_id}/heartbeats",
        "/api/v1/alarms",
        f"/api/v1/devices/{device_id}/commands",
    )
    for url in lists:
        calls += [("GET", url, {"params": {"cursor": bad}}) for bad in BAD_CURSORS]
        calls += [("GET", url, {"params": {"limit": bad}}) for bad in ("0", "-5", "501", "ten")]
    for url in lists[1:3]:
        calls += [
            ("GET", url, {"params": {key: bad}}) for bad in BAD_TIMES for key in ("since", "until")
        ]
    calls += [
        ("GET", lists[1], {"params": {"change_type": "NOISE"}}),
        ("GET", "/api/v1/alarms", {"params": {"priority": "urgent"}}),
        ("GET", "/api/v1/alarms", {"params": {"alarm_type": "panic1"}}),
        ("GET", "/api/v1/alarms", {"params": {"active": "2"}}),
        ("GET", "/api/v1/devices", {"params": {"online": "maybe"}}),
        ("GET", "/api/v1/devices", {"params": {"state": "S" * 100}}),
        ("GET", "/api/v1/devices", {"params": {"search": "q" * 1000}}),
    ]
    device_url = f"/api/v1/devices/{device_id}"
    commands_url = f"{device_url}/commands"
    json_headers = {"Content-Type": "application/json"}
    for url in (device_url, commands_url):
        method = "PATCH" if url == device_url else "POST"
        for content in (b"{", b"[]", b'"text"', b"null", b"", b"\xff\xfe", b"[" * 5000):
            calls.append((method, url, {"content": content, "headers": json_headers}))
        calls.append(
            (method, url, {"content": b'{"notes": "x"}', "headers": {"Content-Type": "text/plain"}})
        )
    nul = "a\x00b"  # PostgreSQL text cannot store it
    calls += [
        ("GET", "/api/v1/devices", {"params": {name: nul}}) for name in ("search", "state", "kind")
    ]
    calls += [
        ("PATCH", device_url, {"json": {"notes": nul}}),
        ("PATCH", device_url, {"json": {"location_desc": nul}}),
        ("POST", commands_url, {"json": {"type": "SYSTEM", "payload": {"action": "REBOOT" + nul}}}),
        ("POST", commands_url, {"json": {"type": "CONFIG", "payload": {"device": {nul: 1}}}}),
        ("POST", commands_url, {"json": {"type": "SYSTEM", "initiated_by": nul}}),
        ("PATCH", device_url, {"json": {"installation_date": "soon"}}),
        ("PATCH", device_url, {"json": {"installation_date": "9999-12-31T23:59:59-05:00"}}),
        ("PATCH", device_url, {"json": {"notes": "n" * 20000}}),
        ("PATCH", device_url, {"json": {"location_desc": 5}}),
        ("POST", commands_url, {"json": {"type": "system", "payload": {"action": "REBOOT"}}}),
        ("POST", commands_url, {"json": {"type": "SYSTEM", "payload": {"action": 2**80}}}),
        ("POST", commands_url, {"json": {"type": "OUTPUT", "payload": {"duration_seconds": -1}}}),
        ("POST", commands_url, {"json": {"type": "OTA", "payload": {"url": ["x"]}}}),
        ("POST", commands_url, {"json": {"type": "CONFIG", "payload": {"device": {"device": {}}}}}),
        ("POST", commands_url, {"json": {"type": "SYSTEM", "payload": {"a": {"b": {"c": {}}}}}}),
        ("POST", commands_url, {"json": {"type": "SYSTEM", "initiated_by": 7}}),
    ]
    for method, url, options in calls:
        response = await api.client.request(
            method, url, headers={**acme.headers, **options.pop("headers", {})}, **options
        )
        assert 400 <= response.status_code < 500, (method, url, options, response.text)
        body = response.json()
        assert isinstance(body["detail"], str) and body["detail"], (method, url, options)
        if response.status_code == 422:
            assert body["errors"] and all({"loc", "msg", "type"} == set(e) for e in body["errors"])
    # None of it changed anything.
    device = (await api.client.get(device_url, headers=acme.headers)).json()
    assert device["notes"] is None and device["installation_date"] is None
    assert (await api.client.get(f"/api/v1/alarms/{alarm_id}", headers=acme.headers)).json()[
        "active"
    ]


async def test_oversized_bodies_get_413(api: Api) -> None:
    acme, device_id, _ = await _seeded(api)
    big = {"type": "SYSTEM", "payload": {"action": "REBOOT", "pad": "x" * (70 * 1024)}}
    url = f"/api/v1/devices/{device_id}/commands"
    response = await api.client.post(url, headers=acme.headers, json=big)
    assert response.status_code == 413 and "larger than 65536" in response.json()["detail"]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while read
        yield b'{"notes": "'
        for _ in range(80):
            yield b"x" * 1024
        yield b'"}'

    response = await api.client.patch(
        f"/api/v1/devices/{device_id}",
        headers={**acme.headers, "Content-Type": "application/json"},
        content=chunks(),
    )
    assert response.status_code == 413 and response.json()["detail"].startswith("request body")
    # Even where no body is expected, a declared oversized one is refused as JSON.
    response = await api.client.post(
        "/api/v1/alarms/1/acknowledge", headers=acme.headers, content=b"x" * (65 * 1024)
    )
    assert response.status_code == 413 and response.json()["detail"]
    ok = await api.client.post(
        url, headers=acme.headers, json={"type": "SYSTEM", "payload": {"action": "REBOOT"}}
    )
    assert ok.status_code == 201


async def test_unexpected_errors_answer_json_500(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    @api.app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals")

    transport = httpx.ASGITransport(app=api.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        with caplog.at_level(logging.ERROR, logger="fleet.api.errors"):
            response = await client.get("/boom")
    assert response.status_code == 500
    assert response.json() == {"detail": "internal server error"}
    assert "secret internals" in caplog.text
    unknown = await api.client.get("/api/v2/nothing")
    assert unknown.status_code == 404 and unknown.json() == {"detail": "Not Found"}
    wrong_method = await api.client.put("/healthz")
    assert wrong_method.status_code == 405 and isinstance(wrong_method.json()["detail"], str)


async def test_database_outage_answers_503(tmp_path: Path) -> None:
    for url in (f"sqlite:///{tmp_path}/missing/dir/fleet.db", "postgresql://fleet@127.0.0.1:9/x"):
        engine = create_engine(url)
        app = build_api(ApiContext(Settings(), engine, CommandService(engine, {})))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            for path in ("/healthz", "/api/v1/devices"):
                response = await client.get(path, headers={"Authorization": "Bearer fleet_x"})
                assert response.status_code == 503, (url, path)
                assert "database unavailable" in response.json()["detail"]
        await engine.dispose()
