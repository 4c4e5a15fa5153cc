import asyncio
import random
import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest

from fleet.integrations.alarm_panel.codec import (
    AlarmReport,
    CommandResponseReport,
    HeartbeatReport,
    LastWillReport,
    StatusReport,
    build_command,
    build_device_id_sync,
    decode_message,
)
from fleet.integrations.alarm_panel.framing import decode_frame, encode_frame
from fleet.integrations.alarm_panel.topics import command_topic, parse_topic
from fleet.sim.alarm_panel import PanelFleet, SimulatedPanel

KEY = bytes(range(32))
BASE = "simbase"
NOW = 1_756_615_811.0


def _panel(seed: int = 1) -> SimulatedPanel:
    return SimulatedPanel(base=BASE, key=KEY, rng=random.Random(seed))


def _open(outgoing: tuple[str, bytes], key: bytes = KEY) -> tuple[str, int, Any]:
    """(canonical kind, frame sequence, decoded report) of a published frame."""
    topic, framed = outgoing
    parsed = parse_topic(topic)
    frame = decode_frame(key, framed)
    return parsed.kind, frame.sequence, decode_message(parsed.kind, frame.payload)


def _sync_command(device_id: int, request_id: str = "req-1", sequence: int = 1) -> bytes:
    envelope = build_device_id_sync(
        device_id, request_id=request_id, sequence=sequence, timestamp=int(NOW)
    )
    return encode_frame(KEY, sequence, envelope)


# ----------------------------------------------------------------------------- SimulatedPanel


def test_panel_identity() -> None:
    panel = _panel()
    assert parse_topic(f"{BASE}/pb/d/{panel.hostname}/hb").hostname == panel.hostname
    assert panel.hostname == "ESG_ALARM_" + panel.mac.hex().upper()
    assert panel.device_db_id == 0


def test_login_and_status_are_verifiable_status_messages() -> None:
    panel = _panel()
    kind, sequence, report = _open(panel.login(NOW))
    assert (kind, sequence) == ("login", 1)
    assert isinstance(report, StatusReport)
    assert report.sequence == 1
    assert report.timestamp == int(NOW)
    assert report.device_db_id == 0
    assert report.device_state == "NORMAL"
    assert report.mac_address == ":".join(f"{b:02X}" for b in panel.mac)
    assert report.uptime == 0

    kind, sequence, report = _open(panel.status(NOW + 30))
    assert (kind, sequence) == ("status", 2)
    assert report.uptime == 30


def test_heartbeat_random_walk_stays_plausible() -> None:
    panel = _panel()
    for step in range(500):
        kind, _, report = _open(panel.heartbeat(NOW + step))
        assert kind == "hb"
        assert isinstance(report, HeartbeatReport)
        assert 5 <= report.temperature <= 50
        assert 10 <= report.humidity <= 95
        assert 0 <= report.fan_pwm_duty <= 100
        assert report.uptime == step
    assert panel.sequence == 500


def test_same_seed_same_messages() -> None:
    first, second = _panel(seed=7), _panel(seed=7)
    for step in range(5):
        assert first.heartbeat(NOW + step) == second.heartbeat(NOW + step)
    assert _panel(seed=8).hostname != first.hostname


def test_alarm_raise_and_clear() -> None:
    panel = _panel()
    panel.login(NOW)
    kind, _, raised = _open(panel.alarm(NOW + 1, "PANIC2", active=True))
    assert kind == "alarm"
    assert isinstance(raised, AlarmReport)
    assert (raised.alarm_type, raised.event_state, raised.priority) == (
        "PANIC2",
        "ACTIVE",
        "CRITICAL",
    )
    assert raised.physical_state is True
    _, _, status = _open(panel.status(NOW + 2))
    assert (status.device_state, status.panic2, status.panic2_count) == ("ALARM", True, 1)
    _, _, heartbeat = _open(panel.heartbeat(NOW + 3))
    assert heartbeat.panic2 is True

    _, _, cleared = _open(panel.alarm(NOW + 6, "PANIC2", active=False))
    assert (cleared.event_state, cleared.physical_state, cleared.elapsed_seconds) == (
        "INACTIVE",
        False,
        5,
    )
    _, _, status = _open(panel.status(NOW + 7))
    assert (status.device_state, status.panic2, status.state_duration) == ("NORMAL", False, 1)


