"""Escrow deadlines acted on by the worker, through the same transition function as the API.

Each due escrow is handled in its own transaction; a sweep that runs twice (or on two workers at once)
is harmless because the transition re-checks the status under the row lock.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from emanet.core import clock
from emanet.core.errors import EmanetError
from emanet.core.outbox import emit_event
from emanet.core.tasks import JobContext, periodic
from emanet.escrow import service
from emanet.escrow.models import Escrow
from emanet.escrow.models import EscrowStatus as S

log = structlog.get_logger("emanet.escrow.tasks")


async def _each_due(
    ctx: JobContext,
    find: Callable[[AsyncSession, datetime], Awaitable[list[str]]],
    act: Callable[[AsyncSession, str], Awaitable[object]],
    name: str,
) -> int:
    async with ctx.database.transaction() as session:
        due = await find(session, clock.now())
    done = 0
    for escrow_id in due:
        try:
            async with ctx.database.transaction() as session:
                await act(session, escrow_id)
            done += 1
        except EmanetError as exc:  # the escrow moved on meanwhile (released, disputed…): nothing to do
            log.info("sweep_skipped", sweep=name, escrow_id=escrow_id, code=exc.code)
    if due:
        log.info("sweep_done", sweep=name, due=len(due), acted=done)
    return done


@periodic("escrow.auto_release", every=60)
async def auto_release(ctx: JobContext) -> None:
    """Release when the inspection period has ended (and the minimum hold has passed)."""

    async def find(session: AsyncSession, now: datetime) -> list[str]:
        return await service.due_for(session, Escrow.auto_release_at, [S.delivered], now)

    async def act(session: AsyncSession, escrow_id: str) -> object:
        return await service.apply_transition(
            session, escrow_id, S.released, service.Actor.system("timer:auto_release"), settings=ctx.settings
        )

    await _each_due(ctx, find, act, "auto_release")


@periodic("escrow.expire_unfunded", every=60)
async def expire_unfunded(ctx: JobContext) -> None:
    async def find(session: AsyncSession, now: datetime) -> list[str]:
        return await service.due_for(session, Escrow.expires_at, [S.pending_payment, S.partially_funded], now)

    async def act(session: AsyncSession, escrow_id: str) -> object:
        return await service.apply_transition(
            session, escrow_id, S.expired, service.Actor.system("timer:expiry"), settings=ctx.settings
        )

    await _each_due(ctx, find, act, "expire_unfunded")


@periodic("escrow.escalate_disputes", every=300)
async def escalate_disputes(ctx: JobContext) -> None:
    """Disputes unresolved after EMANET_DISPUTE_ESCALATION_HOURS are escalated to admins."""

    async def find(session: AsyncSession, now: datetime) -> list[str]:
        cutoff = now - timedelta(hours=ctx.settings.dispute_escalation_hours)
        rows = await session.execute(
            select(Escrow.id).where(
                Escrow.status == S.disputed,
                Escrow.dispute_escalated_at.is_(None),
                Escrow.disputed_at <= cutoff,
            )
        )
        return list(rows.scalars().all())

    async def act(session: AsyncSession, escrow_id: str) -> object:
        if await service.mark_dispute_escalated(session, escrow_id):
            escrow = await session.get_one(Escrow, escrow_id)
            await emit_event(session, "escrow.dispute_escalated", escrow_id, service.snapshot(escrow))
        return None

    await _each_due(ctx, find, act, "escalate_disputes")
