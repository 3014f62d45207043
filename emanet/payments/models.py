"""Payments, their provider attempts and refunds, saved cards, payouts, inbound provider events and
reconciliation reports.

No card number or CVC is ever stored anywhere here: a card is its provider token, brand, last four digits
and expiry.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Date, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from emanet.core import clock
from emanet.core.db import Base, TimestampMixin, new_id


class PaymentStatus(StrEnum):
    pending = "pending"
    requires_action = "requires_action"
    processing = "processing"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"
    refunded = "refunded"
    partially_refunded = "partially_refunded"


class RefundStatus(StrEnum):
    pending = "pending"  # allocated to the payment; not yet confirmed by the provider
    processing = "processing"  # the provider accepted it and will confirm later (webhook)
    succeeded = "succeeded"
    failed = "failed"  # the last attempt failed; the refund job tries again


class PayoutStatus(StrEnum):
    pending = "pending"  # money moved to in-transit; the provider call is not confirmed yet
    processing = "processing"  # the provider accepted it
    paid = "paid"
    failed = "failed"


class Payment(TimestampMixin, Base):
    """One payment of (part of) an escrow by its buyer. Retries are new attempts of it."""

    __tablename__ = "payments"
    __table_args__ = (
        Index("ix_payments_escrow", "escrow_id", "created_at"),
        Index("ix_payments_payer_created", "payer_id", "created_at", "id"),
        Index("ix_payments_status_checked", "status", "last_checked_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("pay"))
    escrow_id: Mapped[str] = mapped_column(ForeignKey("escrows.id"))
    payer_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    provider: Mapped[str] = mapped_column(String(20))
    method: Mapped[str] = mapped_column(String(20), default="card")
    amount: Mapped[int]  # what the buyer asked to pay, minor units
    currency: Mapped[str] = mapped_column(String(3))
    captured_amount: Mapped[int] = mapped_column(default=0)  # what the provider captured (funds the escrow)
    refunded_amount: Mapped[int] = mapped_column(default=0)  # confirmed by the provider
    fee: Mapped[int | None]  # the provider's fee, when it reports one
    status: Mapped[str] = mapped_column(String(24), default=PaymentStatus.pending)
    attempt: Mapped[int] = mapped_column(Integer, default=1)  # number of the current attempt
    provider_reference: Mapped[str | None] = mapped_column(String(200))  # of the current attempt
    next_action: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    return_url: Mapped[str] = mapped_column(String(2000))
    save_card: Mapped[bool] = mapped_column(default=False)
    saved_card_id: Mapped[str | None] = mapped_column(String(40))
    card_brand: Mapped[str | None] = mapped_column(String(20))
    card_last4: Mapped[str | None] = mapped_column(String(4))
    failure_code: Mapped[str | None] = mapped_column(String(64))
    failure_message: Mapped[str | None] = mapped_column(String(300))
    last_checked_at: Mapped[datetime | None]  # the last time we asked the provider (or it told us)
    succeeded_at: Mapped[datetime | None]


class PaymentAttempt(Base):
    """One request to the provider. ``key`` is the provider's idempotency key / merchant order id."""

    __tablename__ = "payment_attempts"
    __table_args__ = (
        UniqueConstraint("payment_id", "number", name="uq_payment_attempts_payment_number"),
        UniqueConstraint("provider", "provider_reference", name="uq_payment_attempts_provider_reference"),
        # Found by the reference alone too (webhooks, the browser's return): see migration 0009.
        Index("ix_payment_attempts_provider_reference", "provider_reference"),
    )

    key: Mapped[str] = mapped_column(String(64), primary_key=True)  # "{payment id}-{number}"
    payment_id: Mapped[str] = mapped_column(ForeignKey("payments.id"))
    number: Mapped[int] = mapped_column(Integer)
    provider: Mapped[str] = mapped_column(String(20))
    provider_reference: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(24), default=PaymentStatus.pending)
    failure_code: Mapped[str | None] = mapped_column(String(64))
    failure_message: Mapped[str | None] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(default=lambda: clock.now())
    updated_at: Mapped[datetime] = mapped_column(default=lambda: clock.now(), onupdate=lambda: clock.now())