def test_tamper_drives_box_sw() -> None:
    panel = _panel()
    panel.alarm(NOW, "TAMPER")
    _, _, heartbeat = _open(panel.heartbeat(NOW + 1))
    assert heartbeat.box_sw is True


def test_alarm_rejects_types_it_cannot_simulate() -> None:
    with pytest.raises(ValueError, match="simulated alarms"):
        _panel().alarm(NOW, "FIRE")


def test_last_will_reports_the_connection() -> None:
    panel = _panel()
    panel.login(NOW)
    panel.heartbeat(NOW + 10)
    panel.login(NOW + 20)  # reconnect
    kind, _, will = _open(panel.last_will(NOW + 99))
    assert kind == "lw"
    assert isinstance(will, LastWillReport)
    assert (will.timestamp, will.uptime_at_connect) == (int(NOW + 20), 20)
    assert will.hostname == panel.hostname


def test_handles_a_device_id_sync_and_echoes_the_request_id() -> None:
    panel = _panel()
    answer = panel.handle_command(_sync_command(42, request_id="abc-123"), NOW)
    assert answer is not None
    kind, _, response = _open(answer)
    assert kind == "response"
    assert isinstance(response, CommandResponseReport)
    assert response.request_id == "abc-123"
    assert response.success is True
    assert response.timestamp == int(NOW)
    assert panel.device_db_id == 42
    _, _, heartbeat = _open(panel.heartbeat(NOW + 1))
    assert heartbeat.device_db_id == 42


def test_acknowledges_other_commands_without_changing_its_id() -> None:
    panel = _panel()
    envelope = build_command(
        "OUTPUT",
        {"output": "SIREN", "pattern": "CONSTANT", "state": True},
        request_id="out-1",
        sequence=3,
        timestamp=int(NOW),
        auth_level=1,
    )
    answer = panel.handle_command(encode_frame(KEY, 3, envelope), NOW)
    assert answer is not None
    assert _open(answer)[2].request_id == "out-1"
    assert panel.device_db_id == 0


@pytest.mark.parametrize(
    "framed",
    [
        encode_frame(bytes(32), 1, build_device_id_sync(5, request_id="", sequence=1, timestamp=1)),
        b"garbage",
        encode_frame(KEY, 1, b"\x0a\x05ab"),  # authentic frame, broken protobuf
    ],
)
def test_drops_commands_it_cannot_verify_or_decode(framed: bytes) -> None:
    panel = _panel()
    assert panel.handle_command(framed, NOW) is None
    assert panel.device_db_id == 0


# ----------------------------------------------------------------------------- PanelFleet


class _Info:
    def wait_for_publish(self, timeout: float | None = None) -> None:
        pass


class FakeMqttClient:
    """Stands in for paho: 'connects' on its own thread and then delivers ``inbound``."""

    def __init__(self, inbound: list[tuple[str, bytes]] | None = None) -> None:
        self.inbound = inbound or []
        self.published: list[tuple[str, bytes, int]] = []
        self.subscriptions: list[tuple[str, int]] = []
        self.credentials: tuple[str, str | None] | None = None
        self.address: tuple[str, int] | None = None
        self.disconnected = False
        self.loop_stopped = False
        self._thread: threading.Thread | None = None
        self.on_connect: Any = None
        self.on_disconnect: Any = None
        self.on_message: Any = None

    def username_pw_set(self, username: str, password: str | None) -> None:
        self.credentials = (username, password)

    def connect_async(self, host: str, port: int, keepalive: int = 60) -> None:
        self.address = (host, port)

    def loop_start(self) -> None:
        self._thread = threading.Thread(target=self._network_thread)
        self._thread.start()

    def _network_thread(self) -> None:
        self.on_connect(self, None, None, SimpleNamespace(is_failure=False), None)
        time.sleep(0.05)  # the logins go out first, as on a real broker round trip
        for topic, payload in self.inbound:
            self.on_message(self, None, SimpleNamespace(topic=topic, payload=payload))

    def subscribe(self, topic: str, qos: int = 0) -> None:
        self.subscriptions.append((topic, qos))

    def publish(self, topic: str, payload: bytes, qos: int = 0) -> _Info:
        self.published.append((topic, payload, qos))
        return _Info()

    def disconnect(self) -> None:
        self.disconnected = True

    def loop_stop(self) -> None:
        assert self._thread is not None
        self._thread.join()
        self.loop_stopped = True

    def kinds(self) -> list[str]:
        return [parse_topic(topic).kind for topic, _, _ in self.published]


