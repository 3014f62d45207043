"""GET /api/v1/admin/dashboard/stats and GET /api/v1/admin/escrows/export on a small, known dataset."""

from __future__ import annotations

import csv
import io
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import openpyxl
import pytest

from emanet.admin.export import HEADER
from emanet.core.clock import FrozenClock
from emanet.core.db import Database
from emanet.escrow.models import Escrow, EscrowStatus
from emanet.escrow.service import Actor, apply_transition
from emanet.users.models import Role, User
from tests.conftest import START, bearer
from tests.core.test_errors import assert_problem
from tests.factories import Factory, capture, create_escrow

S = EscrowStatus


@dataclass
class World:
    admin: User
    support: User
    buyer: User
    seller: User
    old: Escrow  # created 40 days ago: outside every window
    released: Escrow  # created 10 days ago, funded, released 2 days later
    cancelled: Escrow  # USD, created 3 days ago, cancelled unpaid
    disputed: Escrow  # created 2 hours ago, funded, disputed
    pending: Escrow  # created 1 hour ago, unpaid


async def _move(database: Database, escrow: Escrow, target: S, actor_user: User, **params: Any) -> Escrow:
    async with database.transaction() as session:
        return await apply_transition(
            session, escrow.id, target, Actor(user_id=actor_user.id, role="user"), params=params
        )


async def world(factory: Factory, database: Database, clock: FrozenClock) -> World:
    clock.set(START - timedelta(days=45))
    admin = await factory.user(role=Role.admin)
    support = await factory.user(role=Role.support)
    clock.set(START - timedelta(days=12))
    buyer = await factory.user()
    clock.set(START - timedelta(hours=5))
    seller = await factory.user()

    clock.set(START - timedelta(days=40))
    old = await create_escrow(database, buyer, seller, amount=100_000, title="=HYPERLINK(evil)")
    clock.set(START - timedelta(days=10))
    released = await create_escrow(database, buyer, seller, amount=200_000, title='Camera, "mint"')
    await capture(database, released.id, released.total_due)
    clock.advance(days=2)
    released = await _move(database, released, S.released, buyer)
    clock.set(START - timedelta(days=3))
    cancelled = await create_escrow(database, buyer, seller, amount=5_000, currency="USD", title="Course")
    cancelled = await _move(database, cancelled, S.cancelled, buyer, reason="changed my mind")
    clock.set(START - timedelta(hours=2))
    disputed = await create_escrow(database, buyer, seller, amount=50_000, title="Phone")
    await capture(database, disputed.id, 20_000)
    await capture(database, disputed.id, disputed.total_due - 20_000)
    disputed = await _move(database, disputed, S.disputed, buyer, reason="not as described")
    clock.set(START - timedelta(hours=1))
    pending = await create_escrow(database, buyer, seller, amount=30_000, title="Bike")
    clock.set(START)
    return World(admin, support, buyer, seller, old, released, cancelled, disputed, pending)


async def test_stats_figures(
    client: httpx.AsyncClient, factory: Factory, database: Database, clock: FrozenClock
) -> None:
    w = await world(factory, database, clock)
    response = await client.get("/api/v1/admin/dashboard/stats", headers=bearer(w.admin))
    assert response.status_code == 200, response.text
    stats = response.json()
    assert stats["cached"] is False
    assert stats["escrows_created"] == {"last_24_hours": 2, "last_7_days": 3, "last_30_days": 4}
    volume = {v["currency"]: v for v in stats["volume"]}
    assert set(volume) == {"TRY", "USD"}
    assert volume["TRY"] == {
        "currency": "TRY",
        "created_last_24_hours": 80_000,
        "created_last_7_days": 80_000,
        "created_last_30_days": 280_000,
        "funded_last_30_days": w.released.total_due + w.disputed.total_due,
        "released_last_30_days": w.released.released_amount,
        "held_now": w.disputed.total_due,
    }
    assert w.released.released_amount == w.released.total_due
    assert volume["USD"]["created_last_7_days"] == 5_000 and volume["USD"]["held_now"] == 0
    assert stats["outcomes"] == {
        "closed": 2,
        "succeeded": 1,
        "failed": 1,
        "success_rate": 0.5,
        "failure_rate": 0.5,
    }
    assert stats["average_time_to_release_hours"] == 48.0
    assert stats["active_disputes"] == 1
    assert stats["open_escrows"] == 3  # old (pending, 40 days), disputed, pending
    users = stats["users"]
    assert users["total"] == 4
    assert users["new"] == {"last_24_hours": 1, "last_7_days": 1, "last_30_days": 2}
    assert len(users["per_day"]) == 30 and sum(users["per_day"]) == 2
    assert users["per_day"][-1] == 1 and users["per_day"][-13] == 1


