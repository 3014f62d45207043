"""Concurrent requests on the same escrow serialise on its row lock: exactly one of a racing pair wins."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from sqlalchemy import func, select

from emanet.core.clock import FrozenClock
from emanet.core.db import Database
from emanet.ledger.models import JournalEntry
from tests.conftest import bearer
from tests.escrow.states import parties
from tests.factories import Factory, capture, create_escrow
from tests.invariants import assert_ledger_invariants

PAIRS = 50


@pytest.mark.postgres_only
async def test_release_and_cancel_race(
    client: httpx.AsyncClient, factory: Factory, database: Database, clock: FrozenClock
) -> None:
    p = await parties(factory)
    escrows = []
    for _ in range(PAIRS):
        escrow = await create_escrow(database, p.buyer, p.seller)
        escrows.append(await capture(database, escrow.id, escrow.total_due))
    clock.advance(hours=25)

    async def race(escrow_id: str) -> tuple[int, int]:
        release, cancel = await asyncio.gather(
            client.post(f"/api/v1/escrows/{escrow_id}/release", headers=bearer(p.buyer)),
            client.post(f"/api/v1/escrows/{escrow_id}/cancel", headers=bearer(p.seller)),
        )
        return release.status_code, cancel.status_code

    results = await asyncio.gather(*(race(e.id) for e in escrows))
    for released, cancelled in results:
        assert sorted((released, cancelled)) == [200, 409], (released, cancelled)
    async with database.transaction() as session:
        for escrow in escrows:
            moves = (
                await session.execute(
                    select(func.count())
                    .select_from(JournalEntry)
                    .where(
                        JournalEntry.escrow_id == escrow.id,
                        JournalEntry.reference.in_(
                            [f"escrow:{escrow.id}:release", f"escrow:{escrow.id}:refund"]
                        ),
                    )
                )
            ).scalar_one()
            assert moves == 1, escrow.id
    assert {r for pair in results for r in pair} == {200, 409}
    await assert_ledger_invariants(database)


@pytest.mark.postgres_only
async def test_duplicate_captures_fund_once(factory: Factory, database: Database) -> None:
    p = await parties(factory)
    escrow = await create_escrow(database, p.buyer, p.seller)
    await asyncio.gather(
        *(capture(database, escrow.id, escrow.total_due, payment_id="pay_same") for _ in range(20))
    )
    async with database.transaction() as session:
        entries = (
            await session.execute(
                select(func.count()).select_from(JournalEntry).where(JournalEntry.escrow_id == escrow.id)
            )
        ).scalar_one()
    assert entries == 1
    await assert_ledger_invariants(database)
