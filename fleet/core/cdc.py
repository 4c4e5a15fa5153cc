"""The change-data-capture rule for the heartbeats history (seed 001).

A message is compared with the device's last *stored* history row, not with the previous message:
that makes the thresholds a deadband, so a slow drift (0.2 °C a message) is recorded once it adds up
instead of never. Plain values in, a decision out; `now` is passed in.
"""

from __future__ import annotations

from dataclasses import fields, replace
from datetime import datetime

from fleet.core.records import record

# Thresholds of seed 001. Readings arrive as float32, so 20.1 → 20.6 is 0.4999999 in float64:
# EPSILON keeps a change of exactly the threshold counting as the threshold.
TEMPERATURE_DELTA = 0.5
HUMIDITY_DELTA = 2.0
FAN_DELTA = 5
EPSILON = 1e-4

ALARM = "ALARM"
STATE_CHANGE = "STATE_CHANGE"
CONNECTION = "CONNECTION"
SENSOR_DATA = "SENSOR_DATA"
PERIODIC = "PERIODIC"
MULTIPLE = "MULTIPLE"
# The seed's priority when several kinds change at once.
PRIORITY = (ALARM, STATE_CHANGE, CONNECTION, SENSOR_DATA)


@record
class Snapshot:
    """The values a heartbeats row records."""

    temperature: float | None = None
    humidity: float | None = None
    fan_pwm_duty: int | None = None
    panic1: bool | None = None
    panic2: bool | None = None
    box_sw: bool | None = None
    siren: bool | None = None
    turret: bool | None = None

    def merged_over(self, older: Snapshot | None) -> Snapshot:
        """This reading, its gaps (None) filled from an older one: a StatusMessage has no fan."""
        if older is None or None not in (
            self.temperature,
            self.humidity,
            self.fan_pwm_duty,
            self.panic1,
            self.panic2,
            self.box_sw,
            self.siren,
            self.turret,
        ):
            return self  # a heartbeat carries every field: nothing to fill
        return replace(
            older,
            **{
                name: getattr(self, name)
                for name in SNAPSHOT_FIELDS
                if getattr(self, name) is not None
            },
        )


SNAPSHOT_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Snapshot))


@record
class StoredRow:
    time: datetime
    values: Snapshot


@record
class Decision:
    change_type: str
    kinds: tuple[str, ...]


def _moved(old: float | None, new: float | None, delta: float) -> bool:
    if new is None:
        return False
    if old is None:
        return True
    return abs(new - old) >= delta - EPSILON


def _changed(old: bool | None, new: bool | None) -> bool:
    return new is not None and new != old


def changed_kinds(
    last: Snapshot | None, new: Snapshot, *, state_changed: bool, connection_changed: bool
) -> tuple[str, ...]:
    """Every kind that changed, in the seed's priority order."""
    # Built in PRIORITY order directly: this runs for every message, so no sets or getattr.
    kinds: list[str] = []
    io_changed = sensor_moved = False
    if last is None:
        sensor_moved = True
    else:
        io_changed = (
            _changed(last.panic1, new.panic1)
            or _changed(last.panic2, new.panic2)
            or _changed(last.box_sw, new.box_sw)
            or _changed(last.siren, new.siren)
            or _changed(last.turret, new.turret)
        )
        sensor_moved = (
            _moved(last.temperature, new.temperature, TEMPERATURE_DELTA)
            or _moved(last.humidity, new.humidity, HUMIDITY_DELTA)
            or _moved(last.fan_pwm_duty, new.fan_pwm_duty, FAN_DELTA)
        )
    if io_changed:
        kinds.append(ALARM)
    if state_changed:
        kinds.append(STATE_CHANGE)
    if connection_changed:
        kinds.append(CONNECTION)
    if sensor_moved:
        kinds.append(SENSOR_DATA)
    return tuple(kinds)


def decide(
    last: StoredRow | None,
    new: Snapshot,
    now: datetime,
    *,
    periodic_seconds: float,
    state_changed: bool = False,
    connection_changed: bool = False,
    force: str | None = None,
) -> Decision | None:
    """Whether to store a heartbeats row for `new`, and with which change_type.

    `force` stores a row of that kind whatever else holds (an AlarmEvent always records ALARM).
    """
    kinds = changed_kinds(
        None if last is None else last.values,
        new,
        state_changed=state_changed,
        connection_changed=connection_changed,
    )
    if force is not None:
        kinds = tuple(k for k in PRIORITY if k == force or k in kinds)
    if len(kinds) > 1:
        return Decision(MULTIPLE, kinds)
    if kinds:
        return Decision(kinds[0], kinds)
    if last is not None and (now - last.time).total_seconds() >= periodic_seconds:
        return Decision(PERIODIC, (PERIODIC,))
    return None
