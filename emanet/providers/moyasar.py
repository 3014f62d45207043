"""Moyasar (Saudi Arabia): mada, Visa/Mastercard, Apple Pay and STC Pay.

Sources (docs.moyasar.com): API authentication (HTTP Basic, secret key as the user name, empty password),
"Create Payment" / "Payment Object" / "Refund Payment" / "Fetch Payment", "3DS in a Payment" (a card
payment comes back ``initiated`` with ``source.transaction_url``; the payer is redirected there and then to
``callback_url``; the final status is always fetched server-side), "Idempotency" (``given_id``, a UUID, makes
payment creation safe to retry), "Creating invoices" (``POST /v1/invoices`` returns the hosted page ``url``),
"Webhook Reference" / "Setting up Webhooks" (the body carries ``secret_token``, the password configured with
the webhook; events ``payment_paid``, ``payment_failed``, ``payment_refunded``, ``payment_voided``,
``payment_authorized``, ``payment_captured``, ``payment_verified``).

Card numbers never reach Emanet, so there are two ways in:

- a Moyasar token (a saved card, tokenized by Moyasar's form) is charged with ``POST /v1/payments``
  (``source.type = "token"``, 3-D Secure on) and ``given_id`` = a UUID derived from our payment id, so a
  retry after a timeout cannot charge twice; the reference is Moyasar's payment id;
- otherwise the payer is sent to a Moyasar invoice — Moyasar's hosted page, which offers mada, cards,
  Apple Pay and STC Pay; the reference is ``invoice:<invoice id>``. Invoices have no idempotency key, so
  their creation is sent once and never retried blindly.

Amounts are integer minor units on both sides (halalas), as Moyasar specifies. ``fee`` on the payment
object is the provider fee. Refunds (``POST /v1/payments/{id}/refund``) carry no idempotency key and are
not retried automatically.

Reconciliation (``list_settlements``) reads "List Payments" (``GET /v1/payments``, docs.moyasar.com "List
Payments"; filters ``status``, ``page``, ``created[gt]``/``created[lt]`` as the official
``moyasar/moyasar-php`` SDK sends them in ``src/Search.php``) with "Pagination"
(https://docs.moyasar.com/pagination: a page of a reverse-chronological stream, 40 objects by default, and
``meta`` with ``current_page``, ``next_page`` (``null`` on the last page), ``prev_page``, ``total_pages``,
``total_count``); the answer's list is under ``payments`` (the SDK's ``payment_list.json`` fixture).
Fields used are those of the Payment Object (https://docs.moyasar.com/payment-object): ``amount``,
``fee``, ``currency``, ``status``, ``refunded`` (refunded amount), ``refunded_at`` ("when the payment was
refunded"), ``invoice_id``, ``created_at`` and ``metadata`` ("the key-value data object that was sent
during the payment creation": our ``payment_id``, the attempt key we were given). A payment object carries
only the cumulative ``refunded`` and the time of the last refund, and the listing filters on creation time
only, so:

- payments: those created on the day (the window is asked a second wider and cut to the day here) that took
  the money — ``paid``, ``captured``, or since ``refunded``; ``failed``, ``initiated``, ``authorized`` and
  ``voided`` ones moved no money. An invoice payment keeps the ``invoice:<id>`` reference we stored;
- refunds: every ``refunded`` payment created before the day's end is read (no documented filter narrows it
  further) and those whose ``refunded_at`` is on the day give one refund of the ``refunded`` total. Several
  partial refunds of one payment on different days show as one refund of the running total on the last day;
- payouts: the adapter sends none, so there are none to list.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, ClassVar

import httpx
import structlog

from emanet.core.errors import ProviderError
from emanet.providers import http
from emanet.providers.base import (
    CardDetails,
    CreatePayment,
    InvalidWebhookSignature,
    NextAction,
    PaymentProvider,
    PaymentStatus,
    ProviderDeclined,
    ProviderPayment,
    ProviderRefund,
    SettlementRecord,
    UnsupportedOperation,
    WebhookEvent,
    constant_time_equals,
)

log = structlog.get_logger("emanet.providers.moyasar")

INVOICE_PREFIX = "invoice:"
# A fixed namespace so given_id is a stable function of our payment id.
GIVEN_ID_NAMESPACE = uuid.UUID("8f4c2f0e-3b7a-5d51-9a64-2f2b6f0d4e11")

PAYMENT_STATUSES: dict[str, PaymentStatus] = {
    "initiated": "requires_action",
    "authorized": "processing",
    "verified": "processing",
    "paid": "succeeded",
    "captured": "succeeded",
    "failed": "failed",
    "voided": "cancelled",
    "refunded": "refunded",
}
INVOICE_STATUSES: dict[str, PaymentStatus] = {
    "initiated": "requires_action",
    "on_hold": "processing",
    "paid": "succeeded",
    "failed": "failed",
    "expired": "cancelled",
    "canceled": "cancelled",
    "voided": "cancelled",
    "refunded": "refunded",
}
# Payment statuses of a payment that took the money (a refunded one took it first).
TOOK_MONEY = frozenset({"paid", "captured", "refunded"})
LISTING_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
EVENT_STATUSES: dict[str, PaymentStatus] = {
    "payment_paid": "succeeded",
    "payment_captured": "succeeded",
    "payment_failed": "failed",
    "payment_faild": "failed",  # spelled so in Moyasar's own event table
    "payment_voided": "cancelled",
    "payment_authorized": "processing",
    "payment_refunded": "refunded",
}


class MoyasarProvider(PaymentProvider):
    name: ClassVar[str] = "moyasar"
    display_name: ClassVar[str] = "Moyasar"
    supported_currencies: ClassVar[frozenset[str]] = frozenset({"SAR", "USD", "EUR", "GBP", "AED", "KWD"})
    supports_saved_cards: ClassVar[bool] = True

    def methods(self, currency: str, country: str | None = None) -> list[str]:
        if currency == "SAR":
            return ["card", "mada", "apple_pay", "stc_pay"]
        return ["card", "apple_pay"] if self.supports_currency(currency) else []

    # ------------------------------------------------------------------------------------------ payments
    async def create_payment(self, req: CreatePayment) -> ProviderPayment:
        if req.method not in self.methods(req.currency, req.country):
            raise UnsupportedOperation(f"Moyasar does not offer {req.method} in {req.currency}")
        metadata = {**req.metadata, "payment_id": req.payment_id}
        metadata.pop("payer_ip", None)
        if req.saved_card_token:
            return await self._charge_token(req, metadata)
        body = {
            "amount": req.amount,
            "currency": req.currency,
            "description": req.description,
            "success_url": req.return_url,
            "back_url": req.return_url,
            "metadata": metadata,
        }
        invoice = await self._call("POST", "/v1/invoices", payload=body, idempotent=False, what="invoice")
        if not invoice.get("url") or not invoice.get("id"):
            raise ProviderError("Moyasar created an invoice without a payment page")
        log.info("moyasar_invoice_created", payment_id=req.payment_id, invoice_id=invoice["id"])
        return ProviderPayment(
            reference=f"{INVOICE_PREFIX}{invoice['id']}",
            status="requires_action",
            amount=req.amount,
            currency=req.currency,
            next_action=NextAction(type="redirect", url=str(invoice["url"])),
            raw=invoice,
        )

    async def _charge_token(self, req: CreatePayment, metadata: Mapping[str, str]) -> ProviderPayment:
        body = {
            "given_id": str(uuid.uuid5(GIVEN_ID_NAMESPACE, req.payment_id)),
            "amount": req.amount,
            "currency": req.currency,
            "description": req.description,
            "callback_url": req.return_url,
            "metadata": dict(metadata),
            "source": {"type": "token", "token": req.saved_card_token, "3ds": True},
        }
        payment = await self._call("POST", "/v1/payments", payload=body, idempotent=True, what="payment")
        log.info("moyasar_payment_created", payment_id=req.payment_id, status=payment.get("status"))
        return _from_payment(str(payment["id"]), payment)

    async def get_payment(self, reference: str) -> ProviderPayment:
        if reference.startswith(INVOICE_PREFIX):
            invoice_id = reference.removeprefix(INVOICE_PREFIX)
            invoice = await self._call("GET", f"/v1/invoices/{invoice_id}", idempotent=True, what="invoice")
            return _from_invoice(reference, invoice)
        payment = await self._call("GET", f"/v1/payments/{reference}", idempotent=True, what="payment")
        return _from_payment(reference, payment)

    # ------------------------------------------------------------------------------------------ refunds
    async def refund(
        self, reference: str, amount: int, currency: str, *, idempotency_key: str
    ) -> ProviderRefund:
        payment_id = reference
        if reference.startswith(INVOICE_PREFIX):
            invoice_id = reference.removeprefix(INVOICE_PREFIX)
            invoice = await self._call("GET", f"/v1/invoices/{invoice_id}", idempotent=True, what="invoice")
            paid = _paid_payment(invoice)
            if paid is None:
                raise ProviderDeclined(
                    f"Moyasar invoice {invoice_id} has no paid payment to refund",
                    decline_code="not_refundable",
                )
            payment_id = str(paid["id"])
        payment = await self._call(
            "POST",
            f"/v1/payments/{payment_id}/refund",
            payload={"amount": amount},
            idempotent=False,
            what="refund",
        )
        log.info("moyasar_refunded", reference=reference, amount=amount, refunded=payment.get("refunded"))
        return ProviderRefund(
            reference=f"{payment_id}:{idempotency_key}", status="succeeded", amount=amount, raw=payment
        )

    # -------------------------------------------------------------------------------------- reconciliation
    async def list_settlements(self, day: date) -> list[SettlementRecord]:
        start = datetime.combine(day, time.min, UTC)
        end = start + timedelta(days=1)
        # created[gt] is exclusive: start a second early and keep only the day below.
        created = await self._list_payments(
            {
                "created[gt]": (start - timedelta(seconds=1)).strftime(LISTING_TIME_FORMAT),
                "created[lt]": end.strftime(LISTING_TIME_FORMAT),
            }
        )
        records = [
            _payment_record(p)
            for p in created
            if p.get("status") in TOOK_MONEY and start <= _time(p["created_at"]) < end
        ]
        refunded = await self._list_payments(
            {"status": "refunded", "created[lt]": end.strftime(LISTING_TIME_FORMAT)}
        )
        records += [
            _refund_record(p)
            for p in refunded
            if p.get("refunded_at")
            and (_int_or_none(p.get("refunded")) or 0) > 0
            and start <= _time(p["refunded_at"]) < end
        ]
        return records

    async def _list_payments(self, filters: Mapping[str, str]) -> list[dict[str, Any]]:
        """Every page of "List Payments" with ``filters``, following ``meta.next_page`` to the end."""
        payments: list[dict[str, Any]] = []
        page = 1
        while True:
            answer = await self._call(
                "GET",
                "/v1/payments",
                params={**filters, "page": str(page)},
                idempotent=True,
                what="payment listing",
            )
            payments += [p for p in answer.get("payments") or [] if isinstance(p, dict)]
            next_page = _int_or_none(_mapping(answer.get("meta")).get("next_page"))
            if next_page is None or next_page <= page:
                return payments
            page = next_page

    # ------------------------------------------------------------------------------------------ webhooks
    async def parse_webhook(
        self, headers: Mapping[str, str], body: bytes, remote_ip: str | None = None
    ) -> WebhookEvent:
        """The body's ``secret_token`` must equal ``EMANET_MOYASAR_WEBHOOK_TOKEN`` (constant-time)."""
        self.check_remote_ip(remote_ip)
        expected = self.settings.moyasar_webhook_token
        if not expected:
            raise InvalidWebhookSignature("Moyasar webhooks are refused: set EMANET_MOYASAR_WEBHOOK_TOKEN")
        try:
            event = json.loads(body)
        except ValueError as exc:
            raise InvalidWebhookSignature("Moyasar webhook body is not JSON") from exc
        received = _str_or_none(event.get("secret_token")) if isinstance(event, dict) else None
        if not constant_time_equals(expected, received):
            raise InvalidWebhookSignature("Moyasar webhook secret token does not match")
        event_type = str(event.get("type") or "")
        data = _mapping(event.get("data"))
        safe = {k: v for k, v in event.items() if k != "secret_token"}
        status = EVENT_STATUSES.get(event_type)
        if status is None or not data.get("id"):
            return WebhookEvent(event_id=str(event.get("id") or ""), type=event_type, raw=safe)
        payment = _from_payment(str(data["id"]), data)
        if status == "refunded":
            status = payment.status  # refunded, or partially_refunded
        reference = f"{INVOICE_PREFIX}{data['invoice_id']}" if data.get("invoice_id") else str(data["id"])
        return WebhookEvent(
            event_id=str(event.get("id") or f"{data['id']}:{event_type}"),
            type=event_type,
            kind="payment",
            status=status,
            payment_reference=reference,
            amount=payment.amount,
            currency=payment.currency,
            failure_code=payment.failure_code,
            failure_message=payment.failure_message,
            card=payment.card,
            fee=payment.fee if status == "succeeded" else None,
            raw=safe,
        )

    # ------------------------------------------------------------------------------------------ internals
    async def _call(
        self,
        method: str,
        path: str,
        *,
        idempotent: bool,
        what: str,
        payload: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        secret = self.require(self.settings.moyasar_secret_key, "moyasar_secret_key")
        async with http.provider_client(
            self.settings, self.settings.moyasar_api_base, auth=(secret, "")
        ) as client:
            response = await http.request(
                client,
                "Moyasar",
                self.settings,
                method,
                path,
                json=payload,
                params=params,
                idempotent=idempotent,
            )
        if response.status_code >= 400:
            error = _json_or_empty(response)
            message = error.get("message") or f"HTTP {response.status_code}"
            raise ProviderDeclined(
                f"Moyasar refused the {what}: {message}",
                decline_code=str(error.get("type") or f"http_{response.status_code}"),
            )
        parsed = _json_or_empty(response)
        if not parsed:
            raise ProviderError(f"Moyasar answered the {what} with something that is not a JSON object")
        return parsed


def _from_payment(reference: str, payment: Mapping[str, Any]) -> ProviderPayment:
    source = _mapping(payment.get("source"))
    status = PAYMENT_STATUSES.get(str(payment.get("status")), "processing")
    amount = _int_or_none(payment.get("amount"))
    refunded = _int_or_none(payment.get("refunded")) or 0
    if refunded and amount is not None and refunded < amount and status in {"succeeded", "refunded"}:
        status = "partially_refunded"
    next_action = None
    if status == "requires_action" and source.get("transaction_url"):
        next_action = NextAction(type="three_d_secure", url=str(source["transaction_url"]))
    failed = status == "failed"
    return ProviderPayment(
        reference=reference,
        status=status,
        amount=amount,
        currency=_str_or_none(payment.get("currency")),
        next_action=next_action,
        failure_code=str(source.get("response_code") or "declined") if failed else None,
        failure_message=_str_or_none(source.get("message")) if failed else None,
        card=_card(source),
        fee=_int_or_none(payment.get("fee")),
        raw=payment,
    )


def _from_invoice(reference: str, invoice: Mapping[str, Any]) -> ProviderPayment:
    paid = _paid_payment(invoice)
    if paid is not None:
        return _from_payment(reference, paid)
    status = INVOICE_STATUSES.get(str(invoice.get("status")), "processing")
    attempts = [p for p in invoice.get("payments") or [] if isinstance(p, dict)]
    last = _from_payment(reference, attempts[-1]) if attempts else None
    next_action = (
        NextAction(type="redirect", url=str(invoice["url"]))
        if status == "requires_action" and invoice.get("url")
        else None
    )
    return ProviderPayment(
        reference=reference,
        status=status,
        amount=_int_or_none(invoice.get("amount")),
        currency=_str_or_none(invoice.get("currency")),
        next_action=next_action,
        failure_code=last.failure_code if last and status == "failed" else None,
        failure_message=last.failure_message if last and status == "failed" else None,
        raw=invoice,
    )


def _payment_record(payment: Mapping[str, Any]) -> SettlementRecord:
    """A payment that took the money; an invoice's payment under the ``invoice:<id>`` reference we hold."""
    invoice_id = payment.get("invoice_id")
    return SettlementRecord(
        reference=f"{INVOICE_PREFIX}{invoice_id}" if invoice_id else str(payment["id"]),
        kind="payment",
        amount=int(payment["amount"]),
        currency=str(payment["currency"]),
        fee=_int_or_none(payment.get("fee")) or 0,
        occurred_at=_time(payment["created_at"]),
        merchant_reference=_str_or_none(_mapping(payment.get("metadata")).get("payment_id")),
    )


def _refund_record(payment: Mapping[str, Any]) -> SettlementRecord:
    """The refunded total of a payment, at its last refund. Moyasar refunds against the payment id (also for
    invoice payments), and reports no fee on a refund."""
    return SettlementRecord(
        reference=str(payment["id"]),
        kind="refund",
        amount=int(payment["refunded"]),
        currency=str(payment["currency"]),
        fee=0,
        occurred_at=_time(payment["refunded_at"]),
    )


def _time(value: Any) -> datetime:
    """A Moyasar timestamp (ISO 8601, ``2019-07-09T17:38:05.431Z``) as an aware UTC datetime."""
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _paid_payment(invoice: Mapping[str, Any]) -> dict[str, Any] | None:
    """The invoice's payment that took the money (paid, captured or since refunded)."""
    for payment in invoice.get("payments") or []:
        if isinstance(payment, dict) and payment.get("status") in {"paid", "captured", "refunded"}:
            return payment
    return None


def _card(source: Mapping[str, Any]) -> CardDetails | None:
    number = str(source.get("number") or "")
    last4 = number[-4:]
    if source.get("type") not in {"creditcard", "token", "applepay", "samsungpay"} or not last4.isdigit():
        return None
    return CardDetails(
        brand=str(source.get("company") or "card").lower(),
        last4=last4,
        exp_month=_int_or_none(source.get("month")),
        exp_year=_int_or_none(source.get("year")),
        token=_str_or_none(source.get("token")),
    )


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _json_or_empty(response: httpx.Response) -> dict[str, Any]:
    try:
        parsed = response.json()
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return int(str(value))
    except ValueError:
        return None


def _str_or_none(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None