class PaymentRefund(TimestampMixin, Base):
    """The part of an escrow refund (``escrow_reference``, the refund job's reference) sent back through one
    payment. The ledger moved the money when the refund was decided; this row tracks the provider side."""

    __tablename__ = "payment_refunds"
    __table_args__ = (
        UniqueConstraint("escrow_reference", "payment_id", name="uq_payment_refunds_reference_payment"),
        UniqueConstraint("provider", "provider_reference", name="uq_payment_refunds_provider_reference"),
        Index("ix_payment_refunds_payment", "payment_id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("re"))
    payment_id: Mapped[str] = mapped_column(ForeignKey("payments.id"))
    escrow_id: Mapped[str] = mapped_column(ForeignKey("escrows.id"))
    escrow_reference: Mapped[str] = mapped_column(String(200))
    idempotency_key: Mapped[str] = mapped_column(String(250), unique=True)
    provider: Mapped[str] = mapped_column(String(20))
    amount: Mapped[int]
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(16), default=RefundStatus.pending)
    provider_reference: Mapped[str | None] = mapped_column(String(200))
    failure_message: Mapped[str | None] = mapped_column(String(300))
    requested_by: Mapped[str | None] = mapped_column(String(40))  # the admin, for a refund asked for by hand
    reason: Mapped[str | None] = mapped_column(String(2000))
    succeeded_at: Mapped[datetime | None]


class SavedCard(Base):
    """A card the provider tokenized for the user: token, brand, last four, expiry. Nothing else."""

    __tablename__ = "saved_cards"
    __table_args__ = (
        UniqueConstraint("provider", "token", name="uq_saved_cards_provider_token"),
        Index("ix_saved_cards_user", "user_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("card"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    provider: Mapped[str] = mapped_column(String(20))
    token: Mapped[str] = mapped_column(String(200))
    brand: Mapped[str] = mapped_column(String(20))
    last4: Mapped[str] = mapped_column(String(4))
    exp_month: Mapped[int | None] = mapped_column(Integer)
    exp_year: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=lambda: clock.now())


class Payout(TimestampMixin, Base):
    __tablename__ = "payouts"
    __table_args__ = (
        UniqueConstraint("provider", "provider_reference", name="uq_payouts_provider_reference"),
        Index("ix_payouts_user_created", "user_id", "created_at", "id"),
        Index("ix_payouts_status_checked", "status", "last_checked_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("po"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    provider: Mapped[str] = mapped_column(String(20))
    amount: Mapped[int]
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(16), default=PayoutStatus.pending)
    destination: Mapped[dict[str, Any]] = mapped_column(JSON)  # the user's destination when requested
    provider_reference: Mapped[str | None] = mapped_column(String(200))
    failure_message: Mapped[str | None] = mapped_column(String(300))
    last_checked_at: Mapped[datetime | None]
    settled_at: Mapped[datetime | None]


class ProviderEvent(Base):
    """A verified inbound webhook, stored by ``(provider, event_id)`` BEFORE it is acted on: the unique
    constraint is what makes 20 concurrent deliveries of one event take effect once."""

    __tablename__ = "provider_events"
    __table_args__ = (
        UniqueConstraint("provider", "event_id", name="uq_provider_events_provider_event"),
        Index("ix_provider_events_reference", "provider", "object_reference"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    provider: Mapped[str] = mapped_column(String(20))
    event_id: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(16))  # payment, refund, payout, other
    status: Mapped[str | None] = mapped_column(String(24))
    object_reference: Mapped[str | None] = mapped_column(String(200))  # provider's id of the object
    outcome: Mapped[str] = mapped_column(String(24))  # applied, unchanged, unmatched, ignored
    detail: Mapped[str | None] = mapped_column(String(300))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    received_at: Mapped[datetime] = mapped_column(default=lambda: clock.now())


class ReconciliationReport(Base):
    """What one provider recorded on one day against our payments, refunds and payouts."""

    __tablename__ = "reconciliation_reports"
    __table_args__ = (Index("ix_reconciliation_reports_provider_day", "provider", "day", "created_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("rec"))
    provider: Mapped[str] = mapped_column(String(20))
    day: Mapped[date] = mapped_column(Date)
    provider_records: Mapped[int] = mapped_column(Integer)
    our_records: Mapped[int] = mapped_column(Integer)
    matched: Mapped[int] = mapped_column(Integer)
    missing: Mapped[int] = mapped_column(Integer)  # the provider has it, we don't
    extra: Mapped[int] = mapped_column(Integer)  # we have it, the provider doesn't
    mismatched: Mapped[int] = mapped_column(Integer)  # both have it, amounts differ
    unverified: Mapped[int] = mapped_column(Integer, default=0)  # per_record: the provider gave no answer
    # listing: the provider's settlement listing of the day; per_record: one status lookup per payment of
    # ours (the provider publishes no listing), which cannot find what only the provider has ("missing")
    method: Mapped[str] = mapped_column(String(16), default="listing")
    items: Mapped[list[Any]] = mapped_column(JSON)
    requested_by: Mapped[str | None] = mapped_column(String(40))
    notes: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=lambda: clock.now())
