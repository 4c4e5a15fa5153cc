"""What every dashboard page shares: who is signed in, the navigation, the event cursor it was
rendered at, and where devices should connect."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, HTTPException, Request

from fleet.api.context import ApiContext
from fleet.config import Settings, split_host_port
from fleet.ingest.mqtt_link import parse_mqtt_url
from fleet.store.accounts import Principal
from fleet.web import queries
from fleet.web.auth import CSRF_HEADER, SESSION_COOKIE
from fleet.web.sessions import resolve_session
from fleet.web.templating import Templates

FRAGMENT_PARAM = "fragment"


@dataclass(frozen=True, slots=True)
class Features:
    """Pages that appear as their capability lands: found by the API routes that exist."""

    connections: bool = False
    tasks: bool = False

    @classmethod
    def of(cls, app: FastAPI) -> Features:
        # The OpenAPI document lists every route however routers nest (and FastAPI caches it).
        paths = set(app.openapi().get("paths", {}))
        return cls(
            connections="/api/v1/connections" in paths,
            tasks="/api/v1/tasks" in paths,
        )


@dataclass
class Web:
    ctx: ApiContext
    templates: Templates
    app: FastAPI
    _features: Features | None = None

    @property
    def features(self) -> Features:
        # Found at the first page rather than at mount: routers included later still count.
        if self._features is None:
            self._features = Features.of(self.app)
        return self._features


def get_web(request: Request) -> Web:
    web: Web = request.app.state.web
    return web


WebDep = Annotated[Web, Depends(get_web)]


async def signed_in(request: Request, web: Web) -> Principal | None:
    session_id = request.cookies.get(SESSION_COOKIE)
    if not session_id:
        return None
    async with web.ctx.engine.connect() as conn:
        return await resolve_session(conn, session_id, datetime.now(UTC))


async def page_principal(request: Request, web: WebDep) -> Principal:
    """Who views the page; without a live session, back to the sign-in page (a live region's
    fetch gets a 401 instead, and the script reloads the page)."""
    principal = await signed_in(request, web)
    if principal is not None:
        return principal
    if FRAGMENT_PARAM in request.query_params:
        raise HTTPException(status_code=401, detail="sign in again")
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    raise HTTPException(status_code=303, headers={"Location": f"/?next={quote(target)}"})


ViewerDep = Annotated[Principal, Depends(page_principal)]


def broker_address(settings: Settings) -> str:
    """Where devices connect, as a device installer would type it (never with credentials)."""
    if settings.mqtt_url == "embedded":
        host, port = split_host_port(settings.mqtt_listen)
        return f"mqtt://{host}:{port}"
    try:
        address = parse_mqtt_url(settings.mqtt_url)
    except ValueError:
        return "(FLEET_MQTT_URL is not a valid broker URL)"
    return f"{'mqtts' if address.tls else 'mqtt'}://{address.host}:{address.port}"


async def base_context(
    request: Request, web: Web, principal: Principal, page: str, **values: Any
) -> dict[str, Any]:
    async with web.ctx.engine.connect() as conn:
        cursor = await queries.last_event_id(conn, principal.account_id)
    return {
        "request": request,
        "principal": principal,
        "page": page,
        "features": web.features,
        "cursor": cursor,
        "csrf_header": CSRF_HEADER,
        "assets_built": web.templates.built,
        **values,
    }
