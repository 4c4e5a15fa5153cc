"""Exponential backoff with jitter, shared by command retries and device-id sync."""

from __future__ import annotations

import random

# First retry after 5 s, doubling, never more than 10 minutes apart: quick enough to fix a device
# that missed one message, slow enough not to flood one that is offline for hours.
BASE_DELAY_SECONDS = 5.0
MAX_DELAY_SECONDS = 600.0


def backoff_delay(
    attempt: int,
    *,
    base: float = BASE_DELAY_SECONDS,
    cap: float = MAX_DELAY_SECONDS,
    jitter: float = 0.1,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before attempt number `attempt + 1` (attempt counts from 1).

    Jitter spreads retries of many devices that failed together so they do not return together.
    """
    delay: float = min(cap, base * 2.0 ** max(0, attempt - 1))
    if jitter:
        delay *= 1.0 + (rng or random).uniform(-jitter, jitter)
    return delay
