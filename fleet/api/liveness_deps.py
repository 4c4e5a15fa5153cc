"""Dependencies of the liveness routes: the service, and the ingest-token principal of reporters."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import APIKeyQuery, HTTPAuthorizationCredentials, HTTPBearer

from fleet.api.context import ApiContext
from fleet.services.liveness import LivenessService, intervals_from
from fleet.store.accounts import resolve_key

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="IngestToken",
    description="An account's ingest token (`fleet accounts ingest-token NAME`).",
)
_query = APIKeyQuery(
    name="token",
    auto_error=False,
    scheme_name="IngestTokenQuery",
    description="The ingest token as `?token=`, for devices that can only send a plain GET.",
)


# The dependencies of the report route are `async def` on purpose: FastAPI runs a plain `def`
# dependency in a worker thread, a cost every one of thousands of reports a second would pay.


async def get_liveness(request: Request) -> LivenessService:
    """The app's liveness service (create_app shares the runtime's, whose jobs fire timers)."""
    return get_liveness_now(request)


def get_liveness_now(request: Request) -> LivenessService:
    service: LivenessService | None = getattr(request.app.state, "liveness", None)
    if service is None:
        ctx: ApiContext = request.app.state.ctx
        service = LivenessService(ctx.engine, intervals=intervals_from(ctx.settings))
        request.app.state.liveness = service
    return service


LivenessDep = Annotated[LivenessService, Depends(get_liveness)]


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status_code=401, detail=detail, headers={"WWW-Authenticate": "Bearer"})


async def get_report_token(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    token: Annotated[str | None, Depends(_query)],
) -> str:
    """The ingest token a reporter sent. Checked with its report, in the report's transaction
    (one query for a whole batch of reports); `refuse_token` says why one was refused."""
    key = credentials.credentials if credentials is not None else token
    if not key:
        raise _unauthorized(
            "missing ingest token: send 'Authorization: Bearer <token>' or ?token=<token>"
        )
    return key


ReportTokenDep = Annotated[str, Depends(get_report_token)]


async def refuse_token(request: Request, token: str) -> HTTPException | None:
    """The 401 for a token that is not an account's ingest token; None for a good one."""
    ctx: ApiContext = request.app.state.ctx
    async with ctx.engine.connect() as conn:
        principal = await resolve_key(conn, token)
    if principal is None:
        return _unauthorized("invalid ingest token")
    if principal.key_kind != "ingest":
        return _unauthorized(
            "reports need an ingest token (fleet accounts ingest-token NAME), not an API key"
        )
    return None
