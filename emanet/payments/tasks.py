"""Background work of the payments domain. Every handler opens its own short transactions and never holds
one across a provider call; all are safe to run twice."""

from __future__ import annotations

from datetime import date, timedelta

import structlog

from emanet.core import clock
from emanet.core.errors import EmanetError, ProviderError
from emanet.core.tasks import JobContext, job, periodic
from emanet.core.worker import enqueue_once
from emanet.payments import payouts, reconcile, service
from emanet.providers.registry import configured_providers, provider_class

log = structlog.get_logger("emanet.payments.tasks")

RECONCILE_JOB = "payments.reconcile"


@job(service.REFUND_JOB)
async def refund_for_escrow(ctx: JobContext) -> None:
    """Send an escrow refund's provider portion back through its payments; raises (so the worker retries and
    finally parks it for admins) while any provider refund is not accepted."""
    await service.refund_for_escrow(ctx.database, ctx.settings, ctx.payload)


@job(service.REFRESH_JOB)
async def refresh_payment(ctx: JobContext) -> None:
    """Ask the provider about one payment: its status if unsettled, its fee once succeeded."""
    await service.record_fee(ctx.database, ctx.settings, ctx.payload["payment_id"])


@periodic("payments.poll_pending", every=60)
async def poll_pending_payments(ctx: JobContext) -> None:
    """Payments whose webhook never came: ask the provider, apply the answer through the same transition."""
    for payment_id in await service.unsettled_payments(ctx.database, ctx.settings):
        try:
            payment = await service.refresh_payment(ctx.database, ctx.settings, payment_id)
        except (EmanetError, ProviderError) as exc:  # one provider's trouble must not stall the others
            log.warning("payment_poll_failed", payment_id=payment_id, error=exc.detail)
            continue
        log.info("payment_polled", payment_id=payment_id, status=payment.status)


@periodic("payments.poll_payouts", every=60)
async def poll_payouts(ctx: JobContext) -> None:
    for payout_id in await payouts.unsettled_payouts(ctx.database, ctx.settings):
        try:
            payout = await payouts.refresh_payout(ctx.database, ctx.settings, payout_id)
        except (EmanetError, ProviderError) as exc:
            log.warning("payout_poll_failed", payout_id=payout_id, error=exc.detail)
            continue
        log.info("payout_polled", payout_id=payout_id, status=payout.status)


@job(RECONCILE_JOB)
async def reconcile_day(ctx: JobContext) -> None:
    await reconcile.reconcile(
        ctx.database,
        ctx.settings,
        ctx.payload["provider"],
        date.fromisoformat(ctx.payload["date"]),
        requested_by=ctx.payload.get("requested_by"),
    )


def lists_settlements(name: str) -> bool:
    """Whether the provider is reconciled from its settlement listing (else per record)."""
    return reconcile.lists_settlements(provider_class(name))


@periodic("payments.reconcile_daily", every=3600)
async def reconcile_yesterday(ctx: JobContext) -> None:
    """Once a day per configured provider: reconcile yesterday (UTC), one job each — from the provider's
    settlement listing, or record by record where it publishes none (``emanet.payments.reconcile``)."""
    yesterday = (clock.now() - timedelta(days=1)).date().isoformat()
    async with ctx.database.transaction() as session:
        for name in configured_providers(ctx.settings):
            await enqueue_once(
                session,
                RECONCILE_JOB,
                {"provider": name, "date": yesterday},
                dedupe_key=f"{RECONCILE_JOB}:{name}:{yesterday}",
            )
