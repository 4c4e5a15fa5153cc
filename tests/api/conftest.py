"""The API against real databases: the app from build_api, the real CommandService and alarm-panel
transport, and a publisher that only records what would go on the wire."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from fleet.api import ApiContext, build_api
from fleet.config import Settings
from fleet.events import EventHub
from fleet.integrations.alarm_panel.transport import AlarmPanelTransport
from fleet.services.commands import CommandService
from fleet.store import accounts
from fleet.store.tables import alarm_events, device_status, devices, heartbeats

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


class RecordingPublisher:
    """The broker link, faked only at the wire: records each publish, or refuses the next ones
    like a disconnected client when `refuse` is set."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes, int]] = []
        self.refuse = 0

    def publish(self, topic: str, payload: bytes, qos: int = 0) -> None:
        if self.refuse:
            self.refuse -= 1
            raise ConnectionError("not connected")
        self.published.append((topic, payload, qos))


@dataclass(frozen=True)
class Tenant:
    id: int
    name: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@dataclass
class Seeder:
    """Plain inserts into the tables, as the ingest would leave them."""

    engine: AsyncEngine
    _macs: itertools.count[int] = field(default_factory=lambda: itertools.count(0x0483080C0001))

    async def tenant(self, name: str) -> Tenant:
        async with self.engine.begin() as conn:
            account_id = await accounts.create_account(conn, name)
            key = await accounts.issue_key(conn, account_id)
            await accounts.add_namespace(conn, account_id, "alarm_panel", f"ns-{name}")
        return Tenant(account_id, name, key)

    async def device(
        self, tenant: Tenant, *, status: dict[str, Any] | None = None, **values: Any
    ) -> int:
        digits = f"{next(self._macs):012X}"
        mac = ":".join(digits[i : i + 2] for i in range(0, 12, 2))
        row = {
            "account_id": tenant.id,
            "kind": "alarm_panel",
            "uid": mac,
            "namespace": f"ns-{tenant.name}",
            "mac_address": mac,
            "hostname": f"ESG_ALARM_{digits}",
            "country": "CL",
            "zone": 3,
            "latitude": -33.4489,
            "longitude": -70.6693,
            **values,
        }
        async with self.engine.begin() as conn:
            result = await conn.execute(sa.insert(devices).values(row).returning(devices.c.id))
            device_id = int(result.scalar_one())
            if status is not None:
                await conn.execute(sa.insert(device_status).values(device_id=device_id, **status))
        return device_id

    async def heartbeat(
        self, device_id: int, time: datetime, change_type: str = "PERIODIC", **values: Any
    ) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                sa.insert(heartbeats).values(
                    device_id=device_id, time=time, change_type=change_type, **values
                )
            )

    async def alarm(
        self,
        device_id: int,
        timestamp: datetime,
        *,
        alarm_type: str = "PANIC1",
        event_state: str = "ACTIVE",
        priority: str = "HIGH",
        **values: Any,
    ) -> int:
        async with self.engine.begin() as conn:
            result = await conn.execute(
                sa.insert(alarm_events)
                .values(
                    device_id=device_id,
                    timestamp=timestamp,
                    alarm_type=alarm_type,
                    event_state=event_state,
                    priority=priority,
                    **values,
                )
                .returning(alarm_events.c.id)
            )
            return int(result.scalar_one())


@dataclass
class Api:
    app: FastAPI
    client: httpx.AsyncClient
    engine: AsyncEngine
    publisher: RecordingPublisher
    commands: CommandService
    seed: Seeder

    async def walk(self, url: str, tenant: Tenant, **params: Any) -> list[Any]:
        """Follow next_cursor to the end; returns every item in order."""
        items: list[Any] = []
        cursor = None
        for _ in range(1000):
            query = {**params, **({"cursor": cursor} if cursor else {})}
            response = await self.client.get(url, headers=tenant.headers, params=query)
            assert response.status_code == 200, response.text
            body = response.json()
            assert set(body) == {"items", "next_cursor"}
            items.extend(body["items"])
            cursor = body["next_cursor"]
            if cursor is None:
                return items
        raise AssertionError("paging never ended")


@pytest.fixture
async def api(engine: AsyncEngine) -> AsyncIterator[Api]:
    publisher = RecordingPublisher()
    commands = CommandService(
        engine, {"alarm_panel": AlarmPanelTransport(publisher=publisher, hmac_key=bytes(32))}
    )
    hub = EventHub(engine)  # the event stream, as create_app wires it (GET /api/v1/events)
    await hub.start()
    app = build_api(
        ApiContext(settings=Settings(), engine=engine, commands=commands, event_hub=hub)
    )
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield Api(app, client, engine, publisher, commands, Seeder(engine))
    finally:
        await hub.stop()
