"""iyzico adapter, through the official ``iyzipay`` SDK, against a local fake (tests/fakes/iyzico_fake.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

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
from emanet.providers.iyzico import IyzicoProvider
from emanet.providers.registry import get_provider
from tests.fakes.iyzico_fake import INITIALIZE, REFUND, RETRIEVE, IyzicoFake, RecordingServer
from tests.fakes.server import CLIENT_TIMEOUT_SECONDS, HANG_SECONDS

API_KEY = "sandbox-api-key-emanet"
SECRET_KEY = "sandbox-secret-key-emanet"


def make_settings(base_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "env": "test",
        "iyzico_api_key": API_KEY,
        "iyzico_secret_key": SECRET_KEY,
        "iyzico_api_base": base_url,
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
def fake(shared_server: RecordingServer) -> Iterator[IyzicoFake]:
    with IyzicoFake(API_KEY, SECRET_KEY, server=shared_server) as server:
        yield server


@pytest.fixture
def provider(fake: IyzicoFake) -> IyzicoProvider:
    adapter = get_provider("iyzico", make_settings(fake.url))
    assert isinstance(adapter, IyzicoProvider)
    return adapter


def payment(payment_id: str = "pay_01jiyzico", amount: int = 125_050) -> CreatePayment:
    return CreatePayment(
        payment_id=payment_id,
        amount=amount,
        currency="TRY",
        description="Escrow E-5001",
        return_url=f"https://emanet.test/api/v1/payments/{payment_id}/return",
        country="TR",
        customer=Customer(name="Mehmet Kaya", email="mehmet@example.com", phone="+905551112233"),
        metadata={"payer_ip": "198.51.100.4", "city": "Istanbul"},
    )


async def test_checkout_form_is_initialized_through_the_sdk_and_redirects(provider, fake) -> None:
    created = await provider.create_payment(payment())

    assert created.status == "requires_action"
    assert created.next_action is not None and created.next_action.type == "redirect"
    assert created.next_action.url == f"{fake.url}/checkout/{created.reference}?lang=tr"
    assert "checkoutFormContent" not in created.raw
    [sent] = fake.calls(INITIALIZE)  # the fake accepted the SDK's IYZWSv2 signature
    assert (sent["price"], sent["paidPrice"], sent["basketItems"][0]["price"]) == ("1250.50",) * 3
    assert sent["callbackUrl"] == "https://emanet.test/api/v1/payments/pay_01jiyzico/return"
    assert (sent["buyer"]["name"], sent["buyer"]["surname"], sent["buyer"]["ip"]) == (
        "Mehmet",
        "Kaya",
        "198.51.100.4",
    )
    assert sent["buyer"]["identityNumber"] == "11111111111"


async def test_wrong_secret_key_is_refused(fake) -> None:
    adapter = get_provider("iyzico", make_settings(fake.url, iyzico_secret_key="wrong"))

    with pytest.raises(ProviderDeclined) as refused:
        await adapter.create_payment(payment())
    assert refused.value.decline_code == "1000"


async def test_payer_ip_is_required(provider, fake) -> None:
    request = payment()

    with pytest.raises(ProviderDeclined):
        await provider.create_payment(CreatePayment(**{**request.__dict__, "metadata": {}}))
    assert fake.calls(INITIALIZE) == []


async def test_return_is_confirmed_by_retrieving_the_form(provider, fake) -> None:
    created = await provider.create_payment(payment())

    unfinished = await provider.complete_payment(created.reference, {"token": created.reference})
    fake.pay(created.reference, "success")
    done = await provider.complete_payment(created.reference, {"token": created.reference})

    assert unfinished.status == "requires_action"
    assert (done.status, done.amount, done.currency) == ("succeeded", 125_050, "TRY")
    assert done.fee == 3114 + 25  # iyziCommissionRateAmount 31.14 + iyziCommissionFee 0.25
    assert done.card is not None and (done.card.brand, done.card.last4) == ("master_card", "0008")


async def test_decline_and_failed_3ds(provider, fake) -> None:
    declined = await provider.create_payment(payment("pay_d"))
    fake.pay(declined.reference, "insufficient_funds")
    three_ds = await provider.create_payment(payment("pay_3"))
    fake.pay(three_ds.reference, "3ds_failed")

    first = await provider.get_payment(declined.reference)
    second = await provider.get_payment(three_ds.reference)

    assert (first.status, first.failure_code) == ("failed", "10051")
    assert (second.status, second.failure_code) == ("failed", "10217")
    assert first.fee is None


async def test_retrieve_retries_5xx_and_timeout_then_gives_up_clearly(provider, fake) -> None:
    created = await provider.create_payment(payment())
    fake.pay(created.reference)
    fake.fail_next(RETRIEVE, 502)
    fake.hang_next(RETRIEVE, HANG_SECONDS)
    assert (await provider.get_payment(created.reference)).status == "succeeded"
    assert len(fake.calls(RETRIEVE)) == 3

    fake.fail_next(RETRIEVE, 503, times=3)
    with pytest.raises(ProviderUnavailable, match="after 3 attempt"):
        await provider.get_payment(created.reference)


async def test_initialize_and_refund_are_sent_once(provider, fake) -> None:
    fake.fail_next(INITIALIZE, 500)
    with pytest.raises(ProviderUnavailable, match="outcome is unknown"):
        await provider.create_payment(payment())
    created = await provider.create_payment(payment("pay_2"))
    fake.pay(created.reference)
    fake.hang_next(REFUND, HANG_SECONDS)
    with pytest.raises(ProviderUnavailable):
        await provider.refund(created.reference, 100, "TRY", idempotency_key="rf_1")

    assert (len(fake.calls(INITIALIZE)), len(fake.calls(REFUND))) == (2, 1)


async def test_partial_refund_then_over_refund(provider, fake) -> None:
    created = await provider.create_payment(payment())
    fake.pay(created.reference)

    refund = await provider.refund(created.reference, 50_025, "TRY", idempotency_key="rf_1")

    assert (refund.status, refund.amount) == ("succeeded", 50_025)
    [sent] = fake.calls(REFUND)
    assert (sent["price"], sent["conversationId"]) == ("500.25", "rf_1")
    with pytest.raises(ProviderDeclined) as refused:
        await provider.refund(created.reference, 100_000, "TRY", idempotency_key="rf_2")
    assert refused.value.decline_code == "5111"


async def test_refund_of_an_unpaid_form_is_refused_locally(provider, fake) -> None:
    created = await provider.create_payment(payment())

    with pytest.raises(ProviderDeclined):
        await provider.refund(created.reference, 100, "TRY", idempotency_key="rf_1")
    assert fake.calls(REFUND) == []


async def test_webhook_signature_v3(provider, fake) -> None:
    created = await provider.create_payment(payment())
    fake.pay(created.reference)
    headers, body = fake.webhook(created.reference, status="SUCCESS")

    event = await provider.parse_webhook(headers, body, "203.0.113.9")

    assert (event.kind, event.status, event.payment_reference) == ("payment", "succeeded", created.reference)
    assert event.event_id == f"ref-{created.reference}-SUCCESS"
    assert event.type == "CHECKOUT_FORM_AUTH"


async def test_webhook_tampered_body_wrong_secret_or_missing_header(provider, fake) -> None:
    created = await provider.create_payment(payment())
    fake.pay(created.reference, "insufficient_funds")
    headers, body = fake.webhook(created.reference, status="FAILURE")
    forged = json.loads(body)
    forged["status"] = "SUCCESS"
    wrong_headers, wrong_body = fake.webhook(created.reference, status="SUCCESS", secret="not-the-secret")

    with pytest.raises(InvalidWebhookSignature):
        await provider.parse_webhook(headers, json.dumps(forged).encode())
    with pytest.raises(InvalidWebhookSignature):
        await provider.parse_webhook(wrong_headers, wrong_body)
    with pytest.raises(InvalidWebhookSignature):
        await provider.parse_webhook({}, body)
    assert (await provider.parse_webhook(headers, body)).status == "failed"


async def test_an_https_base_is_reached_over_tls(fake) -> None:
    # The fake speaks plain HTTP: a TLS handshake against it fails, proving the scheme is honoured.
    adapter = get_provider("iyzico", make_settings(fake.url.replace("http://", "https://")))

    with pytest.raises(ProviderUnavailable):
        await adapter.get_payment("token")
    assert fake.calls(RETRIEVE) == []


def test_methods(fake) -> None:
    adapter = get_provider("iyzico", make_settings(fake.url))

    assert adapter.methods("TRY") == ["card"]
    assert adapter.methods("SAR") == []


# ------------------------------------------------------------------------------------------- reconciliation
REPORT = "/v2/reporting/payment/transactions"


class DailyReport:
    """iyzico's daily transactions report on the local fake: pages of lines per Turkish calendar date.

    Every request must carry the IYZWSv2 signature the fake checks for its other endpoints; the reply shapes
    follow docs.iyzico.com "Raporlama Servisi" (``currentPage``/``totalPageCount`` absent on an empty day).
    """

    def __init__(self, fake: IyzicoFake, pages: dict[str, list[list[dict[str, Any]]]]) -> None:
        self.fake = fake
        self.pages = pages
        self.requests: list[tuple[str, str]] = []
        fake.server.expect_request(REPORT, method="GET").respond_with_handler(self._answer)

    def _answer(self, request: Request) -> Response:
        self.requests.append((request.args.get("transactionDate", ""), request.args.get("page", "")))
        if not self.fake._authenticated(request):
            return _reply({"status": "failure", "errorCode": "1000", "errorMessage": "Geçersiz imza"})
        day_pages = self.pages.get(request.args["transactionDate"], [])
        base = {"status": "success", "locale": "tr", "systemTime": 1795338000000}
        if not day_pages:
            return _reply({**base, "transactions": []})
        page = int(request.args["page"])
        return _reply(
            {
                **base,
                "transactions": day_pages[page - 1],
                "currentPage": page,
                "totalPageCount": len(day_pages),
            }
        )


def _reply(payload: dict[str, Any]) -> Response:
    return Response(json.dumps(payload), status=200, content_type="application/json")


def line(kind: str, at: str, **fields: Any) -> dict[str, Any]:
    """One report line shaped like iyzico's (TransactionReportItem in the official SDKs)."""
    values: dict[str, Any] = {
        "transactionType": kind,
        "transactionDate": at,
        "transactionId": 70_001,
        "paymentTxId": 31_000_001,
        "paymentId": 22_400_001,
        "conversationId": "pay_x-1",
        "paymentPhase": "AUTH",
        "price": 1.0,
        "paidPrice": 1.0,
        "transactionCurrency": "TRY",
        "installment": 1,
        "threeDS": 1,
        "settlementCurrency": "TRY",
        "connectorType": "HALKBANK",
        "posOrderId": "1795338000000",
        "authCode": "123456",
        "hostReference": "mock00001iyzihostrfn",
        "basketId": fields.get("conversationId", "pay_x-1"),
    }
    if kind == "PAYMENT":
        values.update(
            transactionStatus=1,
            iyzicoCommission=0.0,
            iyzicoFee=0.0,
            parity=1,
            iyzicoConversionAmount=0,
            merchantPayoutAmount=1.0,
            subMerchantPayoutAmount=0,
        )
    if kind == "REFUND":
        values["afterSettlement"] = 0
    values.update(fields)
    return values


