"""Admin refunds of payments, decided through the escrow, sent back through the sandbox by the refund job."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from emanet.core.db import Database
from emanet.core.models import Job
from emanet.core.money import percentage_of
from emanet.ledger import accounts
from emanet.ledger.models import JournalEntry
from emanet.payments.models import PaymentRefund
from emanet.users.models import Role, User
from tests.conftest import bearer
from tests.factories import Factory
from tests.invariants import assert_ledger_invariants
from tests.payments.conftest import Live
from tests.payments.helpers import SUCCESS, balances, checkout, create_escrow, escrow_of, get_payment, started


async def paid_escrow(live: Live, factory: Factory) -> tuple[User, User, dict[str, Any], dict[str, Any]]:
    buyer, seller = await factory.user(), await factory.user()
    escrow = await create_escrow(live.http, buyer, seller)
    payment = await started(live.http, buyer, escrow["id"])
    await checkout(live.http, payment, SUCCESS)
    return buyer, seller, escrow, payment


async def entry(database: Database, reference: str) -> JournalEntry:
    async with database.transaction() as session:
        return (
            await session.execute(select(JournalEntry).where(JournalEntry.reference == reference))
        ).scalar_one()


async def test_full_refund_reverses_exactly_what_was_paid(
    live: Live, factory: Factory, database: Database, run_jobs: Any
) -> None:
    buyer, _seller, escrow, payment = await paid_escrow(live, factory)
    admin = await factory.user(role=Role.admin)
    total = escrow["fees"]["total_due"]["amount"]
    await run_jobs()  # the fee refresh, notifications…
    fee = (await get_payment(live.http, buyer, payment["id"]))["fee"]["amount"]
    assert fee == percentage_of(total, 290)  # the sandbox charges 2.9 %

    forbidden = await live.http.post(
        f"/api/v1/payments/{payment['id']}/refunds", headers=bearer(buyer), json={"reason": "changed my mind"}
    )
    assert forbidden.status_code == 403
    response = await live.http.post(
        f"/api/v1/payments/{payment['id']}/refunds",
        headers=bearer(admin),
        json={"reason": "seller cannot deliver"},
    )
    assert response.status_code == 202, response.text
    [refund] = response.json()
    assert (refund["amount"]["amount"], refund["status"], refund["requested_by"]) == (
        total,
        "pending",
        admin.id,
    )
    refunded_escrow = await escrow_of(live.http, buyer, escrow["id"])
    assert (refunded_escrow["status"], refunded_escrow["held"]["amount"]) == ("refunded", 0)
    assert (await entry(database, f"escrow:{escrow['id']}:refund")).amount == total

    await run_jobs()
    done = await get_payment(live.http, buyer, payment["id"])
    assert (done["status"], done["refunded"]["amount"]) == ("refunded", total)
    [listed] = (
        await live.http.get(f"/api/v1/payments/{payment['id']}/refunds", headers=bearer(buyer))
    ).json()
    assert listed["status"] == "succeeded" and listed["provider_reference"].startswith("re_sandbox_")
    clearing, fees, held = await balances(
        database,
        accounts.provider_clearing("sandbox"),
        accounts.provider_fees("sandbox"),
        accounts.escrow_account(escrow["id"]),
    )
    # captured, then the provider's fee and the whole capture went out again: only the fee is a cost
    assert (clearing, fees, held) == (-fee, fee, 0)
    again = await live.http.post(
        f"/api/v1/payments/{payment['id']}/refunds", headers=bearer(admin), json={"reason": "twice"}
    )
    assert again.status_code == 409 and again.json()["code"] == "payment_not_refundable"
    async with database.transaction() as session:
        dead = (await session.execute(select(Job).where(Job.status == "dead"))).scalars().all()
    assert dead == []
    await assert_ledger_invariants(database)


async def test_partial_refund_in_a_dispute(
    live: Live, factory: Factory, database: Database, run_jobs: Any
) -> None:
    buyer, seller, escrow, payment = await paid_escrow(live, factory)
    admin = await factory.user(role=Role.admin)
    total = escrow["fees"]["total_due"]["amount"]
    not_disputed = await live.http.post(
        f"/api/v1/payments/{payment['id']}/refunds",
        headers=bearer(admin),
        json={"amount": {"amount": 30_000, "currency": "TRY"}, "reason": "part"},
    )
    assert not_disputed.status_code == 409 and not_disputed.json()["code"] == "refund_not_allowed_by_escrow"
    disputed = await live.http.post(
        f"/api/v1/escrows/{escrow['id']}/disputes", headers=bearer(buyer), json={"reason": "not as described"}
    )
    assert disputed.status_code == 201, disputed.text
    too_much = await live.http.post(
        f"/api/v1/payments/{payment['id']}/refunds",
        headers=bearer(admin),
        json={"amount": {"amount": total + 1, "currency": "TRY"}, "reason": "x" * 5},
    )
    assert too_much.status_code == 422 and too_much.json()["code"] == "refund_exceeds_payment"

    response = await live.http.post(
        f"/api/v1/payments/{payment['id']}/refunds",
        headers=bearer(admin),
        json={"amount": {"amount": 30_000, "currency": "TRY"}, "reason": "lens scratched: 300 TRY back"},
    )
    assert response.status_code == 202, response.text
    assert [r["amount"]["amount"] for r in response.json()] == [30_000]
    settled = await escrow_of(live.http, buyer, escrow["id"])
    assert (settled["status"], settled["refunded"]["amount"], settled["held"]["amount"]) == (
        "partially_refunded",
        30_000,
        0,
    )
    assert (await entry(database, f"escrow:{escrow['id']}:refund")).amount == 30_000
    await run_jobs()
    done = await get_payment(live.http, buyer, payment["id"])
    assert (done["status"], done["refunded"]["amount"]) == ("partially_refunded", 30_000)
    seller_available, platform = await balances(
        database, accounts.user_available(seller.id), accounts.PLATFORM_FEES
    )
    assert seller_available + platform + 30_000 == total
    async with database.transaction() as session:
        rows = (await session.execute(select(PaymentRefund))).scalars().all()
    assert [(r.amount, r.status, r.escrow_reference) for r in rows] == [
        (30_000, "succeeded", f"escrow:{escrow['id']}:refund:sandbox")
    ]
    await assert_ledger_invariants(database)


async def test_cancelling_an_escrow_refunds_its_payments(
    live: Live, factory: Factory, database: Database, run_jobs: Any
) -> None:
    """A refund the escrow decides by itself (the buyer cancels a partly paid escrow) reaches the provider
    through the same job, split over the payments largest first."""
    buyer, seller = await factory.user(), await factory.user()
    escrow = await create_escrow(live.http, buyer, seller)
    small = await started(live.http, buyer, escrow["id"], amount={"amount": 10_000, "currency": "TRY"})
    await checkout(live.http, small, SUCCESS)
    large = await started(live.http, buyer, escrow["id"], amount={"amount": 50_000, "currency": "TRY"})
    await checkout(live.http, large, SUCCESS)
    cancelled = await live.http.post(
        f"/api/v1/escrows/{escrow['id']}/cancel", headers=bearer(buyer), json={"reason": "found it cheaper"}
    )
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    await run_jobs()
    assert (await get_payment(live.http, buyer, small["id"]))["status"] == "refunded"
    assert (await get_payment(live.http, buyer, large["id"]))["status"] == "refunded"
    async with database.transaction() as session:
        rows = (await session.execute(select(PaymentRefund).order_by(PaymentRefund.amount))).scalars().all()
    assert [(r.payment_id, r.amount, r.status) for r in rows] == [
        (small["id"], 10_000, "succeeded"),
        (large["id"], 50_000, "succeeded"),
    ]
    await assert_ledger_invariants(database)
