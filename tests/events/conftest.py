from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from fleet.config import Settings
from fleet.events import EventHub
from tests.events.support import Served, Tenant, api_app, serve, tenant

BUFFER = 1000  # the per-client buffer of the hubs under test (the default)


@pytest.fixture
async def hub(engine: AsyncEngine) -> AsyncIterator[EventHub]:
    running = EventHub(engine, client_buffer=BUFFER)
    await running.start()
    await running.wait_ready()
    yield running
    await running.stop()


@pytest.fixture
async def alice(engine: AsyncEngine) -> Tenant:
    return await tenant(engine, "alice")


@pytest.fixture
async def bob(engine: AsyncEngine) -> Tenant:
    return await tenant(engine, "bob")


@pytest.fixture
async def served(db_url: str, engine: AsyncEngine, hub: EventHub) -> AsyncIterator[Served]:
    running = await serve(api_app(Settings(database_url=db_url), engine, hub))
    yield running
    await running.close()


@pytest.fixture
async def http(served: Served) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=served.http, timeout=10) as client:
        yield client
