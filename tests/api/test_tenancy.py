"""No call made with one account's key can read, change or learn of another account's rows.

The test walks the app's own OpenAPI document, so a route added later is covered (or makes this
test fail until someone says what body it takes)."""

from dataclasses import dataclass
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from fleet.store.tables import alarm_events, command_log, device_status, devices, heartbeats
from tests.api.conftest import T0, Api, Tenant

# Valid bodies, so that a request gets past validation and really tries to act.
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("PATCH", "/api/v1/devices/{device_id}"): {"notes": "taken over", "active": False},
    ("POST", "/api/v1/devices/{device_id}/commands"): {
        "type": "SYSTEM",
        "payload": {"action": "REBOOT"},
    },
}
# The core API this file checks; tests/liveness/test_visibility.py checks every route of the
# spec generically, including the ones later capabilities add.
CORE = {
    ("GET", "/api/v1/devices"),
    ("GET", "/api/v1/devices/{device_id}"),
    ("PATCH", "/api/v1/devices/{device_id}"),
    ("DELETE", "/api/v1/devices/{device_id}"),
    ("GET", "/api/v1/devices/{device_id}/heartbeats"),
    ("POST", "/api/v1/devices/{device_id}/commands"),
    ("GET", "/api/v1/devices/{device_id}/commands"),
    ("GET", "/api/v1/commands/{command_id}"),
    ("GET", "/api/v1/alarms"),
    ("GET", "/api/v1/alarms/{alarm_id}"),
    ("POST", "/api/v1/alarms/{alarm_id}/acknowledge"),
    ("POST", "/api/v1/alarms/{alarm_id}/resolve"),
}
MISSING = 1_000_000  # an id no row has
IDS = ("device_id", "alarm_id", "command_id")


@dataclass
class Operation:
    method: str
    path: str
    in_path: list[str]
    in_query: list[str]
    body: dict[str, Any] | None

    async def call(self, api: Api, caller: Tenant, ids: dict[str, int]) -> httpx.Response:
        return await api.client.request(
            self.method,
            self.path.format(**ids),
            params={name: ids[name] for name in self.in_query},
            json=self.body,
            headers=caller.headers,
        )


async def snapshot(engine: AsyncEngine, account_id: int) -> dict[str, list[tuple[Any, ...]]]:
    owned = sa.select(devices.c.id).where(devices.c.account_id == account_id)
    queries = {
        "devices": sa.select(devices).where(devices.c.account_id == account_id),
        "device_status": sa.select(device_status).where(device_status.c.device_id.in_(owned)),
        "heartbeats": sa.select(heartbeats).where(heartbeats.c.device_id.in_(owned)),
        "alarm_events": sa.select(alarm_events).where(alarm_events.c.device_id.in_(owned)),
        "command_log": sa.select(command_log).where(command_log.c.device_id.in_(owned)),
    }
    async with engine.connect() as conn:
        return {
            name: sorted(tuple(row) for row in (await conn.execute(query)))
            for name, query in queries.items()
        }


async def test_another_accounts_ids_are_not_found(api: Api) -> None:
    alpha = await api.seed.tenant("alpha")
    beta = await api.seed.tenant("beta")
    a_hostname = "ESG_ALARM_A1A1A1A1A1A1"
    a_device = await api.seed.device(
        alpha, hostname=a_hostname, mac_address="A1:A1:A1:A1:A1:A1", status={"is_online": True}
    )
    await api.seed.heartbeat(a_device, T0)
    a_alarm = await api.seed.alarm(a_device, T0)
    reboot = BODIES[("POST", "/api/v1/devices/{device_id}/commands")]
    sent = await api.client.post(
        f"/api/v1/devices/{a_device}/commands", headers=alpha.headers, json=reboot
    )
    a_command = sent.json()["id"]
    # Beta has rows of its own, so its lists are not trivially empty.
    b_device = await api.seed.device(beta, status={"is_online": True})
    await api.seed.alarm(b_device, T0)
    await api.seed.heartbeat(b_device, T0)

    before = await snapshot(api.engine, alpha.id)
    published = list(api.publisher.published)
    alpha_ids = {"device_id": a_device, "alarm_id": a_alarm, "command_id": a_command}
    missing_ids = dict.fromkeys(alpha_ids, MISSING)

    operations = []
    for path, methods in api.app.openapi()["paths"].items():
        for method, operation in methods.items():
            if path.startswith("/api/"):
                assert operation.get("security"), (method, path)  # no API route is open
            if (method.upper(), path) not in CORE:
                continue
            params = operation.get("parameters", [])
            body = BODIES[(method.upper(), path)] if "requestBody" in operation else None
            operations.append(
                Operation(
                    method.upper(),
                    path,
                    in_path=[p["name"] for p in params if p["in"] == "path"],
                    in_query=[p["name"] for p in params if p["in"] == "query" and p["name"] in IDS],
                    body=body,
                )
            )

    for op in operations:
        response = await op.call(api, beta, alpha_ids)
        assert a_hostname not in response.text, op
        if op.in_path:
            # Exactly what an id that does not exist at all gets: nothing to learn from.
            assert response.status_code == 404, (op, response.text)
            ghost = await op.call(api, beta, missing_ids)
            assert ghost.status_code == 404
            expected = ghost.json()["detail"].replace(str(MISSING), str(alpha_ids[op.in_path[0]]))
            assert response.json()["detail"] == expected
        else:
            assert response.status_code == 200, (op, response.text)
            if op.in_query:
                assert response.json()["items"] == [], op
            else:
                assert response.json()["items"], op  # beta's own rows, and only those

    assert {(op.method, op.path) for op in operations} == CORE
    assert await snapshot(api.engine, alpha.id) == before
    assert api.publisher.published == published
