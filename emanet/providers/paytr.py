"""PayTR (Turkey): iFrame API token, callback hash, status query, refund.

Sources: PayTR's developer documentation and official sample code (dev.paytr.com, "iFrame API" step 1
``get-token`` and step 2 "Bildirim URL", "Durum Sorgu" ``/odeme/durum-sorgu``, "İade" ``/odeme/iade``):

- ``POST /odeme/api/get-token`` (form fields) with ``paytr_token = base64(HMAC-SHA256(merchant_key,
  merchant_id + user_ip + merchant_oid + email + payment_amount + user_basket + no_installment +
  max_installment + currency + test_mode + merchant_salt))``; the answer's ``token`` opens the payment
  iFrame at ``/odeme/guvenli/<token>`` (card entry and 3-D Secure happen there);
- PayTR posts the result to the merchant's notification URL (form fields ``merchant_oid``, ``status``,
  ``total_amount``, ``hash``, ``failed_reason_code``, ``failed_reason_msg``, ``payment_amount``,
  ``currency``, ``test_mode``, ``payment_type``) with ``hash = base64(HMAC-SHA256(merchant_key,
  merchant_oid + merchant_salt + status + total_amount))``; the reply must be the plain text ``OK``
  (``webhook_reply``), otherwise PayTR keeps notifying;
- the status query signs ``merchant_id + merchant_oid + merchant_salt`` and the refund signs
  ``merchant_id + merchant_oid + return_amount + merchant_salt``, the same way;
- reconciliation: "İşlem Dökümü" (transaction list, https://dev.paytr.com/islem-dokumu and
  https://dev.paytr.com/en/islem-dokumu, PayTR's sample ``TransactionDetailController``): ``POST
  /rapor/islem-dokumu`` with ``merchant_id``, ``start_date``, ``end_date`` (``YYYY-MM-DD hh:mm:ss``, at most
  three days apart), ``dummy`` (``1`` asks for made-up demo data) and ``paytr_token`` signing ``merchant_id +
  start_date + end_date + merchant_salt``. The answer's ``status`` is ``success`` with the rows, ``failed``
  when the range has no transaction, or ``error`` with ``err_no``/``err_msg``. Each row (sales and returns
  alike): ``islem_tipi`` (``S`` sale, ``I`` return), ``islem_tutari`` (decimal string), ``kesinti_tutari``
  (PayTR's deduction, the fee), ``net_tutar``, ``islem_tarihi`` (``DD.MM.YYYY``, no time), ``para_birimi``,
  ``siparis_no`` (our ``merchant_oid``). The rows are read from ``data``, where PayTR's integrations find
  them (PayTR's pages show the fields, not the envelope); another shape fails loudly. Returns carry no
  refund id of their own, only the order's ``merchant_oid``.

The browser's return to ``merchant_ok_url``/``merchant_fail_url`` is unsigned and only triggers a status
query (``complete_payment``).

Units: ``payment_amount`` and the callback's amounts are kuruş-style integers (amount * 100; every currency
PayTR takes has two decimals); the basket, the status answer and ``return_amount`` use decimal strings
(``"11.97"``). PayTR writes TRY as ``TL``. ``merchant_oid`` must be alphanumeric, so it is our payment id
without the underscore. PayTR is a Turkish service and its dates are Turkey time (UTC+3 all year since
2016): the transaction list for a UTC day asks for ``03:00:00`` to ``02:59:59`` the next day. PayTR requires
the payer's IP address: the payments service passes it as ``metadata["payer_ip"]``. No call has an
idempotency key, so ``get-token`` and refunds are sent once; the refund's optional ``reference_no`` carries
our refund key for tracing. The transaction list is a read and is retried.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar
from urllib.parse import parse_qsl

import httpx
import structlog

from emanet.core.errors import ProviderError
from emanet.core.money import currency_exponent
from emanet.providers import http
from emanet.providers.base import (
    CreatePayment,
    InvalidWebhookSignature,
    NextAction,
    PaymentProvider,
    PaymentStatus,
    ProviderDeclined,
    ProviderPayment,
    ProviderRefund,
    SettlementKind,
    SettlementRecord,
    UnsupportedOperation,
    WebhookEvent,
    WebhookReply,
    constant_time_equals,
)

log = structlog.get_logger("emanet.providers.paytr")

WIRE_CURRENCY = {"TRY": "TL", "USD": "USD", "EUR": "EUR", "GBP": "GBP", "RUB": "RUB"}
OUR_CURRENCY = {wire: ours for ours, wire in WIRE_CURRENCY.items()}
CALLBACK_STATUSES: dict[str, PaymentStatus] = {"success": "succeeded", "failed": "failed"}
PAYMENT_WINDOW_MINUTES = 30  # iFrame ``timeout_limit``
TURKEY_TIME = timezone(timedelta(hours=3), "TRT")  # Europe/Istanbul: UTC+3 all year since 2016
REPORT_WINDOW_FORMAT = "%Y-%m-%d %H:%M:%S"
REPORT_KINDS: dict[str, SettlementKind] = {"S": "payment", "I": "refund"}


class PaytrProvider(PaymentProvider):
    name: ClassVar[str] = "paytr"
    display_name: ClassVar[str] = "PayTR"
    supported_currencies: ClassVar[frozenset[str]] = frozenset(WIRE_CURRENCY)

    def methods(self, currency: str, country: str | None = None) -> list[str]:
        return ["card"] if self.supports_currency(currency) else []

    # ------------------------------------------------------------------------------------------ signing
    def sign(self, *parts: str) -> str:
        """``base64(HMAC-SHA256(merchant_key, concatenation))``; callers put the salt where PayTR wants it."""
        digest = hmac.new(self._merchant_key().encode(), "".join(parts).encode(), hashlib.sha256).digest()
        return base64.b64encode(digest).decode("ascii")

    def callback_hash(self, merchant_oid: str, status: str, total_amount: str) -> str:
        return self.sign(merchant_oid, self._salt(), status, total_amount)

    # ------------------------------------------------------------------------------------------ payments
    async def create_payment(self, req: CreatePayment) -> ProviderPayment:
        if req.method != "card" or not self.supports_currency(req.currency):
            raise UnsupportedOperation(f"PayTR does not offer {req.method} in {req.currency}")
        if req.saved_card_token:
            raise UnsupportedOperation("PayTR saved-card charges are not supported by Emanet")
        user_ip = req.metadata.get("payer_ip")
        if not user_ip or not req.customer.email:
            raise ProviderDeclined(
                "PayTR needs the payer's IP address and e-mail", decline_code="missing_payer_details"
            )
        merchant_id = self._merchant_id()
        merchant_oid = merchant_order_id(req.payment_id)
        basket = json.dumps([[req.description, _decimal_string(req.amount, req.currency), 1]])
        fields = {
            "merchant_id": merchant_id,
            "user_ip": user_ip,
            "merchant_oid": merchant_oid,
            "email": req.customer.email,
            "payment_amount": str(req.amount),
            "user_basket": base64.b64encode(basket.encode()).decode("ascii"),
            "no_installment": "1",
            "max_installment": "0",
            "currency": WIRE_CURRENCY[req.currency],
            "test_mode": "1" if self.settings.paytr_test_mode else "0",
        }
        fields["paytr_token"] = self.sign(
            *(
                fields[k]
                for k in (
                    "merchant_id",
                    "user_ip",
                    "merchant_oid",
                    "email",
                    "payment_amount",
                    "user_basket",
                    "no_installment",
                    "max_installment",
                    "currency",
                    "test_mode",
                )
            ),
            self._salt(),
        )
        fields.update(
            {
                "user_name": req.customer.name or req.customer.email,
                "user_address": "-",
                "user_phone": req.customer.phone or "-",
                "merchant_ok_url": req.return_url,
                "merchant_fail_url": req.return_url,
                "timeout_limit": str(PAYMENT_WINDOW_MINUTES),
                "debug_on": "0",
                "lang": "tr" if (req.country or "TR") == "TR" else "en",
            }
        )
        answer = await self._post("/odeme/api/get-token", fields, idempotent=False, what="iFrame token")
        if answer.get("status") != "success" or not answer.get("token"):
            raise ProviderDeclined(
                f"PayTR refused the payment: {answer.get('reason') or answer}", decline_code="token_refused"
            )
        log.info("paytr_token_issued", payment_id=req.payment_id, merchant_oid=merchant_oid)
        frame = f"{self._base()}/odeme/guvenli/{answer['token']}"
        return ProviderPayment(
            reference=merchant_oid,
            status="requires_action",
            amount=req.amount,
            currency=req.currency,
            next_action=NextAction(type="iframe", url=frame),
            raw={"status": "success"},
        )

    async def get_payment(self, reference: str) -> ProviderPayment:
        merchant_id = self._merchant_id()
        fields = {
            "merchant_id": merchant_id,
            "merchant_oid": reference,
            "paytr_token": self.sign(merchant_id, reference, self._salt()),
        }
        answer = await self._post("/odeme/durum-sorgu", fields, idempotent=True, what="status query")
        if answer.get("status") != "success":
            # PayTR only reports completed payments here; a declined one is known from its callback.
            return ProviderPayment(
                reference=reference,
                status="requires_action",
                failure_message=str(answer.get("err_msg") or "") or None,
                raw=answer,
            )
        currency = OUR_CURRENCY.get(str(answer.get("currency") or "TL"), "TRY")
        amount = _minor_units(answer.get("payment_amount"), currency)
        refunded = sum(
            _minor_units(r.get("return_amount"), currency)
            for r in answer.get("returns") or []
            if isinstance(r, dict)
        )
        status: PaymentStatus = "succeeded"
        if refunded:
            status = "refunded" if refunded >= amount else "partially_refunded"
        return ProviderPayment(
            reference=reference, status=status, amount=amount, currency=currency, raw=answer
        )

    # ------------------------------------------------------------------------------------------ refunds
    async def refund(
        self, reference: str, amount: int, currency: str, *, idempotency_key: str
    ) -> ProviderRefund:
        merchant_id = self._merchant_id()
        return_amount = _decimal_string(amount, currency)
        reference_no = "".join(c for c in idempotency_key if c.isalnum())[:64]
        fields = {
            "merchant_id": merchant_id,
            "merchant_oid": reference,
            "return_amount": return_amount,
            "reference_no": reference_no,
            "paytr_token": self.sign(merchant_id, reference, return_amount, self._salt()),
        }
        answer = await self._post("/odeme/iade", fields, idempotent=False, what="refund")
        if answer.get("status") != "success":
            raise ProviderDeclined(
                f"PayTR refused the refund: {answer.get('err_msg')}",
                decline_code=str(answer.get("err_no") or "refund_refused"),
            )
        log.info("paytr_refunded", reference=reference, amount=amount)
        return ProviderRefund(
            reference=reference_no or reference, status="succeeded", amount=amount, raw=answer
        )

    # ------------------------------------------------------------------------------------ reconciliation
    async def list_settlements(self, day: date) -> list[SettlementRecord]:
        """Sales and returns PayTR recorded on the UTC ``day`` (it lists only completed ones; no payouts)."""
        start = datetime.combine(day, time.min, UTC)
        end = start + timedelta(days=1)
        merchant_id = self._merchant_id()
        start_date = start.astimezone(TURKEY_TIME).strftime(REPORT_WINDOW_FORMAT)
        end_date = (end - timedelta(seconds=1)).astimezone(TURKEY_TIME).strftime(REPORT_WINDOW_FORMAT)
        fields = {
            "merchant_id": merchant_id,
            "start_date": start_date,
            "end_date": end_date,
            "dummy": "0",
            "paytr_token": self.sign(merchant_id, start_date, end_date, self._salt()),
        }
        answer = await self._post("/rapor/islem-dokumu", fields, idempotent=True, what="transaction list")
        status = answer.get("status")
        if status == "failed":  # no transaction in the range
            return []
        if status != "success":
            raise ProviderError(
                f"PayTR refused the transaction list: {answer.get('err_no') or status} "
                f"{answer.get('err_msg') or ''}".rstrip(),
                provider="paytr",
            )
        rows = answer.get("data")
        if not isinstance(rows, list):
            raise ProviderError("PayTR answered the transaction list without a list of transactions")
        records: list[SettlementRecord] = []
        for row in rows:
            kind = REPORT_KINDS.get(str(row.get("islem_tipi") or "")) if isinstance(row, dict) else None
            if kind is None:  # not a row, or neither a sale nor a return
                continue
            wire_currency = str(row.get("para_birimi") or "")
            currency = OUR_CURRENCY.get(wire_currency)
            if currency is None:
                raise ProviderError(f"PayTR reported a transaction in an unknown currency {wire_currency!r}")
            records.append(
                SettlementRecord(
                    reference=str(row.get("siparis_no") or ""),
                    kind=kind,
                    amount=abs(_report_amount(row.get("islem_tutari"), currency)),
                    currency=currency,
                    fee=abs(_report_amount(row.get("kesinti_tutari") or "0", currency)),
                    occurred_at=_report_day(row.get("islem_tarihi"), start, end),
                )
            )
        return records

    # ------------------------------------------------------------------------------------------ webhooks
    async def parse_webhook(
        self, headers: Mapping[str, str], body: bytes, remote_ip: str | None = None
    ) -> WebhookEvent:
        self.check_remote_ip(remote_ip)
        form = dict(parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True))
        merchant_oid, status = form.get("merchant_oid", ""), form.get("status", "")
        expected = self.callback_hash(merchant_oid, status, form.get("total_amount", ""))
        if not merchant_oid or not constant_time_equals(expected, form.get("hash")):
            raise InvalidWebhookSignature("PayTR callback hash does not match")
        ours = CALLBACK_STATUSES.get(status)
        if ours is None:
            return WebhookEvent(event_id=f"{merchant_oid}:{status}", type=status, raw=_safe(form))
        currency = OUR_CURRENCY.get(form.get("currency") or "TL", "TRY")
        # payment_amount is the order amount; total_amount adds any instalment interest the payer paid.
        paid = form.get("payment_amount") or form.get("total_amount", "")
        failed = ours == "failed"
        return WebhookEvent(
            event_id=f"{merchant_oid}:{status}",
            type=status,
            kind="payment",
            status=ours,
            payment_reference=merchant_oid,
            amount=int(paid) if paid.isdigit() else None,
            currency=currency,
            failure_code=(form.get("failed_reason_code") or None) if failed else None,
            failure_message=(form.get("failed_reason_msg") or None) if failed else None,
            raw=_safe(form),
        )

    def webhook_reply(self, event: WebhookEvent) -> WebhookReply:
        """PayTR stops notifying only when the answer is exactly the plain text ``OK``."""
        return WebhookReply(status_code=200, content="OK", media_type="text/plain")

    # ------------------------------------------------------------------------------------------ internals
    async def _post(
        self, path: str, fields: Mapping[str, str], *, idempotent: bool, what: str
    ) -> dict[str, Any]:
        async with http.provider_client(self.settings, self._base()) as client:
            response = await http.request(
                client, "PayTR", self.settings, "POST", path, data=dict(fields), idempotent=idempotent
            )
        answer = _json_object(response)
        if response.status_code >= 400 and not answer:
            raise ProviderDeclined(
                f"PayTR refused the {what} (HTTP {response.status_code})",
                decline_code=f"http_{response.status_code}",
            )
        if not answer:
            raise ProviderError(f"PayTR answered the {what} with something that is not a JSON object")
        return answer

    def _merchant_id(self) -> str:
        return self.require(self.settings.paytr_merchant_id, "paytr_merchant_id")

    def _merchant_key(self) -> str:
        return self.require(self.settings.paytr_merchant_key, "paytr_merchant_key")

    def _salt(self) -> str:
        return self.require(self.settings.paytr_merchant_salt, "paytr_merchant_salt")

    def _base(self) -> str:
        return self.settings.paytr_api_base.rstrip("/")


def merchant_order_id(payment_id: str) -> str:
    """PayTR's ``merchant_oid`` is alphanumeric only: ``pay_01j…`` becomes ``pay01j…``."""
    return "".join(c for c in payment_id if c.isalnum())[:64]


