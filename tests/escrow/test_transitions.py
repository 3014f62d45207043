"""Every allowed transition works and every other pair is refused — generated from the one table."""

from __future__ import annotations

import itertools

import httpx
import pytest

from emanet.core.clock import FrozenClock
from emanet.core.db import Database
from emanet.escrow.models import EscrowStatus as S
from emanet.escrow.rules import ADMIN, BUYER, SELLER, SYSTEM, TRANSITIONS, allowed_targets
from tests.conftest import bearer
from tests.escrow.states import escrow_in, parties, run_sweep
from tests.factories import Factory, capture
from tests.invariants import assert_ledger_invariants

ALLOWED = sorted(TRANSITIONS, key=lambda pair: (pair[0].value, pair[1].value))
DISALLOWED = [(a, b) for a, b in itertools.product(S, S) if (a, b) not in TRANSITIONS]
PARAMS = {
    S.disputed: {"reason": "damaged"},
    S.released: {"rating": 4},
    S.partially_refunded: {"buyer_refund": 1000},
}


@pytest.mark.parametrize(("source", "target"), ALLOWED, ids=[f"{a}->{b}" for a, b in ALLOWED])
async def test_allowed_transition(
    source: S,
    target: S,
    client: httpx.AsyncClient,
    factory: Factory,
    database: Database,
    clock: FrozenClock,
    settings: object,
) -> None:
    p = await parties(factory)
    escrow = await escrow_in(source, database, p)
    who = TRANSITIONS[(source, target)]
    clock.advance(hours=25)  # past the minimum hold
    if who == {SYSTEM}:
        if target == S.expired:
            clock.advance(days=30)
            await run_sweep(database, settings, "expire")
        else:  # funding moves: a provider captured money
            await capture(
                database,
                escrow.id,
                escrow.total_due - escrow.funded_amount if target == S.funded else escrow.total_due // 2,
            )
        response = await client.get(f"/api/v1/escrows/{escrow.id}", headers=bearer(p.buyer))
    else:
        user = {BUYER: p.buyer, SELLER: p.seller, ADMIN: p.admin}[sorted(who - {SYSTEM})[0]]
        response = await client.put(
            f"/api/v1/escrows/{escrow.id}/status",
            headers=bearer(user),
            json={"status": target.value, **PARAMS.get(target, {})},
        )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == target.value
    await assert_ledger_invariants(database)


@pytest.mark.parametrize(("source", "target"), DISALLOWED, ids=[f"{a}->{b}" for a, b in DISALLOWED])
async def test_disallowed_transition_is_refused(
    source: S, target: S, client: httpx.AsyncClient, factory: Factory, database: Database
) -> None:
    p = await parties(factory)
    escrow = await escrow_in(source, database, p)
    response = await client.put(
        f"/api/v1/escrows/{escrow.id}/status",
        headers=bearer(p.admin),
        json={"status": target.value, **PARAMS.get(target, {})},
    )
    assert response.status_code == 409, response.text
    problem = response.json()
    assert problem["code"] == "illegal_transition"
    assert problem["allowed"] == allowed_targets(source)
    after = await client.get(f"/api/v1/escrows/{escrow.id}", headers=bearer(p.admin))
    assert after.json()["status"] == source.value


PARTY_MOVES = [
    (a, b)
    for a, b in ALLOWED
    if TRANSITIONS[(a, b)] - {SYSTEM} and {BUYER, SELLER, ADMIN} - TRANSITIONS[(a, b)]
]


@pytest.mark.parametrize(("source", "target"), PARTY_MOVES, ids=[f"{a}->{b}" for a, b in PARTY_MOVES])
async def test_wrong_party_is_refused(
    source: S, target: S, client: httpx.AsyncClient, factory: Factory, database: Database
) -> None:
    p = await parties(factory)
    escrow = await escrow_in(source, database, p)
    allowed = TRANSITIONS[(source, target)]
    wrong = next(
        u for role, u in ((BUYER, p.buyer), (SELLER, p.seller), (ADMIN, p.admin)) if role not in allowed
    )
    response = await client.put(
        f"/api/v1/escrows/{escrow.id}/status",
        headers=bearer(wrong),
        json={"status": target.value, **PARAMS.get(target, {})},
    )
    assert response.status_code == 403, response.text
    assert response.json()["code"] == "transition_not_allowed"
