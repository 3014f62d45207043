"""Moyasar adapter against a local fake of its HTTP API (tests/fakes/moyasar_fake.py)."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

import pytest
from werkzeug import Request, Response

from emanet.core.settings import Settings
from emanet.providers.base import (
    CreatePayment,
    InvalidWebhookSignature,
    ProviderDeclined,
    ProviderUnavailable,
    SettlementRecord,
    UnsupportedOperation,
)
from emanet.providers.moyasar import MoyasarProvider
from emanet.providers.registry import get_provider
from tests.fakes.moyasar_fake import MoyasarFake, RecordingServer
from tests.fakes.server import CLIENT_TIMEOUT_SECONDS, HANG_SECONDS

SECRET_KEY = "sk_test_moyasar"
WEBHOOK_TOKEN = "whtok_moyasar_test"


def make_settings(base_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "env": "test",
        "moyasar_secret_key": SECRET_KEY,
        "moyasar_webhook_token": WEBHOOK_TOKEN,
        "moyasar_api_base": base_url,
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
    fake.hang_next("POST", "/v1/payments", HANG_SECONDS, process=True)  # charged; the answer is lost

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
    assert event.fee == paid["fee"] and paid["fee"] > 0  # booked with the capture, no status query needed
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


# ------------------------------------------------------------------------------------------- settlements
DAY = date(2026, 11, 22)


class PaymentListing:
    """``GET /v1/payments`` as docs.moyasar.com describes it ("List Payments", "Pagination"): newest first,
    ``per_page`` objects a page, filters ``status``, ``created[gt]``/``created[lt]`` (both exclusive) and
    ``page``, answered as ``{"payments": [...], "meta": {current_page, next_page, prev_page, total_pages,
    total_count}}`` with Payment Objects (``payment_list.json`` of moyasar-php)."""

    def __init__(self, fake: MoyasarFake, per_page: int = 2) -> None:
        self.fake = fake
        self.per_page = per_page
        self.payments: list[dict[str, Any]] = []
        self.queries: list[dict[str, str]] = []
        fake.server.expect_request("/v1/payments", method="GET").respond_with_handler(self.handle)

    def add(
        self,
        status: str,
        created_at: str,
        *,
        amount: int = 10_000,
        fee: int = 0,
        currency: str = "SAR",
        refunded: int = 0,
        refunded_at: str | None = None,
        invoice_id: str | None = None,
        metadata: dict[str, str] | None = None,
        payment_id: str | None = None,
    ) -> dict[str, Any]:
        payment = {
            "id": payment_id or f"0b9f6c1e-0000-4000-8000-{len(self.payments):012d}",
            "status": status,
            "amount": amount,
            "fee": fee,
            "currency": currency,
            "refunded": refunded,
            "refunded_at": refunded_at,
            "captured": 0,
            "captured_at": None,
            "voided_at": None,
            "description": "Escrow E-2001",
            "amount_format": f"{amount / 100:.2f} {currency}",
            "fee_format": f"{fee / 100:.2f} {currency}",
            "refunded_format": f"{refunded / 100:.2f} {currency}",
            "invoice_id": invoice_id,
            "ip": None,
            "callback_url": "https://emanet.test/api/v1/payments/return",
            "created_at": created_at,
            "updated_at": refunded_at or created_at,
            "metadata": metadata,
            "source": {
                "type": "creditcard",
                "company": "mada",
                "name": "Sara A",
                "number": "4201-32XX-XXXX-1010",
                "message": "APPROVED" if status != "failed" else "INSUFFICIENT_FUNDS",
                "transaction_url": None,
            },
        }
        self.payments.append(payment)
        return payment

    def handle(self, request: Request) -> Response:
        expected = "Basic " + base64.b64encode(f"{SECRET_KEY}:".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return _json({"type": "authentication_error", "message": "Invalid credentials"}, 401)
        query = dict(request.args.items())
        self.queries.append(query)
        chosen = [p for p in self.payments if self._matches(p, query)]
        chosen.sort(key=lambda p: _at(p["created_at"]), reverse=True)
        page = int(query.get("page", "1"))
        total_pages = max(1, -(-len(chosen) // self.per_page))
        rows = chosen[(page - 1) * self.per_page : page * self.per_page]
        meta = {
            "current_page": page,
            "next_page": page + 1 if page < total_pages else None,
            "prev_page": page - 1 if page > 1 else None,
            "total_pages": total_pages,
            "total_count": len(chosen),
        }
        return _json({"payments": rows, "meta": meta})

    @staticmethod
    def _matches(payment: dict[str, Any], query: dict[str, str]) -> bool:
        created = _at(payment["created_at"])
        if "status" in query and payment["status"] != query["status"]:
            return False
        if "created[gt]" in query and not created > _at(query["created[gt]"]):
            return False
        return not ("created[lt]" in query and not created < _at(query["created[lt]"]))

    def calls(self, **having: str) -> list[dict[str, str]]:
        return [q for q in self.queries if all(q.get(k) == v for k, v in having.items())]


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _json(payload: dict[str, Any], status: int = 200) -> Response:
    return Response(json.dumps(payload), status=status, content_type="application/json")


def _sorted(records: list[SettlementRecord]) -> list[SettlementRecord]:
    return sorted(records, key=lambda r: (r.kind, r.reference))


async def test_settlements_of_a_day_follow_every_page_and_keep_only_money_movements(provider, fake) -> None:
    listing = PaymentListing(fake, per_page=2)
    # A saved-card payment made through the adapter: the listing echoes the metadata we sent.
    charged = await provider.create_payment(payment("pay_01jcard-1", token="token_frictionless"))
    ours = fake.payments[charged.reference]
    listing.payments.append({**ours, "created_at": "2026-11-22T08:15:00.123Z", "refunded_at": None})
    invoice = listing.add(
        "paid", "2026-11-22T23:59:59.999Z", amount=50_000, fee=1_150, invoice_id="c2d1f5a4-inv"
    )
    kwd = listing.add(
        "captured",
        "2026-11-22T00:00:00.000Z",
        amount=12_345,
        fee=310,
        currency="KWD",
        metadata={"payment_id": "pay_01jkwd-2", "escrow_id": "esc_9"},
    )
    same_day_refund = listing.add(
        "refunded",
        "2026-11-22T11:00:00.000Z",
        amount=20_000,
        fee=460,
        refunded=20_000,
        refunded_at="2026-11-22T17:30:00.000Z",
        metadata={"payment_id": "pay_01jsame-1"},
    )
    old_refund = listing.add(
        "refunded",
        "2026-11-17T09:00:00.000Z",
        amount=30_000,
        fee=690,
        refunded=10_000,
        refunded_at="2026-11-22T10:00:00.000Z",
    )
    # Not on the day, or no money moved:
    listing.add("failed", "2026-11-22T09:00:00.000Z")
    listing.add("initiated", "2026-11-22T09:30:00.000Z")
    listing.add("authorized", "2026-11-22T09:40:00.000Z")
    listing.add("voided", "2026-11-22T09:45:00.000Z")
    listing.add("paid", "2026-11-21T23:59:59.500Z", fee=230)  # inside the second asked for, the day before
    listing.add("paid", "2026-11-23T00:00:00.000Z", fee=230)  # the next day
    listing.add("refunded", "2026-11-19T09:00:00.000Z", refunded=500, refunded_at="2026-11-21T12:00:00.000Z")
    listing.add("refunded", "2026-11-20T09:00:00.000Z", refunded=700, refunded_at="2026-11-23T00:00:00.000Z")

    records = await provider.list_settlements(DAY)

    assert _sorted(records) == _sorted(
        [
            SettlementRecord(
                reference=charged.reference,
                kind="payment",
                amount=25_075,
                currency="SAR",
                fee=230,
                occurred_at=datetime(2026, 11, 22, 8, 15, 0, 123_000, tzinfo=UTC),
                merchant_reference="pay_01jcard-1",
            ),
            SettlementRecord(
                reference="invoice:c2d1f5a4-inv",  # the reference we store for a hosted-invoice payment
                kind="payment",
                amount=50_000,
                currency="SAR",
                fee=1_150,
                occurred_at=datetime(2026, 11, 22, 23, 59, 59, 999_000, tzinfo=UTC),
            ),
            SettlementRecord(
                reference=kwd["id"],
                kind="payment",
                amount=12_345,
                currency="KWD",
                fee=310,
                occurred_at=datetime(2026, 11, 22, tzinfo=UTC),
                merchant_reference="pay_01jkwd-2",
            ),
            SettlementRecord(
                reference=same_day_refund["id"],
                kind="payment",
                amount=20_000,
                currency="SAR",
                fee=460,
                occurred_at=datetime(2026, 11, 22, 11, tzinfo=UTC),
                merchant_reference="pay_01jsame-1",
            ),
            SettlementRecord(
                reference=same_day_refund["id"],
                kind="refund",
                amount=20_000,
                currency="SAR",
                fee=0,
                occurred_at=datetime(2026, 11, 22, 17, 30, tzinfo=UTC),
            ),
            SettlementRecord(
                reference=old_refund["id"],
                kind="refund",
                amount=10_000,
                currency="SAR",
                fee=0,
                occurred_at=datetime(2026, 11, 22, 10, tzinfo=UTC),
            ),
        ]
    )
    assert invoice["id"] not in {r.reference for r in records}
    # The day's payments: asked with the window, 9 of them on 5 pages, every page read once.
    window = {"created[gt]": "2026-11-21T23:59:59Z", "created[lt]": "2026-11-23T00:00:00Z"}
    day_pages = [q for q in listing.queries if "status" not in q]
    assert day_pages == [{**window, "page": str(n)} for n in range(1, 6)]
    # The refunds: every refunded payment created before the day's end (4 of them), on 2 pages.
    refund_pages = listing.calls(status="refunded")
    assert refund_pages == [
        {"status": "refunded", "created[lt]": "2026-11-23T00:00:00Z", "page": str(n)} for n in range(1, 3)
    ]
    assert len(listing.queries) == 7


async def test_settlements_of_a_quiet_day_are_empty_after_one_page_each(provider, fake) -> None:
    listing = PaymentListing(fake)
    listing.add("failed", "2026-11-22T09:00:00.000Z")

    assert await provider.list_settlements(DAY) == []
    assert [q["page"] for q in listing.queries] == ["1", "1"]


async def test_settlement_listing_retries_a_5xx_then_reads_on(provider, fake) -> None:
    listing = PaymentListing(fake, per_page=1)
    listing.add("paid", "2026-11-22T10:00:00.000Z", fee=230)
    listing.add("paid", "2026-11-22T11:00:00.000Z", fee=230)
    fake.fail_next("GET", "/v1/payments", 502)

    records = await provider.list_settlements(DAY)

    assert sorted(r.occurred_at.hour for r in records) == [10, 11]
    assert len(fake.calls("GET", "/v1/payments")) == 4  # the 502, two pages, the (empty) refund page


async def test_settlement_listing_gives_up_after_the_retries(provider, fake) -> None:
    PaymentListing(fake)
    fake.fail_next("GET", "/v1/payments", 503, times=3)

    with pytest.raises(ProviderUnavailable, match="after 3 attempt"):
        await provider.list_settlements(DAY)
    assert len(fake.calls("GET", "/v1/payments")) == 3


async def test_settlement_listing_refused_is_a_decline(fake) -> None:
    PaymentListing(fake)
    adapter = get_provider("moyasar", make_settings(fake.url, moyasar_secret_key="sk_test_wrong"))

    with pytest.raises(ProviderDeclined) as refused:
        await adapter.list_settlements(DAY)
    assert refused.value.decline_code == "authentication_error"
