"""How a device's fields appear on its page: the status in labelled groups, and the form of
hand-maintained details built from the API's own PATCH model (a field added there shows up)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, get_args

from pydantic import BaseModel

from fleet.web.templating import day, duration, number, when, yesno

Format = Callable[[Any], str]


def _plain(value: Any) -> str:
    return "—" if value is None or value == "" else str(value)


def _bool(value: Any) -> str:
    return yesno(value)


def _time(value: Any) -> str:
    return when(value) if isinstance(value, datetime) else _plain(value)


def _unit(unit: str, digits: int = 1) -> Format:
    return lambda value: number(value, unit, digits)


def _bytes(value: Any) -> str:
    return "—" if value is None else f"{value / 1024:,.0f} KiB"


def _hex(value: Any) -> str:
    return "—" if value is None else f"0x{int(value):08X}"


_GROUPS: list[tuple[str, list[tuple[str, str, Format]]]] = [
    (
        "Sensors",
        [
            ("temperature", "Temperature", _unit("°C")),
            ("humidity", "Humidity", _unit("%")),
            ("fan_pwm_duty", "Fan", lambda v: number(v, "%", 0)),
        ],
    ),
    (
        "Inputs and outputs",
        [
            ("panic1", "Panic 1", _bool),
            ("panic2", "Panic 2", _bool),
            ("box_sw", "Box open (tamper)", _bool),
            ("siren", "Siren", _bool),
            ("turret", "Turret", _bool),
        ],
    ),
    (
        "System",
        [
            ("device_state", "State", _plain),
            ("state_duration", "In this state for", duration),
            ("firmware_version", "Firmware", _plain),
            ("partition", "Partition", _plain),
            ("ota_validated", "OTA validated", _bool),
            ("uptime", "Uptime", duration),
            ("boot_count", "Boots", _plain),
            ("free_heap", "Free heap", _bytes),
            ("min_heap", "Lowest free heap", _bytes),
            ("error_flags", "Error flags", _hex),
            ("device_synced", "Device id synced", _bool),
            ("last_sync_attempt", "Last sync attempt", _time),
        ],
    ),
    (
        "Network",
        [
            ("last_seen", "Last seen", _time),
            ("network_type", "Network", _plain),
            ("ip_address", "IP address", _plain),
            ("rssi", "Signal (RSSI)", lambda v: number(v, "dBm")),
            ("connected", "Link up", _bool),
            ("has_ip", "Has IP", _bool),
            ("mqtt_connected", "MQTT connected", _bool),
            ("ntp_synced", "Clock synced (NTP)", _bool),
            ("last_ntp_sync", "Last NTP sync", _time),
        ],
    ),
    (
        "Counters",
        [
            ("panic1_count", "Panic 1 presses", _plain),
            ("panic2_count", "Panic 2 presses", _plain),
            ("tamper_count", "Tamper events", _plain),
            ("wifi_disconnects", "Wi-Fi disconnects", _plain),
            ("mqtt_disconnects", "MQTT disconnects", _plain),
            ("error_count", "Errors", _plain),
        ],
    ),
]
_SHOWN_ELSEWHERE = {"device_id", "is_online", "updated_at"}
# Inputs and outputs: on means something is happening (red). Health flags: on is normal.
_ALARMING = frozenset({"panic1", "panic2", "box_sw", "siren", "turret"})


def _tone(name: str, value: Any) -> str:
    if not isinstance(value, bool):
        return ""
    if name in _ALARMING:
        return "danger" if value else ""
    return "ok" if value else "warn"


@dataclass(frozen=True, slots=True)
class Item:
    name: str
    label: str
    text: str
    tone: str = ""  # ok, warn, danger: how a boolean reads (an active input is bad news)
    time: datetime | None = None  # shown as "3 min ago" by the browser


def status_groups(status: Mapping[str, Any] | None) -> list[tuple[str, list[Item]]]:
    """Labelled groups of the status; groups with nothing reported are left out, and any field
    of another kind of device lands in "Other"."""
    if not status:
        return []
    groups: list[tuple[str, list[Item]]] = []
    known = set(_SHOWN_ELSEWHERE)
    for title, fields in _GROUPS:
        items = []
        for name, label, fmt in fields:
            known.add(name)
            if name in status and status[name] is not None:
                value = status[name]
                items.append(
                    Item(
                        name,
                        label,
                        fmt(value),
                        tone=_tone(name, value),
                        time=value if isinstance(value, datetime) else None,
                    )
                )
        if items:
            groups.append((title, items))
    other = [
        Item(
            name,
            name.replace("_", " ").capitalize(),
            _time(value),
            time=value if isinstance(value, datetime) else None,
        )
        for name, value in status.items()
        if name not in known and value is not None
    ]
    if other:
        groups.append(("Other", other))
    return groups


@dataclass(frozen=True, slots=True)
class FormField:
    name: str
    label: str
    widget: str  # text, textarea, date, checkbox
    value: Any
    max_length: int | None
    help: str
    target: str  # which API call saves it: "device" (PATCH …/{id}) or "details" (PUT …/details)


_LABELS = {
    "friendly_name": "Friendly name",
    "location_desc": "Location",
    "installation_date": "Installation date",
    "notes": "Notes",
    "active": "Active",
}
_HELP = {
    "friendly_name": "What people call it; shown instead of the hostname.",
    "location_desc": "Where it is, for the people who go there (building, floor, room).",
    "active": "Inactive devices stay listed but are not expected to report.",
}


def _max_length(info: Any) -> int | None:
    for item in info.metadata:
        value = getattr(item, "max_length", None)
        if value is not None:
            return int(value)
    return None


def _widget(name: str, annotation: Any) -> str:
    # `Text | None` is (Annotated[str, …], None): look through the Annotated wrappers.
    kinds = {getattr(arg, "__origin__", arg) for arg in get_args(annotation) or (annotation,)}
    if bool in kinds:
        return "checkbox"
    if datetime in kinds or name.endswith("_date"):
        return "date"
    return "textarea" if name == "notes" else "text"


def manual_fields(
    model: type[BaseModel], values: Mapping[str, Any], target: str = "device"
) -> list[FormField]:
    """One form field per field of `model` (an API input model), filled from `values`."""
    fields = []
    for name, info in model.model_fields.items():
        widget = _widget(name, info.annotation)
        value = values.get(name)
        if widget == "date":
            value = day(value) if isinstance(value, datetime) else ""
        elif widget != "checkbox":
            value = "" if value is None else str(value)
        fields.append(
            FormField(
                name=name,
                label=_LABELS.get(name, name.replace("_", " ").capitalize()),
                widget=widget,
                value=value,
                max_length=_max_length(info),
                help=_HELP.get(name, ""),
                target=target,
            )
        )
    return fields
