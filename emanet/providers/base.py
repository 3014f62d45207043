"""The one interface every payment provider adapter implements.

Conventions shared by every adapter (the payments service relies on them):

- Money is always integer minor units of an ISO 4217 currency (``amount=1050, currency="TRY"`` is 10.50 TRY);
  adapters convert to the provider's wire format (PayPal decimal strings, etc.) themselves.
- ``CreatePayment.payment_id`` (our ``pay_…``) is sent to the provider as its idempotency key, so asking
  twice — including after a timeout — never charges twice.
- Statuses are ours, not the provider's: ``PaymentStatus``, ``RefundStatus``, ``PayoutStatus``.
- A *decline* of a payment the provider accepted to process (card declined, insufficient funds, 3-D Secure
  failed) is not an exception: ``create_payment``/``get_payment`` return ``status="failed"`` with
  ``failure_code``/``failure_message``.
- Exceptions (all are ``ProviderError``, rendered as problem+json):
  ``ProviderUnavailable`` — transient (timeout, connection error, 5xx, 429) after the retries in
  ``emanet.providers.http``; the outcome of a create/refund/payout is UNKNOWN, so retry later with the same
  idempotency key or poll. ``ProviderDeclined`` — the provider definitively refused the request (bad
  parameters, refund larger than the charge, invalid payout destination); retrying the same request will
  fail again. ``UnsupportedOperation`` — the provider (or Emanet's adapter) lacks the capability; nothing
  was sent. ``ProviderNotConfigured`` — credentials for the provider are not set.
  ``InvalidWebhookSignature`` (400, not a ``ProviderError``) — an inbound webhook must be rejected.
- Webhooks: ``parse_webhook`` first checks the remote IP against ``settings.webhook_ip_allowlist[name]``
  (when configured), then the provider's signature in constant time, then the timestamp window
  (``settings.webhook_tolerance_seconds``, default 300 s, measured with ``emanet.core.clock``) where the
  scheme signs a timestamp. ``WebhookEvent.event_id`` is stable across redeliveries of the same event
  (the payments service stores events by ``(provider, event_id)`` so each takes effect once).
"""

from __future__ import annotations

import hmac
import ipaddress
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, ClassVar, Literal, TypedDict

from emanet.core import clock
from emanet.core.db import Database
from emanet.core.errors import EmanetError, ProviderError
from emanet.core.settings import Settings

PaymentStatus = Literal[
    "pending",
    "requires_action",
    "processing",
    "succeeded",
    "failed",
    "cancelled",
    "refunded",
    "partially_refunded",
]
RefundStatus = Literal["pending", "succeeded", "failed"]
PayoutStatus = Literal["pending", "processing", "paid", "failed"]
NextActionType = Literal["redirect", "three_d_secure", "client_secret", "iframe"]
WebhookKind = Literal["payment", "refund", "payout", "other"]
SettlementKind = Literal["payment", "refund", "payout"]

# Payment methods a provider can offer. Card brands are not methods; wallets and local schemes are.
METHODS = (
    "card",
    "mada",
    "apple_pay",
    "google_pay",
    "stc_pay",
    "paypal",
    "bank_transfer",
    "upi",
    "ussd",
    "netbanking",
)


# --------------------------------------------------------------------------------------------- errors
class ProviderUnavailable(ProviderError):
    """Transient failure (timeout, connection error, 5xx, 429) that outlived the retries.

    The outcome of a non-idempotent call is unknown: retry with the same idempotency key, or poll.
    """

    status, code = 503, "provider_unavailable"


class ProviderDeclined(ProviderError):
    """The provider definitively refused the request; the same request will fail again.

    ``decline_code`` is the provider's machine-readable reason when it gives one.
    """

    status, code = 422, "provider_declined"

    def __init__(self, detail: str, *, decline_code: str | None = None, **kw: Any) -> None:
        super().__init__(detail, decline_code=decline_code, **kw)
        self.decline_code = decline_code


class UnsupportedOperation(ProviderError):
    """The provider lacks this capability (e.g. payouts, saved cards, a currency); nothing was sent."""

    status, code = 422, "unsupported_operation"


class ProviderNotConfigured(ProviderError):
    """Unknown provider name, or its credentials are not set in the settings."""

    status, code = 422, "provider_not_configured"


class InvalidWebhookSignature(EmanetError):
    """An inbound webhook failed verification (signature, timestamp window or IP allowlist): reply 400."""

    status, code = 400, "invalid_webhook_signature"


# --------------------------------------------------------------------------------------------- values
@dataclass(frozen=True)
class Customer:
    name: str | None = None
    email: str | None = None
    phone: str | None = None  # E.164


