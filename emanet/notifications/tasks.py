"""Jobs: fan an event out to webhooks and notifications; send e-mail and SMS copies; deadline reminders."""

from __future__ import annotations

import structlog
from sqlalchemy import exists, select

from emanet.core.models import Event
from emanet.core.outbox import DISPATCH_EVENT_JOB
from emanet.core.tasks import JobContext, job, periodic
from emanet.notifications import service
from emanet.notifications.locks import lock_name
from emanet.notifications.models import EventDispatch
from emanet.webhooks.service import fan_out

log = structlog.get_logger("emanet.notifications")


@job(DISPATCH_EVENT_JOB)
async def dispatch_event(ctx: JobContext) -> None:
    """Payload ``{"event_id", "object_id"}``: one delivery per subscribed endpoint, one notification per
    person, each followed by its own job. Dispatch jobs may run in any order on many workers, so this one
    first fans out any earlier event of the same object that is still waiting: an object's events always go
    out in order. Safe to run twice: an event is marked dispatched in the transaction that fans it out (the
    job is marked done in it too)."""
    async with ctx.transaction() as session:
        event_id = int(ctx.payload["event_id"])
        object_id = ctx.payload.get("object_id")  # absent from jobs queued before it was added
        if object_id is None:
            event = await session.get(Event, event_id)
            if event is None:
                log.warning("event_missing", event_id=event_id)
                return
            object_id = event.object_id
        await lock_name(session, f"dispatch:{object_id}")
        waiting = (
            (
                await session.execute(
                    select(Event)
                    .where(
                        Event.object_id == object_id,
                        Event.id <= event_id,
                        ~exists().where(EventDispatch.event_id == Event.id),
                    )
                    .order_by(Event.id)
                )
            )
            .scalars()
            .all()
        )
        for pending in waiting:
            deliveries = await fan_out(session, pending)
            notifications = await service.notify_for_event(session, ctx.settings, pending)
            session.add(EventDispatch(event_id=pending.id))
            await session.flush()
            log.info(
                "event_dispatched",
                event_id=pending.public_id,
                type=pending.type,
                deliveries=len(deliveries),
                notifications=len(notifications),
            )


@job(service.EMAIL_JOB)
async def email_notification(ctx: JobContext) -> None:
    await service.deliver_email(
        ctx.database, ctx.settings, str(ctx.payload["notification_id"]), attempt=ctx.attempt
    )


@job(service.SMS_JOB)
async def sms_notification(ctx: JobContext) -> None:
    await service.deliver_sms(ctx.database, ctx.settings, str(ctx.payload["notification_id"]))


@periodic("notifications.reminders", every=900)
async def deadline_reminders(ctx: JobContext) -> None:
    async with ctx.database.transaction() as session:
        sent = await service.send_reminders(session, ctx.settings)
    log.info("reminders_sent", count=sent)
