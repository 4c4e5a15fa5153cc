"""Liveness rows, their timers and history, the Offline alarm, and reporter registration.

Repositories never commit: the caller owns the transaction.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from fleet.core.liveness import Liveness, State
from fleet.store.accounts import hash_key
from fleet.store.tables import alarm_events, api_keys, devices
from fleet.store.tables_liveness import device_details, liveness, liveness_cursors, liveness_history

OFFLINE_ALARM = "OFFLINE"
OFFLINE_PRIORITY = "HIGH"
DEFAULT_DETAILS: dict[str, Any] = {"friendly_name": None}

_STATE_COLUMNS = ("state", "connection", "since", "period_seconds", "last_report_at", "due_at")


@dataclass(frozen=True, slots=True)
class Tracked:
    """A device as the liveness service sees it: who it is, and its liveness."""

    device_id: int
    account_id: int
    kind: str
    uid: str
    liveness: Liveness
    stored: bool = True  # False: no liveness row yet


def upsert_insert(conn: AsyncConnection, table: sa.Table) -> Any:
    """INSERT … ON CONFLICT for the connection's dialect (both spell it the same)."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def _liveness_of(row: Any) -> Liveness:
    return Liveness(
        state=State(row.state),
        connection=row.connection,
        since=row.since,
        due_at=row.due_at,
        period_seconds=row.period_seconds,
        last_report_at=row.last_report_at,
        held=bool(row.held),
    )


def values_of(state: Liveness) -> dict[str, Any]:
    return {
        "state": state.state.value,
        "connection": state.connection,
        "since": state.since,
        "period_seconds": state.period_seconds,
        "last_report_at": state.last_report_at,
        "due_at": state.due_at,
        "held": state.held,
    }


def _tracked_select() -> sa.Select[Any]:
    return sa.select(
        devices.c.id, devices.c.account_id, devices.c.kind, devices.c.uid, *liveness.c
    ).select_from(devices.outerjoin(liveness, liveness.c.device_id == devices.c.id))


def _tracked(row: Any) -> Tracked:
    stored = row.state is not None
    return Tracked(
        device_id=int(row.id),
        account_id=int(row.account_id),
        kind=row.kind,
        uid=row.uid,
        liveness=_liveness_of(row) if stored else Liveness(),
        stored=stored,
    )


async def load(
    conn: AsyncConnection, device_ids: Iterable[int], *, lock: bool = True
) -> dict[int, Tracked]:
    """The devices' liveness (a default New one where there is no row yet). With `lock`, their
    liveness rows stay locked until the transaction ends (PostgreSQL; SQLite has one writer)."""
    ids = sorted(set(device_ids))
    if not ids:
        return {}
    if lock and conn.dialect.name == "postgresql":
        # Not in the read below: FOR UPDATE cannot apply to the nullable side of an outer join.
        # In id order, so two transactions locking overlapping sets cannot deadlock.
        await conn.execute(
            sa.select(liveness.c.device_id)
            .where(liveness.c.device_id.in_(ids))
            .order_by(liveness.c.device_id)
            .with_for_update()
        )
    query = _tracked_select().where(devices.c.id.in_(ids))
    return {row.id: _tracked(row) for row in await conn.execute(query)}


def any_due(now: datetime) -> sa.Select[Any]:
    """A cheap "is any timer due?" (one row off the due_at index)."""
    return (
        sa.select(liveness.c.device_id)
        .where(liveness.c.due_at.is_not(None), liveness.c.due_at <= now)
        .limit(1)
    )


async def claim_due(conn: AsyncConnection, now: datetime, limit: int) -> dict[int, Tracked]:
    """Armed timers due by `now`, earliest first, locked; rows another process has already
    locked are skipped (it is firing them), so several processes share the work."""
    due = (
        sa.select(liveness.c.device_id)
        .where(liveness.c.due_at.is_not(None), liveness.c.due_at <= now)
        .order_by(liveness.c.due_at)
        .limit(limit)
        .with_for_update(skip_locked=True)  # SQLite has one writer: callers lock it first
    )
    claimed = [int(value) for value in (await conn.execute(due)).scalars()]
    return await load(conn, claimed, lock=False) if claimed else {}


