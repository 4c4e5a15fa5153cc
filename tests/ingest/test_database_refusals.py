"""A database that refuses every write for a while (read-only after a failover, disk full) is
waited out: no message is taken for a poison message, rejected and acknowledged, and lost."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import psycopg
import pytest
import sqlalchemy as sa

from fleet.store.refusals import refused_for_its_content
from fleet.store.tables import devices
from tests.ingest.harness import Stack

REFUSE = (
    """
CREATE FUNCTION refuse_writes() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'cannot execute in a read-only transaction' USING ERRCODE = '25006';
END $$ LANGUAGE plpgsql
""",
    """
CREATE TRIGGER refuse_writes BEFORE INSERT OR UPDATE ON device_status
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_writes()
""",
)


@pytest.fixture
def db_url(pg_url: str) -> str:
    """PostgreSQL only: a trigger stands in for a server that has gone read-only."""
    return pg_url


@pytest.mark.postgres
@pytest.mark.broker
async def test_a_database_refusing_writes_is_waited_out_not_blamed_on_messages(
    stack: Stack,
) -> None:
    async with stack.runtime.engine.begin() as conn:
        for statement in REFUSE:
            await conn.exec_driver_sql(statement)
    panels = [stack.panel(70 + i) for i in range(3)]
    now = time.time()
    for panel in panels:
        stack.send(panel.login(now))
    # Long enough for several failed attempts (0.5 s, 1 s, 2 s apart) and the poison check.
    await asyncio.sleep(4)
    stats = stack.runtime.pipeline.stats
    assert dict(stats.rejected) == {}
    assert dict(stats.accepted) == {}
    async with stack.runtime.engine.begin() as conn:
        await conn.exec_driver_sql("DROP TRIGGER refuse_writes ON device_status")
    await stack.processed(3, timeout=20)
    async with stack.runtime.engine.connect() as conn:
        stored = {row.hostname for row in await conn.execute(sa.select(devices.c.hostname))}
    assert stored == {panel.hostname for panel in panels}
    assert dict(stats.rejected) == {}


def test_which_errors_blame_the_content(pg_url: str) -> None:
    def raised(run: object) -> BaseException:
        try:
            run()  # type: ignore[operator]
        except BaseException as exc:
            return exc
        raise AssertionError("nothing raised")

    # The database's own state: retried, never a message's fault.
    locked = sa.exc.OperationalError("UPDATE …", {}, sqlite3.OperationalError("database is locked"))
    assert not refused_for_its_content(locked)
    assert not refused_for_its_content(ConnectionRefusedError())
    assert not refused_for_its_content(TimeoutError())
    with psycopg.connect(pg_url.replace("+asyncpg", ""), autocommit=True) as conn:
        conn.execute("SET default_transaction_read_only = on")
        read_only = raised(lambda: conn.execute("CREATE TABLE t (x int)"))
        assert not refused_for_its_content(sa.exc.DBAPIError("CREATE …", {}, read_only))  # type: ignore[arg-type]
        # What a message carried: never accepted, however often it is tried.
        out_of_range = raised(lambda: conn.execute("SELECT 4294967295::int4"))
        assert refused_for_its_content(sa.exc.DBAPIError("SELECT …", {}, out_of_range))  # type: ignore[arg-type]
    duplicate = sa.exc.IntegrityError("INSERT …", {}, sqlite3.IntegrityError("UNIQUE failed"))
    assert refused_for_its_content(duplicate)
    assert refused_for_its_content(ValueError("cannot encode"))
