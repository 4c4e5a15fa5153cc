"""Bulk-task rules, table-driven: status after counts, abort rule, pacing."""

from datetime import UTC, datetime, timedelta

import pytest

from fleet.core import tasks
from fleet.core.tasks import AbortRule, Counts, TaskChange

T0 = datetime(2026, 1, 1, 2, 0, tzinfo=UTC)


def counts(**by_status: int) -> Counts:
    return Counts(by_status)


ADVANCE = [
    # (name, status, scheduled in seconds from now, counts, rule, expected)
    ("waits for its time", "QUEUED", 10, counts(PENDING=3), None, None),
    ("starts at its time", "QUEUED", 0, counts(PENDING=3), None, TaskChange("IN_PROGRESS")),
    ("starts when late", "QUEUED", -60, counts(PENDING=3), None, TaskChange("IN_PROGRESS")),
    ("still sending", "IN_PROGRESS", 0, counts(PENDING=1, SENT=1, SUCCESS=1), None, None),
    ("waiting for answers", "IN_PROGRESS", 0, counts(ACKNOWLEDGED=2, SUCCESS=1), None, None),
    ("all succeeded", "IN_PROGRESS", 0, counts(SUCCESS=3), None, TaskChange("COMPLETED")),
    (
        "some failed",
        "IN_PROGRESS",
        0,
        counts(SUCCESS=2, FAILED=1),
        None,
        TaskChange("FAILED", "1 of 3 devices failed"),
    ),
    (
        "timeouts are failures",
        "IN_PROGRESS",
        0,
        counts(SUCCESS=1, TIMEOUT=2),
        None,
        TaskChange("FAILED", "2 of 3 devices failed"),
    ),
    (
        "a cancelled device does not fail the task",
        "IN_PROGRESS",
        0,
        counts(SUCCESS=2, CANCELLED=1),
        None,
        TaskChange("COMPLETED"),
    ),
    (
        "every device cancelled",
        "IN_PROGRESS",
        0,
        counts(CANCELLED=2),
        None,
        TaskChange("CANCELLED", "every device's command was cancelled"),
    ),
    (
        "abort: over the share after the minimum",
        "IN_PROGRESS",
        0,
        counts(PENDING=90, SUCCESS=7, FAILED=3),
        AbortRule(20, 10),
        TaskChange(
            "FAILED",
            "aborted: 3 of 10 finished devices failed (30.0 % > 20 %)",
            stop_remaining=True,
        ),
    ),
    (
        "abort: not before the minimum",
        "IN_PROGRESS",
        0,
        counts(PENDING=91, SUCCESS=6, FAILED=3),
        AbortRule(20, 10),
        None,
    ),
    (
        "abort: at the share is not over it",
        "IN_PROGRESS",
        0,
        counts(PENDING=90, SUCCESS=8, FAILED=2),
        AbortRule(20, 10),
        None,
    ),
    (
        "abort: 0 % means the first failure",
        "IN_PROGRESS",
        0,
        counts(PENDING=5, FAILED=1),
        AbortRule(0, 1),
        TaskChange(
            "FAILED", "aborted: 1 of 1 finished devices failed (100.0 % > 0 %)", stop_remaining=True
        ),
    ),
    ("finished stays", "COMPLETED", 0, counts(SUCCESS=1), None, None),
    ("cancelled stays", "CANCELLED", 0, counts(CANCELLED=1), None, None),
    ("failed stays", "FAILED", 0, counts(FAILED=1), AbortRule(0, 1), None),
]


@pytest.mark.parametrize(
    ("status", "scheduled", "counts_", "rule", "expected"),
    [case[1:] for case in ADVANCE],
    ids=[case[0] for case in ADVANCE],
)
def test_advance(
    status: str, scheduled: int, counts_: Counts, rule: AbortRule | None, expected: object
) -> None:
    assert tasks.advance(status, T0 + timedelta(seconds=scheduled), counts_, T0, rule) == expected


def test_counts() -> None:
    c = counts(PENDING=1, SENT=2, ACKNOWLEDGED=1, SUCCESS=3, FAILED=1, TIMEOUT=1, CANCELLED=1)
    assert (c.total, c.failed, c.finished, c.unfinished) == (10, 2, 5, 4)
    assert list(c.as_dict()) == list(tasks.DEVICE_STATUSES)


@pytest.mark.parametrize(
    ("ledger_status", "device_status"),
    [
        ("PENDING", "PENDING"),
        ("SENT", "SENT"),
        ("ACKNOWLEDGED", "ACKNOWLEDGED"),
        ("COMPLETED", "SUCCESS"),
        ("FAILED", "FAILED"),
        ("TIMEOUT", "TIMEOUT"),
        ("CANCELLED", "CANCELLED"),
    ],
)
def test_device_status_follows_the_ledger(ledger_status: str, device_status: str) -> None:
    assert tasks.device_status(ledger_status) == device_status


PACING = [
    # (name, paced_until (s from now) or None, rate, batch_max, expected devices, paid to (s))
    ("fresh task gets one burst", None, 100.0, 500, 50, 0.0),
    ("burst is capped by the batch", None, 10_000.0, 500, 500, -0.45),
    ("nothing left to spend", 0.0, 100.0, 500, 0, 0.0),
    ("ahead of time", 0.2, 100.0, 500, 0, 0.2),
    ("a quarter second later", -0.25, 100.0, 500, 25, 0.0),
    ("long idle keeps only the burst", -3600.0, 100.0, 500, 50, 0.0),
    ("slow rate still sends one", None, 0.5, 500, 1, 0.0),
    ("slow rate waits for the next", -1.0, 0.5, 500, 0, -1.0),
]


@pytest.mark.parametrize(
    ("paced", "rate", "batch", "devices", "paid_to"),
    [case[1:] for case in PACING],
    ids=[case[0] for case in PACING],
)
def test_dispatch_allowance(
    paced: float | None, rate: float, batch: int, devices: int, paid_to: float
) -> None:
    paced_until = None if paced is None else T0 + timedelta(seconds=paced)
    allowance = tasks.dispatch_allowance(T0, paced_until, rate, burst_seconds=0.5, batch_max=batch)
    assert allowance.devices == devices
    assert allowance.paid(allowance.devices) == T0 + timedelta(seconds=paid_to)


def test_pacing_over_time_holds_the_rate() -> None:
    """Ticks every 0.5 s for 10 s at 37 devices/s: 370 devices, give or take one tick's worth."""
    paced_until = None
    sent = 0
    for tick in range(21):
        now = T0 + timedelta(seconds=tick * 0.5)
        allowance = tasks.dispatch_allowance(
            now, paced_until, 37.0, burst_seconds=0.5, batch_max=500
        )
        sent += allowance.devices
        paced_until = allowance.paid(allowance.devices)
    assert 370 <= sent <= 370 + 19
