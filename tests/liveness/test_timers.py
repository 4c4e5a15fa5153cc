"""Timers live in the database: several processes fire them together, each exactly once."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import sqlalchemy as sa

from fleet.services.liveness import FIRE_BATCH, LivenessService
from fleet.store.engine import create_engine
from fleet.store.tables import alarm_events, devices, events
from fleet.store.tables_liveness import liveness, liveness_history
from tests.liveness.conftest import Fleet

ARMED = 2 * FIRE_BATCH + 500


async def test_two_processes_fire_every_due_timer_exactly_once(fleet: Fleet, db_url: str) -> None:
    acme = await fleet.account("acme")
    now = fleet.clock()
    async with fleet.runtime.engine.begin() as conn:
        await conn.execute(
            sa.insert(devices),
            [{"account_id": acme.id, "kind": "reporter", "uid": f"{n:064x}"} for n in range(ARMED)],
        )
        ids = (await conn.execute(sa.select(devices.c.id).order_by(devices.c.id))).scalars().all()
        await conn.execute(
            sa.insert(liveness),
            [
                {
                    "device_id": device_id,
                    "account_id": acme.id,
                    "state": "Reporting",
                    "period_seconds": 60.0,
                    # Half are due, in scrambled order; the others later.
                    "due_at": now - timedelta(seconds=(n * 7919) % 600 + 1)
                    if n % 2 == 0
                    else now + timedelta(seconds=n + 1),
                }
                for n, device_id in enumerate(ids)
            ],
        )
    other_engine = create_engine(db_url)
    other = LivenessService(other_engine, intervals={}, clock=fleet.clock)
    try:
        fired = await asyncio.gather(fleet.liveness.fire_due(), other.fire_due())
    finally:
        await other_engine.dispose()
    due = ARMED // 2
    assert sum(fired) == due
    async with fleet.runtime.engine.connect() as conn:
        history = (
            await conn.execute(
                sa.select(liveness_history.c.device_id, sa.func.count()).group_by(
                    liveness_history.c.device_id
                )
            )
        ).all()
        offline_alarms = await conn.scalar(
            sa.select(sa.func.count()).where(alarm_events.c.alarm_type == "OFFLINE")
        )
        state_events = await conn.scalar(
            sa.select(sa.func.count()).where(events.c.type == "device.state")
        )
        still_armed = await conn.scalar(
            sa.select(sa.func.count()).where(liveness.c.due_at.is_not(None))
        )
    assert len(history) == due and {count for _, count in history} == {1}
    assert offline_alarms == due and state_events == due and still_armed == ARMED - due
    # Nothing is due any more: another tick fires nothing.
    assert await fleet.liveness.fire_due() == 0
