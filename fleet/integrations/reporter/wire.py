"""What a reporter sends: `GET|POST /report/{ongoing|stop}?device_id=…&connection=…&period=…`, a
POST optionally with a form field `report` holding a MonitorReport (wire-formats.md §4).

Pure parsing: every refusal is a `BadReport` whose message tells the reporter's owner what to fix.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from fleet.core.liveness import MAX_PERIOD_SECONDS, valid_period

Action = Literal["ongoing", "stop"]
MAX_NAME = 128
MAX_CONNECTION = 256
MAX_REPORT_CONNECTIONS = 64


class BadReport(ValueError):
    """A request a reporter must fix: answered 400 with this message."""


@dataclass(frozen=True, slots=True)
class ReportRequest:
    action: Action
    name: str  # the reporter's own `device_id`: its name, unique within the account
    connection: str | None
    period_seconds: float | None
    report: dict[str, Any] | None  # the MonitorReport, normalised


def device_uid(account_id: int, name: str) -> str:
    """The DeviceID: 64 hex digits, stable, derived from the account and the device's name (as
    the seed's Durable Object id is derived from the name), so the same name under two accounts
    is two devices and neither can be reached from the other."""
    return hashlib.sha256(f"fleet-reporter\x00{account_id}\x00{name}".encode()).hexdigest()


def _printable(value: str, what: str, limit: int) -> str:
    if len(value) > limit:
        raise BadReport(f"{what} is longer than {limit} characters")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise BadReport(f"{what} contains control characters")
    return value


def clean_connection(raw: str | None) -> str | None:
    """Some reporters send the connection with a leading tab ("\\tssid=HOME"): trim it."""
    if raw is None:
        return None
    value = raw.strip("\t\r\n")
    return _printable(value, "connection", MAX_CONNECTION) or None


def parse_period(raw: str | None) -> float | None:
    if raw is None or raw.strip() == "":
        return None
    try:
        seconds = float(raw)
    except ValueError:
        raise BadReport(f"period must be a number of seconds, got {raw[:40]!r}") from None
    if not valid_period(seconds):
        raise BadReport(f"period must be more than 0 and at most {MAX_PERIOD_SECONDS:.0f} seconds")
    return seconds


def _connection_of(value: Any, where: str) -> str:
    """A `Connection` as the seed serialises it: {"SSID": "HOME"} → 'ssid=HOME'."""
    if isinstance(value, str):
        text = clean_connection(value)
        if text is None:
            raise BadReport(f"{where} is empty")
        return text
    if isinstance(value, dict) and len(value) == 1:
        ((kind, name),) = value.items()
        if isinstance(name, str) and kind in {"SSID", "Ethernet"}:
            prefix = "ssid" if kind == "SSID" else "ethernet"
            return _printable(f"{prefix}={name}", where, MAX_CONNECTION)
    raise BadReport(f'{where} must be {{"SSID": "<name>"}} or {{"Ethernet": "<mac>"}}')


def parse_monitor_report(raw: str) -> dict[str, Any]:
    """The form field `report`: `{"connection_used": …, "connections": [{"connection": …,
    "stats": {"power_dbs": -60}}]}`, normalised to connection strings."""
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise BadReport(f"report is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadReport("report must be a JSON object")
    unknown = set(data) - {"connection_used", "connections"}
    if unknown:
        raise BadReport(f"report has unknown fields: {', '.join(sorted(unknown))}")
    used = data.get("connection_used")
    report: dict[str, Any] = {
        "connection_used": None if used is None else _connection_of(used, "connection_used")
    }
    seen = data.get("connections", [])
    if not isinstance(seen, list) or len(seen) > MAX_REPORT_CONNECTIONS:
        raise BadReport(f"report.connections must be a list of at most {MAX_REPORT_CONNECTIONS}")
    connections = []
    for index, item in enumerate(seen):
        where = f"report.connections[{index}]"
        if not isinstance(item, dict) or "connection" not in item:
            raise BadReport(f"{where} must be an object with a connection")
        stats = item.get("stats") or {}
        power = stats.get("power_dbs") if isinstance(stats, dict) else None
        if not isinstance(stats, dict) or not (
            power is None or (isinstance(power, int | float) and not isinstance(power, bool))
        ):
            raise BadReport(f"{where}.stats must be an object with a numeric power_dbs")
        connections.append(
            {
                "connection": _connection_of(item["connection"], f"{where}.connection"),
                "stats": {"power_dbs": power},
            }
        )
    report["connections"] = connections
    return report


def parse_report(action: Action, query: Mapping[str, str], report: str | None) -> ReportRequest:
    name = query.get("device_id")
    if name is None or not name.strip():
        raise BadReport("device_id is missing: send ?device_id=<this device's name>")
    name = _printable(name.strip(), "device_id", MAX_NAME)
    connection = clean_connection(query.get("connection"))
    period = parse_period(query.get("period"))
    parsed = parse_monitor_report(report) if report is not None and report.strip() else None
    if connection is None and parsed is not None:
        connection = parsed["connection_used"]
    return ReportRequest(action, name, connection, period, parsed)