async def test_stats_are_cached_until_fresh_or_five_minutes(
    client: httpx.AsyncClient, factory: Factory, database: Database, clock: FrozenClock
) -> None:
    w = await world(factory, database, clock)
    headers = bearer(w.support)  # support may read the dashboard
    first = (await client.get("/api/v1/admin/dashboard/stats", headers=headers)).json()
    await create_escrow(database, w.buyer, w.seller, amount=70_000, title="Lamp")
    clock.advance(minutes=4)
    cached = (await client.get("/api/v1/admin/dashboard/stats", headers=headers)).json()
    assert cached["cached"] is True and cached["escrows_created"] == first["escrows_created"]
    assert cached["generated_at"] == first["generated_at"]
    fresh = (
        await client.get("/api/v1/admin/dashboard/stats", headers=headers, params={"fresh": "true"})
    ).json()
    assert fresh["cached"] is False and fresh["escrows_created"]["last_24_hours"] == 3
    clock.advance(minutes=6)
    await create_escrow(database, w.buyer, w.seller, amount=70_000, title="Desk")
    expired = (await client.get("/api/v1/admin/dashboard/stats", headers=headers)).json()
    assert expired["cached"] is False and expired["escrows_created"]["last_24_hours"] == 4


async def test_stats_cache_in_redis(
    factory: Factory, database: Database, clock: FrozenClock, redis_url: str
) -> None:
    """With Redis configured the cache is shared by every server process: one key under the prefix."""
    import redis.asyncio as aioredis

    from emanet.admin.dashboard import StatsCache, compute_stats

    redis = aioredis.from_url(redis_url)
    cache = StatsCache(redis, f"test-{uuid.uuid4().hex}")
    try:
        await world(factory, database, clock)
        assert await cache.get() is None
        async with database.transaction() as session:
            stats = await compute_stats(session)
        await cache.put(stats)
        assert 0 < await redis.ttl(cache.key) <= 300
        hit = await cache.get()
        assert hit is not None and hit.cached and hit.escrows_created == stats.escrows_created
        assert hit.users.total == 4
    finally:
        await redis.delete(cache.key)
        await redis.aclose()


async def test_stats_and_export_are_staff_only(client: httpx.AsyncClient, factory: Factory) -> None:
    user = await factory.user()
    for path in ("/api/v1/admin/dashboard/stats", "/api/v1/admin/escrows/export"):
        assert_problem(await client.get(path), 401, "unauthorized")
        assert_problem(await client.get(path, headers=bearer(user)), 403, "role_required")


