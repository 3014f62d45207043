"""Background job of outbound webhooks: one delivery attempt per job."""

from __future__ import annotations

from emanet.core.tasks import JobContext, job
from emanet.webhooks import service


@job(service.DELIVER_JOB)
async def deliver_webhook(ctx: JobContext) -> None:
    """Payload ``{"delivery_id", "attempt"}`` (scheduled) or ``{"delivery_id", "manual": true}`` (redeliver).
    A failed HTTP attempt is not a job failure: the delivery schedules its own next attempt."""
    await service.attempt_delivery(
        ctx.database,
        ctx.settings,
        str(ctx.payload["delivery_id"]),
        expected_attempt=ctx.payload.get("attempt"),
        manual=bool(ctx.payload.get("manual")),
    )
