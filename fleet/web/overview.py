"""The overview (`/` when signed in): counts, open alarms by priority, the map, latest events."""

from __future__ import annotations

from fastapi import Request
from starlette.responses import Response

from fleet.store.accounts import Principal
from fleet.web import queries
from fleet.web.context import FRAGMENT_PARAM, Web, base_context, broker_address
from fleet.web.describe import describe, tone
from fleet.web.geo import project

EVENTS_SHOWN = 15


async def overview_page(request: Request, web: Web, principal: Principal) -> Response:
    async with web.ctx.engine.connect() as conn:
        counts = await queries.counts(conn, principal.account_id)
        points = await queries.map_points(conn, principal.account_id)
        latest = await queries.latest_events(conn, principal.account_id, limit=EVENTS_SHOWN)
        bases = await queries.topic_bases(conn, principal.account_id)
    context = await base_context(
        request,
        web,
        principal,
        "overview",
        counts=counts,
        device_map=project(points),
        located=len(points),
        events=latest,
        describe=describe,
        tone=tone,
        bases=bases or [web.ctx.settings.alarm_topic_base],
        broker=broker_address(web.ctx.settings),
    )
    fragment = request.query_params.get(FRAGMENT_PARAM)
    if fragment:
        return web.templates.fragment("overview.html", fragment, context)
    return web.templates.page("overview.html", context)
