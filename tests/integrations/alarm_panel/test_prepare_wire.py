"""The receiver process decodes panel frames and sends the ingest plain tuples: whatever a message
is (any report, any rejection, a command echo), the ingest rebuilds exactly what it would have
decoded itself, and the tuple survives the pipe's pickling."""

from __future__ import annotations

import pickle

import pytest

from fleet.ingest.mqtt_link import InboundMessage
from fleet.ingest.partition import Partition
from fleet.integrations.alarm_panel.codec import (
    encode_alarm,
    encode_heartbeat,
    encode_last_will,
    encode_response,
    encode_status,
)
from fleet.integrations.alarm_panel.framing import encode_frame
from fleet.integrations.alarm_panel.prepare import WireDecoder, prepare
from fleet.integrations.alarm_panel.topics import hostname_from_mac

KEY = bytes(range(32))
OTHER_KEY = bytes(32)
MAX = 4096
DEVICE = f"acme/pb/d/{hostname_from_mac(bytes.fromhex('24dcc3a1b2c3'))}"

# case -> (topic, payload); EXPECTED: the message kind, or the rejection's reason.
CASES = {
    "status": (f"{DEVICE}/status", encode_frame(KEY, 7, encode_status(uptime=5, firmware="1.2"))),
    "login": (f"{DEVICE}/login", encode_frame(KEY, 1, encode_status(boot_count=3))),
    "heartbeat": (
        f"{DEVICE}/hb",
        encode_frame(KEY, 8, encode_heartbeat(temperature=21.5, humidity=40.0, panic1=True)),
    ),
    "alarm": (f"{DEVICE}/alarm", encode_frame(KEY, 9, encode_alarm(duration_seconds=3))),
    "response": (
        f"{DEVICE}/response",
        encode_frame(KEY, 10, encode_response(request_id="0f0e0d0c-0000-4000-8000-000000000001")),
    ),
    "last will": (f"{DEVICE}/lw", encode_frame(KEY, 2, encode_last_will(firmware="1.2"))),
    "bad hmac": (f"{DEVICE}/hb", encode_frame(OTHER_KEY, 8, encode_heartbeat())),
    "truncated": (f"{DEVICE}/hb", encode_frame(KEY, 8, encode_heartbeat(uptime=99)[:-1])),
    "too short": (f"{DEVICE}/hb", b"\x00\x01"),
    "oversized": (f"{DEVICE}/hb", b"\x00" * (MAX + 1)),
    "bad topic": ("acme/pb/d/not-a-hostname/hb", encode_frame(KEY, 8, encode_heartbeat())),
    "command echo": (f"{DEVICE}/cmd", b"anything"),
    "nul in text": (
        f"{DEVICE}/status",
        encode_frame(KEY, 11, encode_status(firmware="1.\x002")),
    ),
}


EXPECTED = {
    "status": "status",
    "login": "login",
    "heartbeat": "hb",
    "alarm": "alarm",
    "response": "response",
    "last will": "lw",
    "bad hmac": "bad_hmac",
    "truncated": "truncated",
    "too short": "too_short",
    "oversized": "oversized",
    "bad topic": "topic_bad_hostname",
    "command echo": None,
    "nul in text": "bad_value",
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_ingest_rebuilds_what_it_would_have_decoded(case: str) -> None:
    topic, payload = CASES[case]
    raw = InboundMessage(topic, payload, 1, 5, 1.0, 3)
    wire = pickle.loads(pickle.dumps(WireDecoder(KEY, MAX, None)(topic, payload)))
    assert wire is not None
    sent = InboundMessage(topic, payload, 1, 5, 1.0, 3, wire)
    direct, rebuilt = prepare(raw, KEY, MAX), prepare(sent, KEY, MAX)
    expected = EXPECTED[case]
    assert getattr(direct, "kind", getattr(direct, "reason", None)) == expected
    if direct is None:
        assert rebuilt is None
        return
    assert type(rebuilt) is type(direct)
    if hasattr(direct, "report"):
        assert rebuilt.report == direct.report  # type: ignore[union-attr]
        assert rebuilt.source is sent  # type: ignore[union-attr]
        fields = ("base", "hostname", "mac", "kind", "frame_sequence")
        assert [getattr(rebuilt, f) for f in fields] == [getattr(direct, f) for f in fields]
    else:
        assert rebuilt == direct


def test_another_workers_devices_are_left_undecoded() -> None:
    topic, payload = CASES["heartbeat"]
    ours = next(p for p in (Partition(0, 2), Partition(1, 2)) if p.owns(topic))
    theirs = Partition(1 - ours.index, 2)
    assert WireDecoder(KEY, MAX, ours)(topic, payload) is not None
    assert WireDecoder(KEY, MAX, theirs)(topic, payload) is None


def test_the_decoder_never_shows_its_key() -> None:
    decoder = WireDecoder(KEY, MAX, None)
    assert KEY.hex() not in repr(decoder) and repr(KEY) not in repr(decoder)


def test_a_fault_while_decoding_leaves_the_message_to_the_ingest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bug in decoding must not end the receiver process (the broker would hand the same
    message to the next one): the message goes over undecoded."""
    import fleet.integrations.alarm_panel.prepare as prepare_module

    def broken(*_args: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(prepare_module, "decode", broken)
    topic, payload = CASES["heartbeat"]
    assert WireDecoder(KEY, MAX, None)(topic, payload) is None
