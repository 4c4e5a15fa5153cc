"""The meter commands Fleet can ask of a head-end, with the parameters each takes (DLMS/COSEM
operations the HES performs on the meter). Unknown types and parameters are refused up front,
with what was wrong, so a bulk task never reaches 10,000 meters with a typo."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from fleet.services.transports import CommandRejected

_OBIS = re.compile(r"^\d{1,3}-\d{1,3}:\d{1,3}\.\d{1,3}\.\d{1,3}(\.\d{1,3})?$")


def _text(max_length: int) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if not isinstance(value, str) or not value.strip():
            return "a non-empty string"
        if len(value) > max_length or "\x00" in value:
            return f"a string of at most {max_length} characters"
        return None

    return check


def _obis(value: Any) -> str | None:
    if not isinstance(value, str) or not _OBIS.match(value):
        return "an OBIS code such as 1-0:1.8.0.255"
    return None


def _number(low: float, high: float, *, integer: bool = False) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        what = "an integer" if integer else "a number"
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"{what} from {low:g} to {high:g}"
        if (integer and not isinstance(value, int)) or not low <= value <= high:
            return f"{what} from {low:g} to {high:g}"
        return None

    return check


def _date_time(value: Any) -> str | None:
    if not isinstance(value, str):
        return "an ISO 8601 date-time"
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return "an ISO 8601 date-time"
    return None


@dataclass(frozen=True, slots=True)
class Param:
    check: Callable[[Any], str | None]
    required: bool = False


METER_COMMANDS: Final[dict[str, dict[str, Param]]] = {
    # Switch the meter to another time-of-use tariff profile (seed 002's example).
    "SET_TOU": {
        "tou_profile_id": Param(_text(64), required=True),
        "activation_date": Param(_date_time),
    },
    "READ_REGISTER": {"obis": Param(_obis, required=True)},
    "READ_LOAD_PROFILE": {"hours": Param(_number(1, 744, integer=True))},
    "SET_DEMAND_LIMIT": {"limit_kw": Param(_number(0.1, 10_000), required=True)},
    "DISCONNECT": {},
    "RECONNECT": {},
    "SYNC_CLOCK": {},
    "PING": {},
}
COMMAND_TYPES: Final = tuple(METER_COMMANDS)


def validate(command_type: str, params: dict[str, Any]) -> None:
    spec = METER_COMMANDS.get(command_type)
    if spec is None:
        raise CommandRejected(
            f"unknown command type {command_type!r}; meters accept {', '.join(COMMAND_TYPES)}"
        )
    unknown = sorted(set(params) - set(spec))
    if unknown:
        takes = ", ".join(spec) or "no parameters"
        raise CommandRejected(
            f"{command_type} does not take {', '.join(unknown)} (it takes {takes})"
        )
    for name, param in spec.items():
        if name not in params:
            if param.required:
                raise CommandRejected(f"{command_type} needs {name}")
            continue
        problem = param.check(params[name])
        if problem is not None:
            raise CommandRejected(f"{command_type}: {name} must be {problem}")
