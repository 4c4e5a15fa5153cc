"""Fleet's link to the MQTT broker: paho-mqtt's protocol engine on the asyncio loop.

The loop watches the socket and calls paho to read a burst of packets at a time; each message is
appended to a deque, and the ingest wakes once per burst (asyncio MQTT clients that hand every
message through a queue and a future receive several times slower). QoS 1 messages are
acknowledged by the consumer after the batch that holds them has committed (paho's manual_ack), so
a crash or a database outage never loses a message the broker delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import select
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from fleet.core.records import record
from fleet.ingest.paho_client import BufferedClient

log = logging.getLogger(__name__)

RECONNECT_MIN_SECONDS = 1
RECONNECT_MAX_SECONDS = 30
KEEPALIVE_SECONDS = 30
MISC_INTERVAL_SECONDS = 1.0
# Packets read per wake-up of the loop at most: a backlog is read in bursts this large, with the
# ingest's batches running between them.
READS_PER_WAKEUP = 1000
# Messages read but not yet taken by the consumer, at most (see Inbox): four of the ingest's
# largest batches (FLEET_INGEST_BATCH_MAX 2000), so that a full batch always waits.
INBOX_LIMIT = 8000
# While reading is paused for a consumer that is behind, a few packets are still read this
# often: paho drops a connection from which no byte came for its keep-alive (30 s), even one
# that is only waiting for the consumer. Any bytes will do, so the inbox grows by little.
PAUSED_READ_SECONDS = 10.0
PAUSED_READ_PACKETS = 100
# paho drops publishes it queued but has not written yet when it disconnects: stop() first waits
# this long at most for the last one (commands sent just before a restart must not vanish).
STOP_FLUSH_SECONDS = 2.0


@record
class InboundMessage:
    topic: str
    payload: bytes
    qos: int
    mid: int
    received: float  # time.time() when paho handed it over
    generation: int  # which connection delivered it: an ack must go back on that same session
    # What the receiver process made of it already (see alarm_panel.prepare.WireDecoder), if any.
    decoded: tuple[Any, ...] | None = None


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # never in a log line
    tls: bool = False


def parse_mqtt_url(url: str) -> BrokerAddress:
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts", "tcp") or not parts.hostname:
        shown = url.replace(parts.password, "***") if parts.password else url
        raise ValueError(
            f"FLEET_MQTT_URL must be 'embedded' or mqtt://[user:pass@]host:port, got {shown!r}"
        )
    tls = parts.scheme == "mqtts"
    return BrokerAddress(
        host=parts.hostname,
        port=parts.port or (8883 if tls else 1883),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        tls=tls,
    )


class Inbox:
    """Received messages waiting for the ingest, and the event that wakes it (one per burst).

    Bounded: once `limit` messages wait, the link stops reading (`full`) and asks to be called
    back (`call_when_room`) when the consumer has taken them down to half. The rest waits in the
    socket, then at the broker: reading on while the consumer is behind would only take the
    process's time from handing over what it holds (measured: a receiver that read a 53,000
    message backlog as fast as the socket gave it handed over 1,000 messages per 120 ms, and
    1,000 per 8 ms once the socket was empty) and its memory from everything else."""

    def __init__(self, limit: int = INBOX_LIMIT) -> None:
        self.messages: deque[InboundMessage] = deque()
        self.wakeup = asyncio.Event()
        self.limit = limit
        self._on_room: Callable[[], None] | None = None

    @property
    def full(self) -> bool:
        return len(self.messages) >= self.limit

    def call_when_room(self, callback: Callable[[], None]) -> None:
        """Call `callback` once, when a drain leaves at most half of `limit` waiting."""
        self._on_room = callback

    def extend(self, messages: Iterable[InboundMessage]) -> None:
        self.messages.extend(messages)
        self.wakeup.set()

    async def wait(self, max_wait: float | None) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max_wait):
                await self.wakeup.wait()

    def drain(self, limit: int) -> list[InboundMessage]:
        self.wakeup.clear()
        messages = self.messages
        if len(messages) <= limit:
            out = list(messages)
            messages.clear()
        else:
            out = [messages.popleft() for _ in range(limit)]
            self.wakeup.set()
        if self._on_room is not None and len(messages) <= self.limit // 2:
            on_room, self._on_room = self._on_room, None
            on_room()
        return out


class Link(Protocol):
    """What the ingest and the command transports use of a broker link (MqttLink, or
    receiver.ProcessLink)."""

    subscriptions: list[tuple[str, int]]

    @property
    def connected(self) -> bool: ...

    async def start(self, *, wait_connected: float = 10.0) -> None: ...

    def stop(self) -> None: ...

    async def wait_for_messages(self, max_wait: float | None) -> None: ...

    def interrupt_wait(self) -> None:
        """End a wait_for_messages in progress now (the ingest is stopping)."""

    def drain(self, limit: int) -> list[InboundMessage]: ...

    def pending(self) -> int: ...

    def ack(self, messages: Iterable[InboundMessage]) -> None: ...

    def publish(self, topic: str, payload: bytes, qos: int = 0) -> None: ...


class InboxReader:
    """The ingest's side of a link: what it received, waiting in its `Inbox`."""

    _inbox: Inbox

    async def wait_for_messages(self, max_wait: float | None) -> None:
        await self._inbox.wait(max_wait)

    def interrupt_wait(self) -> None:
        self._inbox.wakeup.set()

    def drain(self, limit: int) -> list[InboundMessage]:
        return self._inbox.drain(limit)

    def pending(self) -> int:
        return len(self._inbox.messages)


