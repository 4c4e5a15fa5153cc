"""The liveness state machine, as a table: state before and what happened → state after, the timer,
the StateChange and the Offline alarm."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from fleet.core.liveness import (
    REPORT_GRACE_SECONDS,
    AdminResume,
    AdminStop,
    Input,
    Liveness,
    Ongoing,
    Silent,
    State,
    StateChange,
    Stop,
    TimerFired,
    decide,
    millis,
    valid_period,
)

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
EARLIER = NOW - timedelta(minutes=5)
DUE_PAST = NOW - timedelta(seconds=1)
DUE_LATER = NOW + timedelta(seconds=30)
ARMED = NOW + timedelta(seconds=60 + REPORT_GRACE_SECONDS)

NEW = Liveness()
REPORTING = Liveness(State.REPORTING, "ssid=HOME", EARLIER, DUE_LATER, 60.0, EARLIER)
REPORTING_DUE = replace(REPORTING, due_at=DUE_PAST)
OFFLINE = Liveness(State.OFFLINE, "ssid=HOME", EARLIER, None, 60.0, EARLIER)
STOPPED = Liveness(State.STOPPED, "ssid=HOME", EARLIER, None, 60.0, EARLIER)
HELD = replace(STOPPED, held=True)

# before, event, (state, due_at, held), change?, alarm
CASES: list[tuple[str, Liveness, Input, tuple[State, datetime | None, bool], bool, str | None]] = [
    ("new, ongoing", NEW, Ongoing(60, "ssid=HOME"), (State.REPORTING, ARMED, False), True, None),
    ("new, stop", NEW, Stop("ssid=HOME"), (State.STOPPED, None, False), True, None),
    ("new, timer", NEW, TimerFired(), (State.NEW, None, False), False, None),
    ("new, silent", NEW, Silent(), (State.NEW, None, False), False, None),
    ("reporting, ongoing re-arms", REPORTING, Ongoing(60, "ssid=HOME"),
     (State.REPORTING, ARMED, False), False, None),
    ("reporting, ongoing elsewhere", REPORTING, Ongoing(60, "ssid=WORK"),
     (State.REPORTING, ARMED, False), True, None),
    ("reporting, ongoing without connection keeps it", REPORTING, Ongoing(60),
     (State.REPORTING, ARMED, False), False, None),
    ("reporting, stop", REPORTING, Stop(), (State.STOPPED, None, False), True, None),
    ("reporting, timer due", REPORTING_DUE, TimerFired(), (State.OFFLINE, None, False), True,
     "raise"),
    ("reporting, timer re-armed meanwhile", REPORTING, TimerFired(),
     (State.REPORTING, DUE_LATER, False), False, None),
    ("reporting, silent", REPORTING, Silent(), (State.OFFLINE, None, False), True, "raise"),
    ("offline, ongoing", OFFLINE, Ongoing(60), (State.REPORTING, ARMED, False), True, "clear"),
    ("offline, stop", OFFLINE, Stop(), (State.STOPPED, None, False), True, "clear"),
    ("offline, timer", OFFLINE, TimerFired(), (State.OFFLINE, None, False), False, None),
    ("offline, silent again", OFFLINE, Silent(), (State.OFFLINE, None, False), False, None),
    ("stopped, ongoing", STOPPED, Ongoing(60), (State.REPORTING, ARMED, False), True, None),
    ("stopped, stop", STOPPED, Stop(), (State.STOPPED, None, False), False, None),
    ("stopped, leftover timer is disarmed", replace(STOPPED, due_at=DUE_PAST), TimerFired(),
     (State.STOPPED, None, False), False, None),
    ("admin stops a reporting device", REPORTING, AdminStop(), (State.STOPPED, None, True), True,
     None),
    ("admin stops an offline device", OFFLINE, AdminStop(), (State.STOPPED, None, True), True,
     "clear"),
    ("admin stops a stopped device", STOPPED, AdminStop(), (State.STOPPED, None, True), False,
     None),
    ("held: ongoing changes nothing", HELD, Ongoing(60, "ssid=WORK"),
     (State.STOPPED, None, True), False, None),
    ("held: timer changes nothing", replace(HELD, due_at=DUE_PAST), TimerFired(),
     (State.STOPPED, None, True), False, None),
    ("held: silent changes nothing", HELD, Silent(), (State.STOPPED, None, True), False, None),
    ("admin resumes: stopped until the next report", HELD, AdminResume(),
     (State.STOPPED, None, False), False, None),
    ("unarmed ongoing (integration decides silence)", OFFLINE, Ongoing(300, arm=False),
     (State.REPORTING, None, False), True, "clear"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("before", "event", "expected", "changes", "alarm"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_transitions(
    before: Liveness,
    event: Input,
    expected: tuple[State, datetime | None, bool],
    changes: bool,
    alarm: str | None,
) -> None:
    decision = decide(before, event, NOW)
    after = decision.after
    assert (after.state, after.due_at, after.held) == expected
    assert decision.alarm == alarm
    if changes:
        assert decision.change == StateChange(before.state, after.state, after.connection, NOW)
        assert after.since == NOW
    else:
        assert decision.change is None
        assert after.since == before.since


def test_reports_are_recorded_even_when_nothing_changes() -> None:
    for before in (REPORTING, HELD):
        after = decide(before, Ongoing(30, "ssid=WORK"), NOW).after
        assert after.last_report_at == NOW and after.period_seconds == 30
    assert decide(HELD, Ongoing(30, "ssid=WORK"), NOW).after.connection == "ssid=WORK"


def test_a_chain_of_reports_and_timers() -> None:
    state, seen = NEW, []
    t = NOW
    for step, event in [
        (0, Ongoing(60, "ssid=A")),
        (30, Ongoing(60, "ssid=A")),
        (64, TimerFired()),  # due at 30 + 65 = 95: not yet
        (96, TimerFired()),
        (100, Ongoing(10)),
        (101, Stop()),
    ]:
        t = NOW + timedelta(seconds=step)
        decision = decide(state, event, t)
        state = decision.after
        if decision.change:
            seen.append((decision.change.state.value, step))
    assert seen == [("Reporting", 0), ("Offline", 96), ("Reporting", 100), ("Stopped", 101)]
    assert state.connection == "ssid=A"


def test_periods_and_millis() -> None:
    assert valid_period(60) and valid_period(0.5)
    assert not valid_period(0) and not valid_period(-1) and not valid_period(float("nan"))
    assert not valid_period(float("inf")) and not valid_period(8 * 86400)
    assert millis(NOW) == 1740830400000
