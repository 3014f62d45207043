"""Jetcheckout (Projet, Turkey): hosted card payment with 3-D Secure, confirmed by a server-side status query.

Jetcheckout publishes no public API reference. This adapter follows the best public integration: Projet's
own Odoo modules on GitHub — ``payment_jetcheckout`` (gateway calls ``/api/v1/payment``,
``/api/v1/payment/status``, ``/api/v1/payment/refund``, ``/api/v1/payment/cancel``,
``/api/v1/prepayment/installment_options``), ``pos_jetcheckout`` (payment links through
``/api/v1/payment/prepare``) and ``payment_jetcheckout_api`` (the server side of ``prepare``, which shows
how it checks the hash). Seed 000 asks for "initialize payment with the documented payload, generate and
verify the security hash, parse the webhook, 3-D Secure redirect".

What we sign, exactly (all are ``base64(SHA-256(utf8(concatenation)))``, no HMAC — the secret key is inside
the digest):

- The gateway's direct card payment signs ``application_key + card_number + amount_in_minor_units +
  secret_key``. Emanet never sees card numbers (the issue forbids it where a hosted page exists), so it
  does NOT use that call. It uses the hosted page instead:
- ``POST /api/v1/payment/prepare`` with ``hash = base64(SHA-256(application_key + secret_key + id))`` where
  ``id`` is our payment id (``pay_…``), exactly as ``pos_jetcheckout`` builds it and
  ``payment_jetcheckout_api._get_hash`` verifies it. The answer carries the hosted page URL (``url``, or
  ``/payment/card?=<hash>`` on older versions); the payer enters the card and passes 3-D Secure there.
- The same ``hash`` is the only authenticator a browser return or callback can carry. When one carries a
  ``hash`` it must equal ours for that order (constant-time); a mismatch is rejected. It proves nothing
  more: it travels through the browser and never changes, so it is not a signature of the outcome.

Because returns and callbacks are unsigned, NOTHING they claim takes effect: every return
(``complete_payment``) and every callback (``parse_webhook``) is answered by
``POST /api/v1/payment/status`` (``application_key``, ``order_id``) and only the status answer decides.
Assumption (documented, not confirmed by Jetcheckout): the order id the status query takes is the ``id``
we gave ``prepare`` — our payment id — so one identifier ties the whole flow together.

Amounts: ``prepare`` takes a decimal amount (we send an exact decimal string such as ``"10.50"``; its
``amount`` field is a marshmallow ``Float``, which parses numeric strings), ``refund`` takes integer minor
units (``int(amount * 100)`` in the Odoo module), the status answer reports decimal major units
(``amount``, ``commission_amount`` — the provider fee). A response code of ``"00"``/``0`` is success for
operations and ``"00200"``/``200`` for the status query, as the Odoo modules check.

Refunds: a full refund while the status says the transaction is not ``completed`` (the day's batch is
still open) is sent as ``/api/v1/payment/cancel`` (a void); anything else as ``/api/v1/payment/refund``.
Neither call has an idempotency key, so neither — nor ``prepare`` — is ever retried automatically.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar
from urllib.parse import parse_qsl

import httpx
import structlog

from emanet.core import clock
from emanet.core.errors import ProviderError
from emanet.core.money import currency_exponent
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
    UnsupportedOperation,
    WebhookEvent,
    constant_time_equals,
)

log = structlog.get_logger("emanet.providers.jetcheckout")

OPERATION_OK = 0
STATUS_OK = 200


class JetcheckoutProvider(PaymentProvider):
    name: ClassVar[str] = "jetcheckout"
    display_name: ClassVar[str] = "Jetcheckout"
    supported_currencies: ClassVar[frozenset[str]] = frozenset({"TRY", "USD", "EUR"})

    def methods(self, currency: str, country: str | None = None) -> list[str]:
        return ["card"] if self.supports_currency(currency) else []

    # ------------------------------------------------------------------------------------------ signing
    def order_hash(self, order_id: str) -> str:
        """``base64(SHA-256(application_key + secret_key + order_id))``: the ``prepare`` request hash."""
        material = self._api_key() + self._secret_key() + order_id
        return base64.b64encode(hashlib.sha256(material.encode("utf-8")).digest()).decode("ascii")

    def verify_order_hash(self, order_id: str, received: str | None) -> None:
        if not constant_time_equals(self.order_hash(order_id), received):
            raise InvalidWebhookSignature("Jetcheckout hash does not match the order")

    # ------------------------------------------------------------------------------------------ payments
    async def create_payment(self, req: CreatePayment) -> ProviderPayment:
        if req.method != "card" or not self.supports_currency(req.currency):
            raise UnsupportedOperation(f"Jetcheckout does not offer {req.method} in {req.currency}")
        if req.saved_card_token:
            raise UnsupportedOperation("Jetcheckout saved cards are not supported by Emanet")
        expires = clock.now() + timedelta(hours=self.settings.payment_expiry_hours)
        body = {
            "apikey": self._api_key(),
            "id": req.payment_id,
            "hash": self.order_hash(req.payment_id),
            "mode": self._mode(),
            "language": "tr",
            "amount": _decimal_string(req.amount, req.currency),
            "currency": req.currency,
            "expiration": expires.isoformat(timespec="seconds"),
            "partner": {
                "name": req.customer.name or "",
                "email": req.customer.email or "",
                "phone": req.customer.phone or "",
                "ip_address": req.metadata.get("payer_ip", ""),
            },
            "order": {"name": req.description},
            "url": {"card": {"result": req.return_url, "webhook": self._webhook_url()}},
            "methods": ["card"],
        }
        result = await self._post("/api/v1/payment/prepare", body, idempotent=False, what="prepare")
        status = _int_code(result.get("status"))
        if status != OPERATION_OK:
            raise ProviderDeclined(
                f"Jetcheckout refused the payment: {result.get('message') or status}",
                decline_code=str(result.get("status")),
            )
        page = result.get("url") or f"{self._base()}/payment/card?={result.get('hash') or ''}"
        if not result.get("url") and not result.get("hash"):
            raise ProviderError("Jetcheckout prepared the payment but returned no payment page")
        log.info("jetcheckout_prepared", payment_id=req.payment_id)
        return ProviderPayment(
            reference=req.payment_id,
            status="requires_action",
            amount=req.amount,
            currency=req.currency,
            next_action=NextAction(type="redirect", url=str(page)),
            raw=_redacted(result),
        )

    async def get_payment(self, reference: str) -> ProviderPayment:
        return _payment_from_status(reference, await self._status(reference))

    async def complete_payment(self, reference: str, return_params: Mapping[str, str]) -> ProviderPayment:
        """The browser return is unsigned: reject a foreign order id or a wrong hash, then ask the gateway."""
        returned_order = return_params.get("order_id")
        if returned_order is not None and returned_order != reference:
            raise InvalidWebhookSignature("Jetcheckout return is for another order")
        if "hash" in return_params:
            self.verify_order_hash(reference, return_params["hash"])
        return await self.get_payment(reference)

    # ------------------------------------------------------------------------------------------ refunds
    async def refund(
        self, reference: str, amount: int, currency: str, *, idempotency_key: str
    ) -> ProviderRefund:
        status = await self._status(reference)
        payment = _payment_from_status(reference, status)
        if payment.status != "succeeded":
            raise ProviderDeclined(
                f"Jetcheckout payment {reference} is {payment.status}; nothing to refund",
                decline_code="not_refundable",
            )
        transaction_id = str(status.get("transaction_id") or "")
        body: dict[str, Any] = {
            "application_key": self._api_key(),
            "order_id": reference,
            "transaction_id": transaction_id,
            "language": "tr",
        }
        void = amount == payment.amount and not status.get("completed")
        if void:
            result = await self._post("/api/v1/payment/cancel", body, idempotent=False, what="cancel")
        else:
            body.update(amount=amount, currency=currency)
            result = await self._post("/api/v1/payment/refund", body, idempotent=False, what="refund")
        if _int_code(result.get("response_code")) != OPERATION_OK:
            raise ProviderDeclined(
                f"Jetcheckout refused the refund: {result.get('message')}",
                decline_code=str(result.get("response_code")),
            )
        log.info("jetcheckout_refunded", reference=reference, amount=amount, void=void)
        refund_reference = str(result.get("transaction_id") or f"{reference}:{idempotency_key}")
        return ProviderRefund(
            reference=refund_reference, status="succeeded", amount=amount, raw=_redacted(result)
        )

    # ------------------------------------------------------------------------------------------ webhooks
    async def parse_webhook(
        self, headers: Mapping[str, str], body: bytes, remote_ip: str | None = None
    ) -> WebhookEvent:
        """A callback names an order (JSON or form body); what happened is read from the status query.

        A callback that carries a ``hash`` must carry ours. A forged callback can therefore only make us
        ask Jetcheckout about an order we already know.
        """
        self.check_remote_ip(remote_ip)
        fields = _callback_fields(body)
        order_id = fields.get("order_id") or fields.get("id")
        if not order_id:
            raise InvalidWebhookSignature("Jetcheckout callback names no order")
        if "hash" in fields:
            self.verify_order_hash(order_id, fields["hash"])
        payment = await self.get_payment(order_id)
        return WebhookEvent(
            event_id=f"{order_id}:{payment.status}",
            type=f"status.{payment.status}",
            kind="payment",
            status=payment.status,
            payment_reference=order_id,
            amount=payment.amount,
            currency=payment.currency,
            failure_code=payment.failure_code,
            failure_message=payment.failure_message,
            card=payment.card,
            raw=payment.raw,
        )

    # ------------------------------------------------------------------------------------------ internals
    async def _status(self, order_id: str) -> dict[str, Any]:
        body = {"application_key": self._api_key(), "order_id": order_id, "lang": "tr"}
        return await self._post("/api/v1/payment/status", body, idempotent=True, what="status query")

    async def _post(
        self, path: str, body: Mapping[str, Any], *, idempotent: bool, what: str
    ) -> dict[str, Any]:
        async with http.provider_client(self.settings, self._base()) as client:
            response = await http.request(
                client, "Jetcheckout", self.settings, "POST", path, json=body, idempotent=idempotent
            )
        if response.status_code >= 400:
            raise ProviderDeclined(
                f"Jetcheckout refused the {what} (HTTP {response.status_code})",
                decline_code=f"http_{response.status_code}",
            )
        return _json_object(response, what)

    def _api_key(self) -> str:
        return self.require(self.settings.jetcheckout_api_key, "jetcheckout_api_key")

    def _secret_key(self) -> str:
        return self.require(self.settings.jetcheckout_secret_key, "jetcheckout_secret_key")

    def _base(self) -> str:
        return self.settings.jetcheckout_api_base.rstrip("/")

    def _mode(self) -> str:
        return "T" if self.settings.jetcheckout_test_mode else "P"

    def _webhook_url(self) -> str:
        return f"{self.settings.public_url.rstrip('/')}/api/v1/webhooks/jetcheckout"


def _payment_from_status(reference: str, result: Mapping[str, Any]) -> ProviderPayment:
    """Map a ``/payment/status`` answer: successful+cancelled is a void, successful a capture, an
    unsuccessful attempt a decline; any other response code means there is no attempt yet."""
    if _int_code(result.get("response_code")) != STATUS_OK:
        return ProviderPayment(
            reference=reference,
            status="requires_action",
            failure_message=str(result.get("message") or "") or None,
            raw=_redacted(result),
        )
    currency = str(result.get("currency") or "TRY")
    status: PaymentStatus
    if result.get("successful"):
        status = "cancelled" if result.get("cancelled") else "succeeded"
    else:
        status = "failed"
    failure_code = failure_message = None
    if status == "failed":
        failure_code = str(result.get("service_resp_code") or result.get("response_code"))
        failure_message = str(result.get("service_resp_message") or result.get("message") or "") or None
    return ProviderPayment(
        reference=reference,
        status=status,
        amount=_minor_units(result["amount"], currency) if result.get("amount") is not None else None,
        currency=currency,
        failure_code=failure_code,
        failure_message=failure_message,
        card=_card(result),
        fee=_minor_units(result["commission_amount"], currency)
        if result.get("commission_amount") is not None
        else None,
        raw=_redacted(result),
    )


def _card(result: Mapping[str, Any]) -> CardDetails | None:
    masked = str(result.get("card_number") or "")
    last4 = masked[-4:]
    if not last4.isdigit():
        return None
    brand = str(result.get("card_program") or result.get("card_family") or result.get("card_type") or "card")
    return CardDetails(brand=brand.lower(), last4=last4)


def _callback_fields(body: bytes) -> dict[str, str]:
    text = body.decode("utf-8", errors="replace").strip()
    if text.startswith("{"):
        try:
            parsed = json.loads(text)
        except ValueError as exc:
            raise InvalidWebhookSignature("Jetcheckout callback body is not valid JSON") from exc
        if not isinstance(parsed, dict):
            raise InvalidWebhookSignature("Jetcheckout callback body is not an object")
        return {str(k): str(v) for k, v in parsed.items() if v is not None}
    return dict(parse_qsl(text, keep_blank_values=True))


def _json_object(response: httpx.Response, what: str) -> dict[str, Any]:
    try:
        parsed = response.json(parse_float=Decimal)
    except ValueError as exc:
        raise ProviderError(f"Jetcheckout answered the {what} with something that is not JSON") from exc
    if not isinstance(parsed, dict):
        raise ProviderError(f"Jetcheckout answered the {what} with an unexpected shape")
    return parsed


def _int_code(value: Any) -> int | None:
    """Response codes come as ``"00"``, ``"00200"``, ``0`` or ``200`` depending on the endpoint version."""
    try:
        return int(str(value))
    except ValueError:
        return None


def _redacted(result: Mapping[str, Any]) -> dict[str, Any]:
    """The raw answer without anything card-like (a masked number is still not kept)."""
    return {k: v for k, v in result.items() if k not in {"card_number", "cvc", "hash", "hash_data"}}


def _decimal_string(amount: int, currency: str) -> str:
    exponent = currency_exponent(currency)
    return f"{Decimal(amount).scaleb(-exponent):.{exponent}f}"


def _minor_units(value: Any, currency: str) -> int:
    try:
        scaled = Decimal(str(value)).scaleb(currency_exponent(currency))
    except InvalidOperation as exc:
        raise ProviderError(f"Jetcheckout reported an amount that is not a number: {value!r}") from exc
    if scaled != scaled.to_integral_value():
        raise ProviderError(f"Jetcheckout reported {value!r} {currency}, finer than the currency allows")
    return int(scaled)
