"""Paystack: hosted checkout (initialize + verify), saved authorizations, refunds, transfers, webhooks. httpx.

Paystack has no official Python SDK. Sources: https://paystack.com/docs/api/transaction/ (initialize,
verify, charge_authorization, list), https://paystack.com/docs/payments/accept-payments/ (redirect to
``authorization_url``, verify on return), https://paystack.com/docs/payments/recurring-charges/ (reusable
``authorization_code``), https://paystack.com/docs/api/refund/, https://paystack.com/docs/transfers/
(recipients, ``reference`` on transfers, ``GET /transfer/verify/{reference}``),
https://paystack.com/docs/payments/webhooks/ (``x-paystack-signature`` = hex HMAC-SHA512 of the raw body with
the secret key; Paystack's source IPs, for ``webhook_ip_allowlist``).

Idempotency: our payment id is the transaction ``reference`` and our payout id the transfer ``reference``;
Paystack refuses to reuse a reference, so retrying these calls never creates a second transaction or transfer.
A transfer whose answer was lost is recovered with ``/transfer/verify/{reference}``. An initialize whose
answer was lost cannot be recovered (the checkout link is only in that answer); it moved no money, and the
caller gets ``ProviderUnavailable`` and starts a new payment. Refunds have no idempotency key, so they are
sent once. Transfers need OTP confirmation turned off on the Paystack integration. Refund events name the
transaction (``payment_reference``) and the amount, and the refund id only when Paystack includes it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import httpx
import orjson

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
    ProviderUnavailable,
    RefundStatus,
    SettlementRecord,
    WebhookEvent,
    constant_time_equals,
    header,
)

PAYSTACK_CURRENCIES = frozenset({"NGN", "GHS", "ZAR", "KES", "USD"})
_TRANSACTION_STATUS: dict[str, PaymentStatus] = {
    "success": "succeeded",
    "failed": "failed",
    "abandoned": "requires_action",
    "ongoing": "requires_action",
    "pending": "processing",
    "processing": "processing",
    "queued": "processing",
    "reversed": "refunded",
}
_REFUND_STATUS: dict[str, RefundStatus] = {
    "pending": "pending",
    "processing": "pending",
    "processed": "succeeded",
    "failed": "failed",
}
_TRANSFER_STATUS: dict[str, PayoutStatus] = {
    "success": "paid",
    "failed": "failed",
    "reversed": "failed",
    "abandoned": "failed",
    "blocked": "failed",
    "rejected": "failed",
    "pending": "processing",
    "received": "processing",
    "processing": "processing",
    "otp": "pending",
}
_REFUND_EVENTS: dict[str, RefundStatus] = {
    "refund.pending": "pending",
    "refund.processing": "pending",
    "refund.processed": "succeeded",
    "refund.failed": "failed",
}
_TRANSFER_EVENTS: dict[str, PayoutStatus] = {
    "transfer.success": "paid",
    "transfer.failed": "failed",
    "transfer.reversed": "failed",
}
DUPLICATE_REFERENCE = "Duplicate Transaction Reference"


class PaystackProvider(PaymentProvider):
    name = "paystack"
    display_name = "Paystack"
    supported_currencies = PAYSTACK_CURRENCIES
    supports_payouts = True
    supports_saved_cards = True

    def methods(self, currency: str, country: str | None = None) -> list[str]:
        if currency == "NGN":
            return ["card", "bank_transfer", "ussd"]
        return ["card"] if self.supports_currency(currency) else []

    # ---- plumbing
    async def _send(
        self,
        method: str,
        path: str,
        *,
        idempotent: bool,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
    ) -> httpx.Response:
        secret = self.require(self.settings.paystack_secret_key, "paystack_secret_key")
        async with http.provider_client(
            self.settings, self.settings.paystack_api_base, headers={"Authorization": f"Bearer {secret}"}
        ) as client:
            return await http.request(
                client,
                "paystack",
                self.settings,
                method,
                path,
                idempotent=idempotent,
                json=json,
                params=params,
            )

    async def _call(
        self,
        method: str,
        path: str,
        *,
        idempotent: bool,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
    ) -> Any:
        return _data(await self._send(method, path, idempotent=idempotent, json=json, params=params))

    # ---- payments
    async def create_payment(self, req: CreatePayment) -> ProviderPayment:
        if not self.supports_currency(req.currency):
            raise ProviderDeclined(f"Paystack does not take {req.currency}", decline_code="invalid_currency")
        if not req.customer.email:
            raise ProviderDeclined("Paystack needs the payer's e-mail address", decline_code="email_required")
        metadata = {
            **req.metadata,
            "payment_id": req.payment_id,
            "save_card": req.save_card,
            "cancel_action": req.return_url,
        }
        if req.saved_card_token:
            charge = await self._call(
                "POST",
                "/transaction/charge_authorization",
                idempotent=True,
                json={
                    "authorization_code": req.saved_card_token,
                    "email": req.customer.email,
                    "amount": req.amount,
                    "currency": req.currency,
                    "reference": req.payment_id,
                    "metadata": metadata,
                },
            )
            return _transaction(charge, saved=True)
        response = await self._send(
            "POST",
            "/transaction/initialize",
            idempotent=True,
            json={
                "email": req.customer.email,
                "amount": req.amount,
                "currency": req.currency,
                "reference": req.payment_id,
                "callback_url": req.return_url,
                "metadata": metadata,
            },
        )
        if response.status_code == 400 and _message(response) == DUPLICATE_REFERENCE:
            # An earlier attempt reached Paystack; its answer (the only copy of the checkout link) was lost.
            raise ProviderUnavailable(
                "Paystack initialized this payment but its answer was lost; nothing was "
                "charged — start a new payment attempt",
                provider="paystack",
            )
        data = _data(response)
        return ProviderPayment(
            reference=data["reference"],
            status="requires_action",
            amount=req.amount,
            currency=req.currency,
            raw=data,
            next_action=NextAction(type="redirect", url=data["authorization_url"]),
        )

    async def get_payment(self, reference: str) -> ProviderPayment:
        data = await self._call("GET", f"/transaction/verify/{reference}", idempotent=True)
        return _transaction(data, saved=bool((data.get("metadata") or {}).get("save_card")))

    # ---- refunds (no idempotency key: sent once)
    async def refund(
        self, reference: str, amount: int, currency: str, *, idempotency_key: str
    ) -> ProviderRefund:
        data = await self._call(
            "POST",
            "/refund",
            idempotent=False,
            json={
                "transaction": reference,
                "amount": amount,
                "currency": currency,
                "merchant_note": f"Emanet refund {idempotency_key}",
            },
        )
        return ProviderRefund(
            reference=str(data["id"]),
            status=_REFUND_STATUS.get(data.get("status"), "pending"),
            amount=int(data.get("amount") or amount),
            raw=data,
        )

    # ---- payouts (transfers)
    async def create_payout(
        self, payout_id: str, amount: int, currency: str, destination: PayoutDestination
    ) -> ProviderPayout:
        account, bank = destination.get("account_number"), destination.get("bank_code")
        if not account or not bank:
            raise ProviderDeclined(
                "Paystack transfers need an account number and its bank code",
                decline_code="invalid_destination",
            )
        # Paystack answers an existing recipient for the same account, so this is safe to retry.
        recipient = await self._call(
            "POST",
            "/transferrecipient",
            idempotent=True,
            json={
                "type": "nuban" if currency == "NGN" else "basa" if currency == "ZAR" else "mobile_money",
                "name": destination.get("name") or "Emanet seller",
                "account_number": account,
                "bank_code": bank,
                "currency": currency,
            },
        )
        response = await self._send(
            "POST",
            "/transfer",
            idempotent=True,
            json={
                "source": "balance",
                "amount": amount,
                "currency": currency,
                "recipient": recipient["recipient_code"],
                "reference": payout_id,
                "reason": "Emanet payout",
            },
        )
        if response.status_code == 400 and "reference" in _message(response).lower():
            # An earlier attempt created it and the answer was lost: fetch that transfer.
            return _transfer(await self._call("GET", f"/transfer/verify/{payout_id}", idempotent=True))
        return _transfer(_data(response))

    async def get_payout(self, reference: str) -> ProviderPayout:
        return _transfer(await self._call("GET", f"/transfer/{reference}", idempotent=True))

    # ---- reconciliation
    async def list_settlements(self, day: date) -> list[SettlementRecord]:
        start = datetime.combine(day, time.min, UTC)
        window = {"from": start.isoformat(), "to": (start + timedelta(days=1)).isoformat(), "perPage": 100}
        records: list[SettlementRecord] = []
        for item in await self._all("/transaction", {**window, "status": "success"}):
            records.append(
                SettlementRecord(
                    reference=item["reference"],
                    kind="payment",
                    amount=int(item["amount"]),
                    currency=item["currency"],
                    fee=int(item.get("fees") or 0),
                    occurred_at=_time(item.get("paid_at") or item["created_at"]),
                    merchant_reference=item["reference"],
                )
            )
        for item in await self._all("/refund", window):
            if item.get("status") == "processed":
                records.append(
                    SettlementRecord(
                        reference=str(item["id"]),
                        kind="refund",
                        amount=int(item["amount"]),
                        currency=item["currency"],
                        fee=0,
                        occurred_at=_time(item.get("refunded_at") or item["createdAt"]),
                    )
                )
        for item in await self._all("/transfer", window):
            if item.get("status") == "success":
                records.append(
                    SettlementRecord(
                        reference=item["transfer_code"],
                        kind="payout",
                        amount=int(item["amount"]),
                        currency=item["currency"],
                        fee=int(item.get("fee_charged") or 0),
                        occurred_at=_time(item.get("transferred_at") or item["createdAt"]),
                        merchant_reference=item.get("reference"),
                    )
                )
        return records

    async def _all(self, path: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        page = 1
        while True:
            response = await self._send("GET", path, idempotent=True, params={**params, "page": page})
            body = response.json() if response.is_success else {}
            _data(response)  # raises on errors
            items += body.get("data") or []
            if page >= int((body.get("meta") or {}).get("pageCount") or 1):
                return items
            page += 1

    # ---- webhooks
    async def parse_webhook(
        self, headers: Mapping[str, str], body: bytes, remote_ip: str | None = None
    ) -> WebhookEvent:
        self.check_remote_ip(remote_ip)
        secret = self.require(self.settings.paystack_secret_key, "paystack_secret_key")
        expected = hmac.new(secret.encode(), body, hashlib.sha512).hexdigest()
        if not constant_time_equals(expected, (header(headers, "x-paystack-signature") or "").lower()):
            raise InvalidWebhookSignature("x-paystack-signature does not verify")
        try:
            return _event(orjson.loads(body), body)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise InvalidWebhookSignature("The body is not a Paystack event") from exc


# ---------------------------------------------------------------------------------------------- mapping
def _message(response: httpx.Response) -> str:
    try:
        return str(response.json().get("message") or "")
    except (ValueError, AttributeError):
        return ""


def _data(response: httpx.Response) -> Any:
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.is_success and isinstance(body, dict) and body.get("status") is not False:
        return body.get("data")
    message = (body.get("message") if isinstance(body, dict) else None) or f"HTTP {response.status_code}"
    code = body.get("code") if isinstance(body, dict) else None
    raise ProviderDeclined(f"Paystack: {message}", decline_code=code or str(response.status_code))


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _card(data: Mapping[str, Any], *, saved: bool) -> CardDetails | None:
    authorization = data.get("authorization") or {}
    if authorization.get("channel") != "card" or not authorization.get("last4"):
        return None
    reusable = saved and authorization.get("reusable") and authorization.get("authorization_code")
    return CardDetails(
        brand=str(authorization.get("brand") or authorization.get("card_type") or "unknown").strip().lower(),
        last4=str(authorization["last4"]),
        exp_month=int(authorization["exp_month"]) if authorization.get("exp_month") else None,
        exp_year=int(authorization["exp_year"]) if authorization.get("exp_year") else None,
        token=str(authorization["authorization_code"]) if reusable else None,
    )


def _transaction(data: Mapping[str, Any], *, saved: bool) -> ProviderPayment:
    if data.get("paused") and data.get("authorization_url"):
        # charge_authorization needs the payer (3-D Secure / OTP) before it can go on.
        return ProviderPayment(
            reference=data["reference"],
            status="requires_action",
            amount=data.get("amount"),
            currency=data.get("currency"),
            raw=data,
            next_action=NextAction(type="three_d_secure", url=data["authorization_url"]),
        )
    status = _TRANSACTION_STATUS.get(data.get("status") or "", "pending")
    failed = status == "failed"
    return ProviderPayment(
        reference=data["reference"],
        status=status,
        amount=int(data["amount"]),
        currency=data.get("currency"),
        failure_code=str(data.get("gateway_response") or "declined").lower().replace(" ", "_")
        if failed
        else None,
        failure_message=data.get("gateway_response") if failed else None,
        card=_card(data, saved=saved),
        fee=int(data["fees"]) if status == "succeeded" and data.get("fees") is not None else None,
        raw=data,
    )


def _transfer(data: Mapping[str, Any]) -> ProviderPayout:
    status = _TRANSFER_STATUS.get(data.get("status") or "", "pending")
    reason = data.get("failures") or data.get("reason") if status == "failed" else None
    return ProviderPayout(
        reference=data["transfer_code"],
        status=status,
        failure_message=str(reason) if reason else None,
        raw=data,
    )


def _event(event: Mapping[str, Any], body: bytes) -> WebhookEvent:
    event_type = str(event["event"])
    data: Mapping[str, Any] = event.get("data") or {}
    # Paystack events carry no event id: the object id and event type identify one, a digest otherwise.
    object_id = (
        data.get("id") or data.get("transfer_code") or data.get("reference") or data.get("refund_reference")
    )
    event_id = f"{event_type}:{object_id}" if object_id else hashlib.sha256(body).hexdigest()
    amount = data.get("amount")
    common: dict[str, Any] = {
        "event_id": event_id,
        "type": event_type,
        "raw": event,
        "currency": data.get("currency"),
        "amount": int(amount) if amount is not None else None,
    }
    if event_type == "charge.success":
        payment = _transaction(data, saved=bool((data.get("metadata") or {}).get("save_card")))
        return WebhookEvent(
            **common,
            kind="payment",
            status=payment.status,
            payment_reference=payment.reference,
            card=payment.card,
            fee=payment.fee,
        )
    if event_type in _REFUND_EVENTS:
        # Paystack's refund events name the transaction (and amount) but not always the refund id.
        transaction = data.get("transaction")
        reference = (
            transaction.get("reference")
            if isinstance(transaction, dict)
            else data.get("transaction_reference")
        )
        return WebhookEvent(
            **common,
            kind="refund",
            status=_REFUND_EVENTS[event_type],
            refund_reference=str(data["id"]) if data.get("id") else None,
            payment_reference=reference,
        )
    if event_type in _TRANSFER_EVENTS:
        return WebhookEvent(
            **common,
            kind="payout",
            status=_TRANSFER_EVENTS[event_type],
            payout_reference=data["transfer_code"],
            failure_message=str(data.get("reason") or event_type)
            if event_type != "transfer.success"
            else None,
        )
    return WebhookEvent(**common)
