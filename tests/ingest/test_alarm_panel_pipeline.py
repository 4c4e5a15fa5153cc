"""Seed 001's flows end to end: simulated panels → real broker → ingest → real database."""

from __future__ import annotations

import time
from typing import Any

import pytest
import sqlalchemy as sa

from fleet.integrations.alarm_panel.codec import encode_heartbeat
from fleet.integrations.alarm_panel.framing import encode_frame
from fleet.integrations.alarm_panel.topics import device_topic
from fleet.store.tables import alarm_events, command_log, device_status, devices, events, heartbeats
from tests.ingest.harness import KEY, Stack, hold_ingest

pytestmark = pytest.mark.broker


async def rows(stack: Stack, query: sa.Select) -> list[sa.Row]:
    async with stack.runtime.engine.connect() as conn:
        return list((await conn.execute(query)).all())


async def test_login_registers_device_and_syncs_its_id(stack: Stack) -> None:
    panel = stack.panel(1)
    stack.send(panel.login(time.time()))
    await stack.processed(1)
    [device] = await rows(stack, sa.select(devices))
    assert device.mac_address == stack.panels[0].hostname[-12:][0:2] + ":" + ":".join(
        panel.hostname[-12:][i : i + 2] for i in range(2, 12, 2)
    )
    assert device.hostname == panel.hostname and device.account_id == stack.account_id
    [status] = await rows(stack, sa.select(device_status))
    assert status.is_online and status.device_state == panel._device_state()
    assert status.device_synced is False and status.sync_attempts == 1
    # The sync command went out through the ledger; the simulator answers it over the broker.
    [command] = await rows(stack, sa.select(command_log))
    assert command.command_type == "CONFIG" and command.auth_level == 1
    assert command.command_data["payload"]["device"]["device_id"] == device.id
    assert command.status == "SENT"
    [first_row] = await rows(stack, sa.select(heartbeats))
    assert (
        first_row.change_type == "MULTIPLE" and first_row.change_kinds == "CONNECTION,SENSOR_DATA"
    )


async def test_heartbeat_from_unknown_device_is_counted_not_stored(stack: Stack) -> None:
    panel = stack.panel(2)
    stack.send(panel.heartbeat(time.time()))
    await stack.processed(1)
    assert stack.runtime.pipeline.stats.rejected["unknown_device"] == 1
    assert await rows(stack, sa.select(devices)) == []
    assert await rows(stack, sa.select(heartbeats)) == []


async def test_cdc_deadband_and_alarm_flow(stack: Stack) -> None:
    panel = stack.panel(3)
    now = time.time()
    stack.send(panel.login(now))
    await stack.processed(1)
    [device] = await rows(stack, sa.select(devices))
    panel.device_db_id = device.id  # as if the sync had been applied
    base_temperature = panel.temperature
    # 0.2 °C per heartbeat. The first heartbeat is stored because it brings the fan duty, which a
    # StatusMessage lacks (a NULL old value); from there the deadband stores +0.6 °C later, not
    # never (each message alone moves only 0.2 °C).
    for step in range(1, 7):
        panel.temperature = base_temperature + 0.2 * step
        stack.send(_heartbeat(panel, now))
    await stack.processed(7)
    history = await rows(stack, sa.select(heartbeats).order_by(heartbeats.c.id))
    sensor_rows = [r for r in history if r.change_type == "SENSOR_DATA"]
    assert [round(r.temperature - base_temperature, 1) for r in sensor_rows] == [0.2, 0.8]
    # Alarm raised then cleared: one event, resolved; two ALARM history rows.
    stack.send(panel.alarm(now, "PANIC1", active=True))
    await stack.processed(8)
    [event] = await rows(stack, sa.select(alarm_events))
    assert (event.alarm_type, event.event_state, event.resolved_at) == ("PANIC1", "ACTIVE", None)
    [status] = await rows(stack, sa.select(device_status))
    assert status.panic1 is True and status.device_synced is True
    stack.send(panel.alarm(now, "PANIC1", active=False))
    await stack.processed(9)
    [event] = await rows(stack, sa.select(alarm_events))
    assert event.event_state == "INACTIVE" and event.resolved_at is not None
    alarm_rows = await rows(stack, sa.select(heartbeats).where(heartbeats.c.change_type == "ALARM"))
    assert [r.panic1 for r in alarm_rows] == [True, False]
    kinds = [r.type for r in await rows(stack, sa.select(events.c.type))]  # the event log
    assert "alarm.raised" in kinds and "alarm.cleared" in kinds


def _heartbeat(panel, now: float) -> tuple[str, bytes]:
    """A heartbeat with exactly the panel's present values (no random walk)."""
    return device_topic(panel.base, panel.hostname, "hb"), encode_frame(
        KEY,
        panel._next_sequence(),
        encode_heartbeat(
            timestamp=int(now),
            device_db_id=panel.device_db_id,
            temperature=panel.temperature,
            humidity=panel.humidity,
            fan_pwm_duty=panel.fan_pwm_duty,
        ),
    )


