"""PayTR adapter against a local fake of its HTTP API (tests/fakes/paytr_fake.py)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest
from werkzeug import Request, Response

from emanet.core.errors import ProviderError
from emanet.core.settings import Settings
from emanet.providers.base import (
    CreatePayment,
    Customer,
    InvalidWebhookSignature,
    ProviderDeclined,
    ProviderUnavailable,
    SettlementRecord,
)
from emanet.providers.paytr import PaytrProvider
from emanet.providers.registry import get_provider
from tests.fakes.paytr_fake import PaytrFake, RecordingServer
from tests.fakes.server import CLIENT_TIMEOUT_SECONDS, HANG_SECONDS

MERCHANT_ID = "123456"
MERCHANT_KEY = "sJBdebKzjP3BRD9x"
MERCHANT_SALT = "MpkJG5FhAtNtYBDQ"


def make_settings(base_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "env": "test",
        "paytr_merchant_id": MERCHANT_ID,
        "paytr_merchant_key": MERCHANT_KEY,
        "paytr_merchant_salt": MERCHANT_SALT,
        "paytr_api_base": base_url,
        "paytr_test_mode": True,
        "provider_timeout_seconds": CLIENT_TIMEOUT_SECONDS,
        "provider_max_attempts": 3,
        "provider_retry_initial_seconds": 0.01,
        "provider_retry_max_seconds": 0.02,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def shared_server() -> Iterator[RecordingServer]:
    server = RecordingServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def fake(shared_server: RecordingServer) -> Iterator[PaytrFake]:
    with PaytrFake(MERCHANT_ID, MERCHANT_KEY, MERCHANT_SALT, server=shared_server) as server:
        yield server


@pytest.fixture
def provider(fake: PaytrFake) -> PaytrProvider:
    adapter = get_provider("paytr", make_settings(fake.url))
    assert isinstance(adapter, PaytrProvider)
    return adapter


def payment(payment_id: str = "pay_01jpaytr", amount: int = 49_990, **metadata: str) -> CreatePayment:
    return CreatePayment(
        payment_id=payment_id,
        amount=amount,
        currency="TRY",
        description="Escrow E-4001",
        return_url=f"https://emanet.test/api/v1/payments/{payment_id}/return",
        customer=Customer(name="Mehmet K", email="mehmet@example.com", phone="05551112233"),
        metadata={"payer_ip": "198.51.100.4", **metadata},
    )


async def test_iframe_token_is_signed_and_opens_the_payment_frame(provider, fake) -> None:
    created = await provider.create_payment(payment())

    assert (created.reference, created.status) == ("pay01jpaytr", "requires_action")
    assert created.next_action is not None and created.next_action.type == "iframe"
    [token] = fake.tokens
    assert created.next_action.url == f"{fake.url}/odeme/guvenli/{token}"
    [sent] = fake.calls("/odeme/api/get-token")
    assert (sent["payment_amount"], sent["currency"], sent["test_mode"]) == ("49990", "TL", "1")
    assert json.loads(base64.b64decode(sent["user_basket"])) == [["Escrow E-4001", "499.90", 1]]
    assert sent["merchant_ok_url"] == "https://emanet.test/api/v1/payments/pay_01jpaytr/return"
    assert sent["merchant_fail_url"] == sent["merchant_ok_url"]


async def test_wrong_merchant_key_is_refused(fake) -> None:
    adapter = get_provider("paytr", make_settings(fake.url, paytr_merchant_key="not-the-key"))

    with pytest.raises(ProviderDeclined, match="paytr_token"):
        await adapter.create_payment(payment())


async def test_payer_ip_is_required(provider, fake) -> None:
    request = payment()
    without_ip = CreatePayment(**{**request.__dict__, "metadata": {}})

    with pytest.raises(ProviderDeclined) as refused:
        await provider.create_payment(without_ip)
    assert refused.value.decline_code == "missing_payer_details"
    assert fake.calls("/odeme/api/get-token") == []


async def test_success_callback_verified_and_answered_with_plain_ok(provider, fake) -> None:
    created = await provider.create_payment(payment())
    body = fake.pay(created.reference, "success")

    event = await provider.parse_webhook(
        {"content-type": "application/x-www-form-urlencoded"}, body, "203.0.113.9"
    )
    reply = provider.webhook_reply(event)

    assert (event.kind, event.status, event.payment_reference) == ("payment", "succeeded", created.reference)
    assert (event.event_id, event.amount, event.currency) == ("pay01jpaytr:success", 49_990, "TRY")
    assert "hash" not in event.raw
    assert (reply.status_code, reply.content, reply.media_type) == (200, "OK", "text/plain")


async def test_declined_and_failed_3ds_callbacks(provider, fake) -> None:
    declined = await provider.create_payment(payment("pay_a"))
    three_ds = await provider.create_payment(payment("pay_b"))

    first = await provider.parse_webhook({}, fake.pay(declined.reference, "declined"))
    second = await provider.parse_webhook({}, fake.pay(three_ds.reference, "3ds_failed"))

    assert (first.status, first.failure_code) == ("failed", "2")
    assert first.failure_message == "Kart limiti yetersiz"
    assert (second.status, second.failure_code) == ("failed", "6")
    assert provider.webhook_reply(first).content == "OK"


async def test_tampered_callback_or_wrong_key_is_rejected(provider, fake) -> None:
    created = await provider.create_payment(payment())
    genuine = fake.pay(created.reference, "declined")
    tampered = dict(parse_qsl(genuine.decode()))
    tampered["status"] = "success"
    wrong_key = get_provider("paytr", make_settings(fake.url, paytr_merchant_key="other-key"))

    with pytest.raises(InvalidWebhookSignature):
        await provider.parse_webhook({}, urlencode(tampered).encode())
    with pytest.raises(InvalidWebhookSignature):
        await wrong_key.parse_webhook({}, genuine)
    with pytest.raises(InvalidWebhookSignature):
        await provider.parse_webhook({}, b"merchant_oid=pay01jpaytr&status=success&total_amount=49990")


async def test_browser_return_is_confirmed_by_the_status_query(provider, fake) -> None:
    created = await provider.create_payment(payment())

    before = await provider.complete_payment(created.reference, {"status": "success"})
    fake.pay(created.reference, "success")
    after = await provider.complete_payment(created.reference, {})

    assert before.status == "requires_action"  # the unsigned return changes nothing
    assert (after.status, after.amount, after.currency) == ("succeeded", 49_990, "TRY")


async def test_status_query_retries_then_gives_up_clearly(provider, fake) -> None:
    created = await provider.create_payment(payment())
    fake.pay(created.reference, "success")
    fake.fail_next("/odeme/durum-sorgu", 502)
    fake.hang_next("/odeme/durum-sorgu", HANG_SECONDS)
    assert (await provider.get_payment(created.reference)).status == "succeeded"
    assert len(fake.calls("/odeme/durum-sorgu")) == 3

    fake.fail_next("/odeme/durum-sorgu", 503, times=3)
    with pytest.raises(ProviderUnavailable, match="after 3 attempt"):
        await provider.get_payment(created.reference)


async def test_token_request_is_sent_once_when_the_answer_is_lost(provider, fake) -> None:
    fake.hang_next("/odeme/api/get-token", HANG_SECONDS)

    with pytest.raises(ProviderUnavailable, match="outcome is unknown"):
        await provider.create_payment(payment())
    assert len(fake.calls("/odeme/api/get-token")) == 1


async def test_partial_and_full_refund(provider, fake) -> None:
    created = await provider.create_payment(payment())
    fake.pay(created.reference, "success")

    first = await provider.refund(created.reference, 10_000, "TRY", idempotency_key="rf_01j_a")
    assert (first.status, first.amount, first.reference) == ("succeeded", 10_000, "rf01ja")
    assert (await provider.get_payment(created.reference)).status == "partially_refunded"
    await provider.refund(created.reference, 39_990, "TRY", idempotency_key="rf_01j_b")
    assert (await provider.get_payment(created.reference)).status == "refunded"
    assert [c["return_amount"] for c in fake.calls("/odeme/iade")] == ["100.00", "399.90"]

    with pytest.raises(ProviderDeclined) as refused:
        await provider.refund(created.reference, 1, "TRY", idempotency_key="rf_01j_c")
    assert refused.value.decline_code == "006"


async def test_refund_is_not_resent_after_a_5xx(provider, fake) -> None:
    created = await provider.create_payment(payment())
    fake.pay(created.reference, "success")
    fake.fail_next("/odeme/iade", 500)

    with pytest.raises(ProviderUnavailable):
        await provider.refund(created.reference, 100, "TRY", idempotency_key="rf_1")
    assert len(fake.calls("/odeme/iade")) == 1


def test_methods(fake) -> None:
    adapter = get_provider("paytr", make_settings(fake.url))

    assert adapter.methods("TRY", "TR") == ["card"]
    assert adapter.methods("SAR") == []


# ------------------------------------------------------------------------------------------- reconciliation
LIST = "/rapor/islem-dokumu"
DAY = date(2026, 11, 21)
START = datetime(2026, 11, 21, tzinfo=UTC)


class TransactionList:
    """PayTR's "İşlem Dökümü" on the local fake (dev.paytr.com/islem-dokumu): the paid orders as sale rows
    (``S``) and their returns (``I``), PayTR's 2.35 % deduction on sales. The ``paytr_token`` is recomputed
    from the posted window and a wrong one is refused the way PayTR refuses it (``status: error``)."""

    def __init__(self, fake: PaytrFake, rows: list[dict[str, Any]] | None = None) -> None:
        self.fake = fake
        self.rows = rows
        self.windows: list[tuple[str, str, str]] = []
        fake.server.expect_request(LIST, method="POST").respond_with_handler(self._answer)

    def _answer(self, request: Request) -> Response:
        f = request.form
        self.windows.append((f["start_date"], f["end_date"], f.get("dummy", "")))
        expected = self.fake.sign(f["merchant_id"], f["start_date"], f["end_date"], self.fake.merchant_salt)
        if f["merchant_id"] != self.fake.merchant_id or f.get("paytr_token") != expected:
            return _reply({"status": "error", "err_no": "004", "err_msg": "paytr_token hatali"})
        rows = self.rows if self.rows is not None else self._from_orders(f["start_date"])
        if not rows:
            return _reply({"status": "failed", "err_msg": "ilgili tarih araliginda islem bulunamadi"})
        return _reply({"status": "success", "data": rows})

    def _from_orders(self, start_date: str) -> list[dict[str, Any]]:
        day = datetime.strptime(start_date, "%Y-%m-%d %H:%M:%S").strftime("%d.%m.%Y")
        rows: list[dict[str, Any]] = []
        for order in self.fake.orders.values():
            if not order.paid:
                continue
            amount = Decimal(order.payment_amount) / 100
            fee = (amount * Decimal("0.0235")).quantize(Decimal("0.01"))
            rows.append(row("S", amount, fee, day, order.currency, order.merchant_oid))
            rows += [
                row("I", refund, Decimal(0), day, order.currency, order.merchant_oid)
                for refund in order.returns
            ]
        return rows


def row(
    kind: str, amount: Decimal, fee: Decimal, day: str, currency: str, merchant_oid: str
) -> dict[str, Any]:
    return {
        "islem_tipi": kind,
        "net_tutar": f"{amount - fee:.2f}",
        "kesinti_tutari": f"{fee:.2f}",
        "kesinti_orani": "2.35" if fee else "0",
        "islem_tutari": f"{amount:.2f}",
        "odeme_tutari": f"{amount:.2f}",
        "islem_tarihi": day,
        "para_birimi": currency,
        "taksit": "0",
        "kart_marka": "WORLD",
        "kart_no": "545616***5454",
        "siparis_no": merchant_oid,
        "odeme_tipi": "KART",
    }


def _reply(payload: dict[str, Any]) -> Response:
    return Response(json.dumps(payload), status=200, content_type="application/json")


async def test_settlements_list_sales_and_returns_of_the_utc_day(provider, fake) -> None:
    listing = TransactionList(fake)
    paid = await provider.create_payment(payment("pay_a-1", amount=49_990))
    declined = await provider.create_payment(payment("pay_b-1", amount=20_000))
    in_dollars = await provider.create_payment(
        CreatePayment(**{**payment("pay_c-1", amount=2_500).__dict__, "currency": "USD"})
    )
    fake.pay(paid.reference, "success")
    fake.pay(declined.reference, "declined")
    fake.pay(in_dollars.reference, "success")
    await provider.refund(paid.reference, 10_000, "TRY", idempotency_key="rf_01j_a")

    records = await provider.list_settlements(DAY)

    assert (paid.reference, in_dollars.reference) == ("paya1", "payc1")
    assert sorted(records, key=lambda r: (r.reference, r.kind)) == [
        SettlementRecord("paya1", "payment", 49_990, "TRY", 1_175, START),  # 2.35 % of 499.90 = 11.75
        SettlementRecord("paya1", "refund", 10_000, "TRY", 0, START),
        SettlementRecord("payc1", "payment", 2_500, "USD", 59, START),  # 0.5875 -> 0.59
    ]
    # The UTC day is 03:00 to 02:59:59 in Turkey, signed as merchant_id + start + end + salt.
    assert listing.windows == [("2026-11-21 03:00:00", "2026-11-22 02:59:59", "0")]


async def test_settlements_read_paytr_rows_as_documented(provider, fake) -> None:
    TransactionList(
        fake,
        [
            {**row("S", Decimal(0), Decimal(0), "22.11.2026", "TL", "payd1"), "islem_tutari": "1.234,56"},
            {**row("S", Decimal("12.00"), Decimal("0.28"), "21.11.2026", "EUR", "paye1")},
            {**row("I", Decimal("5.00"), Decimal(0), "22.11.2026", "TL", "paye1"), "islem_tutari": "-5.00"},
            {**row("X", Decimal("1.00"), Decimal(0), "22.11.2026", "TL", "payf1")},
        ],
    )

    records = await provider.list_settlements(DAY)

    late = datetime(2026, 11, 21, 21, tzinfo=UTC)  # 22.11.2026 00:00 in Turkey
    assert records == [
        SettlementRecord("payd1", "payment", 123_456, "TRY", 0, late),
        SettlementRecord("paye1", "payment", 1_200, "EUR", 28, START),
        SettlementRecord("paye1", "refund", 500, "TRY", 0, late),
    ]


async def test_settlements_of_a_day_without_transactions(provider, fake) -> None:
    listing = TransactionList(fake)
    created = await provider.create_payment(payment())
    fake.pay(created.reference, "3ds_failed")

    assert await provider.list_settlements(DAY) == []
    assert len(listing.windows) == 1


async def test_settlements_refused_with_a_wrong_key(fake) -> None:
    listing = TransactionList(fake, [])
    adapter = get_provider("paytr", make_settings(fake.url, paytr_merchant_key="not-the-key"))

    with pytest.raises(ProviderError, match="004 paytr_token hatali") as refused:
        await adapter.list_settlements(DAY)
    assert not isinstance(refused.value, ProviderUnavailable)
    assert len(listing.windows) == 1


async def test_settlements_answer_without_rows_fails_loudly(provider, fake) -> None:
    fake.server.expect_request(LIST, method="POST").respond_with_json({"status": "success", "rows": []})

    with pytest.raises(ProviderError, match="without a list"):
        await provider.list_settlements(DAY)


async def test_settlements_retry_5xx_then_give_up_clearly(provider, fake) -> None:
    listing = TransactionList(fake, [])
    fake.fail_next(LIST, 502)
    assert await provider.list_settlements(DAY) == []
    assert len(listing.windows) == 1

    fake.fail_next(LIST, 503, times=3)
    with pytest.raises(ProviderUnavailable, match="after 3 attempt"):
        await provider.list_settlements(DAY)
    assert len(fake.calls(LIST)) == 5
