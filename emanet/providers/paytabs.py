"""PayTabs (Gulf): hosted payment page, transaction query, refunds, signed IPN and signed browser return.

Sources: PayTabs PT2 API documentation and its official plugins (support.paytabs.com, "PayTabs PT2 API
Endpoints", "Hosted Payment Page", "Transaction query", "Refund request", "Instant Payment Notification",
"How to verify the return/callback signature"; the ``paytabs/paytabs-php`` SDK's ``is_valid_redirect`` and
``is_valid_ipn``):

- every call is ``POST`` JSON to the regional base URL with the profile's server key in the
  ``authorization`` header and ``profile_id`` in the body;
- ``/payment/request`` with ``tran_type: sale, tran_class: ecom`` answers ``tran_ref`` and ``redirect_url``
  (the hosted page, where 3-D Secure happens); ``/payment/query`` (``tran_ref``) answers ``payment_result``
  (``response_status`` A authorised, H hold, P pending, V voided, E error, D declined);
  ``/payment/request`` with ``tran_type: refund`` and the original ``tran_ref`` refunds fully or partly;
- the IPN (our ``callback`` URL) carries header ``Signature`` = hex HMAC-SHA256 of the raw body, keyed with
  the server key;
- the browser return (``return`` URL, a form POST of ``tranRef``, ``cartId``, ``respStatus``, ``respCode``,
  ``respMessage``, ``token``, ``customerEmail``, ``acquirerRRN``, ``acquirerMessage``, ``signature``)
  carries ``signature`` = hex HMAC-SHA256 of the other non-empty fields sorted by name and URL-encoded as
  PHP's ``http_build_query`` does. We verify it, and still decide only on a ``/payment/query`` answer.

Amounts: ``cart_amount`` is a decimal number in the currency's unit (3 decimals for KWD, BHD, OMR, JOD).
We write it as an exact JSON number built from the integer minor units (no float on the way) and read
answers as ``Decimal``. PayTabs has no idempotency key: neither a page request nor a refund is retried
automatically; ``cart_id`` is our payment id (refund: our refund idempotency key) for tracing.

No settlement listing: ``list_settlements`` keeps the base ``UnsupportedOperation`` (reconciliation then
checks our payments one by one with ``/payment/query``). PayTabs documents no API that lists transactions by
date. Its Reports API only lists the latest 30 reports a merchant scheduled in the Dashboard
(``GET {domain}/report/[PROFILE_ID]/list``) and downloads one as an Excel sheet whose columns are the layout
chosen in the Dashboard (``GET {domain}/report/[PROFILE_ID]/get/[REPORT_ID]``); the columns are not
documented. Sources:
https://docs.paytabs.com/manuals/PT-API-Endpoints/Reports/Reports-Landing,
https://docs.paytabs.com/manuals/PT-API-Endpoints/Reports/Step-2-Reports-Management/Step-1-Reterive-Reports-List/Retrieve-All-Reports-Landing
and
https://docs.paytabs.com/manuals/PT-API-Endpoints/Reports/Step-2-Reports-Management/Step-2-Download-One-Report/Download-Report-Landing
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar
from urllib.parse import quote_plus, urlencode

import httpx
import structlog

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
    header,
)

log = structlog.get_logger("emanet.providers.paytabs")

STATUSES: dict[str, PaymentStatus] = {
    "A": "succeeded",
    "H": "processing",
    "P": "processing",
    "V": "cancelled",
    "E": "failed",
    "D": "failed",
    "X": "cancelled",
}
# Our method -> PayTabs ``payment_methods`` value on the hosted page.
PAGE_METHODS = {"card": "creditcard", "mada": "mada", "apple_pay": "applepay", "stc_pay": "stcpay"}
GULF_CURRENCIES = frozenset({"SAR", "AED", "KWD", "BHD", "OMR", "QAR", "EGP", "JOD"})


class PaytabsProvider(PaymentProvider):
    name: ClassVar[str] = "paytabs"
    display_name: ClassVar[str] = "PayTabs"
    supported_currencies: ClassVar[frozenset[str]] = GULF_CURRENCIES | {"USD", "EUR", "GBP"}

    def methods(self, currency: str, country: str | None = None) -> list[str]:
        if currency == "SAR":
            return ["card", "mada", "apple_pay", "stc_pay"]
        return ["card", "apple_pay"] if self.supports_currency(currency) else []

    # ------------------------------------------------------------------------------------------ signing
    def ipn_signature(self, body: bytes) -> str:
        return hmac.new(self._server_key().encode(), body, hashlib.sha256).hexdigest()

    def return_signature(self, fields: Mapping[str, str]) -> str:
        """HMAC of the non-empty fields but ``signature``, sorted, encoded as PHP ``http_build_query``."""
        signed = sorted((k, v) for k, v in fields.items() if k != "signature" and v != "")
        query = urlencode(signed, quote_via=quote_plus, safe="").replace("~", "%7E")
        return hmac.new(self._server_key().encode(), query.encode(), hashlib.sha256).hexdigest()

    # ------------------------------------------------------------------------------------------ payments
    async def create_payment(self, req: CreatePayment) -> ProviderPayment:
        if req.method not in self.methods(req.currency, req.country):
            raise UnsupportedOperation(f"PayTabs does not offer {req.method} in {req.currency}")
        if req.saved_card_token:
            raise UnsupportedOperation("PayTabs saved-card charges are not supported by Emanet")
        body: dict[str, Any] = {
            "profile_id": self._profile_id(),
            "tran_type": "sale",
            "tran_class": "ecom",
            "cart_id": req.payment_id,
            "cart_description": req.description,
            "cart_currency": req.currency,
            "cart_amount": _decimal(req.amount, req.currency),
            "callback": self._ipn_url(),
            "return": req.return_url,
            "hide_shipping": True,
            "payment_methods": [PAGE_METHODS[req.method]],
            "paypage_lang": "ar" if req.country == "SA" else "en",
            "customer_details": {
                "name": req.customer.name or "",
                "email": req.customer.email or "",
                "phone": req.customer.phone or "",
                "ip": req.metadata.get("payer_ip", ""),
                "country": req.country or "",
            },
        }
        if req.save_card:
            body.update(tokenise=2, show_save_card=True)
        page = await self._post("/payment/request", body, idempotent=False, what="payment page")
        if not page.get("tran_ref") or not page.get("redirect_url"):
            raise ProviderError("PayTabs created a payment page without a reference or URL")
        log.info("paytabs_page_created", payment_id=req.payment_id, tran_ref=page["tran_ref"])
        return ProviderPayment(
            reference=str(page["tran_ref"]),
            status="requires_action",
            amount=req.amount,
            currency=req.currency,
            next_action=NextAction(type="redirect", url=str(page["redirect_url"])),
            raw=page,
        )

    async def get_payment(self, reference: str) -> ProviderPayment:
        result = await self._post(
            "/payment/query",
            {"profile_id": self._profile_id(), "tran_ref": reference},
            idempotent=True,
            what="transaction query",
        )
        return _from_transaction(reference, result)

    async def complete_payment(self, reference: str, return_params: Mapping[str, str]) -> ProviderPayment:
        """Verify the return's ``signature`` (and that it is about this transaction), then query."""
        if return_params:
            if not constant_time_equals(self.return_signature(return_params), return_params.get("signature")):
                raise InvalidWebhookSignature("PayTabs return signature does not match")
            if return_params.get("tranRef") not in (None, reference):
                raise InvalidWebhookSignature("PayTabs return is for another transaction")
        return await self.get_payment(reference)

    # ------------------------------------------------------------------------------------------ refunds
    async def refund(
        self, reference: str, amount: int, currency: str, *, idempotency_key: str
    ) -> ProviderRefund:
        body = {
            "profile_id": self._profile_id(),
            "tran_type": "refund",
            "tran_class": "ecom",
            "cart_id": idempotency_key,
            "cart_currency": currency,
            "cart_amount": _decimal(amount, currency),
            "cart_description": f"Refund of {reference}",
            "tran_ref": reference,
        }
        result = await self._post("/payment/request", body, idempotent=False, what="refund")
        outcome = _mapping(result.get("payment_result"))
        if outcome.get("response_status") != "A":
            raise ProviderDeclined(
                f"PayTabs refused the refund: {outcome.get('response_message')}",
                decline_code=str(outcome.get("response_code") or "refund_declined"),
            )
        log.info("paytabs_refunded", reference=reference, amount=amount, refund_ref=result.get("tran_ref"))
        return ProviderRefund(
            reference=str(result.get("tran_ref") or idempotency_key),
            status="succeeded",
            amount=amount,
            raw=result,
        )

    # ------------------------------------------------------------------------------------------ webhooks
    async def parse_webhook(
        self, headers: Mapping[str, str], body: bytes, remote_ip: str | None = None
    ) -> WebhookEvent:
        self.check_remote_ip(remote_ip)
        if not constant_time_equals(self.ipn_signature(body), header(headers, "Signature")):
            raise InvalidWebhookSignature("PayTabs IPN signature does not match")
        try:
            result = json.loads(body, parse_float=Decimal)
        except ValueError as exc:
            raise InvalidWebhookSignature("PayTabs IPN body is not JSON") from exc
        if not isinstance(result, dict) or not result.get("tran_ref"):
            raise InvalidWebhookSignature("PayTabs IPN names no transaction")
        tran_ref = str(result["tran_ref"])
        outcome = _mapping(result.get("payment_result"))
        response_status = str(outcome.get("response_status") or "")
        tran_type = str(result.get("tran_type") or "").lower()
        event_id = f"{tran_ref}:{response_status}"
        if tran_type == "refund":
            currency = str(result.get("tran_currency") or result.get("cart_currency") or "")
            return WebhookEvent(
                event_id=event_id,
                type="refund",
                kind="refund",
                status="succeeded" if response_status == "A" else "failed",
                refund_reference=tran_ref,
                payment_reference=_str_or_none(result.get("previous_tran_ref")),
                amount=_minor_units(result.get("cart_amount"), currency) if currency else None,
                currency=currency or None,
                failure_message=_str_or_none(outcome.get("response_message")),
                raw=result,
            )
        if tran_type not in {"sale", "auth"}:
            return WebhookEvent(event_id=event_id, type=tran_type or "unknown", raw=result)
        payment = _from_transaction(tran_ref, result)
        return WebhookEvent(
            event_id=event_id,
            type=tran_type,
            kind="payment",
            status=payment.status,
            payment_reference=tran_ref,
            amount=payment.amount,
            currency=payment.currency,
            failure_code=payment.failure_code,
            failure_message=payment.failure_message,
            card=payment.card,
            raw=result,
        )

    # ------------------------------------------------------------------------------------------ internals
    async def _post(
        self, path: str, body: Mapping[str, Any], *, idempotent: bool, what: str
    ) -> dict[str, Any]:
        headers = {"authorization": self._server_key(), "content-type": "application/json"}
        async with http.provider_client(
            self.settings, self.settings.paytabs_api_base, headers=headers
        ) as client:
            response = await http.request(
                client,
                "PayTabs",
                self.settings,
                "POST",
                path,
                content=_json_with_exact_decimals(body),
                idempotent=idempotent,
            )
        answer = _json_object(response)
        if response.status_code >= 400:
            reason = answer.get("message") or f"HTTP {response.status_code}"
            raise ProviderDeclined(
                f"PayTabs refused the {what}: {reason}",
                decline_code=str(answer.get("code") or f"http_{response.status_code}"),
            )
        if not answer:
            raise ProviderError(f"PayTabs answered the {what} with something that is not a JSON object")
        return answer

    def _server_key(self) -> str:
        return self.require(self.settings.paytabs_server_key, "paytabs_server_key")

    def _profile_id(self) -> int | str:
        profile = self.require(self.settings.paytabs_profile_id, "paytabs_profile_id")
        return int(profile) if profile.isdigit() else profile

    def _ipn_url(self) -> str:
        return f"{self.settings.public_url.rstrip('/')}/api/v1/webhooks/paytabs"


