"""The link's paho client reads its socket in large chunks: paho's byte-sized reads are served from
that buffer, a new connection never sees the old one's bytes, and nothing waits unseen in the
buffer (over a real broker: bursts of small messages, a message larger than the buffer)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import pytest
from paho.mqtt.enums import CallbackAPIVersion

from fleet.ingest.mqtt_link import BrokerAddress, MqttLink
from fleet.ingest.paho_client import READ_BUFFER, BufferedClient


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
