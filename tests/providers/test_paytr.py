"""PayTR adapter against a local fake of its HTTP API (tests/fakes/paytr_fake.py)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from urllib.parse import parse_qsl, urlencode

import pytest

from emanet.core.settings import Settings
from emanet.providers.base import (
    CreatePayment,
    Customer,
    InvalidWebhookSignature,
    ProviderDeclined,
    ProviderUnavailable,
)
from emanet.providers.paytr import PaytrProvider
from emanet.providers.registry import get_provider
from tests.fakes.paytr_fake import PaytrFake, RecordingServer

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
        "provider_timeout_seconds": 0.3,
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
    fake.hang_next("/odeme/durum-sorgu", 1.0)
    assert (await provider.get_payment(created.reference)).status == "succeeded"
    assert len(fake.calls("/odeme/durum-sorgu")) == 3

    fake.fail_next("/odeme/durum-sorgu", 503, times=3)
    with pytest.raises(ProviderUnavailable, match="after 3 attempt"):
        await provider.get_payment(created.reference)


async def test_token_request_is_sent_once_when_the_answer_is_lost(provider, fake) -> None:
    fake.hang_next("/odeme/api/get-token", 1.0)

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
