from __future__ import annotations

import asyncio
import contextlib
import itertools
import zlib
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError

from emanet.core.db import Database
from emanet.ledger import accounts
from emanet.ledger.service import (
    EntryDraft,
    Leg,
    UnbalancedEntry,
    account_ids,
    balance,
    credit,
    debit,
    post_entries,
    post_entry,
    verify_ledger,
)
from tests.invariants import assert_ledger_invariants

CLEARING = accounts.provider_clearing("sandbox")


async def test_posting_moves_money_and_balances_follow(database: Database) -> None:
    async with database.transaction() as session:
        await post_entry(session, "t:1", "TRY", [debit(CLEARING, 10_000), credit("escrow:esc_a", 10_000)])
        await post_entry(
            session,
            "t:2",
            "TRY",
            [
                debit("escrow:esc_a", 10_000),
                credit("user:usr_s:available", 9_750),
                credit(accounts.PLATFORM_FEES, 250),
            ],
        )
    async with database.transaction() as session:
        assert await balance(session, "escrow:esc_a", "TRY") == 0
        assert await balance(session, "user:usr_s:available", "TRY") == 9_750
        assert await balance(session, accounts.PLATFORM_FEES, "TRY") == 250
        assert await balance(session, CLEARING, "TRY") == 10_000
        assert await balance(session, CLEARING, "USD") == 0
    await assert_ledger_invariants(database)


async def test_same_reference_moves_money_once(database: Database) -> None:
    legs = [debit(CLEARING, 500), credit("escrow:esc_b", 500)]
    async with database.transaction() as session:
        first = await post_entry(session, "once", "TRY", legs)
        second = await post_entry(session, "once", "TRY", legs)
        assert first.id == second.id
    async with database.transaction() as session:
        assert await balance(session, "escrow:esc_b", "TRY") == 500


async def test_concurrent_duplicates_post_once(database: Database) -> None:
    async def post() -> None:
        async with database.transaction() as session:
            await post_entry(session, "race", "TRY", [debit(CLEARING, 700), credit("escrow:esc_c", 700)])

    await asyncio.gather(*(post() for _ in range(10)))
    async with database.transaction() as session:
        assert await balance(session, "escrow:esc_c", "TRY") == 700
    await assert_ledger_invariants(database)


@pytest.mark.parametrize(
    "legs",
    [
        [Leg(CLEARING, 100), Leg("escrow:esc_d", -99)],
        [Leg(CLEARING, 100)],
        [Leg(CLEARING, 0), Leg("escrow:esc_d", 0)],
    ],
)
async def test_unbalanced_entry_is_refused_in_code(database: Database, legs: list[Leg]) -> None:
    async with database.transaction() as session:
        with pytest.raises(UnbalancedEntry):
            await post_entry(session, "bad", "TRY", legs)


async def test_user_balance_cannot_go_negative(database: Database) -> None:
    with pytest.raises(IntegrityError):
        async with database.transaction() as session:
            await post_entry(
                session, "overdraw", "TRY", [debit("user:usr_x:available", 100), credit(CLEARING, 100)]
            )


async def _raw_entry(session: Any, reference: str, currency: str = "TRY") -> int:
    """An entry row written around the service, as a bug or a hand-written script would."""
    return int(
        (
            await session.execute(
                text(
                    "INSERT INTO ledger_entries (reference, currency, amount, description, metadata,"
                    " created_at) VALUES (:r, :c, 5, '', '{}', now()) RETURNING id"
                ),
                {"r": reference, "c": currency},
            )
        ).scalar_one()
    )


async def _raw_postings(session: Any, rows: list[tuple[int, int, int]]) -> None:
    """(entry, account, amount) rows inserted by ONE statement."""
    await session.execute(
        text(
            "INSERT INTO ledger_postings (entry_id, account_id, amount, created_at)"
            " SELECT e, a, m, now() FROM unnest(CAST(:e AS bigint[]), CAST(:a AS bigint[]),"
            " CAST(:m AS bigint[])) AS r(e, a, m)"
        ),
        {"e": [r[0] for r in rows], "a": [r[1] for r in rows], "m": [r[2] for r in rows]},
    )