def _csv(response: httpx.Response) -> list[dict[str, str]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["content-disposition"].startswith('attachment; filename="escrows-')
    return list(csv.DictReader(io.StringIO(response.text)))


async def test_csv_export_columns_rows_and_filters(
    client: httpx.AsyncClient, factory: Factory, database: Database, clock: FrozenClock
) -> None:
    w = await world(factory, database, clock)
    headers = bearer(w.admin)
    rows = _csv(await client.get("/api/v1/admin/escrows/export", headers=headers, params={"format": "csv"}))
    assert [r["id"] for r in rows] == [e.id for e in (w.old, w.released, w.cancelled, w.disputed, w.pending)]
    assert list(rows[0]) == [
        "id",
        "number",
        "status",
        "buyer_id",
        "seller_id",
        "title",
        "category",
        "market_type",
        "currency",
        "amount",
        "platform_fee",
        "total_due",
        "funded",
        "released",
        "refunded",
        "created_at",
        "funded_at",
        "delivered_at",
        "closed_at",
    ]
    released = rows[1]
    assert released["status"] == "released" and released["number"] == w.released.number
    assert released["title"] == 'Camera, "mint"'  # quoting survives the round trip
    assert released["amount"] == "200000" and released["currency"] == "TRY"
    assert released["released"] == str(w.released.released_amount)
    assert released["created_at"] == (START - timedelta(days=10)).isoformat()
    assert released["closed_at"] == (START - timedelta(days=8)).isoformat()
    assert rows[4]["funded_at"] == "" and rows[4]["closed_at"] == ""
    assert rows[0]["title"] == "'=HYPERLINK(evil)"  # a spreadsheet must not run it as a formula

    # the filters of GET /api/v1/admin/escrows
    try_only = _csv(
        await client.get(
            "/api/v1/admin/escrows/export",
            headers=headers,
            params={"currency": "TRY", "status": "released,disputed"},
        )
    )
    assert [r["id"] for r in try_only] == [w.released.id, w.disputed.id]
    by_amount = _csv(
        await client.get(
            "/api/v1/admin/escrows/export",
            headers=headers,
            params={"amount_min": 40_000, "amount_max": 150_000, "q": "phone"},
        )
    )
    assert [r["id"] for r in by_amount] == [w.disputed.id]
    recent = _csv(
        await client.get(
            "/api/v1/admin/escrows/export",
            headers=headers,
            params={"created_from": (START - timedelta(days=5)).isoformat()},
        )
    )
    assert [r["id"] for r in recent] == [w.cancelled.id, w.disputed.id, w.pending.id]
    none = _csv(
        await client.get("/api/v1/admin/escrows/export", headers=headers, params={"user": "usr_nobody"})
    )
    assert none == []
    assert_problem(
        await client.get("/api/v1/admin/escrows/export", headers=headers, params={"status": "bogus"}),
        422,
        "invalid_filter",
    )


async def test_export_route_is_not_taken_by_escrow_detail(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    admin = await factory.user(role=Role.admin)
    response = await client.get("/api/v1/admin/escrows/export", headers=bearer(admin))
    assert response.status_code == 200 and response.text.startswith("id,number,status")


async def test_csv_export_streams_batch_by_batch(
    client: httpx.AsyncClient, factory: Factory, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rows come from a server-side cursor a batch at a time and each batch leaves as its own chunk."""
    from emanet.admin import export
    from emanet.escrow.service import EscrowFilters

    monkeypatch.setattr(export, "BATCH_ROWS", 2)
    admin, buyer, seller = await factory.user(role=Role.admin), await factory.user(), await factory.user()
    made = [
        await create_escrow(database, buyer, seller, amount=10_000 + i, title=f"Item {i}") for i in range(5)
    ]
    chunks = [chunk async for chunk in export.csv_stream(export.escrow_batches(database, EscrowFilters()))]
    assert len(chunks) == 1 + 3  # the header, then batches of 2, 2 and 1 rows
    assert [chunk.count(b"\r\n") for chunk in chunks] == [1, 2, 2, 1]
    response = await client.get("/api/v1/admin/escrows/export", headers=bearer(admin))
    assert [r["amount"] for r in _csv(response)] == [str(e.amount) for e in made]


async def test_xlsx_export_opens(
    client: httpx.AsyncClient, factory: Factory, database: Database, clock: FrozenClock
) -> None:
    w = await world(factory, database, clock)
    response = await client.get(
        "/api/v1/admin/escrows/export",
        headers=bearer(w.support),
        params={"format": "xlsx", "currency": "TRY"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == (
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    )
    workbook = openpyxl.load_workbook(io.BytesIO(response.content), read_only=True)
    rows = list(workbook.worksheets[0].iter_rows(values_only=True))
    assert rows[0][:3] == ("id", "number", "status")
    assert [r[0] for r in rows[1:]] == [w.old.id, w.released.id, w.disputed.id, w.pending.id]
    assert rows[1][5] == "=HYPERLINK(evil)"  # stored as text, not as a formula
    assert rows[2][9] == 200_000 and rows[2][15] == (START - timedelta(days=10)).replace(tzinfo=None)
    assert rows[4][16] is None  # an unpaid escrow has no funded_at


async def test_xlsx_export_of_nothing_still_opens(client: httpx.AsyncClient, factory: Factory) -> None:
    admin = await factory.user(role=Role.admin)
    response = await client.get(
        "/api/v1/admin/escrows/export", headers=bearer(admin), params={"format": "xlsx"}
    )
    workbook = openpyxl.load_workbook(io.BytesIO(response.content), read_only=True)
    assert list(workbook.worksheets[0].iter_rows(values_only=True)) == [tuple(HEADER)]
