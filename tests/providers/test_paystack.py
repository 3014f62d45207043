"""The Paystack adapter against a local fake of Paystack's API (tests/fakes/paystack_fake.py); webhook
signatures are HMAC-SHA512 with the secret key (Paystack has no official Python SDK)."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from typing import Any

import pytest

from emanet.core.clock import FrozenClock
from emanet.core.db import new_id
from emanet.core.settings import Settings
from emanet.providers.base import (
    CreatePayment,
    Customer,
    InvalidWebhookSignature,
    ProviderDeclined,
    ProviderUnavailable,
)
from emanet.providers.paystack import PaystackProvider
from emanet.providers.registry import get_provider
from tests.fakes.paystack_fake import PaystackFake
from tests.fakes.server import CLIENT_TIMEOUT_SECONDS

SECRET = "sk_test_emanet_paystack"


@pytest.fixture
def fake() -> Iterator[PaystackFake]:
    server = PaystackFake(SECRET)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def settings_overrides(fake: PaystackFake) -> dict[str, Any]:
    return {
        "paystack_secret_key": SECRET,
        "paystack_api_base": fake.url,
        "provider_timeout_seconds": CLIENT_TIMEOUT_SECONDS,
        "provider_retry_initial_seconds": 0.01,
        "provider_retry_max_seconds": 0.05,
    }


@pytest.fixture
def provider(settings: Settings) -> PaystackProvider:
    adapter = get_provider("paystack", settings)
    assert isinstance(adapter, PaystackProvider)
    return adapter


def request(**fields: Any) -> CreatePayment:
    values: dict[str, Any] = {
        "payment_id": new_id("pay"),
        "amount": 1_500_000,
        "currency": "NGN",
        "description": "Ankara fabric",
        "return_url": "https://shop.example/return",
        "customer": Customer(name="Chidi", email="chidi@example.com"),
    }
    values.update(fields)
    return CreatePayment(**values)


# ------------------------------------------------------------------------------------------- payments
async def test_initialize_redirect_then_verify(provider: PaystackProvider, fake: PaystackFake) -> None:
    req = request(save_card=True)
    payment = await provider.create_payment(req)
    assert payment.status == "requires_action" and payment.reference == req.payment_id
    assert payment.next_action is not None and payment.next_action.type == "redirect"
    assert payment.next_action.url.startswith("https://checkout.paystack.com/")  # type: ignore[union-attr]
    [post] = fake.calls("POST", "/transaction/initialize")
    sent = post.json()
    assert (sent["email"], sent["amount"], sent["currency"], sent["callback_url"]) == (
        "chidi@example.com",
        1_500_000,
        "NGN",
        req.return_url,
    )
    assert (await provider.get_payment(payment.reference)).status == "requires_action"  # abandoned so far

    fake.pay(payment.reference)
    paid = await provider.complete_payment(payment.reference, {"reference": payment.reference})
    assert (paid.status, paid.amount, paid.fee) == ("succeeded", 1_500_000, 32_500)
    assert paid.card is not None
    assert (paid.card.brand, paid.card.last4, paid.card.exp_month, paid.card.token) == (
        "visa",
        "4081",
        12,
        "AUTH_success",
    )
    assert provider.methods("NGN") == ["card", "bank_transfer", "ussd"] and provider.methods("TRY") == []


async def test_declined_payment(provider: PaystackProvider, fake: PaystackFake) -> None:
    payment = await provider.create_payment(request())
    fake.pay(payment.reference, "failed")
    failed = await provider.get_payment(payment.reference)
    assert (failed.status, failed.failure_code, failed.failure_message) == ("failed", "declined", "Declined")
    assert failed.card is not None and failed.card.token is None  # not asked to save


@pytest.mark.parametrize(
    ("token", "status"),
    [("AUTH_success", "succeeded"), ("AUTH_declined", "failed"), ("AUTH_3ds", "requires_action")],
)
async def test_saved_authorizations(provider: PaystackProvider, token: str, status: str) -> None:
    payment = await provider.create_payment(request(saved_card_token=token))
    assert payment.status == status
    if status == "requires_action":
        assert payment.next_action is not None and payment.next_action.type == "three_d_secure"
    if status == "failed":
        assert payment.failure_code == "insufficient_funds"
    with pytest.raises(ProviderDeclined):
        await provider.create_payment(request(saved_card_token="AUTH_unknown"))


async def test_email_is_required(provider: PaystackProvider) -> None:
    with pytest.raises(ProviderDeclined) as declined:
        await provider.create_payment(request(customer=Customer(name="No mail")))
    assert declined.value.decline_code == "email_required"


# ------------------------------------------------------------------------------------------- faults
async def test_5xx_then_success_is_one_transaction(provider: PaystackProvider, fake: PaystackFake) -> None:
    fake.fail_next("500", "timeout", path="/transaction/initialize")
    req = request()
    payment = await provider.create_payment(req)
    assert payment.status == "requires_action"
    posts = fake.calls("POST", "/transaction/initialize")
    assert len(posts) == 3 and {p.json()["reference"] for p in posts} == {req.payment_id}
    assert list(fake.transactions) == [req.payment_id]


async def test_lost_initialize_is_reported_not_duplicated(
    provider: PaystackProvider, fake: PaystackFake
) -> None:
    fake.fail_next("lost", path="/transaction/initialize")
    with pytest.raises(ProviderUnavailable) as lost:
        await provider.create_payment(request())
    assert "nothing was charged" in lost.value.detail
    assert len(fake.transactions) == 1


async def test_refunds_are_sent_once(provider: PaystackProvider, fake: PaystackFake) -> None:
    payment = await provider.create_payment(request(amount=100_000))
    fake.pay(payment.reference)
    refund = await provider.refund(payment.reference, 40_000, "NGN", idempotency_key="rf_1")
    assert (refund.status, refund.amount) == ("pending", 40_000)
    with pytest.raises(ProviderDeclined):
        await provider.refund(payment.reference, 60_001, "NGN", idempotency_key="rf_2")
    fake.fail_next("503", path="/refund")
    with pytest.raises(ProviderUnavailable) as unknown:
        await provider.refund(payment.reference, 1_000, "NGN", idempotency_key="rf_3")
    assert "outcome is unknown" in unknown.value.detail
    assert len(fake.calls("POST", "/refund")) == 3  # one per refund call: never resent


# ------------------------------------------------------------------------------------------- payouts
async def test_transfers(provider: PaystackProvider, fake: PaystackFake) -> None:
    payout_id = new_id("po")
    bank = {"type": "bank_account", "name": "Chidi", "account_number": "0123456789", "bank_code": "058"}
    fake.fail_next("lost", path="/transfer")
    payout = await provider.create_payout(payout_id, 500_000, "NGN", bank)  # type: ignore[arg-type]
    assert payout.status == "processing" and payout.reference.startswith("TRF_")
    assert len(fake.transfers) == 1  # the lost answer was recovered by reference, not sent twice
    assert len(fake.calls("GET", f"/transfer/verify/{payout_id}")) == 1
    fake.settle_transfer(payout.reference, "success")
    assert (await provider.get_payout(payout.reference)).status == "paid"

    second = await provider.create_payout(new_id("po"), 1_000, "NGN", bank)  # type: ignore[arg-type]
    assert len(fake.recipients) == 1
    fake.settle_transfer(second.reference, "reversed", "Account is dormant")
    reversed_ = await provider.get_payout(second.reference)
    assert (reversed_.status, reversed_.failure_message) == ("failed", "Account is dormant")
    with pytest.raises(ProviderDeclined):
        await provider.create_payout(new_id("po"), 1_000, "NGN", {"iban": "GB33"})


async def test_settlements(provider: PaystackProvider, fake: PaystackFake, clock: FrozenClock) -> None:
    fake.per_page = 1
    payments = []
    for amount in (100_000, 200_000):
        payment = await provider.create_payment(request(amount=amount))
        fake.pay(payment.reference)
        payments.append(payment.reference)
    refund = await provider.refund(payments[0], 10_000, "NGN", idempotency_key="rf_s")
    fake.process_refund(int(refund.reference))
    payout = await provider.create_payout(
        new_id("po"), 50_000, "NGN", {"account_number": "1", "bank_code": "058"}
    )
    fake.settle_transfer(payout.reference, "success")
    records = await provider.list_settlements(clock.now().date())
    assert sorted((r.kind, r.reference, r.amount, r.fee) for r in records) == sorted(
        [
            ("payment", payments[0], 100_000, 11_500),
            ("payment", payments[1], 200_000, 13_000),
            ("refund", refund.reference, 10_000, 0),
            ("payout", payout.reference, 50_000, 5_000),
        ]
    )
    assert len(fake.calls("GET", "/transaction")) == 2  # paged


# ------------------------------------------------------------------------------------------- webhooks
def signed(body: bytes, secret: str = SECRET) -> dict[str, str]:
    return {"x-paystack-signature": hmac.new(secret.encode(), body, hashlib.sha512).hexdigest()}


async def test_webhooks(provider: PaystackProvider) -> None:
    charge = json.dumps(
        {
            "event": "charge.success",
            "data": {
                "id": 302961,
                "status": "success",
                "reference": "pay_1",
                "amount": 10_000,
                "currency": "NGN",
                "fees": 150,
                "authorization": {"channel": "card", "last4": "4081", "brand": "visa"},
            },
        }
    ).encode()
    parsed = await provider.parse_webhook(signed(charge), charge, "52.31.139.75")
    assert (parsed.event_id, parsed.kind, parsed.status, parsed.payment_reference, parsed.amount) == (
        "charge.success:302961",
        "payment",
        "succeeded",
        "pay_1",
        10_000,
    )
    assert parsed.fee == 150  # booked with the capture, no status query needed

    refund = json.dumps(
        {
            "event": "refund.processed",
            "data": {
                "status": "processed",
                "transaction_reference": "pay_1",
                "refund_reference": "3239482917",
                "amount": "10000",
                "currency": "NGN",
            },
        }
    ).encode()
    parsed = await provider.parse_webhook(signed(refund), refund)
    assert (parsed.kind, parsed.status, parsed.payment_reference, parsed.refund_reference, parsed.amount) == (
        "refund",
        "succeeded",
        "pay_1",
        None,
        10_000,
    )
    assert parsed.event_id == "refund.processed:3239482917"

    transfer = json.dumps(
        {
            "event": "transfer.failed",
            "data": {
                "transfer_code": "TRF_1",
                "reference": "po_1",
                "amount": 500,
                "currency": "NGN",
                "status": "failed",
                "reason": "Could not credit account",
            },
        }
    ).encode()
    parsed = await provider.parse_webhook(signed(transfer), transfer)
    assert (parsed.kind, parsed.status, parsed.payout_reference, parsed.failure_message) == (
        "payout",
        "failed",
        "TRF_1",
        "Could not credit account",
    )

    other = json.dumps({"event": "customeridentification.success", "data": {}}).encode()
    parsed = await provider.parse_webhook(signed(other), other)
    assert parsed.kind == "other" and parsed.event_id == hashlib.sha256(other).hexdigest()

    with pytest.raises(InvalidWebhookSignature):  # tampered
        await provider.parse_webhook(signed(charge), charge.replace(b"10000", b"90000"))
    with pytest.raises(InvalidWebhookSignature):  # wrong secret
        await provider.parse_webhook(signed(charge, "sk_test_other"), charge)
    with pytest.raises(InvalidWebhookSignature):  # SHA-256 instead of SHA-512
        await provider.parse_webhook(
            {"x-paystack-signature": hmac.new(SECRET.encode(), charge, hashlib.sha256).hexdigest()}, charge
        )
    with pytest.raises(InvalidWebhookSignature):  # missing
        await provider.parse_webhook({}, charge)


async def test_webhook_ip_allowlist(settings: Settings) -> None:
    restricted = PaystackProvider(
        settings.model_copy(
            update={"webhook_ip_allowlist": {"paystack": ["52.31.139.75", "52.49.173.169", "52.214.14.220"]}}
        )
    )
    body = json.dumps(
        {"event": "charge.success", "data": {"reference": "pay_1", "amount": 1, "status": "success"}}
    )
    assert (
        await restricted.parse_webhook(signed(body.encode()), body.encode(), "52.49.173.169")
    ).kind == "payment"
    with pytest.raises(InvalidWebhookSignature):
        await restricted.parse_webhook(signed(body.encode()), body.encode(), "203.0.113.5")