@pytest.mark.postgres_only
async def test_database_refuses_unbalanced_postings_and_edits(database: Database) -> None:
    async with database.transaction() as session:
        await post_entry(session, "ok", "TRY", [debit(CLEARING, 100), credit("escrow:esc_e", 100)])
        ids = await account_ids(session, [CLEARING, "escrow:esc_e"], "TRY")
        usd = (await account_ids(session, ["escrow:esc_usd"], "USD"))["escrow:esc_usd"]
    clearing, escrow = ids[CLEARING], ids["escrow:esc_e"]
    ok_entry = (await _entry_ids(database, ["ok"]))["ok"]
    # Written around the service, each is refused by the statement trigger, and nothing stays behind.
    refused: dict[str, Any] = {
        "one leg": lambda s, e: _raw_postings(s, [(e, clearing, 5)]),
        "sum not zero": lambda s, e: _raw_postings(s, [(e, clearing, 5), (e, escrow, -4)]),
        "a leg in another currency": lambda s, e: _raw_postings(s, [(e, clearing, 5), (e, usd, -5)]),
        # one balanced entry does not carry an unbalanced one in the same statement
        "two entries, one unbalanced": lambda s, e: _raw_postings(
            s, [(ok_entry, clearing, 1), (ok_entry, escrow, -1), (e, clearing, 5)]
        ),
        # a balanced pair added to an entry posted earlier leaves it balanced, one leg does not
        "a leg added to a posted entry": lambda s, e: _raw_postings(s, [(ok_entry, clearing, 7)]),
    }
    for case, write in refused.items():
        with pytest.raises(DBAPIError, match="unbalanced"):
            async with database.transaction() as session:
                await write(session, await _raw_entry(session, f"raw:{case}"))
        assert not await _entry_ids(database, [f"raw:{case}"]), case
    # Several statements each leaving their entries balanced are accepted (the check is per statement).
    async with database.transaction() as session:
        entry = await _raw_entry(session, "raw:balanced")
        await _raw_postings(session, [(entry, clearing, 5), (entry, escrow, -5)])
        await _raw_postings(session, [(entry, clearing, 2), (entry, escrow, -2)])
    with pytest.raises(DBAPIError, match="append-only"):
        async with database.transaction() as session:
            await session.execute(text("UPDATE ledger_postings SET amount = amount + 1"))
    with pytest.raises(DBAPIError, match="append-only"):
        async with database.transaction() as session:
            await session.execute(text("DELETE FROM ledger_entries"))


async def _entry_ids(database: Database, references: list[str]) -> dict[str, int]:
    async with database.transaction() as session:
        rows = await session.execute(
            text("SELECT reference, id FROM ledger_entries WHERE reference = ANY(:r)"), {"r": references}
        )
        return {reference: entry_id for reference, entry_id in rows.all()}


@pytest.mark.postgres_only
async def test_verify_finds_a_posting_altered_by_hand(database: Database) -> None:
    async with database.transaction() as session:
        await post_entry(session, "v", "TRY", [debit(CLEARING, 1_000), credit("escrow:esc_f", 1_000)])
    async with database.transaction() as session:
        assert (await verify_ledger(session)).ok
    async with database.transaction() as session:
        # what someone with superuser rights could do: bypass the triggers and edit a posting
        await session.execute(text("SET LOCAL session_replication_role = replica"))
        await session.execute(text("UPDATE ledger_postings SET amount = amount + 1 WHERE amount > 0"))
    async with database.transaction() as session:
        report = await verify_ledger(session)
    assert not report.ok
    assert report.balance_mismatches and report.unbalanced_entries and report.currency_totals_not_zero


