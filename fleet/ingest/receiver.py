"""The MQTT receiver in a process of its own: paho's parsing on the second core.

Reading MQTT in pure Python (paho) costs the ingest about 15 µs a message, a third of its loop.
`ProcessLink` moves it to a child process that owns the subscription (an `MqttLink`, with its
reconnects and QoS 1 session) and hands messages over a pipe in bursts, one pickle per burst;
the ingest acknowledges a committed batch by sending the ids back, and the child acknowledges
them to the broker in arrival order. Commands and other publishes go out over a publish-only
`MqttLink` of the ingest's own process.

Given a `decoder` (the alarm panels' `WireDecoder`), the child also decodes what it hands over,
but only while the ingest asks it to: while a backlog of more than `DECODE_ON_BACKLOG` messages
waits in the ingest's inbox (the ingest's loop is the slower of the two, so the other core takes
the decoding), until it is down to `DECODE_OFF_BACKLOG`. Otherwise the ingest decodes, and the
child's time goes to reading the socket and to acknowledgements (at QoS 1 the child is the
slower one: the broker's window of unacknowledged messages never lets such a backlog build).

If the ingest process dies the pipe closes and the child exits without acknowledging anything:
the broker redelivers, as it would to an `MqttLink` in the ingest's process.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import multiprocessing
import pickle
import signal
import time
from collections.abc import Callable, Iterable
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import Synchronized
from typing import Any

from fleet.ingest.mqtt_link import (
    INBOX_LIMIT,
    BrokerAddress,
    InboundMessage,
    Inbox,
    InboxReader,
    MqttLink,
)

log = logging.getLogger(__name__)

BURST_MAX = 1000  # messages per hand-over at most
# Messages the child holds read but not handed over, at most: past this it stops reading the
# socket (see mqtt_link.Inbox) and its time goes to handing over.
RECEIVER_INBOX_LIMIT = 4 * BURST_MAX
DECODE_ON_BACKLOG = 2 * BURST_MAX  # messages waiting in the ingest: the child decodes from now
DECODE_OFF_BACKLOG = BURST_MAX // 2  # … until the backlog is down to this
START_TIMEOUT_SECONDS = 15.0
STOP_TIMEOUT_SECONDS = 5.0
RESTART_MIN_SECONDS = 1.0
RESTART_MAX_SECONDS = 30.0
GENERATIONS_PER_RECEIVER = 1_000_000  # a receiver's own connection count stays below this

# What crosses the pipe. Child -> ingest: ("ready", None), ("error", text), ("messages", [tuple of
# InboundMessage fields, …]). Ingest -> child: ("ack", [(qos, mid, generation), …]), ("decode",
# True|False), ("stop", None).
Wire = tuple[str, Any]
# Run by the child on each message (topic, payload): what it sends as the message's `decoded`.
Decoder = Callable[[str, bytes], tuple[Any, ...] | None]


def _send(conn: Connection, item: Wire) -> None:
    conn.send_bytes(pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL))


def _receive(conn: Connection) -> Wire:
    item: Wire = pickle.loads(conn.recv_bytes())
    return item


# --- the child process ---------------------------------------------------------------------------
def receiver_main(
    conn: Connection,
    address: BrokerAddress,
    client_id: str,
    subscriptions: list[tuple[str, int]],
    persistent_session: bool,
    connected: Synchronized[int],
    log_level: int,
    decoder: Decoder | None = None,
) -> None:
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Ctrl+C reaches the whole process group: the ingest stops this receiver in its own time,
    # after its last acknowledgements.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            _serve(conn, address, client_id, subscriptions, persistent_session, connected, decoder)
        )


async def _serve(
    conn: Connection,
    address: BrokerAddress,
    client_id: str,
    subscriptions: list[tuple[str, int]],
    persistent_session: bool,
    connected: Synchronized[int],
    decoder: Decoder | None,
) -> None:
    link = MqttLink(
        address,
        client_id,
        subscriptions,
        persistent_session=persistent_session,
        inbox_limit=RECEIVER_INBOX_LIMIT,
    )
    try:
        await link.start()
    except ConnectionError as exc:
        _send(conn, ("error", str(exc)))
        return
    _send(conn, ("ready", None))
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    decoding = {"on": False}  # set by the ingest (see the module's doc)

    def on_command() -> None:
        try:
            kind, body = _receive(conn)
        except (EOFError, OSError):
            kind, body = "stop", None  # the ingest is gone: stop, acknowledging nothing more
        if kind == "ack":
            link.ack_ids(body)
        elif kind == "decode":
            decoding["on"] = bool(body)
        elif kind == "stop":
            loop.remove_reader(conn.fileno())
            done.set()

    loop.add_reader(conn.fileno(), on_command)
    try:
        while not done.is_set():
            connected.value = int(link.connected)
            await link.wait_for_messages(0.5)
            burst = link.drain(BURST_MAX)
            if burst:
                decode = decoder if decoding["on"] else None
                fields = [
                    (
                        m.topic,
                        m.payload,
                        m.qos,
                        m.mid,
                        m.received,
                        m.generation,
                        None if decode is None else decode(m.topic, m.payload),
                    )
                    for m in burst
                ]
                # From a thread: while the pipe is full (the ingest is behind) the loop goes on
                # reading the ingest's acknowledgements, so neither side waits for the other.
                await asyncio.to_thread(_send, conn, ("messages", fields))
    except (BrokenPipeError, EOFError, OSError):
        pass  # the ingest is gone
    finally:
        connected.value = 0
        link.stop()


# --- the ingest's side ---------------------------------------------------------------------------
class ProcessLink(InboxReader):
    """`MqttLink`'s interface, with the subscription read in a child process."""

    def __init__(
        self,
        address: BrokerAddress,
        client_id: str,
        subscriptions: Iterable[tuple[str, int]],
        *,
        persistent_session: bool = True,
        decoder: Decoder | None = None,
        inbox_limit: int = INBOX_LIMIT,
    ) -> None:
        self.address = address
        self.client_id = client_id
        self.subscriptions = list(subscriptions)
        self.persistent_session = persistent_session
        self.decoder = decoder
        self._decoding = False  # what the receiver was last asked (see the module's doc)
        self.publisher = MqttLink(address, f"{client_id}-send", [], persistent_session=False)
        self._inbox = Inbox(inbox_limit)
        self._context = multiprocessing.get_context("spawn")  # no fork of a threaded process
        # One byte the child writes and the ingest reads: no lock (and no semaphore to leak).
        self._connected = self._context.Value("b", 0, lock=False)
        self._conn: Connection | None = None
        self._process: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._incarnation = 0
        self._stopping = False
        self._restarting: asyncio.Task[None] | None = None

    async def start(self, *, wait_connected: float = 10.0) -> None:
        """Start the publisher and the receiver; raises ConnectionError if the broker is
        unreachable."""
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        await self.publisher.start(wait_connected=wait_connected)
        try:
            await self._start_receiver(wait_connected)
        except ConnectionError:
            self.stop()
            raise

    async def _start_receiver(self, wait_connected: float) -> None:
        assert self._loop is not None
        self._incarnation += 1
        ours, theirs = self._context.Pipe()
        process = self._context.Process(
            target=receiver_main,
            args=(
                theirs,
                self.address,
                self.client_id,
                self.subscriptions,
                self.persistent_session,
                self._connected,
                logging.getLogger().getEffectiveLevel(),
                self.decoder,
            ),
            name="fleet-mqtt-receiver",
            daemon=True,  # never outlives the ingest
        )
        process.start()
        theirs.close()
        self._decoding = False
        self._conn, self._process = ours, process
        try:
            async with asyncio.timeout(wait_connected + START_TIMEOUT_SECONDS):
                ready = await asyncio.to_thread(_receive, ours)
        except (TimeoutError, EOFError, OSError) as exc:
            raise ConnectionError(f"the MQTT receiver did not start: {exc!r}") from exc
        if ready[0] != "ready":
            raise ConnectionError(str(ready[1]))
        self._loop.add_reader(ours.fileno(), self._on_pipe)

    def _on_pipe(self) -> None:
        assert self._conn is not None and self._loop is not None
        try:
            kind, body = _receive(self._conn)
        except (EOFError, OSError):
            self._loop.remove_reader(self._conn.fileno())
            if not self._stopping:
                log.error("the MQTT receiver process ended; starting another")
                self._restarting = self._loop.create_task(self._restart())
            return
        if kind == "messages":
            # A generation names the receiver too: an ack never reaches another receiver's session.
            base = self._incarnation * GENERATIONS_PER_RECEIVER
            self._inbox.extend(
                InboundMessage(topic, payload, qos, mid, received, base + generation, decoded)
                for topic, payload, qos, mid, received, generation, decoded in body
            )
            if self.decoder is not None:
                self._steer_decoding()
            if self._inbox.full:
                # The ingest is behind: the next bursts wait in the pipe, and the receiver,
                # blocked on it, leaves the rest with the broker (see mqtt_link.Inbox).
                self._loop.remove_reader(self._conn.fileno())
                self._inbox.call_when_room(functools.partial(self._resume_pipe, self._conn))

    def _resume_pipe(self, conn: Connection) -> None:
        if conn is self._conn and self._loop is not None and not self._stopping:
            self._loop.add_reader(conn.fileno(), self._on_pipe)

    def _steer_decoding(self) -> None:
        """Ask the receiver to decode while a backlog waits here, and to stop once it is gone."""
        backlog = len(self._inbox.messages)
        wanted = backlog > (DECODE_OFF_BACKLOG if self._decoding else DECODE_ON_BACKLOG)
        if wanted != self._decoding and self._conn is not None:
            with contextlib.suppress(OSError):
                _send(self._conn, ("decode", wanted))
                self._decoding = wanted

    async def _restart(self) -> None:
        """A new receiver on the same session: the broker redelivers what the old one received
        and the ingest had not acknowledged (QoS 1)."""
        delay = RESTART_MIN_SECONDS
        while not self._stopping:
            self._close_receiver()
            try:
                await self._start_receiver(wait_connected=10.0)
                return
            except Exception as exc:  # refused, or no process/pipe to be had (EMFILE): again
                log.error("the MQTT receiver did not start (%s); retrying in %.0f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RESTART_MAX_SECONDS)

    def stop(self) -> None:
        self._stopping = True
        if self._restarting is not None:
            self._restarting.cancel()
        self._close_receiver()
        self.publisher.stop()

    def _close_receiver(self) -> None:
        conn, process = self._conn, self._process
        if conn is not None:
            if self._loop is not None and not self._loop.is_closed():
                with contextlib.suppress(ValueError, OSError):
                    self._loop.remove_reader(conn.fileno())
            with contextlib.suppress(OSError):
                _send(conn, ("stop", None))
        if process is not None:
            deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
            # A burst the receiver is still writing would block it (and so its DISCONNECT and
            # its last acknowledgements) on a full pipe: take and drop what comes. Nothing is
            # lost at QoS 1: unacknowledged, those messages come again on the next start.
            while conn is not None and process.is_alive() and time.monotonic() < deadline:
                try:
                    if conn.poll(0.05):
                        conn.recv_bytes()
                except (EOFError, OSError):
                    break
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
        if conn is not None:
            conn.close()
        self._conn = self._process = None
        self._connected.value = 0

    @property
    def connected(self) -> bool:
        return bool(self._connected.value) and self.publisher.connected

    def ack(self, messages: Iterable[InboundMessage]) -> None:
        """Send the receiver the ids to acknowledge, in order. Those an earlier receiver
        delivered are left: the broker redelivers them and the anti-replay check drops them."""
        ids = []
        for m in messages:
            if not m.qos:
                continue
            incarnation, generation = divmod(m.generation, GENERATIONS_PER_RECEIVER)
            if incarnation == self._incarnation:
                ids.append((m.qos, m.mid, generation))
        if ids and self._conn is not None:
            with contextlib.suppress(OSError):  # the receiver is gone: nothing to acknowledge
                _send(self._conn, ("ack", ids))

    def publish(self, topic: str, payload: bytes, qos: int = 0) -> None:
        self.publisher.publish(topic, payload, qos)
