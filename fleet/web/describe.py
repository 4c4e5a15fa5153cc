"""Events in words, for the people reading the dashboard's feeds."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# The colour a feed line gets: what an operator should notice first.
_TONES = {
    "alarm.raised": "danger",
    "alarm.cleared": "ok",
    "alarm.acknowledged": "info",
    "alarm.resolved": "ok",
    "device.offline": "warn",
    "device.online": "ok",
    "device.registered": "info",
}

_STATE_TONES = {"Reporting": "ok", "Offline": "warn", "Stopped": "muted", "New": "info"}


def tone(event_type: str, data: Mapping[str, Any] | None = None) -> str:
    state = (data or {}).get("state")
    if event_type == "device.state" and state in _STATE_TONES:
        return _STATE_TONES[state]
    if event_type in _TONES:
        return _TONES[event_type]
    return "warn" if event_type.endswith(("failed", ".timeout", ".stopped")) else "muted"


def _alarm(data: Mapping[str, Any]) -> str:
    name = str(data.get("alarm_type", "alarm")).replace("_", " ").lower()
    priority = data.get("priority")
    return f"{name} ({str(priority).lower()})" if priority else name


def describe(event_type: str, data: Mapping[str, Any] | None) -> str:
    data = data or {}
    match event_type:
        case "alarm.raised":
            return f"Alarm raised: {_alarm(data)}"
        case "alarm.cleared":
            return f"Alarm cleared: {_alarm(data)}"
        case "alarm.acknowledged":
            return f"Alarm acknowledged: {_alarm(data)}"
        case "alarm.resolved":
            return f"Alarm resolved by an operator: {_alarm(data)}"
        case "device.registered":
            return "New device registered"
        case "device.online":
            return "Came online"
        case "device.offline":
            reason = data.get("reason")
            return f"Went offline ({reason})" if reason else "Went offline"
        case "device.state" if "state" in data:  # liveness: New, Reporting, Offline, Stopped
            where = f" on {data['connection']}" if data.get("connection") else ""
            return f"{data.get('previous') or '—'} → {data['state']}{where}"
        case "device.state":  # the device's own state (an alarm panel's NORMAL, ALARM, …)
            return f"State {data.get('from') or '—'} → {data.get('to') or '—'}"
        case "command.updated":
            status = data.get("status")
            return f"Command {str(status).lower()}" if status else "Command answered"
    words = event_type.replace(".", " ").replace("_", " ")
    status = data.get("status") or data.get("state")
    return f"{words[:1].upper()}{words[1:]}" + (f": {status}" if status else "")
