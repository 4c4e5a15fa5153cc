"""The pure first step of the alarm-panel ingest: topic, size, frame, HMAC, protobuf.

No database and no state: a message either becomes a `PanelMessage` or a `Rejection` with a reason.

With the MQTT receiver in a process of its own (FLEET_INGEST_RECEIVER=process), that process does
this work too (`WireDecoder`, on the core paho already uses) and hands the ingest each message's
outcome as a tuple of plain values (`to_wire`), which `prepare` turns back into a `PanelMessage`
or a `Rejection` for a fraction of the cost of decoding: the ingest's event loop, Fleet's
bottleneck, is left with the decisions and the database.
"""

from __future__ import annotations

import dataclasses
import logging
from operator import attrgetter
from typing import Any

from fleet.core.records import record
from fleet.ingest.mqtt_link import InboundMessage
from fleet.ingest.partition import Partition
from fleet.ingest.rejections import Rejection
from fleet.integrations.alarm_panel.codec import (
    AlarmReport,
    CommandResponseReport,
    DecodeError,
    HeartbeatReport,
    LastWillReport,
    Report,
    StatusReport,
    decode_message,
)
from fleet.integrations.alarm_panel.framing import FrameError, decode_frame
from fleet.integrations.alarm_panel.topics import TopicError, mac_from_hostname, parse_topic

log = logging.getLogger(__name__)


@record
class PanelMessage:
    source: InboundMessage
    base: str
    hostname: str
    mac: str
    kind: str  # status, login, hb, alarm, response, lw
    frame_sequence: int
    report: Report


_TEXT_FIELDS: dict[type, tuple[str, ...]] = {}


def _text_fields(report_type: type) -> tuple[str, ...]:
    fields = _TEXT_FIELDS.get(report_type)
    if fields is None:
        fields = tuple(f.name for f in dataclasses.fields(report_type) if f.type in (str, "str"))
        _TEXT_FIELDS[report_type] = fields
    return fields


def _has_nul(report: Report) -> bool:
    # A plain loop: a generator in any() costs more than the checks themselves.
    for name in _text_fields(type(report)):  # noqa: SIM110
        if "\x00" in getattr(report, name):
            return True
    return False


# (base, hostname, mac, kind, frame sequence, report): a PanelMessage but for its source.
PanelParts = tuple[str, str, str, str, int, Report]


def decode(
    topic: str, payload: bytes, key: bytes, max_payload: int
) -> PanelParts | Rejection | None:
    """None: a message that is not a device's (our own commands echo on the wildcard)."""
    if len(payload) > max_payload:
        return Rejection("oversized", topic, f"{len(payload)} bytes > {max_payload}")
    try:
        parsed = parse_topic(topic)
    except TopicError as exc:
        return Rejection(f"topic_{exc.reason}", topic)
    if parsed.kind == "cmd":
        return None
    try:
        frame = decode_frame(key, payload, max_payload)
        report = decode_message(parsed.kind, frame.payload)
    except FrameError as exc:
        return Rejection(exc.reason, topic)
    except DecodeError as exc:
        return Rejection(exc.reason, topic, exc.detail)
    if _has_nul(report):
        # PostgreSQL text cannot hold U+0000: refused here with a reason, not by the database.
        return Rejection("bad_value", topic, "NUL character in a text field")
    hostname = parsed.hostname
    return (
        parsed.base,
        hostname,
        mac_from_hostname(hostname),
        parsed.kind,
        frame.sequence,
        report,
    )


def prepare(
    message: InboundMessage, key: bytes, max_payload: int
) -> PanelMessage | Rejection | None:
    """None: a message that is not a device's (our own commands echo on the wildcard). A message
    the receiver process decoded already (`message.decoded`) is only rebuilt."""
    if message.decoded is not None:
        return from_wire(message, message.decoded)
    result = decode(message.topic, message.payload, key, max_payload)
    if result is None or type(result) is Rejection:
        return result
    return PanelMessage(message, *result)  # type: ignore[misc]


# --- across the receiver's pipe ----------------------------------------------------------------
# A decoded message crosses as (report type's index, base, hostname, mac, kind, sequence, the
# report's values in field order); a rejection as (REJECTED, reason, detail); an echo as (SKIP,).
REPORT_TYPES: tuple[type[Any], ...] = (
    StatusReport,
    HeartbeatReport,
    AlarmReport,
    CommandResponseReport,
    LastWillReport,
)
_REPORT_INDEX = {report_type: i for i, report_type in enumerate(REPORT_TYPES)}
_REPORT_VALUES = [
    attrgetter(*(f.name for f in dataclasses.fields(report_type))) for report_type in REPORT_TYPES
]
REJECTED = "rejected"
SKIP = "skip"


def to_wire(result: PanelParts | Rejection | None) -> tuple[Any, ...]:
    if result is None:
        return (SKIP,)
    if type(result) is Rejection:
        return (REJECTED, result.reason, result.detail)
    base, hostname, mac, kind, sequence, report = result  # type: ignore[misc]
    index = _REPORT_INDEX[type(report)]
    return (index, base, hostname, mac, kind, sequence, _REPORT_VALUES[index](report))


def from_wire(message: InboundMessage, wire: tuple[Any, ...]) -> PanelMessage | Rejection | None:
    tag = wire[0]
    if type(tag) is int:
        _, base, hostname, mac, kind, sequence, values = wire
        return PanelMessage(
            message, base, hostname, mac, kind, sequence, REPORT_TYPES[tag](*values)
        )
    if tag == REJECTED:
        return Rejection(wire[1], message.topic, wire[2])
    return None


class WireDecoder:
    """What the receiver process runs on each message: `decode`, then `to_wire`. A partitioned
    worker's receiver leaves other workers' devices alone (the ingest drops them unread). Holds
    the HMAC key: no repr of its own, so it never shows in a log."""

    def __init__(self, key: bytes, max_payload: int, partition: Partition | None) -> None:
        self._key = key
        self._max_payload = max_payload
        self._partition = partition

    def __call__(self, topic: str, payload: bytes) -> tuple[Any, ...] | None:
        if self._partition is not None and not self._partition.owns(topic):
            return None
        try:
            return to_wire(decode(topic, payload, self._key, self._max_payload))
        except Exception:
            # A fault of Fleet's own must not end the receiver (the broker would redeliver the
            # same message to the next one, for ever): the ingest decodes it, and handles it.
            log.exception("receiver: could not decode a message on %s; the ingest will", topic)
            return None
