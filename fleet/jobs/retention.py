"""Seed 001's periodic clean-up: history, alarms and finished commands past their keep time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from fleet.store.tables import alarm_events, command_log, heartbeats


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    heartbeats_days: float = 90
    alarm_events_days: float = 180
    finished_commands_days: float = 30


async def apply_retention(engine: AsyncEngine, policy: RetentionPolicy, now: datetime) -> int:
    """Delete what is past its keep time; returns the number of rows removed."""
    removed = 0
    async with engine.begin() as conn:
        for statement in (
            sa.delete(heartbeats).where(
                heartbeats.c.time < now - timedelta(days=policy.heartbeats_days)
            ),
            # Open alarms stay however old they are: they still need an operator.
            sa.delete(alarm_events).where(
                alarm_events.c.timestamp < now - timedelta(days=policy.alarm_events_days),
                alarm_events.c.resolved_at.is_not(None),
            ),
            sa.delete(command_log).where(
                command_log.c.created_at < now - timedelta(days=policy.finished_commands_days),
                command_log.c.status.in_(("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT")),
            ),
        ):
            result = await conn.execute(statement)
            removed += result.rowcount or 0
    return removed
