"""Liveness, device-id sync and command responses, with a clock the test controls."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from fleet.integrations.alarm_panel.codec import CommandResponseReport, encode_report
from fleet.integrations.alarm_panel.framing import encode_frame
from fleet.integrations.alarm_panel.topics import device_topic
from fleet.store import accounts
from fleet.store.tables import command_log, device_status, devices, events, heartbeats
from tests.ingest.harness import KEY, Stack

pytestmark = pytest.mark.broker


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


async def one(stack: Stack, query: sa.Select) -> sa.Row:
    async with stack.runtime.engine.connect() as conn:
        return (await conn.execute(query)).one()


async def test_silence_marks_offline_after_the_configured_time(stack: Stack) -> None:
    clock = Clock()
    stack.runtime.pipeline.clock = clock
    panel = stack.panel(11)
    stack.send(panel.login(time.time()))
    await stack.processed(1)
    clock.advance(299)
    await stack.runtime.pipeline.sweep()
    assert (await one(stack, sa.select(device_status.c.is_online))).is_online is True
    clock.advance(2)
    await stack.runtime.pipeline.sweep()
    assert (await one(stack, sa.select(device_status.c.is_online))).is_online is False
    last = await one(stack, sa.select(heartbeats).order_by(heartbeats.c.id.desc()).limit(1))
    assert last.change_type == "CONNECTION"
    offline = sa.select(sa.func.count()).where(events.c.type == "device.offline")
    assert (await one(stack, offline))[0] >= 1  # in the event log


async def test_sync_is_retried_with_backoff_and_alerts_after_three_failures(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    stack.runtime.pipeline.clock = clock
    panel = stack.panel(12)  # nobody answers its commands: the sync keeps failing
    stack.send(panel.login(time.time()))
    await stack.processed(1)

    async def attempts() -> int:
        return int((await one(stack, sa.select(device_status.c.sync_attempts))).sync_attempts)

    assert await attempts() == 1
    await stack.runtime.pipeline.sweep()
    assert await attempts() == 1  # not due yet
    with caplog.at_level(logging.ERROR, logger="fleet"):
        for expected, wait in ((2, 5), (3, 10), (4, 20)):
            clock.advance(wait + 0.1)
            await stack.runtime.pipeline.sweep()
            assert await attempts() == expected
    assert any(
        "ALARM" in r.getMessage() and "3 sync attempts" in r.getMessage() for r in caplog.records
    )
    async with stack.runtime.engine.connect() as conn:
        syncs = (await conn.execute(sa.select(command_log.c.initiated_by))).scalars().all()
    assert syncs == ["system:device-sync"] * 4
    # The panel applies the id: its next message carries it, and the device is synced.
    device = await one(stack, sa.select(devices.c.id))
    panel.device_db_id = device.id
    stack.send(panel.status(time.time()))
    await stack.processed(2)
    status = await one(
        stack, sa.select(device_status.c.device_synced, device_status.c.sync_attempts)
    )
    assert status.device_synced is True and status.sync_attempts == 0


async def test_responses_complete_fail_or_are_ignored(stack: Stack) -> None:
    panel = stack.panel(13)
    stack.send(panel.login(time.time()))
    await stack.processed(1)
    device = await one(stack, sa.select(devices.c.id))
    commands = stack.runtime.commands
    ok = await commands.send(
        account_id=stack.account_id,
        device_id=device.id,
        command_type="SYSTEM",
        payload={"action": "REBOOT"},
        initiated_by="test",
    )
    bad = await commands.send(
        account_id=stack.account_id,
        device_id=device.id,
        command_type="DIAGNOSTIC",
        payload={"action": "SELF_TEST"},
        initiated_by="test",
    )
    assert ok["status"] == bad["status"] == "SENT"

    def response(request_id: str, success: bool, code: int = 0) -> tuple[str, bytes]:
        report = CommandResponseReport(
            request_id=request_id,
            timestamp=int(time.time()),
            success=success,
            error_code=code,
            message="done" if success else "sensor fault",
            payload=b"\x01\x02",
        )
        topic = device_topic(stack.base, panel.hostname, "response")
        return topic, encode_frame(KEY, panel._next_sequence(), encode_report(report))

    stack.send(response(ok["request_id"], True))
    stack.send(response(bad["request_id"], False, 7))
    stack.send(response("00000000-0000-0000-0000-000000000000", True))  # unknown: ignored
    stack.send(response(ok["request_id"], False, 9))  # late duplicate: never applied twice
    await stack.processed(5)
    ok_row = await commands.get(account_id=stack.account_id, command_id=ok["id"])
    bad_row = await commands.get(account_id=stack.account_id, command_id=bad["id"])
    assert ok_row is not None and bad_row is not None
    assert ok_row["status"] == "COMPLETED" and ok_row["completed_at"] is not None
    assert ok_row["response_data"]["payload_hex"] == "0102"
    assert bad_row["status"] == "FAILED" and bad_row["response_code"] == 7
    assert bad_row["error_message"] == "sensor fault"
    # Another account cannot see either command.
    assert await commands.get(account_id=stack.account_id + 1, command_id=ok["id"]) is None


async def _unmap_namespaces(stack: Stack) -> None:
    async with stack.runtime.engine.begin() as conn:
        await conn.execute(sa.text("DELETE FROM account_namespaces"))
    resolver = stack.runtime.pipeline.namespaces
    resolver._map.clear()
    resolver._loaded_at = float("-inf")


async def test_unknown_namespace_is_rejected_never_guessed(stack: Stack) -> None:
    async with stack.runtime.engine.begin() as conn:
        await accounts.create_account(conn, "second")  # two accounts: no default owner
    await _unmap_namespaces(stack)
    panel = stack.panel(14)
    stack.send(panel.login(time.time()))
    await stack.processed(1)
    assert stack.runtime.pipeline.stats.rejected["unknown_namespace"] == 1
    async with stack.runtime.engine.connect() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(devices))).scalar() == 0


async def test_with_one_account_the_default_base_is_its_own(stack: Stack) -> None:
    await _unmap_namespaces(stack)
    panel = stack.panel(15)
    stack.send(panel.login(time.time()))
    await stack.processed(1)
    device = await one(stack, sa.select(devices.c.account_id))
    assert device.account_id == stack.account_id
    async with stack.runtime.engine.connect() as conn:
        mapped = await accounts.namespace_map(conn, "alarm_panel")
    assert mapped == {stack.base: stack.account_id}  # recorded: it stays this account's
