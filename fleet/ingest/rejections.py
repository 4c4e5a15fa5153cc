"""Counting and logging what the ingest refuses, with its reason, without stopping for it."""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field

from prometheus_client import Counter as PromCounter

log = logging.getLogger("fleet.ingest")

REJECTED = PromCounter(
    "fleet_ingest_rejected", "Messages the ingest refused, by reason", ["integration", "reason"]
)
ACCEPTED = PromCounter(
    "fleet_ingest_accepted", "Messages the ingest applied, by message kind", ["integration", "kind"]
)


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: str  # a short stable label: bad_hmac, replay, unknown_device, …
    topic: str
    detail: str = ""


class LogBudget:
    """At most LOG_PER_WINDOW lines per reason per window: a flood of bad messages is counted
    in full but cannot flood the log (or the disk under it)."""

    LOG_PER_WINDOW = 20
    WINDOW_SECONDS = 60.0

    def __init__(self) -> None:
        self._window_start = time.monotonic()
        self._logged: Counter[str] = Counter()
        self._suppressed: Counter[str] = Counter()

    def allow(self, reason: str) -> bool:
        now = time.monotonic()
        if now - self._window_start >= self.WINDOW_SECONDS:
            for key, count in self._suppressed.items():
                log.warning("%d more rejections for %s were not logged one by one", count, key)
            self._window_start, self._logged, self._suppressed = now, Counter(), Counter()
        if self._logged[reason] < self.LOG_PER_WINDOW:
            self._logged[reason] += 1
            return True
        self._suppressed[reason] += 1
        return False


@dataclass
class IngestStats:
    """Per-pipeline counts (Prometheus has the process-wide ones): what tests and benches read."""

    accepted: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    batches: int = 0
    _log_budget: LogBudget = field(default_factory=lambda: LogBudget())

    def accept(self, integration: str, kind: str, count: int = 1) -> None:
        self.accepted[kind] += count
        ACCEPTED.labels(integration, kind).inc(count)

    def reject(self, integration: str, rejection: Rejection) -> None:
        self.rejected[rejection.reason] += 1
        REJECTED.labels(integration, rejection.reason).inc()
        if not self._log_budget.allow(rejection.reason):
            return
        # Never log a payload: it may carry secrets (Wi-Fi or MQTT passwords in config reads).
        log.warning(
            "rejected %s message on %r: %s%s",
            integration,
            rejection.topic[:200],
            rejection.reason,
            f" ({rejection.detail[:200]})" if rejection.detail else "",
        )
