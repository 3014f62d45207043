"""The built-in sandbox provider: hosted checkout page, test cards, 3-D Secure, signed webhooks, refunds,
payouts and settlements. The merchant's webhook endpoint is a pytest-httpserver on a real port."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from pytest_httpserver import HTTPServer
from sqlalchemy import select, text
from standardwebhooks import Webhook

from emanet.core.clock import FrozenClock
from emanet.core.db import Database, new_id
from emanet.core.models import Job
from emanet.core.settings import Settings
from emanet.core.tasks import JobContext
from emanet.models_registry import metadata
from emanet.providers.base import CreatePayment, InvalidWebhookSignature, ProviderDeclined
from emanet.providers.models import SandboxCharge
from emanet.providers.registry import get_provider
from emanet.providers.sandbox import (
    DELIVER_WEBHOOK_JOB,
    SETTLE_PAYOUT_JOB,
    SandboxProvider,
    card_brand,
    deliver_webhook_job,
    luhn_valid,
    settle_payout_job,
)

WEBHOOK_PATH = "/api/v1/webhooks/sandbox"
RETURN_URL = "https://shop.example/return?order=7"


@pytest.fixture
def settings_overrides(httpserver: HTTPServer) -> dict[str, Any]:
    return {
        "sandbox_callback_base": httpserver.url_for("/").rstrip("/"),
        "public_url": "http://testserver",
        "provider_retry_initial_seconds": 0.01,
        "provider_retry_max_seconds": 0.02,
    }


@pytest.fixture
def sandbox(settings: Settings, database: Database) -> SandboxProvider:
    provider = get_provider("sandbox", settings, database)
    assert isinstance(provider, SandboxProvider)
    return provider


@pytest.fixture
def wall_clock(clock: FrozenClock) -> FrozenClock:
    """``standardwebhooks.Webhook.verify`` checks timestamps against the wall clock: align ours with it."""
    clock.set(datetime.now(UTC))
    return clock


async def start_payment(sandbox: SandboxProvider, amount: int = 125_000, **fields: Any) -> tuple[str, str]:
    payment_id = new_id("pay")
    payment = await sandbox.create_payment(
        CreatePayment(
            payment_id=payment_id,
            amount=amount,
            currency="TRY",
            description="Vintage camera",
            return_url=RETURN_URL,
            **fields,
        )
    )
    assert payment.status == "requires_action"
    assert payment.next_action is not None and payment.next_action.type == "redirect"
    assert payment.next_action.url == f"http://testserver/sandbox/checkout/{payment.reference}"
    return payment_id, payment.reference


def expect_webhook(httpserver: HTTPServer, status: int = 200) -> None:
    httpserver.expect_request(WEBHOOK_PATH, method="POST").respond_with_data("{}", status=status)


def received_webhooks(httpserver: HTTPServer, settings: Settings) -> list[dict[str, Any]]:
    """Every webhook the fake merchant received, verified with the standardwebhooks library."""
    verifier = Webhook(settings.sandbox_webhook_secret)
    return [verifier.verify(request.get_data(), dict(request.headers)) for request, _ in httpserver.log]


async def pay(
    client: httpx.AsyncClient, reference: str, number: str, *, expiry: str = "12/30", cvc: str = "123"
) -> httpx.Response:
    return await client.post(
        f"/sandbox/checkout/{reference}",
        data={
            "step": "card",
            "cardholder_name": "Ayse Yilmaz",
            "card_number": number,
            "expiry": expiry,
            "cvc": cvc,
        },
    )


def returned(response: httpx.Response) -> dict[str, list[str]]:
    assert response.status_code == 303, response.text
    location = urlsplit(response.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == "https://shop.example/return"
    return parse_qs(location.query)


# ------------------------------------------------------------------------------------------- pure helpers
def test_luhn_and_brand() -> None:
    assert luhn_valid("4242424242424242")
    assert luhn_valid("4000000000003220")
    assert not luhn_valid("4242424242424241")
    assert card_brand("4242424242424242") == "visa"
    assert card_brand("5555555555554444") == "mastercard"
    assert card_brand("2223003122003222") == "mastercard"
    assert card_brand("378282246310005") == "amex"
    assert card_brand("9792030000000000") == "troy"


# ------------------------------------------------------------------------------------------- payments
async def test_create_payment_is_idempotent_per_payment_id(sandbox: SandboxProvider) -> None:
    request = CreatePayment(
        payment_id=new_id("pay"), amount=5_000, currency="USD", description="x", return_url=RETURN_URL
    )
    first = await sandbox.create_payment(request)
    second = await sandbox.create_payment(request)
    assert first.reference == second.reference
    fetched = await sandbox.get_payment(first.reference)
    assert (fetched.status, fetched.amount, fetched.currency) == ("requires_action", 5_000, "USD")
    assert fetched.card is None
    assert sandbox.methods("TRY") == ["card"]


async def test_create_payment_refuses_bad_requests(sandbox: SandboxProvider) -> None:
    with pytest.raises(ProviderDeclined) as declined:
        await sandbox.create_payment(
            CreatePayment(
                payment_id=new_id("pay"), amount=0, currency="TRY", description="x", return_url=RETURN_URL
            )
        )
    assert declined.value.decline_code == "invalid_amount"
    with pytest.raises(ProviderDeclined):
        await sandbox.create_payment(
            CreatePayment(
                payment_id=new_id("pay"),
                amount=100,
                currency="TRY",
                description="x",
                return_url="javascript:alert(1)",
            )
        )
    with pytest.raises(ProviderDeclined) as missing:
        await sandbox.get_payment("ch_sandbox_nope")
    assert missing.value.decline_code == "resource_missing"


async def test_checkout_page_renders_the_card_form(
    client: httpx.AsyncClient, sandbox: SandboxProvider
) -> None:
    _, reference = await start_payment(sandbox)
    page = await client.get(f"/sandbox/checkout/{reference}")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-store"
    html = page.text
    assert "1,250.00 TRY" in html or "1250.00 TRY" in html
    assert "Vintage camera" in html
    for field in ('name="card_number"', 'name="expiry"', 'name="cvc"', 'name="cardholder_name"'):
        assert field in html
    for number in (
        "4242 4242 4242 4242",
        "4000 0000 0000 0002",
        "4000 0000 0000 9995",
        "4000 0000 0000 3220",
    ):
        assert number in html
    assert (await client.get("/sandbox/checkout/ch_sandbox_unknown")).status_code == 404


@pytest.mark.parametrize(
    ("number", "status", "failure_code"),
    [
        ("4242 4242 4242 4242", "succeeded", None),
        ("4000 0000 0000 0002", "failed", "card_declined"),
        ("4000-0000-0000-9995", "failed", "insufficient_funds"),
        ("5555555555554444", "succeeded", None),
    ],
)
async def test_test_cards_decide_the_outcome_and_call_back_signed(
    client: httpx.AsyncClient,
    sandbox: SandboxProvider,
    httpserver: HTTPServer,
    settings: Settings,
    wall_clock: FrozenClock,
    number: str,
    status: str,
    failure_code: str | None,
) -> None:
    expect_webhook(httpserver)
    payment_id, reference = await start_payment(sandbox)
    query = returned(await pay(client, reference, number))
    assert query == {"order": ["7"], "payment_id": [payment_id], "status": [status]}

    [event] = received_webhooks(httpserver, settings)
    assert event["type"] == f"payment.{status}"
    assert event["data"]["reference"] == reference
    assert event["data"]["payment_id"] == payment_id
    assert event["data"]["amount"] == 125_000 and event["data"]["currency"] == "TRY"
    assert event["data"]["failure_code"] == failure_code
    payment = await sandbox.get_payment(reference)
    assert payment.status == status and payment.failure_code == failure_code
    assert payment.card is not None and payment.card.last4 == number.replace(" ", "").replace("-", "")[-4:]
    assert payment.card.token is None  # not saved
    assert payment.fee == (3_625 if status == "succeeded" else None)  # 2.9 %

    # Our own parser accepts what the sandbox sent.
    request, _ = httpserver.log[0]
    parsed = await sandbox.parse_webhook(dict(request.headers), request.get_data(), "127.0.0.1")
    assert (parsed.kind, parsed.status, parsed.payment_reference) == ("payment", status, reference)
    assert parsed.event_id == request.headers["webhook-id"]

    # A second submit (back button) changes nothing and sends no second webhook.
    again = returned(await pay(client, reference, "4242424242424242"))
    assert again["status"] == [status]
    assert len(httpserver.log) == 1


async def test_three_d_secure_step_passes_with_the_right_code(
    client: httpx.AsyncClient,
    sandbox: SandboxProvider,
    httpserver: HTTPServer,
    settings: Settings,
    wall_clock: FrozenClock,
) -> None:
    expect_webhook(httpserver)
    _, reference = await start_payment(sandbox, save_card=True)
    challenge = await pay(client, reference, "4000 0000 0000 3220")
    assert challenge.status_code == 303
    assert challenge.headers["location"] == f"/sandbox/checkout/{reference}"
    assert (await sandbox.get_payment(reference)).status == "requires_action"
    assert httpserver.log == []

    page = await client.get(f"/sandbox/checkout/{reference}")
    assert page.status_code == 200
    assert "3-D Secure" in page.text and 'name="three_d_secure_code"' in page.text
    assert "visa •••• 3220" in page.text
    assert 'name="card_number"' not in page.text

    done = await client.post(
        f"/sandbox/checkout/{reference}", data={"step": "three_d_secure", "three_d_secure_code": "123456"}
    )
    assert returned(done)["status"] == ["succeeded"]
    [event] = received_webhooks(httpserver, settings)
    assert event["type"] == "payment.succeeded"
    card = event["data"]["card"]
    assert card["brand"] == "visa" and card["last4"] == "3220" and card["token"].startswith("tok_sandbox_")
    assert (card["exp_month"], card["exp_year"]) == (12, 2030)

    final = await client.get(f"/sandbox/checkout/{reference}")
    assert "Payment succeeded" in final.text


async def test_three_d_secure_step_fails_with_any_other_code(
    client: httpx.AsyncClient,
    sandbox: SandboxProvider,
    httpserver: HTTPServer,
    settings: Settings,
    wall_clock: FrozenClock,
) -> None:
    expect_webhook(httpserver)
    payment_id, reference = await start_payment(sandbox)
    await pay(client, reference, "4000000000003220")
    done = await client.post(
        f"/sandbox/checkout/{reference}", data={"step": "three_d_secure", "three_d_secure_code": "654321"}
    )
    assert returned(done) == {"order": ["7"], "payment_id": [payment_id], "status": ["failed"]}
    [event] = received_webhooks(httpserver, settings)
    assert event["type"] == "payment.failed"
    assert event["data"]["failure_code"] == "three_d_secure_failed"


@pytest.mark.parametrize(
    ("number", "expiry", "cvc", "message"),
    [
        ("4242 4242 4242 4241", "12/30", "123", "not valid"),
        ("4242", "12/30", "123", "12 to 19 digits"),
        ("4242 4242 4242 4242", "13/30", "123", "MM/YY"),
        ("4242 4242 4242 4242", "10/26", "123", "expired"),  # the clock says November 2026
        ("4242 4242 4242 4242", "12/30", "12", "security code"),
    ],
)
async def test_invalid_card_input_shows_the_form_again(
    client: httpx.AsyncClient,
    sandbox: SandboxProvider,
    httpserver: HTTPServer,
    number: str,
    expiry: str,
    cvc: str,
    message: str,
) -> None:
    _, reference = await start_payment(sandbox)
    page = await pay(client, reference, number, expiry=expiry, cvc=cvc)
    assert page.status_code == 422
    assert message in page.text
    assert 'name="card_number"' in page.text
    assert page.text.count("value=") == 1  # only the hidden step field: nothing typed is echoed back
    assert (await sandbox.get_payment(reference)).status == "requires_action"
    assert httpserver.log == []


async def test_card_number_is_never_stored_or_logged(
    client: httpx.AsyncClient,
    sandbox: SandboxProvider,
    httpserver: HTTPServer,
    database: Database,
    wall_clock: FrozenClock,
) -> None:
    root = logging.getLogger()
    lines: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    capture = Capture(level=logging.DEBUG)
    capture.setFormatter(root.handlers[0].formatter)  # the app's structlog JSON renderer
    root.addHandler(capture)
    try:
        expect_webhook(httpserver, status=500)  # also exercise the deferred-delivery path
        _, reference = await start_payment(sandbox, save_card=True)
        returned(await pay(client, reference, "4242 4242 4242 4242", cvc="987"))
        _, challenged = await start_payment(sandbox)
        await pay(client, challenged, "4000000000003220", cvc="987")
    finally:
        root.removeHandler(capture)

    dump: list[str] = []
    async with database.engine.connect() as conn:
        for table in metadata.sorted_tables:
            rows = (await conn.execute(text(f"SELECT * FROM {table.name}"))).all()
            dump.extend(json.dumps([str(v) for v in row]) for row in rows)
    assert any(reference in row for row in dump)  # the scan does see the sandbox's rows
    assert any("sandbox_webhook_deferred" in line for line in lines)  # and the logs
    haystack = "\n".join(dump + lines)
    for secret in ("4242424242424242", "4242 4242 4242 4242", "4000000000003220"):
        assert secret not in haystack
    assert '"987"' not in haystack and "cvc=987" not in haystack
    payment = await sandbox.get_payment(reference)
    assert payment.card is not None and payment.card.token and payment.card.last4 == "4242"


# ------------------------------------------------------------------------------------------- saved cards
async def saved_card_token(client: httpx.AsyncClient, sandbox: SandboxProvider, number: str) -> str:
    _, reference = await start_payment(sandbox, save_card=True)
    returned(await pay(client, reference, number))
    card = (await sandbox.get_payment(reference)).card
    assert card is not None and card.token is not None
    return card.token


async def test_saved_card_charges_at_once_and_announces_by_job(
    client: httpx.AsyncClient,
    sandbox: SandboxProvider,
    httpserver: HTTPServer,
    settings: Settings,
    database: Database,
    wall_clock: FrozenClock,
) -> None:
    expect_webhook(httpserver)
    token = await saved_card_token(client, sandbox, "4242424242424242")
    payment = await sandbox.create_payment(
        CreatePayment(
            payment_id=new_id("pay"),
            amount=2_000,
            currency="TRY",
            description="again",
            return_url=RETURN_URL,
            saved_card_token=token,
        )
    )
    assert payment.status == "succeeded" and payment.next_action is None
    assert payment.card is not None and payment.card.token == token

    async with database.transaction() as session:
        jobs = (await session.scalars(select(Job).where(Job.kind == DELIVER_WEBHOOK_JOB))).all()
    assert len(jobs) == 1
    await deliver_webhook_job(JobContext(database=database, settings=settings, payload=jobs[0].payload))
    events = received_webhooks(httpserver, settings)
    assert [e["type"] for e in events] == ["payment.succeeded", "payment.succeeded"]
    assert events[1]["data"]["reference"] == payment.reference

    with pytest.raises(ProviderDeclined) as declined:
        await sandbox.create_payment(
            CreatePayment(
                payment_id=new_id("pay"),
                amount=2_000,
                currency="TRY",
                description="x",
                return_url=RETURN_URL,
                saved_card_token="tok_sandbox_unknown",
            )
        )
    assert declined.value.decline_code == "invalid_card_token"


async def test_saved_three_d_secure_card_still_asks_for_the_code(
    client: httpx.AsyncClient,
    sandbox: SandboxProvider,
    httpserver: HTTPServer,
    wall_clock: FrozenClock,
) -> None:
    expect_webhook(httpserver)
    _, first = await start_payment(sandbox, save_card=True)
    await pay(client, first, "4000000000003220")
    await client.post(
        f"/sandbox/checkout/{first}", data={"step": "three_d_secure", "three_d_secure_code": "123456"}
    )
    card = (await sandbox.get_payment(first)).card
    assert card is not None and card.token is not None
    payment = await sandbox.create_payment(
        CreatePayment(
            payment_id=new_id("pay"),
            amount=2_000,
            currency="TRY",
            description="x",
            return_url=RETURN_URL,
            saved_card_token=card.token,
        )
    )
    assert payment.status == "requires_action" and payment.next_action is not None
    page = await client.get(f"/sandbox/checkout/{payment.reference}")
    assert 'name="three_d_secure_code"' in page.text


async def test_undeliverable_webhook_is_retried_by_a_job(
    client: httpx.AsyncClient,
    sandbox: SandboxProvider,
    httpserver: HTTPServer,
    settings: Settings,
    database: Database,
    wall_clock: FrozenClock,
) -> None:
    httpserver.expect_oneshot_request(WEBHOOK_PATH, method="POST").respond_with_data("down", status=503)
    payment_id, reference = await start_payment(sandbox)
    assert returned(await pay(client, reference, "4242424242424242"))["status"] == ["succeeded"]

    async with database.transaction() as session:
        [job] = (await session.scalars(select(Job).where(Job.kind == DELIVER_WEBHOOK_JOB))).all()
    expect_webhook(httpserver)
    await deliver_webhook_job(JobContext(database=database, settings=settings, payload=job.payload))
    first, second = (request for request, _ in httpserver.log)
    assert first.headers["webhook-id"] == second.headers["webhook-id"]  # same event: receivers deduplicate
    [event] = received_webhooks(httpserver, settings)[1:]
    assert event["data"]["payment_id"] == payment_id


# ------------------------------------------------------------------------------------------- webhooks in
def signed(
    settings: Settings, body: bytes, moment: datetime, msg_id: str = "msg_1", secret: str | None = None
) -> dict[str, str]:
    signature = Webhook(secret or settings.sandbox_webhook_secret).sign(msg_id, moment, body.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": signature,
    }


async def test_parse_webhook_verifies_standard_webhooks_signatures(
    sandbox: SandboxProvider,
    settings: Settings,
    clock: FrozenClock,
) -> None:
    body = json.dumps(
        {
            "type": "payout.failed",
            "data": {
                "reference": "po_sandbox_1",
                "amount": 500,
                "currency": "TRY",
                "failure_message": "closed",
            },
        }
    ).encode()
    headers = signed(settings, body, clock.now())
    event = await sandbox.parse_webhook(headers, body, "203.0.113.9")
    assert (event.kind, event.status, event.payout_reference) == ("payout", "failed", "po_sandbox_1")
    assert (event.event_id, event.amount, event.failure_message) == ("msg_1", 500, "closed")

    # Several signatures (key rotation): one valid is enough.
    rotated = dict(headers, **{"webhook-signature": "v1,bm90LWl0 " + headers["webhook-signature"]})
    assert (await sandbox.parse_webhook(rotated, body)).event_id == "msg_1"

    unknown = json.dumps({"type": "charge.dispute.created", "data": {"reference": "x"}}).encode()
    other = await sandbox.parse_webhook(signed(settings, unknown, clock.now()), unknown)
    assert (other.kind, other.status) == ("other", None)

    with pytest.raises(InvalidWebhookSignature):  # tampered body
        await sandbox.parse_webhook(headers, body.replace(b"500", b"900"))
    with pytest.raises(InvalidWebhookSignature):  # wrong secret
        await sandbox.parse_webhook(signed(settings, body, clock.now(), secret="whsec_" + "QUJD" * 8), body)
    with pytest.raises(InvalidWebhookSignature):  # missing headers
        await sandbox.parse_webhook({"webhook-id": "msg_1"}, body)
    with pytest.raises(InvalidWebhookSignature):  # garbage signature
        await sandbox.parse_webhook(dict(headers, **{"webhook-signature": "v1"}), body)
    clock.advance(minutes=5, seconds=1)
    with pytest.raises(InvalidWebhookSignature):  # stale
        await sandbox.parse_webhook(headers, body)
    future = signed(settings, body, clock.now() + timedelta(minutes=6))
    with pytest.raises(InvalidWebhookSignature):  # from the future
        await sandbox.parse_webhook(future, body)


async def test_parse_webhook_enforces_the_ip_allowlist(
    settings: Settings,
    database: Database,
    clock: FrozenClock,
) -> None:
    restricted = SandboxProvider(
        settings.model_copy(update={"webhook_ip_allowlist": {"sandbox": ["10.0.0.0/8", "192.0.2.1"]}}),
        database,
    )
    body = json.dumps({"type": "refund.succeeded", "data": {"reference": "re_1", "charge": "ch_1"}}).encode()
    headers = signed(settings, body, clock.now())
    assert (await restricted.parse_webhook(headers, body, "10.1.2.3")).refund_reference == "re_1"
    assert (await restricted.parse_webhook(headers, body, "192.0.2.1")).payment_reference == "ch_1"
    for address in ("192.0.2.2", None, "not-an-ip"):
        with pytest.raises(InvalidWebhookSignature):
            await restricted.parse_webhook(headers, body, address)


# ------------------------------------------------------------------------------------------- refunds
async def test_refunds_full_partial_and_idempotent(
    client: httpx.AsyncClient,
    sandbox: SandboxProvider,
    httpserver: HTTPServer,
    database: Database,
    wall_clock: FrozenClock,
) -> None:
    expect_webhook(httpserver)
    _, reference = await start_payment(sandbox, amount=10_000)
    returned(await pay(client, reference, "4242424242424242"))

    partial = await sandbox.refund(reference, 4_000, "TRY", idempotency_key="rf_1")
    assert (partial.status, partial.amount) == ("succeeded", 4_000)
    replay = await sandbox.refund(reference, 4_000, "TRY", idempotency_key="rf_1")
    assert replay.reference == partial.reference
    assert (await sandbox.get_payment(reference)).status == "partially_refunded"
    with pytest.raises(ProviderDeclined) as reused:
        await sandbox.refund(reference, 1_000, "TRY", idempotency_key="rf_1")
    assert reused.value.decline_code == "idempotency_key_reused"
    with pytest.raises(ProviderDeclined) as too_much:
        await sandbox.refund(reference, 6_001, "TRY", idempotency_key="rf_2")
    assert too_much.value.decline_code == "amount_too_large"
    with pytest.raises(ProviderDeclined):
        await sandbox.refund(reference, 100, "USD", idempotency_key="rf_3")
    rest = await sandbox.refund(reference, 6_000, "TRY", idempotency_key="rf_4")
    assert rest.status == "succeeded"
    assert (await sandbox.get_payment(reference)).status == "refunded"

    async with database.transaction() as session:
        jobs = (await session.scalars(select(Job).where(Job.kind == DELIVER_WEBHOOK_JOB))).all()
    bodies = [json.loads(job.payload["body"]) for job in jobs]
    assert sorted(b["data"]["amount"] for b in bodies) == [4_000, 6_000]
    assert {b["type"] for b in bodies} == {"refund.succeeded"}

    _, unpaid = await start_payment(sandbox)
    with pytest.raises(ProviderDeclined) as not_paid:
        await sandbox.refund(unpaid, 100, "TRY", idempotency_key="rf_5")
    assert not_paid.value.decline_code == "charge_not_refundable"


# ------------------------------------------------------------------------------------------- payouts
@pytest.mark.parametrize(
    ("destination", "status"),
    [
        ({"type": "iban", "iban": "TR33 0006 1005 1978 6457 8413 26", "name": "Seller"}, "paid"),
        ({"type": "bank_account", "account_number": "12340000", "bank_code": "HDFC0000001"}, "failed"),
    ],
)
async def test_payouts_settle_by_destination_and_announce(
    sandbox: SandboxProvider,
    httpserver: HTTPServer,
    settings: Settings,
    database: Database,
    wall_clock: FrozenClock,
    destination: dict[str, str],
    status: str,
) -> None:
    expect_webhook(httpserver)
    payout_id = new_id("po")
    created = await sandbox.create_payout(payout_id, 50_000, "TRY", destination)  # type: ignore[arg-type]
    assert created.status == "processing"
    assert (await sandbox.create_payout(payout_id, 50_000, "TRY", destination)).reference == created.reference  # type: ignore[arg-type]
    assert (await sandbox.get_payout(created.reference)).status == "processing"

    async with database.transaction() as session:
        [job] = (await session.scalars(select(Job).where(Job.kind == SETTLE_PAYOUT_JOB))).all()
    assert job.run_at == wall_clock.now() + timedelta(seconds=settings.sandbox_payout_settle_seconds)
    await settle_payout_job(JobContext(database=database, settings=settings, payload=job.payload))
    await settle_payout_job(JobContext(database=database, settings=settings, payload=job.payload))  # twice

    settled = await sandbox.get_payout(created.reference)
    assert settled.status == status
    assert (settled.failure_message is None) == (status == "paid")
    events = received_webhooks(httpserver, settings)
    assert [e["type"] for e in events] == [f"payout.{status}"] * 2
    assert {request.headers["webhook-id"] for request, _ in httpserver.log} == {
        f"msg_{created.reference}_{status}"
    }
    event = await sandbox.parse_webhook(dict(httpserver.log[0][0].headers), httpserver.log[0][0].get_data())
    assert (event.kind, event.status, event.payout_reference) == ("payout", status, created.reference)


async def test_payout_polling_settles_when_due_and_rejects_bad_destinations(
    sandbox: SandboxProvider,
    clock: FrozenClock,
) -> None:
    created = await sandbox.create_payout(new_id("po"), 1_000, "TRY", {"type": "upi", "vpa": "seller@okbank"})
    assert (await sandbox.get_payout(created.reference)).status == "processing"
    clock.advance(seconds=5)
    assert (await sandbox.get_payout(created.reference)).status == "paid"
    with pytest.raises(ProviderDeclined) as bad:
        await sandbox.create_payout(new_id("po"), 1_000, "TRY", {"type": "iban", "name": "No account"})
    assert bad.value.decline_code == "invalid_destination"


# ------------------------------------------------------------------------------------------- settlements
async def test_list_settlements_for_a_day(
    client: httpx.AsyncClient,
    sandbox: SandboxProvider,
    httpserver: HTTPServer,
    database: Database,
    clock: FrozenClock,
) -> None:
    expect_webhook(httpserver)
    _, paid = await start_payment(sandbox, amount=10_000)
    returned(await pay(client, paid, "4242424242424242"))
    _, declined = await start_payment(sandbox, amount=10_000)
    returned(await pay(client, declined, "4000000000000002"))
    refund = await sandbox.refund(paid, 2_500, "TRY", idempotency_key="rf_s")
    payout = await sandbox.create_payout(new_id("po"), 7_000, "TRY", {"type": "iban", "iban": "TR12 3456"})
    await sandbox.settle_payout(payout.reference, force=True)
    day = clock.now().date()
    records = await sandbox.list_settlements(day)
    assert {(r.kind, r.reference, r.amount, r.fee) for r in records} == {
        ("payment", paid, 10_000, 290),
        ("refund", refund.reference, 2_500, 0),
        ("payout", payout.reference, 7_000, 0),
    }
    assert await sandbox.list_settlements(day + timedelta(days=1)) == []


async def test_charge_rows_hold_only_card_metadata(
    client: httpx.AsyncClient,
    sandbox: SandboxProvider,
    httpserver: HTTPServer,
    database: Database,
) -> None:
    expect_webhook(httpserver)
    _, reference = await start_payment(sandbox)
    returned(await pay(client, reference, "4242424242424242"))
    async with database.transaction() as session:
        charge = await session.get(SandboxCharge, reference)
    assert charge is not None
    assert (charge.card_brand, charge.card_last4, charge.card_exp_month, charge.card_exp_year) == (
        "visa",
        "4242",
        12,
        2030,
    )