def _fleet(client: FakeMqttClient, **overrides: Any) -> PanelFleet:
    options: dict[str, Any] = {
        "host": "broker.example",
        "port": 1883,
        "base": BASE,
        "key": KEY,
        "count": 3,
        "seed": 11,
        "hb_interval": 0.1,
        "status_interval": 0.2,
        "alarm_probability": 0.0,
        "client_factory": lambda: client,
    }
    options.update(overrides)
    return PanelFleet(**options)


async def test_fleet_logs_in_beats_answers_and_stops_cleanly() -> None:
    probe = _fleet(FakeMqttClient())  # same seed: same panels
    target = probe.panels[1].hostname
    command = (command_topic(BASE, target), _sync_command(77, request_id="sync-77"))
    client = FakeMqttClient(inbound=[command])
    fleet = _fleet(client, username="sim", password="secret")

    stats = await fleet.run(duration=0.6)

    assert client.address == ("broker.example", 1883)
    assert client.credentials == ("sim", "secret")
    assert client.subscriptions == [(f"{BASE}/pb/d/+/cmd", 1)]
    kinds = client.kinds()
    assert kinds[:3] == ["login"] * 3
    assert kinds.count("hb") >= 3
    assert kinds.count("status") >= 3
    assert kinds[-3:] == ["lw"] * 3
    assert {qos for _, _, qos in client.published} == {1}
    assert client.disconnected and client.loop_stopped

    responses = [_open((t, p)) for t, p, _ in client.published if t.endswith("/response")]
    assert [r[2].request_id for r in responses] == ["sync-77"]
    assert fleet.panels[1].device_db_id == 77
    assert stats.commands_answered == 1
    assert stats.published["login"] == 3


async def test_every_published_frame_verifies_and_sequences_increase() -> None:
    client = FakeMqttClient()
    await _fleet(client, alarm_probability=1.0).run(duration=0.4)
    last_sequence: dict[str, int] = {}
    for topic, framed, _ in client.published:
        kind, sequence, _ = _open((topic, framed))
        hostname = parse_topic(topic).hostname
        assert sequence > last_sequence.get(hostname, 0), kind
        last_sequence[hostname] = sequence
    assert client.kinds().count("alarm") >= 3


async def test_fleet_stops_on_the_event() -> None:
    client = FakeMqttClient()
    fleet = _fleet(client, send_last_will=False)
    stop = asyncio.Event()
    task = asyncio.create_task(fleet.run(stop_event=stop))
    await asyncio.sleep(0.25)
    stop.set()
    await asyncio.wait_for(task, timeout=5)
    assert client.loop_stopped
    assert "lw" not in client.kinds()


async def test_fleet_ignores_commands_for_other_bases_and_unknown_panels() -> None:
    probe = _fleet(FakeMqttClient())
    inbound = [
        (command_topic("otherbase", probe.panels[0].hostname), _sync_command(1)),
        (command_topic(BASE, "ESG_ALARM_000000000000"), _sync_command(2)),
        ("not/a/panel/topic", b""),
    ]
    client = FakeMqttClient(inbound=inbound)
    fleet = _fleet(client)
    stats = await fleet.run(duration=0.3)
    assert "response" not in client.kinds()
    assert stats.commands_answered == 0
    assert all(panel.device_db_id == 0 for panel in fleet.panels)


def test_fleet_panels_are_distinct() -> None:
    fleet = _fleet(FakeMqttClient(), count=200)
    assert len({panel.hostname for panel in fleet.panels}) == 200


