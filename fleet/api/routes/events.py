"""The account's event stream: `GET /api/v1/events` (Server-Sent Events, or a JSON page for
polling) and `GET /api/v1/events/ws` (WebSocket). fleet/events/hub.py does the work.

Every event is `{"cursor", "type", "device_id", "data", "time"}`; a client keeps the last cursor
it received and resumes from it (SSE: `Last-Event-ID`, which browsers send by themselves; WS:
`?cursor=` or a first message `{"cursor": N}`) to get everything after it, once, in order.
Besides events, a stream carries control messages:

- `ready` `{"cursor": N}`: the stream starts after N (the cursor asked for, or now);
- `reset` `{"cursor": N, "detail"}`: the cursor asked for is older than the events kept (or
  unknown); reload your state, the stream continues after N;
- `resume` `{"cursor": N, "detail"}`: this client fell too far behind; the connection closes,
  reconnect from your last cursor (N is the last one sent).

SSE sends them as named events (`event: ready`…) and events as plain `message`s; WebSocket sends
`{"control": "ready", "cursor": N, …}` objects next to the event objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Query, Request, WebSocket
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocketDisconnect, WebSocketState

from fleet.api.deps import ContextDep, DeviceFilter, PrincipalDep
from fleet.api.errors import InvalidInput
from fleet.api.pagination import DEFAULT_LIMIT, LimitQuery, Page
from fleet.api.schemas import ErrorOut
from fleet.events import (
    CursorExpired,
    EventFilter,
    EventHub,
    HubUnavailable,
    StreamClosed,
    StreamOverflow,
    Subscription,
)

log = logging.getLogger(__name__)
router = APIRouter(prefix="/events", tags=["events"])

MAX_CURSOR = 2**63 - 1
MAX_TYPES = 50
_TYPE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
KEEPALIVE_SECONDS = 15.0  # an SSE comment / nothing on WS (uvicorn pings) when idle this long
SSE_RETRY_MS = 1000  # how soon a browser's EventSource reconnects
HELLO_SECONDS = 1.0  # how long a WebSocket without ?cursor= waits for {"cursor": N}
SEND_BATCH = 500
YIELD_EVERY = 4

EventCursor = Annotated[
    int | None,
    Query(
        ge=0,
        le=MAX_CURSOR,
        description="Start after this cursor (the `cursor` of the last event received). "
        "0: from the oldest event kept. Omitted: SSE/WebSocket start from now, the JSON page "
        "from the oldest event kept.",
    ),
]
TypesQuery = Annotated[
    str | None,
    Query(
        max_length=2000,
        description="Comma-separated event types, e.g. `alarm.raised,alarm.cleared`.",
    ),
]


class EventOut(BaseModel):
    cursor: int = Field(description="Position in the account's stream; resume after it.")
    type: str = Field(description="alarm.raised, device.online, command.updated, …")
    device_id: int | None
    data: dict[str, Any]
    time: str = Field(description="When the change was committed (ISO 8601, UTC).")


class CursorGoneOut(BaseModel):
    detail: str
    cursor: int = Field(description="Reload your state, then poll from this cursor.")


def _hub(ctx: ContextDep) -> EventHub:
    if ctx.event_hub is None:
        raise HTTPException(status_code=503, detail="the event stream is not running here")
    return ctx.event_hub


def _filter(types: str | None, device_id: int | None) -> EventFilter:
    wanted: frozenset[str] | None = None
    if types is not None:
        names = [name.strip() for name in types.split(",") if name.strip()]
        bad = [name for name in names if not _TYPE.match(name)]
        if bad or not names or len(names) > MAX_TYPES:
            raise InvalidInput(
                f"types: expected up to {MAX_TYPES} comma-separated event types "
                "(letters, digits, . _ - :)",
                ("query", "types"),
            )
        wanted = frozenset(names)
    return EventFilter(types=wanted, device_id=device_id)


def _last_event_id(value: str | None) -> int | None:
    if value is None or not value.strip():
        return None
    value = value.strip()
    if not value.isdigit() or int(value) > MAX_CURSOR:
        raise InvalidInput(
            "Last-Event-ID: expected the cursor of an event", ("header", "last-event-id")
        )
    return int(value)


def _wants_sse(request: Request) -> bool:
    return "text/event-stream" in request.headers.get("accept", "").lower()


def _control(cursor: int, detail: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"cursor": cursor}
    if detail is not None:
        body["detail"] = detail
    return body


RESET_DETAIL = (
    "the cursor asked for is older than the events kept (or unknown): reload your state; the "
    "stream continues from here"
)
RESUME_DETAIL = "this client fell too far behind: reconnect from your last cursor"


@router.get(
    "",
    summary="The account's events: Server-Sent Events, or a JSON page for polling",
    responses={
        200: {
            "description": "`Accept: text/event-stream`: a live stream of `message`s (id: the "
            "cursor, data: an event) and the control events `ready`, `reset` (reload your "
            "state) and `resume` (reconnect from your last cursor); otherwise a page of events "
            "in cursor order. The same stream over a WebSocket: `GET /api/v1/events/ws`.",
            "content": {"text/event-stream": {}},
        },
        410: {"model": CursorGoneOut, "description": "The cursor is older than the events kept"},
        503: {"model": ErrorOut, "description": "The event stream is not available"},
    },
)
async def events(
    request: Request,
    principal: PrincipalDep,
    ctx: ContextDep,
    cursor: EventCursor = None,
    types: TypesQuery = None,
    device_id: DeviceFilter = None,
    limit: LimitQuery = DEFAULT_LIMIT,
    last_event_id: Annotated[
        str | None,
        Header(
            max_length=32,
            description="SSE: the browser sends the last event's id when it reconnects; it "
            "wins over `cursor`.",
        ),
    ] = None,
) -> Page[EventOut]:
    """Events in cursor order. With `Accept: text/event-stream` a live stream (SSE) that
    resumes after `Last-Event-ID` or `cursor`; otherwise up to `limit` events after `cursor`:
    `next_cursor` is set when more are waiting already, else poll again later after the last
    item's cursor."""
    hub = _hub(ctx)
    flt = _filter(types, device_id)
    if _wants_sse(request):
        start = _last_event_id(last_event_id)
        if start is None:
            start = cursor
        sub = await _subscribe(hub, principal.account_id, start, flt)
        return _EventStream(sub)  # type: ignore[return-value]
    try:
        page = await hub.page(principal.account_id, cursor or 0, flt, limit + 1)
    except CursorExpired as exc:
        return JSONResponse(  # type: ignore[return-value]
            {"detail": str(exc), "cursor": exc.restart}, status_code=410
        )
    except HubUnavailable as exc:
        raise HTTPException(status_code=503, detail=str(exc)) from exc
    items = [json.loads(event.json) for event in page[:limit]]
    next_cursor = str(page[limit - 1].cursor) if len(page) > limit else None
    return Page[EventOut].model_validate({"items": items, "next_cursor": next_cursor})


