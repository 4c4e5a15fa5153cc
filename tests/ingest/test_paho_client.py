"""The link's paho client reads its socket in large chunks: paho's byte-sized reads are served from
that buffer, a new connection never sees the old one's bytes, and nothing waits unseen in the
buffer (over a real broker: bursts of small messages, a message larger than the buffer). QoS 0/1
PUBLISHes whole in the buffer are parsed by the client itself, the rest by paho, every message once
and in order; QoS 1 acknowledgements go out as one write, and the broker takes them."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import pytest
from paho.mqtt.enums import CallbackAPIVersion

from fleet.ingest.mqtt_link import BrokerAddress, InboundMessage, MqttLink
from fleet.ingest.paho_client import READ_BUFFER, BufferedClient
from tests.ingest.harness import discard_session


@pytest.fixture
def client() -> Iterator[BufferedClient]:
    yield BufferedClient(CallbackAPIVersion.VERSION2, client_id="buffer-test")


def _pair() -> tuple[socket.socket, socket.socket]:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    return ours, theirs


def test_small_reads_come_from_one_socket_read(client: BufferedClient) -> None:
    ours, theirs = _pair()
    client._sock = ours
    theirs.sendall(b"\x30\x05hello\x30\x02hi")
    assert client._sock_recv(1) == b"\x30"
    assert client.buffered()
    theirs.sendall(b"late")  # still in the socket: the buffer is served first
    assert client._sock_recv(1) == b"\x05"
    assert client._sock_recv(5) == b"hello"
    assert client._sock_recv(1) == b"\x30"
    assert client._sock_recv(10) == b"\x02hi"  # a short read, as a socket gives
    assert not client.buffered()
    assert client._sock_recv(10) == b"late"
    with pytest.raises(BlockingIOError):  # empty: what paho expects from a non-blocking socket
        client._sock_recv(1)
    theirs.close()
    assert client._sock_recv(1) == b""  # end of stream: paho sees the connection lost
    ours.close()


def test_a_new_connection_drops_the_old_ones_bytes(client: BufferedClient) -> None:
    old, old_peer = _pair()
    client._sock = old
    old_peer.sendall(b"\x30\x03abc")
    assert client._sock_recv(1) == b"\x30"
    assert client.buffered()
    new, new_peer = _pair()
    client._sock = new
    assert not client.buffered()
    new_peer.sendall(b"\x20\x02\x00\x00")  # a CONNACK on the new connection
    assert client._sock_recv(1) == b"\x20"
    for sock in (old, old_peer, new, new_peer):
        sock.close()


def test_a_read_larger_than_the_buffer_is_not_split(client: BufferedClient) -> None:
    ours, theirs = _pair()
    client._sock = ours
    body = bytes(range(256)) * (READ_BUFFER // 256 + 10)
    theirs.sendall(body)
    received = b""
    while len(received) < len(body):
        received += client._sock_recv(len(body) - len(received))
    assert received == body
    ours.close()
    theirs.close()


def test_per_topic_callbacks_are_refused_not_ignored(client: BufferedClient) -> None:
    with pytest.raises(NotImplementedError):
        client.message_callback_add("a/#", lambda *_: None)


@pytest.mark.broker
async def test_every_message_of_a_burst_arrives_in_order(
    mqtt_server: tuple[str, int], topic_base: str
) -> None:
    host, port = mqtt_server
    topic = f"{topic_base}/burst"
    receiver = MqttLink(BrokerAddress(host, port), f"{topic_base}-r", [(topic, 0)])
    sender = MqttLink(BrokerAddress(host, port), f"{topic_base}-s", [], persistent_session=False)
    await receiver.start()
    await sender.start()
    try:
        big = b"B" * (3 * READ_BUFFER + 17)  # spans several socket reads
        payloads = [f"{i:05d}".encode() for i in range(3000)]
        payloads.insert(1500, big)
        for payload in payloads:
            sender.publish(topic, payload, qos=0)
        got: list[bytes] = []
        deadline = time.monotonic() + 15
        # The last messages must arrive without any further traffic: none may wait unseen in
        # the client's buffer.
        while len(got) < len(payloads) and time.monotonic() < deadline:
            await receiver.wait_for_messages(0.2)
            got += [m.payload for m in receiver.drain(10_000)]
        assert got == payloads
        await asyncio.sleep(0.2)
        assert receiver.pending() == 0
    finally:
        sender.stop()
        receiver.stop()


def test_a_stopping_link_reads_what_waits_in_the_buffer(monkeypatch: pytest.MonkeyPatch) -> None:
    """stop() pumps the socket with select(), which cannot see bytes already in the client's
    buffer (say, the acknowledgement of the last command): they are read all the same."""
    link = MqttLink(BrokerAddress("127.0.0.1", 1), "buffer-stop", [])
    ours, theirs = _pair()
    link._client._sock = ours
    theirs.sendall(b"\x40\x02\x00\x01")  # a PUBACK, read whole into the buffer below
    assert link._client._sock_recv(1) == b"\x40"
    reads: list[int] = []
    monkeypatch.setattr(link._client, "loop_read", lambda *_: reads.append(1) or 0)
    link._pump(time.monotonic() + 1)
    assert reads == [1]
    ours.close()
    theirs.close()


def _publish(topic: bytes, payload: bytes, qos: int = 0, mid: int = 0) -> bytes:
    """A PUBLISH packet as a broker sends it (MQTT 3.1.1, remaining length up to 2 bytes)."""
    body = len(topic).to_bytes(2, "big") + topic + (mid.to_bytes(2, "big") if qos else b"")
    body += payload
    length = len(body)
    header = bytes([length]) if length < 128 else bytes([length & 0x7F | 0x80, length >> 7])
    return bytes([0x30 | qos << 1]) + header + body


def test_whole_publishes_are_parsed_from_the_buffer_and_the_rest_left_to_paho(
    client: BufferedClient,
) -> None:
    """QoS 0/1 PUBLISHes lying whole in the buffer reach on_publish_received with their topic,
    payload, qos and mid (one with a two-byte length too); the first of a socket read, one split
    over two reads, a SUBACK and a QoS 2 PUBLISH go through paho's own handling (on_message).
    Together: every message once, in order."""
    ours, theirs = _pair()
    client._sock = ours
    received: list[tuple[str, bytes, int, int]] = []
    fast: list[str] = []

    def on_publish_received(topic: str, payload: bytes, qos: int, mid: int) -> None:
        fast.append(topic)
        received.append((topic, payload, qos, mid))

    client.on_publish_received = on_publish_received
    client.on_message = lambda _c, _u, m: received.append((m.topic, bytes(m.payload), m.qos, m.mid))
    client._manual_ack = True
    big = b"x" * 300  # a remaining length of two bytes
    stream = (
        _publish(b"a/a", b"zero")  # the first of the read: paho's
        + _publish(b"a/b", b"one")
        + _publish(b"a/c", b"two", qos=1, mid=513)
        + b"\x90\x03\x00\x01\x00"  # SUBACK for mid 1 (paho's own handling)
        + _publish(b"a/d", big, qos=1, mid=7)
        + _publish(b"a/e", b"three", qos=2, mid=9)  # QoS 2: paho's (it answers PUBREC)
        + _publish("a/é".encode(), b"four")  # split over two reads: paho's
        + _publish(b"a/f", b"five")
        + b"\x62\x02\x00\x09"  # PUBREL of the QoS 2 one: paho delivers it now
    )
    split = len(stream) - len(_publish(b"a/f", b"five")) - 4 - 3
    theirs.sendall(stream[:split])
    for _ in range(7):  # the seventh reads what there is of the split one
        client.loop_read()
    assert not client.buffered()
    theirs.sendall(stream[split:])
    for _ in range(3):
        client.loop_read()
    assert received == [
        ("a/a", b"zero", 0, 0),
        ("a/b", b"one", 0, 0),
        ("a/c", b"two", 1, 513),
        ("a/d", big, 1, 7),
        ("a/é", b"four", 0, 0),
        ("a/f", b"five", 0, 0),
        ("a/e", b"three", 2, 9),
    ]
    assert fast == ["a/b", "a/c", "a/d", "a/f"]
    ours.close()
    theirs.close()


def test_ack_many_sends_the_pubacks_in_order_in_one_write(client: BufferedClient) -> None:
    ours, theirs = _pair()
    client._sock = ours
    client.ack_many([1, 258, 65535])
    client.ack_many([])
    client.loop_write()
    assert theirs.recv(100) == b"\x40\x02\x00\x01\x40\x02\x01\x02\x40\x02\xff\xff"
    ours.close()
    theirs.close()


@pytest.mark.broker
async def test_the_broker_takes_the_batched_acknowledgements(
    mqtt_server: tuple[str, int], topic_base: str
) -> None:
    """A persistent session: what was acknowledged (ack_many) is never sent again; what was not
    comes again on the next connection."""
    host, port = mqtt_server
    topic, client_id = f"{topic_base}/acks", f"{topic_base}-acks"
    sender = MqttLink(BrokerAddress(host, port), f"{topic_base}-s", [], persistent_session=False)
    await sender.start()
    try:
        first = MqttLink(BrokerAddress(host, port), client_id, [(topic, 1)])
        await first.start()
        payloads = [b"%03d" % i for i in range(300)]
        for payload in payloads:
            sender.publish(topic, payload, qos=1)
        got: list[InboundMessage] = []
        deadline = time.monotonic() + 15
        while len(got) < 15 and time.monotonic() < deadline:  # the stock broker's window: 20
            await first.wait_for_messages(0.2)
            got += first.drain(1000)
        first.ack(got[:10])  # one write
        acked = [m.payload for m in got[:10]]
        await asyncio.sleep(0.3)
        first.stop()
        again = MqttLink(BrokerAddress(host, port), client_id, [(topic, 1)])
        await again.start()
        rest: list[bytes] = []
        deadline = time.monotonic() + 20
        while len(rest) < len(payloads) - len(acked) and time.monotonic() < deadline:
            await again.wait_for_messages(0.2)
            burst = again.drain(1000)
            again.ack(burst)
            rest += [m.payload for m in burst]
        await asyncio.sleep(0.5)
        rest += [m.payload for m in again.drain(1000)]
        again.stop()
        assert acked == payloads[:10]
        assert rest == payloads[10:]  # every one not acknowledged, once, in order
    finally:
        sender.stop()
        discard_session(host, port, client_id)
