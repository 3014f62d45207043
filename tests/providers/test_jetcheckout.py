"""Jetcheckout adapter against a local fake of its HTTP API (tests/fakes/jetcheckout_fake.py)."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlencode

import pytest

from emanet.core.settings import Settings
from emanet.providers.base import (
    CreatePayment,
    Customer,
    InvalidWebhookSignature,
    ProviderDeclined,
    ProviderUnavailable,
)
from emanet.providers.jetcheckout import JetcheckoutProvider
from emanet.providers.registry import get_provider
from tests.fakes.jetcheckout_fake import JetcheckoutFake, RecordingServer
from tests.fakes.server import CLIENT_TIMEOUT_SECONDS, HANG_SECONDS

API_KEY = "jc_app_key_test"
SECRET_KEY = "jc_secret_test"


def make_settings(base_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "env": "test",
        "public_url": "https://emanet.test",
        "jetcheckout_api_key": API_KEY,
        "jetcheckout_secret_key": SECRET_KEY,
        "jetcheckout_api_base": base_url,
        "jetcheckout_test_mode": True,
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
def fake(shared_server: RecordingServer) -> Iterator[JetcheckoutFake]:
    with JetcheckoutFake(API_KEY, SECRET_KEY, server=shared_server) as server:
        yield server


@pytest.fixture
def provider(fake: JetcheckoutFake) -> JetcheckoutProvider:
    adapter = get_provider("jetcheckout", make_settings(fake.url))
    assert isinstance(adapter, JetcheckoutProvider)
    return adapter


def payment(payment_id: str = "pay_01jtest", amount: int = 125_050) -> CreatePayment:
    return CreatePayment(
        payment_id=payment_id,
        amount=amount,
        currency="TRY",
        description="Escrow E-1001",
        return_url=f"https://emanet.test/api/v1/payments/{payment_id}/return",
        customer=Customer(name="Ayse Yilmaz", email="ayse@example.com", phone="+905551112233"),
        metadata={"payer_ip": "198.51.100.4"},
    )


async def test_prepare_signs_the_order_and_redirects_to_the_hosted_page(provider, fake) -> None:
    result = await provider.create_payment(payment())

    assert result.status == "requires_action"
    assert result.reference == "pay_01jtest"
    assert result.next_action is not None and result.next_action.type == "redirect"
    assert result.next_action.url is not None and result.next_action.url.startswith(f"{fake.url}/payment?=")
    [sent] = fake.calls("/api/v1/payment/prepare")
    assert sent["hash"] == fake.order_hash("pay_01jtest")  # base64(SHA-256(apikey + secret + id))
    assert sent["amount"] == "1250.50"  # exact decimal string, no float
    assert sent["mode"] == "T"
    assert sent["url"]["card"] == {
        "result": "https://emanet.test/api/v1/payments/pay_01jtest/return",
        "webhook": "https://emanet.test/api/v1/webhooks/jetcheckout",
    }
    assert "card_number" not in sent


async def test_wrong_secret_is_refused_by_the_provider(fake) -> None:
    adapter = get_provider("jetcheckout", make_settings(fake.url, jetcheckout_secret_key="not-the-secret"))

    with pytest.raises(ProviderDeclined) as refused:
        await adapter.create_payment(payment())
    assert refused.value.decline_code == "http_401"
    assert fake.orders == {}


async def test_three_d_secure_success_is_confirmed_by_the_status_query(provider, fake) -> None:
    created = await provider.create_payment(payment())
    fake.pay(created.reference, "success")

    done = await provider.complete_payment(created.reference, {"order_id": created.reference})

    assert done.status == "succeeded"
    assert done.amount == 125_050
    assert done.fee == 3489  # 1250.50 TRY at 2.79 % is 34.89 TRY
    assert done.card is not None and (done.card.brand, done.card.last4) == ("visa", "4567")
    assert "card_number" not in done.raw
    assert len(fake.calls("/api/v1/payment/status")) == 1


async def test_decline_and_failed_3ds_come_back_as_failed_payments(provider, fake) -> None:
    declined = await provider.create_payment(payment("pay_declined"))
    fake.pay(declined.reference, "insufficient_funds")
    failed_3ds = await provider.create_payment(payment("pay_3ds"))
    fake.pay(failed_3ds.reference, "3ds_failed")

    first = await provider.get_payment(declined.reference)
    second = await provider.complete_payment(failed_3ds.reference, {"order_id": failed_3ds.reference})

    assert (first.status, first.failure_code, first.failure_message) == ("failed", "51", "Insufficient funds")
    assert (second.status, second.failure_code) == ("failed", "3D")


async def test_browser_return_claiming_success_is_overruled_by_the_status_query(provider, fake) -> None:
    created = await provider.create_payment(payment())
    # The payer never finished (or tampered with the success URL): the gateway knows no successful attempt.
    claimed = {
        "order_id": created.reference,
        "status": "success",
        "response_code": "00",
        "hash": fake.order_hash(created.reference),
    }

    result = await provider.complete_payment(created.reference, claimed)

    assert result.status == "requires_action"
    fake.pay(created.reference, "declined")
    assert (await provider.complete_payment(created.reference, claimed)).status == "failed"


async def test_return_for_another_order_or_with_a_wrong_hash_is_rejected_unqueried(provider, fake) -> None:
    created = await provider.create_payment(payment())
    fake.pay(created.reference, "success")

    with pytest.raises(InvalidWebhookSignature):
        await provider.complete_payment(created.reference, {"order_id": "pay_someone_else"})
    with pytest.raises(InvalidWebhookSignature):
        await provider.complete_payment(created.reference, {"order_id": created.reference, "hash": "forged"})
    assert fake.calls("/api/v1/payment/status") == []


async def test_status_query_retries_5xx_and_timeouts_then_answers(provider, fake) -> None:
    created = await provider.create_payment(payment())
    fake.pay(created.reference, "success")
    fake.fail_next("/api/v1/payment/status", 502)
    fake.hang_next("/api/v1/payment/status", HANG_SECONDS)

    result = await provider.get_payment(created.reference)

    assert result.status == "succeeded"
    assert len(fake.calls("/api/v1/payment/status")) == 3


async def test_status_query_gives_up_with_a_clear_error(provider, fake) -> None:
    created = await provider.create_payment(payment())
    fake.fail_next("/api/v1/payment/status", 503, times=3)

    with pytest.raises(ProviderUnavailable, match="after 3 attempt"):
        await provider.get_payment(created.reference)


async def test_prepare_is_never_sent_twice_after_a_5xx_or_a_timeout(provider, fake) -> None:
    fake.fail_next("/api/v1/payment/prepare", 500)
    with pytest.raises(ProviderUnavailable, match="outcome is unknown"):
        await provider.create_payment(payment("pay_5xx"))
    fake.hang_next("/api/v1/payment/prepare", HANG_SECONDS)
    with pytest.raises(ProviderUnavailable):
        await provider.create_payment(payment("pay_timeout"))

    assert len(fake.calls("/api/v1/payment/prepare")) == 2  # one each, no blind retry


async def test_callback_is_verified_then_decided_by_the_status_query(provider, fake) -> None:
    created = await provider.create_payment(payment())
    fake.pay(created.reference, "success")
    body = urlencode({"order_id": created.reference, "hash": fake.order_hash(created.reference)}).encode()

    event = await provider.parse_webhook(
        {"content-type": "application/x-www-form-urlencoded"}, body, "203.0.113.9"
    )

    assert (event.kind, event.status, event.payment_reference) == ("payment", "succeeded", created.reference)
    assert event.event_id == f"{created.reference}:succeeded"  # the same for every redelivery
    assert event.amount == 125_050


async def test_callback_with_a_tampered_hash_or_wrong_secret_is_rejected(provider, fake) -> None:
    created = await provider.create_payment(payment())
    fake.pay(created.reference, "success")
    tampered = urlencode({"order_id": "pay_other", "hash": fake.order_hash(created.reference)}).encode()
    other_secret = get_provider("jetcheckout", make_settings(fake.url, jetcheckout_secret_key="rotated"))
    genuine = urlencode({"order_id": created.reference, "hash": fake.order_hash(created.reference)}).encode()

    with pytest.raises(InvalidWebhookSignature):
        await provider.parse_webhook({}, tampered)
    with pytest.raises(InvalidWebhookSignature):
        await other_secret.parse_webhook({}, genuine)
    with pytest.raises(InvalidWebhookSignature):
        await provider.parse_webhook({}, b'{"status": "success"}')
    assert fake.calls("/api/v1/payment/status") == []


async def test_unsigned_callback_claiming_success_does_not_take_effect(provider, fake) -> None:
    created = await provider.create_payment(payment())
    fake.pay(created.reference, "declined")

    claim = f'{{"order_id": "{created.reference}", "successful": true}}'.encode()
    event = await provider.parse_webhook({}, claim)

    assert event.status == "failed"


async def test_webhook_ip_allowlist(fake) -> None:
    adapter = get_provider(
        "jetcheckout", make_settings(fake.url, webhook_ip_allowlist={"jetcheckout": ["192.0.2.0/24"]})
    )

    with pytest.raises(InvalidWebhookSignature):
        await adapter.parse_webhook({}, b"order_id=pay_x", "203.0.113.9")


async def test_partial_refund_in_minor_units_and_full_refund_voids_an_open_batch(provider, fake) -> None:
    first = await provider.create_payment(payment("pay_partial"))
    fake.pay(first.reference, "success")
    second = await provider.create_payment(payment("pay_full"))
    fake.pay(second.reference, "success")

    partial = await provider.refund(first.reference, 50_000, "TRY", idempotency_key="rf_1")
    full = await provider.refund(second.reference, 125_050, "TRY", idempotency_key="rf_2")

    assert (partial.status, partial.amount) == ("succeeded", 50_000)
    [sent] = fake.calls("/api/v1/payment/refund")
    assert (sent["amount"], sent["currency"], sent["transaction_id"]) == (50_000, "TRY", "jt_pay_partial")
    assert full.status == "succeeded"
    assert [c["order_id"] for c in fake.calls("/api/v1/payment/cancel")] == ["pay_full"]
    assert (await provider.get_payment(second.reference)).status == "cancelled"


async def test_refund_refused_by_the_provider_and_never_retried(provider, fake) -> None:
    created = await provider.create_payment(payment())
    fake.pay(created.reference, "success")
    fake.orders[created.reference].completed = True

    with pytest.raises(ProviderDeclined):
        await provider.refund(created.reference, 999_999, "TRY", idempotency_key="rf_big")
    fake.fail_next("/api/v1/payment/refund", 503)
    with pytest.raises(ProviderUnavailable):
        await provider.refund(created.reference, 100, "TRY", idempotency_key="rf_5xx")
    assert len(fake.calls("/api/v1/payment/refund")) == 2


async def test_refund_of_an_unpaid_order_is_refused_without_calling_refund(provider, fake) -> None:
    created = await provider.create_payment(payment())

    with pytest.raises(ProviderDeclined):
        await provider.refund(created.reference, 100, "TRY", idempotency_key="rf_x")
    assert fake.calls("/api/v1/payment/refund") == []


def test_methods_and_currencies(fake) -> None:
    adapter = get_provider("jetcheckout", make_settings(fake.url))

    assert adapter.methods("TRY", "TR") == ["card"]
    assert adapter.methods("SAR") == []
