"""Request and response bodies of the escrow routes."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from emanet.core.schemas import Money, MoneyOut, StrictModel
from emanet.escrow.models import EscrowStatus, FeePayer, MarketType
from emanet.payments.schemas import PaymentSummary


class EscrowCreate(StrictModel):
    buyer_id: str
    seller_id: str
    amount: Money
    title: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=5000)
    category: str = Field(default="general", max_length=50)
    market_type: MarketType = MarketType.product
    digital: bool = False
    fee_payer: FeePayer = FeePayer.buyer
    inspection_days: float | None = Field(default=None, ge=0, le=60)
    expires_at: datetime | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class Fees(BaseModel):
    platform_fee: MoneyOut
    buyer_pays: MoneyOut
    seller_pays: MoneyOut
    fee_payer: FeePayer
    total_due: MoneyOut = Field(description="What the buyer pays in: amount plus the buyer's fee share")
    seller_receives: MoneyOut = Field(description="What the seller receives on a release without penalty")


class Deadlines(BaseModel):
    expires_at: datetime | None
    hold_until: datetime | None
    auto_release_at: datetime | None
    dispute_deadline: datetime | None


class EscrowOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    number: str
    status: EscrowStatus
    buyer_id: str
    seller_id: str
    title: str
    description: str
    category: str
    market_type: MarketType
    digital: bool
    amount: MoneyOut
    fees: Fees
    funded: MoneyOut
    remaining_due: MoneyOut
    held: MoneyOut
    released: MoneyOut
    refunded: MoneyOut
    inspection_days: float
    satisfaction_rating: int | None
    delivery: dict[str, Any] | None
    dispute: dict[str, Any] | None
    deadlines: Deadlines
    accepted_at: datetime | None
    allowed_transitions: list[str]
    created_at: datetime
    updated_at: datetime


class LedgerLine(BaseModel):
    reference: str
    description: str
    amount: MoneyOut
    created_at: datetime


class EscrowDetail(EscrowOut):
    ledger: list[LedgerLine] = Field(description="Entries that moved this escrow's money")
    payments: list[PaymentSummary] = Field(description="Every payment made (or tried) for this escrow")


class StatusChange(StrictModel):
    status: EscrowStatus
    reason: str | None = Field(default=None, max_length=2000)
    rating: StrictInt | None = Field(default=None, ge=1, le=5)
    buyer_refund: StrictInt | None = Field(
        default=None, ge=0, description="For partially_refunded: to the buyer"
    )


class Delivery(StrictModel):
    tracking_number: str | None = Field(default=None, max_length=100)
    carrier: str | None = Field(default=None, max_length=100)
    note: str | None = Field(default=None, max_length=2000)
    document_ids: list[str] = Field(default_factory=list, max_length=20)


class Release(StrictModel):
    rating: StrictInt | None = Field(
        default=None, ge=1, le=5, description="Satisfaction 1..5 (seed 002 split)"
    )


class Cancel(StrictModel):
    reason: str | None = Field(default=None, max_length=2000)


class DisputeOpen(StrictModel):
    reason: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=5000)
    evidence_document_ids: list[str] = Field(default_factory=list, max_length=20)


class ActivityOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    action: str
    from_status: str | None
    to_status: str | None
    actor_id: str | None
    actor_role: str
    ip: str | None
    user_agent: str | None
    metadata: dict[str, Any] = Field(validation_alias="details")
    created_at: datetime


class Override(StrictModel):
    action: Literal["release", "refund", "cancel", "extend_deadline"]
    reason: str = Field(min_length=3, max_length=2000)
    deadline: Literal["expires_at", "auto_release_at", "dispute_deadline", "hold_until"] | None = None
    until: datetime | None = None
