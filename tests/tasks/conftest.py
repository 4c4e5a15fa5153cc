"""Tasks and the ledger against real databases: the API from build_api with the real
CommandService (alarm-panel and meter transports), the real dispatcher and a clock the test
moves; the broker is faked only at the wire (RecordingPublisher)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from fleet.api import ApiContext, build_api
from fleet.config import Settings
from fleet.core.ledger import Answer
from fleet.integrations.alarm_panel.transport import AlarmPanelTransport
from fleet.integrations.meter_hes.transport import MeterHesTransport
from fleet.jobs.dispatcher import TaskDispatcher
from fleet.services.commands import CommandService, Response, apply_responses_in
from fleet.store.task_targets import register
from tests.api.conftest import RecordingPublisher, Seeder, Tenant

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SET_TOU = {"commandType": "SET_TOU", "commandParams": {"tou_profile_id": "TOU-2025-TEST"}}


@dataclass
class TaskApi:
    client: httpx.AsyncClient
    engine: AsyncEngine
    publisher: RecordingPublisher
    commands: CommandService
    dispatcher: TaskDispatcher
    seed: Seeder
    now: datetime = T0

    def at(self, moment: datetime) -> None:
        self.now = moment
        self.commands.clock = lambda: moment

    def later(self, seconds: float) -> None:
        self.at(self.now + timedelta(seconds=seconds))

    async def meters(self, tenant: Tenant, *uids: str, tags: list[str] | None = None) -> list[int]:
        async with self.engine.begin() as conn:
            found = await register(conn, tenant.id, "meter", list(uids), tags=tags)
        return [f.id for f in found]

    async def create(self, tenant: Tenant, body: dict[str, Any], status: int = 202) -> Any:
        response = await self.client.post("/api/v1/tasks", headers=tenant.headers, json=body)
        assert response.status_code == status, response.text
        return response.json()

    async def task(self, tenant: Tenant, task_id: str, **params: Any) -> Any:
        response = await self.client.get(
            f"/api/v1/tasks/{task_id}", headers=tenant.headers, params=params
        )
        assert response.status_code == 200, response.text
        return response.json()

    def hes_commands(self) -> list[dict[str, Any]]:
        return [json.loads(p) for t, p, _q in self.publisher.published if t.endswith("/command")]

    async def answer(self, command: dict[str, Any], status: str = "SUCCESS") -> str:
        """The head-end's answer, applied as the ingest applies it."""
        answer = {"SUCCESS": Answer.SUCCESS, "FAILED": Answer.FAILURE, "ACK": Answer.ACK}[status]
        async with self.engine.begin() as conn:
            [result] = await apply_responses_in(
                conn,
                [
                    Response(
                        command["commandId"],
                        answer,
                        message="" if status != "FAILED" else "meter refused",
                        device_uid=command["deviceId"],
                    )
                ],
                self.now,
            )
        return result.result


@pytest.fixture
async def tapi(engine: AsyncEngine) -> AsyncIterator[TaskApi]:
    publisher = RecordingPublisher()
    commands = CommandService(
        engine,
        {
            "alarm_panel": AlarmPanelTransport(publisher=publisher, hmac_key=bytes(32)),
            "meter": MeterHesTransport(publisher, "hes"),
        },
        timeout_seconds=30,
        max_retries=1,
        clock=lambda: T0,
    )
    dispatcher = TaskDispatcher(engine, commands, batch_max=500, slice_seconds=5)
    app = build_api(ApiContext(settings=Settings(), engine=engine, commands=commands))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield TaskApi(client, engine, publisher, commands, dispatcher, Seeder(engine))