async def test_bad_messages_are_counted_and_good_ones_around_them_kept(stack: Stack) -> None:
    panel = stack.panel(4)
    now = time.time()
    login_topic, login = panel.login(now)
    stack.raw(login_topic, login[:-1] + bytes([login[-1] ^ 1]))  # wrong HMAC
    stack.raw(f"{stack.base}/pb/d/not_a_panel/status", login)  # bad hostname
    stack.raw(login_topic, b"\x00")  # too short
    stack.raw(login_topic, b"x" * 10_000)  # oversized
    stack.raw(login_topic, encode_frame(KEY, 99, b"\xff\xff\xff"))  # truncated protobuf
    stack.raw(login_topic, login)  # the good one
    stack.raw(login_topic, login)  # replayed
    await stack.processed(7)
    rejected = stack.runtime.pipeline.stats.rejected
    assert rejected["bad_hmac"] == 1 and rejected["topic_bad_hostname"] == 1
    assert rejected["too_short"] == 1 and rejected["oversized"] == 1
    assert rejected["truncated"] == 1 and rejected["replay"] == 1
    assert len(await rows(stack, sa.select(devices))) == 1


async def test_last_will_marks_offline_and_any_message_online_again(stack: Stack) -> None:
    panel = stack.panel(5)
    now = time.time()
    stack.send(panel.login(now))
    stack.send(panel.last_will(now))
    await stack.processed(2)
    [status] = await rows(stack, sa.select(device_status))
    assert status.is_online is False
    stack.send(panel.heartbeat(now))
    await stack.processed(3)
    [status] = await rows(stack, sa.select(device_status))
    assert status.is_online is True
    connection_rows = await rows(
        stack, sa.select(heartbeats.c.change_kinds).order_by(heartbeats.c.id)
    )
    # Offline, then online again (the heartbeat also brings the fan duty: a second kind).
    assert [r.change_kinds for r in connection_rows][-2:] == [
        "CONNECTION",
        "CONNECTION,SENSOR_DATA",
    ]


async def test_a_message_the_database_refuses_is_isolated_not_retried_forever(stack: Stack) -> None:
    """A zone beyond INTEGER (a u32 on the wire) is fine for SQLite but refused by PostgreSQL:
    the batch is split until that message is found; the others in the batch are stored."""
    from fleet.integrations.alarm_panel.codec import StatusReport, encode_report

    good = [stack.panel(40 + i) for i in range(3)]
    poison = stack.panel(50)
    now = time.time()
    stack.runtime.pipeline.batch_wait = 0.5  # let the four land in one batch
    for panel in good[:2]:
        stack.send(panel.login(now))
    report = StatusReport(device_state="NORMAL", zone=2**32 - 1, mac_address=poison.hostname[-12:])
    stack.raw(
        device_topic(stack.base, poison.hostname, "status"),
        encode_frame(KEY, poison._next_sequence(), encode_report(report)),
    )
    stack.send(good[2].login(now))
    await stack.processed(4, timeout=20)
    stored = {row.hostname for row in await rows(stack, sa.select(devices))}
    assert {panel.hostname for panel in good} <= stored
    if stack.runtime.engine.dialect.name == "postgresql":
        assert stack.runtime.pipeline.stats.rejected["store_error"] == 1
        assert poison.hostname not in stored


