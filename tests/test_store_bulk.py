"""fleet.store.bulk: the ingest's batched writes store exactly what SQLAlchemy would, on both
databases; on PostgreSQL a column with one value in every row goes as one parameter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from fleet.store import accounts, bulk
from fleet.store.engine import create_engine
from fleet.store.tables import device_status, devices, heartbeats

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
COLUMNS = ("time", "device_id", "temperature", "panic1", "change_type", "change_kinds")


async def _devices(engine: AsyncEngine, count: int) -> list[int]:
    async with engine.begin() as conn:
        account = await accounts.create_account(conn, "bulk")
        ids = []
        for n in range(count):
            result = await conn.execute(
                sa.insert(devices)
                .values(account_id=account, kind="alarm_panel", uid=f"bulk-{n}")
                .returning(devices.c.id)
            )
            device_id = int(result.scalar_one())
            await conn.execute(sa.insert(device_status).values(device_id=device_id))
            ids.append(device_id)
    return ids


async def _history(engine: AsyncEngine) -> list[tuple[object, ...]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.select(*(heartbeats.c[name] for name in COLUMNS)).order_by(heartbeats.c.id)
        )
        return [tuple(row) for row in rows]


@pytest.mark.parametrize(
    "shape",
    ["mixed", "identical rows", "one row", "all none but the key"],
)
async def test_insert_rows_stores_every_row_as_given(engine: AsyncEngine, shape: str) -> None:
    ids = await _devices(engine, 3)
    if shape == "mixed":  # the batch's time and type constant, the rest varying
        rows = [(T0, ids[n % 3], 20.0 + n, n % 2 == 0, "PERIODIC", None) for n in range(7)]
    elif shape == "identical rows":  # every column constant: still one row each
        rows = [(T0, ids[0], 21.5, True, "ALARM", "ALARM")] * 4
    elif shape == "one row":
        rows = [(T0 + timedelta(seconds=1), ids[1], None, None, "CONNECTION", None)]
    else:
        rows = [(T0, ids[n], None, None, "PERIODIC", None) for n in range(3)]
    async with engine.begin() as conn:
        await bulk.insert_rows(conn, heartbeats, COLUMNS, rows)
    assert await _history(engine) == rows


async def test_update_rows_writes_each_rows_own_values(engine: AsyncEngine) -> None:
    ids = await _devices(engine, 6)
    seen = T0 + timedelta(minutes=5)
    updates = {
        # Same columns for the first four: is_online and last_seen constant, the rest varying
        # or constant, a None among them.
        ids[0]: {"is_online": True, "last_seen": seen, "last_frame_seq": 10, "temperature": 1.5},
        ids[1]: {"is_online": True, "last_seen": seen, "last_frame_seq": 11, "temperature": 1.5},
        ids[2]: {"is_online": True, "last_seen": seen, "last_frame_seq": 12, "temperature": None},
        ids[3]: {"is_online": True, "last_seen": seen, "last_frame_seq": 13, "temperature": 2.5},
        # Another set of columns, alone in its group (every value constant).
        ids[4]: {"is_online": False, "device_state": "ARMED"},
    }
    async with engine.begin() as conn:
        await bulk.update_rows(conn, device_status, "device_id", updates)
    async with engine.connect() as conn:
        rows = {
            row.device_id: row
            for row in await conn.execute(sa.select(device_status).order_by("device_id"))
        }
    for device_id, values in updates.items():
        stored = rows[device_id]
        assert {name: getattr(stored, name) for name in values} == values
    untouched = rows[ids[5]]
    assert untouched.last_seen is None and untouched.last_frame_seq is None
    assert rows[ids[4]].last_seen is None  # its group did not set it
    assert rows[ids[0]].updated_at is not None


async def test_postgres_gets_a_constant_column_once(pg_url: str) -> None:
    """PostgreSQL's unnest form (SQLite takes the driver's executemany, row by row)."""
    engine = create_engine(pg_url)
    try:
        await _constant_columns_sent_once(engine)
    finally:
        await engine.dispose()


async def _constant_columns_sent_once(engine: AsyncEngine) -> None:
    ids = await _devices(engine, 2)
    sent: list[tuple[str, tuple[object, ...]]] = []

    def record(_conn, _cursor, statement, parameters, _context, _many) -> None:  # type: ignore[no-untyped-def]
        sent.append((statement, parameters))

    sa.event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        async with engine.begin() as conn:
            await bulk.insert_rows(
                conn,
                heartbeats,
                COLUMNS,
                [
                    (T0, ids[0], 20.0, True, "PERIODIC", None),
                    (T0, ids[1], 21.0, True, "PERIODIC", None),
                ],
            )
            updates = {i: {"is_online": True, "last_seen": T0, "last_frame_seq": i} for i in ids}
            await bulk.update_rows(conn, device_status, "device_id", updates)
    finally:
        sa.event.remove(engine.sync_engine, "before_cursor_execute", record)
    insert_params, update_params = [
        p for s, p in sent if s.startswith(('INSERT INTO "heartbeats"', "UPDATE"))
    ]
    # Varying: device_id, temperature; constant: time, panic1, change_type, change_kinds.
    assert [type(p) for p in insert_params].count(list) == 2 and T0 in insert_params
    # Varying: the key and last_frame_seq; constant: is_online, last_seen.
    assert [type(p) for p in update_params].count(list) == 2 and T0 in update_params
    assert await _history(engine) == [
        (T0, ids[0], 20.0, True, "PERIODIC", None),
        (T0, ids[1], 21.0, True, "PERIODIC", None),
    ]
