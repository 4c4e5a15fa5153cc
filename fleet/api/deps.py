"""Request dependencies: the service context, a database connection and the calling account."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Query
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.requests import HTTPConnection

from fleet.api.context import ApiContext
from fleet.api.errors import InvalidInput
from fleet.api.schemas import InputTime
from fleet.store.accounts import Principal, resolve_key
from fleet.web.auth import session_principal

# Ids are INTEGER columns: a larger number cannot exist, and asyncpg would refuse to bind it.
MAX_ID = 2**31 - 1

_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer <key>`.")


# HTTPConnection, not Request, here and in the auth dependencies: the same dependencies then
# authenticate a WebSocket handshake too (GET /api/v1/events/ws), key or session cookie alike.
def get_context(request: HTTPConnection) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx


ContextDep = Annotated[ApiContext, Depends(get_context)]


async def get_connection(ctx: ContextDep) -> AsyncIterator[AsyncConnection]:
    """One connection per request. Reads need nothing more; a route that writes calls
    `await conn.commit()` itself, so the commit happens before the response is sent and a
    failed commit is an error response, never a success that did not stick."""
    async with ctx.engine.connect() as conn:
        yield conn


ConnDep = Annotated[AsyncConnection, Depends(get_connection)]


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status_code=401, detail=detail, headers={"WWW-Authenticate": "Bearer"})


async def get_principal(
    ctx: ContextDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    request: HTTPConnection,
) -> Principal:
    if credentials is None:
        # The dashboard's session cookie (fleet/web/auth.py), with its CSRF rules.
        session = await session_principal(ctx.engine, request)
        if session is not None:
            return session
        raise _unauthorized("missing API key: send the header 'Authorization: Bearer <key>'")
    # Its own short connection: resolving the key must not keep one open for the whole request.
    async with ctx.engine.connect() as conn:
        principal = await resolve_key(conn, credentials.credentials)
    if principal is None:
        raise _unauthorized("invalid API key")
    if principal.key_kind != "api":
        raise _unauthorized(
            f"this is an {principal.key_kind} token: it can only report device data; "
            "the HTTP API needs an API key"
        )
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]

DeviceId = Annotated[int, Path(ge=1, le=MAX_ID, description="The device's database id.")]
AlarmId = Annotated[int, Path(ge=1, le=MAX_ID, description="The alarm event's id.")]
CommandId = Annotated[int, Path(ge=1, le=MAX_ID, description="The command's id.")]
DeviceFilter = Annotated[int | None, Query(ge=1, le=MAX_ID, description="Only this device's rows.")]


@dataclass(frozen=True, slots=True)
class TimeRange:
    since: datetime | None
    until: datetime | None


def get_time_range(
    since: Annotated[
        InputTime | None,
        Query(description="ISO 8601; from this moment on (inclusive). No offset means UTC."),
    ] = None,
    until: Annotated[
        InputTime | None,
        Query(description="ISO 8601; before this moment (exclusive). No offset means UTC."),
    ] = None,
) -> TimeRange:
    if since is not None and until is not None and since >= until:
        raise InvalidInput("since must be earlier than until", ("query", "until"))
    return TimeRange(since, until)


TimeRangeDep = Annotated[TimeRange, Depends(get_time_range)]
