"""Simulated ESP32 alarm panels (wire-formats.md §1) for demos, load and end-to-end tests.

``SimulatedPanel`` is pure state: every method takes the wall-clock time and returns the
``(topic, framed_bytes)`` a real panel would publish, so it is testable without a broker.
``PanelFleet`` drives many panels over ONE paho-mqtt client: logins on every (re)connect,
spread heartbeats, periodic status, occasional alarms, and answers to commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from fleet.integrations.alarm_panel.codec import (
    AlarmReport,
    CommandResponseReport,
    DecodeError,
    HeartbeatReport,
    LastWillReport,
    Report,
    StatusReport,
    decode_command,
    encode_report,
)
from fleet.integrations.alarm_panel.framing import FrameError, decode_frame, encode_frame
from fleet.integrations.alarm_panel.topics import (
    COMMAND_KIND,
    TopicError,
    device_topic,
    hostname_from_mac,
    parse_topic,
)

log = logging.getLogger(__name__)

Outgoing = tuple[str, bytes]  # (topic, framed payload) ready to publish

DEFAULT_FIRMWARE = "v1.0.5-sim"
# Espressif OUI, as on the panel in the captured command (ESG_ALARM_0483080CEDD8).
_MAC_PREFIX = bytes.fromhex("048308")
# Alarm inputs a panel can raise, and the I/O flag each one drives.
ALARM_INPUTS = {"PANIC1": "panic1", "PANIC2": "panic2", "TAMPER": "box_sw"}
_ALARM_PRIORITY = {"PANIC1": "CRITICAL", "PANIC2": "CRITICAL", "TAMPER": "HIGH"}
_SEQUENCE_WRAP = 0xFFFFFFFF


def _clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


def topic_bases(text: str) -> list[str]:
    """'acme, globex' -> ['acme', 'globex']: the topic bases panels publish under. A base is
    one topic level: no '/', no wildcard, no whitespace."""
    bases = [part.strip() for part in text.split(",")]
    for base in bases:
        if not base or any(c in base for c in "/+#") or any(c.isspace() for c in base):
            raise ValueError(f"{base!r} is not a topic base (one level, e.g. esagtech)")
    return bases


def random_mac(rng: random.Random) -> bytes:
    return _MAC_PREFIX + bytes(rng.getrandbits(8) for _ in range(3))


class SimulatedPanel:
    """One panel's state. No I/O and no clock of its own: callers pass ``now``."""

    def __init__(
        self,
        *,
        base: str,
        key: bytes,
        rng: random.Random,
        mac: bytes | None = None,
        firmware: str = DEFAULT_FIRMWARE,
        country: str = "ES",
    ) -> None:
        self.base = base
        self.key = key
        self.rng = rng
        self.mac = mac if mac is not None else random_mac(rng)
        self.hostname = hostname_from_mac(self.mac)
        self.firmware = firmware
        self.country = country
        self.sequence = 0  # last frame sequence sent; the server's anti-replay counter
        self.device_db_id = 0  # 0 until the server syncs it
        self.started_at: float | None = None  # boot time, set by the first message
        self.connected_at: float | None = None  # last login
        self.uptime_at_connect = 0

        self.network_type = "ethernet" if rng.random() < 0.2 else "wifi"
        self.ip_address = f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        self.boot_count = rng.randint(1, 30)
        self.zone = rng.randint(1, 9)
        self.latitude = round(40.4 + rng.uniform(-0.2, 0.2), 5)
        self.longitude = round(-3.7 + rng.uniform(-0.2, 0.2), 5)
        self.temperature = round(rng.uniform(20.0, 28.0), 2)
        self.humidity = round(rng.uniform(35.0, 60.0), 1)
        self.fan_pwm_duty = self._fan_duty_for(self.temperature)

        self.inputs = {"panic1": False, "panic2": False, "box_sw": False}
        self.siren = False
        self.turret = False
        self.alarm_counts = Counter[str]()
        self.active_alarm: str | None = None
        self.alarm_raised_at = 0.0
        self.state_since: float | None = None

    # ----------------------------------------------------------------- helpers

    @staticmethod
    def _fan_duty_for(temperature: float) -> int:
        # The firmware's fan curve is unknown; ramp from 25 °C to full at 35 °C.
        return int(_clamp((temperature - 25.0) * 10.0, 0.0, 100.0))

    def _start(self, now: float) -> float:
        """Boot on first use; return the boot time."""
        if self.started_at is None:
            self.started_at = now
            self.state_since = now
        return self.started_at

    def _uptime(self, now: float) -> int:
        return max(0, int(now - self._start(now)))

    def _next_sequence(self) -> int:
        self.sequence = self.sequence % _SEQUENCE_WRAP + 1
        return self.sequence

    def _publish(self, kind: str, report: Report, sequence: int) -> Outgoing:
        frame = encode_frame(self.key, sequence, encode_report(report))
        return device_topic(self.base, self.hostname, kind), frame

    def _device_state(self) -> str:
        return "ALARM" if self.active_alarm else "NORMAL"

    def _status_report(self, now: float, sequence: int) -> StatusReport:
        uptime = self._uptime(now)
        state_since = self.state_since if self.state_since is not None else now
        wifi = self.network_type == "wifi"
        return StatusReport(
            sequence=sequence,
            timestamp=int(now),
            device_db_id=self.device_db_id,
            device_state=self._device_state(),
            state_duration=max(0, int(now - state_since)),
            uptime=uptime,
            boot_count=self.boot_count,
            free_heap=150_000 + self.rng.randrange(-5_000, 5_000),
            min_heap=120_000,
            firmware=self.firmware,
            network_type=self.network_type,
            connected=True,
            has_ip=True,
            rssi=self.rng.randint(-80, -40) if wifi else 0,
            ip_address=self.ip_address,
            mac_address=":".join(f"{b:02X}" for b in self.mac),
            mqtt_connected=True,
            ntp_synced=True,
            last_ntp_sync=int(self.started_at or now),
            panic1=self.inputs["panic1"],
            panic2=self.inputs["panic2"],
            box_sw=self.inputs["box_sw"],
            siren=self.siren,
            turret=self.turret,
            panic1_count=self.alarm_counts["PANIC1"],
            panic2_count=self.alarm_counts["PANIC2"],
            tamper_count=self.alarm_counts["TAMPER"],
            temperature=self.temperature,
            humidity=self.humidity,
            country=self.country,
            zone=self.zone,
            latitude=self.latitude,
            longitude=self.longitude,
            partition=1,
            ota_validated=True,
        )

    # ----------------------------------------------------------------- messages

    def login(self, now: float) -> Outgoing:
        """StatusMessage on ``login``, sent once per (re)connect."""
        self.connected_at = now
        self.uptime_at_connect = self._uptime(now)
        sequence = self._next_sequence()
        return self._publish("login", self._status_report(now, sequence), sequence)

    def status(self, now: float) -> Outgoing:
        sequence = self._next_sequence()
        return self._publish("status", self._status_report(now, sequence), sequence)

    def heartbeat(self, now: float) -> Outgoing:
        """Advance the sensor random walk one step and report it."""
        self.temperature = round(_clamp(self.temperature + self.rng.gauss(0, 0.2), 5, 50), 2)
        self.humidity = round(_clamp(self.humidity + self.rng.gauss(0, 0.8), 10, 95), 1)
        self.fan_pwm_duty = self._fan_duty_for(self.temperature)
        report = HeartbeatReport(
            timestamp=int(now),
            device_db_id=self.device_db_id,
            temperature=self.temperature,
            humidity=self.humidity,
            panic1=self.inputs["panic1"],
            panic2=self.inputs["panic2"],
            siren=self.siren,
            turret=self.turret,
            box_sw=self.inputs["box_sw"],
            uptime=self._uptime(now),
            network_type=self.network_type,
            firmware=self.firmware,
            fan_pwm_duty=self.fan_pwm_duty,
        )
        return self._publish("hb", report, self._next_sequence())

    def alarm(self, now: float, alarm_type: str = "PANIC1", active: bool = True) -> Outgoing:
        """Raise (``active``) or clear an alarm input and report the AlarmEvent."""
        if alarm_type not in ALARM_INPUTS:
            raise ValueError(f"simulated alarms are {', '.join(ALARM_INPUTS)}, not {alarm_type!r}")
        self._start(now)
        state_before = self._device_state()
        elapsed = 0
        if active:
            self.alarm_counts[alarm_type] += 1
            self.active_alarm = alarm_type
            self.alarm_raised_at = now
        elif self.active_alarm == alarm_type:
            elapsed = max(0, int(now - self.alarm_raised_at))
            self.active_alarm = None
        self.inputs[ALARM_INPUTS[alarm_type]] = active
        if self._device_state() != state_before:
            self.state_since = now
        sequence = self._next_sequence()
        report = AlarmReport(
            sequence=sequence,
            timestamp=int(now),
            device_db_id=self.device_db_id,
            alarm_type=alarm_type,
            event_state="ACTIVE" if active else "INACTIVE",
            priority=_ALARM_PRIORITY[alarm_type],
            physical_state=active,
            elapsed_seconds=elapsed,
        )
        return self._publish("alarm", report, sequence)

    def last_will(self, now: float) -> Outgoing:
        """What the broker publishes when this panel drops (registered at connect)."""
        connected_at = self.connected_at if self.connected_at is not None else now
        sequence = self._next_sequence()
        report = LastWillReport(
            sequence=sequence,
            timestamp=int(connected_at),
            device_db_id=self.device_db_id,
            uptime_at_connect=self.uptime_at_connect,
            firmware=self.firmware,
            ip_address=self.ip_address,
            rssi=-60 if self.network_type == "wifi" else 0,
            hostname=self.hostname,
        )
        return self._publish("lw", report, sequence)

    def handle_command(self, framed: bytes, now: float) -> Outgoing | None:
        """Verify and apply a ``cmd`` frame; return the CommandResponse to publish.

        Like the firmware, a frame that fails verification or decoding is dropped
        without an answer (None). Every valid command is acknowledged; only the
        device-id sync changes state.
        """
        try:
            frame = decode_frame(self.key, framed)
            command = decode_command(frame.payload)
        except (FrameError, DecodeError) as exc:
            log.debug("%s dropped a command: %s", self.hostname, exc)
            return None
        message = "ok (simulated)"
        device_config = command.get("config", {}).get("device", {})
        if "device_id" in device_config:
            self.device_db_id = int(device_config["device_id"])
            message = f"device_id set to {self.device_db_id}"
        report = CommandResponseReport(
            request_id=command.get("request_id", ""),
            timestamp=int(now),
            success=True,
            message=message,
        )
        return self._publish("response", report, self._next_sequence())


