"""Razorpay: Orders + Standard Checkout, payment signatures, refunds, RazorpayX payouts, settlement recon.

Sources: Orders API (https://razorpay.com/docs/api/orders/create — ``receipt`` with ``unique_receipt`` so a
retried create returns the same order, per https://razorpay.com/docs/payments/payment-gateway/s2s-integration/
test-s2s/best-practices/retries-and-idempotency), payments of an order (``GET /v1/orders/{id}/payments``),
Standard Checkout's payment signature (https://razorpay.com/docs/payments/server-integration/python/
payment-gateway/build-integration — HMAC-SHA256 of ``"{order_id}|{payment_id}"`` with the key secret),
refunds with ``X-Refund-Idempotency`` (https://razorpay.com/docs/api/refunds/normal-refunds-idempotent),
RazorpayX composite payouts with ``X-Payout-Idempotency`` (https://razorpay.com/docs/api/x/payouts,
https://razorpay.com/docs/api/x/payout-idempotency), settlement recon
(https://razorpay.com/docs/api/settlements/fetch-recon), webhooks (https://razorpay.com/docs/webhooks/ —
``X-Razorpay-Signature`` = hex HMAC-SHA256 of the raw body with the webhook secret, ``x-razorpay-event-id``).
Signatures are checked with the official SDK's ``razorpay.Utility`` (``verify_webhook_signature``,
``verify_payment_signature``; ``hmac.compare_digest``); API calls use httpx so base URLs come from settings.

The payment reference is the Razorpay order id. ``create_payment`` answers
``NextAction(type="client_secret")`` whose ``data`` opens Razorpay Checkout in the browser (``key``,
``order_id``, ``amount``, ``currency``, ``callback_url``); Checkout posts ``razorpay_payment_id``,
``razorpay_order_id`` and ``razorpay_signature`` back to the return URL and ``complete_payment`` verifies that
signature before asking Razorpay for the order's payments. Saved cards (Razorpay tokens need a
recurring-payments agreement) are not supported.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import httpx
import orjson
import razorpay

from emanet.providers import http
from emanet.providers.base import (
    CardDetails,
    CreatePayment,
    InvalidWebhookSignature,
    NextAction,
    PaymentProvider,
    PaymentStatus,
    PayoutDestination,
    PayoutStatus,
    ProviderDeclined,
    ProviderPayment,
    ProviderPayout,
    ProviderRefund,
    RefundStatus,
    SettlementKind,
    SettlementRecord,
    UnsupportedOperation,
    WebhookEvent,
    header,
)

RAZORPAY_CURRENCIES = frozenset({"INR", "USD", "EUR", "GBP", "AED", "SGD", "SAR", "AUD", "CAD"})
_REFUND_STATUS: dict[str, RefundStatus] = {
    "pending": "pending",
    "created": "pending",
    "processed": "succeeded",
    "failed": "failed",
}
_PAYOUT_STATUS: dict[str, PayoutStatus] = {
    "queued": "pending",
    "pending": "pending",
    "scheduled": "pending",
    "processing": "processing",
    "processed": "paid",
    "reversed": "failed",
    "cancelled": "failed",
    "rejected": "failed",
    "failed": "failed",
}
_PAYMENT_EVENTS: dict[str, PaymentStatus] = {
    "payment.captured": "succeeded",
    "order.paid": "succeeded",
    "payment.authorized": "processing",
    "payment.failed": "failed",
}
_REFUND_EVENTS: dict[str, RefundStatus] = {
    "refund.created": "pending",
    "refund.processed": "succeeded",
    "refund.failed": "failed",
}


class RazorpayProvider(PaymentProvider):
    name = "razorpay"
    display_name = "Razorpay"
    supported_currencies = RAZORPAY_CURRENCIES
    supports_payouts = True

    def methods(self, currency: str, country: str | None = None) -> list[str]:
        if currency == "INR":
            return ["card", "upi", "netbanking"]
        return ["card"] if self.supports_currency(currency) else []

    # ---- plumbing
    def _auth(self) -> tuple[str, str]:
        return (
            self.require(self.settings.razorpay_key_id, "razorpay_key_id"),
            self.require(self.settings.razorpay_key_secret, "razorpay_key_secret"),
        )

    def _utility(self, auth: tuple[str, str] | None = None) -> razorpay.Utility:
        return razorpay.Utility(razorpay.Client(auth=auth or ("", "")))

    async def _call(
        self,
        method: str,
        path: str,
        *,
        idempotent: bool,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        async with http.provider_client(
            self.settings, self.settings.razorpay_api_base, auth=self._auth()
        ) as client:
            response = await http.request(
                client,
                "razorpay",
                self.settings,
                method,
                path,
                idempotent=idempotent,
                json=json,
                params=params,
                headers=headers,
            )
        return _body(response)

    # ---- payments
    async def create_payment(self, req: CreatePayment) -> ProviderPayment:
        if req.saved_card_token or req.save_card:
            raise UnsupportedOperation("Razorpay saved cards are not supported by Emanet")
        if not self.supports_currency(req.currency):
            raise ProviderDeclined(f"Razorpay does not take {req.currency}", decline_code="invalid_currency")
        # unique_receipt: a retried create with the same receipt returns the same order, so it is idempotent.
        order = await self._call(
            "POST",
            "/v1/orders",
            idempotent=True,
            json={
                "amount": req.amount,
                "currency": req.currency,
                "receipt": req.payment_id,
                "unique_receipt": True,
                "notes": {**req.metadata, "payment_id": req.payment_id, "description": req.description[:250]},
            },
        )
        return self._order_payment(order, [], return_url=req.return_url, customer=req)

    async def get_payment(self, reference: str) -> ProviderPayment:
        order = await self._call("GET", f"/v1/orders/{reference}", idempotent=True)
        payments = await self._call("GET", f"/v1/orders/{reference}/payments", idempotent=True)
        return self._order_payment(order, payments.get("items") or [])

    async def complete_payment(self, reference: str, return_params: Mapping[str, str]) -> ProviderPayment:
        """Checkout's return carries ``razorpay_signature``; a wrong one is refused before anything else."""
        fields = {
            "razorpay_order_id": reference,
            "razorpay_payment_id": return_params.get("razorpay_payment_id", ""),
            "razorpay_signature": return_params.get("razorpay_signature", ""),
        }
        if fields["razorpay_payment_id"] or fields["razorpay_signature"]:
            try:
                self._utility(self._auth()).verify_payment_signature(fields)
            except (razorpay.errors.SignatureVerificationError, TypeError) as exc:
                raise InvalidWebhookSignature("The Razorpay payment signature does not verify") from exc
        return await self.get_payment(reference)

    def _order_payment(
        self,
        order: Mapping[str, Any],
        payments: list[Mapping[str, Any]],
        *,
        return_url: str | None = None,
        customer: CreatePayment | None = None,
    ) -> ProviderPayment:
        common: dict[str, Any] = {
            "reference": order["id"],
            "amount": int(order["amount"]),
            "currency": order["currency"],
            "raw": {"order": order, "payments": payments},
        }
        by_status = {p.get("status"): p for p in payments}
        paid = by_status.get("captured") or by_status.get("refunded")
        if paid is not None:
            refunded = int(paid.get("amount_refunded") or 0)
            status: PaymentStatus = "succeeded"
            if refunded:
                status = "refunded" if refunded >= int(paid["amount"]) else "partially_refunded"
            fee = paid.get("fee")
            return ProviderPayment(
                **common, status=status, card=_card(paid), fee=None if fee is None else int(fee)
            )
        if "authorized" in by_status:
            return ProviderPayment(**common, status="processing")
        failed = by_status.get("failed")
        if failed is not None:
            return ProviderPayment(
                **common,
                status="failed",
                failure_code=failed.get("error_reason") or failed.get("error_code"),
                failure_message=failed.get("error_description"),
            )
        checkout = {
            "key": self._auth()[0],
            "order_id": order["id"],
            "amount": order["amount"],
            "currency": order["currency"],
        }
        if return_url:
            checkout["callback_url"] = return_url
        if customer is not None:
            checkout["description"] = customer.description[:250]
            checkout["prefill"] = {
                k: v
                for k, v in (
                    ("name", customer.customer.name),
                    ("email", customer.customer.email),
                    ("contact", customer.customer.phone),
                )
                if v
            }
        return ProviderPayment(
            **common, status="requires_action", next_action=NextAction(type="client_secret", data=checkout)
        )

    # ---- refunds
    async def refund(
        self, reference: str, amount: int, currency: str, *, idempotency_key: str
    ) -> ProviderRefund:
        payments = await self._call("GET", f"/v1/orders/{reference}/payments", idempotent=True)
        captured = [p for p in payments.get("items") or [] if p.get("status") in ("captured", "refunded")]
        if not captured:
            raise ProviderDeclined(
                "The Razorpay order has no captured payment to refund", decline_code="charge_not_refundable"
            )
        # Razorpay wants at least 10 characters in the key.
        key = idempotency_key if len(idempotency_key) >= 10 else idempotency_key.rjust(10, "0")
        refund = await self._call(
            "POST",
            f"/v1/payments/{captured[0]['id']}/refund",
            idempotent=True,
            json={"amount": amount, "notes": {"idempotency_key": idempotency_key}},
            headers={"X-Refund-Idempotency": key},
        )
        return ProviderRefund(
            reference=refund["id"],
            status=_REFUND_STATUS.get(refund.get("status"), "pending"),
            amount=int(refund["amount"]),
            raw=refund,
        )

    # ---- payouts (RazorpayX)
    async def create_payout(
        self, payout_id: str, amount: int, currency: str, destination: PayoutDestination
    ) -> ProviderPayout:
        account_number = self.require(self.settings.razorpay_account_number, "razorpay_account_number")
        if currency != "INR":
            raise UnsupportedOperation("RazorpayX pays out in INR only")
        name = destination.get("name") or "Emanet seller"
        contact = {"name": name, "type": "vendor", "reference_id": payout_id}
        if destination.get("vpa"):
            fund_account: dict[str, Any] = {
                "account_type": "vpa",
                "vpa": {"address": destination["vpa"]},
                "contact": contact,
            }
            mode = "UPI"
        elif destination.get("account_number") and destination.get("bank_code"):
            fund_account = {
                "account_type": "bank_account",
                "contact": contact,
                "bank_account": {
                    "name": name,
                    "ifsc": destination["bank_code"],
                    "account_number": destination["account_number"],
                },
            }
            mode = "IMPS"
        else:
            raise ProviderDeclined(
                "RazorpayX pays to a UPI address (vpa) or a bank account with its IFSC",
                decline_code="invalid_destination",
            )
        payout = await self._call(
            "POST",
            "/v1/payouts",
            idempotent=True,
            headers={"X-Payout-Idempotency": payout_id},
            json={
                "account_number": account_number,
                "amount": amount,
                "currency": currency,
                "mode": mode,
                "purpose": "payout",
                "fund_account": fund_account,
                "queue_if_low_balance": True,
                "reference_id": payout_id,
                "narration": "Emanet payout",
            },
        )
        return _payout(payout)

    async def get_payout(self, reference: str) -> ProviderPayout:
        return _payout(await self._call("GET", f"/v1/payouts/{reference}", idempotent=True))

    # ---- reconciliation
    async def list_settlements(self, day: date) -> list[SettlementRecord]:
        records: list[SettlementRecord] = []
        skip = 0
        while True:
            page = await self._call(
                "GET",
                "/v1/settlements/recon/combined",
                idempotent=True,
                params={"year": day.year, "month": day.month, "day": day.day, "count": 1000, "skip": skip},
            )
            items = page.get("items") or []
            records += [r for r in map(_recon_record, items) if r is not None]
            if len(items) < 1000:
                break
            skip += len(items)
        if self.settings.razorpay_account_number:
            start = datetime.combine(day, time.min, UTC)
            payouts = await self._call(
                "GET",
                "/v1/payouts",
                idempotent=True,
                params={
                    "account_number": self.settings.razorpay_account_number,
                    "from": int(start.timestamp()),
                    "to": int((start + timedelta(days=1)).timestamp()) - 1,
                    "count": 100,
                },
            )
            records += [
                SettlementRecord(
                    reference=p["id"],
                    kind="payout",
                    amount=int(p["amount"]),
                    currency=p["currency"],
                    fee=int(p.get("fees") or 0),
                    occurred_at=datetime.fromtimestamp(int(p["created_at"]), UTC),
                )
                for p in payouts.get("items") or []
                if p.get("status") == "processed"
            ]
        return records

    # ---- webhooks
    async def parse_webhook(
        self, headers: Mapping[str, str], body: bytes, remote_ip: str | None = None
    ) -> WebhookEvent:
        self.check_remote_ip(remote_ip)
        secret = self.require(self.settings.razorpay_webhook_secret, "razorpay_webhook_secret")
        signature = header(headers, "X-Razorpay-Signature")
        if not signature:
            raise InvalidWebhookSignature("Missing X-Razorpay-Signature")
        try:
            self._utility().verify_webhook_signature(body.decode("utf-8"), signature, secret)
        except (razorpay.errors.SignatureVerificationError, UnicodeDecodeError, TypeError) as exc:
            raise InvalidWebhookSignature("X-Razorpay-Signature does not verify") from exc
        # Razorpay's event id header; a redelivery has the same body, so its digest is a stable fallback.
        event_id = header(headers, "x-razorpay-event-id") or hashlib.sha256(body).hexdigest()
        try:
            return _event(event_id, orjson.loads(body))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise InvalidWebhookSignature("The body is not a Razorpay event") from exc


