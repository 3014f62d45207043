"""Stripe, through the official ``stripe`` SDK (stripe-python ≥ 10, ``StripeClient`` with its httpx client).

Sources: PaymentIntents API and lifecycle (https://docs.stripe.com/api/payment_intents,
https://docs.stripe.com/payments/paymentintents/lifecycle), 3-D Secure redirects
(https://docs.stripe.com/payments/3d-secure — ``next_action.type == "redirect_to_url"``), idempotent requests
(https://docs.stripe.com/api/idempotent_requests), refunds (https://docs.stripe.com/api/refunds), Connect
transfers (https://docs.stripe.com/api/transfers), balance transactions for reconciliation
(https://docs.stripe.com/api/balance_transactions), webhook signatures
(https://docs.stripe.com/webhooks#verify-events and stripe-python ``stripe/_webhook.py``).

Flows:
- New card: a PaymentIntent with automatic payment methods is created and ``NextAction(type="client_secret")``
  hands its client secret to Stripe.js, which collects the card and runs 3-D Secure in the browser (card data
  never reaches Emanet). With ``save_card`` a Customer is created and ``setup_future_usage=off_session`` makes
  Stripe keep the card; the PaymentMethod id (``pm_…``) is the saved-card token.
- Saved card: the PaymentIntent is created and confirmed at once with the PaymentMethod; 3-D Secure comes
  back as ``NextAction(type="three_d_secure", url=next_action.redirect_to_url.url)``; a decline (HTTP 402) is
  ``status="failed"`` with Stripe's ``decline_code``.
- Payouts are Connect transfers to the seller's connected account (``destination["account_id"]``): Stripe
  moves the money to that balance when the transfer is created (``paid``); a reversal is ``failed``.

Every POST carries an idempotency key (our payment id, refund key or payout id), so the retries of
``emanet.providers.http.with_retries`` (the SDK's own retries are off) can never charge twice.
The ``Stripe-Signature`` header is verified with ``stripe.WebhookSignature.verify_header`` (HMAC-SHA256 of
``"{t}.{body}"`` with the ``whsec_`` secret, constant-time) and the timestamp against ``emanet.core.clock``
(the SDK's tolerance check reads the wall clock), within ``webhook_tolerance_seconds`` (300 s).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, TypeVar

import orjson
import stripe

from emanet.core.errors import ProviderError
from emanet.providers.base import (
    CardDetails,
    CreatePayment,
    InvalidWebhookSignature,
    NextAction,
    PaymentProvider,
    PaymentStatus,
    PayoutDestination,
    ProviderDeclined,
    ProviderPayment,
    ProviderPayout,
    ProviderRefund,
    RefundStatus,
    SettlementKind,
    SettlementRecord,
    WebhookEvent,
    header,
)
from emanet.providers.http import with_retries

T = TypeVar("T")

# Currencies whose Stripe "smallest unit" equals ISO 4217 minor units (Stripe's three-decimal currencies and
# the special cases ISK/HUF/TWD/UGX are left out rather than converted).
STRIPE_CURRENCIES = frozenset(
    {
        "USD",
        "EUR",
        "GBP",
        "TRY",
        "SAR",
        "AED",
        "INR",
        "JPY",
        "CHF",
        "CAD",
        "AUD",
        "NZD",
        "SEK",
        "NOK",
        "DKK",
        "PLN",
        "CZK",
        "RON",
        "SGD",
        "HKD",
        "MXN",
        "BRL",
        "ZAR",
        "KRW",
        "EGP",
        "QAR",
        "ILS",
        "THB",
        "MYR",
        "PHP",
        "IDR",
    }
)
_PI_STATUS: dict[str, PaymentStatus] = {
    "requires_payment_method": "requires_action",
    "requires_confirmation": "requires_action",
    "requires_action": "requires_action",
    "processing": "processing",
    "requires_capture": "processing",
    "succeeded": "succeeded",
    "canceled": "cancelled",
}
_REFUND_STATUS: dict[str, RefundStatus] = {
    "pending": "pending",
    "requires_action": "pending",
    "succeeded": "succeeded",
    "failed": "failed",
    "canceled": "failed",
}
_PAYMENT_EVENTS = {
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    "payment_intent.processing",
    "payment_intent.canceled",
    "payment_intent.requires_action",
}
_REFUND_EVENTS = {"refund.created", "refund.updated", "refund.failed", "charge.refund.updated"}
_TRANSFER_EVENTS = {"transfer.created": "paid", "transfer.reversed": "failed"}


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, stripe.APIConnectionError | stripe.RateLimitError):
        return True
    return isinstance(exc, stripe.StripeError) and (exc.http_status or 0) >= 500


class StripeProvider(PaymentProvider):
    name = "stripe"
    display_name = "Stripe"
    supported_currencies = STRIPE_CURRENCIES
    supports_payouts = True
    supports_saved_cards = True

    def methods(self, currency: str, country: str | None = None) -> list[str]:
        return ["card", "apple_pay", "google_pay"] if self.supports_currency(currency) else []

    # ---- plumbing
    @asynccontextmanager
    async def _client(self) -> AsyncIterator[stripe.StripeClient]:
        http_client = stripe.HTTPXClient(timeout=self.settings.provider_timeout_seconds)
        client = stripe.StripeClient(
            self.require(self.settings.stripe_api_key, "stripe_api_key"),
            base_addresses={"api": self.settings.stripe_api_base.rstrip("/")},
            http_client=http_client,
            max_network_retries=0,  # retries are ours (with_retries)
        )
        try:
            yield client
        finally:
            await http_client.close_async()  # type: ignore[no-untyped-call]

    async def _call(self, what: str, operation: Callable[[], Awaitable[T]]) -> T:
        """Every call here is idempotent (GETs, and POSTs with an idempotency key)."""
        try:
            return await with_retries(
                "stripe", self.settings, operation, idempotent=True, is_transient=_is_transient, what=what
            )
        except stripe.CardError:
            raise
        except stripe.StripeError as exc:
            raise _declined(exc) from exc

    # ---- payments
    async def create_payment(self, req: CreatePayment) -> ProviderPayment:
        if not self.supports_currency(req.currency):
            raise ProviderDeclined(
                f"Stripe does not take {req.currency} here", decline_code="invalid_currency"
            )
        params: dict[str, Any] = {
            "amount": req.amount,
            "currency": req.currency.lower(),
            "description": req.description[:1000],
            "metadata": {**req.metadata, "payment_id": req.payment_id},
        }
        if req.customer.email:
            params["receipt_email"] = req.customer.email
        async with self._client() as client:
            if req.saved_card_token:
                method = await self._call(
                    "payment method",
                    lambda: client.v1.payment_methods.retrieve_async(req.saved_card_token or ""),
                )
                params.update(
                    customer=method.customer,
                    payment_method=method.id,
                    confirm=True,
                    payment_method_types=["card"],
                    return_url=req.return_url,
                )
            else:
                params["automatic_payment_methods"] = {"enabled": True}
                if req.save_card:
                    customer = await self._call(
                        "customer",
                        lambda: client.v1.customers.create_async(
                            {
                                "email": req.customer.email or "",
                                "name": req.customer.name or "",
                                "metadata": {"payment_id": req.payment_id},
                            },
                            {"idempotency_key": f"{req.payment_id}-customer"},
                        ),
                    )
                    params.update(customer=customer.id, setup_future_usage="off_session")
            try:
                intent = await self._call(
                    "payment intent",
                    lambda: client.v1.payment_intents.create_async(
                        params,  # type: ignore[arg-type]
                        {"idempotency_key": req.payment_id},
                    ),
                )
            except stripe.CardError as exc:
                return _declined_payment(exc)
            return _payment(intent.to_dict())

    async def get_payment(self, reference: str) -> ProviderPayment:
        async with self._client() as client:
            intent = await self._call(
                "payment intent",
                lambda: client.v1.payment_intents.retrieve_async(
                    reference, {"expand": ["latest_charge.balance_transaction", "payment_method"]}
                ),
            )
        return _payment(intent.to_dict())

    async def refund(
        self, reference: str, amount: int, currency: str, *, idempotency_key: str
    ) -> ProviderRefund:
        async with self._client() as client:
            refund = await self._call(
                "refund",
                lambda: client.v1.refunds.create_async(
                    {"payment_intent": reference, "amount": amount}, {"idempotency_key": idempotency_key}
                ),
            )
        data = refund.to_dict()
        return ProviderRefund(
            reference=data["id"], status=_refund_status(data), amount=int(data["amount"]), raw=data
        )

    # ---- payouts (Connect transfers)
    async def create_payout(
        self, payout_id: str, amount: int, currency: str, destination: PayoutDestination
    ) -> ProviderPayout:
        account = destination.get("account_id")
        if not account or not account.startswith("acct_"):
            raise ProviderDeclined(
                "Stripe payouts go to a connected account (account_id acct_…)",
                decline_code="invalid_destination",
            )
        async with self._client() as client:
            transfer = await self._call(
                "transfer",
                lambda: client.v1.transfers.create_async(
                    {
                        "amount": amount,
                        "currency": currency.lower(),
                        "destination": account,
                        "transfer_group": payout_id,
                        "metadata": {"payout_id": payout_id},
                    },
                    {"idempotency_key": payout_id},
                ),
            )
        return _transfer(transfer.to_dict())

    async def get_payout(self, reference: str) -> ProviderPayout:
        async with self._client() as client:
            transfer = await self._call("transfer", lambda: client.v1.transfers.retrieve_async(reference))
        return _transfer(transfer.to_dict())

    # ---- reconciliation
    async def list_settlements(self, day: date) -> list[SettlementRecord]:
        start = datetime.combine(day, time.min, UTC)
        params: dict[str, Any] = {
            "created": {"gte": int(start.timestamp()), "lt": int((start + timedelta(days=1)).timestamp())},
            "limit": 100,
            "expand": ["data.source"],
        }
        records: list[SettlementRecord] = []
        async with self._client() as client:
            while True:
                listing = await self._call(
                    "balance transactions",
                    lambda: client.v1.balance_transactions.list_async(params),  # type: ignore[arg-type]
                )
                page = listing.to_dict()
                records += [r for r in map(_settlement, page["data"]) if r is not None]
                if not page.get("has_more") or not page["data"]:
                    return records
                params["starting_after"] = page["data"][-1]["id"]

    # ---- webhooks
    async def parse_webhook(
        self, headers: Mapping[str, str], body: bytes, remote_ip: str | None = None
    ) -> WebhookEvent:
        self.check_remote_ip(remote_ip)
        secret = self.require(self.settings.stripe_webhook_secret, "stripe_webhook_secret")
        signature = header(headers, "Stripe-Signature")
        try:
            stripe.WebhookSignature.verify_header(body, signature, secret, tolerance=None)
        except (stripe.SignatureVerificationError, UnicodeDecodeError) as exc:
            raise InvalidWebhookSignature("Stripe-Signature does not verify") from exc
        # verify_header parsed the header already, so this split cannot fail.
        timestamp = next(int(part[2:]) for part in (signature or "").split(",") if part.startswith("t="))
        self.check_timestamp(timestamp)
        try:
            event = orjson.loads(body)
            return _event(event)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise InvalidWebhookSignature("The body is not a Stripe event") from exc


# ---------------------------------------------------------------------------------------------- mapping
def _error_body(exc: stripe.StripeError) -> dict[str, Any]:
    body = exc.json_body if isinstance(exc.json_body, dict) else {}
    error = body.get("error")
    return error if isinstance(error, dict) else {}


def _declined(exc: stripe.StripeError) -> ProviderError:
    error = _error_body(exc)
    code = error.get("decline_code") or error.get("code") or type(exc).__name__
    message = error.get("message") or str(exc) or "Stripe refused the request"
    return ProviderDeclined(f"Stripe: {message}", decline_code=code)


def _declined_payment(exc: stripe.CardError) -> ProviderPayment:
    """A 402 on confirm: the PaymentIntent exists and carries the decline."""
    error = _error_body(exc)
    intent = error.get("payment_intent")
    if not intent:
        raise _declined(exc) from exc
    payment = _payment(intent)
    return ProviderPayment(
        reference=payment.reference,
        status="failed",
        amount=payment.amount,
        currency=payment.currency,
        failure_code=error.get("decline_code") or error.get("code") or "card_declined",
        failure_message=error.get("message"),
        card=payment.card,
        raw=intent,
    )


def _payment(intent: Mapping[str, Any]) -> ProviderPayment:
    status = _PI_STATUS.get(intent.get("status") or "", "pending")
    error = intent.get("last_payment_error") or None
    failure_code = failure_message = None
    if error and intent.get("status") == "requires_payment_method":
        # Stripe lets the payer try another card on the same intent; for Emanet this attempt failed.
        status = "failed"
        failure_code = error.get("decline_code") or error.get("code") or "payment_failed"
        failure_message = error.get("message")
    next_action = None
    if status == "requires_action":
        action = intent.get("next_action") or {}
        if action.get("type") == "redirect_to_url":
            next_action = NextAction(type="three_d_secure", url=action["redirect_to_url"]["url"])
        else:
            next_action = NextAction(
                type="client_secret", data={"client_secret": intent.get("client_secret")}
            )
    charge = intent.get("latest_charge") if isinstance(intent.get("latest_charge"), dict) else None
    fee = None
    if charge and isinstance(charge.get("balance_transaction"), dict):
        fee = int(charge["balance_transaction"].get("fee") or 0)
    return ProviderPayment(
        reference=intent["id"],
        status=status,
        amount=int(intent.get("amount_received") or intent["amount"])
        if status == "succeeded"
        else int(intent["amount"]),
        currency=str(intent["currency"]).upper(),
        next_action=next_action,
        failure_code=failure_code,
        failure_message=failure_message,
        card=_card(intent, charge),
        fee=fee,
        raw=intent,
    )


def _card(intent: Mapping[str, Any], charge: Mapping[str, Any] | None) -> CardDetails | None:
    method = intent.get("payment_method")
    card: Mapping[str, Any] | None = None
    if isinstance(method, dict) and method.get("card"):
        card = method["card"]
    elif charge and (charge.get("payment_method_details") or {}).get("card"):
        card = charge["payment_method_details"]["card"]
    if not card:
        return None
    method_id = method["id"] if isinstance(method, dict) else method
    # A PaymentMethod used with a Customer is attached to it (saved now, or charged as a saved card).
    return CardDetails(
        brand=str(card.get("brand") or "unknown"),
        last4=str(card.get("last4") or ""),
        exp_month=card.get("exp_month"),
        exp_year=card.get("exp_year"),
        token=method_id if intent.get("customer") else None,
    )


def _refund_status(refund: Mapping[str, Any]) -> RefundStatus:
    return _REFUND_STATUS.get(refund.get("status") or "", "pending")


def _transfer(transfer: Mapping[str, Any]) -> ProviderPayout:
    if transfer.get("reversed"):
        return ProviderPayout(
            reference=transfer["id"],
            status="failed",
            failure_message="The transfer was reversed",
            raw=transfer,
        )
    return ProviderPayout(reference=transfer["id"], status="paid", raw=transfer)


def _settlement(txn: Mapping[str, Any]) -> SettlementRecord | None:
    kinds: dict[str, SettlementKind] = {
        "charge": "payment",
        "payment": "payment",
        "refund": "refund",
        "payment_refund": "refund",
        "transfer": "payout",
    }
    kind = kinds.get(txn.get("type") or "")
    if kind is None:
        return None
    source = txn.get("source")
    reference = source.get("id") if isinstance(source, dict) else source
    if kind == "payment" and isinstance(source, dict) and source.get("payment_intent"):
        reference = source["payment_intent"]  # our payments know the PaymentIntent, not the charge
    return SettlementRecord(
        reference=str(reference),
        kind=kind,
        amount=abs(int(txn["amount"])),
        currency=str(txn["currency"]).upper(),
        fee=int(txn.get("fee") or 0),
        occurred_at=datetime.fromtimestamp(int(txn["created"]), UTC),
    )


def _event(event: Mapping[str, Any]) -> WebhookEvent:
    event_type = str(event["type"])
    obj: Mapping[str, Any] = event["data"]["object"]
    common: dict[str, Any] = {"event_id": str(event["id"]), "type": event_type, "raw": event}
    if event_type in _PAYMENT_EVENTS:
        payment = _payment(obj)
        status: str = payment.status
        if event_type == "payment_intent.payment_failed":
            status = "failed"
        return WebhookEvent(
            **common,
            kind="payment",
            status=status,
            payment_reference=payment.reference,
            amount=payment.amount,
            currency=payment.currency,
            card=payment.card,
            failure_code=payment.failure_code,
            failure_message=payment.failure_message,
        )
    if event_type in _REFUND_EVENTS:
        return WebhookEvent(
            **common,
            kind="refund",
            status=_refund_status(obj),
            refund_reference=obj["id"],
            payment_reference=obj.get("payment_intent"),
            amount=int(obj["amount"]),
            currency=str(obj["currency"]).upper(),
            failure_message=obj.get("failure_reason"),
        )
    if event_type in _TRANSFER_EVENTS:
        return WebhookEvent(
            **common,
            kind="payout",
            status=_TRANSFER_EVENTS[event_type],
            payout_reference=obj["id"],
            amount=int(obj["amount"]),
            currency=str(obj["currency"]).upper(),
        )
    return WebhookEvent(**common)
