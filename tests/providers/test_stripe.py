"""The Stripe adapter against a local fake of Stripe's API (tests/fakes/stripe_fake.py); webhook signatures
made with stripe-python's own ``WebhookSignature.generate_signature_header``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import stripe

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
from emanet.providers.registry import get_provider
from emanet.providers.stripe import StripeProvider
from tests.fakes.server import CLIENT_TIMEOUT_SECONDS
from tests.fakes.stripe_fake import StripeFake

API_KEY = "sk_test_emanet_fake"
WEBHOOK_SECRET = "whsec_test_emanet_stripe"
RETURN_URL = "https://shop.example/return"


@pytest.fixture
def fake() -> Iterator[StripeFake]:
    server = StripeFake(API_KEY)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def settings_overrides(fake: StripeFake) -> dict[str, Any]:
    return {
        "stripe_api_key": API_KEY,
        "stripe_webhook_secret": WEBHOOK_SECRET,
        "stripe_api_base": fake.url,
        "provider_timeout_seconds": CLIENT_TIMEOUT_SECONDS,
        "provider_retry_initial_seconds": 0.01,
        "provider_retry_max_seconds": 0.05,
    }


@pytest.fixture
def provider(settings: Settings) -> StripeProvider:
    adapter = get_provider("stripe", settings)
    assert isinstance(adapter, StripeProvider)
    return adapter


def request(**fields: Any) -> CreatePayment:
    values: dict[str, Any] = {
        "payment_id": new_id("pay"),
        "amount": 125_000,
        "currency": "TRY",
        "description": "Vintage camera",
        "return_url": RETURN_URL,
        "customer": Customer(name="Ayse", email="ayse@example.com"),
    }
    values.update(fields)
    return CreatePayment(**values)


def intent_posts(fake: StripeFake) -> list[Any]:
    return fake.calls("POST", "/v1/payment_intents")


# ------------------------------------------------------------------------------------------- payments
async def test_new_card_hands_the_client_secret_to_stripe_js(
    provider: StripeProvider, fake: StripeFake
) -> None:
    req = request()
    payment = await provider.create_payment(req)
    assert payment.status == "requires_action"
    assert payment.next_action is not None and payment.next_action.type == "client_secret"
    assert payment.next_action.data["client_secret"] == f"{payment.reference}_secret_fake"
    [post] = intent_posts(fake)
    assert post.headers["Idempotency-Key"] == req.payment_id
    form = post.form()
    assert form["amount"] == "125000" and form["currency"] == "try"
    assert form["automatic_payment_methods[enabled]"] == "true"
    assert form["metadata[payment_id]"] == req.payment_id
    assert "setup_future_usage" not in form and "customer" not in form

    fake.pay(payment.reference, "pm_card_visa")
    paid = await provider.get_payment(payment.reference)
    assert (paid.status, paid.amount, paid.currency, paid.fee) == ("succeeded", 125_000, "TRY", 3_625)
    assert paid.card is not None and (paid.card.brand, paid.card.last4, paid.card.token) == (
        "visa",
        "4242",
        None,
    )
    assert provider.methods("TRY") == ["card", "apple_pay", "google_pay"]
    assert provider.methods("KWD") == []


async def test_saving_a_card_then_charging_it(provider: StripeProvider, fake: StripeFake) -> None:
    first = request(save_card=True)
    payment = await provider.create_payment(first)
    [customer_post] = fake.calls("POST", "/v1/customers")
    assert customer_post.headers["Idempotency-Key"] == f"{first.payment_id}-customer"
    form = intent_posts(fake)[0].form()
    assert form["setup_future_usage"] == "off_session" and form["customer"].startswith("cus_")

    fake.pay(payment.reference, "pm_card_visa")
    card = (await provider.get_payment(payment.reference)).card
    assert card is not None and card.token == "pm_card_visa"

    again = await provider.create_payment(request(amount=2_000, saved_card_token=card.token))
    assert again.status == "succeeded" and again.next_action is None
    confirm = intent_posts(fake)[1].form()
    assert confirm["confirm"] == "true" and confirm["payment_method"] == "pm_card_visa"
    assert confirm["return_url"] == RETURN_URL and confirm["customer"] == form["customer"]


@pytest.mark.parametrize(
    ("payment_method", "failure_code"),
    [
        ("pm_card_visa_chargeDeclined", "generic_decline"),
        ("pm_card_visa_chargeDeclinedInsufficientFunds", "insufficient_funds"),
    ],
)
async def test_saved_card_declines_are_failed_payments(
    provider: StripeProvider,
    fake: StripeFake,
    payment_method: str,
    failure_code: str,
) -> None:
    fake.save_card(payment_method, fake.add_customer())
    payment = await provider.create_payment(request(saved_card_token=payment_method))
    assert payment.status == "failed"
    assert payment.failure_code == failure_code
    assert payment.failure_message and payment.reference.startswith("pi_")
    polled = await provider.get_payment(payment.reference)
    assert (polled.status, polled.failure_code) == ("failed", failure_code)


async def test_three_d_secure_redirect_for_a_saved_card(provider: StripeProvider, fake: StripeFake) -> None:
    fake.save_card("pm_card_threeDSecure2Required", fake.add_customer())
    payment = await provider.create_payment(request(saved_card_token="pm_card_threeDSecure2Required"))
    assert payment.status == "requires_action"
    assert payment.next_action is not None and payment.next_action.type == "three_d_secure"
    assert payment.next_action.url == (
        f"https://hooks.stripe.com/3d_secure_2/hosted?payment_intent={payment.reference}"
    )
    fake.pay(payment.reference, "pm_card_threeDSecure2Required")
    done = await provider.complete_payment(payment.reference, {"payment_intent": payment.reference})
    assert done.status == "succeeded"
    assert done.card is not None and done.card.last4 == "3220"


async def test_unknown_saved_card_is_declined(provider: StripeProvider) -> None:
    with pytest.raises(ProviderDeclined) as declined:
        await provider.create_payment(request(saved_card_token="pm_unknown"))
    assert declined.value.decline_code == "resource_missing"


# ------------------------------------------------------------------------------------------- faults
async def test_5xx_is_retried_with_the_same_idempotency_key(
    provider: StripeProvider, fake: StripeFake
) -> None:
    fake.fail_next("500", "503")
    req = request()
    payment = await provider.create_payment(req)
    assert payment.status == "requires_action"
    posts = intent_posts(fake)
    assert len(posts) == 3
    assert {p.headers["Idempotency-Key"] for p in posts} == {req.payment_id}
    assert len(fake.intents) == 1


async def test_a_lost_answer_is_replayed_not_charged_twice(
    provider: StripeProvider, fake: StripeFake
) -> None:
    fake.save_card("pm_card_visa", fake.add_customer())
    # Stripe charges the card, then the answer times out on the way back; the retry gets Stripe's replay.
    fake.fail_next("lost", path="/v1/payment_intents")
    req = request(saved_card_token="pm_card_visa")
    payment = await provider.create_payment(req)
    assert payment.status == "succeeded"
    posts = intent_posts(fake)
    assert len(posts) == 2 and {p.headers["Idempotency-Key"] for p in posts} == {req.payment_id}
    assert len(fake.intents) == 1 and len(fake.charges) == 1  # sent twice, charged once
    assert payment.reference == next(iter(fake.intents))


async def test_timeouts_then_a_clear_provider_error(provider: StripeProvider, fake: StripeFake) -> None:
    fake.fail_next("timeout", "502", "timeout")
    req = request()
    with pytest.raises(ProviderUnavailable) as unavailable:
        await provider.create_payment(req)
    assert unavailable.value.status == 503 and "stripe" in unavailable.value.detail
    posts = intent_posts(fake)
    assert len(posts) == 3  # provider_max_attempts
    assert {p.headers["Idempotency-Key"] for p in posts} == {req.payment_id}
    assert fake.intents == {}


async def test_reads_are_retried_after_a_timeout(provider: StripeProvider, fake: StripeFake) -> None:
    payment = await provider.create_payment(request())
    fake.fail_next("timeout", path="/v1/payment_intents/.*")
    assert (await provider.get_payment(payment.reference)).status == "requires_action"
    assert len(fake.calls("GET", f"/v1/payment_intents/{payment.reference}")) == 2


# ------------------------------------------------------------------------------------------- refunds
async def test_refunds_partial_full_and_idempotent(provider: StripeProvider, fake: StripeFake) -> None:
    payment = await provider.create_payment(request(amount=10_000))
    fake.pay(payment.reference, "pm_card_visa")
    partial = await provider.refund(payment.reference, 4_000, "TRY", idempotency_key="rf_a")
    assert (partial.status, partial.amount) == ("succeeded", 4_000)
    replay = await provider.refund(payment.reference, 4_000, "TRY", idempotency_key="rf_a")
    assert replay.reference == partial.reference
    assert len(fake.refunds) == 1
    with pytest.raises(ProviderDeclined) as too_much:
        await provider.refund(payment.reference, 6_001, "TRY", idempotency_key="rf_b")
    assert too_much.value.decline_code == "amount_too_large"
    rest = await provider.refund(payment.reference, 6_000, "TRY", idempotency_key="rf_c")
    assert rest.status == "succeeded"
    assert [r.headers["Idempotency-Key"] for r in fake.calls("POST", "/v1/refunds")] == [
        "rf_a",
        "rf_a",
        "rf_b",
        "rf_c",
    ]


# ------------------------------------------------------------------------------------------- payouts
async def test_payouts_are_connect_transfers(provider: StripeProvider, fake: StripeFake) -> None:
    payout_id = new_id("po")
    payout = await provider.create_payout(
        payout_id, 50_000, "TRY", {"type": "stripe_account", "account_id": "acct_seller"}
    )
    assert payout.status == "paid" and payout.reference.startswith("tr_")
    [post] = fake.calls("POST", "/v1/transfers")
    assert post.headers["Idempotency-Key"] == payout_id
    assert post.form()["destination"] == "acct_seller" and post.form()["transfer_group"] == payout_id
    fake.reverse(payout.reference)
    reversed_ = await provider.get_payout(payout.reference)
    assert (reversed_.status, reversed_.failure_message) == ("failed", "The transfer was reversed")

    with pytest.raises(ProviderDeclined) as no_account:
        await provider.create_payout(new_id("po"), 1_000, "TRY", {"type": "iban", "iban": "TR12"})
    assert no_account.value.decline_code == "invalid_destination"
    with pytest.raises(ProviderDeclined) as missing:
        await provider.create_payout(new_id("po"), 1_000, "TRY", {"account_id": "acct_missing"})
    assert missing.value.decline_code == "resource_missing"


# ------------------------------------------------------------------------------------------- settlements
async def test_list_settlements_pages_through_balance_transactions(
    provider: StripeProvider,
    fake: StripeFake,
    clock: FrozenClock,
) -> None:
    fake.page_size = 1
    payment = await provider.create_payment(request(amount=10_000))
    fake.pay(payment.reference, "pm_card_visa")
    refund = await provider.refund(payment.reference, 2_500, "TRY", idempotency_key="rf_s")
    payout = await provider.create_payout(new_id("po"), 7_000, "TRY", {"account_id": "acct_seller"})
    records = await provider.list_settlements(clock.now().date())
    assert [(r.kind, r.reference, r.amount, r.fee, r.currency) for r in records] == [
        ("payment", payment.reference, 10_000, 290, "TRY"),
        ("refund", refund.reference, 2_500, 0, "TRY"),
        ("payout", payout.reference, 7_000, 0, "TRY"),
    ]
    assert len(fake.calls("GET", "/v1/balance_transactions")) == 3
    assert await provider.list_settlements(clock.now().date() + timedelta(days=1)) == []


# ------------------------------------------------------------------------------------------- webhooks
def event(event_type: str, obj: dict[str, Any], event_id: str = "evt_1") -> bytes:
    return json.dumps(
        {"id": event_id, "object": "event", "type": event_type, "data": {"object": obj}}
    ).encode()


def sign(body: bytes, at: int, secret: str = WEBHOOK_SECRET) -> dict[str, str]:
    header = stripe.WebhookSignature.generate_signature_header(body.decode(), secret, timestamp=at)
    return {"stripe-signature": header}


INTENT = {
    "id": "pi_1",
    "object": "payment_intent",
    "amount": 5_000,
    "amount_received": 5_000,
    "currency": "try",
    "status": "succeeded",
    "last_payment_error": None,
    "customer": None,
    "payment_method": "pm_card_visa",
}


async def test_webhook_signatures_made_by_stripe_python(provider: StripeProvider, clock: FrozenClock) -> None:
    now = int(clock.now().timestamp())
    body = event("payment_intent.succeeded", INTENT)
    parsed = await provider.parse_webhook(sign(body, now), body, "3.18.12.63")
    assert (parsed.event_id, parsed.kind, parsed.status) == ("evt_1", "payment", "succeeded")
    assert (parsed.payment_reference, parsed.amount, parsed.currency) == ("pi_1", 5_000, "TRY")
    # The SDK agrees with what we accepted.
    assert stripe.WebhookSignature.verify_header(body, sign(body, now)["stripe-signature"], WEBHOOK_SECRET)

    failed = event(
        "payment_intent.payment_failed",
        {
            **INTENT,
            "status": "requires_payment_method",
            "amount_received": 0,
            "last_payment_error": {
                "code": "card_declined",
                "decline_code": "do_not_honor",
                "message": "Declined",
            },
        },
        "evt_2",
    )
    parsed = await provider.parse_webhook(sign(failed, now), failed)
    assert (parsed.status, parsed.failure_code) == ("failed", "do_not_honor")

    refund = event(
        "refund.updated",
        {
            "id": "re_1",
            "object": "refund",
            "amount": 700,
            "currency": "try",
            "status": "succeeded",
            "payment_intent": "pi_1",
        },
        "evt_3",
    )
    parsed = await provider.parse_webhook(sign(refund, now), refund)
    assert (parsed.kind, parsed.status, parsed.refund_reference, parsed.payment_reference, parsed.amount) == (
        "refund",
        "succeeded",
        "re_1",
        "pi_1",
        700,
    )

    reversal = event(
        "transfer.reversed",
        {"id": "tr_1", "object": "transfer", "amount": 900, "currency": "try", "reversed": True},
        "evt_4",
    )
    parsed = await provider.parse_webhook(sign(reversal, now), reversal)
    assert (parsed.kind, parsed.status, parsed.payout_reference) == ("payout", "failed", "tr_1")

    other = event("customer.created", {"id": "cus_1", "object": "customer"}, "evt_5")
    parsed = await provider.parse_webhook(sign(other, now), other)
    assert (parsed.kind, parsed.status, parsed.type) == ("other", None, "customer.created")


async def test_webhook_rejections(provider: StripeProvider, settings: Settings, clock: FrozenClock) -> None:
    now = int(clock.now().timestamp())
    body = event("payment_intent.succeeded", INTENT)
    headers = sign(body, now)
    with pytest.raises(InvalidWebhookSignature):  # tampered body
        await provider.parse_webhook(headers, body.replace(b"5000", b"9000"))
    with pytest.raises(InvalidWebhookSignature):  # wrong secret
        await provider.parse_webhook(sign(body, now, "whsec_other"), body)
    with pytest.raises(InvalidWebhookSignature):  # no header
        await provider.parse_webhook({}, body)
    with pytest.raises(InvalidWebhookSignature):  # malformed header
        await provider.parse_webhook({"Stripe-Signature": "garbage"}, body)
    with pytest.raises(InvalidWebhookSignature):  # from the future
        await provider.parse_webhook(sign(body, now + 301), body)
    clock.advance(seconds=300)
    assert (await provider.parse_webhook(headers, body)).event_id == "evt_1"  # 300 s is still inside
    clock.advance(seconds=1)
    with pytest.raises(InvalidWebhookSignature):  # stale
        await provider.parse_webhook(headers, body)

    restricted = StripeProvider(
        settings.model_copy(update={"webhook_ip_allowlist": {"stripe": ["3.18.12.0/24"]}})
    )
    fresh = sign(body, int(clock.now().timestamp()))
    assert (await restricted.parse_webhook(fresh, body, "3.18.12.63")).event_id == "evt_1"
    with pytest.raises(InvalidWebhookSignature):
        await restricted.parse_webhook(fresh, body, "198.51.100.1")
