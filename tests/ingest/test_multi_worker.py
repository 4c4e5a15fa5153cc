"""One worker or two splitting the devices (FLEET_INGEST_PARTITION, or by account with
FLEET_ALARM_TOPIC_FILTER) end with the same state."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import pytest
import sqlalchemy as sa

from fleet.sim.alarm_panel import SimulatedPanel
from fleet.store import accounts
from fleet.store.tables import alarm_events, device_status, devices, heartbeats
from tests.ingest.harness import KEY, Stack, start_stack, stop_stack

pytestmark = [pytest.mark.broker]

PANELS = 12
ROUNDS = 15
# Server-side times, ids and sync bookkeeping depend on timing, not on the messages.
TIMING_COLUMNS = {
    "device_id",
    "last_seen",
    "updated_at",
    "last_sync_attempt",
    "sync_attempts",
    "command_sequence",
    "device_synced",
}


def recorded_sequence(
    panels_count: int = PANELS, rounds: int = ROUNDS, alarm_every: int = 7
) -> list[tuple[str, bytes]]:
    """A fixed message sequence: logins, heartbeats with random walks, alarms raised/cleared."""
    rng = random.Random(2026)
    panels = [
        SimulatedPanel(base="BASE", key=KEY, rng=random.Random(rng.getrandbits(32)))
        for _ in range(panels_count)
    ]
    now = 1_764_000_000.0
    messages = [panel.login(now) for panel in panels]
    for step in range(rounds):
        for i, panel in enumerate(panels):
            now += 1
            messages.append(panel.heartbeat(now))
            if (i + step) % alarm_every == 0:
                messages.append(panel.alarm(now, "PANIC1", active=step % 2 == 0))
    return messages


async def replay(stacks: list[Stack], messages: list[tuple[str, bytes]]) -> None:
    base = stacks[0].base
    for topic, payload in messages:
        stacks[0].raw(topic.replace("BASE", base, 1), payload)
    deadline = time.monotonic() + 30
    while sum(sum(s.runtime.pipeline.stats.accepted.values()) for s in stacks) < len(messages):
        assert time.monotonic() < deadline, [s.runtime.pipeline.stats for s in stacks]
        await __import__("asyncio").sleep(0.05)


async def snapshot(stack: Stack) -> dict[str, Any]:
    async with stack.runtime.engine.connect() as conn:
        macs = {r.id: r.mac_address for r in await conn.execute(sa.select(devices))}
        status = {
            macs[r.device_id]: {k: v for k, v in r._mapping.items() if k not in TIMING_COLUMNS}
            for r in await conn.execute(sa.select(device_status))
        }
        history: dict[str, list[tuple[Any, ...]]] = {}
        for r in await conn.execute(sa.select(heartbeats).order_by(heartbeats.c.id)):
            history.setdefault(macs[r.device_id], []).append(
                (
                    r.temperature,
                    r.humidity,
                    r.fan_pwm_duty,
                    r.panic1,
                    r.panic2,
                    r.box_sw,
                    r.change_type,
                    r.change_kinds,
                )
            )
        alarms: dict[str, list[tuple[Any, ...]]] = {}
        for r in await conn.execute(sa.select(alarm_events).order_by(alarm_events.c.id)):
            alarms.setdefault(macs[r.device_id], []).append(
                (r.alarm_type, r.event_state, r.priority, r.resolved_at is None)
            )
    return {"status": status, "history": history, "alarms": alarms}


@pytest.mark.postgres
async def test_two_workers_store_what_one_worker_stores(
    pg_url: str, sqlite_url: str, mqtt_server: tuple[str, int], topic_base: str
) -> None:
    host, port = mqtt_server
    messages = recorded_sequence()

    single = await start_stack(sqlite_url, host, port, topic_base + "a")
    try:
        await replay([single], messages)
        expected = await snapshot(single)
    finally:
        await stop_stack(single)

    first = await start_stack(pg_url, host, port, topic_base + "b", ingest_partition="0/2")
    second = await start_stack(
        pg_url,
        host,
        port,
        topic_base + "b",
        existing_account=first.account_id,
        ingest_partition="1/2",
    )
    try:
        await replay([first, second], messages)
        assert all(sum(s.runtime.pipeline.stats.accepted.values()) > 0 for s in (first, second))
        actual = await snapshot(first)
    finally:
        await stop_stack(second)
        await stop_stack(first)
    assert len(expected["status"]) == PANELS
    assert actual == expected


@pytest.mark.postgres
async def test_workers_split_by_account_store_what_one_worker_stores(
    pg_url: str, sqlite_url: str, mqtt_server: tuple[str, int], topic_base: str
) -> None:
    """Two accounts' panels under two topic bases: each worker subscribes to one base only
    (FLEET_ALARM_TOPIC_FILTER), so the broker sends it only its own messages; together they store
    what one worker subscribed to both stores."""
    host, port = mqtt_server
    messages = recorded_sequence()
    # The first half of the panels belong to the account of base X, the rest to Y's.
    panel_topics = sorted({topic.rpartition("/")[0] for topic, _ in messages})
    second_half = set(panel_topics[len(panel_topics) // 2 :])

    def in_bases(x: str, y: str) -> list[tuple[str, bytes]]:
        return [
            (topic.replace("BASE", y if topic.rpartition("/")[0] in second_half else x, 1), body)
            for topic, body in messages
        ]

    async def add_account(stack: Stack, base: str) -> None:
        async with stack.runtime.engine.begin() as conn:
            account_id = await accounts.create_account(conn, f"acct-{base}")
            await accounts.add_namespace(conn, account_id, "alarm_panel", base)

    async def publish(stacks: list[Stack], sent: list[tuple[str, bytes]]) -> None:
        for topic, payload in sent:
            stacks[0].raw(topic, payload)
        deadline = time.monotonic() + 30
        while sum(accepted(s) for s in stacks) < len(sent):
            assert time.monotonic() < deadline, [s.runtime.pipeline.stats for s in stacks]
            await asyncio.sleep(0.05)

    x, y = topic_base + "x", topic_base + "y"
    single = await start_stack(
        sqlite_url, host, port, x, alarm_topic_filter=f"{x}/pb/d/+/+,{y}/pb/d/+/+"
    )
    try:
        await add_account(single, y)
        await publish([single], in_bases(x, y))
        expected = await snapshot(single)
    finally:
        await stop_stack(single)

    x, y = topic_base + "v", topic_base + "w"
    first = await start_stack(pg_url, host, port, x)  # subscribes to x's panels only
    await add_account(first, y)
    second = await start_stack(
        pg_url, host, port, y, existing_account=first.account_id, alarm_topic_filter=f"{y}/pb/d/+/+"
    )
    sent = in_bases(x, y)
    try:
        await publish([first, second], sent)
        await asyncio.sleep(0.3)  # a message the broker sent to both would show by now
        actual = await snapshot(first)
        counts = [accepted(first), accepted(second)]
        rejected = [sum(s.runtime.pipeline.stats.rejected.values()) for s in (first, second)]
    finally:
        await stop_stack(second)
        await stop_stack(first)
    assert len(expected["status"]) == PANELS
    assert actual == expected
    # Each worker got exactly its own account's messages: none twice, none dropped.
    assert counts == [
        sum(1 for topic, _ in sent if topic.startswith(f"{x}/")),
        sum(1 for topic, _ in sent if topic.startswith(f"{y}/")),
    ]
    assert rejected == [0, 0]


def accepted(stack: Stack) -> int:
    return sum(stack.runtime.pipeline.stats.accepted.values())
