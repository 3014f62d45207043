"""GET /escrows: every filter of API.md, multi-field sort, cursor pagination, and no N+1 queries."""

from __future__ import annotations

from typing import Any

import httpx

from emanet.core.clock import FrozenClock
from emanet.core.db import Database
from tests.conftest import bearer
from tests.escrow.states import parties
from tests.factories import Factory, capture, create_escrow


async def _all_pages(
    client: httpx.AsyncClient, headers: dict[str, str], **params: Any
) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/api/v1/escrows", headers=headers, params=query)).json()
        seen += page["data"]
        cursor = page["next_cursor"]
        if not cursor:
            return seen


async def test_filters_sort_and_cursor(
    client: httpx.AsyncClient, factory: Factory, database: Database, clock: FrozenClock
) -> None:
    p = await parties(factory)
    other = await factory.user()
    made = []
    for i, amount in enumerate([5_000, 70_000, 20_000, 70_000, 9_000, 150_000, 33_000]):
        buyer, seller = (p.buyer, p.seller) if i % 2 == 0 else (p.seller, p.buyer)
        escrow = await create_escrow(
            database,
            buyer,
            seller,
            amount=amount,
            title=f"Item {i} camera" if i < 3 else f"Item {i} lamp",
            market_type="service" if i == 6 else "product",
        )
        made.append(escrow)
        clock.advance(minutes=5)
    await create_escrow(database, other, p.seller, amount=1_000_000)  # not p.buyer's
    await capture(database, made[0].id, made[0].total_due)
    headers = bearer(p.buyer)

    everything = await _all_pages(client, headers, limit=2)
    assert [e["id"] for e in everything] == [e.id for e in reversed(made)]
    by_amount = await _all_pages(client, headers, limit=3, sort="-amount,created_at")
    assert [e["amount"]["amount"] for e in by_amount] == [
        150_000,
        70_000,
        70_000,
        33_000,
        20_000,
        9_000,
        5_000,
    ]
    twins = [e for e in by_amount if e["amount"]["amount"] == 70_000]
    assert twins[0]["created_at"] < twins[1]["created_at"]

    assert len(await _all_pages(client, headers, role="buyer")) == 4
    assert len(await _all_pages(client, headers, role="seller")) == 3
    assert [e["id"] for e in await _all_pages(client, headers, status="funded")] == [made[0].id]
    assert len(await _all_pages(client, headers, status="pending_payment,funded")) == 7
    assert [e["id"] for e in await _all_pages(client, headers, market_type="service")] == [made[6].id]
    assert len(await _all_pages(client, headers, amount_min=20_000, amount_max=70_000)) == 4
    assert len(await _all_pages(client, headers, q="CAMERA")) == 3
    assert [e["id"] for e in await _all_pages(client, headers, q=made[4].number)] == [made[4].id]
    window = await _all_pages(
        client,
        headers,
        created_from=made[2].created_at.isoformat(),
        created_to=made[4].created_at.isoformat(),
    )
    assert {e["id"] for e in window} == {made[2].id, made[3].id}

    bad = await client.get("/api/v1/escrows", headers=headers, params={"sort": "password"})
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_sort"
    bad = await client.get("/api/v1/escrows", headers=headers, params={"cursor": "!!!"})
    assert bad.status_code == 422
    bad = await client.get("/api/v1/escrows", headers=headers, params={"limit": 500})
    assert bad.status_code == 422


async def test_list_queries_do_not_grow_with_rows(
    client: httpx.AsyncClient, factory: Factory, database: Database, count_queries: Any
) -> None:
    p = await parties(factory)
    await create_escrow(database, p.buyer, p.seller)
    with count_queries() as few:
        assert len((await client.get("/api/v1/escrows", headers=bearer(p.buyer))).json()["data"]) == 1
    for _ in range(15):
        await create_escrow(database, p.buyer, p.seller)
    with count_queries() as many:
        assert len((await client.get("/api/v1/escrows", headers=bearer(p.buyer))).json()["data"]) == 16
    assert many.count == few.count
    with count_queries() as admin_list:
        page = await client.get("/api/v1/admin/escrows", headers=bearer(p.admin), params={"user": p.buyer.id})
    assert len(page.json()["data"]) == 16 and admin_list.count == few.count
