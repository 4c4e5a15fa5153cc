"""Bulk tasks through the API: create (202), document view, dispatch, answers, abort, cancel,
re-run and dry-run, on SQLite and PostgreSQL, with the clock under the test's control."""

from __future__ import annotations

import time

import sqlalchemy as sa

from fleet.store.tables import command_log, devices, events
from fleet.store.tables_tasks import task_devices, tasks
from tests.tasks.conftest import SET_TOU, TaskApi


async def _only_task(tapi: TaskApi) -> str:
    async with tapi.engine.connect() as conn:
        return str(await conn.scalar(sa.select(tasks.c.task_id)))


async def test_meter_task_lifecycle(tapi: TaskApi) -> None:
    acme = await tapi.seed.tenant("acme")
    await tapi.meters(acme, "meter-001")
    body = {
        **SET_TOU,
        "correlationId": "req-1",
        "scheduledAt": "2026-03-01T12:00:10Z",
        "devices": ["meter-001", "meter-002", "meter-003"],  # 002 and 003 are new: registered
        "requestedBy": "alice",
    }
    accepted = await tapi.create(acme, body)
    assert accepted["status"] == "ACCEPTED" and accepted["devices"] == 3
    assert accepted["registered"] == 2
    task_id = accepted["taskId"]

    doc = await tapi.task(acme, task_id)
    assert doc["status"] == "QUEUED" and doc["scheduledAt"] == "2026-03-01T12:00:10+00:00"
    assert doc["correlationId"] == "req-1" and doc["commandType"] == "SET_TOU"
    assert doc["counts"]["PENDING"] == 3 and doc["total"] == 3
    assert [d["deviceId"] for d in doc["devices"]] == ["meter-001", "meter-002", "meter-003"]
    assert {d["commandStatus"] for d in doc["devices"]} == {"PENDING"}

    # Before scheduledAt nothing moves.
    await tapi.dispatcher.run_once()
    assert tapi.publisher.published == []
    tapi.later(10)
    assert await tapi.dispatcher.run_once() == 3
    sent = tapi.hes_commands()
    assert [c["deviceId"] for c in sent] == ["meter-001", "meter-002", "meter-003"]
    assert {c["taskId"] for c in sent} == {task_id}
    assert sent[0]["commandType"] == "SET_TOU"
    assert sent[0]["params"] == {"tou_profile_id": "TOU-2025-TEST"}
    assert {t for t, _p, _q in tapi.publisher.published} == {
        f"hes/meter-00{i}/command" for i in (1, 2, 3)
    }
    doc = await tapi.task(acme, task_id)
    assert doc["status"] == "IN_PROGRESS" and doc["counts"]["SENT"] == 3

    assert await tapi.answer(sent[0], "ACK") == "applied"
    assert await tapi.answer(sent[0], "SUCCESS") == "applied"
    assert await tapi.answer(sent[1], "FAILED") == "applied"
    assert await tapi.answer(sent[1], "SUCCESS") == "finished"  # never applied twice
    await tapi.dispatcher.run_once()
    doc = await tapi.task(acme, task_id)
    by_id = {d["deviceId"]: d for d in doc["devices"]}
    assert by_id["meter-001"]["commandStatus"] == "SUCCESS"
    assert by_id["meter-002"]["commandStatus"] == "FAILED"
    assert by_id["meter-002"]["error"] == "meter refused"
    assert by_id["meter-003"]["commandStatus"] == "SENT"
    assert doc["status"] == "IN_PROGRESS"

    # meter-003 never answers: one retry (max_retries=1) after the 30 s timeout, then TIMEOUT.
    tapi.later(31)
    await tapi.commands.run_due()
    doc = await tapi.task(acme, task_id)
    assert {d["deviceId"]: d["commandStatus"] for d in doc["devices"]}["meter-003"] == "PENDING"
    tapi.later(10)  # past the backoff (5 s ± 10 %)
    await tapi.commands.run_due()
    retried = tapi.hes_commands()[-1]
    assert retried["deviceId"] == "meter-003" and retried["commandId"] == sent[2]["commandId"]
    tapi.later(31)
    await tapi.commands.run_due()
    await tapi.dispatcher.run_once()
    doc = await tapi.task(acme, task_id)
    assert doc["status"] == "FAILED" and doc["statusReason"] == "2 of 3 devices failed"
    assert doc["counts"] == {
        "PENDING": 0,
        "SENT": 0,
        "ACKNOWLEDGED": 0,
        "SUCCESS": 1,
        "FAILED": 1,
        "TIMEOUT": 1,
        "CANCELLED": 0,
    }
    assert doc["finishedAt"] is not None

    # Every device's command is an ordinary ledger entry, initiated by '<account>:<actor>'.
    async with tapi.engine.connect() as conn:
        rows = (await conn.execute(sa.select(command_log).order_by(command_log.c.id))).all()
        types = (await conn.execute(sa.select(events.c.type))).scalars().all()
    assert [r.status for r in rows] == ["COMPLETED", "FAILED", "TIMEOUT"]
    assert {r.initiated_by for r in rows} == {"acme:alice"} and {r.task_id for r in rows} == {
        task_id
    }
    assert rows[0].acknowledged_at is not None and rows[2].retry_count == 1
    assert "ignored a SUCCESS response: the command was FAILED" in rows[1].notes
    assert {"task.updated", "task.progress", "command.updated"} <= set(types)

    # Re-run only the failed devices: a new task for meter-002 and meter-003.
    rerun = await tapi.client.post(
        f"/api/v1/tasks/{task_id}/rerun", headers=acme.headers, json={"requestedBy": "bob"}
    )
    assert rerun.status_code == 202, rerun.text
    child = await tapi.task(acme, rerun.json()["taskId"])
    assert child["parentTaskId"] == task_id and child["requestedBy"] == "bob"
    assert [d["deviceId"] for d in child["devices"]] == ["meter-002", "meter-003"]


