"""``make plans``: where a statement came from, what its plan says, and the replay leaving no trace."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import event, select, text

from bench import plans, statements
from emanet.core.db import Database
from emanet.core.errors import NotFound
from emanet.escrow import service as escrow_service
from emanet.ledger import service as ledger_service
from emanet.users.models import User
from tests.conftest import BACKEND, bearer
from tests.factories import Factory

pytestmark = pytest.mark.skipif(BACKEND == "sqlite", reason="the replay runs on PostgreSQL")


async def test_a_statement_is_traced_to_the_emanet_function_that_sent_it(database: Database) -> None:
    origins: list[str | None] = []

    def record(*_: Any) -> None:
        origins.append(statements.origin_of(statements.caller_frames()))

    event.listen(database.engine.sync_engine, "before_cursor_execute", record)
    try:
        async with database.transaction() as session:
            await ledger_service.escrow_entries(session, "esc_none")
            with pytest.raises(NotFound):  # lock_row, the shared helper, is named by its caller
                await escrow_service.lock_escrow(session, "esc_none")
            await session.execute(select(User.id))  # the test's own statement
    finally:
        event.remove(database.engine.sync_engine, "before_cursor_execute", record)
    assert origins == ["ledger/service.py:escrow_entries", "escrow/service.py:lock_escrow", None]


async def test_a_statement_sent_for_a_route_names_the_route_too(
    client: httpx.AsyncClient, database: Database, factory: Factory
) -> None:
    user = await factory.user()
    origins: list[str | None] = []

    def record(*_: Any) -> None:
        origins.append(statements.origin_of(statements.caller_frames()))

    event.listen(database.engine.sync_engine, "before_cursor_execute", record)
    try:
        response = await client.get("/api/v1/wallets", headers=bearer(user))
    finally:
        event.remove(database.engine.sync_engine, "before_cursor_execute", record)
    assert response.status_code == 200
    assert "escrow/service.py:held_by_currency via ledger/router.py:wallets" in origins
    assert "ledger/service.py:balances via ledger/router.py:wallets" in origins


def _explained(node: dict[str, Any]) -> dict[str, Any]:
    return {"Plan": node, "Execution Time": 1.5}


def test_a_plan_reports_its_buffers_and_the_large_tables_it_reads_whole() -> None:
    rows = {"escrows": 1_000_000.0, "jobs": 40.0}
    plan = {
        "Node Type": "Hash Join",
        "Shared Hit Blocks": 900,
        "Shared Read Blocks": 300,
        "Plans": [
            {"Node Type": "Seq Scan", "Relation Name": "escrows"},
            {"Node Type": "Seq Scan", "Relation Name": "jobs"},
            {"Node Type": "Index Scan", "Relation Name": "users"},
        ],
    }
    assert plans.summarize(_explained(plan), rows) == (1_200, 1.5, [("escrows", 1_000_000.0)])
    small = {"Node Type": "Seq Scan", "Relation Name": "jobs", "Shared Hit Blocks": 1}
    assert plans.summarize(_explained(small), rows) == (1, 1.5, [])


def test_a_table_is_served_by_an_index_condition_or_by_a_first_page_read_in_index_order() -> None:
    probe = {"Node Type": "Index Scan", "Relation Name": "jobs", "Index Cond": "(id = 1)"}
    bitmap = {
        "Node Type": "Bitmap Heap Scan",
        "Relation Name": "jobs",
        "Plans": [{"Node Type": "Bitmap Index Scan", "Index Cond": "(status = 'x')"}],
    }
    walk = {"Node Type": "Index Scan", "Relation Name": "jobs"}
    walk_skipping = {**walk, "Filter": "(kind = 'x')"}
    for served, plan in [
        (True, probe),
        (True, bitmap),
        (True, {"Node Type": "Limit", "Plans": [walk]}),  # a first page in index order
        (False, walk),  # the whole index, in order, to the end
        (False, {"Node Type": "Limit", "Plans": [walk_skipping]}),  # skips rows until enough match
        (False, {"Node Type": "Seq Scan", "Relation Name": "jobs"}),
    ]:
        assert plans.served_by_an_index({"Plan": plan}, "jobs") is served, plan


def test_a_flagged_statement_passes_only_when_every_place_it_comes_from_is_accepted() -> None:
    accepted = "ledger/service.py:verify_ledger"
    whole = [("escrows", 1e6)]
    cheap = plans.Planned("SELECT 1", ["escrow/service.py:get_escrow"], buffers=4, ms=0.1)
    assert not plans.is_flagged(cheap)
    assert plans.is_flagged(plans.Planned("SELECT 2", ["x.py:f"], buffers=plans.BUFFER_LIMIT + 1))
    assert plans.is_flagged(plans.Planned("SELECT 5", ["x.py:f"], buffers=3, unindexed=["jobs"]))
    assert plans.Planned("SELECT 3", [accepted], scans=whole).why_accepted == plans.ACCEPTED[accepted]
    shared = plans.Planned("SELECT 4", [accepted, "escrow/service.py:get_escrow"], buffers=5, scans=whole)
    assert shared.why_accepted is None
    # a function accepted from anywhere, or only for one route
    assert plans.acceptance(f"{accepted} via cli.py:verify") == plans.ACCEPTED[accepted]
    admin = "users/service.py:list_users via users/router.py:admin_list_users"
    assert plans.acceptance(admin) == plans.ACCEPTED[admin]
    assert plans.acceptance("users/service.py:list_users via users/router.py:list_people") is None
    own = "escrow/service.py:list_escrows via escrow/router.py:list_escrows"
    assert plans.acceptance(own) is None
    # what one user's own rows cost is accepted only where it was measured as the heavy user
    assert plans.Planned("SELECT 7", [own], buffers=50_000).why_accepted is None
    as_heavy = plans.Planned("SELECT 7", [own], buffers=50_000, as_heavy_user=True)
    assert as_heavy.why_accepted == plans.ACCEPTED_AS_HEAVY_USER[own]

    heavy_page = plans.Planned("SELECT 6", ["escrow/service.py:list_escrows"], buffers=40_000, ms=90.0)
    page = plans.report(
        [cheap, shared],
        escrows=1_000_000,
        counts={"escrows": 1_000_000},
        tests="642 passed in 200s",
        heavy=[heavy_page],
        heavy_escrows={"as seller": 100_000, "as buyer": 100_000},
    )
    overall, as_heavy = page.split("## As the heaviest user")
    assert "**1**, of which **1** not accepted" in overall
    assert "**not accepted**" in overall and "escrows (1,000,000 rows)" in overall
    assert "**1**, of which **1** not accepted" in as_heavy and "| 40,000 | 90.0 |" in as_heavy


def test_the_heavy_user_takes_the_place_of_every_user_a_statement_names() -> None:
    buyer, seller = "usr_01jdq3v4x5y6z7a8b9c0d1e2f3", "usr_01jdq3v4x5y6z7a8b9c0d1e2f4"
    heavy = plans.seed.HEAVY_USER
    assert plans.as_heavy_user((buyer, [f"user:{seller}:available", "platform:fees"], 5, None)) == (
        heavy,
        [f"user:{heavy}:available", "platform:fees"],
        5,
        None,
    )
    by_user = "SELECT id FROM escrows WHERE buyer_id = $1"
    by_escrow = "SELECT id FROM escrows WHERE id = $1"
    assert plans.heavy_user_statements(
        {
            by_user: {"origins": {"escrow/service.py:f"}, "parameters": [(buyer,), (seller,), ("x",)]},
            by_escrow: {
                "origins": {"escrow/service.py:g"},
                "parameters": [("esc_01jdq3v4x5y6z7a8b9c0d1e2f3",)],
            },
        }
    ) == {by_user: {"origins": {"escrow/service.py:f"}, "parameters": [(heavy,), (heavy,)]}}


async def test_the_replay_runs_reads_and_writes_then_rolls_them_back(
    database: Database, database_url: str, factory: Factory
) -> None:
    user = await factory.user(name="Before")
    rename = "UPDATE users SET name = $1 WHERE id = $2"
    by_url, by_owner = (
        f"SELECT id FROM webhook_endpoints WHERE {column} = $1" for column in ("url", "owner_id")
    )
    orphan = (
        "INSERT INTO ledger_postings (entry_id, account_id, amount, created_at) VALUES ($1, $2, $3, now())"
    )
    replayed = await plans.replay(
        database_url.replace("postgresql+asyncpg://", "postgresql://"),
        {
            rename: {"origins": {"users/service.py:update_profile"}, "parameters": [("After", user.id)]},
            orphan: {"origins": {"ledger/service.py:post_entry"}, "parameters": [(987654, 987654, 1)]},
            "SELECT no_such_column FROM users": {"origins": {"users/service.py:f"}, "parameters": []},
            by_url: {"origins": {"webhooks/service.py:f"}, "parameters": [("https://example.com",)]},
            by_owner: {"origins": {"webhooks/service.py:g"}, "parameters": [(user.id,)]},
        },
    )
    by_statement = {r.statement: r for r in replayed}
    assert by_statement[rename].ms is not None and by_statement[rename].error is None  # it ran
    assert by_statement[orphan].ms is None and by_statement[orphan].error is None  # planned: a foreign key
    # both read the (empty) table whole here; only the owner's endpoints have an index to be found by
    assert by_statement[by_url].unindexed == ["webhook_endpoints"] and plans.is_flagged(by_statement[by_url])
    assert by_statement[by_owner].unindexed == []
    assert "no_such_column" in (by_statement["SELECT no_such_column FROM users"].error or "")
    async with database.transaction() as session:
        assert (
            await session.execute(text("SELECT name FROM users WHERE id = :id"), {"id": user.id})
        ).scalar() == ("Before")
