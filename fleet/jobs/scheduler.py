"""Fleet's background work in `fleet serve`: command timeouts and retries, and retention.

Each job is idempotent and coordinates through the database (row locks on PostgreSQL), so several
Fleet processes may run it side by side.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass
class Job:
    name: str
    every_seconds: float
    run: Callable[[], Awaitable[object]]
    last_run: float = float("-inf")


async def run_jobs(jobs: list[Job], stop: asyncio.Event, tick: float = 0.5) -> None:
    while not stop.is_set():
        for job in jobs:
            if stop.is_set():
                return  # stopping: not one more job
            if time.monotonic() - job.last_run < job.every_seconds:
                continue
            job.last_run = time.monotonic()
            try:
                await job.run()
            except Exception:
                # A job that fails (database restarting) is tried again at its next turn.
                log.exception("background job %s failed", job.name)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(tick):
                await stop.wait()
