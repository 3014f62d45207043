"""The PayPal adapter against a local fake of PayPal's REST API (tests/fakes/paypal_fake.py); webhooks signed
with an RSA key and certificate made with ``cryptography`` and served from the fake."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from emanet.core.clock import FrozenClock
from emanet.core.db import new_id
from emanet.core.settings import Settings
from emanet.providers.base import (
    CreatePayment,
    InvalidWebhookSignature,
    ProviderDeclined,
    ProviderUnavailable,
)
from emanet.providers.paypal import PaypalProvider, from_decimal, to_decimal
from emanet.providers.registry import get_provider
from tests.fakes.paypal_fake import PaypalFake

CLIENT_ID, SECRET, WEBHOOK_ID = "paypal-client", "paypal-secret", "WH0FAKE0123456789"


@pytest.fixture
def fake() -> Iterator[PaypalFake]:
    server = PaypalFake(CLIENT_ID, SECRET)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def settings_overrides(fake: PaypalFake) -> dict[str, Any]:
    return {
        "paypal_client_id": CLIENT_ID,
        "paypal_client_secret": SECRET,
        "paypal_webhook_id": WEBHOOK_ID,
        "paypal_api_base": fake.url,
        "paypal_cert_url_prefixes": [f"{fake.url}/certs/"],
        "provider_timeout_seconds": 0.4,
        "provider_retry_initial_seconds": 0.01,
        "provider_retry_max_seconds": 0.05,
    }


@pytest.fixture
def provider(settings: Settings) -> PaypalProvider:
    adapter = get_provider("paypal", settings)
    assert isinstance(adapter, PaypalProvider)
    return adapter


def request(**fields: Any) -> CreatePayment:
    values: dict[str, Any] = {
        "payment_id": new_id("pay"),
        "amount": 12_345,
        "currency": "USD",
        "description": "Vintage camera",
        "return_url": "https://shop.example/return",
    }
    values.update(fields)
    return CreatePayment(**values)


def test_decimal_conversion() -> None:
    assert to_decimal(12_345, "USD") == "123.45"
    assert to_decimal(5, "USD") == "0.05"
    assert to_decimal(1_200, "JPY") == "1200"
    assert from_decimal("123.45", "USD") == 12_345
    assert from_decimal("1200", "JPY") == 1_200
    with pytest.raises(ProviderDeclined):
        from_decimal("1.005", "USD")


# ------------------------------------------------------------------------------------------- payments
async def test_approve_then_capture_on_return(provider: PaypalProvider, fake: PaypalFake) -> None:
    req = request()
    payment = await provider.create_payment(req)
    assert (payment.status, payment.amount, payment.currency) == ("requires_action", 12_345, "USD")
    assert payment.next_action is not None and payment.next_action.type == "redirect"
    assert payment.next_action.url == f"https://www.sandbox.paypal.com/checkoutnow?token={payment.reference}"
    [post] = fake.calls("POST", "/v2/checkout/orders")
    assert post.headers["Paypal-Request-Id"] == req.payment_id
    unit = post.json()["purchase_units"][0]
    assert (
        unit["amount"] == {"currency_code": "USD", "value": "123.45"} and unit["custom_id"] == req.payment_id
    )
    context = post.json()["payment_source"]["paypal"]["experience_context"]
    assert context["return_url"] == req.return_url

    assert (await provider.get_payment(payment.reference)).status == "requires_action"  # not approved yet
    fake.approve(payment.reference)
    done = await provider.complete_payment(payment.reference, {"token": payment.reference, "PayerID": "P1"})
    assert (done.status, done.amount, done.fee) == ("succeeded", 12_345, 480)  # 3.49 % + 0.49
    again = await provider.get_payment(payment.reference)
    assert again.status == "succeeded"
    assert len(fake.captures) == 1
    [capture] = fake.calls("POST", f"/v2/checkout/orders/{payment.reference}/capture")
    assert capture.headers["Paypal-Request-Id"] == f"{payment.reference}-capture"
    assert fake.tokens_issued == 1  # the access token is reused
    assert provider.methods("USD") == ["paypal", "card"] and provider.methods("TRY") == []


async def test_declined_funding_source_is_a_failed_payment(
    provider: PaypalProvider, fake: PaypalFake
) -> None:
    payment = await provider.create_payment(request())
    fake.approve(payment.reference, declined=True)
    failed = await provider.get_payment(payment.reference)
    assert (failed.status, failed.failure_code) == ("failed", "INSTRUMENT_DECLINED")


async def test_capture_lost_on_the_way_is_replayed_once(provider: PaypalProvider, fake: PaypalFake) -> None:
    payment = await provider.create_payment(request())
    fake.approve(payment.reference)
    fake.fail_next("lost", "503", path="/v2/checkout/orders/.*/capture")
    done = await provider.get_payment(payment.reference)
    assert done.status == "succeeded"
    captures = fake.calls("POST", f"/v2/checkout/orders/{payment.reference}/capture")
    assert len(captures) == 3 and {c.headers["Paypal-Request-Id"] for c in captures} == {
        f"{payment.reference}-capture"
    }
    assert len(fake.captures) == 1


async def test_outage_on_create_is_a_clear_error(provider: PaypalProvider, fake: PaypalFake) -> None:
    fake.fail_next("500", "timeout", "502", path="/v2/checkout/orders")
    req = request()
    with pytest.raises(ProviderUnavailable):
        await provider.create_payment(req)
    posts = fake.calls("POST", "/v2/checkout/orders")
    assert len(posts) == 3 and {p.headers["Paypal-Request-Id"] for p in posts} == {req.payment_id}
    assert fake.orders == {}
    fake.fail_next("503", path="/v2/checkout/orders")
    assert (await provider.create_payment(req)).status == "requires_action"
    assert len(fake.orders) == 1


# ------------------------------------------------------------------------------------------- refunds
async def test_refunds(provider: PaypalProvider, fake: PaypalFake) -> None:
    payment = await provider.create_payment(request(amount=10_000))
    with pytest.raises(ProviderDeclined) as not_captured:
        await provider.refund(payment.reference, 100, "USD", idempotency_key="rf_p1")
    assert not_captured.value.decline_code == "charge_not_refundable"
    fake.approve(payment.reference)
    await provider.get_payment(payment.reference)
    partial = await provider.refund(payment.reference, 2_500, "USD", idempotency_key="rf_p1")
    assert (partial.status, partial.amount) == ("succeeded", 2_500)
    assert (await provider.refund(payment.reference, 2_500, "USD", idempotency_key="rf_p1")).reference == (
        partial.reference
    )
    assert len(fake.refunds) == 1
    assert (await provider.get_payment(payment.reference)).status == "partially_refunded"
    with pytest.raises(ProviderDeclined) as exceeded:
        await provider.refund(payment.reference, 7_501, "USD", idempotency_key="rf_p2")
    assert exceeded.value.decline_code == "REFUND_AMOUNT_EXCEEDED"
    await provider.refund(payment.reference, 7_500, "USD", idempotency_key="rf_p3")
    assert (await provider.get_payment(payment.reference)).status == "refunded"


# ------------------------------------------------------------------------------------------- payouts
async def test_payouts(provider: PaypalProvider, fake: PaypalFake) -> None:
    payout_id = new_id("po")
    fake.fail_next("lost", path="/v1/payments/payouts")
    payout = await provider.create_payout(
        payout_id, 5_000, "USD", {"type": "paypal", "email": "seller@example.com"}
    )
    assert payout.status == "pending"
    posts = fake.calls("POST", "/v1/payments/payouts")
    assert len(posts) == 2 and {p.headers["Paypal-Request-Id"] for p in posts} == {payout_id}
    assert len(fake.batches) == 1
    body = posts[0].json()
    assert body["sender_batch_header"]["sender_batch_id"] == payout_id
    assert body["items"][0]["amount"] == {"value": "50.00", "currency": "USD"}
    fake.settle_batch(payout.reference, "SUCCESS")
    assert (await provider.get_payout(payout.reference)).status == "paid"

    other = await provider.create_payout(new_id("po"), 1_000, "USD", {"email": "nobody@example.com"})
    fake.settle_batch(other.reference, "RETURNED", "The receiver is not registered")
    returned = await provider.get_payout(other.reference)
    assert (returned.status, returned.failure_message) == ("failed", "The receiver is not registered")
    with pytest.raises(ProviderDeclined):
        await provider.create_payout(new_id("po"), 1_000, "USD", {"iban": "DE89"})


async def test_settlements_page_through_transaction_search(
    provider: PaypalProvider,
    fake: PaypalFake,
    clock: FrozenClock,
) -> None:
    references = []
    for amount in (10_000, 20_000):
        req = request(amount=amount)
        payment = await provider.create_payment(req)
        fake.approve(payment.reference)
        await provider.get_payment(payment.reference)
        references.append(req.payment_id)
    refund = await provider.refund(payment.reference, 5_000, "USD", idempotency_key="rf_s")
    records = await provider.list_settlements(clock.now().date())
    assert len(fake.calls("GET", "/v1/reporting/transactions")) == 2
    assert sorted((r.kind, r.amount, r.fee, r.merchant_reference) for r in records) == [
        ("payment", 10_000, 398, references[0]),
        ("payment", 20_000, 747, references[1]),
        ("refund", 5_000, 0, None),
    ]
    assert any(r.reference == refund.reference for r in records)


# ------------------------------------------------------------------------------------------- webhooks
def capture_event(event_id: str = "WH-1", event_type: str = "PAYMENT.CAPTURE.COMPLETED") -> bytes:
    return json.dumps(
        {
            "id": event_id,
            "event_type": event_type,
            "resource_type": "capture",
            "resource": {
                "id": "CAP1",
                "status": "COMPLETED",
                "amount": {"currency_code": "USD", "value": "123.45"},
                "supplementary_data": {"related_ids": {"order_id": "ORDER1"}},
            },
        }
    ).encode()


async def test_webhooks_verified_with_the_certificate(provider: PaypalProvider, fake: PaypalFake) -> None:
    body = capture_event()
    parsed = await provider.parse_webhook(fake.sign(body, WEBHOOK_ID), body, "173.0.82.126")
    assert (parsed.event_id, parsed.kind, parsed.status, parsed.payment_reference, parsed.amount) == (
        "WH-1",
        "payment",
        "succeeded",
        "ORDER1",
        12_345,
    )

    approved = json.dumps(
        {
            "id": "WH-2",
            "event_type": "CHECKOUT.ORDER.APPROVED",
            "resource": {"id": "ORDER2", "status": "APPROVED"},
        }
    ).encode()
    parsed = await provider.parse_webhook(fake.sign(approved, WEBHOOK_ID), approved)
    assert (parsed.status, parsed.payment_reference) == ("processing", "ORDER2")

    payout = json.dumps(
        {
            "id": "WH-3",
            "event_type": "PAYMENT.PAYOUTS-ITEM.UNCLAIMED",
            "resource": {
                "payout_batch_id": "BATCH1",
                "transaction_status": "UNCLAIMED",
                "payout_item": {"amount": {"currency": "USD", "value": "50.00"}},
            },
        }
    ).encode()
    parsed = await provider.parse_webhook(fake.sign(payout, WEBHOOK_ID), payout)
    assert (parsed.kind, parsed.status, parsed.payout_reference, parsed.amount) == (
        "payout",
        "processing",
        "BATCH1",
        5_000,
    )
    failed = payout.replace(b"UNCLAIMED", b"FAILED")
    assert (await provider.parse_webhook(fake.sign(failed, WEBHOOK_ID), failed)).status == "failed"

    refund = json.dumps(
        {
            "id": "WH-4",
            "event_type": "PAYMENT.CAPTURE.REFUNDED",
            "resource": {
                "id": "REF1",
                "status": "COMPLETED",
                "amount": {"currency_code": "USD", "value": "1.00"},
            },
        }
    ).encode()
    parsed = await provider.parse_webhook(fake.sign(refund, WEBHOOK_ID), refund)
    assert (parsed.kind, parsed.status, parsed.refund_reference, parsed.amount) == (
        "refund",
        "succeeded",
        "REF1",
        100,
    )

    other = json.dumps({"id": "WH-5", "event_type": "CUSTOMER.DISPUTE.CREATED", "resource": {}}).encode()
    assert (await provider.parse_webhook(fake.sign(other, WEBHOOK_ID), other)).kind == "other"


async def test_webhook_rejections(
    provider: PaypalProvider,
    fake: PaypalFake,
    clock: FrozenClock,
    settings: Settings,
) -> None:
    body = capture_event()
    headers = fake.sign(body, WEBHOOK_ID)
    with pytest.raises(InvalidWebhookSignature):  # tampered body (the CRC changes)
        await provider.parse_webhook(headers, body.replace(b"123.45", b"923.45"))
    with pytest.raises(InvalidWebhookSignature):  # signed for another webhook id
        await provider.parse_webhook(fake.sign(body, "WH0OTHER"), body)
    impostor = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(InvalidWebhookSignature):  # signed with a key that is not the certificate's
        await provider.parse_webhook(fake.sign(body, WEBHOOK_ID, key=impostor), body)
    with pytest.raises(InvalidWebhookSignature):  # certificate from somewhere else
        await provider.parse_webhook(
            fake.sign(body, WEBHOOK_ID, cert_url="https://evil.example/certs/x"), body
        )
    with pytest.raises(InvalidWebhookSignature):  # look-alike host
        await provider.parse_webhook(
            fake.sign(body, WEBHOOK_ID, cert_url=f"{fake.url}/certsX/CERT-fake"), body
        )
    with pytest.raises(InvalidWebhookSignature):  # other algorithm
        await provider.parse_webhook({**headers, "PAYPAL-AUTH-ALGO": "SHA1withRSA"}, body)
    with pytest.raises(InvalidWebhookSignature):  # missing headers
        await provider.parse_webhook({"PAYPAL-TRANSMISSION-ID": "x"}, body)
    stale = fake.sign(body, WEBHOOK_ID, transmission_time=clock.now() - timedelta(minutes=6))
    with pytest.raises(InvalidWebhookSignature):  # outside the 5-minute window
        await provider.parse_webhook(stale, body)
    clock.advance(days=400)  # the certificate has expired
    with pytest.raises(InvalidWebhookSignature):
        await provider.parse_webhook(fake.sign(body, WEBHOOK_ID), body)
    default_prefixes = PaypalProvider(
        settings.model_copy(update={"paypal_cert_url_prefixes": Settings().paypal_cert_url_prefixes})
    )
    with pytest.raises(InvalidWebhookSignature):  # by default only PayPal's own hosts over HTTPS
        await default_prefixes.parse_webhook(fake.sign(body, WEBHOOK_ID), body)
