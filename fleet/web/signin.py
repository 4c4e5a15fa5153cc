"""Sign in with an account's API key (`POST /login`), sign out (`POST /logout`).

The key is checked once and never kept: the browser gets a session cookie instead (see auth.py).
Both forms refuse another site's Origin, so no page elsewhere can sign a visitor in or out.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from fleet.store.accounts import resolve_key
from fleet.web import sessions
from fleet.web.auth import SESSION_COOKIE, clear_session_cookie, same_origin, set_session_cookie
from fleet.web.context import Web, WebDep, signed_in
from fleet.web.overview import overview_page

router = APIRouter(include_in_schema=False)
_MAX_FORM_BYTES = 4096


def safe_next(value: str | None) -> str:
    """Where to go after signing in: a path on this site only, never another site."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def _sign_in_page(
    web: Web, *, error: str = "", next_url: str = "/", status: int = 200
) -> HTMLResponse:
    return web.templates.page(
        "signin.html",
        {"error": error, "next_url": next_url, "assets_built": web.templates.built},
        status_code=status,
    )


@router.get("/")
async def home(request: Request, web: WebDep) -> Response:
    """The overview when signed in, the sign-in form otherwise."""
    principal = await signed_in(request, web)
    if principal is None:
        return _sign_in_page(web, next_url=safe_next(request.query_params.get("next")))
    return await overview_page(request, web, principal)


@router.post("/login")
async def login(request: Request, web: WebDep) -> Response:
    if not same_origin(request):
        return _sign_in_page(web, error="Sign in from Fleet's own page.", status=403)
    body = await request.body()
    form = parse_qs(body[:_MAX_FORM_BYTES].decode("utf-8", "replace"))
    key = (form.get("key") or [""])[0].strip()
    next_url = safe_next((form.get("next") or ["/"])[0])
    async with web.ctx.engine.connect() as conn:
        principal = await resolve_key(conn, key) if key else None
    if principal is None or principal.key_kind != "api":
        error = (
            "That is an ingest token: it only lets devices report. Sign in with an API key."
            if principal is not None
            else "That key is not valid. Use an API key of your account (it starts with fleet_)."
        )
        return _sign_in_page(web, error=error, next_url=next_url, status=401)
    now = datetime.now(UTC)
    lifetime = timedelta(hours=web.ctx.settings.web_session_hours)
    async with web.ctx.engine.begin() as conn:
        await sessions.purge_expired(conn, now)
        session_id = await sessions.create_session(conn, principal.account_id, now, lifetime)
    response = RedirectResponse(next_url, status_code=303)
    set_session_cookie(response, request, web.ctx.settings, session_id)
    return response


@router.post("/logout")
async def logout(request: Request, web: WebDep) -> Response:
    if not same_origin(request):
        return Response("cross-origin request refused", status_code=403)
    session_id = request.cookies.get(SESSION_COOKIE)
    if session_id:
        async with web.ctx.engine.begin() as conn:
            await sessions.end_session(conn, session_id)
    response = RedirectResponse("/", status_code=303)
    clear_session_cookie(response, request, web.ctx.settings)
    return response