async def insert_rows(conn: AsyncConnection, rows: Sequence[Tracked]) -> None:
    """First liveness rows (and the default details the seed creates) for new devices."""
    if not rows:
        return
    await conn.execute(
        upsert_insert(conn, liveness).on_conflict_do_nothing(index_elements=["device_id"]),
        [
            {"device_id": t.device_id, "account_id": t.account_id, **values_of(t.liveness)}
            for t in rows
        ],
    )
    await ensure_details(conn, [t.device_id for t in rows])


async def ensure_details(conn: AsyncConnection, device_ids: Sequence[int]) -> None:
    if device_ids:
        await conn.execute(
            upsert_insert(conn, device_details).on_conflict_do_nothing(
                index_elements=["device_id"]
            ),
            [{"device_id": device_id, "details": DEFAULT_DETAILS} for device_id in device_ids],
        )


async def write(conn: AsyncConnection, updates: Mapping[int, dict[str, Any]]) -> None:
    """One executemany UPDATE per distinct set of columns."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for device_id, values in updates.items():
        groups[tuple(sorted(values))].append({"b_device_id": device_id, **values})
    for columns, params in groups.items():
        statement = (
            sa.update(liveness)
            .where(liveness.c.device_id == sa.bindparam("b_device_id"))
            .values({column: sa.bindparam(column) for column in columns})
        )
        await conn.execute(statement, params)


def changed_values(before: Liveness, after: Liveness) -> dict[str, Any]:
    new, old = values_of(after), values_of(before)
    return {name: value for name, value in new.items() if old[name] != value}


async def set_last_report(conn: AsyncConnection, reports: Mapping[int, dict[str, Any]]) -> None:
    if reports:
        await conn.execute(
            sa.update(liveness)
            .where(liveness.c.device_id == sa.bindparam("b_device_id"))
            .values(last_report=sa.bindparam("report")),
            [{"b_device_id": device_id, "report": report} for device_id, report in reports.items()],
        )


async def add_history(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        await conn.execute(sa.insert(liveness_history), list(rows))


# --- the Offline alarm ---------------------------------------------------------------------


async def raise_offline(
    conn: AsyncConnection, device_ids: Sequence[int], now: datetime
) -> dict[int, int]:
    """Open one OFFLINE alarm per device (one statement); returns device id → alarm id."""
    if not device_ids:
        return {}
    # A plain executemany, then the new rows read back through the open-alarms index: two
    # statements however many devices (an executemany with RETURNING runs row by row on SQLite).
    await conn.execute(
        sa.insert(alarm_events),
        [
            {
                "device_id": device_id,
                "timestamp": now,
                "alarm_type": OFFLINE_ALARM,
                "event_state": "ACTIVE",
                "priority": OFFLINE_PRIORITY,
            }
            for device_id in device_ids
        ],
    )
    rows = await conn.execute(
        sa.select(alarm_events.c.device_id, sa.func.max(alarm_events.c.id).label("id"))
        .where(
            alarm_events.c.device_id.in_(list(device_ids)),
            alarm_events.c.alarm_type == OFFLINE_ALARM,
            alarm_events.c.resolved_at.is_(None),
        )
        .group_by(alarm_events.c.device_id)
    )
    return {int(row.device_id): int(row.id) for row in rows}


async def clear_offline(
    conn: AsyncConnection, device_ids: Sequence[int], now: datetime
) -> list[tuple[int, int]]:
    """Resolve the devices' open OFFLINE alarms; returns (device id, alarm id) of each."""
    if not device_ids:
        return []
    rows = (
        await conn.execute(
            sa.select(alarm_events.c.device_id, alarm_events.c.id).where(
                alarm_events.c.device_id.in_(list(device_ids)),
                alarm_events.c.alarm_type == OFFLINE_ALARM,
                alarm_events.c.resolved_at.is_(None),
            )
        )
    ).all()
    if rows:
        await conn.execute(
            sa.update(alarm_events)
            .where(alarm_events.c.id.in_([row.id for row in rows]))
            .values(resolved_at=now, event_state="INACTIVE")
        )
    return [(int(row.device_id), int(row.id)) for row in rows]


