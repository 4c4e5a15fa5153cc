"""The command ledger beyond one send: per-command timeouts, acknowledgements, retries with
jitter, cancellation, ignored answers, statistics, and two workers sharing one database."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
import sqlalchemy as sa
from prometheus_client import REGISTRY

from fleet.core.ledger import Answer
from fleet.jobs.dispatcher import TaskDispatcher
from fleet.services.commands import CommandService, Response, apply_responses_in
from fleet.store.engine import create_engine
from fleet.store.tables import command_log
from fleet.store.tables_tasks import task_devices
from tests.api.conftest import RecordingPublisher, Tenant
from tests.tasks.conftest import SET_TOU, T0, TaskApi

REBOOT = {"type": "SYSTEM", "payload": {"action": "REBOOT"}}


def ignored(reason: str) -> float:
    value = REGISTRY.get_sample_value("fleet_command_responses_ignored_total", {"reason": reason})
    return value or 0.0


async def _meter_command(tapi: TaskApi, tenant: Tenant, uid: str, **options: object) -> dict:
    [device_id] = await tapi.meters(tenant, uid)
    return await tapi.commands.send(
        account_id=tenant.id,
        device_id=device_id,
        command_type="READ_REGISTER",
        payload={"obis": "1-0:1.8.0.255"},
        initiated_by="acme:alice",
        **options,  # type: ignore[arg-type]
    )


async def test_timeouts_acknowledgements_and_retries(tapi: TaskApi) -> None:
    await _every_seed_field_and_a_per_command_timeout(tapi)
    tapi.publisher.published.clear()
    await _acknowledged_then_times_out_without_a_resend(tapi)
    tapi.publisher.published.clear()
    await _retries_back_off_with_jitter(tapi)


async def _every_seed_field_and_a_per_command_timeout(tapi: TaskApi) -> None:
    acme = await tapi.seed.tenant("acme")
    row = await _meter_command(tapi, acme, "meter-1", timeout_seconds=5, max_retries=0)
    seed_fields = {
        "id",
        "device_id",
        "request_id",
        "sequence",
        "timestamp",
        "command_type",
        "command_data",
        "auth_level",
        "status",
        "sent_at",
        "acknowledged_at",
        "completed_at",
        "failed_at",
        "response_data",
        "response_code",
        "error_message",
        "retry_count",
        "max_retries",
        "next_retry_at",
        "initiated_by",
        "notes",
        "created_at",
        "updated_at",
    }
    assert seed_fields <= set(row)
    assert row["status"] == "SENT" and row["timeout_seconds"] == 5
    assert row["deadline_at"] == T0 + timedelta(seconds=5)
    assert row["sequence"] == 1 and row["initiated_by"] == "acme:alice"
    tapi.later(4)
    assert await tapi.commands.run_due() == 0
    tapi.later(2)
    assert await tapi.commands.run_due() == 1
    done = await tapi.commands.get(account_id=acme.id, command_id=row["id"])
    assert done is not None
    assert done["status"] == "TIMEOUT" and done["error_message"] == "no response within 5 s"
    assert done["failed_at"] == T0 + timedelta(seconds=6)
    # The single-command route takes a timeout and retries of its own too.
    panel = await tapi.seed.device(acme)
    sent = await tapi.client.post(
        f"/api/v1/devices/{panel}/commands",
        headers=acme.headers,
        json={**REBOOT, "timeout_seconds": 600, "max_retries": 0},
    )
    assert sent.status_code == 201, sent.text
    entry = await tapi.commands.get(account_id=acme.id, command_id=sent.json()["id"])
    assert entry is not None and entry["timeout_seconds"] == 600 and entry["max_retries"] == 0
    assert entry["deadline_at"] == tapi.now + timedelta(seconds=600)


async def _acknowledged_then_times_out_without_a_resend(tapi: TaskApi) -> None:
    start = tapi.now
    bob = await tapi.seed.tenant("bob")
    first = await _meter_command(tapi, bob, "meter-2", timeout_seconds=10, max_retries=3)
    [command] = tapi.hes_commands()
    tapi.later(1)
    assert await tapi.answer(command, "ACK") == "applied"
    assert await tapi.answer(command, "ACK") == "duplicate"
    row = await tapi.commands.get(account_id=bob.id, command_id=first["id"])
    assert row is not None and row["status"] == "ACKNOWLEDGED"
    assert row["acknowledged_at"] == start + timedelta(seconds=1)
    assert row["deadline_at"] == start + timedelta(seconds=11)  # waits for the result afresh
    tapi.later(11)
    assert await tapi.commands.run_due() == 1
    row = await tapi.commands.get(account_id=bob.id, command_id=first["id"])
    assert row is not None and row["status"] == "TIMEOUT" and row["retry_count"] == 0
    assert row["error_message"] == "no result within 10 s"
    assert len(tapi.hes_commands()) == 1  # never re-sent: the head-end had it


async def _retries_back_off_with_jitter(tapi: TaskApi) -> None:
    acme = await tapi.seed.tenant("carol")
    ids = await tapi.meters(acme, *[f"m-{i}" for i in range(20)])
    for device_id in ids:
        await tapi.commands.send(
            account_id=acme.id,
            device_id=device_id,
            command_type="PING",
            payload={},
            initiated_by=None,
            timeout_seconds=10,
            max_retries=2,
        )
    tapi.later(11)
    assert await tapi.commands.run_due() == 20
    async with tapi.engine.connect() as conn:
        rows = (
            await conn.execute(sa.select(command_log).where(command_log.c.command_type == "PING"))
        ).all()
    assert {r.status for r in rows} == {"PENDING"} and {r.retry_count for r in rows} == {1}
    delays = sorted((r.next_retry_at - tapi.now).total_seconds() for r in rows)
    assert delays[0] >= 4.5 and delays[-1] <= 5.5 and len(set(delays)) > 10  # 5 s ± 10 %
    assert {r.error_message for r in rows} == {"no response within 10 s; retry 1 of 2"}
    tapi.later(6)
    assert await tapi.commands.run_due() == 20
    assert len(tapi.hes_commands()) == 40
    sent_again = tapi.hes_commands()[20:]
    assert {c["commandId"] for c in sent_again} == {
        c["commandId"] for c in tapi.hes_commands()[:20]
    }


async def test_cancel_and_ignored_answers(tapi: TaskApi) -> None:
    await _cancel_a_command(tapi)
    await _unknown_or_garbage_answers_are_ignored(tapi)


async def _cancel_a_command(tapi: TaskApi) -> None:
    acme = await tapi.seed.tenant("acme")
    row = await _meter_command(tapi, acme, "meter-1")
    acme_headers = acme.headers
    other = await tapi.seed.tenant("other")
    url = f"/api/v1/commands/{row['id']}/cancel"
    assert (await tapi.client.post(url, headers=other.headers)).status_code == 404
    response = await tapi.client.post(url, headers=acme_headers, json={"initiated_by": "dave"})
    assert response.status_code == 200, response.text
    cancelled = response.json()
    assert cancelled["status"] == "CANCELLED"
    assert cancelled["error_message"] == "cancelled by acme:dave"
    assert {"timestamp", "notes", "timeout_seconds", "deadline_at", "task_id"} <= set(cancelled)
    again = await tapi.client.post(url, headers=acme_headers)
    assert again.status_code == 409
    assert again.json() == {"detail": f"command {row['id']} is already CANCELLED"}

    before = ignored("cancelled")
    assert await tapi.answer(tapi.hes_commands()[0], "SUCCESS") == "cancelled"
    assert ignored("cancelled") == before + 1
    after = await tapi.commands.get(account_id=acme.id, command_id=row["id"])
    assert after is not None and after["status"] == "CANCELLED"
    assert "ignored a SUCCESS response: the command was CANCELLED" in after["notes"]
    tapi.later(3600)
    assert await tapi.commands.run_due() == 0  # a cancelled command has no deadline
    missing = await tapi.client.post("/api/v1/commands/424242/cancel", headers=acme_headers)
    assert missing.status_code == 404


async def _unknown_or_garbage_answers_are_ignored(tapi: TaskApi) -> None:
    dora = await tapi.seed.tenant("dora")
    row = await _meter_command(tapi, dora, "meter-g")
    before = ignored("unknown")
    async with tapi.engine.begin() as conn:
        results = await apply_responses_in(
            conn,
            [
                Response("not-a-uuid", Answer.SUCCESS),
                Response("00000000-0000-0000-0000-000000000000", Answer.SUCCESS),
                Response(str(row["request_id"]), Answer.SUCCESS, device_uid="meter-other"),
                Response(str(row["request_id"]).upper(), Answer.SUCCESS, device_uid="meter-g"),
            ],
            tapi.now,
        )
    assert [r.result for r in results] == ["unknown", "unknown", "mismatch", "applied"]
    assert ignored("unknown") == before + 2


async def test_command_statistics(tapi: TaskApi) -> None:
    acme = await tapi.seed.tenant("acme")
    task_id = (await tapi.create(acme, {**SET_TOU, "devices": ["a", "b", "c", "d"]}))["taskId"]
    await tapi.dispatcher.run_once()
    sent = tapi.hes_commands()
    await tapi.answer(sent[0], "SUCCESS")
    await tapi.answer(sent[1], "SUCCESS")
    await tapi.answer(sent[2], "FAILED")
    panel = await tapi.seed.device(acme)
    await tapi.commands.send(
        account_id=acme.id,
        device_id=panel,
        command_type="SYSTEM",
        payload={"action": "REBOOT"},
        initiated_by=None,
    )
    response = await tapi.client.get("/api/v1/stats/commands", headers=acme.headers)
    assert response.status_code == 200, response.text
    stats = response.json()
    assert stats["since"] == (T0 - timedelta(days=7)).isoformat()
    by_type = {item["command_type"]: item for item in stats["items"]}
    assert by_type["SET_TOU"] == {
        "command_type": "SET_TOU",
        "total_commands": 4,
        "successful": 2,
        "failed": 1,
        "timeout": 0,
        "cancelled": 0,
        "in_flight": 1,
        "success_rate": 50.0,
    }
    assert by_type["SYSTEM"]["total_commands"] == 1 and by_type["SYSTEM"]["success_rate"] == 0.0
    # Periods select by creation time; another account sees nothing.
    later = await tapi.client.get(
        "/api/v1/stats/commands", headers=acme.headers, params={"since": "2026-03-02T00:00:00Z"}
    )
    assert later.json()["items"] == []
    other = await tapi.seed.tenant("other")
    assert (await tapi.client.get("/api/v1/stats/commands", headers=other.headers)).json()[
        "items"
    ] == []
    assert task_id
    for query in (
        {"since": "yesterday"},
        {"since": "2026-03-02T00:00:00Z", "until": "2026-03-01T00:00:00Z"},
    ):
        bad = await tapi.client.get("/api/v1/stats/commands", headers=acme.headers, params=query)
        assert bad.status_code == 422 and bad.json()["detail"]


async def test_registry_routes(tapi: TaskApi) -> None:
    acme = await tapi.seed.tenant("acme")
    other = await tapi.seed.tenant("other")
    created = await tapi.client.post(
        "/api/v1/devices",
        headers=acme.headers,
        json={"kind": "meter", "uid": "meter-9", "tags": ["north", "north", "pilot"]},
    )
    assert created.status_code == 201, created.text
    meter = created.json()
    assert meter["kind"] == "meter" and meter["uid"] == "meter-9"
    assert meter["tags"] == ["north", "pilot"]
    for headers, body, status, fragment in (
        (acme.headers, {"kind": "meter", "uid": "meter-9"}, 409, "already registered"),
        (other.headers, {"kind": "meter", "uid": "meter-9"}, 409, "already taken"),
        (acme.headers, {"kind": "alarm_panel", "uid": "x"}, 422, "kind"),
        (acme.headers, {"kind": "meter", "uid": "a/b"}, 422, "uid"),
        (acme.headers, {"kind": "meter"}, 422, "uid"),
    ):
        response = await tapi.client.post("/api/v1/devices", headers=headers, json=body)
        assert response.status_code == status, (body, response.text)
        assert fragment in response.json()["detail"]
    panel = await tapi.seed.device(acme)
    tagged = await tapi.client.put(
        f"/api/v1/devices/{panel}/tags", headers=acme.headers, json={"tags": ["lobby"]}
    )
    assert tagged.status_code == 200 and tagged.json()["tags"] == ["lobby"]
    foreign = await tapi.client.put(
        f"/api/v1/devices/{panel}/tags", headers=other.headers, json={"tags": ["x"]}
    )
    assert foreign.status_code == 404
    plan = await tapi.create(
        acme,
        {
            "commandType": "SYSTEM",
            "commandParams": {"action": "REBOOT"},
            "filter": {"tag": "lobby"},
            "dryRun": True,
        },
        status=200,
    )
    assert [d["id"] for d in plan["devices"]] == [panel]


@pytest.mark.postgres
async def test_two_workers_never_send_one_attempt_twice(pg_url: str) -> None:
    """Two ledgers and two dispatchers (separate engines: separate connections, as two processes
    have) work the same due retries and the same task at once; every attempt goes out once."""
    engines = [create_engine(pg_url), create_engine(pg_url)]
    publishers = [RecordingPublisher(), RecordingPublisher()]
    services = []
    for engine, publisher in zip(engines, publishers, strict=True):
        from fleet.integrations.meter_hes.transport import MeterHesTransport

        services.append(
            CommandService(
                engine,
                {"meter": MeterHesTransport(publisher)},
                timeout_seconds=10,
                max_retries=3,
                clock=lambda: T0,
            )
        )
    try:
        from fleet.services.tasks import TaskRequest, TaskService
        from fleet.store import accounts

        async with engines[0].begin() as conn:
            account_id = await accounts.create_account(conn, "acme")
        tasks_ = TaskService(engines[0], services[0])
        created = await tasks_.create(
            account_id,
            TaskRequest(
                "PING", {}, devices=[f"m-{i}" for i in range(300)], rate_per_second=100_000
            ),
        )
        dispatchers = [
            TaskDispatcher(engine, service, batch_max=25, slice_seconds=0.01)
            for engine, service in zip(engines, services, strict=True)
        ]
        await dispatchers[0].start_due()

        async def work(dispatcher: TaskDispatcher) -> int:
            # Like the job's ticks: a worker that finds the task held by the other comes back.
            while sum(d.dispatched for d in dispatchers) < 300:
                await dispatcher.dispatch(created["taskId"])
                await asyncio.sleep(0.001)
            return dispatcher.dispatched

        counts = await asyncio.wait_for(asyncio.gather(*(work(d) for d in dispatchers)), 30)
        assert sum(counts) == 300 and min(counts) > 0, counts
        first_round = [p.published[:] for p in publishers]
        # Everything times out; both ledgers retry at once.
        for service in services:
            service.clock = lambda: T0 + timedelta(seconds=11)
        await asyncio.gather(*(s.run_due(limit=1000) for s in services))
        for service in services:
            service.clock = lambda: T0 + timedelta(seconds=30)
        retried = await asyncio.gather(*(s.run_due(limit=1000) for s in services))
        assert sum(retried) == 300
        every = [topic for p in publishers for topic, _payload, _qos in p.published]
        assert len(every) == 600
        assert sorted(set(every)) == sorted(f"hes/m-{i}/command" for i in range(300))
        assert all(every.count(topic) == 2 for topic in set(every))
        assert all(len(first) > 0 for first in first_round)
        async with engines[0].connect() as conn:
            linked = await conn.scalar(
                sa.select(sa.func.count(sa.distinct(task_devices.c.command_id)))
            )
            assert linked == 300
    finally:
        for engine in engines:
            await engine.dispose()
