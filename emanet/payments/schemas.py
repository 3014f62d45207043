"""Request and response bodies of the payments, saved cards, payouts and reconciliation routes."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from emanet.core.schemas import Money, MoneyOut, StrictModel
from emanet.payments.destinations import mask_destination
from emanet.payments.models import Payment, PaymentRefund, PaymentStatus, Payout, PayoutStatus, RefundStatus
from emanet.providers.base import METHODS


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an absolute http(s) URL")
    return value


class PaymentCreate(StrictModel):
    escrow_id: str = Field(max_length=40)
    amount: Money | None = Field(
        default=None, description="For a partial payment; default: the remaining due"
    )
    provider: str | None = Field(
        default=None, max_length=20, description="Default: the first configured provider offering the method"
    )
    method: str = Field(default="card", description=f"One of {', '.join(METHODS)}")
    saved_card_id: str | None = Field(default=None, max_length=40)
    save_card: bool = Field(default=False, description="Ask the provider to keep the card (token only)")
    return_url: str = Field(max_length=2000, description="Where the provider sends the browser back")
    country: str | None = Field(default=None, min_length=2, max_length=2, description="Payer's ISO country")

    _url = field_validator("return_url")(_http_url)

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        if value not in METHODS:
            raise ValueError(f"unknown method; use one of {', '.join(METHODS)}")
        return value


class PaymentRetry(StrictModel):
    return_url: str | None = Field(default=None, max_length=2000)

    @field_validator("return_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return _http_url(value) if value is not None else None


class NextActionOut(BaseModel):
    type: Literal["redirect", "three_d_secure", "client_secret", "iframe"]
    url: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)


class CardOut(BaseModel):
    brand: str
    last4: str


class PaymentOut(BaseModel):
    id: str
    escrow_id: str
    status: PaymentStatus
    amount: MoneyOut
    captured: MoneyOut
    refunded: MoneyOut
    fee: MoneyOut | None = Field(description="What the provider charged, once it reports it")
    provider: str
    method: str
    attempt: int = Field(description="Number of the provider attempt (retries add one)")
    provider_reference: str | None
    next_action: NextActionOut | None
    card: CardOut | None
    saved_card_id: str | None
    failure_code: str | None
    failure_message: str | None
    created_at: datetime
    updated_at: datetime
    succeeded_at: datetime | None

    @classmethod
    def of(cls, payment: Payment) -> PaymentOut:
        def money(amount: int) -> MoneyOut:
            return MoneyOut(amount=amount, currency=payment.currency)

        return cls(
            id=payment.id,
            escrow_id=payment.escrow_id,
            status=PaymentStatus(payment.status),
            amount=money(payment.amount),
            captured=money(payment.captured_amount),
            refunded=money(payment.refunded_amount),
            fee=money(payment.fee) if payment.fee is not None else None,
            provider=payment.provider,
            method=payment.method,
            attempt=payment.attempt,
            provider_reference=payment.provider_reference,
            next_action=NextActionOut(**payment.next_action) if payment.next_action else None,
            card=CardOut(brand=payment.card_brand or "unknown", last4=payment.card_last4)
            if payment.card_last4
            else None,
            saved_card_id=payment.saved_card_id,
            failure_code=payment.failure_code,
            failure_message=payment.failure_message,
            created_at=payment.created_at,
            updated_at=payment.updated_at,
            succeeded_at=payment.succeeded_at,
        )


class PaymentSummary(BaseModel):
    """A payment as the escrow detail lists it."""

    id: str
    status: PaymentStatus
    amount: MoneyOut
    refunded: MoneyOut
    provider: str
    method: str
    created_at: datetime
    succeeded_at: datetime | None

    @classmethod
    def of(cls, payment: Payment) -> PaymentSummary:
        return cls(
            id=payment.id,
            status=PaymentStatus(payment.status),
            amount=MoneyOut(amount=payment.amount, currency=payment.currency),
            refunded=MoneyOut(amount=payment.refunded_amount, currency=payment.currency),
            provider=payment.provider,
            method=payment.method,
            created_at=payment.created_at,
            succeeded_at=payment.succeeded_at,
        )


class RefundCreate(StrictModel):
    amount: Money | None = Field(default=None, description="Default: all that is left of the payment")
    reason: str = Field(min_length=3, max_length=2000)


class RefundOut(BaseModel):
    id: str
    payment_id: str
    escrow_id: str
    amount: MoneyOut
    status: RefundStatus
    provider: str
    provider_reference: str | None
    failure_message: str | None
    reason: str | None
    requested_by: str | None
    created_at: datetime
    succeeded_at: datetime | None

    @classmethod
    def of(cls, refund: PaymentRefund) -> RefundOut:
        return cls(
            id=refund.id,
            payment_id=refund.payment_id,
            escrow_id=refund.escrow_id,
            amount=MoneyOut(amount=refund.amount, currency=refund.currency),
            status=RefundStatus(refund.status),
            provider=refund.provider,
            provider_reference=refund.provider_reference,
            failure_message=refund.failure_message,
            reason=refund.reason,
            requested_by=refund.requested_by,
            created_at=refund.created_at,
            succeeded_at=refund.succeeded_at,
        )


class PaymentMethodOut(BaseModel):
    method: str
    providers: list[str] = Field(description="Configured providers offering it, in preference order")


class PaymentMethodsOut(BaseModel):
    currency: str
    country: str | None
    methods: list[PaymentMethodOut]


class WebhookAck(BaseModel):
    received: bool = True


class SavedCardOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    provider: str
    brand: str
    last4: str
    exp_month: int | None
    exp_year: int | None
    created_at: datetime


class PayoutCreate(StrictModel):
    amount: Money
    provider: str | None = Field(
        default=None,
        max_length=20,
        description="Default: the first configured provider that pays out the currency",
    )


class PayoutOut(BaseModel):
    id: str
    status: PayoutStatus
    amount: MoneyOut
    provider: str
    provider_reference: str | None
    destination: dict[str, Any] = Field(description="Masked")
    failure_message: str | None
    created_at: datetime
    updated_at: datetime
    settled_at: datetime | None

    @classmethod
    def of(cls, payout: Payout) -> PayoutOut:
        return cls(
            id=payout.id,
            status=PayoutStatus(payout.status),
            amount=MoneyOut(amount=payout.amount, currency=payout.currency),
            provider=payout.provider,
            provider_reference=payout.provider_reference,
            destination=mask_destination(payout.destination),
            failure_message=payout.failure_message,
            created_at=payout.created_at,
            updated_at=payout.updated_at,
            settled_at=payout.settled_at,
        )


class PayoutDestinationIn(StrictModel):
    type: Literal["iban", "bank_account", "upi", "paypal", "stripe_account"]
    name: str = Field(max_length=140, description="Account holder")
    iban: str | None = Field(default=None, max_length=50)
    account_number: str | None = Field(default=None, max_length=40)
    bank_code: str | None = Field(default=None, max_length=20, description="IFSC, routing number, sort code…")
    vpa: str | None = Field(default=None, max_length=320)
    email: str | None = Field(default=None, max_length=320)
    account_id: str | None = Field(default=None, max_length=60)
    country: str | None = Field(default=None, min_length=2, max_length=2)


class PayoutDestinationUpdate(StrictModel):
    destination: PayoutDestinationIn
    otp_code: str = Field(pattern=r"^\d{6}$", description="A payout_change code verified at /otp/verify")


class PayoutDestinationOut(BaseModel):
    destination: dict[str, Any] | None = Field(description="Masked")


class ReconciliationRun(StrictModel):
    provider: str = Field(max_length=20)
    date: date


class ReconciliationItemOut(BaseModel):
    issue: Literal["missing", "extra", "mismatched", "unverified"]
    kind: Literal["payment", "refund", "payout"]
    reference: str | None = None
    currency: str
    provider_amount: int | None = None
    our_amount: int | None = None
    provider_fee: int | None = None
    our_fee: int | None = None
    our_id: str | None = None
    occurred_at: str | None = None
    provider_status: str | None = Field(
        default=None, description="per_record: the payment's status at the provider (Emanet's vocabulary)"
    )
    error_code: str | None = Field(
        default=None, description="unverified: why the provider gave no answer, e.g. provider_unavailable"
    )
    error_detail: str | None = None


class ReconciliationReportOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    provider: str
    day: date
    method: Literal["listing", "per_record"] = Field(
        description="listing: the provider's settlement listing of the day; per_record: the provider was "
        "asked about each of our payments of the day (it publishes no listing), so `missing` cannot be "
        "detected and refunds and payouts are not checked (see `notes`)"
    )
    provider_records: int
    our_records: int
    matched: int
    missing: int
    extra: int
    mismatched: int
    unverified: int = Field(description="per_record: our payments the provider could not be asked about")
    items: list[ReconciliationItemOut]
    notes: str | None
    requested_by: str | None
    created_at: datetime
