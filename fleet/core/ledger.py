"""The command ledger's lifecycle as pure decisions: what a response, a missed deadline or a
cancellation does to a command in a given state. No SQL here; `fleet/services/commands.py`
applies the decisions.

    PENDING ──send──> SENT ──ack──> ACKNOWLEDGED ──success──> COMPLETED
       ^                │  └────────────success / failure──────> COMPLETED / FAILED
       └──retry (backoff)┤ no answer by the deadline, retries left
                         └ no answer, no retries left ─────────> TIMEOUT
    anything not finished ──cancel──> CANCELLED

An ACKNOWLEDGED command is never re-sent: the device (or head-end) has it, and a second copy could
be executed twice; with no final answer by its deadline it becomes TIMEOUT.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import Enum
from typing import Final

from fleet.core.backoff import BASE_DELAY_SECONDS, backoff_delay

STATUSES: Final = (
    "PENDING",
    "SENT",
    "ACKNOWLEDGED",
    "COMPLETED",
    "FAILED",
    "TIMEOUT",
    "CANCELLED",
)
FINISHED: Final = frozenset({"COMPLETED", "FAILED", "TIMEOUT", "CANCELLED"})
# Handed to the transport, waiting for the answer: these have a deadline.
IN_FLIGHT: Final = frozenset({"SENT", "ACKNOWLEDGED"})
# initiated_by is VARCHAR(50) in seed 001.
INITIATED_BY_MAX: Final = 50
# Ignored responses are noted on their command, up to this many characters of notes.
NOTES_MAX: Final = 2000


class Answer(Enum):
    """What a device (or head-end) said about a command."""

    ACK = "ACK"  # delivered / accepted, result still to come
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"


@dataclass(frozen=True, slots=True)
class ResponseDecision:
    """`status` is the new status, or None when the response is ignored for `reason`."""

    status: str | None
    reason: str  # applied | finished | cancelled | duplicate


def on_response(status: str, answer: Answer) -> ResponseDecision:
    """The response rule. A final answer is taken while the command is not finished, also when
    it waits for a retry (a late answer to an earlier attempt: same request id). An answer to a
    finished command is ignored (never applied twice); so is a repeated acknowledgement."""
    if status == "CANCELLED":
        return ResponseDecision(None, "cancelled")
    if status in FINISHED:
        return ResponseDecision(None, "finished")
    if answer is Answer.ACK:
        if status == "ACKNOWLEDGED":
            return ResponseDecision(None, "duplicate")
        return ResponseDecision("ACKNOWLEDGED", "applied")
    return ResponseDecision("COMPLETED" if answer is Answer.SUCCESS else "FAILED", "applied")


@dataclass(frozen=True, slots=True)
class DeadlineDecision:
    status: str  # PENDING (retry) or TIMEOUT
    retry: bool


def on_deadline(status: str, retry_count: int, max_retries: int) -> DeadlineDecision | None:
    """No answer by the deadline: retry a SENT command while retries remain, else TIMEOUT.
    An ACKNOWLEDGED command times out without a retry. Other states have no deadline."""
    if status == "SENT" and retry_count < max_retries:
        return DeadlineDecision("PENDING", True)
    if status in IN_FLIGHT:
        return DeadlineDecision("TIMEOUT", False)
    return None


def can_cancel(status: str) -> bool:
    return status not in FINISHED


RETRY_BASE_SECONDS: Final = BASE_DELAY_SECONDS


def retry_delay(
    retry: int, rng: random.Random | None = None, base: float = RETRY_BASE_SECONDS
) -> float:
    """Seconds before retry number `retry` (from 1): exponential from `base` (5 s), with ±10 %
    jitter so that commands that failed together (a head-end outage) do not all come back
    together."""
    return backoff_delay(retry, base=base, rng=rng)


def initiated_by(account_name: str, actor: str | None) -> str:
    """'<account>:<actor>', cut to the column: the account says who acted even when actor
    names repeat across accounts."""
    return f"{account_name}:{actor or 'api'}"[:INITIATED_BY_MAX]