# ---------------------------------------------------------------------------------------------- mapping
def _body(response: httpx.Response) -> Any:
    try:
        data = response.json()
    except ValueError:
        data = {}
    if response.is_success:
        return data
    error = data.get("error") if isinstance(data, dict) else None
    error = error if isinstance(error, dict) else {}
    raise ProviderDeclined(
        f"Razorpay: {error.get('description') or f'HTTP {response.status_code}'}",
        decline_code=error.get("reason")
        if error.get("reason") not in (None, "NA", "null")
        else error.get("code"),
    )


def _card(payment: Mapping[str, Any]) -> CardDetails | None:
    card = payment.get("card")
    if not isinstance(card, dict) or not card.get("last4"):
        return None
    return CardDetails(brand=str(card.get("network") or "unknown").lower(), last4=str(card["last4"]))


def _payout(payout: Mapping[str, Any]) -> ProviderPayout:
    status = _PAYOUT_STATUS.get(payout.get("status") or "", "pending")
    reason = payout.get("failure_reason") or (payout.get("status_details") or {}).get("description")
    return ProviderPayout(
        reference=payout["id"],
        status=status,
        failure_message=reason if status == "failed" else None,
        raw=payout,
    )


def _recon_record(item: Mapping[str, Any]) -> SettlementRecord | None:
    kinds: dict[str, SettlementKind] = {"payment": "payment", "refund": "refund"}
    kind = kinds.get(item.get("type") or "")
    if kind is None:
        return None
    reference = item.get("order_id") if kind == "payment" and item.get("order_id") else item["entity_id"]
    return SettlementRecord(
        reference=str(reference),
        kind=kind,
        amount=int(item["amount"]),
        currency=str(item["currency"]),
        fee=int(item.get("fee") or 0),
        occurred_at=datetime.fromtimestamp(int(item["created_at"]), UTC),
    )


