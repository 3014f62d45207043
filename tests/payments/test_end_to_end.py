"""The whole way of the money, over real HTTP against a live server: escrow → payment through the sandbox's
hosted checkout with a 3-D Secure card → webhook → funded → delivered → released after the hold → payout to
the seller's IBAN → seller wallet and ledger."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from emanet.core.clock import FrozenClock
from emanet.core.db import Database
from emanet.core.money import percentage_of
from emanet.ledger import accounts
from emanet.ledger.models import JournalEntry
from tests.conftest import bearer
from tests.factories import Factory
from tests.invariants import assert_ledger_invariants
from tests.payments.conftest import Live
from tests.payments.helpers import (
    THREE_D_SECURE,
    balances,
    checkout,
    create_escrow,
    escrow_of,
    get_payment,
    started,
)
from tests.payments.test_payouts import PAID_IBAN, set_destination, wallet


async def test_escrow_paid_with_three_d_secure_released_and_paid_out(
    live: Live, factory: Factory, database: Database, clock: FrozenClock, run_jobs: Any
) -> None:
    buyer = await factory.user()
    seller = await factory.user(phone_verified_at=clock.now())
    http = live.http

    # 1. the buyer opens an escrow and pays it through the sandbox's hosted page, 3-D Secure included
    escrow = await create_escrow(http, buyer, seller, amount=250_000)
    total = escrow["fees"]["total_due"]["amount"]
    platform_fee = escrow["fees"]["platform_fee"]["amount"]
    assert total == 250_000 + platform_fee  # the buyer pays the fee by default
    payment = await started(http, buyer, escrow["id"])
    assert (payment["status"], payment["next_action"]["type"]) == ("requires_action", "redirect")
    returned = await checkout(http, payment, THREE_D_SECURE, code="123456")
    assert returned["status"] == ["succeeded"]

    # 2. the sandbox's signed webhook came back over HTTP and funded the escrow
    paid = await get_payment(http, buyer, payment["id"])
    assert (paid["status"], paid["captured"]["amount"], paid["card"]["last4"]) == ("succeeded", total, "3220")
    funded = await escrow_of(http, seller, escrow["id"])
    assert (funded["status"], funded["held"]["amount"]) == ("funded", total)

    # 3. delivered, then released once the minimum hold is over
    delivered = await http.post(
        f"/api/v1/escrows/{escrow['id']}/deliver",
        headers=bearer(seller),
        json={"tracking_number": "TR-778", "carrier": "PTT"},
    )
    assert delivered.status_code == 200, delivered.text
    early = await http.post(
        f"/api/v1/escrows/{escrow['id']}/release", headers=bearer(buyer), json={"rating": 5}
    )
    assert early.status_code == 409 and early.json()["code"] == "hold_period"
    clock.advance(hours=25)
    released = await http.post(
        f"/api/v1/escrows/{escrow['id']}/release", headers=bearer(buyer), json={"rating": 5}
    )
    assert released.status_code == 200 and released.json()["status"] == "released", released.text
    before_payout = await wallet(http, seller)
    assert (before_payout["available"], before_payout["pending_payout"]) == (250_000, 0)

    # 4. the seller withdraws everything to their IBAN (destination set with an OTP step-up)
    assert (await set_destination(http, seller, PAID_IBAN)).status_code == 200
    payout = await http.post(
        "/api/v1/payouts", headers=bearer(seller), json={"amount": {"amount": 250_000, "currency": "TRY"}}
    )
    assert payout.status_code == 201, payout.text
    assert payout.json()["status"] == "processing"
    await run_jobs()  # the sandbox's bank settles and calls our webhook; fee refresh; notifications
    settled = (await http.get(f"/api/v1/payouts/{payout.json()['id']}", headers=bearer(seller))).json()
    assert settled["status"] == "paid"

    # 5. the seller's wallet and the ledger
    after = await wallet(http, seller)
    assert (after["available"], after["pending_payout"], after["held_as_seller"]) == (0, 0, 0)
    fee = percentage_of(total, 290)  # what the sandbox charged for the card payment
    clearing, provider_fees, platform, held = await balances(
        database,
        accounts.provider_clearing("sandbox"),
        accounts.provider_fees("sandbox"),
        accounts.PLATFORM_FEES,
        accounts.escrow_account(escrow["id"]),
    )
    assert (held, platform, provider_fees) == (0, platform_fee, fee)
    assert clearing == total - fee - 250_000  # in from the buyer, out as the fee and to the seller's bank
    assert (await get_payment(http, buyer, payment["id"]))["fee"]["amount"] == fee
    async with database.transaction() as session:
        references = (
            (await session.execute(select(JournalEntry.reference).order_by(JournalEntry.id))).scalars().all()
        )
    payout_id = payout.json()["id"]
    # (the fee is learnt by a background refresh after the webhook, so its entry comes whenever that ran)
    assert sorted(references) == sorted(
        [
            f"payment:{payment['id']}:capture",
            f"payment:{payment['id']}:fee",
            f"escrow:{escrow['id']}:release",
            f"payout:{payout_id}:request",
            f"payout:{payout_id}:settle",
        ]
    )
    await assert_ledger_invariants(database)