# --------------------------------------------------------------------------- fleet runner

_Action = Literal["hb", "status", "clear_alarm"]


@dataclass
class FleetStats:
    published: Counter[str] = field(default_factory=Counter)  # by topic kind
    commands_answered: int = 0
    commands_dropped: int = 0
    connects: int = 0


@dataclass(frozen=True, slots=True)
class _Inbound:
    """Something the paho thread hands to the asyncio loop."""

    event: Literal["connected", "disconnected", "message", "stop"]
    topic: str = ""
    payload: bytes = b""


class PanelFleet:
    """Many simulated panels sharing one MQTT connection.

    paho runs its network loop in its own thread (``loop_start``); its callbacks only
    forward events into an asyncio queue, so all panel state is touched from the
    event loop alone. ``run`` returns after ``duration`` seconds or when
    ``stop_event`` is set, then publishes each panel's last will (as the broker would
    for dropped devices, unless ``send_last_will`` is False) and disconnects.
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        base: str,
        key: bytes,
        count: int,
        seed: int | None = None,
        hb_interval: float = 60.0,
        status_interval: float = 300.0,
        alarm_probability: float = 0.01,
        qos: int = 1,
        username: str | None = None,
        password: str | None = None,
        send_last_will: bool = True,
        client_factory: Callable[[], Any] | None = None,
    ) -> None:
        if count < 1:
            raise ValueError("count must be at least 1")
        if hb_interval <= 0 or status_interval <= 0:
            raise ValueError("hb_interval and status_interval must be positive")
        self.host = host
        self.port = port
        self.base = base
        # Several bases, comma-separated: the panels are spread over them (an account each).
        self.bases = topic_bases(base)
        self.qos = qos
        self.username = username
        self.password = password
        self.hb_interval = hb_interval
        self.status_interval = status_interval
        self.alarm_probability = alarm_probability
        self.send_last_will = send_last_will
        self._client_factory = client_factory or self._paho_client
        self.rng = random.Random(seed)
        self.panels = self._make_panels(self.bases, key, count)
        self._by_hostname = {panel.hostname: panel for panel in self.panels}
        self.stats = FleetStats()
        self._running = False

    def _make_panels(self, bases: list[str], key: bytes, count: int) -> list[SimulatedPanel]:
        panels: list[SimulatedPanel] = []
        macs: set[bytes] = set()
        while len(panels) < count:
            # One RNG per panel so a panel's behaviour does not depend on the others'.
            panel_rng = random.Random(self.rng.getrandbits(64))
            mac = random_mac(panel_rng)
            if mac in macs:
                continue
            macs.add(mac)
            base = bases[len(panels) % len(bases)]
            panels.append(SimulatedPanel(base=base, key=key, rng=panel_rng, mac=mac))
        return panels

    @staticmethod
    def _paho_client() -> mqtt.Client:
        return mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"fleet-sim-{uuid.uuid4().hex[:12]}",
        )

    # ----------------------------------------------------------------- paho side (its thread)

    def _wire_callbacks(
        self, client: Any, loop: asyncio.AbstractEventLoop, inbox: asyncio.Queue[_Inbound]
    ) -> None:
        def forward(item: _Inbound) -> None:
            # RuntimeError: the event loop already closed during shutdown.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(inbox.put_nowait, item)

        def on_connect(client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
            if reason.is_failure:
                log.warning(
                    "simulator could not connect to %s:%s: %s", self.host, self.port, reason
                )
                return
            for base in self.bases:
                client.subscribe(f"{base}/pb/d/+/{COMMAND_KIND}", qos=1)
            forward(_Inbound("connected"))

        def on_disconnect(client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
            forward(_Inbound("disconnected"))

        def on_message(client: Any, userdata: Any, message: Any) -> None:
            forward(_Inbound("message", message.topic, bytes(message.payload)))

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        client.on_message = on_message

    # ----------------------------------------------------------------- event-loop side

    async def run(
        self, duration: float | None = None, stop_event: asyncio.Event | None = None
    ) -> FleetStats:
        """Simulate until ``duration`` elapses or ``stop_event`` is set; return the stats."""
        if self._running:
            raise RuntimeError("this PanelFleet is already running")
        self._running = True
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue[_Inbound] = asyncio.Queue()
        client = self._client_factory()
        self._wire_callbacks(client, loop, inbox)
        if self.username is not None:
            client.username_pw_set(self.username, self.password)
        # connect_async + loop_start: paho connects, and reconnects, in its own thread.
        client.connect_async(self.host, self.port, keepalive=60)
        client.loop_start()
        relay = asyncio.create_task(self._relay_stop(stop_event, inbox)) if stop_event else None
        online = False
        try:
            online = await self._serve(client, inbox, duration)
        finally:
            if relay is not None:
                relay.cancel()
            await self._shutdown(client, online)
            self._running = False
        return self.stats

    @staticmethod
    async def _relay_stop(stop_event: asyncio.Event, inbox: asyncio.Queue[_Inbound]) -> None:
        await stop_event.wait()
        inbox.put_nowait(_Inbound("stop"))

    async def _serve(
        self, client: Any, inbox: asyncio.Queue[_Inbound], duration: float | None
    ) -> bool:
        """The main loop; returns whether the client was online when it ended."""
        deadline = None if duration is None else time.monotonic() + duration
        schedule: list[tuple[float, int, int, _Action]] = []
        online = False
        tiebreak = 0
        while True:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return online
            while online and schedule and schedule[0][0] <= now:
                _, _, index, action = heapq.heappop(schedule)
                for due, action_next in self._perform(client, self.panels[index], action):
                    tiebreak += 1
                    heapq.heappush(schedule, (now + due, tiebreak, index, action_next))
            wake = schedule[0][0] if online and schedule else now + 1.0
            if deadline is not None:
                wake = min(wake, deadline)
            try:
                async with asyncio.timeout(max(0.0, wake - now)):
                    item = await inbox.get()
            except TimeoutError:
                continue
            if item.event == "stop":
                return online
            if item.event == "disconnected":
                online = False
            elif item.event == "connected":
                online = True
                self.stats.connects += 1
                schedule = self._on_connected(client)
                tiebreak = len(schedule)
            elif item.event == "message":
                self._answer(client, item.topic, item.payload)

    def _on_connected(self, client: Any) -> list[tuple[float, int, int, _Action]]:
        """Log every panel in and return a fresh schedule with heartbeats spread out."""
        now = time.monotonic()
        schedule: list[tuple[float, int, int, _Action]] = []
        count = len(self.panels)
        for index, panel in enumerate(self.panels):
            self._send(client, panel.login(time.time()))
            spread = (index + 1) / count
            schedule.append((now + spread * self.hb_interval, len(schedule), index, "hb"))
            schedule.append((now + spread * self.status_interval, len(schedule), index, "status"))
            if panel.active_alarm is not None:  # its pending clear was in the old schedule
                schedule.append((now + 1.0, len(schedule), index, "clear_alarm"))
        heapq.heapify(schedule)
        return schedule

    def _perform(
        self, client: Any, panel: SimulatedPanel, action: _Action
    ) -> list[tuple[float, _Action]]:
        """Publish one scheduled message; return what to schedule next as (delay, action)."""
        wall = time.time()
        if action == "status":
            self._send(client, panel.status(wall))
            return [(self.status_interval, "status")]
        if action == "clear_alarm":
            if panel.active_alarm is not None:
                self._send(client, panel.alarm(wall, panel.active_alarm, active=False))
            return []
        self._send(client, panel.heartbeat(wall))
        follow_up: list[tuple[float, _Action]] = [(self.hb_interval, "hb")]
        if panel.active_alarm is None and panel.rng.random() < self.alarm_probability:
            alarm_type = panel.rng.choice(sorted(ALARM_INPUTS))
            self._send(client, panel.alarm(wall, alarm_type, active=True))
            follow_up.append((panel.rng.uniform(2.0, 8.0), "clear_alarm"))
        return follow_up

    def _answer(self, client: Any, topic: str, payload: bytes) -> None:
        try:
            parsed = parse_topic(topic)
        except TopicError:
            return
        panel = self._by_hostname.get(parsed.hostname)
        if parsed.kind != COMMAND_KIND or panel is None or parsed.base != panel.base:
            return
        response = panel.handle_command(payload, time.time())
        if response is None:
            self.stats.commands_dropped += 1
            return
        self.stats.commands_answered += 1
        self._send(client, response)

    def _send(self, client: Any, outgoing: Outgoing) -> Any:
        topic, frame = outgoing
        self.stats.published[topic.rsplit("/", 1)[-1]] += 1
        return client.publish(topic, frame, qos=self.qos)

    async def _shutdown(self, client: Any, online: bool, flush_timeout: float = 2.0) -> None:
        pending = []
        if online and self.send_last_will:
            wall = time.time()
            pending = [self._send(client, panel.last_will(wall)) for panel in self.panels]
        # Give queued QoS 1 publishes a moment to reach the broker before hanging up.
        await asyncio.to_thread(_wait_published, pending, flush_timeout)
        client.disconnect()
        # loop_stop joins paho's thread: keep that off the event loop.
        await asyncio.to_thread(client.loop_stop)


def _wait_published(infos: list[Any], timeout: float) -> None:
    """Block until paho reports ``infos`` published, or ``timeout`` seconds pass."""
    give_up = time.monotonic() + timeout
    for info in infos:
        remaining = give_up - time.monotonic()
        if remaining <= 0:
            return
        # ValueError/RuntimeError: never queued (queue full, not connected); nothing to wait for.
        with contextlib.suppress(ValueError, RuntimeError):
            info.wait_for_publish(timeout=remaining)
