"""FLEET_INGEST_RECEIVER=process: MQTT read in a child process. If that child dies, another takes
over the same QoS 1 session: nothing the panels published is lost, nothing is stored twice."""

from __future__ import annotations

import os
import signal

import pytest
import sqlalchemy as sa

from fleet.ingest.receiver import ProcessLink
from fleet.store.tables import heartbeats
from tests.ingest.harness import start_stack, stop_stack
from tests.ingest.test_sigkill import PANELS, messages

pytestmark = pytest.mark.broker


async def test_a_killed_receiver_is_replaced_and_nothing_is_lost(
    db_url: str, mqtt_server: tuple[str, int], topic_base: str
) -> None:
    host, port = mqtt_server
    stack = await start_stack(db_url, host, port, topic_base, ingest_receiver="process", mqtt_qos=1)
    try:
        link = stack.runtime.link
        assert isinstance(link, ProcessLink)
        sequence = messages(topic_base)
        # 20 rounds: fewer than the 1,000 messages a stock Mosquitto queues for a session while
        # no receiver is connected (past that it drops them, at QoS 1 too).
        rounds = 20
        logins, beats = sequence[:PANELS], sequence[PANELS : PANELS * (rounds + 1)]
        for topic, payload in logins:
            stack.publisher.publish(topic, payload, qos=1)
        await stack.processed(PANELS)
        first = link._process
        half = len(beats) // 2
        for topic, payload in beats[:half]:
            stack.publisher.publish(topic, payload, qos=1)
        os.kill(first.pid, signal.SIGKILL)  # mid-stream: some delivered, some not yet acked
        for topic, payload in beats[half:]:
            info = stack.publisher.publish(topic, payload, qos=1)
        info.wait_for_publish(10)
        stats = stack.runtime.pipeline.stats
        await stack.until(lambda: stats.accepted["hb"] >= PANELS * rounds, 30)
        assert link._process is not None and link._process is not first
        async with stack.runtime.engine.connect() as conn:
            rows = (
                await conn.execute(
                    sa.select(heartbeats.c.device_id, sa.func.count()).group_by(
                        heartbeats.c.device_id
                    )
                )
            ).all()
        # The login's row, then every heartbeat (each moves the temperature by 1 °C), once.
        assert stats.accepted["hb"] == PANELS * rounds
        assert len(rows) == PANELS and {count for _, count in rows} == {rounds + 1}
        assert set(stats.rejected) <= {"replay"}  # redelivered copies of committed messages
    finally:
        await stop_stack(stack)


@pytest.mark.parametrize("receiver", ["inline", "process"])
async def test_both_receivers_take_qos1_messages(
    db_url: str, mqtt_server: tuple[str, int], topic_base: str, receiver: str
) -> None:
    host, port = mqtt_server
    stack = await start_stack(db_url, host, port, topic_base, ingest_receiver=receiver, mqtt_qos=1)
    try:
        for topic, payload in messages(topic_base)[: PANELS * 3]:
            stack.publisher.publish(topic, payload, qos=1)
        await stack.processed(PANELS * 3)
        stats = stack.runtime.pipeline.stats
        assert stats.accepted["login"] == PANELS and stats.accepted["hb"] == PANELS * 2
        assert not stats.rejected
    finally:
        await stop_stack(stack)
