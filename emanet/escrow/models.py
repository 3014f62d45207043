"""Escrows and their activity log."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text, func, text
from sqlalchemy.orm import Mapped, mapped_column

from emanet.core import clock
from emanet.core.db import Base, TimestampMixin, new_id


class EscrowStatus(StrEnum):
    pending_payment = "pending_payment"
    partially_funded = "partially_funded"
    funded = "funded"
    delivered = "delivered"
    disputed = "disputed"
    released = "released"
    refunded = "refunded"
    partially_refunded = "partially_refunded"
    cancelled = "cancelled"
    expired = "expired"


class MarketType(StrEnum):
    product = "product"
    service = "service"
    project = "project"


class FeePayer(StrEnum):
    buyer = "buyer"
    seller = "seller"
    shared = "split"  # 50/50; the member is not named "split" so it cannot shadow str.split


class Escrow(TimestampMixin, Base):
    __tablename__ = "escrows"
    __table_args__ = (
        Index("ix_escrows_buyer_created", "buyer_id", "created_at", "id"),
        Index("ix_escrows_seller_created", "seller_id", "created_at", "id"),
        Index("ix_escrows_status_created", "status", "created_at"),
        Index("ix_escrows_market_created", "market_type", "created_at"),
        Index("ix_escrows_created", "created_at", "id"),
        Index("ix_escrows_amount", "amount"),
        # The title search (`q`, a substring): by trigram, on PostgreSQL only (migration 0010).
        Index(
            "ix_escrows_title_trgm",
            func.lower(text("title")).label("lower_title"),
            postgresql_using="gin",
            postgresql_ops={"lower_title": "gin_trgm_ops"},
        ).ddl_if(dialect="postgresql"),
        Index("ix_escrows_auto_release_at", "auto_release_at"),
        Index("ix_escrows_expires_at", "expires_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("esc"))
    number: Mapped[str] = mapped_column(String(20), unique=True)
    buyer_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    seller_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    created_by: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(20), default=EscrowStatus.pending_payment)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    category: Mapped[str] = mapped_column(String(50), default="general")
    market_type: Mapped[str] = mapped_column(String(10), default=MarketType.product)
    is_digital: Mapped[bool] = mapped_column(default=False)
    requires_delivery_document: Mapped[bool] = mapped_column(default=False)
    currency: Mapped[str] = mapped_column(String(3))
    amount: Mapped[int]  # the price, in minor units
    fee_payer: Mapped[str] = mapped_column(String(10), default=FeePayer.buyer)
    platform_fee: Mapped[int] = mapped_column(default=0)
    buyer_fee: Mapped[int] = mapped_column(default=0)
    seller_fee: Mapped[int] = mapped_column(default=0)
    total_due: Mapped[int]  # what the buyer pays in: amount + buyer_fee
    funded_amount: Mapped[int] = mapped_column(default=0)
    released_amount: Mapped[int] = mapped_column(default=0)
    refunded_amount: Mapped[int] = mapped_column(default=0)
    # provider -> captured amount not yet refunded through it (refunds go back the way money came in)
    funding_sources: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    inspection_days: Mapped[float] = mapped_column(default=7.0)
    satisfaction_rating: Mapped[int | None] = mapped_column(Integer)
    delivery: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    resolution: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    accepted_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]
    funded_at: Mapped[datetime | None]
    hold_until: Mapped[datetime | None]
    delivered_at: Mapped[datetime | None]
    auto_release_at: Mapped[datetime | None]
    dispute_deadline: Mapped[datetime | None]
    disputed_at: Mapped[datetime | None]
    dispute_escalated_at: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]


class EscrowActivity(Base):
    """Append-only record of every transition and action on an escrow."""

    __tablename__ = "escrow_activities"
    __table_args__ = (Index("ix_escrow_activities_escrow", "escrow_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    escrow_id: Mapped[str] = mapped_column(ForeignKey("escrows.id"))
    action: Mapped[str] = mapped_column(String(50))
    from_status: Mapped[str | None] = mapped_column(String(20))
    to_status: Mapped[str | None] = mapped_column(String(20))
    actor_id: Mapped[str | None] = mapped_column(String(40))
    actor_role: Mapped[str] = mapped_column(String(20))
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(300))
    details: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=lambda: clock.now())


class EscrowNumberCounter(Base):
    """The transaction-number counter on SQLite; PostgreSQL uses the sequence ``escrow_number_seq``
    (no row lock shared by every creation). Numbers never repeat, so ``EM-{year}-{n}`` is unique per year."""

    __tablename__ = "escrow_number_counters"

    name: Mapped[str] = mapped_column(String(20), primary_key=True)
    last_value: Mapped[int] = mapped_column(default=0)
