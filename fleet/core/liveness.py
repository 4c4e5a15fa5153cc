"""Liveness: is a device reporting? Seed 000's per-device state machine, for every device kind.

```
            ongoing                 timer fired (or the integration says: silent)
    New ───────────────> Reporting ───────────────────────────────────────────> Offline
     │                    │   ^  ^                                                │
     │ stop          stop │   │  └──────────────────── ongoing ──────────────────┘
     v                    v   │ ongoing                                           │
   Stopped <──────────────────┴─────────────────────────────── stop ──────────────┘
```

`ongoing` arms the device's timer at `period + REPORT_GRACE_SECONDS`; `stop` and `Offline` disarm
it. A `StateChange` comes out only on a real change: of the state, or of the connection the
device reports over (the connection view must follow a device that moved). An admin can *hold* a
device in Stopped (decommissioned, paused): its reports are still recorded but change nothing and
raise nothing until the hold is lifted.

Pure: plain values in, a decision out, `now` passed in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Literal

# A report may be a little late (network, the reporter's own scheduling) without the device being
# offline: seed 000 arms its alarm at period + 5 s.
REPORT_GRACE_SECONDS = 5.0
# What an `ongoing` without a period (and no period known from before) is taken to mean.
DEFAULT_PERIOD_SECONDS = 60.0
# A longer period is a typo rather than a plan, and would keep a dead device "Reporting" for ages.
MAX_PERIOD_SECONDS = 7 * 86400.0
MIN_PERIOD_SECONDS = 0.001


class State(StrEnum):
    NEW = "New"
    REPORTING = "Reporting"
    OFFLINE = "Offline"
    STOPPED = "Stopped"


STATES: tuple[str, ...] = tuple(state.value for state in State)


@dataclass(frozen=True, slots=True)
class Liveness:
    """What is remembered per device between reports (one row of the `liveness` table)."""

    state: State = State.NEW
    connection: str | None = None
    since: datetime | None = None  # when the last StateChange happened
    due_at: datetime | None = None  # the armed timer, None when disarmed
    period_seconds: float | None = None
    last_report_at: datetime | None = None
    held: bool = False  # stopped by an admin


@dataclass(frozen=True, slots=True)
class Ongoing:
    """A report that the device is running (`/report/ongoing`, a heartbeat, an uplink…).

    `arm=False` for kinds whose integration decides silence itself (alarm panels): the state
    follows it, with no timer of ours."""

    period_seconds: float
    connection: str | None = None
    arm: bool = True


@dataclass(frozen=True, slots=True)
class Stop:
    """The device says it stops reporting on purpose (`/report/stop`)."""

    connection: str | None = None


@dataclass(frozen=True, slots=True)
class TimerFired:
    pass


@dataclass(frozen=True, slots=True)
class Silent:
    """The integration decided the device went quiet (its own sweep, an MQTT last will)."""


@dataclass(frozen=True, slots=True)
class AdminStop:
    pass


@dataclass(frozen=True, slots=True)
class AdminResume:
    """Lift the hold: the device stays Stopped until its next report moves it."""


Input = Ongoing | Stop | TimerFired | Silent | AdminStop | AdminResume
AlarmAction = Literal["raise", "clear"]


@dataclass(frozen=True, slots=True)
class StateChange:
    previous: State
    state: State
    connection: str | None
    timestamp: datetime


@dataclass(frozen=True, slots=True)
class Decision:
    after: Liveness
    change: StateChange | None = None
    alarm: AlarmAction | None = None  # the device's Offline alarm

    @property
    def writes(self) -> bool:
        return self.change is not None or self.alarm is not None


def due_time(now: datetime, period_seconds: float) -> datetime:
    return now + timedelta(seconds=period_seconds + REPORT_GRACE_SECONDS)


def valid_period(seconds: float) -> bool:
    return math.isfinite(seconds) and MIN_PERIOD_SECONDS <= seconds <= MAX_PERIOD_SECONDS


def _move(before: Liveness, after: Liveness, now: datetime) -> Decision:
    """`after` with the StateChange and the alarm action that going there from `before` means."""
    changed = after.state != before.state or after.connection != before.connection
    change = None
    if changed:
        after = replace(after, since=now)
        change = StateChange(before.state, after.state, after.connection, now)
    alarm: AlarmAction | None = None
    if before.state == State.OFFLINE and after.state != State.OFFLINE:
        alarm = "clear"
    elif after.state == State.OFFLINE and before.state != State.OFFLINE:
        alarm = "raise"
    return Decision(after, change, alarm)


def decide(before: Liveness, event: Input, now: datetime) -> Decision:
    """The next liveness of a device, given what happened at `now`."""
    if isinstance(event, Ongoing | Stop):
        connection = event.connection or before.connection
        period = event.period_seconds if isinstance(event, Ongoing) else before.period_seconds
        recorded = replace(before, last_report_at=now, period_seconds=period)
        if before.held:
            # Recorded, never acted on: a held device raises nothing and keeps no timer.
            return Decision(replace(recorded, connection=connection))
        if isinstance(event, Ongoing):
            due = due_time(now, event.period_seconds) if event.arm else None
            target = replace(recorded, state=State.REPORTING, connection=connection, due_at=due)
        else:
            target = replace(recorded, state=State.STOPPED, connection=connection, due_at=None)
        return _move(before, target, now)
    if isinstance(event, TimerFired):
        if before.due_at is None or before.due_at > now:
            return Decision(before)  # re-armed since it was claimed: not due any more
        if before.state != State.REPORTING or before.held:
            return Decision(replace(before, due_at=None))  # a leftover timer: disarm it
        return _move(before, replace(before, state=State.OFFLINE, due_at=None), now)
    if isinstance(event, Silent):
        if before.state != State.REPORTING or before.held:
            return Decision(before)
        return _move(before, replace(before, state=State.OFFLINE, due_at=None), now)
    if isinstance(event, AdminStop):
        target = replace(before, state=State.STOPPED, due_at=None, held=True)
        return _move(before, target, now)
    # AdminResume
    return Decision(replace(before, held=False))


def millis(moment: datetime) -> int:
    """StateChange timestamps travel as milliseconds since the epoch, as in seed 000."""
    return int(moment.timestamp() * 1000)
