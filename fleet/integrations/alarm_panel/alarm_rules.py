"""AlarmEvent → alarm_events rows and the I/O booleans of device_status (seed 001, flow 3).

Inputs (panic buttons, tamper, …) open an event when they go active and resolve it when they clear;
outputs (siren, turret patterns) keep one open event per output that follows its pattern from
STARTING to INACTIVE. A repeated ACTIVE updates the open event instead of opening a second one.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from fleet.core.events import Event
from fleet.integrations.alarm_panel.codec import AlarmReport
from fleet.store import panels as store

ACTIVE_STATES = frozenset({"ACTIVE", "STARTING", "TEST"})
INPUT_COLUMNS = {"PANIC1": "panic1", "PANIC2": "panic2", "TAMPER": "box_sw"}
# OutputCommand.Output numbers: SIREN 1, TURRET 2.
OUTPUT_COLUMNS = {1: "siren", 2: "turret"}
OUTPUT_EVENT = "OUTPUT_EVENT"
# Before NTP sync a panel stamps times from 1970; those are replaced by the server's time.
PLAUSIBLE_SINCE = datetime(2020, 1, 1, tzinfo=UTC)


def io_values(report: AlarmReport) -> dict[str, bool]:
    active = report.event_state in ACTIVE_STATES
    if report.alarm_type == OUTPUT_EVENT:
        column = OUTPUT_COLUMNS.get(report.output_type)
    else:
        column = INPUT_COLUMNS.get(report.alarm_type)
    return {} if column is None else {column: active}


def event_time(report: AlarmReport, now: datetime) -> datetime:
    stamped = datetime.fromtimestamp(report.timestamp, UTC) if report.timestamp else None
    return stamped if stamped is not None and stamped >= PLAUSIBLE_SINCE else now


async def apply_alarm(
    conn: AsyncConnection,
    account_id: int,
    device_id: int,
    report: AlarmReport,
    now: datetime,
    events: list[Event],
) -> dict[str, bool]:
    """Write the alarm_events change; returns the device_status I/O values to set."""
    is_output = report.alarm_type == OUTPUT_EVENT
    output_type = report.output_type if is_output else None
    active = report.event_state in ACTIVE_STATES
    values: dict[str, Any] = {
        "sequence": report.sequence,
        "event_state": report.event_state,
        "priority": report.priority,
        "physical_state": report.physical_state,
        "output_type": output_type,
        "pattern_type": report.pattern_type if is_output else None,
        "duration_seconds": report.duration_seconds,
        "elapsed_seconds": report.elapsed_seconds,
    }
    open_event = await store.open_alarm(conn, device_id, report.alarm_type, output_type)
    summary = {
        "alarm_type": report.alarm_type,
        "priority": report.priority,
        "state": report.event_state,
    }
    if report.event_state == "INACTIVE":
        values["resolved_at"] = now
    if open_event is not None:
        await store.update_alarm(conn, open_event["id"], values)
        if "resolved_at" in values:
            events.append(
                Event(account_id, "alarm.cleared", device_id, {"id": open_event["id"], **summary})
            )
    else:
        alarm_id = await store.insert_alarm(
            conn,
            {
                "device_id": device_id,
                "timestamp": event_time(report, now),
                "alarm_type": report.alarm_type,
                **values,
            },
        )
        if active:
            events.append(Event(account_id, "alarm.raised", device_id, {"id": alarm_id, **summary}))
    return io_values(report)
