"""Seed 001's "command success rate" statistic, per command type, for one account."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from fleet.store.tables import command_log, devices


async def by_command_type(
    conn: AsyncConnection, account_id: int, since: datetime, until: datetime | None
) -> list[dict[str, Any]]:
    """Commands created in [since, until) per type: counts per outcome and the success rate
    (completed / all, in percent, as the seed's query)."""
    query = (
        sa.select(command_log.c.command_type, command_log.c.status, sa.func.count())
        .join(devices, devices.c.id == command_log.c.device_id)
        .where(devices.c.account_id == account_id, command_log.c.created_at >= since)
        .group_by(command_log.c.command_type, command_log.c.status)
    )
    if until is not None:
        query = query.where(command_log.c.created_at < until)
    per_type: dict[str, dict[str, int]] = {}
    for command_type, status, count in await conn.execute(query):
        per_type.setdefault(str(command_type), {})[str(status)] = int(count)
    items = []
    for command_type in sorted(per_type):
        counts = per_type[command_type]
        total = sum(counts.values())
        successful = counts.get("COMPLETED", 0)
        items.append(
            {
                "command_type": command_type,
                "total_commands": total,
                "successful": successful,
                "failed": counts.get("FAILED", 0),
                "timeout": counts.get("TIMEOUT", 0),
                "cancelled": counts.get("CANCELLED", 0),
                "in_flight": total
                - successful
                - sum(counts.get(s, 0) for s in ("FAILED", "TIMEOUT", "CANCELLED")),
                "success_rate": round(100.0 * successful / total, 2) if total else 0.0,
            }
        )
    return items
