"""Reads and writes of the alarm-panel ingest. Repositories never commit."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from fleet.core.cdc import SNAPSHOT_FIELDS, Snapshot, StoredRow
from fleet.integrations.alarm_panel.state import PanelState
from fleet.store import bulk
from fleet.store.tables import alarm_events, device_status, devices, heartbeats

KIND = "alarm_panel"


def _snapshot(row: Any, prefix: str = "") -> Snapshot:
    return Snapshot(**{f: getattr(row, prefix + f) for f in SNAPSHOT_FIELDS})


async def load_states(
    conn: AsyncConnection, where: sa.ColumnElement[bool]
) -> dict[tuple[int, str], PanelState]:
    """Panel states for the devices matching `where`, with their last stored history row."""
    rows = (
        await conn.execute(
            sa.select(devices, device_status)
            .join(device_status, device_status.c.device_id == devices.c.id)
            .where(devices.c.kind == KIND, where)
        )
    ).all()
    if not rows:
        return {}
    ids = [row.id for row in rows]
    last_ids = (
        sa.select(sa.func.max(heartbeats.c.id))
        .where(heartbeats.c.device_id.in_(ids))
        .group_by(heartbeats.c.device_id)
    )
    last_rows = {
        row.device_id: StoredRow(row.time, _snapshot(row))
        for row in await conn.execute(sa.select(heartbeats).where(heartbeats.c.id.in_(last_ids)))
    }
    return {
        (row.account_id, row.uid): PanelState(
            device_id=row.id,
            account_id=row.account_id,
            hostname=row.hostname,
            namespace=row.namespace,
            is_online=bool(row.is_online),
            device_state=row.device_state,
            last_seen=row.last_seen,
            last_frame_seq=row.last_frame_seq,
            uptime=row.uptime,
            current=_snapshot(row),
            last_row=last_rows.get(row.id),
            device_synced=bool(row.device_synced),
            sync_attempts=int(row.sync_attempts),
            last_sync_attempt=row.last_sync_attempt,
            location=(row.country, row.zone, row.latitude, row.longitude),
            build=(row.network_type, row.firmware_version),
        )
        for row in rows
    }


async def load_by_macs(
    conn: AsyncConnection, account_id: int, macs: Iterable[str]
) -> dict[tuple[int, str], PanelState]:
    return await load_states(
        conn, sa.and_(devices.c.account_id == account_id, devices.c.uid.in_(list(macs)))
    )


async def stale_online(
    conn: AsyncConnection, cutoff: datetime, limit: int
) -> dict[tuple[int, str], PanelState]:
    """Panels marked online whose last message is older than `cutoff`."""
    return await load_states(
        conn,
        devices.c.id.in_(
            sa.select(device_status.c.device_id)
            .where(device_status.c.is_online.is_(True), device_status.c.last_seen < cutoff)
            .limit(limit)
        ),
    )


async def insert_device(conn: AsyncConnection, values: dict[str, Any]) -> int:
    result = await conn.execute(
        sa.insert(devices).values(kind=KIND, **values).returning(devices.c.id)
    )
    device_id = int(result.scalar_one())
    await conn.execute(sa.insert(device_status).values(device_id=device_id))
    return device_id


async def update_device(conn: AsyncConnection, device_id: int, values: dict[str, Any]) -> None:
    await conn.execute(sa.update(devices).where(devices.c.id == device_id).values(**values))


HEARTBEAT_COLUMNS = ("time", "device_id", *SNAPSHOT_FIELDS, "change_type", "change_kinds")


async def write_status(conn: AsyncConnection, updates: dict[int, dict[str, Any]]) -> None:
    """The batch's device_status changes: one statement per distinct set of columns."""
    await bulk.update_rows(conn, device_status, "device_id", updates)


async def insert_heartbeats(conn: AsyncConnection, rows: Sequence[tuple[Any, ...]]) -> None:
    """History rows as tuples in HEARTBEAT_COLUMNS order."""
    await bulk.insert_rows(conn, heartbeats, HEARTBEAT_COLUMNS, rows)


async def open_alarm(
    conn: AsyncConnection, device_id: int, alarm_type: str, output_type: int | None
) -> dict[str, Any] | None:
    """The device's unresolved event of this type (of this output, for output events)."""
    query = sa.select(alarm_events).where(
        alarm_events.c.device_id == device_id,
        alarm_events.c.alarm_type == alarm_type,
        alarm_events.c.resolved_at.is_(None),
    )
    if output_type is not None:
        query = query.where(alarm_events.c.output_type == output_type)
    row = (await conn.execute(query.order_by(alarm_events.c.id.desc()).limit(1))).first()
    return None if row is None else dict(row._mapping)


async def insert_alarm(conn: AsyncConnection, values: dict[str, Any]) -> int:
    result = await conn.execute(
        sa.insert(alarm_events).values(**values).returning(alarm_events.c.id)
    )
    return int(result.scalar_one())


async def update_alarm(conn: AsyncConnection, alarm_id: int, values: dict[str, Any]) -> None:
    await conn.execute(
        sa.update(alarm_events).where(alarm_events.c.id == alarm_id).values(**values)
    )