def _entity(event: Mapping[str, Any], name: str) -> dict[str, Any]:
    entity: dict[str, Any] = ((event.get("payload") or {}).get(name) or {}).get("entity") or {}
    return entity


def _event(event_id: str, event: Mapping[str, Any]) -> WebhookEvent:
    event_type = str(event["event"])
    common: dict[str, Any] = {"event_id": event_id, "type": event_type, "raw": event}
    payment = _entity(event, "payment")
    if event_type in _PAYMENT_EVENTS:
        order_id = payment.get("order_id") or _entity(event, "order").get("id")
        source = payment or _entity(event, "order")
        return WebhookEvent(
            **common,
            kind="payment",
            status=_PAYMENT_EVENTS[event_type],
            payment_reference=order_id,
            amount=source.get("amount"),
            currency=source.get("currency"),
            card=_card(payment),
            failure_code=payment.get("error_reason") or payment.get("error_code"),
            failure_message=payment.get("error_description"),
            # The captured payment states Razorpay's fee (tax included), as the status query does.
            fee=int(payment["fee"])
            if _PAYMENT_EVENTS[event_type] == "succeeded" and payment.get("fee") is not None
            else None,
        )
    if event_type in _REFUND_EVENTS:
        refund = _entity(event, "refund")
        return WebhookEvent(
            **common,
            kind="refund",
            status=_REFUND_EVENTS[event_type],
            refund_reference=refund["id"],
            payment_reference=payment.get("order_id"),
            amount=refund.get("amount"),
            currency=refund.get("currency"),
        )
    if event_type.startswith("payout."):
        payout = _payout(_entity(event, "payout"))
        return WebhookEvent(
            **common,
            kind="payout",
            status=payout.status,
            payout_reference=payout.reference,
            amount=payout.raw.get("amount"),
            currency=payout.raw.get("currency"),
            failure_message=payout.failure_message,
        )
    return WebhookEvent(**common)