def _safe(form: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in form.items() if k != "hash"}


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        parsed = response.json(parse_float=Decimal)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _report_amount(value: Any, currency: str) -> int:
    """A transaction-list amount: ``"10.00"`` as documented; a decimal comma (``"1.234,56"``) is accepted."""
    text = str(value if value is not None else "").strip()
    if "," in text:
        decimal_mark = "," if text.rfind(",") > text.rfind(".") else "."
        grouping = "." if decimal_mark == "," else ","
        text = text.replace(grouping, "").replace(decimal_mark, ".")
    return _minor_units(text, currency)


def _report_day(value: Any, start: datetime, end: datetime) -> datetime:
    """``islem_tarihi`` (``DD.MM.YYYY``, Turkey time, no time of day) as a moment inside ``[start, end)``."""
    try:
        local_midnight = datetime.strptime(str(value), "%d.%m.%Y").replace(tzinfo=TURKEY_TIME)
    except ValueError as exc:
        raise ProviderError(f"PayTR reported a transaction date that is not a date: {value!r}") from exc
    return min(max(local_midnight.astimezone(UTC), start), end - timedelta(seconds=1))


def _decimal_string(amount: int, currency: str) -> str:
    exponent = currency_exponent(currency)
    return f"{Decimal(amount).scaleb(-exponent):.{exponent}f}"


def _minor_units(value: Any, currency: str) -> int:
    try:
        scaled = Decimal(str(value)).scaleb(currency_exponent(currency))
    except InvalidOperation as exc:
        raise ProviderError(f"PayTR reported an amount that is not a number: {value!r}") from exc
    if scaled != scaled.to_integral_value():
        raise ProviderError(f"PayTR reported {value!r} {currency}, finer than the currency allows")
    return int(scaled)
