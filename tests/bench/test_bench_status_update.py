"""bench.status_update, reduced: both forms write every row they say they timed (no timing
assertions)."""

from __future__ import annotations

import sqlalchemy as sa

from bench.status_update import measure
from fleet.store.engine import create_engine
from fleet.store.tables import device_status


async def test_both_forms_update_the_rows_they_time(pg_url: str) -> None:
    figures = await measure(pg_url, 300, batch=100, rounds=3, seed_rows=50, runs=2)
    assert [f.rows for f in figures] == [300, 50]
    for f in figures:
        assert f.wall > 0 and f.client_cpu >= 0
        assert f.backend_cpu is None or f.backend_cpu >= 0
    engine = create_engine(pg_url)
    try:
        async with engine.connect() as conn:
            # Warm-up + 2 runs of each form: every update wrote its sequence and last_seen.
            written = await conn.scalar(
                sa.select(sa.func.count()).where(device_status.c.last_seen.is_not(None))
            )
            highest = await conn.scalar(sa.select(sa.func.max(device_status.c.last_frame_seq)))
    finally:
        await engine.dispose()
    assert written and written > 100  # rows of many devices, not one
    assert highest == 3 + 2 * (3 + 50)  # one sequence per batch (Fleet) or per row (seed)