async def test_settlements_follow_pages_and_keep_the_utc_day(provider, fake) -> None:
    created = await provider.create_payment(payment("pay_01jrecon-1", amount=125_050))
    [sent] = fake.calls(INITIALIZE)
    ours = sent["conversationId"]  # iyzico echoes our conversationId (the payment attempt key) in the report
    report = DailyReport(
        fake,
        {
            "2026-11-21": [
                [
                    # 02:30 in Turkey is 23:30 UTC the day before: not this day
                    line(
                        "PAYMENT",
                        "2026-11-21 02:30:00",
                        paymentId=11,
                        conversationId="pay_early-1",
                        price=100,
                    ),
                    line(
                        "PAYMENT",
                        "2026-11-21 10:15:00",
                        paymentId=22_400_001,
                        conversationId=ours,
                        price=1250.5,
                        paidPrice=1250.5,
                        iyzicoCommission=31.14,
                        iyzicoFee=0.25,
                    ),
                    line("PAYMENT", "2026-11-21 11:00:00", paymentId=13, transactionStatus=-1, price=80),
                    line(
                        "PAYMENT",
                        "2026-11-21 12:00:00",
                        paymentId=22_400_007,
                        conversationId="pay_usd-1",
                        transactionCurrency="USD",
                        price="20.00",
                        iyzicoCommission="0.58",
                        iyzicoFee="0.25",
                    ),
                ],
                [
                    line(
                        "REFUND",
                        "2026-11-21 18:00:00",
                        transactionId=9001,
                        paymentId=22_400_001,
                        conversationId="rf_1",
                        price=500.25,
                    ),
                    line("PAYMENT", "2026-11-21 19:00:00", paymentId=14, transactionStatus=0, price=60),
                    line(
                        "PAYMENT",
                        "2026-11-21 20:00:00",
                        paymentId=22_400_002,
                        paymentTxId=1,
                        conversationId="pay_b-1",
                        transactionStatus=2,
                        price=10,
                        iyzicoCommission=0.25,
                        iyzicoFee=0.25,
                    ),
                    line(
                        "PAYMENT",
                        "2026-11-21 20:00:00",
                        paymentId=22_400_002,
                        paymentTxId=2,
                        conversationId="pay_b-1",
                        transactionStatus=2,
                        price=5.5,
                        iyzicoCommission=0.14,
                        iyzicoFee=0,
                    ),
                ],
            ],
            "2026-11-22": [
                [
                    line(
                        "CANCEL",
                        "2026-11-22 01:00:00",
                        transactionId=9002,
                        paymentId=22_400_005,
                        conversationId="cancel-7",
                        price=99.9,
                    ),
                    # 04:00 in Turkey is 01:00 UTC the day after: not this day
                    line("PAYMENT", "2026-11-22 04:00:00", paymentId=16, conversationId="pay_l-1", price=1),
                ]
            ],
        },
    )

    records = await provider.list_settlements(date(2026, 11, 21))

    def at(hour: int, minute: int = 0) -> datetime:
        return datetime(2026, 11, 21, hour, minute, tzinfo=UTC)

    assert created.status == "requires_action"
    assert sorted(records, key=lambda r: r.reference) == [
        SettlementRecord("22400001", "payment", 125_050, "TRY", 3114 + 25, at(7, 15), ours),
        SettlementRecord("22400002", "payment", 1_550, "TRY", 25 + 25 + 14, at(17), "pay_b-1"),
        SettlementRecord("22400007", "payment", 2_000, "USD", 58 + 25, at(9), "pay_usd-1"),
        SettlementRecord("9001", "refund", 50_025, "TRY", 0, at(15), "rf_1"),
        SettlementRecord("9002", "refund", 9_990, "TRY", 0, at(22), "cancel-7"),
    ]
    # A UTC day is 03:00 to 03:00 in Turkey: both Turkish dates are read, every page of each.
    assert report.requests == [("2026-11-21", "1"), ("2026-11-21", "2"), ("2026-11-22", "1")]


