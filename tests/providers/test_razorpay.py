"""The Razorpay adapter against a local fake of Razorpay's API (tests/fakes/razorpay_fake.py); signatures
cross-checked with the official SDK's ``razorpay.Utility``."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from typing import Any

import pytest
import razorpay

from emanet.core.clock import FrozenClock
from emanet.core.db import new_id
from emanet.core.settings import Settings
from emanet.providers.base import (
    CreatePayment,
    Customer,
    InvalidWebhookSignature,
    ProviderDeclined,
    ProviderNotConfigured,
    ProviderUnavailable,
    UnsupportedOperation,
)
from emanet.providers.razorpay import RazorpayProvider
from emanet.providers.registry import get_provider
from tests.fakes.razorpay_fake import RazorpayFake
from tests.fakes.server import CLIENT_TIMEOUT_SECONDS

KEY_ID, KEY_SECRET, WEBHOOK_SECRET = "rzp_test_emanet", "razorpay-key-secret", "razorpay-webhook-secret"
ACCOUNT = "7878780080316316"


@pytest.fixture
def fake() -> Iterator[RazorpayFake]:
    server = RazorpayFake(KEY_ID, KEY_SECRET)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def settings_overrides(fake: RazorpayFake) -> dict[str, Any]:
    return {
        "razorpay_key_id": KEY_ID,
        "razorpay_key_secret": KEY_SECRET,
        "razorpay_webhook_secret": WEBHOOK_SECRET,
        "razorpay_api_base": fake.url,
        "razorpay_account_number": ACCOUNT,
        "provider_timeout_seconds": CLIENT_TIMEOUT_SECONDS,
        "provider_retry_initial_seconds": 0.01,
        "provider_retry_max_seconds": 0.05,
    }


@pytest.fixture
def provider(settings: Settings) -> RazorpayProvider:
    adapter = get_provider("razorpay", settings)
    assert isinstance(adapter, RazorpayProvider)
    return adapter


def request(**fields: Any) -> CreatePayment:
    values: dict[str, Any] = {
        "payment_id": new_id("pay"),
        "amount": 250_000,
        "currency": "INR",
        "description": "Sitar",
        "return_url": "https://shop.example/return",
        "customer": Customer(name="Priya", email="priya@example.com", phone="+919812345678"),
    }
    values.update(fields)
    return CreatePayment(**values)


# ------------------------------------------------------------------------------------------- payments
async def test_order_then_checkout_then_verified_return(
    provider: RazorpayProvider, fake: RazorpayFake
) -> None:
    req = request()
    payment = await provider.create_payment(req)
    assert payment.status == "requires_action" and payment.reference.startswith("order_")
    assert payment.next_action is not None and payment.next_action.type == "client_secret"
    checkout = payment.next_action.data
    assert checkout["key"] == KEY_ID and checkout["order_id"] == payment.reference
    assert checkout["amount"] == 250_000 and checkout["callback_url"] == req.return_url
    assert checkout["prefill"] == {"name": "Priya", "email": "priya@example.com", "contact": "+919812345678"}
    [post] = fake.calls("POST", "/v1/orders")
    assert post.json()["receipt"] == req.payment_id and post.json()["unique_receipt"] is True

    returned = fake.pay(payment.reference)
    # The official SDK agrees the Checkout signature is good.
    assert razorpay.Client(auth=(KEY_ID, KEY_SECRET)).utility.verify_payment_signature(returned)
    done = await provider.complete_payment(payment.reference, returned)
    assert (done.status, done.amount, done.currency, done.fee) == ("succeeded", 250_000, "INR", 5_000)
    assert done.card is not None and (done.card.brand, done.card.last4) == ("visa", "1111")

    with pytest.raises(InvalidWebhookSignature):
        await provider.complete_payment(payment.reference, {**returned, "razorpay_signature": "0" * 64})
    with pytest.raises(InvalidWebhookSignature):
        await provider.complete_payment(payment.reference, {**returned, "razorpay_payment_id": "pay_other"})
    assert provider.methods("INR") == ["card", "upi", "netbanking"]
    assert provider.methods("USD") == ["card"] and provider.methods("TRY") == []


@pytest.mark.parametrize(
    ("outcome", "code"),
    [
        ("declined", "payment_declined"),
        ("insufficient_funds", "insufficient_funds"),
        ("3ds_failed", "authentication_failed"),
    ],
)
async def test_failed_attempts(
    provider: RazorpayProvider, fake: RazorpayFake, outcome: str, code: str
) -> None:
    payment = await provider.create_payment(request())
    fake.pay(payment.reference, outcome)
    polled = await provider.get_payment(payment.reference)
    assert (polled.status, polled.failure_code) == ("failed", code)
    assert polled.failure_message


async def test_saved_cards_are_refused_honestly(provider: RazorpayProvider) -> None:
    with pytest.raises(UnsupportedOperation):
        await provider.create_payment(request(save_card=True))
    with pytest.raises(UnsupportedOperation):
        await provider.create_payment(request(saved_card_token="token_x"))
    with pytest.raises(ProviderDeclined) as too_small:
        await provider.create_payment(request(amount=50))
    assert too_small.value.decline_code == "input_validation_failed"


# ------------------------------------------------------------------------------------------- faults
async def test_retried_order_create_is_one_order(provider: RazorpayProvider, fake: RazorpayFake) -> None:
    fake.fail_next("502", "lost", path="/v1/orders")
    req = request()
    payment = await provider.create_payment(req)
    posts = fake.calls("POST", "/v1/orders")
    assert len(posts) == 3 and {p.json()["receipt"] for p in posts} == {req.payment_id}
    assert list(fake.orders) == [payment.reference]


async def test_persistent_outage_is_a_clear_error(provider: RazorpayProvider, fake: RazorpayFake) -> None:
    fake.fail_next("503", "timeout", "500", path="/v1/orders")
    with pytest.raises(ProviderUnavailable) as unavailable:
        await provider.create_payment(request())
    assert "razorpay" in unavailable.value.detail
    assert len(fake.calls("POST", "/v1/orders")) == 3 and fake.orders == {}


# ------------------------------------------------------------------------------------------- refunds
async def test_refunds_are_idempotent(provider: RazorpayProvider, fake: RazorpayFake) -> None:
    payment = await provider.create_payment(request(amount=10_000))
    with pytest.raises(ProviderDeclined) as unpaid:
        await provider.refund(payment.reference, 100, "INR", idempotency_key="refund-key-1")
    assert unpaid.value.decline_code == "charge_not_refundable"
    fake.pay(payment.reference)
    fake.fail_next("lost", path="/v1/payments/.*/refund")
    partial = await provider.refund(payment.reference, 4_000, "INR", idempotency_key="refund-key-1")
    assert (partial.status, partial.amount) == ("succeeded", 4_000)
    assert len(fake.refunds) == 1
    posts = fake.calls("POST", "/v1/payments/.*/refund")
    assert len(posts) == 2 and {p.headers["X-Refund-Idempotency"] for p in posts} == {"refund-key-1"}
    assert (await provider.get_payment(payment.reference)).status == "partially_refunded"
    with pytest.raises(ProviderDeclined):
        await provider.refund(payment.reference, 6_001, "INR", idempotency_key="refund-key-2")
    await provider.refund(payment.reference, 6_000, "INR", idempotency_key="short")
    assert fake.calls("POST", "/v1/payments/.*/refund")[-1].headers["X-Refund-Idempotency"] == "00000short"
    assert (await provider.get_payment(payment.reference)).status == "refunded"


# ------------------------------------------------------------------------------------------- payouts
async def test_razorpayx_payouts(provider: RazorpayProvider, fake: RazorpayFake, settings: Settings) -> None:
    payout_id = new_id("po")
    bank = {
        "type": "bank_account",
        "name": "Priya",
        "account_number": "1121431121541121",
        "bank_code": "HDFC0000053",
    }
    fake.fail_next("500", path="/v1/payouts")
    payout = await provider.create_payout(payout_id, 100_000, "INR", bank)  # type: ignore[arg-type]
    assert payout.status == "processing"
    posts = fake.calls("POST", "/v1/payouts")
    assert [p.headers["X-Payout-Idempotency"] for p in posts] == [payout_id, payout_id]
    assert len(fake.payouts) == 1
    sent = posts[-1].json()
    assert sent["account_number"] == ACCOUNT and sent["mode"] == "IMPS"
    assert sent["fund_account"]["bank_account"] == {
        "name": "Priya",
        "ifsc": "HDFC0000053",
        "account_number": "1121431121541121",
    }
    fake.settle_payout(payout.reference, "reversed", "Beneficiary bank offline")
    failed = await provider.get_payout(payout.reference)
    assert (failed.status, failed.failure_message) == ("failed", "Beneficiary bank offline")

    upi = await provider.create_payout(new_id("po"), 5_000, "INR", {"type": "upi", "vpa": "priya@okhdfc"})
    fake.settle_payout(upi.reference, "processed")
    assert (await provider.get_payout(upi.reference)).status == "paid"
    assert fake.calls("POST", "/v1/payouts")[-1].json()["mode"] == "UPI"

    with pytest.raises(ProviderDeclined):
        await provider.create_payout(new_id("po"), 5_000, "INR", {"type": "iban", "iban": "DE89"})
    with pytest.raises(UnsupportedOperation):
        await provider.create_payout(new_id("po"), 5_000, "USD", {"vpa": "priya@okhdfc"})
    unconfigured = RazorpayProvider(settings.model_copy(update={"razorpay_account_number": None}))
    with pytest.raises(ProviderNotConfigured):
        await unconfigured.create_payout(new_id("po"), 5_000, "INR", {"vpa": "priya@okhdfc"})


async def test_settlements(provider: RazorpayProvider, fake: RazorpayFake, clock: FrozenClock) -> None:
    payment = await provider.create_payment(request(amount=10_000))
    fake.pay(payment.reference)
    refund = await provider.refund(payment.reference, 1_000, "INR", idempotency_key="refund-key-s")
    payout = await provider.create_payout(new_id("po"), 5_000, "INR", {"vpa": "priya@okhdfc"})
    fake.settle_payout(payout.reference, "processed")
    records = await provider.list_settlements(clock.now().date())
    assert {(r.kind, r.reference, r.amount, r.fee) for r in records} == {
        ("payment", payment.reference, 10_000, 200),
        ("refund", refund.reference, 1_000, 0),
        ("payout", payout.reference, 5_000, 590),
    }


# ------------------------------------------------------------------------------------------- webhooks
def signed(body: bytes, secret: str = WEBHOOK_SECRET, event_id: str | None = "evt_Fake1") -> dict[str, str]:
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    headers = {"X-Razorpay-Signature": signature}
    if event_id:
        headers["x-razorpay-event-id"] = event_id
    return headers


def event(name: str, **entities: dict[str, Any]) -> bytes:
    return json.dumps(
        {
            "entity": "event",
            "account_id": "acc_Fake",
            "event": name,
            "contains": list(entities),
            "payload": {k: {"entity": v} for k, v in entities.items()},
            "created_at": 1_700_000_000,
        }
    ).encode()


PAYMENT = {
    "id": "pay_1",
    "entity": "payment",
    "amount": 5_000,
    "currency": "INR",
    "status": "captured",
    "order_id": "order_1",
    "card": {"last4": "1111", "network": "Visa"},
    "fee": 118,  # Razorpay's fee, tax included (the payment entity's documented field)
    "tax": 18,
}


async def test_webhook_signatures(provider: RazorpayProvider) -> None:
    body = event("payment.captured", payment=PAYMENT)
    headers = signed(body)
    # The official SDK accepts the signature we are about to accept.
    assert razorpay.Client(auth=(KEY_ID, KEY_SECRET)).utility.verify_webhook_signature(
        body.decode(), headers["X-Razorpay-Signature"], WEBHOOK_SECRET
    )
    parsed = await provider.parse_webhook(headers, body, "52.66.1.1")
    assert (parsed.event_id, parsed.kind, parsed.status, parsed.payment_reference) == (
        "evt_Fake1",
        "payment",
        "succeeded",
        "order_1",
    )
    assert parsed.card is not None and parsed.card.last4 == "1111"
    assert parsed.fee == 118  # booked with the capture, no status query needed

    failed = event(
        "payment.failed",
        payment={
            **PAYMENT,
            "status": "failed",
            "error_code": "BAD_REQUEST_ERROR",
            "error_reason": "payment_declined",
            "error_description": "Declined",
        },
    )
    parsed = await provider.parse_webhook(signed(failed, event_id=None), failed)
    assert (parsed.status, parsed.failure_code, parsed.fee) == ("failed", "payment_declined", None)
    assert parsed.event_id == hashlib.sha256(failed).hexdigest()  # stable without the header

    refund = event(
        "refund.processed",
        refund={
            "id": "rfnd_1",
            "entity": "refund",
            "amount": 700,
            "currency": "INR",
            "payment_id": "pay_1",
            "status": "processed",
        },
        payment=PAYMENT,
    )
    parsed = await provider.parse_webhook(signed(refund), refund)
    assert (parsed.kind, parsed.status, parsed.refund_reference, parsed.payment_reference) == (
        "refund",
        "succeeded",
        "rfnd_1",
        "order_1",
    )

    payout = event(
        "payout.reversed",
        payout={
            "id": "pout_1",
            "entity": "payout",
            "amount": 900,
            "currency": "INR",
            "status": "reversed",
            "failure_reason": "Account closed",
        },
    )
    parsed = await provider.parse_webhook(signed(payout), payout)
    assert (parsed.kind, parsed.status, parsed.payout_reference, parsed.failure_message) == (
        "payout",
        "failed",
        "pout_1",
        "Account closed",
    )

    other = event("settlement.processed", settlement={"id": "setl_1"})
    assert (await provider.parse_webhook(signed(other), other)).kind == "other"

    with pytest.raises(InvalidWebhookSignature):  # tampered
        await provider.parse_webhook(headers, body.replace(b"5000", b"9000"))
    with pytest.raises(InvalidWebhookSignature):  # wrong secret (e.g. the key secret)
        await provider.parse_webhook(signed(body, KEY_SECRET), body)
    with pytest.raises(InvalidWebhookSignature):  # missing
        await provider.parse_webhook({}, body)
    with pytest.raises(InvalidWebhookSignature):  # non-ASCII junk
        await provider.parse_webhook({"X-Razorpay-Signature": "ü" * 64}, body)