@pytest.mark.postgres_only
@pytest.mark.timeout(600)
async def test_verify_command_exits_non_zero_after_tampering(database: Database, database_url: str) -> None:
    import os
    import subprocess
    import sys

    async with database.transaction() as session:
        await post_entry(session, "cli", "TRY", [debit(CLEARING, 2_000), credit("escrow:esc_g", 2_000)])
    env = {**os.environ, "EMANET_DATABASE_URL": database_url, "COLUMNS": "200"}
    command = [sys.executable, "-m", "emanet.cli", "ledger", "verify"]
    clean = await asyncio.to_thread(
        subprocess.run, command, env=env, capture_output=True, text=True, timeout=240
    )
    assert clean.returncode == 0, clean.stdout + clean.stderr
    async with database.transaction() as session:
        await session.execute(text("SET LOCAL session_replication_role = replica"))
        await session.execute(text("UPDATE ledger_postings SET amount = 1999 WHERE amount = 2000"))
    tampered = await asyncio.to_thread(
        subprocess.run, command, env=env, capture_output=True, text=True, timeout=240
    )
    assert tampered.returncode == 1
    assert "FAILED" in tampered.stdout and "provider:sandbox:clearing" in tampered.stdout


async def test_accounts_created_by_two_transactions_at_once_are_one_set_of_rows(database: Database) -> None:
    """The second creator waits on the unique index, finds nothing inserted and nothing in its snapshot,
    and looks the accounts up afterwards: same ids, one balance row per shard."""
    codes = [CLEARING, "escrow:esc_twice"]

    async def create_in_own_transaction() -> dict[str, int]:
        async with database.transaction() as session:
            return await account_ids(session, codes, "USD")

    async with database.transaction() as session:
        first = await account_ids(session, codes, "USD")
        second = asyncio.create_task(create_in_own_transaction())
        await asyncio.sleep(0.5)
        assert not second.done()  # blocked on the first transaction's new rows
    assert await second == first
    async with database.transaction() as session:
        shards = dict(
            (
                await session.execute(
                    text(
                        "SELECT a.code, count(*) FROM ledger_balances b JOIN ledger_accounts a "
                        "ON a.id = b.account_id WHERE a.currency = 'USD' GROUP BY a.code"
                    )
                )
            ).all()
        )
    assert shards == {CLEARING: accounts.HOT_SHARDS, "escrow:esc_twice": 1}


async def test_a_transaction_touches_one_shard_of_each_hot_account(database: Database) -> None:
    """A capture and its fee in one transaction: both entries use the same clearing shard, so two such
    transactions can never each hold a shard row the other waits for."""
    fees = accounts.provider_fees("sandbox")
    async with database.transaction() as session:
        await post_entry(
            session, "payment:p1:capture", "TRY", [debit(CLEARING, 1_000), credit("escrow:esc_s", 1_000)]
        )
        await post_entry(session, "payment:p1:fee", "TRY", [debit(fees, 29), credit(CLEARING, 29)])
    async with database.transaction() as session:
        touched = (
            await session.execute(
                text(
                    "SELECT a.code, b.shard FROM ledger_balances b "
                    "JOIN ledger_accounts a ON a.id = b.account_id WHERE b.balance <> 0 ORDER BY a.code"
                )
            )
        ).all()
    clearing_shards = {shard for code, shard in touched if code == CLEARING}
    fee_shards = {shard for code, shard in touched if code == fees}
    assert len(clearing_shards) == 1 and clearing_shards == fee_shards


def _crossed_pair() -> tuple[int, int]:
    """Two payments whose capture and fee references would pick each other's clearing shard, were shards
    picked per entry (crc32 of the reference): the adversarial case for the test below."""

    def shard(reference: str) -> int:
        return zlib.crc32(reference.encode()) % accounts.HOT_SHARDS

    for a, b in itertools.combinations(range(500), 2):
        cap_a, fee_a = shard(f"payment:c{a}:capture"), shard(f"payment:c{a}:fee")
        cap_b, fee_b = shard(f"payment:c{b}:capture"), shard(f"payment:c{b}:fee")
        if cap_a != cap_b and fee_a == cap_b and fee_b == cap_a:
            return a, b
    raise AssertionError("no crossed pair")


