"""Alarm events of the calling account: the operators' list, acknowledge and resolve."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query

from fleet.api.deps import AlarmId, ConnDep, DeviceFilter, PrincipalDep, TimeRangeDep
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
from fleet.store import alarms as store

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
async def acknowledge_alarm(alarm_id: AlarmId, principal: PrincipalDep, conn: ConnDep) -> AlarmOut:
    """Mark the alarm as seen by an operator; the first acknowledgement time is kept."""
    await _alarm(conn, principal.account_id, alarm_id)
    await store.acknowledge(conn, principal.account_id, alarm_id, datetime.now(UTC))
    alarm = await _alarm(conn, principal.account_id, alarm_id)
    await conn.commit()
    return alarm


@router.post("/{alarm_id}/resolve", responses=NOT_FOUND)
async def resolve_alarm(alarm_id: AlarmId, principal: PrincipalDep, conn: ConnDep) -> AlarmOut:
    """Close the alarm: sets resolved_at and, if it was still open, event_state INACTIVE."""
    await _alarm(conn, principal.account_id, alarm_id)
    await store.resolve(conn, principal.account_id, alarm_id, datetime.now(UTC))
    alarm = await _alarm(conn, principal.account_id, alarm_id)
    await conn.commit()
    return alarm
