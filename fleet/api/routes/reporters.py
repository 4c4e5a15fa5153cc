"""`GET|POST /report/{ongoing|stop}`: what the deployed reporters call (seed 000, wire-formats §4).

Outside `/api/v1` and with its own credentials: an account's ingest token, which opens nothing
else. The route only parses and checks; the liveness service records the report and the state
machine's change, and the events flow from there.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, HTTPException, Request

from fleet.api.liveness_deps import ReportTokenDep, get_liveness_now, refuse_token
from fleet.api.schemas import ErrorOut
from fleet.api.schemas_liveness import ReportOut
from fleet.core.liveness import millis
from fleet.integrations.reporter.wire import Action, BadReport, parse_report
from fleet.services.liveness import BadToken

router = APIRouter(tags=["reporters"])

RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "A parameter or the report cannot be read"},
    401: {"model": ErrorOut, "description": "Missing or invalid ingest token"},
    413: {"model": ErrorOut, "description": "Request body too large"},
}
FORM_BODY: dict[str, Any] = {
    "requestBody": {
        "required": False,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "report": {
                            "type": "string",
                            "description": 'MonitorReport JSON: {"connection_used": {"SSID": '
                            '"name"} | {"Ethernet": "mac"}, "connections": [{"connection": …, '
                            '"stats": {"power_dbs": -60}}]}',
                        }
                    },
                }
            }
        },
    }
}

# The query is read by hand and documented here: FastAPI's per-parameter validation is a large
# share of the cost of a request this small, and reports are most of Fleet's requests. (A value
# that does not parse is a 400 with its reason, as the reporters expect, not a 422.)
QUERY: list[dict[str, Any]] = [
    {
        "name": "device_id",
        "in": "query",
        "required": True,
        "schema": {"type": "string", "maxLength": 128},
        "description": "The reporter's name; its DeviceID is derived from it and the account.",
    },
    {
        "name": "connection",
        "in": "query",
        "required": False,
        "schema": {"type": "string", "maxLength": 256},
        "description": "What it reports over, e.g. `ssid=HOME` (a leading tab is trimmed).",
    },
    {
        "name": "period",
        "in": "query",
        "required": False,
        "schema": {"type": "number", "exclusiveMinimum": 0},
        "description": "Seconds until its next report; Offline after period + 5 s.",
    },
]
GET_DOC: dict[str, Any] = {"parameters": QUERY}
POST_DOC: dict[str, Any] = {"parameters": QUERY, **FORM_BODY}


def _bad(reason: str) -> HTTPException:
    return HTTPException(status_code=400, detail=reason)


async def _form(request: Request) -> dict[str, str]:
    """The POST form's fields (urlencoded, as reporters send it); an empty body is no form."""
    body = await request.body()
    if not body.strip():
        return {}
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in {"application/x-www-form-urlencoded", ""}:
        raise _bad(
            f"expected a form (application/x-www-form-urlencoded) with a field report, "
            f"got {content_type}"
        )
    try:
        fields = parse_qs(body.decode(), keep_blank_values=True, strict_parsing=True)
    except (UnicodeDecodeError, ValueError):
        raise _bad(
            "the form cannot be read: send report=<MonitorReport JSON>, urlencoded"
        ) from None
    return {name: values[-1] for name, values in fields.items()}


async def _report(action: Action, request: Request, token: str, form: dict[str, str]) -> ReportOut:
    query = request.query_params
    params = {name: query[name] for name in ("device_id", "connection", "period") if name in query}
    for name in ("device_id", "connection", "period"):  # lenient: also taken from the form
        if name not in params and name in form:
            params[name] = form[name]
    try:
        parsed = parse_report(action, params, form.get("report"))
    except BadReport as exc:
        # Credentials first, as everywhere: a stranger learns nothing, not even what is wrong.
        raise (await refuse_token(request, token)) or _bad(str(exc)) from None
    try:
        outcome = await get_liveness_now(request).report(token, parsed)
    except BadToken:
        refused = await refuse_token(request, token)
        raise refused or HTTPException(401, "invalid ingest token") from None
    return ReportOut(
        id=outcome.uid,
        state=outcome.state.value,
        connection=outcome.connection,
        timestamp=None if outcome.since is None else millis(outcome.since),
        changed=outcome.changed,
        registered=outcome.registered,
    )


@router.get("/report/ongoing", responses=RESPONSES, openapi_extra=GET_DOC)
async def report_ongoing(request: Request, token: ReportTokenDep) -> ReportOut:
    """The device is running and reports again within `period` seconds (New/Offline/Stopped →
    Reporting). An unknown `device_id` registers itself."""
    return await _report("ongoing", request, token, {})


@router.post("/report/ongoing", responses=RESPONSES, openapi_extra=POST_DOC)
async def report_ongoing_with_form(request: Request, token: ReportTokenDep) -> ReportOut:
    """As the GET, with an optional form field `report` (a MonitorReport)."""
    return await _report("ongoing", request, token, await _form(request))


@router.get("/report/stop", responses=RESPONSES, openapi_extra=GET_DOC)
async def report_stop(request: Request, token: ReportTokenDep) -> ReportOut:
    """The device stops reporting on purpose (→ Stopped; its timer is disarmed)."""
    return await _report("stop", request, token, {})


@router.post("/report/stop", responses=RESPONSES, openapi_extra=POST_DOC)
async def report_stop_with_form(request: Request, token: ReportTokenDep) -> ReportOut:
    """As the GET, with an optional form field `report` (a MonitorReport)."""
    return await _report("stop", request, token, await _form(request))
