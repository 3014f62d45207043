"""Operator actions on the background queue: see parked (dead) jobs and run them again."""

from __future__ import annotations

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from emanet.core import clock
from emanet.core.errors import Conflict, NotFound
from emanet.core.models import Job
from emanet.core.schemas import decode_cursor, encode_cursor
from emanet.users.models import User

log = structlog.get_logger("emanet.admin")


async def list_jobs(
    session: AsyncSession, *, status: str | None, kind: str | None, limit: int, cursor: str | None
) -> tuple[list[Job], str | None]:
    """Newest first."""
    query = select(Job)
    if status:
        query = query.where(Job.status == status)
    if kind:
        query = query.where(Job.kind == kind)
    if cursor:
        query = query.where(Job.id < int(decode_cursor(cursor).get("id", 0)))
    rows = list((await session.execute(query.order_by(Job.id.desc()).limit(limit + 1))).scalars().all())
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor({"id": rows[-1].id})
    return rows, next_cursor


async def retry_job(session: AsyncSession, admin: User, job_id: int) -> Job:
    """Give a dead job a fresh set of attempts, due now. Handlers are idempotent, so this is always safe."""
    job = (await session.execute(select(Job).where(Job.id == job_id).with_for_update())).scalar_one_or_none()
    if job is None:
        raise NotFound("No such job")
    if job.status != "dead":
        raise Conflict(f"Only dead jobs can be retried; this one is {job.status}", code="job_not_dead")
    job.status = "pending"
    job.attempts = 0
    job.run_at = clock.now()
    job.finished_at = None
    job.locked_by = job.locked_until = None
    await session.flush()
    log.info(
        "job_retried_by_admin", job_id=job.id, kind=job.kind, admin_id=admin.id, last_error=job.last_error
    )
    return job
