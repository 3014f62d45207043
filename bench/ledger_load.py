"""The ledger alone, no HTTP: transfers between wallets through ``emanet.ledger.service``.

Each transfer is one balanced entry of two postings (debit the payer's ``user:…:available``, credit the
payee's), with its balance rows updated and the non-negative CHECK enforced, exactly as a release does.
``single``: one entry per commit (``post_entry``). ``batch``: ``batch_size`` entries per commit, posted
with ``post_entries`` (one statement for the batch). Every connection moves
money among its own slice of the accounts, so no transfer waits for another connection's row lock and the
figure is the ledger's own cost (pgbench's accounts are spread the same way).

Run: ``python -m bench.ledger_load CONFIG.json RESULT.json`` (one process; the runner starts several).
"""

from __future__ import annotations

import asyncio
import random
import resource
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import text

from emanet.core.db import Database
from emanet.core.settings import Settings
from emanet.ledger import accounts
from emanet.ledger.service import EntryDraft, credit, debit, post_entries, post_entry

FUNDING = 10**12  # minor units in every wallet: no transfer can overdraw one
CURRENCY = "TRY"


def wallet(index: int) -> str:
    return accounts.user_available(f"usr_ledgerbench{index:06d}")


def ledger_settings(database_url: str, pool_size: int) -> Settings:
    return Settings(
        database_url=database_url,
        database_pool_size=pool_size,
        database_max_overflow=0,
        env="production",
        secret_key="bench-ledger-" + "x" * 40,
        sandbox_webhook_secret="whsec_YmVuY2gtbGVkZ2VyLW5vdC11c2VkLWZvci13ZWJob29rcw==",
        captcha_provider="turnstile",
        captcha_secret="bench-ledger-not-used",
        log_level="WARNING",
    )


async def fund_wallets(database: Database, count: int) -> None:
    """One entry that puts FUNDING into each wallet from the sandbox clearing account."""
    async with database.transaction() as session:
        await post_entry(
            session,
            "bench:ledger:funding",
            CURRENCY,
            [debit(accounts.provider_clearing("sandbox"), FUNDING * count)]
            + [credit(wallet(i), FUNDING) for i in range(count)],
            description="bench funding",
        )


async def fund_wallets_at(database_url: str, count: int) -> None:
    """``fund_wallets`` on the database at ``database_url``, through an engine of its own."""
    database = Database(ledger_settings(database_url, 2))
    try:
        await fund_wallets(database, count)
    finally:
        await database.dispose()


async def _connection_loop(
    database: Database,
    mode: str,
    batch_size: int,
    wallets: list[int],
    prefix: str,
    deadline: float,
    measure_from: float,
    done: list[int],
) -> None:
    order = random.Random(prefix)
    sequence = 0
    per_commit = batch_size if mode == "batch" else 1
    while time.perf_counter() < deadline:
        drafts = []
        for _ in range(per_commit):
            payer, payee = order.sample(wallets, 2)
            sequence += 1
            amount = 100 + sequence % 900
            drafts.append(
                EntryDraft(
                    f"{prefix}:{sequence}",
                    CURRENCY,
                    [debit(wallet(payer), amount), credit(wallet(payee), amount)],
                    description="bench transfer",
                )
            )
        async with database.transaction() as session:
            if mode == "batch":
                await post_entries(session, drafts)
            else:
                [draft] = drafts
                await post_entry(
                    session, draft.reference, draft.currency, draft.legs, description=draft.description
                )
        finished = time.perf_counter()
        if measure_from <= finished <= deadline:
            done[0] += per_commit


async def run(config: dict[str, Any]) -> dict[str, Any]:
    connections = int(config["connections"])
    database = Database(ledger_settings(config["database_url"], connections))
    try:
        async with database.engine.connect() as warm:  # open the pool's connections before the clock starts
            await warm.execute(text("SELECT 1"))
        start = time.perf_counter()
        measure_from = start + float(config["warmup_seconds"])
        deadline = measure_from + float(config["seconds"])
        slice_of = config["wallet_slices"]
        done = [0]
        before = resource.getrusage(resource.RUSAGE_SELF)
        await asyncio.gather(
            *[
                _connection_loop(
                    database,
                    config["mode"],
                    int(config["batch_size"]),
                    slice_of[i],
                    f"bench:{config['run_id']}:{config['process']}:{i}",
                    deadline,
                    measure_from,
                    done,
                )
                for i in range(connections)
            ]
        )
        after = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        await database.dispose()
    return {
        "entries": done[0],
        "window_s": float(config["seconds"]),
        "cpu_s": round(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, 2),
    }


def main() -> None:
    config = orjson.loads(Path(sys.argv[1]).read_bytes())
    import uvloop

    Path(sys.argv[2]).write_bytes(orjson.dumps(uvloop.run(run(config))))


if __name__ == "__main__":
    main()
