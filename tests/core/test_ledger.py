"""The ledger's lifecycle rules, table-driven: (status, event) → decision."""

import random

import pytest

from fleet.core import ledger
from fleet.core.ledger import Answer, DeadlineDecision, ResponseDecision

ACK, OK, KO = Answer.ACK, Answer.SUCCESS, Answer.FAILURE

RESPONSES = [
    # (status, answer, expected decision)
    ("PENDING", ACK, ResponseDecision("ACKNOWLEDGED", "applied")),  # answer to an earlier attempt
    ("PENDING", OK, ResponseDecision("COMPLETED", "applied")),
    ("PENDING", KO, ResponseDecision("FAILED", "applied")),
    ("SENT", ACK, ResponseDecision("ACKNOWLEDGED", "applied")),
    ("SENT", OK, ResponseDecision("COMPLETED", "applied")),
    ("SENT", KO, ResponseDecision("FAILED", "applied")),
    ("ACKNOWLEDGED", ACK, ResponseDecision(None, "duplicate")),
    ("ACKNOWLEDGED", OK, ResponseDecision("COMPLETED", "applied")),
    ("ACKNOWLEDGED", KO, ResponseDecision("FAILED", "applied")),
    ("COMPLETED", ACK, ResponseDecision(None, "finished")),
    ("COMPLETED", OK, ResponseDecision(None, "finished")),  # never applied twice
    ("COMPLETED", KO, ResponseDecision(None, "finished")),
    ("FAILED", OK, ResponseDecision(None, "finished")),
    ("TIMEOUT", OK, ResponseDecision(None, "finished")),
    ("TIMEOUT", ACK, ResponseDecision(None, "finished")),
    ("CANCELLED", OK, ResponseDecision(None, "cancelled")),
    ("CANCELLED", KO, ResponseDecision(None, "cancelled")),
    ("CANCELLED", ACK, ResponseDecision(None, "cancelled")),
]


@pytest.mark.parametrize(("status", "answer", "expected"), RESPONSES)
def test_response_rule(status: str, answer: Answer, expected: ResponseDecision) -> None:
    assert ledger.on_response(status, answer) == expected


def test_every_status_and_answer_is_covered() -> None:
    for status in ledger.STATUSES:
        for answer in Answer:
            decision = ledger.on_response(status, answer)
            assert (decision.status is None) == (
                status in ledger.FINISHED or (status, answer) == ("ACKNOWLEDGED", ACK)
            )


DEADLINES = [
    # (status, retry_count, max_retries, expected)
    ("SENT", 0, 2, DeadlineDecision("PENDING", True)),
    ("SENT", 1, 2, DeadlineDecision("PENDING", True)),
    ("SENT", 2, 2, DeadlineDecision("TIMEOUT", False)),
    ("SENT", 0, 0, DeadlineDecision("TIMEOUT", False)),
    ("SENT", 5, 2, DeadlineDecision("TIMEOUT", False)),  # broker refusals counted past the max
    # The device has it: a second copy could run twice, so it times out without a retry.
    ("ACKNOWLEDGED", 0, 3, DeadlineDecision("TIMEOUT", False)),
    ("PENDING", 0, 3, None),
    ("COMPLETED", 0, 3, None),
    ("CANCELLED", 0, 3, None),
    ("TIMEOUT", 0, 3, None),
]


@pytest.mark.parametrize(("status", "retries", "max_retries", "expected"), DEADLINES)
def test_deadline_rule(
    status: str, retries: int, max_retries: int, expected: DeadlineDecision | None
) -> None:
    assert ledger.on_deadline(status, retries, max_retries) == expected


@pytest.mark.parametrize(
    ("status", "cancellable"),
    [(s, s in {"PENDING", "SENT", "ACKNOWLEDGED"}) for s in ledger.STATUSES],
)
def test_cancel_rule(status: str, cancellable: bool) -> None:
    assert ledger.can_cancel(status) is cancellable


def test_retry_delay_grows_with_jitter() -> None:
    rng = random.Random(7)
    for retry, base in ((1, 5.0), (2, 10.0), (3, 20.0), (12, 600.0)):
        delays = {ledger.retry_delay(retry, rng) for _ in range(50)}
        assert all(base * 0.9 <= d <= base * 1.1 for d in delays)
        assert len(delays) > 40  # spread, not one value


@pytest.mark.parametrize(
    ("account", "actor", "expected"),
    [
        ("acme", "alice", "acme:alice"),
        ("acme", None, "acme:api"),
        ("a" * 40, "b" * 50, "a" * 40 + ":" + "b" * 9),  # initiated_by is VARCHAR(50)
    ],
)
def test_initiated_by(account: str, actor: str | None, expected: str) -> None:
    assert ledger.initiated_by(account, actor) == expected