async def test_concurrent_captures_with_fees_do_not_deadlock(database: Database) -> None:
    """Both transactions post their capture, wait until the other has, then post their fee: with a shard
    per entry each would hold the clearing row the other's fee needs (PostgreSQL reports a deadlock)."""
    fees = accounts.provider_fees("sandbox")
    async with database.transaction() as session:  # the accounts exist before (creating them serializes)
        await account_ids(session, [CLEARING, fees], "TRY")
    both_captured = asyncio.Barrier(2)

    async def capture_and_fee(n: int) -> None:
        async with database.transaction() as session:
            await post_entry(
                session,
                f"payment:c{n}:capture",
                "TRY",
                [debit(CLEARING, 1_000), credit(f"escrow:esc_c{n}", 1_000)],
            )
            with contextlib.suppress(TimeoutError):  # the other may be waiting on this one's row: go on
                await asyncio.wait_for(both_captured.wait(), timeout=1)
            await post_entry(session, f"payment:c{n}:fee", "TRY", [debit(fees, 29), credit(CLEARING, 29)])

    await asyncio.gather(*(capture_and_fee(n) for n in _crossed_pair()))
    async with database.transaction() as session:
        assert await balance(session, CLEARING, "TRY") == 2 * (1_000 - 29)
        assert await balance(session, fees, "TRY") == 2 * 29
    await assert_ledger_invariants(database)


@pytest.mark.postgres_only
async def test_a_batch_posts_every_entry_once_in_one_statement(
    database: Database, count_queries: Any
) -> None:
    fees = accounts.provider_fees("sandbox")
    drafts = [
        EntryDraft(f"batch:{n}", "TRY", [debit(CLEARING, 1_000 + n), credit(f"escrow:esc_b{n}", 1_000 + n)])
        for n in range(50)
    ] + [EntryDraft("batch:fee", "TRY", [debit(fees, 29), credit(CLEARING, 29)])]
    async with database.transaction() as session:
        await account_ids(session, [CLEARING, fees], "TRY")
    async with database.transaction() as session:
        with count_queries() as queries:
            posted = await post_entries(session, drafts)
    # The batch finds the 50 escrow accounts missing and writes nothing; they are looked up and created in
    # one statement each; the batch again.
    assert queries.count == 4
    assert [p.reference for p in posted] == [d.reference for d in drafts]
    assert all(p.created for p in posted)
    async with database.transaction() as session:
        with count_queries() as queries:
            again = await post_entries(session, [*drafts[:3], EntryDraft("batch:new", "TRY", drafts[0].legs)])
        assert queries.count == 2  # the batch, then the ids of the three posted before
        assert [p.created for p in again] == [False, False, False, True]
        assert [p.id for p in again[:3]] == [p.id for p in posted[:3]]
        assert await balance(session, CLEARING, "TRY") == sum(1_000 + n for n in range(50)) + 1_000 - 29
        assert await balance(session, "escrow:esc_b0", "TRY") == 2_000  # batch:0 and batch:new
        assert await balance(session, fees, "TRY") == 29
    await assert_ledger_invariants(database)


@pytest.mark.postgres_only
async def test_posting_to_new_accounts_is_compiled_once_whatever_their_number(
    database: Database, count_queries: Any
) -> None:
    async with database.transaction() as session:
        await post_entry(session, "warm", "TRY", [debit(CLEARING, 10), credit("escrow:esc_w", 10)])
    async with database.transaction() as session:
        with count_queries() as queries:
            await post_entry(
                session,
                "three new",
                "TRY",
                [
                    debit(CLEARING, 30),
                    credit("escrow:esc_x", 10),
                    credit("escrow:esc_y", 10),
                    credit("escrow:esc_z", 10),
                ],
            )
    assert queries.count == 3  # the entry finds its accounts missing; they are created; the entry again
    assert queries.compiled == []  # every statement came from SQLAlchemy's compiled cache
    await assert_ledger_invariants(database)