async def test_ten_thousand_devices_are_accepted_at_once(tapi: TaskApi) -> None:
    acme = await tapi.seed.tenant("acme")
    uids = [f"meter-{i:05d}" for i in range(10_000)]
    started = time.perf_counter()
    accepted = await tapi.create(acme, {**SET_TOU, "devices": uids})
    elapsed = time.perf_counter() - started
    assert accepted["devices"] == 10_000 and accepted["registered"] == 10_000
    print(f"POST /tasks with 10,000 new meters: {elapsed:.2f} s")
    async with tapi.engine.connect() as conn:
        assert await conn.scalar(sa.select(sa.func.count()).select_from(task_devices)) == 10_000
        assert await conn.scalar(sa.select(sa.func.count()).select_from(devices)) == 10_000
    # The document view pages through them in order; counts are of the whole task.
    task_id = accepted["taskId"]
    seen: list[str] = []
    cursor = None
    while True:
        doc = await tapi.task(acme, task_id, limit=1000, **({"cursor": cursor} if cursor else {}))
        assert doc["total"] == 10_000 and doc["counts"]["PENDING"] == 10_000
        seen += [d["deviceId"] for d in doc["devices"]]
        cursor = doc["next_cursor"]
        if cursor is None:
            break
    assert seen == uids
    listed = await tapi.client.get(
        f"/api/v1/tasks/{task_id}/devices",
        headers=acme.headers,
        params={"status": "PENDING", "limit": 500},
    )
    assert listed.status_code == 200 and len(listed.json()["items"]) == 500
    none_failed = await tapi.task(acme, task_id, status="FAILED")
    assert none_failed["devices"] == [] and none_failed["next_cursor"] is None
    page = await tapi.client.get("/api/v1/tasks", headers=acme.headers, params={"limit": 1})
    assert page.status_code == 200 and [t["taskId"] for t in page.json()["items"]] == [task_id]
    # The same meters again: found, not registered twice.
    again = await tapi.create(acme, {**SET_TOU, "devices": uids[:100]})
    assert again["registered"] == 0
    page = (
        await tapi.client.get("/api/v1/tasks", headers=acme.headers, params={"limit": 1})
    ).json()
    rest = await tapi.client.get(
        "/api/v1/tasks", headers=acme.headers, params={"cursor": page["next_cursor"]}
    )
    listed_ids = [t["taskId"] for t in page["items"] + rest.json()["items"]]
    assert sorted(listed_ids) == sorted([task_id, again["taskId"]])


