"""The pure first step of the alarm-panel ingest: topic, size, frame, HMAC, protobuf.

No database and no state: a message either becomes a `PanelMessage` or a `Rejection` with a reason.
"""

from __future__ import annotations

import dataclasses

from fleet.core.records import record
from fleet.ingest.mqtt_link import InboundMessage
from fleet.ingest.rejections import Rejection
from fleet.integrations.alarm_panel.codec import DecodeError, Report, decode_message
from fleet.integrations.alarm_panel.framing import FrameError, decode_frame
from fleet.integrations.alarm_panel.topics import TopicError, mac_from_hostname, parse_topic


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


def prepare(
    message: InboundMessage, key: bytes, max_payload: int
) -> PanelMessage | Rejection | None:
    """None: a message that is not a device's (our own commands echo on the wildcard)."""
    topic = message.topic
    if len(message.payload) > max_payload:
        return Rejection("oversized", topic, f"{len(message.payload)} bytes > {max_payload}")
    try:
        parsed = parse_topic(topic)
    except TopicError as exc:
        return Rejection(f"topic_{exc.reason}", topic)
    if parsed.kind == "cmd":
        return None
    try:
        frame = decode_frame(key, message.payload, max_payload)
        report = decode_message(parsed.kind, frame.payload)
    except FrameError as exc:
        return Rejection(exc.reason, topic)
    except DecodeError as exc:
        return Rejection(exc.reason, topic, exc.detail)
    if _has_nul(report):
        # PostgreSQL text cannot hold U+0000: refused here with a reason, not by the database.
        return Rejection("bad_value", topic, "NUL character in a text field")
    return PanelMessage(
        source=message,
        base=parsed.base,
        hostname=parsed.hostname,
        mac=mac_from_hostname(parsed.hostname),
        kind=parsed.kind,
        frame_sequence=frame.sequence,
        report=report,
    )