def _from_transaction(reference: str, result: Mapping[str, Any]) -> ProviderPayment:
    outcome = _mapping(result.get("payment_result"))
    response_status = str(outcome.get("response_status") or "")
    status: PaymentStatus = STATUSES.get(response_status, "requires_action")
    currency = str(result.get("tran_currency") or result.get("cart_currency") or "")
    amount = None
    if currency and "cart_amount" in result:
        amount = _minor_units(result["cart_amount"], currency)
    failed = status == "failed"
    return ProviderPayment(
        reference=reference,
        status=status,
        amount=amount,
        currency=currency or None,
        failure_code=str(outcome.get("response_code") or response_status) if failed else None,
        failure_message=_str_or_none(outcome.get("response_message")) if failed else None,
        card=_card(result),
        raw=dict(result),
    )


def _card(result: Mapping[str, Any]) -> CardDetails | None:
    info = _mapping(result.get("payment_info"))
    last4 = str(info.get("payment_description") or "")[-4:]
    if not last4.isdigit():
        return None
    return CardDetails(
        brand=str(info.get("card_scheme") or "card").lower(),
        last4=last4,
        exp_month=_int_or_none(info.get("expiryMonth")),
        exp_year=_int_or_none(info.get("expiryYear")),
        token=_str_or_none(result.get("token")),
    )


