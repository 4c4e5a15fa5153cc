"""The event stream under test: real databases, a real uvicorn on loopback, real SSE/WebSocket
clients (httpx, websockets)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import uvicorn
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine
from websockets.asyncio.client import ClientConnection, connect

from fleet.api import ApiContext, build_api
from fleet.config import Settings
from fleet.core.events import Event
from fleet.events import EventHub, StreamEvent, Subscription
from fleet.integrations.alarm_panel.transport import AlarmPanelTransport
from fleet.services.commands import CommandService
from fleet.store import accounts
from fleet.store import events as event_log


class NullPublisher:
    def publish(self, topic: str, payload: bytes, qos: int = 0) -> None:
        pass


@dataclass(frozen=True)
class Tenant:
    id: int
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


async def tenant(engine: AsyncEngine, name: str) -> Tenant:
    async with engine.begin() as conn:
        account_id = await accounts.create_account(conn, name)
        key = await accounts.issue_key(conn, account_id)
    return Tenant(account_id, key)


async def append(
    engine: AsyncEngine,
    hub: EventHub | None,
    account_id: int,
    count: int = 1,
    *,
    type: str = "device.state",
    device_id: int | None = 1,
    data: Callable[[int], dict[str, Any]] | None = None,
) -> None:
    """`count` events in one transaction, then the wake-up, as every producer does."""
    batch = [
        Event(account_id, type, device_id, data(i) if data else {"n": i})  # type: ignore[arg-type]
        for i in range(count)
    ]
    async with engine.begin() as conn:
        await event_log.append(conn, batch)
    if hub is not None:
        hub.notify()


async def collect(sub: Subscription, count: int, within: float = 10.0) -> list[StreamEvent]:
    got: list[StreamEvent] = []
    async with asyncio.timeout(within):
        while len(got) < count:
            got.extend(await sub.next_batch())
    return got


async def nothing_more(sub: Subscription, wait: float = 0.3) -> None:
    with contextlib.suppress(TimeoutError):
        batch = await asyncio.wait_for(sub.next_batch(), wait)
        raise AssertionError(f"unexpected events: {[e.cursor for e in batch]}")


async def until(condition: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


@dataclass
class Served:
    """build_api(ctx) on a real uvicorn, on 127.0.0.1 and a port of its own."""

    app: FastAPI
    server: uvicorn.Server
    task: asyncio.Task[None]
    port: int

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def close(self) -> None:
        self.server.should_exit = True
        await self.task


async def serve(app: FastAPI) -> Served:
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        lifespan="off",
        log_level="warning",
        ws="websockets-sansio",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    await until(lambda: server.started or task.done(), 10)
    if task.done():
        task.result()
    port = server.servers[0].sockets[0].getsockname()[1]
    return Served(app, server, task, port)


def api_app(settings: Settings, engine: AsyncEngine, hub: EventHub | None) -> FastAPI:
    commands = CommandService(
        engine, {"alarm_panel": AlarmPanelTransport(publisher=NullPublisher(), hmac_key=bytes(32))}
    )
    return build_api(ApiContext(settings=settings, engine=engine, commands=commands, event_hub=hub))


@dataclass
class SseEvent:
    event: str
    id: int | None
    data: dict[str, Any]


@dataclass
class SseClient:
    """An EventSource in Python: keeps the last id and sends it as Last-Event-ID."""

    client: httpx.AsyncClient
    url: str
    headers: dict[str, str]
    last_id: int | None = None
    controls: list[SseEvent] = field(default_factory=list)

    @contextlib.asynccontextmanager
    async def open(self, **params: Any) -> AsyncIterator[AsyncIterator[SseEvent]]:
        headers = {**self.headers, "Accept": "text/event-stream"}
        if self.last_id is not None:
            headers["Last-Event-ID"] = str(self.last_id)
        async with self.client.stream("GET", self.url, headers=headers, params=params) as resp:
            assert resp.status_code == 200, (await resp.aread()).decode()
            assert resp.headers["content-type"].startswith("text/event-stream")
            yield self._events(resp)

    async def _events(self, resp: httpx.Response) -> AsyncIterator[SseEvent]:
        fields: dict[str, str] = {}
        async for line in resp.aiter_lines():
            if line == "":
                if "data" in fields:
                    ident = int(fields["id"]) if "id" in fields else None
                    if ident is not None:
                        self.last_id = ident
                    event = SseEvent(
                        fields.get("event", "message"), ident, json.loads(fields["data"])
                    )
                    if event.event != "message":
                        self.controls.append(event)
                    yield event
                fields = {}
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            fields[name] = value[1:] if value.startswith(" ") else value


async def ws_connect(
    url: str,
    tenant: Tenant | None,
    *,
    headers: dict[str, str] | None = None,
    slow: bool = False,
) -> ClientConnection:
    """A WebSocket client; `slow`: one that reads only when asked, with a small socket
    buffer (Linux would otherwise let a loopback socket absorb tens of MB first)."""
    sock = None
    if slow:
        parsed = urlsplit(url)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (parsed.hostname, parsed.port))
    return await connect(
        url,
        additional_headers=tenant.headers if tenant else headers or {},
        max_queue=1 if slow else 1024,
        open_timeout=5,
        sock=sock,
        compression=None if slow else "deflate",  # padding compresses away otherwise
    )


async def drop(ws: ClientConnection) -> None:
    """The network goes away under the client: no close handshake."""
    ws.transport.abort()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(ws.wait_closed(), 2)


async def ws_messages(ws: ClientConnection) -> AsyncIterator[dict[str, Any]]:
    async for raw in ws:
        yield json.loads(raw)


def cursors(items: Sequence[dict[str, Any] | StreamEvent]) -> list[int]:
    return [i.cursor if isinstance(i, StreamEvent) else int(i["cursor"]) for i in items]
