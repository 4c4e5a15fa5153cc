"""Every bad input of the issue's quality bar is a clear 4xx that says what was wrong, and
nothing is stored or sent."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from fleet.store.tables_tasks import tasks
from tests.tasks.conftest import SET_TOU, TaskApi


async def _refused(
    tapi: TaskApi, headers: dict[str, str], body: Any, status: int, *fragments: str
) -> dict[str, Any]:
    response = await tapi.client.post("/api/v1/tasks", headers=headers, json=body)
    assert response.status_code == status, (body, response.text)
    answer = response.json()
    for fragment in fragments:
        assert fragment in answer["detail"], (fragment, answer)
    return answer


async def test_bad_task_requests(tapi: TaskApi) -> None:
    acme = await tapi.seed.tenant("acme")
    other = await tapi.seed.tenant("other")
    panel = await tapi.seed.device(acme)
    foreign_panel = await tapi.seed.device(other)
    await tapi.meters(acme, "meter-1")
    await tapi.meters(other, "meter-foreign")
    h = acme.headers
    cases: list[tuple[str, dict[str, Any], int, tuple[str, ...], list[str] | None]] = [
        # (what, body, status, fragments of detail, errors[0].loc)
        (
            "unknown command type",
            {"commandType": "SET_TOUU", "devices": ["meter-1"]},
            422,
            ("unknown command type 'SET_TOUU'", "SET_TOU", "SYSTEM"),
            ["body", "commandType"],
        ),
        (
            "missing parameter",
            {"commandType": "SET_TOU", "devices": ["meter-1"]},
            422,
            ("SET_TOU needs tou_profile_id",),
            ["body", "commandParams"],
        ),
        (
            "parameter of another command",
            {
                **SET_TOU,
                "commandParams": {"tou_profile_id": "x", "obis": "1-0:1.8.0"},
                "devices": ["meter-1"],
            },
            422,
            ("SET_TOU does not take obis",),
            ["body", "commandParams"],
        ),
        (
            "parameter of the wrong type",
            {
                "commandType": "SET_DEMAND_LIMIT",
                "commandParams": {"limit_kw": "lots"},
                "devices": ["meter-1"],
            },
            422,
            ("limit_kw must be a number",),
            ["body", "commandParams"],
        ),
        (
            "alarm-panel parameters that do not fit",
            {
                "commandType": "SYSTEM",
                "commandParams": {"action": "SELF_DESTRUCT"},
                "devices": [panel],
            },
            422,
            ("SELF_DESTRUCT",),
            ["body", "commandParams"],
        ),
        (
            "empty device list",
            {**SET_TOU, "devices": []},
            422,
            ("devices must not be empty",),
            ["body", "devices"],
        ),
        (
            "duplicate device list",
            {**SET_TOU, "devices": ["meter-1", "meter-2", "meter-1"]},
            422,
            ("duplicate device ids: meter-1",),
            ["body", "devices"],
        ),
        (
            "a device of another account (by id)",
            {
                "commandType": "SYSTEM",
                "commandParams": {"action": "REBOOT"},
                "devices": [panel, foreign_panel],
            },
            422,
            (f"devices not found in this account: {foreign_panel}",),
            ["body", "devices"],
        ),
        (
            "a meter of another account",
            {**SET_TOU, "devices": ["meter-1", "meter-foreign"]},
            422,
            ("devices not found in this account: meter-foreign",),
            ["body", "devices"],
        ),
        (
            "unknown alarm panel",
            {
                "commandType": "SYSTEM",
                "commandParams": {"action": "REBOOT"},
                "devices": ["AA:BB:CC:DD:EE:FF"],
            },
            422,
            ("devices not found in this account: AA:BB:CC:DD:EE:FF",),
            ["body", "devices"],
        ),
        (
            "a device of the wrong kind",
            {**SET_TOU, "devices": [panel]},
            422,
            ("SET_TOU goes to devices of kind meter", "(alarm_panel)"),
            ["body", "devices"],
        ),
        (
            "unparsable scheduledAt",
            {**SET_TOU, "devices": ["meter-1"], "scheduledAt": "tomorrow 2am"},
            422,
            ("scheduledAt must be an ISO 8601 date-time", "'tomorrow 2am'"),
            ["body", "scheduledAt"],
        ),
        (
            "scheduledAt of the wrong type",
            {**SET_TOU, "devices": ["meter-1"], "scheduledAt": 1746669600},
            422,
            ("scheduledAt must be an ISO 8601",),
            ["body", "scheduledAt"],
        ),
        ("no targets", {**SET_TOU}, 422, ("give either devices",), ["body"]),
        (
            "both targets",
            {**SET_TOU, "devices": ["meter-1"], "filter": {"kind": "meter"}},
            422,
            ("give either devices",),
            ["body"],
        ),
        (
            "empty filter",
            {**SET_TOU, "filter": {}},
            422,
            ("filter needs at least one",),
            ["body", "filter"],
        ),
        (
            "filter of a kind that cannot take it",
            {**SET_TOU, "filter": {"kind": "alarm_panel"}},
            422,
            ("devices of kind 'alarm_panel' cannot take this command",),
            ["body", "filter", "kind"],
        ),
        (
            "filter matching nothing",
            {**SET_TOU, "filter": {"tag": "nowhere"}},
            422,
            ("no device of this account matches",),
            ["body", "filter"],
        ),
        (
            "meter id that cannot be a topic",
            {**SET_TOU, "devices": ["meter/1"]},
            422,
            ("not valid meter ids", "meter/1"),
            ["body", "devices"],
        ),
        ("device id of the wrong type", {**SET_TOU, "devices": [1.5]}, 422, ("devices.0",), None),
        (
            "unknown field",
            {**SET_TOU, "devices": ["meter-1"], "priority": 1},
            422,
            ("priority",),
            None,
        ),
        (
            "rate of zero",
            {**SET_TOU, "devices": ["meter-1"], "ratePerSecond": 0},
            422,
            ("ratePerSecond",),
            None,
        ),
        (
            "abort share over 100 %",
            {**SET_TOU, "devices": ["meter-1"], "abort": {"failedPercent": 120}},
            422,
            ("abort.failedPercent",),
            None,
        ),
        ("not a JSON object", ["meter-1"], 422, ("expected a JSON object",), None),
    ]
    for what, body, status, fragments, loc in cases:
        answer = await _refused(tapi, h, body, status, *fragments)
        if loc is not None:
            assert answer["errors"][0]["loc"] == loc, what
    async with tapi.engine.connect() as conn:
        assert await conn.scalar(sa.select(sa.func.count()).select_from(tasks)) == 0
    assert tapi.publisher.published == []


async def test_conflicts_and_other_accounts(tapi: TaskApi) -> None:
    await _duplicate_correlation_id_is_a_conflict(tapi)
    await _tasks_of_another_account_are_not_found(tapi)
    await _rerun_and_cursor_conflicts(tapi)


async def _duplicate_correlation_id_is_a_conflict(tapi: TaskApi) -> None:
    acme = await tapi.seed.tenant("acme")
    first = await tapi.create(acme, {**SET_TOU, "devices": ["m-1"], "correlationId": "up-1"})
    answer = await _refused(
        tapi, acme.headers, {**SET_TOU, "devices": ["m-2"], "correlationId": "up-1"}, 409
    )
    assert answer["detail"] == f"a task with correlationId 'up-1' exists: {first['taskId']}"
    other = await tapi.seed.tenant("other")  # correlation ids are per account
    await tapi.create(other, {**SET_TOU, "devices": ["m-3"], "correlationId": "up-1"})


async def _tasks_of_another_account_are_not_found(tapi: TaskApi) -> None:
    acme = await tapi.seed.tenant("acme-2")
    other = await tapi.seed.tenant("other-2")
    task_id = (await tapi.create(acme, {**SET_TOU, "devices": ["n-1"]}))["taskId"]
    for method, url in (
        ("GET", f"/api/v1/tasks/{task_id}"),
        ("GET", f"/api/v1/tasks/{task_id}/devices"),
        ("POST", f"/api/v1/tasks/{task_id}/cancel"),
        ("POST", f"/api/v1/tasks/{task_id}/rerun"),
        ("GET", "/api/v1/tasks/no-such-task"),
    ):
        response = await tapi.client.request(method, url, headers=other.headers)
        assert response.status_code == 404, (method, url)
        assert response.json()["detail"].endswith("not found")
    listed = await tapi.client.get("/api/v1/tasks", headers=other.headers)
    assert listed.json() == {"items": [], "next_cursor": None}


async def _rerun_and_cursor_conflicts(tapi: TaskApi) -> None:
    acme = await tapi.seed.tenant("acme-3")
    task_id = (await tapi.create(acme, {**SET_TOU, "devices": ["p-1"]}))["taskId"]
    running = await tapi.client.post(f"/api/v1/tasks/{task_id}/rerun", headers=acme.headers)
    assert running.status_code == 409 and "re-run it once it has finished" in running.text
    await tapi.dispatcher.run_once()
    command = next(c for c in tapi.hes_commands() if c["deviceId"] == "p-1")
    await tapi.answer(command, "SUCCESS")
    await tapi.dispatcher.run_once()
    assert (await tapi.task(acme, task_id))["status"] == "COMPLETED"
    nothing = await tapi.client.post(f"/api/v1/tasks/{task_id}/rerun", headers=acme.headers)
    assert nothing.status_code == 409
    assert nothing.json()["detail"] == f"task {task_id} has no device in FAILED, TIMEOUT"
    finished = await tapi.client.post(f"/api/v1/tasks/{task_id}/cancel", headers=acme.headers)
    assert finished.status_code == 409 and "already COMPLETED" in finished.text
    for url in (f"/api/v1/tasks/{task_id}", f"/api/v1/tasks/{task_id}/devices", "/api/v1/tasks"):
        bad = await tapi.client.get(url, headers=acme.headers, params={"cursor": "nonsense"})
        assert bad.status_code == 400 and "invalid cursor" in bad.json()["detail"]
    bad_status = await tapi.client.get(
        f"/api/v1/tasks/{task_id}", headers=acme.headers, params={"status": "DONE"}
    )
    assert bad_status.status_code == 422
    bad_rerun = await tapi.client.post(
        f"/api/v1/tasks/{task_id}/rerun", headers=acme.headers, json={"statuses": ["SUCCESS"]}
    )
    assert bad_rerun.status_code == 422
