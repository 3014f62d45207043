"""Admin routes (role admin; support may read). Other domains add their admin routes in their own routers
or here, under /api/v1/admin."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from emanet.admin import service
from emanet.admin.dashboard import DashboardStats, StatsCache, dashboard_stats
from emanet.admin.export import EXPORTERS, escrow_batches
from emanet.admin.schemas import JobOut
from emanet.core import clock
from emanet.core.auth import AdminPrincipal, StaffPrincipal
from emanet.core.errors import Unprocessable
from emanet.core.schemas import Page
from emanet.core.session import DbSession
from emanet.escrow.models import EscrowStatus, MarketType
from emanet.escrow.service import EscrowFilters

router = APIRouter(prefix="/api/v1/admin", tags=["admin"])


@router.get("/jobs", response_model=Page[JobOut])
async def list_jobs(
    _: StaffPrincipal,
    session: DbSession,
    status: Literal["pending", "running", "done", "dead"] | None = None,
    kind: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> Page[JobOut]:
    rows, next_cursor = await service.list_jobs(session, status=status, kind=kind, limit=limit, cursor=cursor)
    return Page(data=[JobOut.model_validate(row) for row in rows], next_cursor=next_cursor)


@router.post("/jobs/{job_id}/retry", response_model=JobOut)
async def retry_job(job_id: int, principal: AdminPrincipal, session: DbSession) -> JobOut:
    return JobOut.model_validate(await service.retry_job(session, principal.user, job_id))


def _stats_cache(request: Request) -> StatsCache:
    """One cache per application (in-process fallback when Redis is not configured)."""
    state = request.app.state
    if getattr(state, "dashboard_stats_cache", None) is None:
        state.dashboard_stats_cache = StatsCache(state.redis, state.settings.redis_key_prefix)
    cache: StatsCache = state.dashboard_stats_cache
    return cache


@router.get("/dashboard/stats", response_model=DashboardStats)
async def get_dashboard_stats(
    _: StaffPrincipal,
    session: DbSession,
    request: Request,
    fresh: Annotated[bool, Query(description="Recompute now instead of the 5-minute cache")] = False,
) -> DashboardStats:
    return await dashboard_stats(session, _stats_cache(request), fresh=fresh)


@router.get(
    "/escrows/export",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "CSV or XLSX, one row per escrow, amounts in minor units",
            "content": {"text/csv": {}, EXPORTERS["xlsx"][0]: {}},
        }
    },
)
async def export_escrows(
    _: StaffPrincipal,
    request: Request,
    format_: Annotated[Literal["csv", "xlsx"], Query(alias="format")] = "csv",
    status_: Annotated[str | None, Query(alias="status", description="comma-separated statuses")] = None,
    market_type: MarketType | None = None,
    created_from: datetime | None = None,
    created_to: datetime | None = None,
    amount_min: Annotated[int | None, Query(ge=0)] = None,
    amount_max: Annotated[int | None, Query(ge=0)] = None,
    q: Annotated[str | None, Query(max_length=200)] = None,
    user: str | None = None,
    currency: Annotated[str | None, Query(min_length=3, max_length=3)] = None,
) -> StreamingResponse:
    """Every escrow matching the filters of ``GET /api/v1/admin/escrows``, oldest first, streamed."""
    statuses = [s.strip() for s in (status_ or "").split(",") if s.strip()]
    unknown = [s for s in statuses if s not in set(EscrowStatus)]
    if unknown:
        raise Unprocessable(f"Unknown status {', '.join(unknown)}", code="invalid_filter")
    filters = EscrowFilters(
        status=statuses,
        market_type=market_type,
        created_from=created_from,
        created_to=created_to,
        amount_min=amount_min,
        amount_max=amount_max,
        q=q,
        user_id=user,
        currency=currency,
    )
    media_type, render = EXPORTERS[format_]
    filename = f"escrows-{clock.now().strftime('%Y%m%dT%H%M%SZ')}.{format_}"
    rows = escrow_batches(request.app.state.database, filters)
    return StreamingResponse(
        render(rows),
        media_type=media_type,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
