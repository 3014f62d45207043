"""Who is told what: one in-app notification per person per cause, copied by e-mail and SMS in their own jobs.

- every event: the parties named in its object (both buyer and seller on every escrow change; the owner
  of a webhook endpoint; the user of a payment or payout);
- a new or escalated dispute: every active admin too;
- reminders before deadlines (the ``notifications.reminders`` sweep).
E-mail goes to everyone with an address when SMTP is configured; SMS only for the kinds in ``SMS_KINDS``
and only to verified phones. Each copy is its own job, so a failing channel or person blocks nobody else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import aiosmtplib
import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from emanet.core import clock
from emanet.core.db import Database, new_id, upsert
from emanet.core.errors import NotFound
from emanet.core.models import Event
from emanet.core.outbox import enqueue
from emanet.core.schemas import newest_first_page
from emanet.core.settings import Settings
from emanet.notifications import sms
from emanet.notifications.audience import active_admin_ids, parties_of
from emanet.notifications.email import render_email, send_email
from emanet.notifications.messages import DEFAULT_LOCALE, LOCALES, render_message
from emanet.notifications.models import ChannelStatus, Notification, SmsMessage, SmsStatus
from emanet.users.models import User

log = structlog.get_logger("emanet.notifications")

EMAIL_JOB = "notifications.email"
SMS_JOB = "notifications.sms"
EMAIL_MAX_ATTEMPTS = 6
SMS_MAX_ATTEMPTS = 3
ADMIN_EVENTS = frozenset({"escrow.disputed", "dispute.opened", "dispute.escalated"})
SMS_KINDS = frozenset(
    {
        "escrow.funded",
        "escrow.released",
        "escrow.disputed",
        "escrow.resolved",
        "dispute.opened",
        "dispute.resolved",
        "payout.paid",
        "payout.failed",
        "reminder.auto_release",
    }
)
SMS_MAX_CHARS = 320


@dataclass(frozen=True)
class Notice:
    """One in-app notification to create; ``dedupe_key`` makes it once per person per cause."""

    user: User
    kind: str
    data: Mapping[str, Any]
    dedupe_key: str
    event_id: int | None = None


def _notification_row(settings: Settings, notice: Notice) -> dict[str, Any]:
    user = notice.user
    locale = user.locale if user.locale in LOCALES else DEFAULT_LOCALE
    title, body = render_message(notice.kind, notice.data, locale)
    wants_sms = notice.kind in SMS_KINDS and bool(user.phone) and user.phone_verified_at is not None
    return {
        "id": new_id("ntf"),
        "user_id": user.id,
        "kind": notice.kind,
        "title": title[:300],
        "body": body,
        "data": dict(notice.data),
        "event_id": notice.event_id,
        "dedupe_key": notice.dedupe_key,
        "locale": locale,
        "email_status": ChannelStatus.pending if user.email and settings.smtp_host else ChannelStatus.skipped,
        "sms_status": ChannelStatus.pending if wants_sms else ChannelStatus.skipped,
        "created_at": clock.now(),
    }


async def notify_all(
    session: AsyncSession, settings: Settings, notices: Sequence[Notice]
) -> list[Notification]:
    """Create the in-app notifications and queue their e-mail and SMS copies, in the order given; a notice
    whose ``dedupe_key`` exists is skipped (one statement: the insert skips duplicates and hands back the
    new rows)."""
    if not notices:
        return []
    rows = [_notification_row(settings, notice) for notice in notices]
    # An ORM bulk insert: one cached statement, its rows sent in batches. A multi-row VALUES built per call
    # was compiled again for every count of rows (a fifth of the worker's CPU in the benchmark's profile).
    # Rows come back in no set order and skipped ones not at all (hence no ``sort_by_parameter_order``,
    # which refuses a batch that returns fewer rows than it sent): the order is restored below.
    statement = (
        upsert(session, Notification)
        .on_conflict_do_nothing(index_elements=["dedupe_key"])
        .returning(Notification)
    )
    inserted = list((await session.scalars(statement, rows)).all())
    order = {notice.dedupe_key: position for position, notice in enumerate(notices)}
    created = sorted(inserted, key=lambda notification: order[notification.dedupe_key])
    for notification in created:
        if notification.email_status == ChannelStatus.pending:
            await enqueue(
                session, EMAIL_JOB, {"notification_id": notification.id}, max_attempts=EMAIL_MAX_ATTEMPTS
            )
        if notification.sms_status == ChannelStatus.pending:
            await enqueue(
                session, SMS_JOB, {"notification_id": notification.id}, max_attempts=SMS_MAX_ATTEMPTS
            )
    return created


async def notify_for_events(
    session: AsyncSession, settings: Settings, events: Sequence[Event]
) -> list[Notification]:
    """The notifications of ``events``: one per person each concerns (users read once for all of them)."""
    recipients_of = {event.id: parties_of(event.data) for event in events}
    if any(event.type in ADMIN_EVENTS for event in events):
        admins = await active_admin_ids(session)
        for event in events:
            if event.type in ADMIN_EVENTS:
                recipients_of[event.id].update(admins)
    everyone = set().union(*recipients_of.values())
    if not everyone:
        return []
    users = (
        (await session.execute(select(User).where(User.id.in_(everyone)).order_by(User.id))).scalars().all()
    )
    notices = [
        Notice(user, event.type, event.data, f"{event.public_id}:{user.id}", event.id)
        for event in events
        for user in users
        if user.id in recipients_of[event.id]
    ]
    return await notify_all(session, settings, notices)


# --- the caller's inbox ------------------------------------------------------------------------------------


async def list_notifications(
    session: AsyncSession, user: User, *, limit: int, cursor: str | None, unread_only: bool
) -> tuple[list[Notification], str | None]:
    query = select(Notification).where(Notification.user_id == user.id)
    if unread_only:
        query = query.where(Notification.read_at.is_(None))
    rows, next_cursor = await newest_first_page(session, query, Notification, limit=limit, cursor=cursor)
    return rows, next_cursor


async def mark_read(session: AsyncSession, user: User, notification_id: str) -> Notification:
    notification = await session.get(Notification, notification_id)
    if notification is None or notification.user_id != user.id:
        raise NotFound("No such notification")
    if notification.read_at is None:
        notification.read_at = clock.now()
        await session.flush()
    return notification


# --- channels (run by jobs; no transaction is held while talking to SMTP or an SMS provider) -------------


async def deliver_email(
    database: Database, settings: Settings, notification_id: str, *, attempt: int
) -> None:
    async with database.transaction() as session:
        notification = await session.get(Notification, notification_id)
        if notification is None or notification.email_status != ChannelStatus.pending:
            return
        user = await session.get(User, notification.user_id)
        if user is None or not user.email or not settings.smtp_host:
            notification.email_status = ChannelStatus.skipped
            return
        address = user.email
        email = render_email(
            locale=notification.locale,
            title=notification.title,
            body=notification.body,
            name=user.name,
            settings=settings,
        )
    try:
        message_id = await send_email(settings, to=address, email=email)
    except (aiosmtplib.SMTPException, OSError) as exc:
        if attempt < EMAIL_MAX_ATTEMPTS:
            raise  # the worker retries with backoff
        await _set_channel(database, notification_id, email_status=ChannelStatus.failed)
        log.error("notification_email_failed", notification_id=notification_id, error=str(exc))
        return
    await _set_channel(database, notification_id, email_status=ChannelStatus.sent)
    log.info("notification_emailed", notification_id=notification_id, message_id=message_id)


async def deliver_sms(database: Database, settings: Settings, notification_id: str) -> None:
    async with database.transaction() as session:
        notification = await session.get(Notification, notification_id)
        if notification is None or notification.sms_status != ChannelStatus.pending:
            return
        user = await session.get(User, notification.user_id)
        if user is None or not user.phone:
            notification.sms_status = ChannelStatus.skipped
            return
        text = f"{settings.product_name}: {notification.title}. {notification.body}"[:SMS_MAX_CHARS]
        common: dict[str, Any] = {
            "account_key": user.id,
            "to": user.phone,
            "masked_text": text,
            "purpose": "notification",
            "user_id": user.id,
        }
        if not await sms.within_hourly_cap(session, settings, user.id):
            sms.record_sms(session, **common, rejected_reason="hourly SMS cap reached")
            notification.sms_status = ChannelStatus.skipped
            log.warning("sms_cap_reached", user_id=user.id, notification_id=notification_id)
            return
        message = sms.record_sms(session, **common)
        message.status = SmsStatus.queued
        await session.flush()
        message_id, phone = message.id, user.phone
    try:
        receipt = await sms.build_gateway(settings).send(phone, text)
    except sms.SmsDeliveryFailed as failure:
        await _settle_sms(database, notification_id, message_id, failure=failure)
        log.error("notification_sms_failed", notification_id=notification_id, error=str(failure))
        return
    await _settle_sms(database, notification_id, message_id, receipt=receipt)


async def _settle_sms(
    database: Database,
    notification_id: str,
    message_id: str,
    *,
    receipt: sms.SmsReceipt | None = None,
    failure: sms.SmsDeliveryFailed | None = None,
) -> None:
    async with database.transaction() as session:
        message = await session.get(SmsMessage, message_id)
        notification = await session.get(Notification, notification_id)
        if message is not None:
            sms.apply_outcome(message, receipt=receipt, failure=failure)
        if notification is not None:
            notification.sms_status = ChannelStatus.sent if receipt else ChannelStatus.failed


_RECEIPT_STATUSES = {
    "queued": SmsStatus.queued,
    "accepted": SmsStatus.queued,
    "sending": SmsStatus.queued,
    "sent": SmsStatus.sent,
    "delivered": SmsStatus.delivered,
    "undelivered": SmsStatus.undelivered,
    "failed": SmsStatus.failed,
}
_FINAL_SMS = (SmsStatus.delivered, SmsStatus.undelivered, SmsStatus.failed)


async def record_sms_status(
    session: AsyncSession, *, provider: str, message_id: str, status: str, error_code: str | None
) -> bool:
    """A provider's delivery receipt; a final status is never overwritten by a late intermediate one."""
    mapped = _RECEIPT_STATUSES.get(status)
    message = (
        await session.execute(
            select(SmsMessage).where(
                SmsMessage.provider == provider, SmsMessage.provider_message_id == message_id
            )
        )
    ).scalar_one_or_none()
    if message is None or mapped is None or message.status in _FINAL_SMS:
        return False
    message.status = mapped
    message.updated_at = clock.now()
    if mapped == SmsStatus.delivered:
        message.delivered_at = clock.now()
    if error_code:
        message.error = f"{provider} error {error_code}"
    log.info("sms_status", sms_id=message.id, provider=provider, status=mapped)
    return True