async def test_the_ingest_goes_on_after_a_fault_of_its_own(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug that raises after a batch committed (fault injected: the step after the commit
    fails once) is logged; the next batch is ingested as usual."""
    pipeline = stack.runtime.pipeline
    after_commit = pipeline._after_commit
    failed: list[bool] = []

    async def fails_once(outcome: object) -> None:
        if not failed:
            failed.append(True)
            raise RuntimeError("injected fault")
        await after_commit(outcome)  # type: ignore[arg-type]

    pipeline._after_commit = fails_once  # type: ignore[method-assign]
    first, second = stack.panel(81), stack.panel(82)
    stack.send(first.login(time.time()))
    await stack.until(lambda: bool(failed))
    stack.send(second.login(time.time()))
    await stack.processed(2)
    stored = {row.hostname for row in await rows(stack, sa.select(devices))}
    assert stored == {first.hostname, second.hostname}
    assert "a batch of 1 messages failed" in caplog.text
    ingest = next(t for t in stack.runtime._tasks if t.get_name() == "ingest")
    assert not ingest.done()


async def test_an_alarm_commits_ahead_of_the_rest_of_its_batch(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a large batch an alarm (with its device's earlier messages) gets a transaction of its
    own, committed before the other devices' messages that arrived ahead of it are even
    decoded; all are stored and the device's own messages keep their order."""
    from fleet.ingest import pipeline as pipeline_module
    from fleet.ingest.pipeline import URGENT_SPLIT_MIN

    alarmed = stack.panel(90)
    now = time.time()
    stack.send(alarmed.login(now))
    await stack.processed(1)
    steps: list[str] = []  # what the ingest did, in order: decoded a topic, committed
    prepare, commit = pipeline_module.prepare, stack.runtime.pipeline._commit

    def recorded_prepare(message: Any, *args: Any) -> Any:
        steps.append(message.topic)
        return prepare(message, *args)

    async def recorded_commit(prepared: Any) -> Any:
        steps.append(f"commit {len(prepared)}")
        return await commit(prepared)

    monkeypatch.setattr(pipeline_module, "prepare", recorded_prepare)
    monkeypatch.setattr(stack.runtime.pipeline, "_commit", recorded_commit)
    others = [stack.panel(100 + i) for i in range(URGENT_SPLIT_MIN + 10)]
    # Hold the ingest while the batch piles up, so that it is read as one batch.
    link, held = stack.runtime.pipeline.link, await hold_ingest(stack)
    outgoing = [panel.login(now) for panel in others]
    outgoing += [alarmed.heartbeat(now + 1), alarmed.alarm(now + 2, "PANIC1", active=True)]
    for message in outgoing:
        stack.send(message, qos=0)  # QoS 1 would stop at the broker's window of 20 unacked
    await stack.until(lambda: link.pending() == len(outgoing))
    held.set()
    await stack.processed(len(others) + 3, timeout=20)
    stats = stack.runtime.pipeline.stats
    assert sum(stats.rejected.values()) == 0
    async with stack.runtime.engine.connect() as conn:
        ids = dict((await conn.execute(sa.select(devices.c.hostname, devices.c.id))).all())
        firsts = dict(
            (
                await conn.execute(
                    sa.select(heartbeats.c.device_id, sa.func.min(heartbeats.c.id)).group_by(
                        heartbeats.c.device_id
                    )
                )
            ).all()
        )
        alarm_row = (
            await conn.execute(
                sa.select(sa.func.max(heartbeats.c.id)).where(
                    heartbeats.c.device_id == ids[alarmed.hostname],
                    heartbeats.c.change_type == "ALARM",
                )
            )
        ).scalar_one()
    assert {p.hostname for p in others} <= set(ids)
    assert alarm_row is not None
    # Written before the first row of every device whose login came before the alarm.
    assert alarm_row < min(firsts[ids[p.hostname]] for p in others)
    # Its two messages were decoded and committed before any of the others was decoded.
    first_other = min(i for i, step in enumerate(steps) if others[0].hostname in step)
    assert steps[:first_other][-3:] == [
        f"{stack.base}/pb/d/{alarmed.hostname}/hb",
        f"{stack.base}/pb/d/{alarmed.hostname}/alarm",
        "commit 2",
    ]


async def test_device_status_holds_each_heartbeats_values_exactly(stack: Stack) -> None:
    """Heartbeats write only the columns that changed; the row still ends up with exactly the
    last heartbeat's values, whatever changed when (several heartbeats per batch included)."""
    panel = stack.panel(95)
    now = time.time()
    stack.send(panel.login(now))
    await stack.processed(1)
    [device] = await rows(stack, sa.select(devices))
    readings = [
        dict(temperature=21.5, humidity=40.0, fan_pwm_duty=10, network_type="wifi", firmware="1.0"),
        dict(temperature=21.5, humidity=41.0, fan_pwm_duty=10, network_type="wifi", firmware="1.0"),
        dict(temperature=22.0, humidity=41.0, fan_pwm_duty=10, siren=True, firmware="1.1"),
        dict(
            temperature=22.0,
            humidity=41.0,
            fan_pwm_duty=30,
            network_type="ethernet",
            firmware="1.1",
        ),
        dict(
            temperature=22.0,
            humidity=41.0,
            fan_pwm_duty=30,
            network_type="ethernet",
            firmware="1.1",
        ),
    ]
    sent = 1
    for i, reading in enumerate(readings):
        topic = device_topic(panel.base, panel.hostname, "hb")
        fields = dict(timestamp=int(now) + i, device_db_id=device.id, uptime=100 + i, **reading)
        stack.raw(topic, encode_frame(KEY, panel._next_sequence(), encode_heartbeat(**fields)))
        sent += 1
        if i != 1:  # the first two may share a batch
            await stack.processed(sent)
        [status] = await rows(stack, sa.select(device_status))
        if i == 1:
            continue
        expected = {"uptime": 100 + i, "panic1": False, "siren": False, **reading}
        expected["siren"] = reading.get("siren", False)
        expected["network_type"] = reading.get("network_type", "wifi")
        expected["firmware_version"] = expected.pop("firmware")
        assert {name: getattr(status, name) for name in expected} == pytest.approx(expected)
    assert sum(stack.runtime.pipeline.stats.rejected.values()) == 0