async def test_settlements_of_an_empty_day(provider, fake) -> None:
    report = DailyReport(fake, {})

    assert await provider.list_settlements(date(2026, 11, 21)) == []
    assert report.requests == [("2026-11-21", "1"), ("2026-11-22", "1")]


async def test_settlements_refused_with_a_wrong_secret(fake) -> None:
    report = DailyReport(fake, {"2026-11-21": [[line("PAYMENT", "2026-11-21 10:00:00")]]})
    adapter = get_provider("iyzico", make_settings(fake.url, iyzico_secret_key="not-the-secret"))

    with pytest.raises(ProviderError, match="1000 Geçersiz imza") as refused:
        await adapter.list_settlements(date(2026, 11, 21))
    assert not isinstance(refused.value, ProviderUnavailable)
    assert report.requests == [("2026-11-21", "1")]


async def test_settlements_retry_5xx_then_give_up_clearly(provider, fake) -> None:
    report = DailyReport(fake, {})
    fake.server.expect_oneshot_request(REPORT, method="GET").respond_with_data("bad gateway", 502)
    assert await provider.list_settlements(date(2026, 11, 21)) == []
    assert len(report.requests) == 2  # the 502 went to the one-shot handler, then both dates answered

    for _ in range(3):
        fake.server.expect_oneshot_request(REPORT, method="GET").respond_with_data("unavailable", 503)
    with pytest.raises(ProviderUnavailable, match="after 3 attempt"):
        await provider.list_settlements(date(2026, 11, 21))
    assert len(report.requests) == 2