async def _subscribe(
    hub: EventHub, account_id: int, cursor: int | None, flt: EventFilter
) -> Subscription:
    try:
        return await hub.subscribe(account_id, cursor, flt)
    except HubUnavailable as exc:
        raise HTTPException(status_code=503, detail=str(exc)) from exc


def _sse_frame(name: str, cursor: int, body: dict[str, Any]) -> str:
    return f"event: {name}\nid: {cursor}\ndata: {json.dumps(body)}\n\n"


async def _sse(sub: Subscription) -> AsyncIterator[str]:
    yield f"retry: {SSE_RETRY_MS}\n\n"
    if sub.reset:
        yield _sse_frame("reset", sub.start, _control(sub.start, RESET_DETAIL))
    yield _sse_frame("ready", sub.start, _control(sub.start))
    while True:
        try:
            async with asyncio.timeout(KEEPALIVE_SECONDS):
                batch = await sub.next_batch(SEND_BATCH)
        except TimeoutError:
            yield ": keep-alive\n\n"
            continue
        except StreamOverflow as exc:
            yield _sse_frame("resume", exc.cursor, _control(exc.cursor, RESUME_DETAIL))
            return
        except StreamClosed:
            return
        yield "".join(f"id: {event.cursor}\ndata: {event.json}\n\n" for event in batch)


