"""`mount_web(app)`: the dashboard's pages and static files on Fleet's FastAPI app."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

from fleet.api.context import ApiContext
from fleet.web import signin, tasks, views
from fleet.web.context import Web
from fleet.web.templating import STATIC, Templates


def mount_web(app: FastAPI) -> None:
    """Add the dashboard to `app` (from `build_api`), whose `/api/v1` the browser code calls
    with the session cookie."""
    ctx: ApiContext = app.state.ctx
    app.state.web = Web(ctx=ctx, templates=Templates(), app=app)
    app.include_router(signin.router)
    app.include_router(views.router)
    app.include_router(tasks.router)
    app.mount("/static", StaticFiles(directory=STATIC, check_dir=False), name="static")
