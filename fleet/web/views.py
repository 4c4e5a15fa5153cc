"""The dashboard's pages past the overview: devices, one device, alarms.

Each page is one template; a live region of the open page re-reads its own `{% block %}` with
`?fragment=<block>` when an event says it changed.
"""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import cast

from fastapi import APIRouter, HTTPException, Path, Request
from starlette.responses import Response

from fleet.api.pagination import decode_cursor, encode_cursor
from fleet.api.schemas import DevicePatch
from fleet.api.schemas_liveness import DeviceDetails
from fleet.store import alarms as alarm_store
from fleet.store import devices as device_store
from fleet.store import history, liveness_views
from fleet.store.alarms import AlarmKey
from fleet.store.tables import PRIORITIES
from fleet.web import queries
from fleet.web.context import FRAGMENT_PARAM, ViewerDep, WebDep, base_context, broker_address
from fleet.web.describe import describe, tone
from fleet.web.device_table import DeviceQuery, device_page, filter_options
from fleet.web.fields import manual_fields, status_groups

router = APIRouter(include_in_schema=False)
ALARMS_PER_PAGE = 50
DEVICE_ALARMS_SHOWN = 20
DEVICE_COMMANDS_SHOWN = 15
DEVICE_EVENTS_SHOWN = 25
STATE_CHANGES_SHOWN = 20
MAX_ID = 2**31 - 1

# Buttons for the commands people send most; each is an ordinary POST …/commands.
COMMON_COMMANDS = [
    {"label": "Get status", "type": "SYSTEM", "payload": {"action": "GET_STATUS"}},
    {"label": "Self test", "type": "DIAGNOSTIC", "payload": {"action": "SELF_TEST"}},
    {
        "label": "Siren on",
        "type": "OUTPUT",
        "payload": {"output": "SIREN", "pattern": "CONSTANT", "state": True},
    },
    {
        "label": "Siren off",
        "type": "OUTPUT",
        "payload": {"output": "SIREN", "pattern": "OFF", "state": False},
    },
    {
        "label": "Reboot",
        "type": "SYSTEM",
        "payload": {"action": "REBOOT"},
        "confirm": "Reboot this panel? It goes offline for a moment.",
    },
]


def _render(request: Request, web: WebDep, template: str, context: dict[str, object]) -> Response:
    fragment = request.query_params.get(FRAGMENT_PARAM)
    if fragment:
        return web.templates.fragment(template, fragment, context)
    return web.templates.page(template, context)


@router.get("/devices")
async def devices_page(request: Request, web: WebDep, principal: ViewerDep) -> Response:
    query = DeviceQuery.from_params(request.query_params)
    async with web.ctx.engine.connect() as conn:
        table = await device_page(conn, principal.account_id, query)
        options = await filter_options(conn, principal.account_id)
        bases = await queries.topic_bases(conn, principal.account_id)
    context = await base_context(
        request,
        web,
        principal,
        "devices",
        table=table,
        query=table.query,
        options=options,
        bases=bases or [web.ctx.settings.alarm_topic_base],
        broker=broker_address(web.ctx.settings),
    )
    return _render(request, web, "devices.html", context)


@router.get("/devices/{device_id}")
async def device_page_view(
    request: Request,
    web: WebDep,
    principal: ViewerDep,
    device_id: int = Path(ge=1, le=MAX_ID),
) -> Response:
    account = principal.account_id
    async with web.ctx.engine.connect() as conn:
        device = await device_store.get_device(conn, account, device_id)
    if device is None:
        context = await base_context(
            request, web, principal, "devices", message=f"There is no device {device_id}."
        )
        return web.templates.page("not_found.html", context, status_code=404)
    async with web.ctx.engine.connect() as conn:
        alarms = await alarm_store.list_alarms(
            conn, account, device_id=device_id, limit=DEVICE_ALARMS_SHOWN
        )
        commands = await history.list_commands(
            conn, account, device_id, limit=DEVICE_COMMANDS_SHOWN
        )
        activity = await queries.latest_events(
            conn, account, device_id=device_id, limit=DEVICE_EVENTS_SHOWN
        )
        live = await liveness_views.get_status(conn, account, device_id)
        details = await liveness_views.get_details(conn, account, device_id) or {}
        state_changes = await liveness_views.history(
            conn, account, device_id, limit=STATE_CHANGES_SHOWN
        )
    context = await base_context(
        request,
        web,
        principal,
        "devices",
        device=device,
        status_groups=status_groups(device.get("status")),
        live=live,
        friendly_name=details.get("friendly_name"),
        state_changes=state_changes,
        manual_fields=[
            *manual_fields(DeviceDetails, details, "details"),
            *manual_fields(DevicePatch, device, "device"),
        ],
        alarms=alarms,
        commands=commands,
        activity=activity,
        describe=describe,
        tone=tone,
        common_commands=COMMON_COMMANDS if device["kind"] == "alarm_panel" else [],
    )
    return _render(request, web, "device.html", context)


@router.get("/alarms")
async def alarms_page(request: Request, web: WebDep, principal: ViewerDep) -> Response:
    params = request.query_params
    show = params.get("show", "open")
    show = show if show in {"open", "all"} else "open"
    priority = params.get("priority", "").upper()
    priority = priority if priority in PRIORITIES else ""
    after_param = params.get("after", "")
    after: AlarmKey | None = None
    if after_param:
        with contextlib.suppress(HTTPException):  # a mangled link shows the first page
            after = cast(AlarmKey, decode_cursor(after_param, "alarms", int, int, datetime, int))
    async with web.ctx.engine.connect() as conn:
        rows = await alarm_store.list_alarms(
            conn,
            principal.account_id,
            active=True if show == "open" else None,
            priority=priority or None,
            after=after,
            limit=ALARMS_PER_PAGE + 1,
        )
        counts = await queries.counts(conn, principal.account_id)
    more = None
    if len(rows) > ALARMS_PER_PAGE:
        rows = rows[:ALARMS_PER_PAGE]
        more = encode_cursor("alarms", *alarm_store.sort_key_of(rows[-1]))
    context = await base_context(
        request,
        web,
        principal,
        "alarms",
        alarms=rows,
        show=show,
        priority=priority,
        priorities=list(reversed(PRIORITIES)),
        counts=counts,
        more=more,
        paged=bool(after_param),
    )
    return _render(request, web, "alarms.html", context)


@router.get("/connections")
async def connections_page(request: Request, web: WebDep, principal: ViewerDep) -> Response:
    """Each connection its devices report over, with those devices and their states."""
    async with web.ctx.engine.connect() as conn:
        groups, without, cut = await queries.connection_groups(conn, principal.account_id)
    base = str(request.base_url).rstrip("/")
    context = await base_context(
        request,
        web,
        principal,
        "connections",
        groups=groups,
        without=without,
        cut=cut,
        report_url=f"{base}/report/ongoing",
    )
    return _render(request, web, "connections.html", context)
