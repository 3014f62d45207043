"""GET /escrows: every filter of API.md, multi-field sort, cursor pagination, and no N+1 queries."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from bench import seed
from emanet.core.clock import FrozenClock
from emanet.core.db import Database
from emanet.users.models import User
from tests.conftest import bearer
from tests.escrow.states import parties
from tests.factories import Factory, capture, create_escrow
from tests.plans import explain, nodes, rows_read_from, statements_sent


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


async def test_the_admin_list_filters_every_escrow_and_only_staff_see_it(
    client: httpx.AsyncClient, factory: Factory, database: Database, clock: FrozenClock
) -> None:
    p = await parties(factory)
    stranger, other_seller = await factory.user(), await factory.user()
    camera = await create_escrow(database, p.buyer, p.seller, amount=40_000, title="Vintage camera")
    clock.advance(minutes=5)
    lamp = await create_escrow(database, stranger, other_seller, amount=90_000, title="Desk lamp")
    clock.advance(minutes=5)
    course = await create_escrow(
        database, stranger, p.seller, amount=15_000, title="Camera course", market_type="service"
    )
    await capture(database, lamp.id, lamp.total_due)
    admin = bearer(p.admin)

    async def ids(**params: Any) -> list[str]:
        seen: list[str] = []
        cursor = None
        while True:
            query = {**params, "limit": 2, **({"cursor": cursor} if cursor else {})}
            response = await client.get("/api/v1/admin/escrows", headers=admin, params=query)
            assert response.status_code == 200, response.text
            seen += [e["id"] for e in response.json()["data"]]
            cursor = response.json()["next_cursor"]
            if not cursor:
                return seen

    assert await ids() == [course.id, lamp.id, camera.id]  # everyone's, newest first, over two pages
    assert await ids(q="camera") == [course.id, camera.id]
    assert await ids(q=lamp.number) == [lamp.id]
    assert await ids(status="funded") == [lamp.id]
    assert await ids(market_type="service") == [course.id]
    assert await ids(amount_min=20_000, amount_max=90_000) == [lamp.id, camera.id]
    assert await ids(user=p.seller.id, sort="amount") == [course.id, camera.id]
    as_user = await client.get("/api/v1/admin/escrows", headers=bearer(p.buyer))
    assert as_user.status_code == 403


async def test_escrows_made_at_the_same_moment_are_each_listed_once(
    client: httpx.AsyncClient, factory: Factory, database: Database
) -> None:
    p = await parties(factory)
    twins = [await create_escrow(database, p.buyer, p.seller) for _ in range(5)]  # the clock stands still
    assert len({e.created_at for e in twins}) == 1
    listed = await _all_pages(client, bearer(p.buyer), limit=2)
    assert [e["id"] for e in listed] == sorted((e.id for e in twins), reverse=True)


@pytest.mark.postgres_only  # the bulk load and the plans are PostgreSQL's
async def test_a_deep_page_starts_at_its_cursor_instead_of_reading_the_pages_before(
    client: httpx.AsyncClient, factory: Factory, database: Database, database_url: str
) -> None:
    p = await parties(factory)
    dsn = database_url.replace("postgresql+asyncpg://", "postgresql://")
    await seed.load(dsn, 0, DEEP, total=DEEP, log=lambda _: None)
    admin = bearer(p.admin)
    # (sort, the index condition that starts the scan at the cursor, the order the rows must come in)
    sorts = [
        (None, "ROW(created_at, (id)::text) <", [("created_at", True), ("id", True)]),
        ("-amount,created_at", "(amount <=", [("amount", True), ("created_at", False), ("id", True)]),
    ]
    for statistics in ("before ANALYZE", "after ANALYZE"):
        for sort, seek, order in sorts:
            listed: list[dict[str, Any]] = []
            cursor = None
            with statements_sent(database, "SELECT escrows.") as sent:
                while True:
                    query = {
                        "limit": 200,
                        **({"sort": sort} if sort else {}),
                        **({"cursor": cursor} if cursor else {}),
                    }
                    page = (await client.get("/api/v1/admin/escrows", headers=admin, params=query)).json()
                    listed += page["data"]
                    cursor = page["next_cursor"]
                    if not cursor:
                        break
            assert len({e["id"] for e in listed}) == len(listed) == DEEP, (statistics, sort)
            expected = list(listed)
            for name, descending in reversed(order):  # a stable sort per key, the last key first
                expected.sort(key=lambda e, n=name: _sort_value(e, n), reverse=descending)
            assert listed == expected, (statistics, sort)

            plan = await explain(
                database, *sent[-1]
            )  # the last page: every other row comes before its cursor
            conditions = " ".join(str(node.get("Index Cond", "")) for node in nodes(plan))
            assert seek in conditions, (statistics, sort, plan)
            # The scan starts at the cursor: it reads the rows after it, not the 2,800 before.
            assert rows_read_from(plan, "escrows") <= DEEP - 2_800 + 1, (statistics, sort, plan)
        async with database.engine.begin() as connection:
            await connection.execute(text("ANALYZE escrows"))


@pytest.mark.postgres_only  # the bulk load and the plans are PostgreSQL's
async def test_a_users_list_reads_that_users_escrows_not_everyones(
    client: httpx.AsyncClient, factory: Factory, database: Database, database_url: str
) -> None:
    """Their escrows as buyer or seller: one side at a time, each from its own index, however few or many
    they have among everyone's (3,000 here; `seed.HEAVY_USER` is in 600 of them)."""
    p = await parties(factory)
    mine = [
        await create_escrow(database, p.buyer, p.seller),
        await create_escrow(database, p.seller, p.buyer),
    ]
    dsn = database_url.replace("postgresql+asyncpg://", "postgresql://")
    await seed.load(dsn, 0, DEEP, total=DEEP, log=lambda _: None)
    async with database.engine.begin() as connection:
        await connection.execute(text("ANALYZE escrows"))
    async with database.transaction() as session:
        heavy = await session.get_one(User, seed.HEAVY_USER)
    cases = [  # (whose list, as whom, extra parameters, how many escrows it holds)
        ("a user with two escrows", bearer(p.buyer), "/api/v1/escrows", {}, 2),
        ("the heavy user", bearer(heavy), "/api/v1/escrows", {}, DEEP // 5),
        ("an admin's user filter", bearer(p.admin), "/api/v1/admin/escrows", {"user": heavy.id}, DEEP // 5),
    ]
    for who, headers, path, params, count in cases:
        for sort, order in ((None, [("created_at", True)]), ("-amount", [("amount", True)])):
            listed: list[dict[str, Any]] = []
            cursor = None
            with statements_sent(database, "SELECT") as sent:
                while True:
                    query = {**params, "limit": 50, **({"sort": sort} if sort else {})}
                    if cursor:
                        query["cursor"] = cursor
                    page = (await client.get(path, headers=headers, params=query)).json()
                    listed += page["data"]
                    cursor = page["next_cursor"]
                    if not cursor:
                        break
            assert len({e["id"] for e in listed}) == len(listed) == count, (who, sort)
            party = p.buyer.id if count == 2 else heavy.id
            assert all(party in (e["buyer_id"], e["seller_id"]) for e in listed), (who, sort)
            expected = sorted(listed, key=lambda e: e["id"], reverse=True)
            for name, descending in order:
                expected.sort(key=lambda e, n=name: _sort_value(e, n), reverse=descending)
            assert listed == expected, (who, sort)
            if count == 2:
                assert {e["id"] for e in listed} == {e.id for e in mine}
            if sort is not None and count > 2:
                continue  # a fifth of a small table by amount is rightly read whole; at scale: `make plans`
            first_page = next(statement for statement in sent if "FROM escrows" in statement[0])
            plan = await explain(database, *first_page)
            conditions = " ".join(str(node.get("Index Cond", "")) for node in nodes(plan))
            assert "(buyer_id)" in conditions and "(seller_id)" in conditions, (who, sort, plan)
            # each side read in its index's order up to the page (51 rows), or by amount its own rows
            assert rows_read_from(plan, "escrows") <= 2 * 51, (who, sort, plan)


def _sort_value(escrow: dict[str, Any], name: str) -> Any:
    if name == "amount":
        return escrow["amount"]["amount"]
    if name == "created_at":
        return datetime.fromisoformat(escrow["created_at"])
    return escrow[name]


DEEP = 3_000
