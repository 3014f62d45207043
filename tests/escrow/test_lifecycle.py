"""The escrow lifecycle through HTTP, with the ledger checked after each money movement."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select

from emanet.core.clock import FrozenClock
from emanet.core.db import Database
from emanet.core.models import Event, Job
from emanet.ledger import accounts
from emanet.ledger.service import balance
from tests.conftest import bearer
from tests.escrow.states import parties, run_sweep
from tests.factories import Factory, capture
from tests.invariants import assert_ledger_invariants


def escrow_body(buyer_id: str, seller_id: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "buyer_id": buyer_id,
        "seller_id": seller_id,
        "amount": {"amount": 100_000, "currency": "TRY"},
        "title": "Vintage camera",
        "category": "general",
        "market_type": "product",
    }
    body.update(overrides)
    return body


async def balances_of(database: Database, *codes: str, currency: str = "TRY") -> list[int]:
    async with database.transaction() as session:
        return [await balance(session, code, currency) for code in codes]


async def test_full_lifecycle_with_satisfaction_split(
    client: httpx.AsyncClient, factory: Factory, database: Database, clock: FrozenClock
) -> None:
    p = await parties(factory)
    created = await client.post(
        "/api/v1/escrows",
        headers=bearer(p.buyer),
        json=escrow_body(p.buyer.id, p.seller.id, fee_payer="split"),
    )
    assert created.status_code == 201, created.text
    escrow = created.json()
    assert escrow["number"].startswith("EM-2026-")
    assert escrow["status"] == "pending_payment"
    # 2.5% of 1,000.00 TRY = 25.00, split 50/50: the fee is shown before payment
    assert escrow["fees"]["platform_fee"] == {"amount": 2_500, "currency": "TRY"}
    assert escrow["fees"]["total_due"]["amount"] == 101_250
    assert escrow["fees"]["seller_receives"]["amount"] == 98_750

    accepted = await client.post(f"/api/v1/escrows/{escrow['id']}/accept", headers=bearer(p.seller))
    assert accepted.status_code == 200 and accepted.json()["accepted_at"]

    await capture(database, escrow["id"], 50_000)
    part = (await client.get(f"/api/v1/escrows/{escrow['id']}", headers=bearer(p.buyer))).json()
    assert part["status"] == "partially_funded"
    assert part["remaining_due"]["amount"] == 51_250
    await capture(database, escrow["id"], 51_250)
    funded = (await client.get(f"/api/v1/escrows/{escrow['id']}", headers=bearer(p.buyer))).json()
    assert funded["status"] == "funded"
    assert funded["held"]["amount"] == 101_250
    await assert_ledger_invariants(database)
    held = {}
    for who in (p.buyer, p.seller):
        [wallet] = (await client.get("/api/v1/wallets", headers=bearer(who))).json()
        held[who.id] = (wallet["currency"], wallet["held_as_buyer"], wallet["held_as_seller"])
    assert held == {p.buyer.id: ("TRY", 101_250, 0), p.seller.id: ("TRY", 0, 101_250)}

    delivered = await client.post(
        f"/api/v1/escrows/{escrow['id']}/deliver",
        headers=bearer(p.seller),
        json={"tracking_number": "TR123", "carrier": "PTT"},
    )
    assert delivered.status_code == 200, delivered.text
    too_early = await client.post(
        f"/api/v1/escrows/{escrow['id']}/release", headers=bearer(p.buyer), json={"rating": 3}
    )
    assert too_early.status_code == 409
    assert too_early.json()["code"] == "hold_period"

    clock.advance(hours=24)
    released = await client.post(
        f"/api/v1/escrows/{escrow['id']}/release", headers=bearer(p.buyer), json={"rating": 3}
    )
    assert released.status_code == 200, released.text
    assert released.json()["status"] == "released"
    # rating 3: 10% penalty of the seller's 98,750 goes back to the buyer's wallet
    seller, platform, buyer_wallet, held = await balances_of(
        database,
        accounts.user_available(p.seller.id),
        accounts.PLATFORM_FEES,
        accounts.user_available(p.buyer.id),
        accounts.escrow_account(escrow["id"]),
    )
    assert (seller, platform, buyer_wallet, held) == (88_875, 2_500, 9_875, 0)
    assert seller + platform + buyer_wallet == 101_250
    await assert_ledger_invariants(database)

    wallets = (await client.get("/api/v1/wallets", headers=bearer(p.seller))).json()
    assert wallets == [
        {
            "currency": "TRY",
            "available": 88_875,
            "held_as_buyer": 0,
            "held_as_seller": 0,
            "pending_payout": 0,
            "display": None,
        }
    ]
    entries = (await client.get("/api/v1/wallets/TRY/entries", headers=bearer(p.seller))).json()
    assert [(e["amount"], e["running_balance"]) for e in entries["data"]] == [(88_875, 88_875)]

    activity = (
        await client.get(
            f"/api/v1/escrows/{escrow['id']}/activity",
            headers=bearer(p.buyer),
        )
    ).json()
    actions = [a["action"] for a in activity]
    assert actions[0] == "created" and "accepted" in actions and actions[-1] == "released"
    assert activity[0]["ip"] == "203.0.113.7" and activity[0]["actor_role"] == "buyer"
    async with database.transaction() as session:
        types = (
            (
                await session.execute(
                    select(Event.type).where(Event.object_id == escrow["id"]).order_by(Event.id)
                )
            )
            .scalars()
            .all()
        )
    assert types == [
        "escrow.created",
        "escrow.accepted",
        "escrow.partially_funded",
        "escrow.funded",
        "escrow.delivered",
        "escrow.released",
    ]


async def test_digital_goods_are_delivered_on_funding_and_auto_released(
    client: httpx.AsyncClient, factory: Factory, database: Database, clock: FrozenClock, settings: Any
) -> None:
    p = await parties(factory)
    created = (
        await client.post(
            "/api/v1/escrows",
            headers=bearer(p.buyer),
            json=escrow_body(p.buyer.id, p.seller.id, category="digital_goods"),
        )
    ).json()
    assert created["digital"] is True
    await capture(database, created["id"], created["fees"]["total_due"]["amount"])
    escrow = (await client.get(f"/api/v1/escrows/{created['id']}", headers=bearer(p.buyer))).json()
    assert escrow["status"] == "delivered"
    clock.advance(days=6)
    await run_sweep(database, settings, "auto_release")
    assert (await client.get(f"/api/v1/escrows/{created['id']}", headers=bearer(p.buyer))).json()[
        "status"
    ] == "delivered"
    clock.advance(days=1, seconds=1)
    await run_sweep(database, settings, "auto_release")
    released = (await client.get(f"/api/v1/escrows/{created['id']}", headers=bearer(p.buyer))).json()
    assert released["status"] == "released"
    assert released["released"]["amount"] == released["fees"]["total_due"]["amount"]
    await assert_ledger_invariants(database)


async def test_cancel_after_funding_refunds_through_the_providers(
    client: httpx.AsyncClient, factory: Factory, database: Database
) -> None:
    p = await parties(factory)
    created = (
        await client.post(
            "/api/v1/escrows", headers=bearer(p.buyer), json=escrow_body(p.buyer.id, p.seller.id)
        )
    ).json()
    total = created["fees"]["total_due"]["amount"]
    await capture(database, created["id"], 60_000, provider="stripe")
    await capture(database, created["id"], total - 60_000, provider="sandbox")
    cancelled = await client.post(
        f"/api/v1/escrows/{created['id']}/cancel", headers=bearer(p.seller), json={"reason": "out of stock"}
    )
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "refunded"
    stripe, sandbox, held = await balances_of(
        database,
        accounts.provider_clearing("stripe"),
        accounts.provider_clearing("sandbox"),
        accounts.escrow_account(created["id"]),
    )
    assert (stripe, sandbox, held) == (0, 0, 0)
    async with database.transaction() as session:
        jobs = (
            (await session.execute(select(Job).where(Job.kind == "payments.refund_for_escrow")))
            .scalars()
            .all()
        )
    assert sorted((j.payload["provider"], j.payload["amount"]) for j in jobs) == [
        ("sandbox", total - 60_000),
        ("stripe", 60_000),
    ]
    await assert_ledger_invariants(database)


async def test_unfunded_escrow_expires_and_partial_payment_is_refunded(
    client: httpx.AsyncClient, factory: Factory, database: Database, clock: FrozenClock, settings: Any
) -> None:
    p = await parties(factory)
    created = (
        await client.post(
            "/api/v1/escrows", headers=bearer(p.buyer), json=escrow_body(p.buyer.id, p.seller.id)
        )
    ).json()
    await capture(database, created["id"], 10_000)
    clock.advance(hours=settings.payment_expiry_hours + 1)
    await run_sweep(database, settings, "expire")
    escrow = (await client.get(f"/api/v1/escrows/{created['id']}", headers=bearer(p.buyer))).json()
    assert escrow["status"] == "expired"
    assert escrow["refunded"]["amount"] == 10_000
    # a payment that lands after the escrow closed goes straight back
    await capture(database, created["id"], 5_000)
    late = (await client.get(f"/api/v1/escrows/{created['id']}", headers=bearer(p.buyer))).json()
    assert (
        late["status"] == "expired" and late["refunded"]["amount"] == 15_000 and late["held"]["amount"] == 0
    )
    await assert_ledger_invariants(database)


async def test_dispute_freezes_and_admin_splits(
    client: httpx.AsyncClient, factory: Factory, database: Database, clock: FrozenClock, settings: Any
) -> None:
    p = await parties(factory)
    created = (
        await client.post(
            "/api/v1/escrows", headers=bearer(p.buyer), json=escrow_body(p.buyer.id, p.seller.id)
        )
    ).json()
    await capture(database, created["id"], created["fees"]["total_due"]["amount"])
    await client.post(f"/api/v1/escrows/{created['id']}/deliver", headers=bearer(p.seller), json={})
    opened = await client.post(
        f"/api/v1/escrows/{created['id']}/disputes",
        headers=bearer(p.buyer),
        json={"reason": "not_as_described", "description": "Lens is scratched"},
    )
    assert opened.status_code == 201, opened.text
    clock.advance(days=30)
    await run_sweep(database, settings, "auto_release")  # frozen: no auto-release while disputed
    release = await client.post(f"/api/v1/escrows/{created['id']}/release", headers=bearer(p.buyer))
    assert release.status_code == 403 and release.json()["code"] == "transition_not_allowed"
    await run_sweep(database, settings, "escalate")
    async with database.transaction() as session:
        escalated = (
            await session.execute(select(Event).where(Event.type == "escrow.dispute_escalated"))
        ).all()
    assert len(escalated) == 1
    split = await client.put(
        f"/api/v1/escrows/{created['id']}/status",
        headers=bearer(p.admin),
        json={"status": "partially_refunded", "buyer_refund": 40_000},
    )
    assert split.status_code == 200, split.text
    body = split.json()
    assert body["refunded"]["amount"] == 40_000
    assert body["released"]["amount"] + body["refunded"]["amount"] == body["fees"]["total_due"]["amount"]
    await assert_ledger_invariants(database)


async def test_dispute_window_closes(
    client: httpx.AsyncClient, factory: Factory, database: Database, clock: FrozenClock
) -> None:
    p = await parties(factory)
    created = (
        await client.post(
            "/api/v1/escrows",
            headers=bearer(p.buyer),
            json=escrow_body(p.buyer.id, p.seller.id, inspection_days=30),
        )
    ).json()
    await capture(database, created["id"], created["fees"]["total_due"]["amount"])
    await client.post(f"/api/v1/escrows/{created['id']}/deliver", headers=bearer(p.seller), json={})
    clock.advance(days=8)
    late = await client.post(
        f"/api/v1/escrows/{created['id']}/disputes", headers=bearer(p.buyer), json={"reason": "late"}
    )
    assert late.status_code == 409 and late.json()["code"] == "dispute_window_closed"


@pytest.mark.parametrize(
    ("overrides", "status", "code"),
    [
        ({"amount": {"amount": 10.5, "currency": "TRY"}}, 422, "validation_error"),
        ({"amount": {"amount": -5, "currency": "TRY"}}, 422, "validation_error"),
        ({"amount": {"amount": 100, "currency": "XYZ"}}, 422, "validation_error"),
        ({"amount": {"amount": 500, "currency": "TRY"}}, 422, "amount_out_of_range"),
        ({"amount": {"amount": 500_000, "currency": "CHF"}}, 422, "currency_not_supported"),
        ({"category": "weapons"}, 422, "unknown_category"),
        ({"surprise": True}, 422, "validation_error"),
        ({"market_type": "auction"}, 422, "validation_error"),
    ],
)
async def test_create_validation(
    overrides: dict[str, Any], status: int, code: str, client: httpx.AsyncClient, factory: Factory
) -> None:
    p = await parties(factory)
    response = await client.post(
        "/api/v1/escrows", headers=bearer(p.buyer), json=escrow_body(p.buyer.id, p.seller.id, **overrides)
    )
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == code


async def test_create_rules_on_parties(client: httpx.AsyncClient, factory: Factory) -> None:
    p = await parties(factory)
    same = await client.post(
        "/api/v1/escrows", headers=bearer(p.buyer), json=escrow_body(p.buyer.id, p.buyer.id)
    )
    assert same.json()["code"] == "same_party"
    suspended = await factory.user(status="suspended")
    response = await client.post(
        "/api/v1/escrows", headers=bearer(p.buyer), json=escrow_body(p.buyer.id, suspended.id)
    )
    assert response.json()["code"] == "seller_suspended"
    stranger = await factory.user()
    response = await client.post(
        "/api/v1/escrows", headers=bearer(stranger), json=escrow_body(p.buyer.id, p.seller.id)
    )
    assert response.status_code == 403
    unverified = await factory.user(verified=False)
    big = escrow_body(unverified.id, p.seller.id, amount={"amount": 6_000_000, "currency": "TRY"})
    response = await client.post("/api/v1/escrows", headers=bearer(unverified), json=big)
    assert response.json()["code"] == "verification_required"
    docs = await client.post(
        "/api/v1/escrows",
        headers=bearer(p.buyer),
        json=escrow_body(p.buyer.id, p.seller.id, category="electronics"),
    )
    assert docs.status_code == 201 and docs.json()["status"] == "pending_payment"


async def test_strangers_get_404(client: httpx.AsyncClient, factory: Factory) -> None:
    p = await parties(factory)
    created = (
        await client.post(
            "/api/v1/escrows", headers=bearer(p.buyer), json=escrow_body(p.buyer.id, p.seller.id)
        )
    ).json()
    stranger = await factory.user()
    for method, path in (("GET", ""), ("GET", "/activity"), ("POST", "/cancel"), ("POST", "/release")):
        response = await client.request(
            method, f"/api/v1/escrows/{created['id']}{path}", headers=bearer(stranger)
        )
        assert response.status_code == 404, (path, response.text)


async def test_delivery_document_required_by_category(
    client: httpx.AsyncClient, factory: Factory, database: Database
) -> None:
    p = await parties(factory)
    created = (
        await client.post(
            "/api/v1/escrows",
            headers=bearer(p.buyer),
            json=escrow_body(p.buyer.id, p.seller.id, category="electronics"),
        )
    ).json()
    await capture(database, created["id"], created["fees"]["total_due"]["amount"])
    missing = await client.post(f"/api/v1/escrows/{created['id']}/deliver", headers=bearer(p.seller), json={})
    assert missing.json()["code"] == "delivery_document_required"
    ok = await client.post(
        f"/api/v1/escrows/{created['id']}/deliver",
        headers=bearer(p.seller),
        json={"document_ids": ["doc_01"]},
    )
    assert ok.status_code == 200


async def test_admin_override_needs_admin_and_reason(
    client: httpx.AsyncClient, factory: Factory, database: Database
) -> None:
    p = await parties(factory)
    support = await factory.user(role="support")
    created = (
        await client.post(
            "/api/v1/escrows", headers=bearer(p.buyer), json=escrow_body(p.buyer.id, p.seller.id)
        )
    ).json()
    await capture(database, created["id"], created["fees"]["total_due"]["amount"])
    path = f"/api/v1/admin/escrows/{created['id']}/override"
    assert (
        await client.post(path, headers=bearer(support), json={"action": "release", "reason": "x" * 5})
    ).status_code == 403
    assert (await client.post(path, headers=bearer(p.admin), json={"action": "release"})).status_code == 422
    forced = await client.post(
        path, headers=bearer(p.admin), json={"action": "release", "reason": "buyer confirmed"}
    )
    assert forced.status_code == 200, forced.text
    assert forced.json()["status"] == "released"
    detail = (await client.get(f"/api/v1/admin/escrows/{created['id']}", headers=bearer(support))).json()
    assert [line["reference"] for line in detail["ledger"]][-1] == f"escrow:{created['id']}:release"
    await assert_ledger_invariants(database)