@dataclass(frozen=True)
class CreatePayment:
    """What the payments service asks a provider to charge.

    ``payment_id`` is our ``pay_…`` id, sent as the provider's idempotency key / merchant order id.
    ``return_url`` is where the provider sends the browser back (the service confirms every return with
    ``complete_payment``). ``method`` is one of ``METHODS``. ``saved_card_token`` charges a card the provider
    tokenized earlier; ``save_card`` asks the provider to tokenize the card used now (the token comes back in
    ``ProviderPayment.card``).
    """

    payment_id: str
    amount: int
    currency: str
    description: str
    return_url: str
    customer: Customer = field(default_factory=Customer)
    method: str = "card"
    saved_card_token: str | None = None
    save_card: bool = False
    country: str | None = None  # ISO 3166-1 alpha-2 of the payer, when known
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class NextAction:
    """What the payer must do next. ``redirect``/``three_d_secure``/``iframe`` carry ``url``;
    ``client_secret`` carries ``data={"client_secret": …}`` for the provider's JS SDK."""

    type: NextActionType
    url: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CardDetails:
    """A card the provider tokenized: never a card number or CVC."""

    brand: str
    last4: str
    exp_month: int | None = None
    exp_year: int | None = None
    token: str | None = None  # reusable provider token, only when the card was saved


@dataclass(frozen=True)
class ProviderPayment:
    reference: str  # the provider's id for this payment (order / intent / charge id)
    status: PaymentStatus
    amount: int | None = None
    currency: str | None = None
    next_action: NextAction | None = None
    failure_code: str | None = None
    failure_message: str | None = None
    card: CardDetails | None = None
    fee: int | None = None  # provider fee in minor units, when the provider reports it
    raw: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ProviderRefund:
    reference: str
    status: RefundStatus
    amount: int
    raw: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ProviderPayout:
    reference: str
    status: PayoutStatus
    failure_message: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)


class PayoutDestination(TypedDict, total=False):
    """Where a payout goes. Which keys an adapter needs is in its docstring.

    ``type``: ``iban`` (``iban``, ``name``), ``bank_account`` (``account_number``, ``bank_code`` — IFSC for
    India, bank code for Nigeria —, ``name``), ``upi`` (``vpa``), ``paypal`` (``email``), ``stripe_account``
    (``account_id``), ``sandbox`` accepts any of these.
    """

    type: str
    name: str
    iban: str
    account_number: str
    bank_code: str
    vpa: str
    email: str
    account_id: str
    country: str


@dataclass(frozen=True)
class WebhookEvent:
    """A verified inbound provider event.

    ``type`` is the provider's own event type (stored as-is); ``kind`` says which of our objects it is
    about and ``status`` is that object's new status in OUR vocabulary (``PaymentStatus`` for ``payment``,
    ``RefundStatus`` for ``refund``, ``PayoutStatus`` for ``payout``). Event types the adapter does not
    act on come back as ``kind="other", status=None``: store and acknowledge them.
    """

    event_id: str
    type: str
    kind: WebhookKind = "other"
    status: str | None = None
    payment_reference: str | None = None
    refund_reference: str | None = None
    payout_reference: str | None = None
    amount: int | None = None
    currency: str | None = None
    failure_code: str | None = None
    failure_message: str | None = None
    card: CardDetails | None = None
    fee: int | None = None  # provider fee in minor units, when the event says it (saves asking later)
    raw: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WebhookReply:
    """What the webhook route answers after storing a verified event (PayTR wants plain ``OK``)."""

    status_code: int = 200
    content: str = '{"received":true}'
    media_type: str = "application/json"


@dataclass(frozen=True)
class SettlementRecord:
    """One money movement on the provider's side of ``day``, for reconciliation against the ledger.

    ``amount`` is positive for every kind (a refund of 500 is ``kind="refund", amount=500``).
    ``merchant_reference`` is our own id (``pay_…``/``po_…``) when the provider echoes it back.
    """

    reference: str
    kind: SettlementKind
    amount: int
    currency: str
    fee: int
    occurred_at: datetime
    merchant_reference: str | None = None


