"""FLEET_INGEST_RECEIVER=process: MQTT read in a child process. If that child dies, another takes
over the same QoS 1 session: nothing the panels published is lost, nothing is stored twice."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest
import sqlalchemy as sa

from fleet.ingest.mqtt_link import BrokerAddress, MqttLink
from fleet.ingest.receiver import DECODE_ON_BACKLOG, ProcessLink
from fleet.integrations.alarm_panel.prepare import WireDecoder
from fleet.integrations.alarm_panel.topics import hostname_from_mac
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


async def test_the_receiver_decodes_only_while_a_backlog_waits_for_the_ingest(
    mqtt_server: tuple[str, int], topic_base: str
) -> None:
    """The ingest asks the receiver process to decode while more than DECODE_ON_BACKLOG
    messages wait for it, and to stop once they are down to DECODE_OFF_BACKLOG."""
    host, port = mqtt_server
    topic = f"{topic_base}/pb/d/{hostname_from_mac(bytes(6))}/hb"
    decoder = WireDecoder(bytes(32), 4096, None)
    link = ProcessLink(
        BrokerAddress(host, port), f"{topic_base}-steer", [(topic, 0)], decoder=decoder
    )
    publisher = MqttLink(
        BrokerAddress(host, port), f"{topic_base}-pub", [], persistent_session=False
    )
    await link.start()
    await publisher.start()

    async def arrived(count: int) -> None:
        async with asyncio.timeout(20):
            while link.pending() < count:  # noqa: ASYNC110 (a count the pipe fills)
                await asyncio.sleep(0.01)

    try:
        total = 3 * DECODE_ON_BACKLOG
        for i in range(total):  # nobody drains: the backlog builds
            publisher.publish(topic, b"frame %d" % i)
        await arrived(total)
        # The ingest asked for decoding when the backlog passed DECODE_ON_BACKLOG (the bursts
        # already on their way when it did may be either): what comes now is decoded.
        for i in range(total, total + 500):
            publisher.publish(topic, b"frame %d" % i)
        await arrived(total + 500)
        backlog = link.drain(total + 500)
        assert [m.payload for m in backlog] == [b"frame %d" % i for i in range(total + 500)]
        assert backlog[0].decoded is None  # the ingest decodes while it keeps up
        assert {m.decoded for m in backlog[total:]} == {("rejected", "too_short", "")}
        for i in range(3):  # one at a time now, each taken at once: no backlog
            publisher.publish(topic, b"late %d" % i)
            await arrived(1)
            (message,) = link.drain(10)
        assert message.decoded is None
    finally:
        publisher.stop()
        link.stop()
