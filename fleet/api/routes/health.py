"""Liveness and metrics for operators and scrapers: no API key, no account data."""

from __future__ import annotations

import sqlalchemy as sa
from fastapi import APIRouter, HTTPException, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from fleet.api.deps import ContextDep
from fleet.api.schemas import ErrorOut, Health

router = APIRouter(tags=["operations"])


@router.get("/healthz", responses={503: {"model": ErrorOut}})
async def healthz(ctx: ContextDep) -> Health:
    """Answers ok once the database answers a `SELECT 1`."""
    try:
        async with ctx.engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))
    except Exception as exc:  # any failure to reach the database means not healthy
        raise HTTPException(status_code=503, detail="database unavailable") from exc
    return Health()


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
async def metrics() -> Response:
    """Prometheus text exposition of the process's default registry."""
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
