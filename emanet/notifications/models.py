"""In-app notifications (with the state of their e-mail and SMS copies) and the SMS delivery record."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from emanet.core import clock
from emanet.core.db import Base, TimestampMixin, new_id


class ChannelStatus(StrEnum):
    pending = "pending"
    sent = "sent"
    failed = "failed"
    skipped = "skipped"  # no address, not configured, or over the SMS cap


class SmsStatus(StrEnum):
    queued = "queued"  # accepted by the provider
    sent = "sent"
    delivered = "delivered"  # the provider's delivery receipt said so
    undelivered = "undelivered"
    failed = "failed"  # every provider refused or was unreachable
    rejected = "rejected"  # not sent by us (hourly cap)


class Notification(Base):
    __tablename__ = "notifications"
    __table_args__ = (Index("ix_notifications_user_created", "user_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("ntf"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(100))  # the event type, or "reminder.…"
    title: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    event_id: Mapped[int | None] = mapped_column(ForeignKey("events.id"))
    # One notification per (cause, person): the event id or the reminder's deadline, and the user.
    dedupe_key: Mapped[str] = mapped_column(String(200), unique=True)
    locale: Mapped[str] = mapped_column(String(5), default="en")
    email_status: Mapped[str] = mapped_column(String(16), default=ChannelStatus.skipped)
    sms_status: Mapped[str] = mapped_column(String(16), default=ChannelStatus.skipped)
    read_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=lambda: clock.now())


class SmsMessage(TimestampMixin, Base):
    """Every SMS we sent or tried to send. ``text_masked`` never holds a one-time code."""

    __tablename__ = "sms_messages"
    __table_args__ = (
        Index("ix_sms_messages_account_created", "account_key", "created_at"),
        Index("ix_sms_messages_provider_message", "provider", "provider_message_id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("sms"))
    account_key: Mapped[str] = mapped_column(String(64))  # the user id, or the phone before there is a user
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    to_phone: Mapped[str] = mapped_column(String(20))
    purpose: Mapped[str] = mapped_column(String(40))
    text_masked: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default=SmsStatus.queued)
    provider: Mapped[str | None] = mapped_column(String(20))
    provider_message_id: Mapped[str | None] = mapped_column(String(100))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(String(500))
    delivered_at: Mapped[datetime | None]


class EventDispatch(Base):
    """Marks an event as fanned out (webhook deliveries and notifications created). Events of one object
    are fanned out in id order, so deliveries to an endpoint are created in the order the events happened."""

    __tablename__ = "event_dispatches"

    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), primary_key=True)
    dispatched_at: Mapped[datetime] = mapped_column(default=lambda: clock.now())