class MqttLink(InboxReader):
    """paho-mqtt's protocol engine driven by the asyncio loop (paho's "external event loop"
    mode): the socket is watched by the loop, so a received message costs no thread hand-over.
    A paho thread would contend with the ingest for the GIL on every socket read (measured:
    about 30 µs a message, a third of the ingest's CPU). Blocking connects run in a worker
    thread, so an unreachable broker never stalls the loop."""

    def __init__(
        self,
        address: BrokerAddress,
        client_id: str,
        subscriptions: Iterable[tuple[str, int]],
        *,
        persistent_session: bool = True,
        inbox_limit: int = INBOX_LIMIT,
    ) -> None:
        self.address = address
        self.subscriptions = list(subscriptions)
        self._inbox = Inbox(inbox_limit)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._connected = asyncio.Event()
        self._subscribed = asyncio.Event()
        self._received = 0  # messages handed over by paho, to tell a read that found one
        self._paused_since: float | None = None  # reading paused for a full inbox, since
        self._stopping = False
        self._housekeeping: asyncio.Task[None] | None = None
        self._reconnecting: asyncio.Task[None] | None = None
        self.generation = 0
        self._last_publish: mqtt.MQTTMessageInfo | None = None
        self._client = BufferedClient(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=not persistent_session,
            manual_ack=True,
        )
        # No cap on paho's own queue of outgoing QoS 1 publishes; the broker applies its own.
        self._client.max_inflight_messages_set(1000)
        if address.username:
            self._client.username_pw_set(address.username, address.password)
        if address.tls:
            self._client.tls_set()
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message  # what paho parses itself (QoS 2, MQTT 5)
        self._client.on_publish_received = self._on_publish_received
        self._client.on_subscribe = self._on_subscribe
        self._client.on_socket_open = self._on_socket_open
        self._client.on_socket_close = self._on_socket_close
        self._client.on_socket_register_write = self._on_socket_register_write
        self._client.on_socket_unregister_write = self._on_socket_unregister_write

    # --- paho's callbacks (on the loop, but for socket callbacks of a connect) ---------------
    def _on_connect(
        self, client: mqtt.Client, _u: object, _f: object, reason: object, _p: object
    ) -> None:
        if getattr(reason, "is_failure", False):
            log.error("MQTT broker refused the connection: %s", reason)
            return
        self.generation += 1
        log.info("connected to MQTT broker %s:%s", self.address.host, self.address.port)
        if self.subscriptions:
            client.subscribe(self.subscriptions)
        else:
            self._subscribed.set()
        self._connected.set()

    def _on_subscribe(
        self, _c: object, _u: object, _mid: object, reasons: object, _p: object
    ) -> None:
        failures = [r for r in reasons if getattr(r, "is_failure", False)]  # type: ignore[attr-defined]
        if failures:
            log.error("MQTT broker refused the subscription %s: %s", self.subscriptions, failures)
        self._subscribed.set()

    def _on_disconnect(
        self, _c: object, _u: object, _f: object, reason: object, _p: object
    ) -> None:
        self._connected.clear()
        if self._stopping:
            return
        log.warning("disconnected from MQTT broker (%s); reconnecting", reason)
        self._in_loop(self._start_reconnecting)

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        self._on_publish_received(msg.topic, bytes(msg.payload), msg.qos, msg.mid)

    def _on_publish_received(self, topic: str, payload: bytes, qos: int, mid: int) -> None:
        self._received += 1
        self._inbox.messages.append(
            InboundMessage(topic, payload, qos, mid, time.time(), self.generation)
        )

    def _on_socket_open(self, _c: object, _u: object, sock: Any) -> None:
        self._in_loop(self._watch_reads, sock.fileno())

    def _on_socket_close(self, _c: object, _u: object, sock: Any) -> None:
        self._in_loop(self._unwatch, sock.fileno())

    def _on_socket_register_write(self, _c: object, _u: object, sock: Any) -> None:
        self._in_loop(self._watch_writes, sock.fileno())

    def _on_socket_unregister_write(self, _c: object, _u: object, sock: Any) -> None:
        self._in_loop(self._unwatch_writes, sock.fileno())

    # --- the loop's side of the socket --------------------------------------------------------
    def _in_loop(self, callback: Callable[..., None], *args: Any) -> None:
        """Run `callback` on the loop: now if we are on it, else as its next step (in order)."""
        loop = self._loop
        if loop is None:
            return
        if threading.get_ident() == self._loop_thread:
            callback(*args)
        elif not loop.is_closed():
            loop.call_soon_threadsafe(callback, *args)

    def _watch_reads(self, fd: int) -> None:
        assert self._loop is not None
        if self._stopping:
            # A reconnect that was still running in its thread when stop() came: close its
            # socket, or that session would live on unread under our client id.
            sock = self._client.socket()
            if sock is not None and sock.fileno() == fd:
                sock.close()
            return
        self._loop.add_reader(fd, self._on_readable)

    def _watch_writes(self, fd: int) -> None:
        assert self._loop is not None
        self._loop.add_writer(fd, self._client.loop_write)

    def _unwatch_writes(self, fd: int) -> None:
        assert self._loop is not None
        self._loop.remove_writer(fd)

    def _unwatch(self, fd: int) -> None:
        assert self._loop is not None
        self._loop.remove_reader(fd)
        self._loop.remove_writer(fd)

    def _on_readable(self) -> None:
        """Read what the socket holds, up to a bound that keeps the loop responsive, and pause
        reading while the inbox is full (see Inbox). Not before the subscription is
        acknowledged: a session's queued messages come ahead of the SUBACK, and start(), which
        waits for it, comes before anyone takes them."""
        bounded = self._subscribed.is_set()
        self._read_burst(bounded=bounded)
        if bounded and self._inbox.full:
            self._pause_reading()
            return
        client = self._client
        sock = client.socket()
        if client.buffered() or (isinstance(sock, ssl.SSLSocket) and sock.pending()):
            # Bytes already read sit where the selector cannot see them (the client's read
            # buffer; with TLS, records decrypted in the SSL object): read them now, not when
            # the next packet happens to arrive.
            assert self._loop is not None
            self._loop.call_soon(self._on_readable)

    def _read_burst(self, *, bounded: bool, packets: int = READS_PER_WAKEUP) -> None:
        """paho reads one packet per call; a call that delivered no message found the socket
        empty (or read an ack or a ping answer: the loop calls again if more is waiting)."""
        client, inbox = self._client, self._inbox
        before = self._received
        for _ in range(packets):
            if bounded and inbox.full:
                break
            seen = self._received
            if client.loop_read() != mqtt.MQTT_ERR_SUCCESS or self._received == seen:
                break
        if self._received != before:
            inbox.wakeup.set()

    def _pause_reading(self) -> None:
        assert self._loop is not None
        sock = self._client.socket()
        if sock is not None:
            self._loop.remove_reader(sock.fileno())
        if self._paused_since is None:
            self._paused_since = time.monotonic()
        self._inbox.call_when_room(self._resume_reading)

    def _resume_reading(self) -> None:
        self._paused_since = None
        sock = self._client.socket()
        if sock is None or self._stopping or self._loop is None:
            return  # a new connection's socket is watched when it opens
        self._loop.add_reader(sock.fileno(), self._on_readable)
        self._loop.call_soon(self._on_readable)  # bytes may wait in the client's buffer

    async def _keep_alive(self) -> None:
        """paho's keep-alive pings and retries of unacknowledged publishes (loop_misc)."""
        while not self._stopping:
            await asyncio.sleep(MISC_INTERVAL_SECONDS)
            try:
                self._client.loop_misc()
                paused = self._paused_since
                if paused is not None and time.monotonic() - paused >= PAUSED_READ_SECONDS:
                    # The consumer is stuck (a database outage): read a few packets past the
                    # bound, so that the connection is seen alive.
                    self._paused_since = time.monotonic()
                    self._read_burst(bounded=False, packets=PAUSED_READ_PACKETS)
            except Exception:  # the pings must go on: a half-open connection is found by them
                log.exception("MQTT keep-alive failed")

    def _start_reconnecting(self) -> None:
        if self._stopping or (self._reconnecting is not None and not self._reconnecting.done()):
            return
        self._reconnecting = asyncio.create_task(self._reconnect(), name="mqtt-reconnect")

    async def _reconnect(self) -> None:
        # 1 s first, doubling to 30 s: a broker restart costs about a second, and a long outage
        # does not hammer the broker when it comes back.
        delay = RECONNECT_MIN_SECONDS
        while not self._stopping and self._client.socket() is None:
            await asyncio.sleep(delay)
            if self._stopping:
                return
            try:
                await asyncio.to_thread(self._client.reconnect)
            except (OSError, mqtt.WebsocketConnectionError) as exc:
                host, port = self.address.host, self.address.port
                log.warning("MQTT broker %s:%s unreachable: %s", host, port, exc)
                delay = min(delay * 2, RECONNECT_MAX_SECONDS)

    # --- the ingest's side ---------------------------------------------------------------------
    async def start(self, *, wait_connected: float = 10.0) -> None:
        """Connect and subscribe. Raises ConnectionError if the broker is unreachable."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._stopping = False
        unreachable = ConnectionError(
            f"cannot reach the MQTT broker at {self.address.host}:{self.address.port}"
        )
        try:
            async with asyncio.timeout(wait_connected):
                await asyncio.to_thread(
                    self._client.connect, self.address.host, self.address.port, KEEPALIVE_SECONDS
                )
            self._housekeeping = asyncio.create_task(self._keep_alive(), name="mqtt-keepalive")
            # Waiting for the SUBACK too: a message published right after start() must not be
            # missed.
            async with asyncio.timeout(wait_connected):
                await self._subscribed.wait()
        except (OSError, TimeoutError) as exc:
            self.stop()
            raise unreachable from exc

    def stop(self) -> None:
        """Send what is queued (commands sent just before a restart must not vanish: up to
        STOP_FLUSH_SECONDS, until the last QoS 1 publish is acknowledged), then disconnect."""
        self._stopping = True
        for task in (self._housekeeping, self._reconnecting):
            if task is not None:
                task.cancel()
        client = self._client
        last = self._last_publish
        if self.connected:
            # One deadline for all of it: a broker that stopped reading must not hold us here.
            deadline = time.monotonic() + STOP_FLUSH_SECONDS
            while time.monotonic() < deadline and (
                client.want_write() or (last is not None and not last.is_published())
            ):
                if not self._pump(deadline):
                    break
            client.disconnect()
            deadline = max(deadline, time.monotonic() + 0.5)
            while client.want_write() and time.monotonic() < deadline:
                if not self._pump(deadline):
                    break
        sock = client.socket()
        if sock is not None:  # not closed by paho after its DISCONNECT: close it here
            self._in_loop(self._unwatch, sock.fileno())
            sock.close()
        self._connected.clear()

    def _pump(self, deadline: float) -> bool:
        """One blocking round of reads and writes (stop() runs outside the loop's callbacks)."""
        sock = self._client.socket()
        if sock is None:
            return False
        # Bytes already in the client's read buffer (an acknowledgement we wait for) are not
        # seen by select: read them without waiting for the socket.
        buffered = self._client.buffered()
        wait = 0.0 if buffered else max(0.0, min(0.05, deadline - time.monotonic()))
        writes = [sock] if self._client.want_write() else []
        readable, writable, _ = select.select([sock], writes, [], wait)
        if writable:
            self._client.loop_write()
        if (readable or buffered) and self._client.socket() is not None:
            self._client.loop_read()
        return True

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def ack(self, messages: Iterable[InboundMessage]) -> None:
        """Acknowledge committed QoS 1 messages, in the order they arrived (MQTT 4.6: a broker
        may reorder what it sends next when acknowledgements come out of order). A message from
        an earlier connection is not acknowledged: the broker redelivers it and the anti-replay
        check drops the copy."""
        self.ack_ids((m.qos, m.mid, m.generation) for m in messages)

    def ack_ids(self, ids: Iterable[tuple[int, int, int]]) -> None:
        """`ack` by (qos, mid, generation): what the receiver process gets from the ingest."""
        if not self.connected:
            # Between a disconnect and the next CONNACK: an ack queued now could go out before
            # the CONNECT. Every message waiting was delivered on the old session and comes again.
            return
        generation = self.generation
        mids = []
        for qos, mid, delivered_on in ids:
            if not qos or delivered_on != generation:
                continue
            if qos == 1:
                mids.append(mid)
            else:  # QoS 2 (never subscribed by Fleet): paho's own exchange, after the PUBACKs
                self._client.ack_many(mids)
                mids = []
                self._client.ack(mid, qos)
        self._client.ack_many(mids)

    def publish(self, topic: str, payload: bytes, qos: int = 0) -> None:
        info = self._client.publish(topic, payload, qos)
        if qos:
            self._last_publish = info
        if info.rc == mqtt.MQTT_ERR_NO_CONN and qos == 0:
            raise ConnectionError("not connected to the MQTT broker")
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            raise ConnectionError(mqtt.error_string(info.rc))
