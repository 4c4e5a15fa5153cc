"""A broker restart or a database outage during ingest: Fleet recovers by itself and loses no
message the broker delivered at QoS 1, because it acknowledges only after the commit."""

from __future__ import annotations

import asyncio
import gc
import time
import warnings

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from fleet.store.tables import heartbeats
from tests.conftest import PG_ADMIN_URL
from tests.ingest.conftest import PrivateBroker
from tests.ingest.harness import start_stack, stop_stack


async def _stored(stack, count: int, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        async with stack.runtime.engine.connect() as conn:
            n = (await conn.execute(sa.select(sa.func.count()).select_from(heartbeats))).scalar()
        if n >= count:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{n} of {count} rows after {timeout} s")
        await asyncio.sleep(0.1)


async def _alarm_rows(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        query = sa.select(sa.func.count()).select_from(heartbeats)
        return int(
            (await conn.execute(query.where(heartbeats.c.change_type == "ALARM"))).scalar() or 0
        )


@pytest.mark.broker
async def test_broker_restart_during_ingest(
    db_url: str, private_broker: PrivateBroker, topic_base: str
) -> None:
    stack = await start_stack(db_url, "127.0.0.1", private_broker.port, topic_base)
    try:
        panels = [stack.panel(100 + i) for i in range(5)]
        now = time.time()
        for panel in panels:
            stack.send(panel.login(now))
        await stack.processed(5)
        private_broker.stop()
        private_broker.start()
        # Fleet and the test's publisher both reconnect by themselves.
        await stack.until(
            lambda: stack.runtime.link.connected and stack.publisher.is_connected(), 15
        )
        for panel in panels:
            stack.send(panel.alarm(time.time(), "PANIC1", active=True))
        await stack.processed(10, timeout=15)
        assert await _alarm_rows(stack.runtime.engine) == 5
    finally:
        await stop_stack(stack)


@pytest.mark.postgres
@pytest.mark.broker
async def test_database_outage_loses_nothing_and_acks_only_after_commit(
    pg_url: str, mqtt_server: tuple[str, int], topic_base: str
) -> None:
    """The database refuses connections while panels report; Fleet is even stopped and started
    again meanwhile. Every message the broker delivered ends up stored once."""
    host, port = mqtt_server
    dbname = pg_url.rsplit("/", 1)[1]

    def admin(sql: str) -> None:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(sql)

    stack = await start_stack(pg_url, host, port, topic_base)
    client_id = stack.runtime.settings.mqtt_client_id
    panels = [stack.panel(200 + i) for i in range(3)]
    now = time.time()
    for panel in panels:
        stack.send(panel.login(now))
    await _stored(stack, 3)
    admin(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS false')
    admin(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{dbname}'")
    try:
        for panel in panels:
            stack.send(panel.alarm(time.time(), "PANIC2", active=True))
        await asyncio.sleep(1.5)  # the batch fails and is retried; nothing is acknowledged
        assert stack.runtime.pipeline.stats.accepted["alarm"] == 0
        # Stop this Fleet while its batch is uncommitted, as a crash would.
        stack.runtime.pipeline.stop()
        for task in stack.runtime._tasks:
            task.cancel()
        stack.runtime.link.stop()
    finally:
        admin(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS true')
    await stack.runtime.dispose_engines()
    # The "crash" cancelled connection attempts half-way; collect what they left, as the
    # operating system would for a killed process.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        await asyncio.sleep(0.1)
        gc.collect()
    stack.publisher.disconnect()
    stack.publisher.loop_stop()
    # A new Fleet with the same client id: the broker redelivers the unacknowledged messages.
    from fleet.config import Settings
    from fleet.runtime import FleetRuntime

    settings: Settings = stack.runtime.settings
    runtime = FleetRuntime(settings)
    await runtime.start(migrate=False)
    stack.runtime = runtime
    try:
        await stack.until(lambda: runtime.pipeline.stats.accepted["alarm"] >= 3, 15)
        assert await _alarm_rows(runtime.engine) == 3
    finally:
        await runtime.stop()
        from tests.ingest.harness import discard_session

        discard_session(host, port, client_id)


@pytest.mark.postgres
@pytest.mark.broker
async def test_connections_closed_by_the_database_cost_the_ingest_one_attempt(
    pg_url: str, mqtt_server: tuple[str, int], topic_base: str
) -> None:
    """The ingest's pool does not ping a connection before each batch: when PostgreSQL has
    closed them (a restart, an administrator), the next batch fails once and is retried on a
    new connection; nothing is lost or stored twice."""
    host, port = mqtt_server
    dbname = pg_url.rsplit("/", 1)[1]
    stack = await start_stack(pg_url, host, port, topic_base)
    try:
        assert stack.runtime.ingest_engine is not stack.runtime.engine
        panels = [stack.panel(300 + i) for i in range(3)]
        for panel in panels:
            stack.send(panel.login(time.time()))
        await _stored(stack, 3)
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            closed = conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (dbname,),
            ).fetchone()
        assert closed and closed[0] >= 1  # the ingest's pooled connection among them
        for panel in panels:
            stack.send(panel.alarm(time.time(), "PANIC1", active=True))
        await _stored(stack, 6)
        await asyncio.sleep(0.5)  # a second copy of any row would land now
        assert await _alarm_rows(stack.runtime.engine) == 3
        assert stack.runtime.pipeline.stats.accepted["alarm"] == 3
    finally:
        await stop_stack(stack)
