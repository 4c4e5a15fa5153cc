"""Every error leaves the API as JSON `{"detail": "<message>"}`, whatever raised it.

Validation errors add an `errors` list (where and what) next to a readable `detail`; unexpected
exceptions are logged with their traceback and answer a bare 500 so internals never leak.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.utils import is_body_allowed_for_status_code
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fleet.api.schemas import ErrorOut

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
# Routes that take bigger bodies: a bulk task lists up to 50,000 device ids (issue 3).
LARGER_BODIES = {"/api/v1/tasks": 4 * 1024 * 1024}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorOut}}


class NotFound(HTTPException):
    """Also what another account's ids answer: their existence is not ours to reveal."""

    def __init__(self, what: str, ident: int) -> None:
        super().__init__(status_code=404, detail=f"{what} {ident} not found")


class InvalidInput(HTTPException):
    """A 422 found past request validation, shaped like one: `detail` plus `errors`."""

    def __init__(self, detail: str, loc: Sequence[str], kind: str = "value_error") -> None:
        super().__init__(status_code=422, detail=detail)
        self.errors = [{"loc": list(loc), "msg": detail, "type": kind}]


def _where(loc: Sequence[Any]) -> str:
    # ('query', 'limit') -> 'query.limit'; the 'body' prefix of body fields says nothing useful.
    parts = [str(part) for part in loc]
    if len(parts) > 1 and parts[0] == "body":
        parts = parts[1:]
    return ".".join(parts)


def _plain_error(err: dict[str, Any]) -> dict[str, Any]:
    # Pydantic's raw errors may hold the offending input and exception objects: keep only the
    # parts a client can act on, all of them JSON-safe.
    kind = str(err.get("type", ""))
    if kind == "json_invalid":
        reason = (err.get("ctx") or {}).get("error", "")
        return {"loc": ["body"], "msg": f"invalid JSON: {reason}".rstrip(": "), "type": kind}
    loc = [str(part) for part in err.get("loc", ())]
    if loc == ["body"] and kind in {"missing", "model_attributes_type"}:
        # A missing body, or one that is not a JSON object (often a wrong Content-Type).
        msg = "expected a JSON object, sent with Content-Type: application/json"
        return {"loc": loc, "msg": msg, "type": kind}
    return {"loc": loc, "msg": str(err.get("msg", "")), "type": kind}


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if not is_body_allowed_for_status_code(exc.status_code):
        return Response(status_code=exc.status_code, headers=exc.headers)
    body: dict[str, Any] = {"detail": str(exc.detail)}
    if isinstance(exc, InvalidInput):
        body["errors"] = exc.errors
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [_plain_error(err) for err in exc.errors()]
    detail = "; ".join(f"{_where(err['loc'])}: {err['msg']}" for err in errors) or "invalid request"
    return JSONResponse({"detail": detail, "errors": errors}, status_code=422)


async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    # Retryable: the client did nothing wrong, and a 500 would page someone for an outage
    # the database's own monitoring already reports.
    log.warning("database unavailable on %s %s: %s", request.method, request.url.path, exc)
    return JSONResponse({"detail": "database unavailable, try again shortly"}, status_code=503)


async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"detail": "internal server error"}, status_code=500)


Handler = Callable[[Request, Any], Coroutine[Any, Any, Response]]
EXCEPTION_HANDLERS: dict[int | type[Exception], Handler] = {
    HTTPException: http_error,
    RequestValidationError: validation_error,
    # Refused or dropped connections (asyncpg raises ConnectionError unwrapped), a locked or
    # unreachable database, an exhausted pool.
    ConnectionError: database_unavailable,
    sa_exc.OperationalError: database_unavailable,
    sa_exc.TimeoutError: database_unavailable,
    Exception: unexpected_error,
}


class BodySizeLimit:
    """Refuse request bodies over `max_bytes` with a JSON 413.

    A declared Content-Length is refused before the app runs; a body streamed without one is
    counted as it is read, and the HTTPException raised mid-read reaches the JSON handler above
    (FastAPI re-raises HTTPExceptions from body parsing instead of calling them a bad body).
    """

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> HTTPException:
        return HTTPException(
            status_code=413, detail=f"request body larger than {self.max_bytes} bytes"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        larger = LARGER_BODIES.get(scope.get("path", ""))
        if larger is not None and larger != self.max_bytes:
            await BodySizeLimit(self.app, larger)(scope, receive, send)
            return
        declared = dict(scope.get("headers") or ()).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            response = JSONResponse({"detail": self._too_large().detail}, status_code=413)
            await response(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise self._too_large()
            return message

        await self.app(scope, counting_receive, send)
