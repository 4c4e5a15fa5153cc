"""What the dashboard's pages read. Every query is scoped to one account.

The pages read the store directly (one query per panel rather than many API calls); the browser
code then uses the same `/api/v1` JSON API as any client for what it fetches and changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from fleet.core.liveness import STATES as LIVENESS_STATES
from fleet.store.alarms import OPEN_STATES
from fleet.store.tables import (
    PRIORITIES,
    account_namespaces,
    alarm_events,
    device_status,
    devices,
    events,
)
from fleet.store.tables_liveness import device_details, liveness

_is_open = sa.and_(
    alarm_events.c.resolved_at.is_(None), alarm_events.c.event_state.in_(OPEN_STATES)
)
_online = sa.func.coalesce(device_status.c.is_online, sa.false())
_with_status = devices.outerjoin(device_status, device_status.c.device_id == devices.c.id)


@dataclass(frozen=True, slots=True)
class Counts:
    devices: int = 0
    online: int = 0
    inactive: int = 0
    by_state: dict[str, int] = field(default_factory=dict)  # the device's own (NORMAL, ALARM)
    by_liveness: dict[str, int] = field(default_factory=dict)  # New, Reporting, Offline, Stopped
    by_kind: dict[str, int] = field(default_factory=dict)
    alarms_by_priority: dict[str, int] = field(default_factory=dict)
    alarms_unacknowledged: int = 0

    @property
    def offline(self) -> int:
        return self.devices - self.online

    @property
    def active_alarms(self) -> int:
        return sum(self.alarms_by_priority.values())


async def counts(conn: AsyncConnection, account_id: int) -> Counts:
    mine = devices.c.account_id == account_id
    total, online, inactive = (
        await conn.execute(
            sa.select(
                sa.func.count(),
                sa.func.coalesce(sa.func.sum(sa.case((_online, 1), else_=0)), 0),
                sa.func.coalesce(sa.func.sum(sa.case((devices.c.active, 0), else_=1)), 0),
            )
            .select_from(_with_status)
            .where(mine)
        )
    ).one()
    state = sa.func.coalesce(device_status.c.device_state, "UNKNOWN")
    by_state = {
        str(row[0]): int(row[1])
        for row in await conn.execute(
            sa.select(state, sa.func.count())
            .select_from(_with_status)
            .where(mine)
            .group_by(state)
            .order_by(state)
        )
    }
    live_state = sa.func.coalesce(liveness.c.state, "New")
    found = {
        str(row[0]): int(row[1])
        for row in await conn.execute(
            sa.select(live_state, sa.func.count())
            .select_from(devices.outerjoin(liveness, liveness.c.device_id == devices.c.id))
            .where(mine)
            .group_by(live_state)
        )
    }
    by_liveness = {name: found.get(name, 0) for name in LIVENESS_STATES}
    by_kind = {
        str(row[0]): int(row[1])
        for row in await conn.execute(
            sa.select(devices.c.kind, sa.func.count())
            .where(mine)
            .group_by(devices.c.kind)
            .order_by(devices.c.kind)
        )
    }
    alarms = sa.select(
        alarm_events.c.priority,
        sa.func.count(),
        sa.func.coalesce(
            sa.func.sum(sa.case((alarm_events.c.acknowledged_at.is_(None), 1), else_=0)), 0
        ),
    ).join(devices, devices.c.id == alarm_events.c.device_id)
    alarm_rows = await conn.execute(alarms.where(mine, _is_open).group_by(alarm_events.c.priority))
    by_priority: dict[str, int] = {}
    unacknowledged = 0
    for priority, count, unacked in alarm_rows:
        by_priority[str(priority)] = int(count)
        unacknowledged += int(unacked)
    ordered = {p: by_priority[p] for p in reversed(PRIORITIES) if p in by_priority}
    return Counts(
        devices=int(total),
        online=int(online),
        inactive=int(inactive),
        by_state=by_state,
        by_liveness=by_liveness,
        by_kind=by_kind,
        alarms_by_priority=ordered,
        alarms_unacknowledged=unacknowledged,
    )


async def map_points(conn: AsyncConnection, account_id: int) -> list[dict[str, Any]]:
    """Devices with coordinates, with whether each is online and has an open alarm."""
    alarmed = (
        sa.select(alarm_events.c.device_id).where(_is_open).group_by(alarm_events.c.device_id)
    ).subquery()
    rows = await conn.execute(
        sa.select(
            devices.c.id,
            devices.c.hostname,
            devices.c.uid,
            devices.c.latitude,
            devices.c.longitude,
            _online.label("online"),
            alarmed.c.device_id.is_not(None).label("alarm"),
        )
        .select_from(_with_status.outerjoin(alarmed, alarmed.c.device_id == devices.c.id))
        .where(
            devices.c.account_id == account_id,
            devices.c.latitude.is_not(None),
            devices.c.longitude.is_not(None),
        )
        .order_by(devices.c.id)
    )
    return [dict(row._mapping) for row in rows]


async def latest_events(
    conn: AsyncConnection, account_id: int, *, device_id: int | None = None, limit: int = 20
) -> list[dict[str, Any]]:
    """The account's newest events (with the device's hostname), newest first."""
    query = (
        sa.select(
            events.c.id,
            events.c.type,
            events.c.device_id,
            events.c.data,
            events.c.created_at,
            devices.c.hostname,
        )
        .select_from(
            events.outerjoin(
                devices,
                sa.and_(devices.c.id == events.c.device_id, devices.c.account_id == account_id),
            )
        )
        .where(events.c.account_id == account_id)
    )
    if device_id is not None:
        query = query.where(events.c.device_id == device_id)
    rows = await conn.execute(query.order_by(events.c.id.desc()).limit(limit))
    return [dict(row._mapping) for row in rows]


async def last_event_id(conn: AsyncConnection, account_id: int) -> int:
    """The cursor a page was rendered at: the live stream resumes right after it."""
    value = await conn.scalar(
        sa.select(sa.func.max(events.c.id)).where(events.c.account_id == account_id)
    )
    return int(value or 0)


async def topic_bases(conn: AsyncConnection, account_id: int) -> list[str]:
    rows = await conn.execute(
        sa.select(account_namespaces.c.namespace)
        .where(
            account_namespaces.c.account_id == account_id,
            account_namespaces.c.kind == "alarm_panel",
        )
        .order_by(account_namespaces.c.namespace)
    )
    return [str(row[0]) for row in rows]


MAX_CONNECTION_DEVICES = 2000  # the page lists this many devices at most; past it, filter


async def connection_groups(
    conn: AsyncConnection, account_id: int
) -> tuple[list[dict[str, Any]], int, bool]:
    """Every connection with its devices and their states (the seed's CONNECTION_DEVICE_STATUS
    as one page), the number of devices that report none, and whether the list was cut."""
    friendly = device_details.c.details["friendly_name"].as_string()
    rows = await conn.execute(
        sa.select(
            liveness.c.connection,
            liveness.c.state,
            liveness.c.since,
            liveness.c.last_report_at,
            liveness.c.held,
            devices.c.id,
            devices.c.kind,
            devices.c.uid,
            devices.c.hostname,
            friendly.label("friendly_name"),
        )
        .select_from(
            liveness.join(devices, devices.c.id == liveness.c.device_id).outerjoin(
                device_details, device_details.c.device_id == devices.c.id
            )
        )
        .where(
            devices.c.account_id == account_id,
            liveness.c.account_id == account_id,
            liveness.c.connection.is_not(None),
        )
        .order_by(liveness.c.connection, devices.c.hostname, devices.c.id)
        .limit(MAX_CONNECTION_DEVICES + 1)
    )
    found = [dict(row._mapping) for row in rows]
    cut = len(found) > MAX_CONNECTION_DEVICES
    groups: dict[str, dict[str, Any]] = {}
    for row in found[:MAX_CONNECTION_DEVICES]:
        name = row["connection"]
        group = groups.setdefault(
            name,
            {"connection": name, "devices": [], "states": dict.fromkeys(LIVENESS_STATES, 0)},
        )
        group["devices"].append(row)
        group["states"][row["state"]] = group["states"].get(row["state"], 0) + 1
    without = await conn.scalar(
        sa.select(sa.func.count())
        .select_from(devices.outerjoin(liveness, liveness.c.device_id == devices.c.id))
        .where(devices.c.account_id == account_id, liveness.c.connection.is_(None))
    )
    return list(groups.values()), int(without or 0), cut
