"""Fleet's link to the MQTT broker: paho-mqtt's network thread feeding an asyncio consumer.

paho receives several times faster than asyncio MQTT clients, so its thread only appends raw
messages to a deque and wakes the event loop once per burst. QoS 1 messages are acknowledged by
the consumer after the batch that holds them has committed (paho's manual_ack), so a crash or a
database outage never loses a message the broker delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

log = logging.getLogger(__name__)

# paho retries the connection by itself: 1 s first, doubling to 30 s, so a broker restart costs
# about a second while a long outage does not hammer the broker when it comes back.
RECONNECT_MIN_SECONDS = 1
RECONNECT_MAX_SECONDS = 30
KEEPALIVE_SECONDS = 30
# paho drops publishes it queued but has not written yet when it disconnects: stop() first waits
# this long at most for the last one (commands sent just before a restart must not vanish).
STOP_FLUSH_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class InboundMessage:
    topic: str
    payload: bytes
    qos: int
    mid: int
    received: float  # time.time() when paho handed it over
    generation: int  # which connection delivered it: an ack must go back on that same session


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False


def parse_mqtt_url(url: str) -> BrokerAddress:
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts", "tcp") or not parts.hostname:
        raise ValueError(
            f"FLEET_MQTT_URL must be 'embedded' or mqtt://[user:pass@]host:port, got {url!r}"
        )
    tls = parts.scheme == "mqtts"
    return BrokerAddress(
        host=parts.hostname,
        port=parts.port or (8883 if tls else 1883),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        tls=tls,
    )


class MqttLink:
    def __init__(
        self,
        address: BrokerAddress,
        client_id: str,
        subscriptions: Iterable[tuple[str, int]],
        *,
        persistent_session: bool = True,
    ) -> None:
        self.address = address
        self.subscriptions = list(subscriptions)
        self._buffer: deque[InboundMessage] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup = asyncio.Event()
        self._signalled = False
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self.generation = 0
        self._last_publish: mqtt.MQTTMessageInfo | None = None
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=not persistent_session,
            manual_ack=True,
        )
        # No cap on paho's own queue of outgoing QoS 1 publishes; the broker applies its own.
        self._client.max_inflight_messages_set(1000)
        self._client.reconnect_delay_set(RECONNECT_MIN_SECONDS, RECONNECT_MAX_SECONDS)
        if address.username:
            self._client.username_pw_set(address.username, address.password)
        if address.tls:
            self._client.tls_set()
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe

    # --- paho's thread -------------------------------------------------------------------
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
        log.warning("disconnected from MQTT broker (%s); paho reconnects by itself", reason)

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        self._buffer.append(
            InboundMessage(
                msg.topic, bytes(msg.payload), msg.qos, msg.mid, time.time(), self.generation
            )
        )
        if not self._signalled and self._loop is not None:
            self._signalled = True
            self._loop.call_soon_threadsafe(self._wakeup.set)

    # --- the event loop's side -------------------------------------------------------------
    def start(self, *, wait_connected: float = 10.0) -> None:
        """Connect and start paho's thread. Raises if the broker is unreachable at start-up."""
        self._loop = asyncio.get_running_loop()
        self._client.connect_async(self.address.host, self.address.port, KEEPALIVE_SECONDS)
        self._client.loop_start()
        # Waiting for the SUBACK too: a message published right after start() must not be missed.
        if wait_connected and not (
            self._connected.wait(wait_connected) and self._subscribed.wait(wait_connected)
        ):
            self.stop()
            raise ConnectionError(
                f"cannot reach the MQTT broker at {self.address.host}:{self.address.port}"
            )

    def stop(self) -> None:
        last = self._last_publish
        if last is not None and self.connected:
            # Written in order: once the last one is through, every earlier one is too.
            with contextlib.suppress(RuntimeError, ValueError):
                last.wait_for_publish(STOP_FLUSH_SECONDS)
        self._client.disconnect()
        self._client.loop_stop()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_for_messages(self, max_wait: float | None) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), max_wait)

    def drain(self, limit: int) -> list[InboundMessage]:
        # Clear the flag before reading, so a message appended meanwhile wakes us again.
        self._signalled = False
        self._wakeup.clear()
        out: list[InboundMessage] = []
        buffer = self._buffer
        while buffer and len(out) < limit:
            out.append(buffer.popleft())
        if buffer:
            self._wakeup.set()
        return out

    def pending(self) -> int:
        return len(self._buffer)

    def ack(self, messages: Iterable[InboundMessage]) -> None:
        """Acknowledge committed QoS 1 messages, in the order they arrived (MQTT 4.6: a broker
        may reorder what it sends next when acknowledgements come out of order). A message from
        an earlier connection is not acknowledged: the broker redelivers it and the anti-replay
        check drops the copy."""
        generation = self.generation
        for message in messages:
            if message.qos and message.generation == generation:
                self._client.ack(message.mid, message.qos)

    def publish(self, topic: str, payload: bytes, qos: int = 0) -> None:
        info = self._client.publish(topic, payload, qos)
        if qos:
            self._last_publish = info
        if info.rc == mqtt.MQTT_ERR_NO_CONN and qos == 0:
            raise ConnectionError("not connected to the MQTT broker")
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            raise ConnectionError(mqtt.error_string(info.rc))
