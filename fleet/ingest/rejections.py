"""Counting and logging what the ingest refuses, with its reason, without stopping for it."""

from __future__ import annotations

import logging
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


@dataclass
class IngestStats:
    """Per-pipeline counts (Prometheus has the process-wide ones): what tests and benches read."""

    accepted: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    batches: int = 0

    def accept(self, integration: str, kind: str) -> None:
        self.accepted[kind] += 1
        ACCEPTED.labels(integration, kind).inc()

    def reject(self, integration: str, rejection: Rejection) -> None:
        self.rejected[rejection.reason] += 1
        REJECTED.labels(integration, rejection.reason).inc()
        # Never log a payload: it may carry secrets (Wi-Fi or MQTT passwords in config reads).
        log.warning(
            "rejected %s message on %r: %s%s",
            integration,
            rejection.topic[:200],
            rejection.reason,
            f" ({rejection.detail[:200]})" if rejection.detail else "",
        )
