"""PayTabs adapter against a local fake of its HTTP API (tests/fakes/paytabs_fake.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date
from decimal import Decimal

import pytest

from emanet.core.settings import Settings
from emanet.providers.base import (
    CreatePayment,
    Customer,
    InvalidWebhookSignature,
    PaymentProvider,
    ProviderDeclined,
    ProviderUnavailable,
    UnsupportedOperation,
)
from emanet.providers.paytabs import PaytabsProvider
from emanet.providers.registry import get_provider
from tests.fakes.paytabs_fake import PaytabsFake, RecordingServer
from tests.fakes.server import CLIENT_TIMEOUT_SECONDS, HANG_SECONDS

PROFILE_ID = 87654
SERVER_KEY = "SJJN9LHTWK-J2KKDG2MKH-ZNKDDRZ6WN"


def make_settings(base_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "env": "test",
        "public_url": "https://emanet.test",
        "paytabs_profile_id": str(PROFILE_ID),
        "paytabs_server_key": SERVER_KEY,
        "paytabs_api_base": base_url,
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
def fake(shared_server: RecordingServer) -> Iterator[PaytabsFake]:
    with PaytabsFake(PROFILE_ID, SERVER_KEY, server=shared_server) as server:
        yield server


@pytest.fixture
def provider(fake: PaytabsFake) -> PaytabsProvider:
    adapter = get_provider("paytabs", make_settings(fake.url))
    assert isinstance(adapter, PaytabsProvider)
    return adapter


def payment(
    payment_id: str = "pay_01jpaytabs",
    *,
    amount: int = 12_345,
    currency: str = "KWD",
    method: str = "card",
    save_card: bool = False,
) -> CreatePayment:
    return CreatePayment(
        payment_id=payment_id,
        amount=amount,
        currency=currency,
        description="Escrow E-3001",
        return_url=f"https://emanet.test/api/v1/payments/{payment_id}/return",
        method=method,
        save_card=save_card,
        country="KW",
        customer=Customer(name="Sara A", email="sara@example.com", phone="+96550000000"),
        metadata={"payer_ip": "198.51.100.4"},
    )


async def test_hosted_page_request_with_exact_amount_and_server_key(provider, fake) -> None:
    created = await provider.create_payment(payment())

    assert created.status == "requires_action"
    assert created.next_action is not None and created.next_action.type == "redirect"
    assert created.next_action.url == f"{fake.url}/payment/page/{created.reference}"
    [sent] = fake.calls("/payment/request")
    assert sent["cart_amount"] == Decimal("12.345")  # KWD has 3 decimals; a JSON number, written exactly
    assert b'"cart_amount": 12.345' in fake.server.received[0][1]
    assert (sent["profile_id"], sent["tran_type"], sent["tran_class"]) == (PROFILE_ID, "sale", "ecom")
    assert sent["callback"] == "https://emanet.test/api/v1/webhooks/paytabs"
    assert sent["return"] == "https://emanet.test/api/v1/payments/pay_01jpaytabs/return"
    assert sent["payment_methods"] == ["creditcard"]


async def test_wrong_server_key_is_refused(fake) -> None:
    adapter = get_provider("paytabs", make_settings(fake.url, paytabs_server_key="SWRONG-KEY"))

    with pytest.raises(ProviderDeclined, match="Authentication failed"):
        await adapter.create_payment(payment())


async def test_signed_return_is_verified_then_confirmed_by_query(provider, fake) -> None:
    created = await provider.create_payment(payment(save_card=True))
    returned = fake.pay(created.reference, "authorised")

    done = await provider.complete_payment(created.reference, returned)

    assert (done.status, done.amount, done.currency) == ("succeeded", 12_345, "KWD")
    assert done.card is not None
    assert (done.card.brand, done.card.last4, done.card.exp_month, done.card.token) == (
        "visa",
        "1111",
        12,
        "2C4654BC67A3E935C6B691FD6C8374BD",
    )
    assert len(fake.calls("/payment/query")) == 1


async def test_decline_and_failed_3ds(provider, fake) -> None:
    declined = await provider.create_payment(payment("pay_d"))
    fake.pay(declined.reference, "declined")
    three_ds = await provider.create_payment(payment("pay_3ds"))
    returned = fake.pay(three_ds.reference, "3ds_failed")

    first = await provider.get_payment(declined.reference)
    second = await provider.complete_payment(three_ds.reference, returned)

    assert (first.status, first.failure_code, first.failure_message) == ("failed", "51", "Insufficient funds")
    assert (second.status, second.failure_code) == ("failed", "3DS")


async def test_tampered_or_foreign_return_is_rejected_before_any_query(provider, fake) -> None:
    created = await provider.create_payment(payment())
    returned = fake.pay(created.reference, "declined")
    tampered = {**returned, "respStatus": "A", "respMessage": "Authorised"}
    other = await provider.create_payment(payment("pay_other"))
    other_return = fake.pay(other.reference, "authorised")
    wrong_key = get_provider("paytabs", make_settings(fake.url, paytabs_server_key="SOTHER-KEY"))

    with pytest.raises(InvalidWebhookSignature):
        await provider.complete_payment(created.reference, tampered)
    with pytest.raises(InvalidWebhookSignature):
        await provider.complete_payment(created.reference, other_return)
    with pytest.raises(InvalidWebhookSignature):
        await wrong_key.complete_payment(created.reference, returned)
    assert fake.calls("/payment/query") == []


async def test_return_signature_follows_php_url_encoding(provider, fake) -> None:
    created = await provider.create_payment(payment())
    returned = fake.pay(created.reference, "authorised")
    returned["customerEmail"] = "sara~x+y@example.com"
    returned["signature"] = fake.sign_return(returned)

    assert (await provider.complete_payment(created.reference, returned)).status == "succeeded"


async def test_query_retries_5xx_and_timeout(provider, fake) -> None:
    created = await provider.create_payment(payment())
    fake.pay(created.reference, "authorised")
    fake.fail_next("/payment/query", 502)
    fake.hang_next("/payment/query", HANG_SECONDS)

    assert (await provider.get_payment(created.reference)).status == "succeeded"
    assert len(fake.calls("/payment/query")) == 3


async def test_query_gives_up_clearly(provider, fake) -> None:
    fake.fail_next("/payment/query", 500, times=3)

    with pytest.raises(ProviderUnavailable, match="after 3 attempt"):
        await provider.get_payment("TST2600000001")


async def test_page_request_and_refund_are_never_resent(provider, fake) -> None:
    fake.hang_next("/payment/request", HANG_SECONDS)
    with pytest.raises(ProviderUnavailable, match="outcome is unknown"):
        await provider.create_payment(payment())
    created = await provider.create_payment(payment("pay_2"))
    fake.pay(created.reference, "authorised")
    fake.fail_next("/payment/request", 503)
    with pytest.raises(ProviderUnavailable):
        await provider.refund(created.reference, 1000, "KWD", idempotency_key="rf_1")

    assert len(fake.calls("/payment/request")) == 3  # page (lost), page, refund (lost): each sent once


async def test_partial_refund_and_refund_over_the_sale_amount(provider, fake) -> None:
    created = await provider.create_payment(payment())
    fake.pay(created.reference, "authorised")

    refund = await provider.refund(created.reference, 2_345, "KWD", idempotency_key="rf_1")

    assert (refund.status, refund.amount) == ("succeeded", 2_345)
    sent = fake.calls("/payment/request")[-1]
    assert (sent["tran_type"], sent["tran_ref"], sent["cart_amount"], sent["cart_id"]) == (
        "refund",
        created.reference,
        Decimal("2.345"),
        "rf_1",
    )
    with pytest.raises(ProviderDeclined) as refused:
        await provider.refund(created.reference, 10_001, "KWD", idempotency_key="rf_2")
    assert refused.value.decline_code == "R401"


async def test_ipn_with_valid_signature(provider, fake) -> None:
    created = await provider.create_payment(payment())
    fake.pay(created.reference, "authorised")
    headers, body = fake.ipn(created.reference)

    event = await provider.parse_webhook(headers, body, "203.0.113.9")

    assert (event.kind, event.status, event.payment_reference) == ("payment", "succeeded", created.reference)
    assert event.event_id == f"{created.reference}:A"
    assert event.amount == 12_345


async def test_refund_ipn(provider, fake) -> None:
    created = await provider.create_payment(payment())
    fake.pay(created.reference, "authorised")
    refund = await provider.refund(created.reference, 5_000, "KWD", idempotency_key="rf_1")
    headers, body = fake.ipn(refund.reference)

    event = await provider.parse_webhook(headers, body)

    assert (event.kind, event.status, event.refund_reference) == ("refund", "succeeded", refund.reference)
    assert (event.payment_reference, event.amount) == (created.reference, 5_000)


async def test_ipn_tampered_body_wrong_key_or_missing_signature(provider, fake) -> None:
    created = await provider.create_payment(payment())
    fake.pay(created.reference, "declined")
    headers, body = fake.ipn(created.reference)
    forged = json.loads(body)
    forged["payment_result"]["response_status"] = "A"
    wrong_key = get_provider("paytabs", make_settings(fake.url, paytabs_server_key="SOTHER-KEY"))

    with pytest.raises(InvalidWebhookSignature):
        await provider.parse_webhook(headers, json.dumps(forged).encode())
    with pytest.raises(InvalidWebhookSignature):
        await wrong_key.parse_webhook(headers, body)
    with pytest.raises(InvalidWebhookSignature):
        await provider.parse_webhook({"Content-Type": "application/json"}, body)


def test_methods(fake) -> None:
    adapter = get_provider("paytabs", make_settings(fake.url))

    assert adapter.methods("SAR", "SA") == ["card", "mada", "apple_pay", "stc_pay"]
    assert adapter.methods("AED") == ["card", "apple_pay"]
    assert adapter.methods("TRY") == []


async def test_no_settlement_listing_and_nothing_is_sent(provider, fake) -> None:
    # PayTabs publishes no transaction listing (only Dashboard-scheduled Excel reports): reconciliation
    # falls back to one /payment/query per payment of ours.
    with pytest.raises(UnsupportedOperation, match="PayTabs"):
        await provider.list_settlements(date(2026, 11, 22))
    assert type(provider).list_settlements is PaymentProvider.list_settlements
    assert fake.server.received == []
