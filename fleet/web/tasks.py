"""The tasks pages: bulk commands (issue 3) as the API shows them, live on `task.*` events.

They read through the API's own route functions, so the pages show exactly the documents a
client of `/api/v1/tasks` gets.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from starlette.responses import Response

from fleet.api.routes import tasks as task_routes
from fleet.web.context import FRAGMENT_PARAM, ViewerDep, WebDep, base_context

router = APIRouter(include_in_schema=False)
TASKS_SHOWN = 50
DEVICES_SHOWN = 200
FINISHED = {"COMPLETED", "FAILED", "CANCELLED"}
# Device outcomes in the order a progress bar shows them.
OUTCOMES = ("SUCCESS", "FAILED", "TIMEOUT", "CANCELLED", "ACKNOWLEDGED", "SENT", "PENDING")
# Buttons that fill the new-task form with a common alarm-panel command.
PRESETS = [
    {"label": "Get status", "type": "SYSTEM", "params": {"action": "GET_STATUS"}},
    {"label": "Reboot", "type": "SYSTEM", "params": {"action": "REBOOT"}},
    {"label": "Self test", "type": "DIAGNOSTIC", "params": {"action": "SELF_TEST"}},
    {
        "label": "Siren off",
        "type": "OUTPUT",
        "params": {"output": "SIREN", "pattern": "OFF", "state": False},
    },
]


def _render(request: Request, web: WebDep, context: dict[str, Any], template: str) -> Response:
    fragment = request.query_params.get(FRAGMENT_PARAM)
    if fragment:
        return web.templates.fragment(template, fragment, context)
    return web.templates.page(template, context)


def progress(task: dict[str, Any]) -> list[tuple[str, int, float]]:
    """(outcome, count, percent of the task's devices) for each outcome it has."""
    total = max(int(task.get("total") or 0), 1)
    counts = task.get("counts") or {}
    return [
        (name, int(counts[name]), 100 * int(counts[name]) / total)
        for name in OUTCOMES
        if counts.get(name)
    ]


@router.get("/tasks")
async def tasks_page(request: Request, web: WebDep, principal: ViewerDep) -> Response:
    page = await task_routes.list_tasks(
        principal, web.ctx, status=None, limit=TASKS_SHOWN, cursor=None
    )
    context = await base_context(
        request,
        web,
        principal,
        "tasks",
        tasks=[item.model_dump() for item in page.items],
        more=page.next_cursor is not None,
        progress=progress,
        presets=PRESETS,
    )
    return _render(request, web, context, "tasks.html")


@router.get("/tasks/{task_id}")
async def task_page(task_id: str, request: Request, web: WebDep, principal: ViewerDep) -> Response:
    try:
        document = await task_routes.get_task(
            task_id[:36], principal, web.ctx, status=None, limit=DEVICES_SHOWN, cursor=None
        )
    except HTTPException as exc:
        if exc.status_code != 404:
            raise
        context = await base_context(
            request, web, principal, "tasks", message=f"There is no task {task_id[:36]}."
        )
        return web.templates.page("not_found.html", context, status_code=404)
    task = document.model_dump()
    context = await base_context(
        request,
        web,
        principal,
        "tasks",
        task=task,
        more=document.next_cursor is not None,
        progress=progress,
        finished=task["status"] in FINISHED,
        retryable=sum((task["counts"] or {}).get(s, 0) for s in ("FAILED", "TIMEOUT")),
    )
    return _render(request, web, context, "task.html")
