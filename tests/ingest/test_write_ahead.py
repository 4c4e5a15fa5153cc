"""Write-ahead: with a backlog waiting, a batch of heartbeats from known panels is decided in
memory and its writes commit while the ingest takes the next batch. The database ends up exactly
as when each batch commits before the next is read, also when such writes fail (the batch, and
the one decided on top of it, are then decided again from the database)."""

from __future__ import annotations

import logging
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RUN_ID, _pg_admin, _pg_url
from tests.ingest.harness import Stack, hold_ingest, start_stack, stop_stack
from tests.ingest.test_multi_worker import recorded_sequence, snapshot

pytestmark = pytest.mark.broker

BATCH = 100  # several batches, each large enough for its alarms to be split off
PANELS, ROUNDS, ALARM_EVERY = 40, 12, 37  # an alarm in about one message of 38


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def two_databases(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two fresh databases of one kind: the same sequence is ingested into each."""
    if request.param == "sqlite":
        template = request.getfixturevalue("sqlite_template")
        paths = [tmp_path / "a.db", tmp_path / "b.db"]
        for path in paths:
            shutil.copyfile(template, path)
        yield f"sqlite:///{paths[0]}", f"sqlite:///{paths[1]}"
        return
    template = request.getfixturevalue("pg_template")
    names = [f"fleet_t_{RUN_ID}_{uuid.uuid4().hex[:8]}" for _ in range(2)]
    for name in names:
        _pg_admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    yield _pg_url(names[0]), _pg_url(names[1])
    for name in names:
        _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _ingest_as_backlog(stack: Stack, messages: list[tuple[str, bytes]]) -> None:
    """Publish the whole sequence while the ingest is held, then let it take the backlog in
    batches of BATCH."""
    pipeline = stack.runtime.pipeline
    pipeline.batch_max = BATCH
    link, held = pipeline.link, await hold_ingest(stack)
    for topic, payload in messages:
        # QoS 0: at QoS 1 the stock broker's window (20 unacknowledged) would hold them back.
        stack.raw(topic.replace("BASE", stack.base, 1), payload, qos=0)
    await stack.until(lambda: link.pending() == len(messages))
    held.set()
    await stack.processed(len(messages), timeout=30)


async def _run(
    db_url: str,
    mqtt_server: tuple[str, int],
    base: str,
    *,
    write_ahead: bool,
    fail_first: bool,
    decide_fault: bool = False,
) -> tuple[dict[str, Any], Stack, int]:
    host, port = mqtt_server
    stack = await start_stack(db_url, host, port, base)
    pipeline = stack.runtime.pipeline
    writes = {"count": 0}
    if not write_ahead:
        pipeline._decide_ahead = lambda prepared: None  # type: ignore[method-assign]
    if decide_fault:
        decide_known = pipeline.handler.decide_known
        decided = {"count": 0}

        def faulty(messages: Any, now: Any) -> Any:
            # A fault of Fleet's own half way through a batch's decisions, once.
            decided["count"] += 1
            if decided["count"] == 2:
                decide_known(messages[: len(messages) // 2], now)
                raise RuntimeError("injected: a bug while deciding")
            return decide_known(messages, now)

        pipeline.handler.decide_known = faulty  # type: ignore[method-assign]
    handler_write = pipeline.handler.write

    async def counted_write(conn: Any, decisions: Any) -> None:
        writes["count"] += 1
        if fail_first and writes["count"] == 1:
            raise ConnectionError("injected: the database went away mid-batch")
        await handler_write(conn, decisions)

    pipeline.handler.write = counted_write  # type: ignore[method-assign]
    try:
        messages = recorded_sequence(PANELS, ROUNDS, ALARM_EVERY)
        await _ingest_as_backlog(stack, messages)
        stats = pipeline.stats
        assert sum(stats.accepted.values()) == len(messages)
        assert not stats.rejected
        return await snapshot(stack), stack, writes["count"]
    finally:
        await stop_stack(stack)


async def test_a_backlog_written_ahead_stores_what_batch_by_batch_stores(
    two_databases: tuple[str, str], mqtt_server: tuple[str, int], topic_base: str
) -> None:
    reference, tested = two_databases
    expected, _, _ = await _run(
        reference, mqtt_server, topic_base + "a", write_ahead=False, fail_first=False
    )
    actual, _, writes = await _run(
        tested, mqtt_server, topic_base + "b", write_ahead=True, fail_first=False
    )
    assert writes >= 3  # batches were written ahead, not only the last one
    assert actual == expected
    assert len(expected["history"]) == PANELS and expected["alarms"]


async def test_writes_that_fail_are_decided_again_and_nothing_is_lost_or_doubled(
    two_databases: tuple[str, str],
    mqtt_server: tuple[str, int],
    topic_base: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    reference, tested = two_databases
    expected, _, _ = await _run(
        reference, mqtt_server, topic_base + "a", write_ahead=False, fail_first=False
    )
    with caplog.at_level(logging.WARNING, logger="fleet.ingest.pipeline"):
        actual, _, writes = await _run(
            tested, mqtt_server, topic_base + "b", write_ahead=True, fail_first=True
        )
    assert "failed; applying it again" in caplog.text
    assert writes >= 3  # the failed writes, and later batches written ahead again
    assert actual == expected


async def test_a_fault_while_deciding_in_memory_falls_back_and_loses_nothing(
    two_databases: tuple[str, str],
    mqtt_server: tuple[str, int],
    topic_base: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """What was decided before the fault is dropped (the panels are reloaded) and the batch
    goes through the database path: nothing lost, nothing taken for a replay."""
    reference, tested = two_databases
    expected, _, _ = await _run(
        reference, mqtt_server, topic_base + "a", write_ahead=False, fail_first=False
    )
    actual, _, _ = await _run(
        tested, mqtt_server, topic_base + "b", write_ahead=True, fail_first=False, decide_fault=True
    )
    assert "deciding a batch of" in caplog.text
    assert actual == expected