class _EventStream(StreamingResponse):
    """SSE of one subscription, which is closed however the response ends (even unstarted)."""

    def __init__(self, sub: Subscription) -> None:
        super().__init__(
            _sse(sub),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self.subscription = sub

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.subscription.close()


@router.websocket("/ws")
async def events_ws(
    websocket: WebSocket,
    principal: PrincipalDep,
    ctx: ContextDep,
    cursor: EventCursor = None,
    types: TypesQuery = None,
    device_id: DeviceFilter = None,
) -> None:
    """The account's events over a WebSocket: JSON text messages, events and control
    messages (`{"control": "ready" | "reset" | "resume", "cursor": N}`). Start after `?cursor=`,
    or send `{"cursor": N}` (or `{"cursor": null}`: from now) as the first message."""
    hub = _hub(ctx)
    flt = _filter(types, device_id)
    try:
        await hub.wait_ready()
    except HubUnavailable as exc:
        raise HTTPException(status_code=503, detail=str(exc)) from exc
    now = hub.horizon  # without a cursor the stream starts at the moment of connection
    await websocket.accept()
    if cursor is None:
        try:
            cursor = await _hello(websocket, now)
        except _BadHello as exc:
            await _send_json(websocket, {"control": "error", "detail": str(exc)})
            await websocket.close(code=1008, reason="bad first message")
            return
        except WebSocketDisconnect:
            return
    sub = await hub.subscribe(principal.account_id, cursor, flt)
    sender = asyncio.create_task(_ws_send(websocket, sub))
    receiver = asyncio.create_task(_ws_drain(websocket))
    try:
        await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        sub.close()
        sender.cancel()
        receiver.cancel()
        outcomes = await asyncio.gather(sender, receiver, return_exceptions=True)
    for outcome in outcomes:
        # A client that went away shows up as one of these; anything else is a bug to see.
        if isinstance(outcome, Exception) and not isinstance(
            outcome, WebSocketDisconnect | OSError | RuntimeError
        ):
            log.error("event stream WebSocket failed", exc_info=outcome)
    if websocket.application_state == WebSocketState.CONNECTED:
        with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):
            await websocket.close(code=1000)


class _BadHello(Exception):
    pass


async def _hello(websocket: WebSocket, now: int) -> int:
    """The cursor from the client's first message, or `now` if it sends none in time."""
    try:
        async with asyncio.timeout(HELLO_SECONDS):
            received = await websocket.receive()
    except TimeoutError:
        return now
    if received["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(received.get("code", 1000))
    try:
        message = json.loads(received.get("text") or received.get("bytes") or b"")
    except ValueError:
        message = None
    value = message.get("cursor", "missing") if isinstance(message, dict) else "missing"
    if value is None:
        return now
    if type(value) is not int or not 0 <= value <= MAX_CURSOR:
        raise _BadHello('the first message must be {"cursor": N} (N >= 0) or {"cursor": null}')
    return value


async def _send_json(websocket: WebSocket, body: dict[str, Any]) -> None:
    await websocket.send_text(json.dumps(body))


async def _ws_send(websocket: WebSocket, sub: Subscription) -> None:
    if sub.reset:
        await _send_json(websocket, {"control": "reset", **_control(sub.start, RESET_DETAIL)})
    await _send_json(websocket, {"control": "ready", "cursor": sub.start})
    while True:
        try:
            batch = await sub.next_batch(SEND_BATCH)
        except StreamOverflow as exc:
            await _send_json(
                websocket, {"control": "resume", **_control(exc.cursor, RESUME_DETAIL)}
            )
            await websocket.close(code=1013, reason="fell behind: resume from your cursor")
            return
        except StreamClosed:
            await websocket.close(code=1012, reason="Fleet is restarting")
            return
        for index, event in enumerate(batch, 1):
            await websocket.send_text(event.json)
            if index % YIELD_EVERY == 0:
                # A send that does not block never yields: let a lost connection be noticed
                # (asyncio warns after 5 writes into a dead socket) and other clients be served.
                await asyncio.sleep(0)


async def _ws_drain(websocket: WebSocket) -> None:
    """Read (and ignore) what the client sends, so a disconnect is noticed at once."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
