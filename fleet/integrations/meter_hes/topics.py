"""HES topics: `{prefix}/{deviceId}/command` out, `{prefix}/{deviceId}/response` in."""

from __future__ import annotations

import re

# A meter id is one topic level: no '/', no wildcards, nothing a broker would misread.
METER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")


def valid_meter_id(value: str) -> bool:
    return bool(METER_ID.match(value))


def command_topic(prefix: str, meter_id: str) -> str:
    return f"{prefix}/{meter_id}/command"


def response_filter(prefix: str) -> str:
    return f"{prefix}/+/response"


def meter_of_response(prefix: str, topic: str) -> str | None:
    """The meter id of a response topic under `prefix`, or None for any other topic."""
    head = prefix + "/"
    if not topic.startswith(head) or not topic.endswith("/response"):
        return None
    middle = topic[len(head) : -len("/response")]
    return middle if middle and "/" not in middle else None
