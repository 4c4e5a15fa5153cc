"""Alarm events of the calling account: the operators' list, acknowledge and resolve."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy.ext.asyncio import AsyncConnection

from fleet.api.deps import AlarmId, ConnDep, ContextDep, DeviceFilter, PrincipalDep, TimeRangeDep
from fleet.api.errors import NOT_FOUND, NotFound
from fleet.api.pagination import (
    BAD_CURSOR,
    DEFAULT_LIMIT,
    CursorQuery,
    LimitQuery,
    Page,
    cut_page,
    decode_cursor,
    encode_cursor,
)
from fleet.api.schemas import AlarmOut, AlarmType, Priority
from fleet.core.events import Event
from fleet.store import alarms as store
from fleet.store import events as event_log
from fleet.store.accounts import Principal

router = APIRouter(prefix="/alarms", tags=["alarms"])


@router.get("", responses=BAD_CURSOR)
async def list_alarms(
    principal: PrincipalDep,
    conn: ConnDep,
    period: TimeRangeDep,
    active: Annotated[
        bool | None,
        Query(description="true: unresolved and ACTIVE, STARTING or TEST; false: the others."),
    ] = None,
    device_id: DeviceFilter = None,
    alarm_type: AlarmType | None = None,
    priority: Priority | None = None,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> Page[AlarmOut]:
    """Active alarms first, by priority (CRITICAL first), then newest; `since`/`until` bound the
    event timestamp."""
    after = decode_cursor(cursor, "alarms", int, int, datetime, int) if cursor else None
    rows = await store.list_alarms(
        conn,
        principal.account_id,
        active=active,
        device_id=device_id,
        alarm_type=alarm_type,
        priority=priority,
        since=period.since,
        until=period.until,
        after=after,
        limit=limit + 1,
    )
    rows, next_cursor = cut_page(
        rows, limit, lambda row: encode_cursor("alarms", *store.sort_key_of(row))
    )
    return Page[AlarmOut].model_validate({"items": rows, "next_cursor": next_cursor})


async def _alarm(conn: ConnDep, account_id: int, alarm_id: int) -> AlarmOut:
    row = await store.get_alarm(conn, account_id, alarm_id)
    if row is None:
        raise NotFound("alarm", alarm_id)
    return AlarmOut.model_validate(row)


@router.get("/{alarm_id}", responses=NOT_FOUND)
async def get_alarm(alarm_id: AlarmId, principal: PrincipalDep, conn: ConnDep) -> AlarmOut:
    return await _alarm(conn, principal.account_id, alarm_id)


@router.post("/{alarm_id}/acknowledge", responses=NOT_FOUND)
async def acknowledge_alarm(
    alarm_id: AlarmId, principal: PrincipalDep, conn: ConnDep, ctx: ContextDep
) -> AlarmOut:
    """Mark the alarm as seen by an operator; the first acknowledgement time is kept."""
    return await _operator_action(
        conn, principal, ctx, alarm_id, store.acknowledge, "acknowledged_at", "alarm.acknowledged"
    )


@router.post("/{alarm_id}/resolve", responses=NOT_FOUND)
async def resolve_alarm(
    alarm_id: AlarmId, principal: PrincipalDep, conn: ConnDep, ctx: ContextDep
) -> AlarmOut:
    """Close the alarm: sets resolved_at and, if it was still open, event_state INACTIVE."""
    return await _operator_action(
        conn, principal, ctx, alarm_id, store.resolve, "resolved_at", "alarm.resolved"
    )


async def _operator_action(
    conn: ConnDep,
    principal: Principal,
    ctx: ContextDep,
    alarm_id: int,
    action: Callable[[AsyncConnection, int, int, datetime], Awaitable[object]],
    stamp: str,
    event_type: str,
) -> AlarmOut:
    """Apply an operator's action; it is an event only the first time it stamps the alarm."""
    before = await _alarm(conn, principal.account_id, alarm_id)
    await action(conn, principal.account_id, alarm_id, datetime.now(UTC))
    alarm = await _alarm(conn, principal.account_id, alarm_id)
    changed = getattr(before, stamp) is None and getattr(alarm, stamp) is not None
    await _operator_event(conn, principal, alarm, event_type, changed)
    await conn.commit()
    _notify(ctx, changed)
    return alarm


# An operator's acknowledge or resolve is on the event stream too, so every open dashboard (and
# any other client) follows it live; written in the change's transaction, like every event.
async def _operator_event(
    conn: ConnDep, principal: Principal, alarm: AlarmOut, kind: str, changed: bool
) -> None:
    if changed:
        data = {
            "id": alarm.id,
            "alarm_type": alarm.alarm_type,
            "priority": alarm.priority,
            "by": principal.account_name,
        }
        await event_log.append(conn, [Event(principal.account_id, kind, alarm.device_id, data)])


def _notify(ctx: ContextDep, changed: bool) -> None:
    if changed and ctx.event_hub is not None:
        ctx.event_hub.notify()
