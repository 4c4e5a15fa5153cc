"""MQTT topic layout of alarm panels: ``{base}/pb/d/{hostname}/{kind}``.

``base`` is one topic level chosen per deployment (the field firmware uses
``esagtech``); the server subscribes to every base at once with SUBSCRIPTION and
maps the base to an account itself.
"""

from __future__ import annotations

import functools
import re

from fleet.core.records import record

# One wildcard level for the base, one for the hostname, one for the kind.
SUBSCRIPTION = "+/pb/d/+/+"

HOSTNAME_PREFIX = "ESG_ALARM_"
_HOSTNAME = re.compile(r"ESG_ALARM_([0-9A-F]{12})")

COMMAND_KIND = "cmd"
# Device -> server kinds, mapped to their canonical name. Older firmware answers
# commands on `resp`; everything downstream only ever sees `response`.
_DEVICE_KINDS = {
    "status": "status",
    "login": "login",
    "hb": "hb",
    "alarm": "alarm",
    "response": "response",
    "resp": "response",
    "lw": "lw",
}
DEVICE_KINDS = frozenset(_DEVICE_KINDS.values())


class TopicError(ValueError):
    """A topic that is not an alarm-panel topic. ``reason`` is a stable metrics label."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@record
class PanelTopic:
    base: str
    hostname: str
    kind: str  # canonical: one of DEVICE_KINDS or COMMAND_KIND


def _is_plain_level(level: str) -> bool:
    return bool(level) and not any(ch in level for ch in "/+#")


@functools.lru_cache(maxsize=1 << 17)  # a few topics per panel: each is parsed once, then looked up
def parse_topic(topic: str) -> PanelTopic:
    """Split an alarm-panel topic; ``resp`` is normalised to ``response``. Raises TopicError
    (errors are not cached: a garbage topic costs its parse every time)."""
    levels = topic.split("/")
    if len(levels) != 5 or levels[1:3] != ["pb", "d"]:
        raise TopicError("bad_shape")
    base, hostname, kind = levels[0], levels[3], levels[4]
    if not (_is_plain_level(base) and _is_plain_level(hostname) and _is_plain_level(kind)):
        raise TopicError("bad_shape")
    if kind == COMMAND_KIND:
        canonical = COMMAND_KIND
    elif kind in _DEVICE_KINDS:
        canonical = _DEVICE_KINDS[kind]
    else:
        raise TopicError("unknown_kind")
    if not _HOSTNAME.fullmatch(hostname):
        raise TopicError("bad_hostname")
    return PanelTopic(base=base, hostname=hostname, kind=canonical)


def is_valid_hostname(hostname: str) -> bool:
    return _HOSTNAME.fullmatch(hostname) is not None


@functools.lru_cache(maxsize=1 << 16)  # one entry per panel seen lately: cheap on the hot path
def mac_from_hostname(hostname: str) -> str:
    """``ESG_ALARM_0483080CEDD8`` -> ``04:83:08:0C:ED:D8``."""
    match = _HOSTNAME.fullmatch(hostname)
    if match is None:
        raise TopicError("bad_hostname")
    digits = match.group(1)
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


def hostname_from_mac(mac: bytes) -> str:
    """The hostname the firmware derives from its 6-byte MAC."""
    if len(mac) != 6:
        raise ValueError(f"MAC must be 6 bytes, got {len(mac)}")
    return HOSTNAME_PREFIX + mac.hex().upper()


def device_topic(base: str, hostname: str, kind: str) -> str:
    """Topic a panel publishes ``kind`` on (also used by the simulator)."""
    if not _is_plain_level(base):
        raise TopicError("bad_shape")
    if not is_valid_hostname(hostname):
        raise TopicError("bad_hostname")
    if kind != COMMAND_KIND and kind not in _DEVICE_KINDS:
        raise TopicError("unknown_kind")
    return f"{base}/pb/d/{hostname}/{kind}"


def command_topic(base: str, hostname: str) -> str:
    """Topic the server publishes CommandEnvelopes on for one panel."""
    return device_topic(base, hostname, COMMAND_KIND)
