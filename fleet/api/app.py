"""`build_api(ctx)`: the FastAPI application of Fleet's HTTP API.

Nothing happens at import time; the caller owns the engine, the command service and the
lifespan (ingest, broker link) and passes them in.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

from fastapi import APIRouter, Depends, FastAPI
from pydantic import BaseModel
from starlette.types import Lifespan

from fleet.api.context import ApiContext
from fleet.api.deps import get_principal
from fleet.api.errors import EXCEPTION_HANDLERS, MAX_BODY_BYTES, BodySizeLimit
from fleet.api.redact import redact_tokens_in_access_log
from fleet.api.routes import (
    alarms,
    commands,
    connections,
    devices,
    events,
    health,
    legacy_ui,
    liveness,
    registry,
    reporters,
    stats,
    tasks,
)
from fleet.api.schemas import ErrorOut

API_PREFIX = "/api/v1"

DESCRIPTION = """\
Devices, their live status and history, alarms and commands of one account.

Every `/api/v1` call needs `Authorization: Bearer <key>` with an API key of the account.
Errors are JSON `{"detail": "..."}`; lists are `{"items": [...], "next_cursor": ...}`: pass
`cursor=<next_cursor>` for the next page until it is null.
"""


class ValidationErrorItem(BaseModel):
    loc: list[str]
    msg: str
    type: str


class ValidationErrorOut(BaseModel):
    detail: str
    errors: list[ValidationErrorItem]


# Documented once for every /api/v1 route; it also replaces FastAPI's default 422 schema,
# which describes a different body than the one errors.py sends.
API_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "Missing or invalid API key"},
    413: {"model": ErrorOut, "description": "Request body too large"},
    422: {"model": ValidationErrorOut, "description": "Invalid input"},
}


def _version() -> str:
    try:
        return metadata.version("fleet")
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        return "0.0.0"


def build_api(ctx: ApiContext, *, lifespan: Lifespan[FastAPI] | None = None) -> FastAPI:
    app = FastAPI(
        title="Fleet",
        version=_version(),
        description=DESCRIPTION,
        lifespan=lifespan,
        exception_handlers=EXCEPTION_HANDLERS,
    )
    # Dependencies find the context here rather than in a global, so several apps (tests) can
    # run side by side.
    app.state.ctx = ctx
    app.add_middleware(BodySizeLimit, max_bytes=MAX_BODY_BYTES)

    # The key is checked on the router as well as in each route (FastAPI resolves it once per
    # request), so a route that forgets to ask for the principal is still never open.
    api = APIRouter(
        prefix=API_PREFIX, dependencies=[Depends(get_principal)], responses=API_RESPONSES
    )
    api.include_router(devices.router)
    api.include_router(alarms.router)
    api.include_router(commands.router)
    api.include_router(liveness.router)
    api.include_router(connections.router)
    api.include_router(events.router)  # GET /events (SSE or JSON) and /events/ws (WebSocket)
    api.include_router(registry.router)  # POST /devices (meters), PUT /devices/{id}/tags
    api.include_router(tasks.router)  # /tasks…, POST /commands/{id}/cancel
    api.include_router(stats.router)  # GET /stats/commands
    redact_tokens_in_access_log()  # reporters may send their ingest token as ?token=
    # First: the routes are matched in order, and reports are by far the most frequent request.
    app.include_router(reporters.router)  # /report/…: ingest tokens, not API keys
    app.include_router(health.router)
    app.include_router(api)
    app.include_router(legacy_ui.router, responses=API_RESPONSES)  # seed 000's UI paths
    return app
