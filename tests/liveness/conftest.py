"""The whole Fleet app (create_app, not started: no broker, the jobs driven by hand) on a real
database, a clock the test moves, and reporters that speak HTTP like the deployed ones."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from fleet.app import create_app
from fleet.config import Settings
from fleet.runtime import FleetRuntime
from fleet.services.liveness import LivenessService
from fleet.store import accounts
from fleet.store.tables import events

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@dataclass
class Clock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


@dataclass(frozen=True)
class Account:
    id: int
    name: str
    api_key: str
    ingest_token: str

    @property
    def api(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    @property
    def ingest(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.ingest_token}"}


@dataclass
class Fleet:
    """One running Fleet (as `fleet serve` builds it) and an HTTP client on it."""

    app: FastAPI
    client: httpx.AsyncClient
    clock: Clock

    @property
    def runtime(self) -> FleetRuntime:
        runtime: FleetRuntime = self.app.state.runtime
        return runtime

    @property
    def liveness(self) -> LivenessService:
        return self.runtime.liveness

    async def run_job(self, name: str) -> Any:
        (job,) = [job for job in self.runtime.jobs if job.name == name]
        return await job.run()

    async def account(self, name: str) -> Account:
        async with self.runtime.engine.begin() as conn:
            account_id = await accounts.create_account(conn, name)
            api_key = await accounts.issue_key(conn, account_id)
            token = await accounts.issue_key(conn, account_id, kind="ingest")
        return Account(account_id, name, api_key, token)

    async def events(self, *types: str) -> list[dict[str, Any]]:
        query = sa.select(events).order_by(events.c.id)
        if types:
            query = query.where(events.c.type.in_(types))
        async with self.runtime.engine.connect() as conn:
            return [dict(row._mapping) for row in await conn.execute(query)]

    async def get(self, url: str, who: Account, **params: Any) -> Any:
        response = await self.client.get(url, headers=who.api, params=params)
        assert response.status_code == 200, (url, response.status_code, response.text)
        return response.json()


@dataclass
class FleetFactory:
    db_url: str
    clock: Clock = field(default_factory=Clock)
    started: list[Fleet] = field(default_factory=list)

    async def start(self) -> Fleet:
        """A new app and runtime on the same database: what a restart gives."""
        settings = Settings(database_url=self.db_url, mqtt_url="mqtt://127.0.0.1:1")
        app = create_app(settings, ingest=False, migrate=False)
        app.state.liveness.clock = self.clock
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://fleet")
        fleet = Fleet(app, client, self.clock)
        self.started.append(fleet)
        return fleet

    async def stop(self, fleet: Fleet) -> None:
        self.started.remove(fleet)
        await fleet.client.aclose()
        await fleet.runtime.dispose_engines()


@pytest.fixture
async def fleets(db_url: str) -> AsyncIterator[FleetFactory]:
    factory = FleetFactory(db_url)
    yield factory
    for fleet in list(factory.started):
        await factory.stop(fleet)


@pytest.fixture
async def fleet(fleets: FleetFactory) -> Fleet:
    return await fleets.start()


Report = Callable[..., Any]
