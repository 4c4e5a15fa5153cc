"""paho-mqtt's client with two costs of its receive path removed (about a third of paho's CPU a
message, measured with py-spy on a flat-out ingest; see README, Performance).

- paho reads each packet with at least three `recv` calls (the command byte, the remaining length
  a byte at a time, then the body): for a 100-byte PUBLISH the system calls cost more than the
  parsing. Here the socket is read up to `READ_BUFFER` bytes at a time and paho's reads are served
  from that buffer. Bytes can then wait in the buffer where the event loop's selector cannot see
  them: `buffered()` tells the caller to read again without waiting for the socket.
- paho matches every incoming topic against its per-topic callbacks (`message_callback_add`) even
  when there are none; Fleet uses only `on_message`, so that matcher is replaced by an empty one.

Both touch paho internals (`_sock_recv`, `_on_message_filtered`) that paho 2.x keeps stable
(pyproject pins paho-mqtt < 3): tests/ingest/test_paho_client.py and every ingest test run them
against a real broker, broker restarts included (TLS is not tested here).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt

READ_BUFFER = 65536


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
