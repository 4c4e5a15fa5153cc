"""An alarm published on real MQTT reaches an open WebSocket: Mosquitto → FleetRuntime (ingest,
commit, event log, hub.notify) → hub → /api/v1/events/ws."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from fleet.api import ApiContext, build_api
from tests.events.support import Served, serve, ws_connect
from tests.events.support import Tenant as EventTenant
from tests.ingest.harness import Stack, start_stack, stop_stack

pytestmark = pytest.mark.broker


@pytest.fixture
async def stack(db_url: str, mqtt_server: tuple[str, int], topic_base: str) -> AsyncIterator[Stack]:
    host, port = mqtt_server
    running = await start_stack(db_url, host, port, topic_base)
    yield running
    await stop_stack(running)


@pytest.fixture
async def fleet_api(stack: Stack) -> AsyncIterator[Served]:
    runtime = stack.runtime
    ctx = ApiContext(
        settings=runtime.settings,
        engine=runtime.engine,
        commands=runtime.commands,
        event_hub=runtime.event_hub,
    )
    served = await serve(build_api(ctx))
    yield served
    await served.close()


async def next_event(ws: Any, kind: str, within: float = 5.0) -> dict[str, Any]:
    async with asyncio.timeout(within):
        while True:
            message = json.loads(await ws.recv())
            if message.get("type") == kind:
                return dict(message)


async def test_alarm_over_mqtt_arrives_on_an_open_websocket(
    stack: Stack, fleet_api: Served
) -> None:
    me = EventTenant(stack.account_id, stack.api_key)
    async with await ws_connect(f"{fleet_api.ws}/api/v1/events/ws?cursor=0", me) as ws:
        assert json.loads(await ws.recv())["control"] == "ready"
        panel = stack.panel(21)
        stack.send(panel.login(time.time()))
        registered = await next_event(ws, "device.registered")
        assert registered["data"]["hostname"] == panel.hostname
        published = time.monotonic()
        stack.send(panel.alarm(time.time(), "PANIC1", active=True))
        raised = await next_event(ws, "alarm.raised")
        latency = time.monotonic() - published
        assert raised["device_id"] == registered["device_id"]
        assert raised["data"]["alarm_type"] == "PANIC1" and raised["data"]["state"] == "ACTIVE"
        assert raised["cursor"] > registered["cursor"]
        assert latency < 2.0, latency  # in practice a few tens of milliseconds
        stack.send(panel.alarm(time.time(), "PANIC1", active=False))
        cleared = await next_event(ws, "alarm.cleared")
        assert cleared["data"]["id"] == raised["data"]["id"]
