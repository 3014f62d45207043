"""Moyasar adapter against a local fake of its HTTP API (tests/fakes/moyasar_fake.py)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest

from emanet.core.settings import Settings
from emanet.providers.base import (
    CreatePayment,
    InvalidWebhookSignature,
    ProviderDeclined,
    ProviderUnavailable,
    UnsupportedOperation,
)
from emanet.providers.moyasar import MoyasarProvider
from emanet.providers.registry import get_provider
from tests.fakes.moyasar_fake import MoyasarFake, RecordingServer

SECRET_KEY = "sk_test_moyasar"
WEBHOOK_TOKEN = "whtok_moyasar_test"


def make_settings(base_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "env": "test",
        "moyasar_secret_key": SECRET_KEY,
        "moyasar_webhook_token": WEBHOOK_TOKEN,
        "moyasar_api_base": base_url,
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
def fake(shared_server: RecordingServer) -> Iterator[MoyasarFake]:
    with MoyasarFake(SECRET_KEY, WEBHOOK_TOKEN, server=shared_server) as server:
        yield server


@pytest.fixture
def provider(fake: MoyasarFake) -> MoyasarProvider:
    adapter = get_provider("moyasar", make_settings(fake.url))
    assert isinstance(adapter, MoyasarProvider)
    return adapter


def payment(
    payment_id: str = "pay_01jmoyasar",
    *,
    token: str | None = None,
    method: str = "mada",
    amount: int = 25_075,
) -> CreatePayment:
    return CreatePayment(
        payment_id=payment_id,
        amount=amount,
        currency="SAR",
        description="Escrow E-2001",
        return_url=f"https://emanet.test/api/v1/payments/{payment_id}/return",
        method=method,
        saved_card_token=token,
        metadata={"escrow_id": "esc_01j", "payer_ip": "198.51.100.4"},
    )


async def test_hosted_invoice_redirect_then_mada_payment_succeeds(provider, fake) -> None:
    created = await provider.create_payment(payment())

    assert created.status == "requires_action"
    assert created.reference.startswith("invoice:")
    assert created.next_action is not None and created.next_action.type == "redirect"
    invoice_id = created.reference.removeprefix("invoice:")
    assert created.next_action.url == f"{fake.url}/invoices/{invoice_id}"
    [sent] = fake.calls("POST", "/v1/invoices")
    body = json.loads(sent)
    assert (body["amount"], body["currency"]) == (25_075, "SAR")  # halalas, as Moyasar takes them
    assert body["metadata"] == {"escrow_id": "esc_01j", "payment_id": "pay_01jmoyasar"}
    assert (await provider.get_payment(created.reference)).status == "requires_action"

    fake.pay_invoice(invoice_id, "paid", method="mada")
    done = await provider.complete_payment(created.reference, {"id": invoice_id, "status": "paid"})

    assert (done.status, done.amount, done.fee) == ("succeeded", 25_075, 230)
    assert done.card is not None and (done.card.brand, done.card.last4) == ("mada", "1010")


async def test_declined_invoice_attempt_is_reported_with_the_reason(provider, fake) -> None:
    created = await provider.create_payment(payment())
    fake.pay_invoice(created.reference.removeprefix("invoice:"), "insufficient_funds")
    fake.invoices[created.reference.removeprefix("invoice:")]["status"] = "failed"

    result = await provider.get_payment(created.reference)

    assert (result.status, result.failure_code) == ("failed", "51")
    assert result.failure_message == "INSUFFICIENT_FUNDS"


async def test_saved_card_goes_through_3ds_transaction_url(provider, fake) -> None:
    created = await provider.create_payment(payment(token="token_3ds"))

    assert created.status == "requires_action"
    assert created.next_action is not None and created.next_action.type == "three_d_secure"
    assert created.next_action.url == f"{fake.url}/3ds/{created.reference}"
    body = json.loads(fake.calls("POST", "/v1/payments")[0])
    assert body["source"] == {"type": "token", "token": "token_3ds", "3ds": True}

    fake.finish_3ds(created.reference, passed=True)
    done = await provider.complete_payment(created.reference, {"id": created.reference})
    assert done.status == "succeeded"


async def test_failed_3ds_and_declined_token(provider, fake) -> None:
    three_ds = await provider.create_payment(payment("pay_3ds", token="token_3ds"))
    fake.finish_3ds(three_ds.reference, passed=False)
    declined = await provider.create_payment(payment("pay_decl", token="token_insufficient"))

    assert (await provider.get_payment(three_ds.reference)).failure_code == "3D"
    assert (declined.status, declined.failure_message) == ("failed", "INSUFFICIENT_FUNDS")


async def test_payment_create_is_retried_with_the_same_given_id_and_charges_once(provider, fake) -> None:
    fake.fail_next("POST", "/v1/payments", 502)
    fake.hang_next("POST", "/v1/payments", 1.0, process=True)  # charged; the answer is lost

    created = await provider.create_payment(payment(token="token_frictionless"))

    assert created.status == "succeeded"
    sent = [json.loads(b) for b in fake.calls("POST", "/v1/payments")]
    assert len(sent) == 3 and len({b["given_id"] for b in sent}) == 1
    assert len(fake.payments) == 1  # the timed-out attempt and the retry are one charge


async def test_persistent_5xx_gives_a_clear_error(provider, fake) -> None:
    fake.fail_next("GET", re.compile(r"^/v1/payments/"), 503, times=3)

    with pytest.raises(ProviderUnavailable, match="after 3 attempt"):
        await provider.get_payment("3f7c1a52-0000-4000-8000-000000000000")


async def test_invoice_creation_is_not_retried_blindly(provider, fake) -> None:
    fake.fail_next("POST", "/v1/invoices", 500)

    with pytest.raises(ProviderUnavailable, match="outcome is unknown"):
        await provider.create_payment(payment())
    assert len(fake.calls("POST", "/v1/invoices")) == 1


async def test_wrong_secret_key_is_refused(fake) -> None:
    adapter = get_provider("moyasar", make_settings(fake.url, moyasar_secret_key="sk_test_wrong"))

    with pytest.raises(ProviderDeclined) as refused:
        await adapter.create_payment(payment())
    assert refused.value.decline_code == "authentication_error"


async def test_partial_then_full_refund_of_an_invoice_payment(provider, fake) -> None:
    created = await provider.create_payment(payment())
    invoice_id = created.reference.removeprefix("invoice:")
    paid = fake.pay_invoice(invoice_id)

    first = await provider.refund(created.reference, 10_000, "SAR", idempotency_key="rf_1")
    assert (first.status, first.amount) == ("succeeded", 10_000)
    assert (await provider.get_payment(created.reference)).status == "partially_refunded"
    await provider.refund(created.reference, 15_075, "SAR", idempotency_key="rf_2")
    assert (await provider.get_payment(created.reference)).status == "refunded"
    assert [json.loads(b) for b in fake.calls("POST", f"/v1/payments/{paid['id']}/refund")] == [
        {"amount": 10_000},
        {"amount": 15_075},
    ]

    with pytest.raises(ProviderDeclined):
        await provider.refund(created.reference, 1, "SAR", idempotency_key="rf_3")


async def test_refund_is_sent_once_even_when_the_answer_is_lost(provider, fake) -> None:
    created = await provider.create_payment(payment(token="token_frictionless"))
    fake.fail_next("POST", f"/v1/payments/{created.reference}/refund", 504)

    with pytest.raises(ProviderUnavailable):
        await provider.refund(created.reference, 100, "SAR", idempotency_key="rf_1")
    assert len(fake.calls("POST", f"/v1/payments/{created.reference}/refund")) == 1


async def test_webhook_with_the_right_secret_token(provider, fake) -> None:
    created = await provider.create_payment(payment())
    paid = fake.pay_invoice(created.reference.removeprefix("invoice:"))
    body = fake.webhook_body("payment_paid", paid, event_id="evt_1")

    event = await provider.parse_webhook({"content-type": "application/json"}, body, "203.0.113.9")

    assert (event.event_id, event.type, event.kind, event.status) == (
        "evt_1",
        "payment_paid",
        "payment",
        "succeeded",
    )
    assert event.payment_reference == created.reference  # the invoice, which is what we stored
    assert event.amount == 25_075
    assert "secret_token" not in event.raw


async def test_webhook_with_a_wrong_token_tampered_body_or_no_configured_token(provider, fake) -> None:
    paid = fake.pay_invoice((await provider.create_payment(payment())).reference.removeprefix("invoice:"))
    unconfigured = get_provider("moyasar", make_settings(fake.url, moyasar_webhook_token=None))

    with pytest.raises(InvalidWebhookSignature):
        await provider.parse_webhook({}, fake.webhook_body("payment_paid", paid, token="guess"))
    with pytest.raises(InvalidWebhookSignature):
        await provider.parse_webhook({}, fake.webhook_body("payment_paid", paid)[:-5] + b"garbage")
    with pytest.raises(InvalidWebhookSignature):
        await unconfigured.parse_webhook({}, fake.webhook_body("payment_paid", paid))


async def test_unknown_webhook_event_is_acknowledged_as_other(provider, fake) -> None:
    body = json.dumps(
        {"id": "evt_9", "type": "balance_transferred", "secret_token": WEBHOOK_TOKEN, "data": {}}
    ).encode()

    event = await provider.parse_webhook({}, body)

    assert (event.kind, event.status, event.event_id) == ("other", None, "evt_9")


def test_methods_per_currency(fake) -> None:
    adapter = get_provider("moyasar", make_settings(fake.url))

    assert adapter.methods("SAR", "SA") == ["card", "mada", "apple_pay", "stc_pay"]
    assert adapter.methods("USD") == ["card", "apple_pay"]
    assert adapter.methods("TRY") == []


async def test_method_not_offered_is_refused_before_any_call(provider, fake) -> None:
    with pytest.raises(UnsupportedOperation):
        await provider.create_payment(
            CreatePayment(
                payment_id="pay_x",
                amount=1000,
                currency="USD",
                description="x",
                return_url="https://emanet.test/r",
                method="stc_pay",
            )
        )
    assert fake.server.received == []
