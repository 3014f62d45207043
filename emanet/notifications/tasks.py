"""Jobs: fan an event out to webhooks and notifications; send e-mail and SMS copies; deadline reminders."""

from __future__ import annotations

import structlog
from sqlalchemy import exists, select

from emanet.core.models import Event
from emanet.core.outbox import DISPATCH_EVENT_JOB
from emanet.core.tasks import JobContext, job, periodic
from emanet.notifications import service
from emanet.notifications.locks import lock_names
from emanet.notifications.models import EventDispatch
from emanet.webhooks.service import fan_out

log = structlog.get_logger("emanet.notifications")


DISPATCH_BATCH = 50


@job(DISPATCH_EVENT_JOB, batch=DISPATCH_BATCH)
async def dispatch_event(ctx: JobContext) -> None:
    """Payload ``{"event_id", "object_id"}``: one delivery per subscribed endpoint, one notification per
    person, each followed by its own job. Dispatch jobs may run in any order on many workers, so a job
    first fans out any earlier event of the same object that is still waiting: an object's events always go
    out in order. Safe to run twice: an event is marked dispatched in the transaction that fans it out (the
    job is marked done in it too). The worker hands over up to ``DISPATCH_BATCH`` jobs at once: their
    objects are locked together, and endpoints, people and notifications read and written once for all."""
    async with ctx.transaction() as session:
        newest_of: dict[str, int] = {}  # object id -> the newest of its events named by a job
        for payload in ctx.payloads:
            event_id = int(payload["event_id"])
            object_id = payload.get("object_id")  # absent from jobs queued before it was added
            if object_id is None:
                event = await session.get(Event, event_id)
                if event is None:
                    log.warning("event_missing", event_id=event_id)
                    continue
                object_id = event.object_id
            newest_of[object_id] = max(event_id, newest_of.get(object_id, event_id))
        if not newest_of:
            return
        await lock_names(session, [f"dispatch:{object_id}" for object_id in newest_of])
        candidates = (
            await session.execute(
                select(Event)
                .where(
                    Event.object_id.in_(newest_of),
                    Event.id <= max(newest_of.values()),
                    ~exists().where(EventDispatch.event_id == Event.id),
                )
                .order_by(Event.id)
            )
        ).scalars()
        waiting = [event for event in candidates if event.id <= newest_of[event.object_id]]
        if not waiting:
            return
        deliveries = await fan_out(session, waiting)
        notifications = await service.notify_for_events(session, ctx.settings, waiting)
        session.add_all([EventDispatch(event_id=event.id) for event in waiting])
        await session.flush()
        log.info(
            "events_dispatched",
            events=[event.public_id for event in waiting],
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
