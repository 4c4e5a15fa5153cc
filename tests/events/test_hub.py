"""The hub on both databases: order, resume, filters, tenancy, the slow-client bound, retention."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from fleet.events import CursorExpired, EventFilter, EventHub, StreamOverflow
from fleet.store.tables import events
from tests.events.conftest import BUFFER
from tests.events.support import Tenant, append, collect, cursors, nothing_more, until


async def all_ids(engine: AsyncEngine, account_id: int | None = None) -> list[int]:
    query = sa.select(events.c.id).order_by(events.c.id)
    if account_id is not None:
        query = query.where(events.c.account_id == account_id)
    async with engine.connect() as conn:
        return [int(i) for i in (await conn.execute(query)).scalars()]


async def test_live_then_resume_from_any_cursor(
    engine: AsyncEngine, hub: EventHub, alice: Tenant
) -> None:
    sub = await hub.subscribe(alice.id, None)
    await append(engine, hub, alice.id, 3)
    got = await collect(sub, 3)
    ids = await all_ids(engine)
    assert cursors(got) == ids
    await nothing_more(sub)
    sub.close()
    # Resuming after the first one gives the other two; from 0, all of them.
    again = await hub.subscribe(alice.id, ids[0])
    assert cursors(await collect(again, 2)) == ids[1:]
    from_start = await hub.subscribe(alice.id, 0)
    assert cursors(await collect(from_start, 3)) == ids
    # The wire form.
    body = json.loads(got[0].json)
    assert set(body) == {"cursor", "type", "device_id", "data", "time"}
    assert body["type"] == "device.state" and body["device_id"] == 1 and body["data"] == {"n": 0}
    assert body["time"].endswith("Z")


async def test_catch_up_longer_than_the_memory_tail(engine: AsyncEngine, alice: Tenant) -> None:
    hub = EventHub(engine, client_buffer=50, ring_size=16)
    await hub.start()
    try:
        await hub.wait_ready()
        for _ in range(10):
            await append(engine, hub, alice.id, 100)
        sub = await hub.subscribe(alice.id, 0)
        got = await collect(sub, 1000)
        assert cursors(got) == await all_ids(engine)
        await append(engine, hub, alice.id, 5)
        assert cursors(await collect(sub, 5)) == (await all_ids(engine))[-5:]
        assert sub.live
        assert sub.high_water <= 50
    finally:
        await hub.stop()


async def test_filters_by_type_and_device(
    engine: AsyncEngine, hub: EventHub, alice: Tenant
) -> None:
    await append(engine, hub, alice.id, 2, type="alarm.raised", device_id=7)
    by_type = await hub.subscribe(alice.id, 0, EventFilter(types=frozenset({"alarm.raised"})))
    by_device = await hub.subscribe(alice.id, 0, EventFilter(device_id=8))
    await append(engine, hub, alice.id, 2, type="device.online", device_id=8)
    await append(engine, hub, alice.id, 1, type="alarm.raised", device_id=8)
    typed = await collect(by_type, 3)  # 2 from the database, 1 live
    assert [e.type for e in typed] == ["alarm.raised"] * 3
    assert [e.device_id for e in typed] == [7, 7, 8]
    device = await collect(by_device, 3)
    assert [(e.type, e.device_id) for e in device] == [
        ("device.online", 8),
        ("device.online", 8),
        ("alarm.raised", 8),
    ]
    await nothing_more(by_type, 0.1)
    await nothing_more(by_device, 0.1)


async def test_an_account_sees_only_its_own_events(
    engine: AsyncEngine, hub: EventHub, alice: Tenant, bob: Tenant
) -> None:
    bob_live = await hub.subscribe(bob.id, None)
    await append(engine, hub, alice.id, 20)
    await append(engine, hub, bob.id, 1, type="bob.only")
    [only] = await collect(bob_live, 1)
    assert only.type == "bob.only" and only.account_id == bob.id
    await nothing_more(bob_live, 0.1)
    bob_history = await hub.subscribe(bob.id, 0)
    assert [e.account_id for e in await collect(bob_history, 1)] == [bob.id]
    await nothing_more(bob_history, 0.1)
    page = await hub.page(bob.id, 0, EventFilter(), 100)
    assert [e.account_id for e in page] == [bob.id]


async def test_a_slow_client_is_bounded_then_told_where_to_resume(
    engine: AsyncEngine, hub: EventHub, alice: Tenant
) -> None:
    sub = await hub.subscribe(alice.id, None)
    await append(engine, hub, alice.id, 10)
    first = await collect(sub, 10)
    # Never reads again while two buffers' worth arrive: the queue stops at its bound.
    for _ in range(2):
        await append(engine, hub, alice.id, BUFFER)
    await until(lambda: hub.overflows > 0)
    assert hub.overflows == 1
    assert sub.high_water <= BUFFER and sub.buffered == 0
    with pytest.raises(StreamOverflow) as overflow:
        await sub.next_batch()
    assert overflow.value.cursor == first[-1].cursor
    # Resuming from that cursor loses nothing and repeats nothing.
    resumed = await hub.subscribe(alice.id, overflow.value.cursor)
    rest = await collect(resumed, 2 * BUFFER)
    assert cursors(first + rest) == await all_ids(engine)


async def test_retention_keeps_the_newest_and_resets_old_cursors(
    engine: AsyncEngine, hub: EventHub, alice: Tenant
) -> None:
    await append(engine, hub, alice.id, 5)
    ids = await all_ids(engine)
    old = datetime.now(UTC) - timedelta(hours=100)
    async with engine.begin() as conn:
        await conn.execute(sa.update(events).values(created_at=old))
    assert await hub.prune() == 4  # all but the newest, however old it is
    assert await all_ids(engine) == ids[-1:]
    # A cursor whose successors were pruned: reset to now, never a silent gap.
    sub = await hub.subscribe(alice.id, ids[0])
    assert sub.reset and sub.start == hub.horizon
    with pytest.raises(CursorExpired) as gone:
        await hub.page(alice.id, ids[0], EventFilter(), 10)
    assert gone.value.restart == hub.horizon
    # The cursor just before what is kept is still good; so is 0 (the oldest kept).
    ok = await hub.subscribe(alice.id, ids[-2])
    assert not ok.reset
    assert cursors(await collect(ok, 1)) == ids[-1:]
    assert not (await hub.subscribe(alice.id, 0)).reset
    # A cursor from the future (another database) is reset too.
    assert (await hub.subscribe(alice.id, ids[-1] + 1000)).reset
    # Once it is no longer the newest, the old one goes too; fresh events stay.
    await append(engine, hub, alice.id, 2)
    assert await hub.prune() == 1
    assert await hub.prune() == 0
    assert len(await all_ids(engine)) == 2


async def test_stop_right_after_a_wake_up_stops(engine: AsyncEngine) -> None:
    """A wake-up and the cancellation landing in the same loop turn: on Python 3.11,
    `asyncio.wait_for` returned the wake-up and lost the cancellation, and stop() never returned
    (this hung a CI run). Every stop must finish, whatever the timing."""
    for _ in range(20):
        hub = EventHub(engine, client_buffer=BUFFER)
        await hub.start()
        await hub.wait_ready()
        hub.notify()  # the idle hub's wait completes in the next turn…
        began = time.monotonic()
        await hub.stop()  # …the turn in which its cancellation arrives
        assert time.monotonic() - began < 1.0


async def test_settle_returns_once_committed_events_are_delivered(
    engine: AsyncEngine, hub: EventHub, alice: Tenant
) -> None:
    sub = await hub.subscribe(alice.id, None)
    await append(engine, None, alice.id, 2)  # committed; nobody told the hub
    began = time.monotonic()
    await hub.settle(5.0)
    assert time.monotonic() - began < 1.0
    got = await collect(sub, 2, within=0.05)  # already there: nothing left to wait for
    assert cursors(got) == await all_ids(engine, alice.id)
