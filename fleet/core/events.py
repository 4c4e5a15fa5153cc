"""The vocabulary of things an operator may want to see live: alarms, devices, commands."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Event:
    account_id: int
    type: str  # alarm.raised, alarm.cleared, device.registered, device.online, device.offline, …
    device_id: int | None  # None for events about no single device (task.updated, …)
    data: dict[str, Any]
