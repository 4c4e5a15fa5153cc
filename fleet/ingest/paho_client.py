"""paho-mqtt's client with the costs of its receive path that Fleet does not need removed
(measured with py-spy on a flat-out ingest; see README, Performance).

- paho reads each packet with at least three `recv` calls (the command byte, the remaining length
  a byte at a time, then the body): for a 100-byte PUBLISH the system calls cost more than the
  parsing. Here the socket is read up to `READ_BUFFER` bytes at a time and paho's reads are served
  from that buffer. Bytes can then wait in the buffer where the event loop's selector cannot see
  them: `buffered()` tells the caller to read again without waiting for the socket.
- A QoS 0 or 1 PUBLISH that lies whole in that buffer is parsed here and handed to
  `on_publish_received(topic, payload, qos, mid)`, without paho's per-packet bookkeeping or its
  `MQTTMessage` (whose `MQTTMessageInfo` builds a lock and a condition for every message). Any
  other packet, or one not yet whole in the buffer, goes through paho as before.
- paho matches every incoming topic against its per-topic callbacks (`message_callback_add`) even
  when there are none; Fleet uses only `on_message`, so that matcher is replaced by an empty one.
- `ack_many` acknowledges a batch's QoS 1 messages with one write, where paho's `ack` queues a
  packet, asks the event loop to watch the socket for writing and sends each 4-byte PUBACK with a
  system call of its own.

These touch paho internals (`_sock_recv`, `_packet_read`, `_in_packet`, `_packet_queue`,
`_on_message_filtered`) that paho 2.x keeps stable (pyproject pins paho-mqtt < 3):
tests/ingest/test_paho_client.py and every ingest test run them against a real broker, broker
restarts included (TLS is not tested here).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode, MQTTProtocolVersion

READ_BUFFER = 65536
PUBLISH = 0x30
PUBACK = 0x40
PUBACK_HEADER = 0x4002_0000  # a PUBACK as a big-endian u32: type, length 2, then the mid
# (topic, payload, qos, mid) of a PUBLISH the client parsed itself
PublishReceived = Callable[[str, bytes, int, int], None]


class _NoTopicCallbacks:
    """Stands in for paho's MQTTMatcher: no per-topic callbacks, so nothing ever matches."""

    def iter_match(self, topic: str) -> Iterator[Any]:
        return iter(())

    def __setitem__(self, key: str, value: Any) -> None:
        raise NotImplementedError("Fleet's MQTT link delivers every message to on_message")

    def __delitem__(self, key: str) -> None:
        raise KeyError(key)


class BufferedClient(mqtt.Client):
    """`mqtt.Client` reading its socket in large chunks (see the module's doc)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_message_filtered = _NoTopicCallbacks()  # type: ignore[assignment]
        self._read_socket: Any = None  # the socket the buffer was read from
        self._read_buffer = b""
        self._read_position = 0
        self.on_publish_received: PublishReceived | None = None

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._read_socket is not self._sock:
            # A new connection: what was left of the old one's bytes must never be parsed.
            self._read_socket, self._read_buffer, self._read_position = self._sock, b"", 0
        start = self._read_position
        if start >= len(self._read_buffer):
            # Raises BlockingIOError when the socket is empty, as paho expects; b"" is EOF.
            data = super()._sock_recv(max(bufsize, READ_BUFFER))
            if len(data) <= bufsize:
                self._read_buffer, self._read_position = b"", 0
                return data
            self._read_buffer, start = data, 0
        end = start + bufsize
        self._read_position = min(end, len(self._read_buffer))
        return self._read_buffer[start:end]

    def buffered(self) -> bool:
        """True when bytes read from the socket are waiting for paho (read again now: the
        socket may stay silent)."""
        return self._read_socket is self._sock and self._read_position < len(self._read_buffer)

    def _packet_read(self) -> MQTTErrorCode:
        """A QoS 0/1 PUBLISH that lies whole in the buffer is parsed here (see the module's doc);
        anything else is paho's, which reads it through `_sock_recv` from where this left off."""
        deliver = self.on_publish_received
        buffer, start = self._read_buffer, self._read_position
        if (
            deliver is None
            or self._in_packet["command"]  # paho is part way through a packet
            or self._read_socket is not self._sock
            or self._protocol == MQTTProtocolVersion.MQTTv5
        ):
            return super()._packet_read()
        end = len(buffer)
        # The fixed header: the packet type, then the remaining length (1 to 4 bytes, 7 bits each).
        position, length, shift = start + 1, 0, 0
        while True:
            if position >= end or shift > 21:
                return super()._packet_read()  # not whole here (or malformed: paho says so)
            byte = buffer[position]
            position += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        command = buffer[start]
        body_end = position + length
        if command & 0xF0 != PUBLISH or command & 0x06 > 2 or body_end > end:
            return super()._packet_read()  # not a QoS 0/1 PUBLISH, or not whole here
        qos = (command & 0x06) >> 1
        if length < 2 + 2 * qos:
            return super()._packet_read()  # malformed: paho's path reports it
        topic_end = position + 2 + ((buffer[position] << 8) | buffer[position + 1])
        if topic_end == position + 2 or topic_end + 2 * qos > body_end:
            return super()._packet_read()  # malformed: paho's path reports it
        self._read_position = body_end
        with self._msgtime_mutex:  # what paho's keep-alive looks at
            self._last_bytes_received = mqtt.time_func()
        topic = buffer[position + 2 : topic_end].decode("utf-8", "replace")
        if qos:
            mid = (buffer[topic_end] << 8) | buffer[topic_end + 1]
            deliver(topic, buffer[topic_end + 2 : body_end], 1, mid)
            if not self._manual_ack:
                return self._send_puback(mid)
        else:
            deliver(topic, buffer[topic_end:body_end], 0, 0)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def ack_many(self, mids: Sequence[int]) -> None:
        """Acknowledge QoS 1 messages (manual_ack), in this order, with one write."""
        if mids:
            packets = struct.pack(f">{len(mids)}I", *[PUBACK_HEADER | mid for mid in mids])
            self._packet_queue(PUBACK, packets, 0, 0)