async def _set_channel(database: Database, notification_id: str, **values: str) -> None:
    async with database.transaction() as session:
        notification = await session.get(Notification, notification_id)
        if notification is not None:
            for key, value in values.items():
                setattr(notification, key, value)


# --- reminders ---------------------------------------------------------------------------------------------


async def send_reminders(session: AsyncSession, settings: Settings, *, batch: int = 500) -> int:
    """Remind buyers of the deadlines ahead: unpaid escrows about to expire, inspections about to end in an
    automatic release. Each (escrow, deadline, person) is reminded once."""
    from emanet.escrow.models import Escrow, EscrowStatus

    now = clock.now()
    horizon = now + timedelta(hours=settings.reminder_lead_hours)
    checks = (
        (
            "reminder.payment_due",
            Escrow.expires_at,
            (EscrowStatus.pending_payment, EscrowStatus.partially_funded),
        ),
        ("reminder.auto_release", Escrow.auto_release_at, (EscrowStatus.funded, EscrowStatus.delivered)),
    )
    sent = 0
    for kind, deadline_column, statuses in checks:
        escrows = (
            (
                await session.execute(
                    select(Escrow)
                    .where(Escrow.status.in_(statuses), deadline_column > now, deadline_column <= horizon)
                    .order_by(deadline_column)
                    .limit(batch)
                )
            )
            .scalars()
            .all()
        )
        for escrow in escrows:
            deadline: datetime = getattr(escrow, deadline_column.key)
            buyer = await session.get(User, escrow.buyer_id)
            if buyer is None:
                continue
            data = {
                "id": escrow.id,
                "object": "escrow",
                "number": escrow.number,
                "title": escrow.title,
                "amount": (
                    max(0, escrow.total_due - escrow.funded_amount)
                    if kind == "reminder.payment_due"
                    else escrow.amount
                ),
                "currency": escrow.currency,
                "status": escrow.status,
                "deadline": deadline.isoformat(),
            }
            created = await notify_all(
                session,
                settings,
                [Notice(buyer, kind, data, f"{kind}:{escrow.id}:{deadline.isoformat()}:{buyer.id}")],
            )
            sent += len(created)
    return sent