async def test_dispatch_rate_and_abort_rule(tapi: TaskApi) -> None:
    acme = await tapi.seed.tenant("acme")
    uids = [f"r-{i}" for i in range(100)]
    await tapi.create(acme, {**SET_TOU, "devices": uids, "ratePerSecond": 20})
    dispatched = []
    for _ in range(8):  # 4 s of ticks every 0.5 s
        dispatched.append(await tapi.dispatcher.run_once())
        tapi.later(0.5)
    assert dispatched == [10] * 8
    assert len(tapi.hes_commands()) == 80
    await tapi.client.post(f"/api/v1/tasks/{(await _only_task(tapi))}/cancel", headers=acme.headers)
    tapi.publisher.published.clear()

    uids = [f"m-{i}" for i in range(40)]
    body = {
        **SET_TOU,
        "devices": uids,
        "ratePerSecond": 10,
        "abort": {"failedPercent": 50, "minFinished": 4},
    }
    task_id = (await tapi.create(acme, body))["taskId"]
    await tapi.dispatcher.run_once()
    first = tapi.hes_commands()
    assert len(first) == 5  # a half-second burst at 10/s
    for command in first[:4]:
        await tapi.answer(command, "FAILED")
    tapi.later(1)
    await tapi.dispatcher.run_once()
    doc = await tapi.task(acme, task_id)
    assert doc["status"] == "FAILED"
    assert doc["statusReason"].startswith("aborted: 4 of 4 finished devices failed")
    assert len(tapi.hes_commands()) == 5  # nothing more was sent
    assert doc["counts"]["CANCELLED"] == 35 and doc["counts"]["SENT"] == 1
    tapi.later(60)
    await tapi.dispatcher.run_once()
    assert len(tapi.hes_commands()) == 5


async def test_cancel_task_and_late_answers(tapi: TaskApi) -> None:
    acme = await tapi.seed.tenant("acme")
    uids = [f"m-{i}" for i in range(20)]
    task_id = (await tapi.create(acme, {**SET_TOU, "devices": uids, "ratePerSecond": 10}))["taskId"]
    await tapi.dispatcher.run_once()
    sent = tapi.hes_commands()
    assert len(sent) == 5
    await tapi.answer(sent[0], "SUCCESS")
    response = await tapi.client.post(
        f"/api/v1/tasks/{task_id}/cancel", headers=acme.headers, json={"requestedBy": "carol"}
    )
    assert response.status_code == 200, response.text
    doc = response.json()
    assert doc["status"] == "CANCELLED" and doc["statusReason"] == "task cancelled by acme:carol"
    assert doc["counts"]["SUCCESS"] == 1 and doc["counts"]["CANCELLED"] == 19
    # A late answer for a cancelled command is recorded and ignored.
    assert await tapi.answer(sent[1], "SUCCESS") == "cancelled"
    tapi.later(5)
    await tapi.dispatcher.run_once()
    await tapi.commands.run_due()
    assert len(tapi.hes_commands()) == 5
    again = await tapi.client.post(f"/api/v1/tasks/{task_id}/cancel", headers=acme.headers)
    assert again.status_code == 409
    assert again.json() == {"detail": f"task {task_id} is already CANCELLED"}
    async with tapi.engine.connect() as conn:
        statuses = (await conn.execute(sa.select(command_log.c.status))).scalars().all()
        [task] = (await conn.execute(sa.select(tasks))).all()
    assert sorted(statuses) == ["CANCELLED"] * 4 + ["COMPLETED"]
    assert task.status == "CANCELLED"


