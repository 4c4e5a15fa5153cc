"""create_app(settings): the HTTP API with Fleet's runtime (broker link, ingest, jobs) around it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from fleet.api.app import build_api
from fleet.api.context import ApiContext
from fleet.config import Settings
from fleet.runtime import FleetRuntime
from fleet.web.site import mount_web


def create_app(settings: Settings, *, ingest: bool = True, migrate: bool = True) -> FastAPI:
    runtime = FleetRuntime(settings, ingest=ingest)
    app = build_api(
        ApiContext(
            settings=settings,
            engine=runtime.engine,
            commands=runtime.commands,
            event_hub=runtime.event_hub,
        )
    )
    mount_web(app)  # the dashboard (fleet/web/)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await runtime.start(migrate=migrate)
        try:
            yield
        finally:
            await runtime.stop()

    app.router.lifespan_context = lifespan
    app.state.runtime = runtime
    app.state.liveness = runtime.liveness  # the API and the timer jobs share it
    return app
