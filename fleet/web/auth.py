"""The dashboard's session cookie: who a browser request acts for, and the CSRF rules.

The cookie holds a random session id (fleet/web/sessions.py); it is HttpOnly, SameSite=Strict and
Secure over https. A request authenticated by the cookie that changes state must also carry the
`X-Fleet-CSRF` header (any value): a cross-site form cannot set a header, and a cross-site script
cannot either without a CORS preflight that Fleet never grants. An `Origin` other than Fleet's own
is refused outright (this also covers WebSocket handshakes, which CORS does not).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from fastapi import HTTPException
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from fleet.config import Settings
from fleet.store.accounts import Principal
from fleet.web.sessions import resolve_session

SESSION_COOKIE = "fleet_session"
CSRF_HEADER = "X-Fleet-CSRF"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def same_origin(connection: HTTPConnection) -> bool:
    """False when the browser says the request comes from another site; True when it says
    nothing (non-browser clients, same-origin GETs)."""
    origin = connection.headers.get("origin")
    if origin is None:
        return True
    host = connection.headers.get("host", "")
    return origin != "null" and urlsplit(origin).netloc.lower() == host.lower()


def cookie_secure(settings: Settings, connection: HTTPConnection) -> bool:
    mode = settings.web_cookie_secure
    return mode == "always" or (mode == "auto" and connection.url.scheme in {"https", "wss"})


def set_session_cookie(
    response: Response, request: Request, settings: Settings, session_id: str
) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        session_id,
        max_age=int(timedelta(hours=settings.web_session_hours).total_seconds()),
        path="/",
        httponly=True,
        samesite="strict",
        secure=cookie_secure(settings, request),
    )


def clear_session_cookie(response: Response, request: Request, settings: Settings) -> None:
    response.delete_cookie(
        SESSION_COOKIE,
        path="/",
        httponly=True,
        samesite="strict",
        secure=cookie_secure(settings, request),
    )


async def session_principal(engine: AsyncEngine, connection: HTTPConnection) -> Principal | None:
    """The account the request's session cookie signs in; None when it carries no cookie.

    A cookie that names no live session answers 401; a state change authenticated by the cookie
    without the CSRF header, or from another origin, answers 403.
    """
    session_id = connection.cookies.get(SESSION_COOKIE)
    if not session_id:
        return None
    if not same_origin(connection):
        raise HTTPException(status_code=403, detail="cross-origin request refused")
    method = connection.scope.get("method", "GET")  # a WebSocket handshake has none
    if method not in SAFE_METHODS and CSRF_HEADER.lower() not in connection.headers:
        raise HTTPException(
            status_code=403,
            detail=f"a request signed in by the session cookie must send the {CSRF_HEADER} header",
        )
    # Its own short connection, like an API key: the session must not hold one for the request.
    async with engine.connect() as conn:
        principal = await resolve_session(conn, session_id, datetime.now(UTC))
    if principal is None:
        raise HTTPException(
            status_code=401,
            detail="the dashboard session ended or expired: sign in again",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return principal
