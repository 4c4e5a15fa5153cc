"""GET /api/v1/events (SSE and JSON) and /api/v1/events/ws on a real server, on both databases."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from websockets.exceptions import ConnectionClosed, InvalidStatus

from fleet.events import EventHub
from fleet.store.tables import events
from tests.events.conftest import BUFFER
from tests.events.support import (
    Served,
    SseClient,
    Tenant,
    append,
    drop,
    until,
    ws_connect,
)

BURST = 10_000
URL = "/api/v1/events"


async def ids_of(engine: AsyncEngine, account_id: int) -> list[int]:
    async with engine.connect() as conn:
        query = sa.select(events.c.id).where(events.c.account_id == account_id).order_by("id")
        return [int(i) for i in (await conn.execute(query)).scalars()]


async def burst(engine: AsyncEngine, hub: EventHub, account_id: int, total: int = BURST) -> None:
    """`total` events in transactions of 500, as fast as the database takes them."""
    for _ in range(total // 500):
        await append(engine, hub, account_id, 500)
        await asyncio.sleep(0)


async def test_sse_resume_by_last_event_id_under_a_burst(
    served: Served, http: httpx.AsyncClient, engine: AsyncEngine, hub: EventHub, alice: Tenant
) -> None:
    sse = SseClient(http, URL, alice.headers)
    got: list[int] = []
    writing: asyncio.Task[None] | None = None
    for _attempt in range(20):  # drop the connection every ~2,000 events, resume each time
        async with sse.open() as stream:
            async for event in stream:
                if event.event == "ready":
                    if writing is None:  # the stream is open: start the burst
                        writing = asyncio.create_task(burst(engine, hub, alice.id))
                    continue
                assert event.event == "message", event
                assert event.id == event.data["cursor"]
                got.append(event.data["cursor"])
                if len(got) == BURST or len(got) % 2000 == 0:
                    break
        if len(got) == BURST:
            break
    assert writing is not None
    await writing
    assert got == await ids_of(engine, alice.id)  # all of them, once each, in order
    assert [c.event for c in sse.controls].count("ready") >= 5
    assert all(c.event == "ready" for c in sse.controls)


async def test_ws_resume_by_cursor_under_a_burst(
    served: Served, engine: AsyncEngine, hub: EventHub, alice: Tenant
) -> None:
    got: list[int] = []
    writing: asyncio.Task[None] | None = None
    attempt = 0
    while len(got) < BURST and attempt < 20:
        attempt += 1
        last = got[-1] if got else None
        # Alternate the two ways of resuming: ?cursor= and a first message.
        if last is not None and attempt % 2:
            ws = await ws_connect(f"{served.ws}{URL}/ws?cursor={last}", alice)
        else:
            ws = await ws_connect(f"{served.ws}{URL}/ws", alice)
            await ws.send(json.dumps({"cursor": last}))
        ready = json.loads(await ws.recv())
        assert ready == {"control": "ready", "cursor": ready["cursor"]}
        if last is not None:
            assert ready["cursor"] == last
        if writing is None:
            writing = asyncio.create_task(burst(engine, hub, alice.id))
        while len(got) < BURST:
            message = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert "control" not in message, message
            got.append(message["cursor"])
            if len(got) % 2500 == 0:
                break
        await drop(ws)  # mid-stream, without a goodbye
    assert writing is not None
    await writing
    assert got == await ids_of(engine, alice.id)


async def test_json_page_for_polling(
    served: Served, http: httpx.AsyncClient, engine: AsyncEngine, hub: EventHub, alice: Tenant
) -> None:
    await append(engine, hub, alice.id, 7, type="alarm.raised", device_id=3)
    await until(lambda: hub.horizon >= 7)
    expected = await ids_of(engine, alice.id)
    first = (await http.get(URL, headers=alice.headers, params={"limit": 5})).json()
    assert set(first) == {"items", "next_cursor"}
    assert [i["cursor"] for i in first["items"]] == expected[:5]
    assert first["next_cursor"] == str(expected[4])
    item = first["items"][0]
    assert set(item) == {"cursor", "type", "device_id", "data", "time"}
    assert (item["type"], item["device_id"], item["data"]) == ("alarm.raised", 3, {"n": 0})
    rest = (
        await http.get(URL, headers=alice.headers, params={"cursor": first["next_cursor"]})
    ).json()
    assert [i["cursor"] for i in rest["items"]] == expected[5:]
    assert rest["next_cursor"] is None  # caught up: poll again after the last item's cursor
    empty = await http.get(URL, headers=alice.headers, params={"cursor": expected[-1]})
    assert empty.json() == {"items": [], "next_cursor": None}


async def test_expired_cursor_answers_410_or_a_reset(
    served: Served, http: httpx.AsyncClient, engine: AsyncEngine, hub: EventHub, alice: Tenant
) -> None:
    await append(engine, hub, alice.id, 3)
    ids = await ids_of(engine, alice.id)
    async with engine.begin() as conn:
        await conn.execute(sa.delete(events).where(events.c.id < ids[-1]))  # as retention would
    await until(lambda: hub.horizon >= ids[-1])
    gone = await http.get(URL, headers=alice.headers, params={"cursor": ids[0]})
    assert gone.status_code == 410
    assert gone.json()["cursor"] == hub.horizon and "reload" in gone.json()["detail"]
    sse = SseClient(http, URL, alice.headers, last_id=ids[0])
    async with sse.open() as stream:
        reset = await anext(stream)
        ready = await anext(stream)
    assert (reset.event, reset.id, reset.data["cursor"]) == ("reset", hub.horizon, hub.horizon)
    assert (ready.event, ready.id) == ("ready", hub.horizon)
    async with await ws_connect(f"{served.ws}{URL}/ws?cursor={ids[0]}", alice) as ws:
        assert json.loads(await ws.recv())["control"] == "reset"
        assert json.loads(await ws.recv()) == {"control": "ready", "cursor": hub.horizon}


async def test_authentication_and_tenancy(
    served: Served,
    http: httpx.AsyncClient,
    engine: AsyncEngine,
    hub: EventHub,
    alice: Tenant,
    bob: Tenant,
) -> None:
    for headers in ({}, {"Authorization": "Bearer fleet_nope"}):
        response = await http.get(URL, headers={**headers, "Accept": "text/event-stream"})
        assert response.status_code == 401 and "detail" in response.json()
        with pytest.raises(InvalidStatus) as refused:
            await ws_connect(f"{served.ws}{URL}/ws", None, headers=headers)
        assert refused.value.response.status_code == 401
        assert "detail" in json.loads(refused.value.response.body or b"{}")
    # Bob's streams, opened before and after Alice's events, show only Bob's.
    bob_ws = await ws_connect(f"{served.ws}{URL}/ws?cursor=0", bob)
    assert json.loads(await bob_ws.recv())["control"] == "ready"
    await append(engine, hub, alice.id, 50)
    await append(engine, hub, bob.id, 1, type="bob.only")
    async with bob_ws:
        assert json.loads(await asyncio.wait_for(bob_ws.recv(), 5))["type"] == "bob.only"
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(bob_ws.recv(), 0.3)
    page = (await http.get(URL, headers=bob.headers)).json()
    assert [i["type"] for i in page["items"]] == ["bob.only"]
    sse = SseClient(http, URL, bob.headers, last_id=0)
    async with sse.open() as stream:
        assert (await anext(stream)).event == "ready"
        assert (await anext(stream)).data["type"] == "bob.only"


async def test_filters_on_the_wire(
    served: Served, http: httpx.AsyncClient, engine: AsyncEngine, hub: EventHub, alice: Tenant
) -> None:
    await append(engine, hub, alice.id, 2, type="alarm.raised", device_id=1)
    await append(engine, hub, alice.id, 2, type="alarm.cleared", device_id=2)
    await append(engine, hub, alice.id, 2, type="device.online", device_id=2)
    await until(lambda: hub.horizon >= 6)
    params: dict[str, Any] = {"types": "alarm.raised,alarm.cleared", "device_id": 2}
    page = (await http.get(URL, headers=alice.headers, params=params)).json()
    assert [(i["type"], i["device_id"]) for i in page["items"]] == [("alarm.cleared", 2)] * 2
    url = f"{served.ws}{URL}/ws?cursor=0&types=device.online"
    async with await ws_connect(url, alice) as ws:
        await ws.recv()  # ready
        kinds = [json.loads(await ws.recv())["type"] for _ in range(2)]
        assert kinds == ["device.online"] * 2
    bad = await http.get(URL, headers=alice.headers, params={"types": "no spaces please"})
    assert bad.status_code == 422 and "types" in bad.json()["detail"]
    bad_id = await http.get(
        URL, headers={**alice.headers, "Accept": "text/event-stream", "Last-Event-ID": "x"}
    )
    assert bad_id.status_code == 422


async def test_a_slow_websocket_client_is_cut_off_and_resumes_without_loss(
    served: Served, engine: AsyncEngine, hub: EventHub, alice: Tenant
) -> None:
    # A client that stops reading: the sockets fill, then Fleet's per-client buffer, never more.
    slow = await ws_connect(f"{served.ws}{URL}/ws?cursor=0", alice, slow=True)
    await slow.recv()  # ready
    total, queued, socket_buffer = 0, 0, 0
    while not hub.overflows and total < 100_000:
        await append(engine, hub, alice.id, 500, data=lambda i: {"pad": "x" * 200, "i": i})
        total += 500
        for _ in range(5):
            await asyncio.sleep(0.002)
            queued = max([queued, *(s.buffered for s in hub._subs)])
            socket_buffer = max(
                [socket_buffer, *(c.transport.get_write_buffer_size() for c in connections(served))]
            )
    assert hub.overflows == 1
    assert hub.clients == 0  # the slow client's subscription is gone, and its buffer with it
    assert queued <= BUFFER
    assert socket_buffer <= 256 * 1024  # uvicorn stops writing at its high-water mark
    # It reads again: what was sent, then where to resume, then the close.
    got: list[int] = []
    resume: dict[str, Any] = {}
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            message = json.loads(await asyncio.wait_for(slow.recv(), 10))
            if "control" in message:
                resume = message
            else:
                got.append(message["cursor"])
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
    assert resume["control"] == "resume" and resume["cursor"] == got[-1]
    assert len(got) < total  # it really was cut off
    async with await ws_connect(f"{served.ws}{URL}/ws?cursor={got[-1]}", alice) as ws:
        await ws.recv()  # ready
        expected = await ids_of(engine, alice.id)
        while len(got) < len(expected):
            got.append(json.loads(await asyncio.wait_for(ws.recv(), 10))["cursor"])
    assert got == expected


def connections(served: Served) -> list[Any]:
    return [c for c in served.server.server_state.connections if hasattr(c, "transport")]
