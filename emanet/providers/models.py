"""The sandbox provider's own tables: the fake bank's ledger, not Emanet's.

Nothing here is read by the payments service; it talks to the sandbox only through the provider interface,
exactly as it talks to Stripe. No card number or CVC is ever stored: a card is its brand, last four digits,
expiry and (when saved) a ``tok_sandbox_…`` token.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from emanet.core import clock
from emanet.core.db import Base, TimestampMixin


class SandboxCard(Base):
    """A card the sandbox tokenized because the payer asked to save it."""

    __tablename__ = "sandbox_cards"

    token: Mapped[str] = mapped_column(String(40), primary_key=True)
    brand: Mapped[str] = mapped_column(String(20))
    last4: Mapped[str] = mapped_column(String(4))
    exp_month: Mapped[int]
    exp_year: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(default=lambda: clock.now())


class SandboxCharge(TimestampMixin, Base):
    __tablename__ = "sandbox_charges"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # the provider reference, ch_sandbox_…
    payment_id: Mapped[str] = mapped_column(String(64), unique=True)  # the merchant's idempotency key
    amount: Mapped[int]
    currency: Mapped[str] = mapped_column(String(3))
    description: Mapped[str] = mapped_column(String(500), default="")
    return_url: Mapped[str] = mapped_column(String(2000))
    status: Mapped[str] = mapped_column(String(24))
    # True while the 3-D Secure step is shown and awaits its code.
    three_d_secure_pending: Mapped[bool] = mapped_column(default=False)
    save_card: Mapped[bool] = mapped_column(default=False)
    failure_code: Mapped[str | None] = mapped_column(String(64))
    failure_message: Mapped[str | None] = mapped_column(String(300))
    card_brand: Mapped[str | None] = mapped_column(String(20))
    card_last4: Mapped[str | None] = mapped_column(String(4))
    card_exp_month: Mapped[int | None]
    card_exp_year: Mapped[int | None]
    card_token: Mapped[str | None] = mapped_column(ForeignKey("sandbox_cards.token"))
    fee: Mapped[int] = mapped_column(default=0)
    refunded_amount: Mapped[int] = mapped_column(default=0)
    succeeded_at: Mapped[datetime | None]
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)


class SandboxRefund(Base):
    __tablename__ = "sandbox_refunds"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # re_sandbox_…
    charge_id: Mapped[str] = mapped_column(ForeignKey("sandbox_charges.id"), index=True)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    amount: Mapped[int]
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=lambda: clock.now())


class SandboxPayout(TimestampMixin, Base):
    __tablename__ = "sandbox_payouts"
    __table_args__ = (Index("ix_sandbox_payouts_status_settles_at", "status", "settles_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # po_sandbox_…
    payout_id: Mapped[str] = mapped_column(String(64), unique=True)  # the merchant's idempotency key
    amount: Mapped[int]
    currency: Mapped[str] = mapped_column(String(3))
    destination_type: Mapped[str] = mapped_column(String(20))
    destination_last4: Mapped[str] = mapped_column(String(4))  # the bank keeps only what it needs to show
    status: Mapped[str] = mapped_column(String(16))  # processing, paid, failed
    failure_message: Mapped[str | None] = mapped_column(String(300))
    settles_at: Mapped[datetime]
    settled_at: Mapped[datetime | None]