# --- reporters -----------------------------------------------------------------------------


async def ingest_accounts(conn: AsyncConnection, tokens: Sequence[str]) -> dict[str, int]:
    """The account of each token that is an ingest token (others are left out)."""
    hashes = {hash_key(token): token for token in set(tokens) if 0 < len(token) <= 200}
    if not hashes:
        return {}
    rows = await conn.execute(
        sa.select(api_keys.c.key_hash, api_keys.c.account_id).where(
            api_keys.c.key_hash.in_(sorted(hashes)), api_keys.c.kind == "ingest"
        )
    )
    # Matched by SHA-256 through the index, as accounts.resolve_key does: tokens are 256-bit
    # random secrets, so their hashes cannot be steered to probe the comparison.
    return {hashes[row.key_hash]: int(row.account_id) for row in rows}


async def find_devices(
    conn: AsyncConnection, account_id: int, kind: str, uids: Iterable[str]
) -> dict[str, int]:
    wanted = sorted(set(uids))
    if not wanted:
        return {}
    rows = await conn.execute(
        sa.select(devices.c.uid, devices.c.id).where(
            devices.c.account_id == account_id, devices.c.kind == kind, devices.c.uid.in_(wanted)
        )
    )
    return {row.uid: int(row.id) for row in rows}


async def register_devices(
    conn: AsyncConnection, account_id: int, kind: str, names: Mapping[str, str]
) -> dict[str, int]:
    """Insert the devices of `names` (uid → name) that do not exist; returns the uids this call
    created with their ids (a device another process just created is not in it)."""
    if not names:
        return {}
    # hostname holds the seed's 32 characters; the full name lives on in the hashed uid.
    rows = [
        {"account_id": account_id, "kind": kind, "uid": uid, "hostname": name[:32]}
        for uid, name in sorted(names.items())
    ]
    statement = upsert_insert(conn, devices).on_conflict_do_nothing(
        index_elements=["account_id", "kind", "uid"]
    )
    if conn.dialect.name == "postgresql":
        # Batched into multi-row INSERTs; RETURNING tells ours from another process's rows.
        result = await conn.execute(statement.returning(devices.c.uid, devices.c.id), rows)
        return {row.uid: int(row.id) for row in result}
    # SQLite runs an executemany with RETURNING row by row; its single writer (the caller
    # holds the write lock) makes "there now, not before" exact instead.
    await conn.execute(statement, rows)
    return await find_devices(conn, account_id, kind, names)


# --- cursors of the event followers --------------------------------------------------------


async def read_cursor(conn: AsyncConnection, name: str) -> int:
    """The follower's position, locked for this transaction (one follower at a time)."""
    await conn.execute(
        upsert_insert(conn, liveness_cursors)
        .values(name=name, last_event_id=0)
        .on_conflict_do_nothing(index_elements=["name"])
    )
    value = await conn.scalar(
        sa.select(liveness_cursors.c.last_event_id)
        .where(liveness_cursors.c.name == name)
        .with_for_update()
    )
    return int(value or 0)


async def write_cursor(conn: AsyncConnection, name: str, last_event_id: int) -> None:
    await conn.execute(
        sa.update(liveness_cursors)
        .where(liveness_cursors.c.name == name)
        .values(last_event_id=last_event_id)
    )
