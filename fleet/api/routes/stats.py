"""Statistics of seed 001: command success rate per command type over a period."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter

from fleet.api.deps import ConnDep, ContextDep, PrincipalDep, TimeRangeDep
from fleet.api.task_schemas import CommandStatsOut
from fleet.store import command_stats

router = APIRouter(prefix="/stats", tags=["statistics"])

# Without `since`: the last 7 days, as the seed's query.
DEFAULT_PERIOD = timedelta(days=7)


@router.get("/commands")
async def command_success_rate(
    principal: PrincipalDep, conn: ConnDep, ctx: ContextDep, period: TimeRangeDep
) -> CommandStatsOut:
    """Commands created in the period, per command type: how many completed, failed, timed
    out, were cancelled or are still in flight, and the success rate (completed / all, %)."""
    since = period.since or ctx.commands.clock() - DEFAULT_PERIOD
    items = await command_stats.by_command_type(conn, principal.account_id, since, period.until)
    return CommandStatsOut.model_validate({"since": since, "until": period.until, "items": items})
