"""Bulk command tasks (seed 002) as pure decisions: a task's status follows its devices, the abort
rule, and the pacing of dispatch. `now` is passed in; no SQL here (see fleet/jobs/dispatcher.py).

Task:   QUEUED ──scheduledAt──> IN_PROGRESS ──every device finished──> COMPLETED | FAILED
                                     └── abort rule ──> FAILED
        QUEUED or IN_PROGRESS ──cancel──> CANCELLED
Device: PENDING ──> SENT ──> ACKNOWLEDGED ──> SUCCESS | FAILED | TIMEOUT ; or CANCELLED
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

TASK_STATUSES: Final = ("QUEUED", "IN_PROGRESS", "COMPLETED", "FAILED", "CANCELLED")
TASK_FINISHED: Final = frozenset({"COMPLETED", "FAILED", "CANCELLED"})
DEVICE_STATUSES: Final = (
    "PENDING",
    "SENT",
    "ACKNOWLEDGED",
    "SUCCESS",
    "FAILED",
    "TIMEOUT",
    "CANCELLED",
)
DEVICE_FINISHED: Final = frozenset({"SUCCESS", "FAILED", "TIMEOUT", "CANCELLED"})
# What "re-run the failed devices" takes by default.
DEVICE_FAILED: Final = frozenset({"FAILED", "TIMEOUT"})

# The ledger's status of a device's command → the device's commandStatus in its task.
_FROM_LEDGER: Final = {
    "PENDING": "PENDING",  # waiting for a retry
    "SENT": "SENT",
    "ACKNOWLEDGED": "ACKNOWLEDGED",
    "COMPLETED": "SUCCESS",
    "FAILED": "FAILED",
    "TIMEOUT": "TIMEOUT",
    "CANCELLED": "CANCELLED",
}


def device_status(ledger_status: str) -> str:
    return _FROM_LEDGER[ledger_status]


@dataclass(frozen=True, slots=True)
class Counts:
    """How many of a task's devices are in each commandStatus."""

    by_status: Mapping[str, int]

    def get(self, status: str) -> int:
        return int(self.by_status.get(status, 0))

    @property
    def total(self) -> int:
        return sum(self.by_status.values())

    @property
    def failed(self) -> int:
        return sum(self.get(s) for s in DEVICE_FAILED)

    @property
    def finished(self) -> int:
        """Finished with a result (success or failure); cancelled devices never ran."""
        return self.get("SUCCESS") + self.failed

    @property
    def unfinished(self) -> int:
        return self.total - sum(self.get(s) for s in DEVICE_FINISHED)

    def as_dict(self) -> dict[str, int]:
        return {status: self.get(status) for status in DEVICE_STATUSES}


@dataclass(frozen=True, slots=True)
class AbortRule:
    """Stop the task when more than `failed_percent` % of the finished devices failed, once at
    least `min_finished` devices have finished (so the first failure of a big task does not
    stop it)."""

    failed_percent: float
    min_finished: int = 1


def abort_reason(rule: AbortRule | None, counts: Counts) -> str | None:
    if rule is None or counts.finished == 0 or counts.finished < rule.min_finished:
        return None
    share = 100.0 * counts.failed / counts.finished
    if share > rule.failed_percent:
        return (
            f"aborted: {counts.failed} of {counts.finished} finished devices failed "
            f"({share:.1f} % > {rule.failed_percent:g} %)"
        )
    return None


@dataclass(frozen=True, slots=True)
class TaskChange:
    status: str
    reason: str | None = None
    # Undispatched devices (and commands waiting for a retry) are cancelled: the task stopped.
    stop_remaining: bool = False


def advance(
    status: str,
    scheduled_at: datetime,
    counts: Counts,
    now: datetime,
    rule: AbortRule | None = None,
) -> TaskChange | None:
    """The next status of a task, or None when it stays."""
    if status == "QUEUED":
        return TaskChange("IN_PROGRESS") if now >= scheduled_at else None
    if status != "IN_PROGRESS":
        return None
    reason = abort_reason(rule, counts)
    if reason is not None:
        return TaskChange("FAILED", reason, stop_remaining=True)
    if counts.unfinished > 0:
        return None
    if counts.total > 0 and counts.get("CANCELLED") == counts.total:
        return TaskChange("CANCELLED", "every device's command was cancelled")
    if counts.failed:
        return TaskChange("FAILED", f"{counts.failed} of {counts.total} devices failed")
    return TaskChange("COMPLETED")


def can_cancel(status: str) -> bool:
    return status not in TASK_FINISHED


@dataclass(frozen=True, slots=True)
class Allowance:
    devices: int  # how many devices may be sent now
    start: datetime  # sends are paid for from here
    rate_per_second: float

    def paid(self, sent: int) -> datetime:
        """The task's new `paced_until` once `sent` devices went out."""
        return self.start + timedelta(seconds=sent / self.rate_per_second)


def dispatch_allowance(
    now: datetime,
    paced_until: datetime | None,
    rate_per_second: float,
    *,
    burst_seconds: float,
    batch_max: int,
    room: int | None = None,
) -> Allowance:
    """A token bucket kept in the task row, so that every Fleet process paces the same task
    together: `paced_until` is the moment up to which sends have been paid for. At most
    `burst_seconds` of unused time is kept (never less than one device's worth), so a task that
    waited does not flood on resume. `room`: how many more commands may be in flight (sent and
    not answered) at once; a slow head-end slows the task instead of piling up answers."""
    if room is not None:
        batch_max = min(batch_max, room)
    start = now - timedelta(seconds=max(burst_seconds, 1.0 / rate_per_second))
    if paced_until is not None and paced_until > start:
        start = paced_until
    if start >= now:
        return Allowance(0, start, rate_per_second)
    budget = math.floor((now - start).total_seconds() * rate_per_second + 1e-9)
    return Allowance(max(0, min(batch_max, budget)), start, rate_per_second)
