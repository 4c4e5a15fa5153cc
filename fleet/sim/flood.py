"""Traffic at a target rate (or as fast as paho sends) from many simulated alarm panels, for
load tests: `fleet simulate --rate 5000`. Every panel logs in first, then the panels take turns
sending heartbeats with their random walks, and now and then an alarm."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from fleet.sim.alarm_panel import SimulatedPanel, topic_bases

# Pacing checks the clock every this many messages: often enough for an even rate, rarely
# enough that the clock costs nothing.
PACE_EVERY = 50
ALARM_EVERY = 997  # about one message in a thousand is an alarm


@dataclass
class FloodProgress:
    sent: int = 0
    errors: int = 0
    started: float = 0.0

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.sent / elapsed if elapsed > 0 else 0.0


def panel_messages(
    base: str, key: bytes, panels: int, seed: int = 0
) -> Iterator[tuple[str, bytes]]:
    """Logins, then heartbeats round-robin forever (with an occasional alarm). Several bases,
    comma-separated: the panels are spread over them."""
    rng = random.Random(seed)
    bases = topic_bases(base)
    fleet = [
        SimulatedPanel(
            base=bases[index % len(bases)], key=key, rng=random.Random(rng.getrandbits(64))
        )
        for index in range(panels)
    ]
    now = time.time()
    for panel in fleet:
        yield panel.login(now)
    count = 0
    while True:
        now = time.time()
        for panel in fleet:
            count += 1
            if count % ALARM_EVERY == 0:
                yield panel.alarm(now, "PANIC1", active=rng.random() < 0.5)
            else:
                yield panel.heartbeat(now)


def flood(
    host: str,
    port: int,
    messages: Iterator[tuple[str, bytes]],
    *,
    total: int | None,
    rate: float,
    qos: int = 0,
    duration: float | None = None,
    on_progress: Callable[[FloodProgress], None] | None = None,
    progress: FloodProgress | None = None,
    halt: threading.Event | None = None,
    username: str | None = None,
    password: str | None = None,
) -> FloodProgress:
    """Publish until `total` messages, `duration` seconds or `halt`; rate 0 = as fast as
    possible. `progress` (updated as it goes) may be given, to be read from another thread."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"fleet-flood-{uuid.uuid4().hex[:8]}"
    )
    client.max_inflight_messages_set(0)
    if username:
        client.username_pw_set(username, password)
    client.connect(host, port, keepalive=60)
    client.loop_start()
    if progress is None:
        progress = FloodProgress()
    progress.started = time.monotonic()
    last_report = progress.started
    try:
        for index, (topic, payload) in enumerate(messages):
            if total is not None and index >= total:
                break
            now = time.monotonic()
            if duration is not None and now - progress.started >= duration:
                break
            if halt is not None and index % PACE_EVERY == 0 and halt.is_set():
                break
            if rate > 0 and index % PACE_EVERY == 0:
                ahead = progress.started + index / rate - now
                if ahead > 0:
                    time.sleep(ahead)
            info = client.publish(topic, payload, qos)
            if info.rc == mqtt.MQTT_ERR_SUCCESS:
                progress.sent += 1
            else:
                progress.errors += 1
            if on_progress is not None and now - last_report >= 1.0:
                last_report = now
                on_progress(progress)
    finally:
        client.disconnect()
        client.loop_stop()
    if on_progress is not None:
        on_progress(progress)
    return progress