async def test_dry_run_then_a_zone_reboot_by_filter(tapi: TaskApi) -> None:
    acme = await tapi.seed.tenant("acme")
    await tapi.meters(acme, "meter-a", "meter-b", tags=["north"])
    await tapi.meters(acme, "meter-c")
    response = await tapi.client.post(
        "/api/v1/tasks",
        headers=acme.headers,
        json={**SET_TOU, "filter": {"tag": "north"}, "dryRun": True},
    )
    assert response.status_code == 200, response.text
    plan = response.json()
    assert plan["count"] == 2 and plan["wouldRegister"] == []
    assert [d["deviceId"] for d in plan["devices"]] == ["meter-a", "meter-b"]
    listed = await tapi.create(
        acme, {**SET_TOU, "devices": ["meter-c", "meter-new"], "dryRun": True}, status=200
    )
    assert listed["wouldRegister"] == ["meter-new"] and listed["count"] == 2
    async with tapi.engine.connect() as conn:
        assert await conn.scalar(sa.select(sa.func.count()).select_from(tasks)) == 0
        assert await conn.scalar(sa.select(sa.func.count()).select_from(devices)) == 3
    assert tapi.publisher.published == []
    await _filters_by_firmware_and_online(tapi)
    await _alarm_panel_reboot_of_a_zone(tapi)


async def _filters_by_firmware_and_online(tapi: TaskApi) -> None:
    ops = await tapi.seed.tenant("ops")
    old_online = await tapi.seed.device(ops, status={"firmware_version": "1.0", "is_online": True})
    await tapi.seed.device(ops, status={"firmware_version": "1.0", "is_online": False})
    await tapi.seed.device(ops, status={"firmware_version": "2.0", "is_online": True})
    never_reported = await tapi.seed.device(ops)  # no status row: counts as offline
    reboot = {"commandType": "SYSTEM", "commandParams": {"action": "REBOOT"}, "dryRun": True}

    async def reached(where: dict[str, object]) -> list[int]:
        plan = await tapi.create(ops, {**reboot, "filter": where}, status=200)
        return [d["id"] for d in plan["devices"]]

    assert await reached({"firmwareVersion": "1.0", "online": True}) == [old_online]
    assert len(await reached({"firmwareVersion": "1.0"})) == 2
    assert never_reported in await reached({"online": False, "kind": "alarm_panel"})
    assert len(await reached({"online": True})) == 2


async def _alarm_panel_reboot_of_a_zone(tapi: TaskApi) -> None:
    acme = await tapi.seed.tenant("zone-admin")
    in_zone = [await tapi.seed.device(acme, zone=7) for _ in range(3)]
    await tapi.seed.device(acme, zone=8)
    await tapi.meters(acme, "meter-z")
    body = {"commandType": "SYSTEM", "commandParams": {"action": "REBOOT"}, "filter": {"zone": 7}}
    task_id = (await tapi.create(acme, body))["taskId"]
    doc = await tapi.task(acme, task_id)
    assert doc["total"] == 3 and doc["target"] == {"filter": {"zone": 7}}
    await tapi.dispatcher.run_once()
    topics = [t for t, _p, _q in tapi.publisher.published]
    assert len(topics) == 3 and all(t.startswith("ns-zone-admin/pb/d/ESG_ALARM_") for t in topics)
    async with tapi.engine.connect() as conn:
        rows = (await conn.execute(sa.select(command_log))).all()
    assert sorted(r.device_id for r in rows) == in_zone
    assert {r.command_type for r in rows} == {"SYSTEM"}
