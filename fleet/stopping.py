"""Stopping background tasks: cancel them, then wait until they have ended.

The usual `task.cancel(); with suppress(CancelledError): await task` has a fault: if the caller
is itself cancelled while it waits (a timeout around stop(), Ctrl+C), the suppress swallows the
caller's own cancellation and it carries on as if nothing had happened. `asyncio.wait` never
raises the task's CancelledError and never absorbs the caller's.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger(__name__)


async def cancel_and_wait(*tasks: asyncio.Task[Any], patience: float = 10.0) -> None:
    """Cancel `tasks` and return once every one has ended, or after `patience` seconds (a task whose
    clean-up waits on something that never answers must not hold the whole stop); a task that
    failed, or that has not ended by then, is logged."""
    for task in tasks:
        task.cancel()
    if not tasks:
        return
    _, running = await asyncio.wait(tasks, timeout=patience)
    for task in running:
        log.error("task %s has not stopped after %.0f s; leaving it", task.get_name(), patience)
    for task in tasks:
        if task.done() and not task.cancelled() and (error := task.exception()) is not None:
            log.error("task %s failed while stopping", task.get_name(), exc_info=error)
