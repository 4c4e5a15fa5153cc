"""PostgreSQL only: ids that commit out of order, concurrent writers, and several Fleet processes
(hubs on their own engines, and a real second process) waking each other with LISTEN/NOTIFY."""

from __future__ import annotations

import asyncio
import os
import random
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from fleet.core.events import Event
from fleet.events import EventFilter, EventHub, StreamEvent
from fleet.store import events as event_log
from fleet.store.engine import create_engine
from fleet.store.tables import events
from tests.events.support import Tenant, append, collect, cursors, nothing_more, tenant, until

pytestmark = pytest.mark.postgres
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def pg_engine(pg_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(pg_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def pg_hub(pg_engine: AsyncEngine) -> AsyncIterator[EventHub]:
    hub = EventHub(pg_engine, client_buffer=100_000)
    await hub.start()
    await hub.wait_ready()
    yield hub
    await hub.stop()


async def committed_ids(engine: AsyncEngine, account_id: int) -> list[int]:
    async with engine.connect() as conn:
        query = sa.select(events.c.id).where(events.c.account_id == account_id).order_by("id")
        return [int(i) for i in (await conn.execute(query)).scalars()]


async def test_a_smaller_id_committed_late_is_not_skipped(
    pg_engine: AsyncEngine, pg_hub: EventHub
) -> None:
    acct = await tenant(pg_engine, "late")
    sub = await pg_hub.subscribe(acct.id, None)
    slow = await pg_engine.connect()
    await slow.begin()
    await event_log.append(slow, [Event(acct.id, "slow", 1, {})])  # draws the smaller id
    await append(pg_engine, pg_hub, acct.id, 1, type="fast")  # larger id, committed first
    await nothing_more(sub, 0.5)  # held back: the smaller id may still commit
    # A poller sees the same: nothing past the gap yet.
    assert await pg_hub.page(acct.id, 0, EventFilter(), 10) == []
    await slow.commit()
    await slow.close()
    pg_hub.notify()
    got = await collect(sub, 2)
    assert [e.type for e in got] == ["slow", "fast"]
    assert cursors(got) == await committed_ids(pg_engine, acct.id)


async def test_a_rolled_back_id_does_not_stall_the_stream(
    pg_engine: AsyncEngine, pg_hub: EventHub
) -> None:
    acct = await tenant(pg_engine, "rollback")
    sub = await pg_hub.subscribe(acct.id, None)
    doomed = await pg_engine.connect()
    await doomed.begin()
    await event_log.append(doomed, [Event(acct.id, "doomed", 1, {})])
    await append(pg_engine, pg_hub, acct.id, 1, type="kept")
    await nothing_more(sub, 0.3)
    await doomed.rollback()
    await doomed.close()  # no notify: the hub sees the writer end by itself
    [kept] = await collect(sub, 1, within=2)
    assert kept.type == "kept"


async def test_concurrent_writers_lose_nothing_and_keep_order(
    pg_engine: AsyncEngine, pg_hub: EventHub
) -> None:
    acct = await tenant(pg_engine, "writers")
    live = await pg_hub.subscribe(acct.id, None)
    rng = random.Random(5)
    polled: list[int] = []
    done = asyncio.Event()

    async def writer(n: int) -> None:
        for i in range(25):
            async with pg_engine.connect() as conn:
                await conn.begin()
                await event_log.append(conn, [Event(acct.id, "w", n, {"i": i})] * rng.randint(1, 3))
                await asyncio.sleep(rng.random() * 0.01)  # hold the id, uncommitted
                if rng.random() < 0.15:
                    await conn.rollback()
                else:
                    await conn.commit()
            pg_hub.notify()

    async def poller() -> None:
        cursor = 0
        while True:
            finished = done.is_set()
            page = await pg_hub.page(acct.id, cursor, EventFilter(), 500)
            polled.extend(e.cursor for e in page)
            cursor = page[-1].cursor if page else cursor
            if finished and not page:
                return
            await asyncio.sleep(0.005)

    polling = asyncio.create_task(poller())
    await asyncio.gather(*(writer(n) for n in range(8)))
    expected = await committed_ids(pg_engine, acct.id)
    got: list[StreamEvent] = await collect(live, len(expected))
    await until(lambda: pg_hub.horizon >= expected[-1])
    done.set()
    await polling
    assert cursors(got) == expected  # every committed event, once, in cursor order
    assert polled == expected
    await nothing_more(live, 0.1)


async def test_two_hubs_on_one_database_wake_each_other(pg_url: str) -> None:
    engines = [create_engine(pg_url), create_engine(pg_url)]
    # A slow poll, so only LISTEN/NOTIFY can deliver in time.
    hubs = [EventHub(e, poll_seconds=60) for e in engines]
    try:
        for hub in hubs:
            await hub.start()
            await hub.wait_ready()
            assert hub.wakeups is not None
            await hub.wakeups.wait_connected()
        acct = await tenant(engines[0], "two")
        subs = [await hub.subscribe(acct.id, None) for hub in hubs]
        await append(engines[0], hubs[0], acct.id, 3)  # raised in "process" 0
        await append(engines[1], hubs[1], acct.id, 2)  # raised in "process" 1
        expected = await committed_ids(engines[0], acct.id)
        for sub in subs:
            assert cursors(await collect(sub, 5, within=3)) == expected
        # The listening connection dies; it comes back and wake-ups flow again.
        listener = hubs[1].wakeups
        assert listener is not None
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (listener.backend_pid,))
        await until(lambda: listener.connections == 2, 10)
        await append(engines[0], hubs[0], acct.id, 1)
        [last] = await collect(subs[1], 1, within=3)
        assert last.cursor == (await committed_ids(engines[0], acct.id))[-1]
    finally:
        for hub in hubs:
            await hub.stop()
        for engine in engines:
            await engine.dispose()


OTHER_PROCESS = textwrap.dedent(
    """
    import asyncio, sys
    from fleet.core.events import Event
    from fleet.events import EventHub
    from fleet.store import events
    from fleet.store.engine import create_engine

    async def main(url, account_id):
        engine = create_engine(url)
        hub = EventHub(engine)
        await hub.start()
        await hub.wakeups.wait_connected()
        for i in range(4):
            async with engine.begin() as conn:
                await events.append(conn, [Event(account_id, "elsewhere", None, {"i": i})])
            hub.notify()
        await asyncio.sleep(0.3)  # let the NOTIFY go out
        await hub.stop()
        await engine.dispose()

    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
    """
)


async def test_an_event_raised_in_another_process_reaches_this_ones_clients(
    pg_url: str, pg_engine: AsyncEngine
) -> None:
    hub = EventHub(pg_engine, poll_seconds=60)
    await hub.start()
    try:
        await hub.wait_ready()
        acct: Tenant = await tenant(pg_engine, "elsewhere")
        sub = await hub.subscribe(acct.id, None)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", OTHER_PROCESS, pg_url, str(acct.id), env=env, cwd=ROOT
        )
        got = await collect(sub, 4, within=20)
        assert await proc.wait() == 0
        assert [e.type for e in got] == ["elsewhere"] * 4
        assert time.monotonic() - started < 20
    finally:
        await hub.stop()