async def test_a_batch_is_refused_whole_when_one_entry_is_wrong(database: Database) -> None:
    with pytest.raises(UnbalancedEntry):
        async with database.transaction() as session:
            await post_entries(
                session,
                [
                    EntryDraft("ok:1", "TRY", [debit(CLEARING, 5), credit("escrow:esc_w", 5)]),
                    EntryDraft("bad:1", "TRY", [debit(CLEARING, 5), credit("escrow:esc_w", 4)]),
                ],
            )
    with pytest.raises(ValueError, match="same reference"):
        async with database.transaction() as session:
            legs = [debit(CLEARING, 5), credit("escrow:esc_w", 5)]
            await post_entries(session, [EntryDraft("twice", "TRY", legs), EntryDraft("twice", "TRY", legs)])
    async with database.transaction() as session:
        assert await balance(session, "escrow:esc_w", "TRY") == 0


async def test_a_batch_cannot_overdraw_a_wallet(database: Database) -> None:
    wallet = accounts.user_available("usr_batch")
    with pytest.raises(IntegrityError):
        async with database.transaction() as session:
            await post_entries(
                session,
                [
                    EntryDraft("in", "TRY", [debit(CLEARING, 100), credit(wallet, 100)]),
                    EntryDraft("out", "TRY", [debit(wallet, 150), credit(CLEARING, 150)]),
                ],
            )


async def _trigger_plans(session: Any, reference: str) -> list[str]:
    """Post one entry with auto_explain logging every nested plan and JIT made as cheap as it gets; return
    the logged plans of the balance trigger's query."""
    raw = (await (await session.connection()).get_raw_connection()).driver_connection
    plans: list[str] = []

    def on_log(_connection: Any, message: Any) -> None:
        if "new_postings" in message.message:
            plans.append(message.message)

    raw.add_log_listener(on_log)
    try:
        for setting in (
            "LOAD 'auto_explain'",
            "SET LOCAL auto_explain.log_min_duration = 0",
            "SET LOCAL auto_explain.log_nested_statements = on",
            "SET LOCAL client_min_messages = log",
            "SET LOCAL jit = on",
            "SET LOCAL jit_above_cost = 0",
        ):
            await session.execute(text(setting))
        await post_entry(session, reference, "TRY", [debit(CLEARING, 500), credit("escrow:esc_jit", 500)])
        await asyncio.sleep(0.05)  # notices arrive with the statement's reply; let the listener run
    finally:
        raw.remove_log_listener(on_log)
    return plans


@pytest.mark.postgres_only
async def test_the_balance_trigger_never_jit_compiles(database: Database) -> None:
    """A stale estimate once put the trigger's query over jit_above_cost, and every posting paid 12-40 ms of
    LLVM compilation (migration 0008). Emanet's own connections also turn JIT off; this guards every other
    client of the database (reports, psql, a bulk loader) that runs with the server's default."""
    async with database.transaction() as session:
        await session.execute(text("SET LOCAL jit = on"))  # Emanet's connections run with it off
        if not (await session.execute(text("SELECT pg_jit_available()"))).scalar_one():
            pytest.skip("this PostgreSQL server has no JIT provider")
        await post_entry(session, "jit:0", "TRY", [debit(CLEARING, 500), credit("escrow:esc_jit", 500)])
    async with database.transaction() as session:
        # Without the function's own setting the same post JIT-compiles the trigger's query: the check sees it
        await session.execute(text("ALTER FUNCTION ledger_check_entries_balanced() RESET jit"))
        plans = await _trigger_plans(session, "jit:1")
        assert plans and all("JIT:" in plan for plan in plans)
        await session.rollback()
    async with database.transaction() as session:
        plans = await _trigger_plans(session, "jit:2")
    assert plans and not any("JIT:" in plan for plan in plans)
