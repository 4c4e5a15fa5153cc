"""alarm_events for the API: the operators' list, acknowledging and resolving.

Alarms reach their account through their device; every query here filters by it.
Repositories never commit: the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from fleet.store.tables import PRIORITIES, alarm_events, devices

# An alarm needs attention while it is unresolved and in one of these states.
OPEN_STATES = ("ACTIVE", "STARTING", "TEST")

_is_open = sa.and_(
    alarm_events.c.resolved_at.is_(None), alarm_events.c.event_state.in_(OPEN_STATES)
)
_open_rank = sa.case((_is_open, 1), else_=0)
# Spelled out rather than relying on enum order, since SQLite stores the enum as text; each
# WHEN compares with the column so that PostgreSQL binds the names as its enum type.
_priority_rank = sa.case(
    *((alarm_events.c.priority == name, rank) for rank, name in enumerate(PRIORITIES)), else_=0
)
# The list order, every key descending: open first, then higher priority, then newest.
SORT_KEY: tuple[sa.ColumnElement[Any], ...] = (
    _open_rank,
    _priority_rank,
    alarm_events.c.timestamp,
    alarm_events.c.id,
)
AlarmKey = tuple[int, int, datetime, int]


def _after(key: Sequence[sa.ColumnElement[Any]], values: Sequence[Any]) -> sa.ColumnElement[bool]:
    """Rows strictly after `values` in a descending order on `key` (row values expanded, since
    SQLite and PostgreSQL disagree on comparing tuples that mix expressions and parameters)."""
    branches = []
    for i, column in enumerate(key):
        equal = [key[j] == values[j] for j in range(i)]
        branches.append(sa.and_(*equal, column < values[i]))
    return sa.or_(*branches)


def _select() -> sa.Select[Any]:
    return sa.select(
        alarm_events,
        devices.c.hostname,
        _open_rank.label("open_rank"),
        _priority_rank.label("priority_rank"),
    ).join(devices, devices.c.id == alarm_events.c.device_id)


def _to_dict(row: sa.Row[Any]) -> dict[str, Any]:
    values = dict(row._mapping)
    values["active"] = bool(values["open_rank"])
    return values


def sort_key_of(alarm: dict[str, Any]) -> AlarmKey:
    return (alarm["open_rank"], alarm["priority_rank"], alarm["timestamp"], alarm["id"])


async def list_alarms(
    conn: AsyncConnection,
    account_id: int,
    *,
    active: bool | None = None,
    device_id: int | None = None,
    alarm_type: str | None = None,
    priority: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    after: AlarmKey | None = None,
    limit: int,
) -> list[dict[str, Any]]:
    query = _select().where(devices.c.account_id == account_id)
    if active is not None:
        query = query.where(_is_open if active else sa.not_(_is_open))
    if device_id is not None:
        query = query.where(alarm_events.c.device_id == device_id)
    if alarm_type is not None:
        query = query.where(alarm_events.c.alarm_type == alarm_type)
    if priority is not None:
        query = query.where(alarm_events.c.priority == priority)
    if since is not None:
        query = query.where(alarm_events.c.timestamp >= since)
    if until is not None:
        query = query.where(alarm_events.c.timestamp < until)
    if after is not None:
        query = query.where(_after(SORT_KEY, after))
    query = query.order_by(*(column.desc() for column in SORT_KEY)).limit(limit)
    return [_to_dict(row) for row in await conn.execute(query)]


async def get_alarm(conn: AsyncConnection, account_id: int, alarm_id: int) -> dict[str, Any] | None:
    row = (
        await conn.execute(
            _select().where(alarm_events.c.id == alarm_id, devices.c.account_id == account_id)
        )
    ).first()
    return None if row is None else _to_dict(row)


def _owned(account_id: int, alarm_id: int) -> sa.ColumnElement[bool]:
    # UPDATE cannot join portably; a subquery on the account's devices scopes it instead.
    return sa.and_(
        alarm_events.c.id == alarm_id,
        alarm_events.c.device_id.in_(
            sa.select(devices.c.id).where(devices.c.account_id == account_id)
        ),
    )


async def acknowledge(conn: AsyncConnection, account_id: int, alarm_id: int, now: datetime) -> None:
    """Record the first acknowledgement; acknowledging again keeps the original time."""
    await conn.execute(
        sa.update(alarm_events)
        .where(_owned(account_id, alarm_id), alarm_events.c.acknowledged_at.is_(None))
        .values(acknowledged_at=now)
    )


async def resolve(conn: AsyncConnection, account_id: int, alarm_id: int, now: datetime) -> None:
    """Close an unresolved alarm (it stops being active); resolving again changes nothing."""
    await conn.execute(
        sa.update(alarm_events)
        .where(_owned(account_id, alarm_id), alarm_events.c.resolved_at.is_(None))
        .values(resolved_at=now, event_state="INACTIVE")
    )