# --------------------------------------------------------------------------------------------- interface
class PaymentProvider(ABC):
    """One adapter per provider. Construct through ``emanet.providers.registry.get_provider``.

    Subclasses set the class attributes and implement the abstract methods; a capability the provider does
    not have raises ``UnsupportedOperation`` (the defaults below do) — never a fake success.
    """

    name: ClassVar[str]
    display_name: ClassVar[str]
    supported_currencies: ClassVar[frozenset[str]]
    supports_refunds: ClassVar[bool] = True
    supports_payouts: ClassVar[bool] = False
    supports_saved_cards: ClassVar[bool] = False

    def __init__(self, settings: Settings, database: Database | None = None) -> None:
        # ``database`` is only used by providers that keep state of their own in Emanet's database (sandbox).
        self.settings = settings
        self.database = database

    # ---- discovery
    @abstractmethod
    def methods(self, currency: str, country: str | None = None) -> list[str]:
        """Payment methods (from ``METHODS``) this provider offers for ``currency`` (and payer ``country``);
        empty when the currency is not supported."""

    def supports_currency(self, currency: str) -> bool:
        return currency in self.supported_currencies

    # ---- payments
    @abstractmethod
    async def create_payment(self, req: CreatePayment) -> ProviderPayment:
        """Start a payment. Usually ``requires_action`` with a ``next_action``; a saved card may succeed or
        fail at once. Idempotent per ``req.payment_id``."""

    @abstractmethod
    async def get_payment(self, reference: str) -> ProviderPayment:
        """The provider's current view of a payment (server-side status query). Where the payer has approved
        a payment that the merchant must still capture (PayPal), this captures it, idempotently."""

    async def complete_payment(self, reference: str, return_params: Mapping[str, str]) -> ProviderPayment:
        """Called when the browser comes back to ``return_url``, with the provider's query/form parameters.

        Browser returns are never trusted: the default asks the provider (``get_payment``). Adapters whose
        flow needs a server-side finishing step override this (PayPal captures an approved order, Razorpay
        verifies the payment signature) — safe to call more than once.
        """
        return await self.get_payment(reference)

    # ---- refunds
    async def refund(
        self, reference: str, amount: int, currency: str, *, idempotency_key: str
    ) -> ProviderRefund:
        """Refund ``amount`` (full or partial) of payment ``reference``, idempotent per the key."""
        raise UnsupportedOperation(f"{self.display_name} refunds are not supported")

    # ---- webhooks
    @abstractmethod
    async def parse_webhook(
        self, headers: Mapping[str, str], body: bytes, remote_ip: str | None = None
    ) -> WebhookEvent:
        """Verify (IP allowlist, signature, timestamp) and parse one inbound webhook.

        ``headers`` may be any mapping; lookups are case-insensitive (use ``header()``). ``body`` is the raw
        bytes received. Raises ``InvalidWebhookSignature`` when anything does not verify.
        """

    def webhook_reply(self, event: WebhookEvent) -> WebhookReply:
        """The HTTP answer the provider expects once the event is stored."""
        return WebhookReply()

    # ---- payouts
    async def create_payout(
        self, payout_id: str, amount: int, currency: str, destination: PayoutDestination
    ) -> ProviderPayout:
        """Send ``amount`` to ``destination``; idempotent per ``payout_id`` (our ``po_…``)."""
        raise UnsupportedOperation(f"{self.display_name} payouts are not supported")

    async def get_payout(self, reference: str) -> ProviderPayout:
        raise UnsupportedOperation(f"{self.display_name} payouts are not supported")

    # ---- reconciliation
    async def list_settlements(self, day: date) -> list[SettlementRecord]:
        """Every payment, refund and payout the provider recorded on ``day`` (UTC)."""
        raise UnsupportedOperation(f"{self.display_name} does not offer a settlement listing")

    # ---- helpers for adapters
    def check_remote_ip(self, remote_ip: str | None) -> None:
        """Raise unless ``remote_ip`` is inside ``settings.webhook_ip_allowlist[self.name]`` (when set)."""
        check_ip_allowed(self.settings.webhook_ip_allowlist.get(self.name), remote_ip)

    def check_timestamp(self, signed_at: int | float) -> None:
        """Raise unless the signed unix timestamp is within the tolerance of ``clock.now()`` (both ways)."""
        check_timestamp_window(signed_at, self.settings.webhook_tolerance_seconds)

    def require(self, value: str | None, setting: str) -> str:
        """A credential from settings, or ``ProviderNotConfigured`` naming the missing setting."""
        if not value:
            raise ProviderNotConfigured(
                f"{self.display_name} is not configured: set EMANET_{setting.upper()}"
            )
        return value


# --------------------------------------------------------------------------------------------- functions
def header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive header lookup on any mapping (Starlette's Headers already is; plain dicts are not)."""
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    for key, candidate in headers.items():
        if key.lower() == lowered:
            return candidate
    return None


def constant_time_equals(expected: str | bytes, received: str | bytes | None) -> bool:
    if received is None:
        return False
    a = expected.encode() if isinstance(expected, str) else expected
    b = received.encode() if isinstance(received, str) else received
    return hmac.compare_digest(a, b)


def check_ip_allowed(allowlist: list[str] | None, remote_ip: str | None) -> None:
    """``allowlist`` holds addresses or CIDR networks; ``None``/empty means no restriction."""
    if not allowlist:
        return
    if remote_ip is None:
        raise InvalidWebhookSignature("Webhook source address unknown and an allowlist is configured")
    try:
        address = ipaddress.ip_address(remote_ip)
    except ValueError as exc:
        raise InvalidWebhookSignature("Webhook source address is not an IP address") from exc
    if not any(address in ipaddress.ip_network(entry, strict=False) for entry in allowlist):
        raise InvalidWebhookSignature("Webhook source address is not allowed")


def check_timestamp_window(signed_at: int | float, tolerance_seconds: int) -> None:
    age = clock.now().timestamp() - float(signed_at)
    if abs(age) > tolerance_seconds:
        raise InvalidWebhookSignature("Webhook timestamp is outside the tolerance window")
