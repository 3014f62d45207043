"""Paying an escrow through the sandbox's hosted checkout, over real HTTP: test cards, 3-D Secure, partial
payments, retries, and who may pay what."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from emanet.core.db import Database
from emanet.core.models import Event
from emanet.core.money import percentage_of
from emanet.ledger import accounts
from emanet.ledger.models import JournalEntry
from emanet.payments.models import PaymentAttempt
from emanet.providers.sandbox import FEE_BASIS_POINTS
from emanet.users.models import User
from tests.conftest import bearer
from tests.factories import Factory
from tests.invariants import assert_ledger_invariants
from tests.payments.conftest import Live
from tests.payments.helpers import (
    DECLINED,
    INSUFFICIENT,
    SUCCESS,
    THREE_D_SECURE,
    balances,
    checkout,
    create_escrow,
    escrow_of,
    get_payment,
    start_payment,
    started,
)


async def parties(factory: Factory) -> tuple[User, User]:
    return await factory.user(), await factory.user()


async def test_success_card_funds_the_escrow(live: Live, factory: Factory, database: Database) -> None:
    buyer, seller = await parties(factory)
    escrow = await create_escrow(live.http, buyer, seller)
    total = escrow["fees"]["total_due"]["amount"]
    payment = await started(live.http, buyer, escrow["id"])
    assert payment["status"] == "requires_action"
    assert payment["amount"] == {"amount": total, "currency": "TRY"}
    assert payment["next_action"]["url"].startswith(f"{live.url}/sandbox/checkout/")

    returned = await checkout(live.http, payment, SUCCESS)
    assert returned["status"] == ["succeeded"]
    paid = await get_payment(live.http, buyer, payment["id"])
    assert paid["status"] == "succeeded"
    assert paid["captured"]["amount"] == total
    assert paid["card"] == {"brand": "visa", "last4": "4242"}
    assert paid["next_action"] is None
    funded = await escrow_of(live.http, buyer, escrow["id"])
    assert funded["status"] == "funded"
    assert funded["held"]["amount"] == total
    assert [(p["id"], p["status"]) for p in funded["payments"]] == [(payment["id"], "succeeded")]
    assert [line["reference"] for line in funded["ledger"]] == [f"payment:{payment['id']}:capture"]
    # The sandbox's webhook says what it charged, so the fee is booked with the capture.
    fee = percentage_of(total, FEE_BASIS_POINTS)
    clearing, held, fees = await balances(
        database,
        accounts.provider_clearing("sandbox"),
        accounts.escrow_account(escrow["id"]),
        accounts.provider_fees("sandbox"),
    )
    assert (clearing, held, fees) == (total - fee, total, fee)
    async with database.transaction() as session:
        events = (
            (await session.execute(select(Event.type).where(Event.object_id == payment["id"])))
            .scalars()
            .all()
        )
    assert events == ["payment.succeeded"]
    await assert_ledger_invariants(database)


@pytest.mark.parametrize(
    ("card", "code", "failure_code"),
    [
        (DECLINED, None, "card_declined"),
        (INSUFFICIENT, None, "insufficient_funds"),
        (THREE_D_SECURE, "000000", "three_d_secure_failed"),
    ],
)
async def test_failed_cards_leave_the_escrow_unpaid(
    live: Live, factory: Factory, database: Database, card: str, code: str | None, failure_code: str
) -> None:
    buyer, seller = await parties(factory)
    escrow = await create_escrow(live.http, buyer, seller)
    payment = await started(live.http, buyer, escrow["id"])
    returned = await checkout(live.http, payment, card, code=code)
    assert returned["status"] == ["failed"]
    failed = await get_payment(live.http, buyer, payment["id"])
    assert (failed["status"], failed["failure_code"]) == ("failed", failure_code)
    assert failed["captured"]["amount"] == 0
    unpaid = await escrow_of(live.http, buyer, escrow["id"])
    assert (unpaid["status"], unpaid["held"]["amount"], unpaid["ledger"]) == ("pending_payment", 0, [])
    await assert_ledger_invariants(database)


async def test_three_d_secure_with_the_right_code(live: Live, factory: Factory, database: Database) -> None:
    buyer, seller = await parties(factory)
    escrow = await create_escrow(live.http, buyer, seller)
    payment = await started(live.http, buyer, escrow["id"])
    assert (await checkout(live.http, payment, THREE_D_SECURE, code="123456"))["status"] == ["succeeded"]
    assert (await get_payment(live.http, buyer, payment["id"]))["card"]["last4"] == "3220"
    assert (await escrow_of(live.http, buyer, escrow["id"]))["status"] == "funded"
    await assert_ledger_invariants(database)


async def test_partial_payment_then_the_rest(live: Live, factory: Factory, database: Database) -> None:
    buyer, seller = await parties(factory)
    escrow = await create_escrow(live.http, buyer, seller)
    total = escrow["fees"]["total_due"]["amount"]
    first = await started(live.http, buyer, escrow["id"], amount={"amount": 40_000, "currency": "TRY"})
    await checkout(live.http, first, SUCCESS)
    part = await escrow_of(live.http, buyer, escrow["id"])
    assert (part["status"], part["held"]["amount"], part["remaining_due"]["amount"]) == (
        "partially_funded",
        40_000,
        total - 40_000,
    )

    too_much = await start_payment(
        live.http, buyer, escrow["id"], amount={"amount": total, "currency": "TRY"}
    )
    assert too_much.status_code == 422
    assert too_much.json()["code"] == "amount_exceeds_remaining_due"
    assert too_much.json()["remaining_due"] == total - 40_000

    rest = await started(live.http, buyer, escrow["id"])  # no amount: the remaining due
    assert rest["amount"]["amount"] == total - 40_000
    await checkout(live.http, rest, THREE_D_SECURE, code="123456")
    funded = await escrow_of(live.http, buyer, escrow["id"])
    assert (funded["status"], funded["held"]["amount"]) == ("funded", total)
    assert sorted(p["amount"]["amount"] for p in funded["payments"]) == sorted([40_000, total - 40_000])
    paid_again = await start_payment(live.http, buyer, escrow["id"])
    assert paid_again.status_code == 409 and paid_again.json()["code"] == "escrow_not_payable"
    await assert_ledger_invariants(database)


async def test_only_the_buyer_may_pay(live: Live, factory: Factory, database: Database) -> None:
    buyer, seller = await parties(factory)
    stranger = await factory.user()
    escrow = await create_escrow(live.http, buyer, seller)
    for user in (seller, stranger):
        response = await start_payment(live.http, user, escrow["id"])
        assert response.status_code == 404, response.text
    wrong_currency = await start_payment(
        live.http, buyer, escrow["id"], amount={"amount": 500, "currency": "USD"}
    )
    assert wrong_currency.json()["code"] == "currency_mismatch"
    float_amount = await start_payment(
        live.http, buyer, escrow["id"], amount={"amount": 10.5, "currency": "TRY"}
    )
    assert float_amount.status_code == 422
    unknown = await start_payment(live.http, buyer, escrow["id"], provider="nopay")
    assert unknown.status_code == 422 and unknown.json()["code"] == "unknown_provider"
    not_configured = await start_payment(live.http, buyer, escrow["id"], provider="stripe")
    assert not_configured.json()["code"] == "provider_not_configured"
    payment = await started(live.http, buyer, escrow["id"])
    for user in (stranger,):
        assert (
            await live.http.get(f"/api/v1/payments/{payment['id']}", headers=bearer(user))
        ).status_code == 404
    # the seller sees the payments of their escrow
    assert (await get_payment(live.http, seller, payment["id"]))["id"] == payment["id"]
    await assert_ledger_invariants(database)


async def test_retry_after_a_decline_uses_a_new_attempt(
    live: Live, factory: Factory, database: Database, settings: object
) -> None:
    buyer, seller = await parties(factory)
    escrow = await create_escrow(live.http, buyer, seller)
    payment = await started(live.http, buyer, escrow["id"])
    not_yet = await live.http.post(f"/api/v1/payments/{payment['id']}/retry", headers=bearer(buyer))
    assert not_yet.status_code == 409 and not_yet.json()["code"] == "payment_not_retryable"

    await checkout(live.http, payment, DECLINED)
    retried = await live.http.post(f"/api/v1/payments/{payment['id']}/retry", headers=bearer(buyer))
    assert retried.status_code == 200, retried.text
    second = retried.json()
    assert (second["status"], second["attempt"], second["failure_code"]) == ("requires_action", 2, None)
    assert second["next_action"]["url"] != payment["next_action"]["url"]  # a new provider attempt
    await checkout(live.http, second, INSUFFICIENT)
    third = (await live.http.post(f"/api/v1/payments/{payment['id']}/retry", headers=bearer(buyer))).json()
    assert third["attempt"] == 3
    await checkout(live.http, third, SUCCESS)
    assert (await get_payment(live.http, buyer, payment["id"]))["status"] == "succeeded"
    assert (await escrow_of(live.http, buyer, escrow["id"]))["status"] == "funded"
    async with database.transaction() as session:
        attempts = (
            await session.execute(
                select(PaymentAttempt.key, PaymentAttempt.status)
                .where(PaymentAttempt.payment_id == payment["id"])
                .order_by(PaymentAttempt.number)
            )
        ).all()
        captures = (
            await session.execute(
                select(func.count())
                .select_from(JournalEntry)
                .where(JournalEntry.reference.like("payment:%:capture"))
            )
        ).scalar_one()
    assert attempts == [
        (f"{payment['id']}-1", "failed"),
        (f"{payment['id']}-2", "failed"),
        (f"{payment['id']}-3", "succeeded"),
    ]
    assert captures == 1
    await assert_ledger_invariants(database)


async def test_retries_are_bounded(live: Live, factory: Factory, database: Database) -> None:
    buyer, seller = await parties(factory)
    escrow = await create_escrow(live.http, buyer, seller)
    payment = await started(live.http, buyer, escrow["id"])
    await checkout(live.http, payment, DECLINED)
    for _ in range(2):
        again = (
            await live.http.post(f"/api/v1/payments/{payment['id']}/retry", headers=bearer(buyer))
        ).json()
        await checkout(live.http, again, DECLINED)
    limit = await live.http.post(f"/api/v1/payments/{payment['id']}/retry", headers=bearer(buyer))
    assert limit.status_code == 409 and limit.json()["code"] == "retry_limit_reached"
    stranger = await factory.user()
    assert (
        await live.http.post(f"/api/v1/payments/{payment['id']}/retry", headers=bearer(stranger))
    ).status_code == 404
    await assert_ledger_invariants(database)


async def test_verify_by_reference_confirms_with_the_provider(
    live: Live, factory: Factory, database: Database
) -> None:
    buyer, seller = await parties(factory)
    escrow = await create_escrow(live.http, buyer, seller)
    payment = await started(live.http, buyer, escrow["id"])
    returned = await checkout(live.http, payment, SUCCESS)
    # the browser comes back with our attempt key; the provider reference works too
    for reference in (returned["payment_id"][0], payment["provider_reference"]):
        verified = await live.http.get(
            f"/api/v1/payments/verify/{reference}", headers=bearer(buyer), params={"status": "succeeded"}
        )
        assert verified.status_code == 200, verified.text
        assert (verified.json()["id"], verified.json()["status"]) == (payment["id"], "succeeded")
    missing = await live.http.get("/api/v1/payments/verify/ch_sandbox_nope", headers=bearer(buyer))
    assert missing.status_code == 404
    await assert_ledger_invariants(database)


async def test_payment_methods(live: Live) -> None:
    response = await live.http.get("/api/v1/payment-methods", params={"currency": "TRY", "country": "TR"})
    assert response.status_code == 200
    assert response.json() == {
        "currency": "TRY",
        "country": "TR",
        "methods": [{"method": "card", "providers": ["sandbox"]}],
    }
    bad = await live.http.get("/api/v1/payment-methods", params={"currency": "ZZZ"})
    assert bad.status_code == 422