def _json_with_exact_decimals(payload: Mapping[str, Any]) -> bytes:
    """JSON where ``Decimal`` values become JSON numbers written digit for digit (``json`` would refuse
    them, and going through ``float`` is what we avoid)."""
    nonce = uuid.uuid4().hex
    numbers: dict[str, str] = {}

    def encode(value: Any) -> str:
        if isinstance(value, Decimal):
            marker = f"{nonce}:{len(numbers)}"
            numbers[marker] = format(value, "f")
            return marker
        raise TypeError(f"cannot encode {type(value).__name__}")

    text = json.dumps(payload, default=encode)
    for marker, digits in numbers.items():
        text = text.replace(f'"{marker}"', digits)
    return text.encode()


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        parsed = response.json(parse_float=Decimal)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _decimal(amount: int, currency: str) -> Decimal:
    return Decimal(amount).scaleb(-currency_exponent(currency))


def _minor_units(value: Any, currency: str) -> int:
    try:
        scaled = Decimal(str(value)).scaleb(currency_exponent(currency))
    except InvalidOperation as exc:
        raise ProviderError(f"PayTabs reported an amount that is not a number: {value!r}") from exc
    if scaled != scaled.to_integral_value():
        raise ProviderError(f"PayTabs reported {value!r} {currency}, finer than the currency allows")
    return int(scaled)


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _int_or_none(value: Any) -> int | None:
    try:
        return int(str(value)) if value not in (None, "") else None
    except ValueError:
        return None


def _str_or_none(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None
