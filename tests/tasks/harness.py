"""A real Fleet (FleetRuntime: ingest, ledger, dispatcher job) on the real broker and database,
with the simulated head-end answering over that broker, and the HTTP API in front of it."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from fleet.api import ApiContext, build_api
from fleet.config import Settings
from fleet.runtime import FleetRuntime
from fleet.store import accounts
from tests.ingest.harness import KEY, discard_session


def fleet_settings(db_url: str, host: str, port: int, base: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": db_url,
        "mqtt_url": f"mqtt://{host}:{port}",
        "mqtt_client_id": f"fleet-test-{uuid.uuid4().hex[:8]}",
        "alarm_topic_base": base,
        "alarm_topic_filter": f"{base}/pb/d/+/+",
        "alarm_hmac_key": KEY.hex(),
        "hes_topic_prefix": f"{base}/hes",
        "ingest_batch_wait_ms": 5,
        **overrides,
    }
    return Settings(**values)


@dataclass
class Fleet:
    runtime: FleetRuntime
    client: httpx.AsyncClient
    headers: dict[str, str]
    account_id: int

    async def post_task(self, body: dict[str, Any]) -> str:
        response = await self.client.post("/api/v1/tasks", headers=self.headers, json=body)
        assert response.status_code == 202, response.text
        return str(response.json()["taskId"])

    async def task(self, task_id: str, **params: Any) -> Any:
        response = await self.client.get(
            f"/api/v1/tasks/{task_id}", headers=self.headers, params=params
        )
        assert response.status_code == 200, response.text
        return response.json()

    async def finished(self, task_id: str, timeout: float = 20.0) -> Any:
        doc = await until_value(
            lambda: self.task(task_id),
            lambda d: d["status"] in ("COMPLETED", "FAILED", "CANCELLED"),
            timeout,
        )
        return doc


async def until_value(
    fetch: Callable[[], Any], done: Callable[[Any], bool], timeout: float, pause: float = 0.05
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await fetch()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not done in {timeout} s: {str(value)[:2000]}")
        await asyncio.sleep(pause)


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met in {timeout} s")
        await asyncio.sleep(0.02)


async def start_fleet(settings: Settings, *, account_id: int | None = None) -> Fleet:
    """Start a FleetRuntime; create an account unless `account_id` names one already there."""
    runtime = FleetRuntime(settings)
    async with runtime.engine.begin() as conn:
        if account_id is None:
            account_id = await accounts.create_account(conn, f"acct-{uuid.uuid4().hex[:6]}")
            await accounts.add_namespace(conn, account_id, "alarm_panel", settings.alarm_topic_base)
        key = await accounts.issue_key(conn, account_id)
    await runtime.start(migrate=False)
    app = build_api(ApiContext(settings=settings, engine=runtime.engine, commands=runtime.commands))
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
    return Fleet(runtime, client, {"Authorization": f"Bearer {key}"}, account_id)


async def stop_fleet(fleet: Fleet, *, keep_session: bool = False) -> None:
    await fleet.client.aclose()
    await fleet.runtime.stop()
    if not keep_session:
        settings = fleet.runtime.settings
        broker = fleet.runtime.broker
        discard_session(broker.host, broker.port, settings.mqtt_client_id)