def test_fleet_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="count"):
        _fleet(FakeMqttClient(), count=0)
    with pytest.raises(ValueError, match="interval"):
        _fleet(FakeMqttClient(), hb_interval=0)


# ----------------------------------------------------------------------------- real broker


@pytest.mark.broker
async def test_fleet_against_a_real_broker(mqtt_server: tuple[str, int], topic_base: str) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    host, port = mqtt_server
    fleet = PanelFleet(
        host=host,
        port=port,
        base=topic_base,
        key=KEY,
        count=2,
        seed=3,
        hb_interval=0.2,
        status_interval=0.5,
        alarm_probability=0.0,
    )
    target = fleet.panels[0].hostname
    received: list[tuple[str, bytes]] = []
    subscribed = threading.Event()

    server = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    server.on_connect = lambda c, *_: c.subscribe(f"{topic_base}/pb/d/+/+", qos=1)
    server.on_subscribe = lambda *_: subscribed.set()
    server.on_message = lambda _c, _u, m: received.append((m.topic, bytes(m.payload)))
    server.connect(host, port)
    server.loop_start()
    try:
        assert await asyncio.to_thread(subscribed.wait, 5)
        run = asyncio.create_task(fleet.run(duration=2.0))
        await asyncio.sleep(0.8)
        server.publish(command_topic(topic_base, target), _sync_command(5, "live"), qos=1)
        await run
        await asyncio.sleep(0.3)
    finally:
        server.disconnect()
        server.loop_stop()

    by_kind: dict[str, list[Any]] = {}
    for topic, framed in received:
        if parse_topic(topic).kind != "cmd":
            kind, _, report = _open((topic, framed))
            by_kind.setdefault(kind, []).append(report)
    assert len(by_kind["login"]) == 2
    assert len(by_kind["hb"]) >= 2
    assert [r.request_id for r in by_kind["response"]] == ["live"]
    assert len(by_kind["lw"]) == 2
    assert fleet.panels[0].device_db_id == 5


async def test_a_fleet_over_several_bases_spreads_its_panels_and_answers_on_each() -> None:
    probe = _fleet(FakeMqttClient(), base="acme, globex", count=4)
    assert [panel.base for panel in probe.panels] == ["acme", "globex", "acme", "globex"]
    on_globex = probe.panels[1].hostname
    inbound = [
        (command_topic("globex", on_globex), _sync_command(41, request_id="sync-41")),
        # The same panel's hostname under the other base is not that panel: ignored.
        (command_topic("acme", on_globex), _sync_command(42, request_id="sync-42")),
    ]
    client = FakeMqttClient(inbound=inbound)
    fleet = _fleet(client, base="acme, globex", count=4)

    stats = await fleet.run(duration=0.4)

    assert client.subscriptions == [("acme/pb/d/+/cmd", 1), ("globex/pb/d/+/cmd", 1)]
    bases = {parse_topic(topic).base for topic, _, _ in client.published}
    assert bases == {"acme", "globex"}
    responses = [_open((t, p)) for t, p, _ in client.published if t.endswith("/response")]
    assert [r[2].request_id for r in responses] == ["sync-41"]
    assert stats.commands_answered == 1


def test_topic_bases_are_single_levels() -> None:
    from fleet.sim.alarm_panel import topic_bases
    from fleet.sim.flood import panel_messages

    assert topic_bases("esagtech") == ["esagtech"]
    assert topic_bases(" a ,b") == ["a", "b"]
    for bad in ("", "a,", "a/b", "a+", "#", "a b"):
        with pytest.raises(ValueError, match="not a topic base"):
            topic_bases(bad)
    logins = panel_messages("a,b", KEY, 4)
    assert [parse_topic(next(logins)[0]).base for _ in range(4)] == ["a", "b", "a", "b"]


def test_fleet_simulate_refuses_a_base_that_is_no_topic_level() -> None:
    from typer.testing import CliRunner

    from fleet.cli import app

    result = CliRunner().invoke(app, ["simulate", "--base", "acme/pb", "--duration", "0"])
    assert result.exit_code == 2
    assert "not a topic base" in result.output
