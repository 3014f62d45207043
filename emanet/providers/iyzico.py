"""iyzico (Turkey): Checkout Form through the official ``iyzipay`` SDK, signed webhooks.

Sources: docs.iyzico.com ("Checkout Form" initialize and retrieve, "Refund" v2, "Webhook" with
``X-IYZ-SIGNATURE-V3``) and the SDK's own samples (``iyzico/iyzipay-python``: ``initialize_checkout_form.py``,
``retrieve_checkout_form_result.py``, ``refund_payment.py``):

- ``CheckoutFormInitialize.create`` answers ``token`` and ``paymentPageUrl``: the payer is redirected to the
  hosted form, enters the card there and passes 3-D Secure; iyzico then POSTs ``token`` to our
  ``callbackUrl`` (the return URL). The token is our reference.
- ``CheckoutForm.retrieve`` (``token``) is the server-side truth: ``paymentStatus`` SUCCESS / FAILURE,
  ``paymentId``, ``price``, ``iyziCommissionFee`` + ``iyziCommissionRateAmount`` (the provider fee), card
  association and last four digits. Every return is confirmed this way (``complete_payment``).
- ``Payment.refund`` (``POST /v2/payment/refund``) refunds ``price`` of ``paymentId`` fully or partly.
- Reconciliation: the Reporting API's daily transactions (``iyzipay.RetrieveTransactions``, ``GET
  /v2/reporting/payment/transactions?transactionDate=YYYY-MM-DD&page=N``; docs.iyzico.com "Raporlama Servisi"
  (daily report section) https://docs.iyzico.com/ek-servisler/raporlama-servisi and
  https://docs.iyzico.com/en/advanced/reporting-service, SDK sample ``samples/retrieve_transactions.py``;
  fields as ``TransactionReportItem``/``TransactionReportResource`` of ``iyzico/iyzipay-dotnet``): one page
  answers ``transactions``, ``currentPage`` and ``totalPageCount`` (both absent when the day is empty); each
  line has ``transactionType`` (``PAYMENT``/``REFUND``/``CANCEL``), ``transactionDate`` (``yyyy-MM-dd
  HH:mm:ss``), ``transactionId``, ``paymentId``, ``conversationId`` (what we sent: the payment's attempt key,
  the refund's idempotency key), ``price``, ``transactionCurrency``, and on payment lines
  ``transactionStatus`` (``1``/``2`` approved, ``0`` under fraud review, ``-1`` rejected) and the provider fee
  ``iyzicoCommission`` + ``iyzicoFee``. A payment's basket lines are summed per ``paymentId``.
- Webhook: header ``X-IYZ-SIGNATURE-V3`` = hex HMAC-SHA256, keyed with the secret key, of
  ``secretKey + iyziEventType + iyziPaymentId + token + paymentConversationId + status`` for checkout-form
  events (without ``token`` for direct API payments).

iyzico is a Turkish service: report dates are read as Turkey time (UTC+3 all year since 2016). A UTC day
spans two Turkish dates, so both are fetched and the lines are kept by their time.

Prices are decimal strings (``"1250.50"``) written exactly from integer minor units; answers are read as
``Decimal``. None of the calls has an idempotency key: initialize and refund are sent once, only the
retrieve is retried. iyzico requires buyer details Emanet may not hold; the payments service passes what it
knows in ``metadata`` (``payer_ip`` — required —, ``identity_number``, ``address``, ``city``); without a
Turkish identity number iyzico's documented placeholder ``11111111111`` is sent.

The SDK is synchronous and takes ``base_url`` as a bare host it always reaches over HTTPS with no timeout.
Calls run in a worker thread; each SDK resource gets its own header dict (the SDK's is a class attribute it
mutates per call) and a connection factory that honours ``EMANET_IYZICO_API_BASE``'s scheme (``https`` in
production, ``http`` for a local fake) and ``provider_timeout_seconds``. Request building and the IYZWSv2
authorization stay the SDK's.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import http.client
import json
from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal, InvalidOperation
from functools import partial
from typing import Any, ClassVar
from urllib.parse import urlsplit

import iyzipay
import structlog
from iyzipay.iyzipay_resource import IyzipayResource

from emanet.core.errors import ProviderError
from emanet.core.money import currency_exponent
from emanet.providers import http as provider_http
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
    header,
)

log = structlog.get_logger("emanet.providers.iyzico")

NO_TURKISH_ID = "11111111111"
NOT_PROVIDED = "Not provided"
FORM_STATUSES: dict[str, PaymentStatus] = {
    "SUCCESS": "succeeded",
    "FAILURE": "failed",
    "INIT_THREEDS": "requires_action",
    "CALLBACK_THREEDS": "processing",
}
TURKEY_TIME = timezone(timedelta(hours=3), "TRT")  # Europe/Istanbul: UTC+3 all year since 2016
REPORT_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
APPROVED_LINES = frozenset({1, 2})  # payment-line transactionStatus; 0 = fraud review, -1 = rejected
REFUND_LINES = frozenset({"REFUND", "CANCEL"})


class TransientStatus(Exception):
    """A 429/5xx answer from iyzico, retried like a network failure."""


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, OSError | http.client.HTTPException | TransientStatus)


class _Connections:
    """Stands in for the ``http.client`` module the SDK resource opens connections from."""

    def __init__(self, scheme: str, timeout: float) -> None:
        connection = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
        self.HTTPSConnection = partial(connection, timeout=timeout)


class IyzicoProvider(PaymentProvider):
    name: ClassVar[str] = "iyzico"
    display_name: ClassVar[str] = "iyzico"
    supported_currencies: ClassVar[frozenset[str]] = frozenset({"TRY", "USD", "EUR", "GBP"})

    def methods(self, currency: str, country: str | None = None) -> list[str]:
        return ["card"] if self.supports_currency(currency) else []

    # ------------------------------------------------------------------------------------------ signing
    def webhook_signature(self, event: Mapping[str, Any]) -> str:
        parts = [str(event.get("iyziEventType") or ""), str(event.get("iyziPaymentId") or "")]
        if event.get("token"):
            parts.append(str(event["token"]))
        parts += [str(event.get("paymentConversationId") or ""), str(event.get("status") or "")]
        secret = self._secret_key()
        return hmac.new(secret.encode(), (secret + "".join(parts)).encode(), hashlib.sha256).hexdigest()

    # ------------------------------------------------------------------------------------------ payments
    async def create_payment(self, req: CreatePayment) -> ProviderPayment:
        if req.method != "card" or not self.supports_currency(req.currency):
            raise UnsupportedOperation(f"iyzico does not offer {req.method} in {req.currency}")
        if req.saved_card_token:
            raise UnsupportedOperation("iyzico saved-card charges are not supported by Emanet")
        payer_ip = req.metadata.get("payer_ip")
        if not payer_ip:
            raise ProviderDeclined(
                "iyzico needs the payer's IP address", decline_code="missing_payer_details"
            )
        price = _decimal_string(req.amount, req.currency)
        first_name, _, last_name = (req.customer.name or req.customer.email or "Emanet buyer").partition(" ")
        address = {
            "contactName": req.customer.name or first_name,
            "city": req.metadata.get("city", NOT_PROVIDED),
            "country": req.metadata.get("country_name", req.country or "Turkey"),
            "address": req.metadata.get("address", NOT_PROVIDED),
        }
        request = {
            "locale": self._locale(req.country),
            "conversationId": req.payment_id,
            "price": price,
            "paidPrice": price,
            "currency": req.currency,
            "basketId": req.payment_id,
            "paymentGroup": "PRODUCT",
            "callbackUrl": req.return_url,
            "enabledInstallments": ["1"],
            "buyer": {
                "id": req.metadata.get("buyer_id", req.payment_id),
                "name": first_name,
                "surname": last_name or first_name,
                "email": req.customer.email or "",
                "gsmNumber": req.customer.phone or "",
                "identityNumber": req.metadata.get("identity_number", NO_TURKISH_ID),
                "registrationAddress": address["address"],
                "ip": payer_ip,
                "city": address["city"],
                "country": address["country"],
            },
            "billingAddress": address,
            "basketItems": [
                {
                    "id": req.payment_id,
                    "name": req.description[:200],
                    "category1": "Escrow",
                    "itemType": "VIRTUAL",
                    "price": price,
                }
            ],
        }
        result = await self._call(
            iyzipay.CheckoutFormInitialize(),
            "create",
            request,
            idempotent=False,
            what="checkout form initialize",
        )
        if result.get("status") != "success" or not result.get("token") or not result.get("paymentPageUrl"):
            raise ProviderDeclined(
                f"iyzico refused the checkout form: {result.get('errorMessage')}",
                decline_code=str(result.get("errorCode") or "initialize_failed"),
            )
        log.info("iyzico_checkout_form_created", payment_id=req.payment_id)
        return ProviderPayment(
            reference=str(result["token"]),
            status="requires_action",
            amount=req.amount,
            currency=req.currency,
            next_action=NextAction(type="redirect", url=str(result["paymentPageUrl"])),
            raw=_without_form(result),
        )

    async def get_payment(self, reference: str) -> ProviderPayment:
        return _from_form(reference, await self._retrieve(reference))

    # ------------------------------------------------------------------------------------------ refunds
    async def refund(
        self, reference: str, amount: int, currency: str, *, idempotency_key: str
    ) -> ProviderRefund:
        form = await self._retrieve(reference)
        if _from_form(reference, form).status != "succeeded" or not form.get("paymentId"):
            raise ProviderDeclined(
                f"iyzico payment {reference} has not succeeded; nothing to refund",
                decline_code="not_refundable",
            )
        request = {
            "locale": "tr",
            "conversationId": idempotency_key,
            "paymentId": str(form["paymentId"]),
            "price": _decimal_string(amount, currency),
        }
        result = await self._call(iyzipay.Payment(), "refund", request, idempotent=False, what="refund")
        if result.get("status") != "success":
            raise ProviderDeclined(
                f"iyzico refused the refund: {result.get('errorMessage')}",
                decline_code=str(result.get("errorCode") or "refund_failed"),
            )
        log.info("iyzico_refunded", reference=reference, amount=amount)
        refund_reference = result.get("paymentTransactionId") or result.get("hostReference")
        return ProviderRefund(
            reference=str(refund_reference or f"{form['paymentId']}:{idempotency_key}"),
            status="succeeded",
            amount=amount,
            raw=result,
        )

    # ------------------------------------------------------------------------------------ reconciliation
    async def list_settlements(self, day: date) -> list[SettlementRecord]:
        """Approved payments, refunds and cancels iyzico recorded on the UTC ``day`` (no payouts here)."""
        start = datetime.combine(day, time.min, UTC)
        end = start + timedelta(days=1)
        last = end - timedelta(seconds=1)
        local_days = sorted({start.astimezone(TURKEY_TIME).date(), last.astimezone(TURKEY_TIME).date()})
        lines = [line for local_day in local_days for line in await self._report_day(local_day)]
        payments: dict[str, SettlementRecord] = {}
        records: list[SettlementRecord] = []
        for line in lines:
            occurred_at = _report_time(line.get("transactionDate"))
            if not start <= occurred_at < end:
                continue
            kind = str(line.get("transactionType") or "")
            currency = str(line.get("transactionCurrency") or "")
            if not currency:
                raise ProviderError(f"iyzico reported a {kind or 'transaction'} line without its currency")
            conversation_id = str(line.get("conversationId") or "") or None
            if kind == "PAYMENT":
                if _status(line.get("transactionStatus")) not in APPROVED_LINES:
                    continue
                reference = str(line.get("paymentId") or line.get("transactionId") or "")
                amount = _minor_units(line.get("price"), currency)
                fee = sum(_minor_units(line.get(k) or 0, currency) for k in ("iyzicoCommission", "iyzicoFee"))
                earlier = payments.get(reference)
                if earlier is not None:  # another basket line of the same payment
                    amount, fee = amount + earlier.amount, fee + earlier.fee
                    occurred_at = min(occurred_at, earlier.occurred_at)
                    conversation_id = earlier.merchant_reference or conversation_id
                payments[reference] = SettlementRecord(
                    reference=reference,
                    kind="payment",
                    amount=amount,
                    currency=currency,
                    fee=fee,
                    occurred_at=occurred_at,
                    merchant_reference=conversation_id,
                )
            elif kind in REFUND_LINES:
                records.append(
                    SettlementRecord(
                        reference=str(line.get("transactionId") or ""),
                        kind="refund",
                        amount=abs(_minor_units(line.get("price"), currency)),
                        currency=currency,
                        fee=0,
                        occurred_at=occurred_at,
                        merchant_reference=conversation_id,
                    )
                )
        return [*payments.values(), *records]

    async def _report_day(self, local_day: date) -> list[dict[str, Any]]:
        """Every line of one Turkish calendar day of the daily transactions report, all pages."""
        lines: list[dict[str, Any]] = []
        page = 1
        while True:
            answer = await self._call(
                iyzipay.RetrieveTransactions(),
                "retrieve",
                {"transactionDate": local_day.isoformat(), "page": str(page)},
                idempotent=True,
                what="daily transactions report",
            )
            if answer.get("status") != "success":
                code, message = answer.get("errorCode") or "no error code", answer.get("errorMessage") or ""
                raise ProviderError(
                    f"iyzico refused the daily transactions report for {local_day.isoformat()}: "
                    f"{code} {message}".rstrip(),
                    provider="iyzico",
                )
            found = answer.get("transactions") or []
            if not isinstance(found, list):
                raise ProviderError("iyzico answered the daily transactions report with an unexpected shape")
            lines += [line for line in found if isinstance(line, dict)]
            if not found or page >= int(answer.get("totalPageCount") or 0):
                return lines
            page += 1

    # ------------------------------------------------------------------------------------------ webhooks
    async def parse_webhook(
        self, headers: Mapping[str, str], body: bytes, remote_ip: str | None = None
    ) -> WebhookEvent:
        self.check_remote_ip(remote_ip)
        try:
            event = json.loads(body)
        except ValueError as exc:
            raise InvalidWebhookSignature("iyzico webhook body is not JSON") from exc
        if not isinstance(event, dict):
            raise InvalidWebhookSignature("iyzico webhook body is not an object")
        received = (header(headers, "X-IYZ-SIGNATURE-V3") or "").lower()
        if not constant_time_equals(self.webhook_signature(event), received):
            raise InvalidWebhookSignature("iyzico webhook signature does not match")
        event_type = str(event.get("iyziEventType") or "")
        status = str(event.get("status") or "")
        event_id = str(event.get("iyziReferenceCode") or f"{event.get('iyziPaymentId')}:{status}")
        ours = {"SUCCESS": "succeeded", "FAILURE": "failed"}.get(status)
        if ours is None or not event.get("token"):
            # Only checkout-form payments are ours; anything else is stored and acknowledged.
            return WebhookEvent(event_id=event_id, type=event_type, raw=event)
        return WebhookEvent(
            event_id=event_id,
            type=event_type,
            kind="payment",
            status=ours,
            payment_reference=str(event["token"]),
            raw=event,
        )

    # ------------------------------------------------------------------------------------------ internals
    async def _retrieve(self, token: str) -> dict[str, Any]:
        return await self._call(
            iyzipay.CheckoutForm(),
            "retrieve",
            {"locale": "tr", "token": token},
            idempotent=True,
            what="checkout form retrieve",
        )

    async def _call(
        self, resource: IyzipayResource, action: str, request: dict[str, Any], *, idempotent: bool, what: str
    ) -> dict[str, Any]:
        """``resource.<action>(request, options)`` in a worker thread, with the retry policy."""
        base = urlsplit(self.settings.iyzico_api_base)
        resource.httplib = _Connections(base.scheme, self.settings.provider_timeout_seconds)
        resource.header = dict(resource.header)  # the SDK mutates a class-level dict on every call
        options = {"api_key": self._api_key(), "secret_key": self._secret_key(), "base_url": base.netloc}
        method = getattr(resource, action)

        def send() -> tuple[int, bytes]:
            response = method(request, options)
            try:
                return response.status, response.read()
            finally:
                response.close()

        async def attempt() -> tuple[int, bytes]:
            status, payload = await asyncio.to_thread(send)
            if status == 429 or status >= 500:
                raise TransientStatus(f"HTTP {status}")
            return status, payload

        status, payload = await provider_http.with_retries(
            "iyzico", self.settings, attempt, idempotent=idempotent, is_transient=_is_transient, what=what
        )
        try:
            parsed = json.loads(payload, parse_float=Decimal)
        except ValueError as exc:
            raise ProviderError(
                f"iyzico answered the {what} with something that is not JSON (HTTP {status})"
            ) from exc
        if not isinstance(parsed, dict):
            raise ProviderError(f"iyzico answered the {what} with an unexpected shape")
        return parsed

    def _api_key(self) -> str:
        return self.require(self.settings.iyzico_api_key, "iyzico_api_key")

    def _secret_key(self) -> str:
        return self.require(self.settings.iyzico_secret_key, "iyzico_secret_key")

    @staticmethod
    def _locale(country: str | None) -> str:
        return "tr" if (country or "TR") == "TR" else "en"


def _from_form(reference: str, form: Mapping[str, Any]) -> ProviderPayment:
    """A checkout form result: ``paymentStatus`` decides; a failed retrieve without one means the payer
    has not finished the form yet."""
    payment_status = str(form.get("paymentStatus") or "")
    status: PaymentStatus
    if payment_status in FORM_STATUSES:
        status = FORM_STATUSES[payment_status]
    else:
        status = "requires_action" if form.get("status") != "success" else "processing"
    if status == "succeeded" and str(form.get("fraudStatus")) == "0":
        status = "processing"  # held for iyzico's fraud review
    currency = str(form.get("currency") or "")
    failed = status == "failed"
    fee = None
    fee_parts = [form.get(k) for k in ("iyziCommissionFee", "iyziCommissionRateAmount")]
    if currency and any(part is not None for part in fee_parts):
        fee = sum(_minor_units(part or 0, currency) for part in fee_parts)
    return ProviderPayment(
        reference=reference,
        status=status,
        amount=_minor_units(form["price"], currency) if currency and form.get("price") is not None else None,
        currency=currency or None,
        failure_code=str(form.get("errorCode") or "declined") if failed else None,
        failure_message=(str(form.get("errorMessage") or "") or None) if failed else None,
        card=_card(form),
        fee=fee if status == "succeeded" else None,
        raw=_without_form(form),
    )


def _card(form: Mapping[str, Any]) -> CardDetails | None:
    last4 = str(form.get("lastFourDigits") or "")
    if len(last4) != 4 or not last4.isdigit():
        return None
    return CardDetails(brand=str(form.get("cardAssociation") or "card").lower(), last4=last4)


def _without_form(result: Mapping[str, Any]) -> dict[str, Any]:
    """The answer without the embeddable form script (large, and of no use once stored)."""
    return {k: v for k, v in result.items() if k != "checkoutFormContent"}


def _decimal_string(amount: int, currency: str) -> str:
    exponent = currency_exponent(currency)
    return f"{Decimal(amount).scaleb(-exponent):.{exponent}f}"


def _report_time(value: Any) -> datetime:
    """A report ``transactionDate`` (``yyyy-MM-dd HH:mm:ss``, Turkey time) in UTC."""
    try:
        local = datetime.strptime(str(value), REPORT_TIME_FORMAT).replace(tzinfo=TURKEY_TIME)
    except ValueError as exc:
        raise ProviderError(f"iyzico reported a transaction date that is not a date: {value!r}") from exc
    return local.astimezone(UTC)


def _status(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _minor_units(value: Any, currency: str) -> int:
    try:
        scaled = Decimal(str(value)).scaleb(currency_exponent(currency))
    except InvalidOperation as exc:
        raise ProviderError(f"iyzico reported an amount that is not a number: {value!r}") from exc
    if scaled != scaled.to_integral_value():
        raise ProviderError(f"iyzico reported {value!r} {currency}, finer than the currency allows")
    return int(scaled)
