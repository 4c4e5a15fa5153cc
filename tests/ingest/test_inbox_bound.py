"""A link holds at most its inbox's limit of messages read but not yet taken: past that it stops
reading (the rest waits in the socket and at the broker) and reads again once the consumer has
taken them down to half. Nothing is lost or reordered by the pause, and a consumer stuck for long
does not cost the connection (one burst is still read now and then)."""

from __future__ import annotations

import asyncio
import time

import pytest

from fleet.ingest import mqtt_link
from fleet.ingest.mqtt_link import BrokerAddress, InboundMessage, Inbox, MqttLink
from fleet.ingest.receiver import BURST_MAX, ProcessLink
from tests.ingest.harness import discard_session


def _messages(count: int) -> list[InboundMessage]:
    return [InboundMessage("t", b"%d" % i, 0, 0, 0.0, 1) for i in range(count)]


async def test_the_inbox_calls_back_once_when_drained_to_half() -> None:
    inbox = Inbox(limit=10)
    calls: list[int] = []
    inbox.extend(_messages(9))
    assert not inbox.full
    inbox.extend(_messages(1))
    assert inbox.full
    inbox.call_when_room(lambda: calls.append(len(inbox.messages)))
    inbox.drain(4)  # 6 left: more than half
    assert calls == []
    inbox.drain(1)  # 5 left: half
    assert calls == [5]
    inbox.drain(5)
    assert calls == [5]  # once


async def _collect(link: MqttLink | ProcessLink, count: int, seconds: float) -> list[bytes]:
    got: list[bytes] = []
    deadline = time.monotonic() + seconds
    while len(got) < count and time.monotonic() < deadline:
        await link.wait_for_messages(0.2)
        burst = link.drain(37)  # a slow consumer: small takes
        link.ack(burst)
        got += [m.payload for m in burst]
    return got


async def _settle(link: MqttLink | ProcessLink, seconds: float = 0.5) -> None:
    """Let the link read all it will read while nobody takes anything."""
    last, deadline = -1, time.monotonic() + 10
    while time.monotonic() < deadline:
        await asyncio.sleep(seconds)
        if link.pending() == last:
            return
        last = link.pending()


@pytest.mark.broker
@pytest.mark.parametrize("qos", [0, 1])
async def test_a_full_inbox_pauses_reading_and_loses_nothing(
    mqtt_server: tuple[str, int], topic_base: str, qos: int
) -> None:
    host, port = mqtt_server
    topic = f"{topic_base}/bound"
    # At QoS 1 the stock broker sends 20 unacknowledged messages at most: a bound under that.
    limit = 100 if qos == 0 else 10
    receiver = MqttLink(
        BrokerAddress(host, port), f"{topic_base}-r", [(topic, qos)], inbox_limit=limit
    )
    sender = MqttLink(BrokerAddress(host, port), f"{topic_base}-s", [], persistent_session=False)
    await receiver.start()
    await sender.start()
    try:
        # At QoS 1, fewer than the stock broker queues for one client (1,000) past its window.
        payloads = [f"{i:05d}".encode() for i in range(2000 if qos == 0 else 900)]
        for payload in payloads:
            sender.publish(topic, payload, qos=qos)
        await _settle(receiver)
        assert receiver.pending() == limit
        assert receiver._paused_since is not None
        taken = receiver.drain(limit // 2 + 1)  # under half: reading again, up to the bound
        receiver.ack(taken)
        await _settle(receiver)
        assert receiver.pending() == limit
        got = await _collect(receiver, len(payloads) - len(taken), 30)
        assert [m.payload for m in taken] + got == payloads
    finally:
        sender.stop()
        receiver.stop()


@pytest.mark.broker
async def test_a_consumer_stuck_for_long_still_gets_a_burst_now_and_then(
    mqtt_server: tuple[str, int], topic_base: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While paused, a few packets past the bound are read every PAUSED_READ_SECONDS: paho
    sees bytes arrive, so it keeps the connection."""
    monkeypatch.setattr(mqtt_link, "PAUSED_READ_SECONDS", 3600.0)  # not while it settles
    monkeypatch.setattr(mqtt_link, "PAUSED_READ_PACKETS", 50)
    host, port = mqtt_server
    topic = f"{topic_base}/stuck"
    receiver = MqttLink(BrokerAddress(host, port), f"{topic_base}-r", [(topic, 0)], inbox_limit=100)
    sender = MqttLink(BrokerAddress(host, port), f"{topic_base}-s", [], persistent_session=False)
    await receiver.start()
    await sender.start()
    try:
        for i in range(1000):
            sender.publish(topic, b"%05d" % i, qos=0)
        await _settle(receiver, 0.2)
        assert receiver.pending() == 100
        monkeypatch.setattr(mqtt_link, "PAUSED_READ_SECONDS", 0.5)
        await asyncio.sleep(2.5)  # the keep-alive task runs every second
        assert 150 <= receiver.pending() <= 250  # one or two bursts of 50, not the backlog
        assert receiver.connected
    finally:
        sender.stop()
        receiver.stop()


@pytest.mark.broker
async def test_the_process_receiver_is_bounded_too_and_loses_nothing(
    mqtt_server: tuple[str, int], topic_base: str
) -> None:
    """The ingest stops reading the pipe when its inbox is full; the receiver, blocked on the
    pipe, stops reading its socket at its own bound: the backlog waits at the broker."""
    host, port = mqtt_server
    topic = f"{topic_base}/pipe"
    link = ProcessLink(BrokerAddress(host, port), f"{topic_base}-p", [(topic, 0)], inbox_limit=500)
    sender = MqttLink(BrokerAddress(host, port), f"{topic_base}-s", [], persistent_session=False)
    await link.start()
    await sender.start()
    try:
        payloads = [b"%06d" % i for i in range(20_000)]
        for payload in payloads:
            sender.publish(topic, payload, qos=0)
        await _settle(link)
        # Bursts arrive whole: the bound is passed by at most one burst.
        assert 500 <= link.pending() < 500 + BURST_MAX
        got = await _collect(link, len(payloads), 60)
        assert got == payloads
    finally:
        sender.stop()
        link.stop()


@pytest.mark.broker
async def test_a_backlog_larger_than_the_bound_does_not_stop_the_link_starting(
    mqtt_server: tuple[str, int], topic_base: str
) -> None:
    """A persistent session's queued messages come ahead of the SUBACK that start() waits for:
    they are read past the bound, or start() would wait for an acknowledgement left unread."""
    host, port = mqtt_server
    topic, client_id = f"{topic_base}/backlog", f"{topic_base}-backlog"
    first = MqttLink(BrokerAddress(host, port), client_id, [(topic, 1)], inbox_limit=100)
    await first.start()
    first.stop()
    sender = MqttLink(BrokerAddress(host, port), f"{topic_base}-s", [], persistent_session=False)
    await sender.start()
    # Fewer than the stock broker queues for an offline session (1,000).
    payloads = [b"%04d" % i for i in range(600)]
    for payload in payloads:
        sender.publish(topic, payload, qos=1)
    await asyncio.sleep(0.5)
    sender.stop()
    # A bound under the stock broker's window (20): the first messages fill the inbox.
    link = MqttLink(BrokerAddress(host, port), client_id, [(topic, 1)], inbox_limit=10)
    try:
        await link.start(wait_connected=5)
        got = await _collect(link, len(payloads), 30)
        assert got == payloads
    finally:
        link.stop()
        discard_session(host, port, client_id)
