"""Every statement Emanet sends, run on a database of 1,000,000 escrows: which ones would not scale.

``make plans`` (``QUICK=1``: 100,000 escrows):
1. runs the PostgreSQL test suite with ``bench.statements``, which keeps each distinct statement Emanet's
   code sent, where it was sent from, and the parameters it was sent with;
2. bulk-loads a fresh database the way the benchmark's scale runs do (``bench.seed``) and ANALYZEs it;
3. runs each statement there under ``EXPLAIN (ANALYZE, BUFFERS)`` inside a transaction that is rolled back
   (a write that cannot run there — a foreign key to a row only the test had — is planned without running);
4. writes ``docs/plans.md`` and fails when a statement reads a large table whole or more than
   ``BUFFER_LIMIT`` buffers, unless its origin is in ``ACCEPTED`` with the reason why.

A test's parameters name the test's own rows, which do not exist in the large database, so a lookup by
them finds nothing: that pass checks the access path (an index, or a scan of the whole table). A second
pass runs every statement sent with a user's id again as the load's heaviest user (``seed.HEAVY_USER``, in
one escrow of five), with the same rules: that checks what one user with many rows costs. Why it exists:
a lookup that scanned every payment attempt went unnoticed until the scale databases held payments
(session 7); here it would have been the first line of the report.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import re
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from bench import pg, seed
from bench.run import migrate, say
from bench.stack import ROOT

BUFFER_LIMIT = 1_000  # 8 kB pages; an indexed lookup of a few rows reads tens
LARGE_TABLE = 10_000  # rows: a sequential scan of a table this size or larger is flagged

# Statements that read a large table whole by design, and why that is right. A key is the function that sends
# the statement (``domain/file.py:function``: accepted from wherever it is called) or a whole origin
# (``… via domain/router.py:route``: accepted for that route only).
ACCEPTED: dict[str, str] = {
    "admin/export.py:escrow_batches": "the CSV/XLSX export streams every matching escrow, in batches (its"
    " peak memory is measured by the benchmark)",
    "admin/dashboard.py:compute_stats": "the dashboard's counts over the last 30 days; cached for 5 minutes,"
    " and timed uncached on 1,000,000 escrows by the benchmark (target 100 ms)",
    "ledger/service.py:verify_ledger": "`emanet ledger verify` recomputes every invariant over every row",
    "payments/reconcile.py:our_records": "once a day per provider: that day's succeeded payments",
    "users/service.py:list_users via users/router.py:admin_list_users": "the admin user search by a"
    " substring of email, phone or name, and sorts by any column",
    "otp/service.py:is_blocked": "the blocked numbers and prefixes admins entered: a short list, matched as"
    " prefixes",
    "otp/service.py:list_blocks": "the admins' list of blocked numbers and prefixes, whole",
    "otp/service.py:cleanup": "phone states are forgotten after a quiet day, so the table holds one day's"
    " phones",
    "providers/sandbox.py:list_settlements": "the sandbox provider's own day listing (demos and tests)",
    "notifications/service.py:notify_all": "a fan-out's notifications, up to 1,000 rows in one insert: about"
    " 9 buffers for each row written (the heap and its indexes), none read",
}
# Accepted only as the heavy user: what one user's own rows cost, read whole because they are asked for whole.
ACCEPTED_AS_HEAVY_USER: dict[str, str] = {
    "escrow/service.py:list_escrows via escrow/router.py:list_escrows": "a user's own escrows sorted by"
    " anything but their creation time: every escrow of that user is read, and no one else's (an index"
    " per side and sort key would cost every escrow write); the default order reads one page",
    "escrow/service.py:list_escrows via escrow/router.py:admin_list_escrows": "the admin's list of one"
    " user's escrows (`user`) sorted by anything but their creation time: as a user's own list",
}


def acceptance(origin: str, *, as_heavy_user: bool = False) -> str | None:
    for accepted in (ACCEPTED, ACCEPTED_AS_HEAVY_USER) if as_heavy_user else (ACCEPTED,):
        reason = accepted.get(origin) or accepted.get(origin.split(" via ", 1)[0])
        if reason:
            return reason
    return None


@dataclass
class Planned:
    statement: str
    origins: list[str]
    buffers: int = 0
    ms: float | None = None  # None: planned, not run
    scans: list[tuple[str, float]] = field(default_factory=list)  # (table, rows it holds) read whole
    unindexed: list[str] = field(default_factory=list)  # small tables here that no index could serve it from
    error: str | None = None
    as_heavy_user: bool = False  # run with seed.HEAVY_USER in place of the test's users

    @property
    def why_accepted(self) -> str | None:
        reasons = [acceptance(origin, as_heavy_user=self.as_heavy_user) for origin in self.origins]
        return "; ".join(sorted({r for r in reasons if r})) if reasons and all(reasons) else None


_TEST_USER_ID = re.compile(r"usr_[0-9a-z]{26}")  # emanet.core.db.new_id("usr")


def as_heavy_user(value: Any) -> Any:
    """``value`` with every user id in it (alone, or inside a text such as an account code) replaced by the
    heavy user's."""
    if isinstance(value, str):
        return _TEST_USER_ID.sub(seed.HEAVY_USER, value)
    if isinstance(value, (list, tuple)):
        return type(value)(as_heavy_user(item) for item in value)
    if isinstance(value, dict):
        return {key: as_heavy_user(item) for key, item in value.items()}
    return value


def heavy_user_statements(statements: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The statements sent with a user's id, each with only those parameter sets, as the heavy user."""
    heavy = {}
    for statement, kept in statements.items():
        changed = [p for p in map(as_heavy_user, kept["parameters"]) if p not in kept["parameters"]]
        if changed:
            heavy[statement] = {"origins": kept["origins"], "parameters": changed}
    return heavy


def load_statements(directory: Path) -> dict[str, dict[str, Any]]:
    """Merge what each test process kept."""
    merged: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.glob("statements-*.pickle")):
        for statement, kept in pickle.loads(path.read_bytes()).items():
            into = merged.setdefault(statement, {"origins": set(), "parameters": []})
            into["origins"] |= kept["origins"]
            into["parameters"].extend(kept["parameters"][: 3 - len(into["parameters"])])
    return merged


def plan_nodes(node: dict[str, Any]) -> Iterable[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from plan_nodes(child)


def summarize(explained: dict[str, Any], table_rows: dict[str, float]) -> tuple[int, float | None, list]:
    """Buffers the statement read (shared, hit or read; its triggers' work included), its execution time,
    and the large tables it scanned whole."""
    top = explained["Plan"]
    buffers = int(top.get("Shared Hit Blocks", 0) + top.get("Shared Read Blocks", 0))
    scans = [
        (node["Relation Name"], table_rows.get(node["Relation Name"], 0))
        for node in plan_nodes(top)
        if node["Node Type"] == "Seq Scan" and table_rows.get(node["Relation Name"], 0) >= LARGE_TABLE
    ]
    return buffers, explained.get("Execution Time"), scans


def is_flagged(planned: Planned) -> bool:
    return bool(planned.scans or planned.unindexed) or planned.buffers > BUFFER_LIMIT


def served_by_an_index(explained: dict[str, Any], table: str) -> bool:
    """Whether the plan reaches ``table`` through an index condition, or reads it in an index's order with
    nothing to skip until a LIMIT stops it (a first page): not by reading it from end to end."""
    limited = any(node["Node Type"] == "Limit" for node in plan_nodes(explained["Plan"]))
    return any(
        "Index Cond" in node
        or any("Index Cond" in child for child in plan_nodes(node))
        or (limited and node["Node Type"] in ("Index Scan", "Index Only Scan") and "Filter" not in node)
        for node in plan_nodes(explained["Plan"])
        if node.get("Relation Name") == table
    )


async def replay(
    dsn: str, statements: dict[str, dict[str, Any]], *, as_heavy_user: bool = False
) -> list[Planned]:
    connection = await asyncpg.connect(dsn, server_settings={"jit": "off", "statement_timeout": "60s"})
    try:
        table_rows = {
            name: float(rows)
            for name, rows in await connection.fetch(
                "SELECT relname, reltuples FROM pg_class"
                " WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace"
            )
        }
        results = []
        for statement, kept in statements.items():
            worst: Planned | None = None
            for parameters in kept["parameters"] or [()]:
                planned = await _explain(connection, statement, tuple(parameters or ()), table_rows)
                planned.origins = sorted(kept["origins"])
                planned.as_heavy_user = as_heavy_user
                if worst is None or (planned.buffers, planned.ms or 0) > (worst.buffers, worst.ms or 0):
                    worst = planned
            assert worst is not None
            results.append(worst)
        return results
    finally:
        await connection.close()


async def _explain(
    connection: asyncpg.Connection, statement: str, parameters: tuple[Any, ...], table_rows: dict[str, float]
) -> Planned:
    planned = Planned(statement, [])
    for options in ("ANALYZE, BUFFERS, FORMAT JSON", "FORMAT JSON"):
        transaction = connection.transaction()
        await transaction.start()
        try:
            raw = await connection.fetchval(f"EXPLAIN ({options}) {statement}", *parameters)
        except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            planned.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:160]
            continue
        finally:
            await transaction.rollback()
        explained = (orjson.loads(raw) if isinstance(raw, str) else raw)[0]
        planned.buffers, planned.ms, planned.scans = summarize(explained, table_rows)
        planned.error = None
        planned.unindexed = await _unindexed(connection, statement, parameters, explained, table_rows)
        return planned
    return planned


async def _unindexed(
    connection: asyncpg.Connection,
    statement: str,
    parameters: tuple[Any, ...],
    explained: dict[str, Any],
    table_rows: dict[str, float],
) -> list[str]:
    """The tables the statement reads whole only because they are small here (the load fills the escrow,
    payment and ledger tables, not jobs, events or webhooks): planned again with sequential scans and hash
    and merge joins forbidden, those still reached without an index condition would be read whole however
    large they grew."""
    small = sorted(
        {
            node["Relation Name"]
            for node in plan_nodes(explained["Plan"])
            if node["Node Type"] == "Seq Scan" and table_rows.get(node["Relation Name"], 0) < LARGE_TABLE
        }
    )
    if not small:
        return []
    transaction = connection.transaction()
    await transaction.start()
    try:
        # Nested loops too: a tiny table is hashed whole, where a large one would be probed by its index.
        await connection.execute(
            "SET LOCAL enable_seqscan = off; SET LOCAL enable_hashjoin = off;"
            " SET LOCAL enable_mergejoin = off"
        )
        raw = await connection.fetchval(f"EXPLAIN (FORMAT JSON) {statement}", *parameters)
    finally:
        await transaction.rollback()
    forced = (orjson.loads(raw) if isinstance(raw, str) else raw)[0]
    return [table for table in small if not served_by_an_index(forced, table)]


# ---------------------------------------------------------------------------------------------- report
_COLUMN_LIST = re.compile(r"(?:\b\w+\.\w+(?: AS \w+)?, ){3,}\w+\.\w+(?: AS \w+)?")


def _one_line(statement: str, width: int = 220) -> str:
    """The statement on one line, a long list of columns shortened to its first: the table and the
    conditions are what tell a plan apart."""
    text = _COLUMN_LIST.sub(lambda m: m.group(0).split(", ", 1)[0] + ", …", " ".join(statement.split()))
    return (text[: width - 1] + "…" if len(text) > width else text).replace("|", "\\|")


def _flagged_table(flagged: list[Planned]) -> list[str]:
    lines = [
        "| from | buffers | ms | whole tables read | accepted because | statement |",
        "|---|---|---|---|---|---|",
    ]
    for r in flagged:
        scans = (
            ", ".join(
                [f"{table} ({rows:,.0f} rows)" for table, rows in r.scans]
                + [f"{table} (no index serves it)" for table in r.unindexed]
            )
            or "–"
        )
        ms = f"{r.ms:.1f}" if r.ms is not None else "not run"
        why = r.why_accepted or "**not accepted**"
        origins = "<br>".join(r.origins)
        lines.append(f"| {origins} | {r.buffers:,} | {ms} | {scans} | {why} | `{_one_line(r.statement)}` |")
    return lines


def _costliest_table(rest: list[Planned], count: int) -> list[str]:
    lines = ["| from | buffers | ms | statement |", "|---|---|---|---|"]
    for r in rest[:count]:
        ms = f"{r.ms:.2f}" if r.ms is not None else "not run"
        lines.append(f"| {'<br>'.join(r.origins)} | {r.buffers:,} | {ms} | `{_one_line(r.statement)}` |")
    return lines


def _split(results: list[Planned]) -> tuple[list[Planned], list[Planned], list[Planned]]:
    """(flagged, flagged and not accepted, the others that ran or were planned), costliest first."""
    flagged = sorted((r for r in results if is_flagged(r)), key=lambda r: -r.buffers)
    refused = [r for r in flagged if r.why_accepted is None]
    rest = sorted((r for r in results if not is_flagged(r) and r.error is None), key=lambda r: -r.buffers)
    return flagged, refused, rest


def _tally(flagged: list[Planned], refused: list[Planned], rest: list[Planned]) -> list[str]:
    return [
        f"- reading a table of {LARGE_TABLE:,}+ rows whole, a smaller one that no index could serve, or more"
        f" than {BUFFER_LIMIT:,} buffers: **{len(flagged)}**, of which **{len(refused)}** not accepted",
        f"- every other statement: at most {max((r.buffers for r in rest), default=0):,} buffers and"
        f" {max((r.ms or 0 for r in rest), default=0):.2f} ms",
    ]


def report(
    results: list[Planned],
    *,
    escrows: int,
    counts: dict[str, int],
    tests: str,
    heavy: list[Planned],
    heavy_escrows: dict[str, int],
) -> str:
    flagged, refused, rest = _split(results)
    senders = {origin.split(" via ")[0] for r in results for origin in r.origins}
    lines = [
        "# Query plans at scale",
        "",
        f"Every distinct statement Emanet's code sent to PostgreSQL during the test suite ({tests}), run"
        f" again under `EXPLAIN (ANALYZE, BUFFERS)` on a database of {escrows:,} escrows, each in a"
        " transaction that was rolled back. Written by `make plans` (`bench/plans.py`) on"
        f" {datetime.now(UTC):%Y-%m-%d}. Rows in the database: "
        + ", ".join(f"{table} {rows:,}" for table, rows in counts.items())
        + ".",
        "",
        "The tests' parameters name the tests' own rows, which this database does not hold, so what a"
        " statement shows here is its access path — an index, or a scan of the whole table; the second"
        " part below runs the statements that name a user again as the heaviest user of the load. The"
        " load fills the escrow, payment, ledger and user tables; the others"
        " (jobs, events, notifications, webhooks, OTP) are as small as the tests left"
        " them, so a statement that reads one of those whole is planned again with sequential scans"
        " forbidden: if no index can serve it then either, it would read the table whole however large it"
        " grew.",
        "",
        f"- statements: **{len(results)}**, sent by {len(senders)} functions in `emanet/`;"
        f" {sum(r.ms is None and r.error is None for r in results)} planned without running (a write that"
        f" refers to a test's row), {sum(r.error is not None for r in results)} could not be planned",
        *_tally(flagged, refused, rest),
        "",
        "## Statements that read a table whole or many buffers",
        "",
        *_flagged_table(flagged),
        "",
        "## The most expensive of the others",
        "",
        *_costliest_table(rest, 15),
    ]
    heavy_flagged, heavy_refused, heavy_rest = _split(heavy)
    lines += [
        "",
        "## As the heaviest user",
        "",
        f"The {len(heavy):,} statements sent with a user's id, run again with `{seed.HEAVY_USER}` in its"
        " place (every user id among the parameters, and inside account codes): the load's marketplace"
        f" store, seller of {heavy_escrows['as seller']:,} escrows and buyer of"
        f" {heavy_escrows['as buyer']:,}, with the seller's wallet credited by every release. Same rules"
        " as above.",
        "",
        *_tally(heavy_flagged, heavy_refused, heavy_rest),
        "",
        *([*_flagged_table(heavy_flagged), ""] if heavy_flagged else []),
        "The most expensive of the others:",
        "",
        *_costliest_table(heavy_rest, 10),
    ]
    errors = [r for r in results if r.error is not None]
    if errors:
        lines += ["", "## Could not be planned", ""]
        lines += [f"- {', '.join(r.origins)}: {r.error} — `{_one_line(r.statement, 100)}`" for r in errors]
    lines += [
        "",
        "## Reproduce",
        "",
        "```",
        "make plans          # 1,000,000 escrows: the test suite (4 min), the load (3 min), the replay",
        "make plans QUICK=1  # 100,000 escrows",
        "```",
        "",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ main
def capture(directory: Path) -> str:
    """Run the PostgreSQL test suite with the statement recorder; returns pytest's summary line."""
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("statements-*.pickle"):
        old.unlink()
    finished = subprocess.run(
        [
            str(Path(sys.executable).parent / "pytest"),
            "-n",
            "2",
            "-p",
            "no:cacheprovider",
            "-p",
            "bench.statements",
            "-q",
        ],
        cwd=ROOT,
        env={**os.environ, "EMANET_STATEMENTS_DIR": str(directory)},
        capture_output=True,
        text=True,
        check=False,
    )
    (directory / "pytest.log").write_text(finished.stdout + finished.stderr)
    summary = (finished.stdout.strip().splitlines() or ["no output"])[-1].strip("= ")
    if finished.returncode != 0:
        failed = [line for line in finished.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
        say(f"the test suite did not pass ({summary}): {failed}; its statements are replayed all the same")
    return summary


async def load_database(name: str, escrows: int) -> dict[str, int]:
    await pg.create_database(name)
    migrate(name)
    await seed.load(pg.dsn_for(name), 0, escrows, total=escrows, log=say)
    connection = await asyncpg.connect(pg.dsn_for(name))
    try:
        # Only the tables the load filled: an empty table analyzed is planned as one row, whose whole read
        # costs what a probe does; never analyzed, it is assumed ten pages, and probed by its index.
        filled = await connection.fetch(
            "SELECT quote_ident(relname) FROM pg_class WHERE relkind = 'r'"
            " AND relnamespace = 'public'::regnamespace AND pg_relation_size(oid) > 0"
        )
        await connection.execute("VACUUM ANALYZE " + ", ".join(table for (table,) in filled))
    finally:
        await connection.close()
    return await seed.counts(pg.dsn_for(name))


async def heavy_user_escrows(dsn: str) -> dict[str, int]:
    connection = await asyncpg.connect(dsn)
    try:
        row = await connection.fetchrow(
            "SELECT count(*) FILTER (WHERE seller_id = $1) AS seller,"
            " count(*) FILTER (WHERE buyer_id = $1) AS buyer FROM escrows",
            seed.HEAVY_USER,
        )
    finally:
        await connection.close()
    return {"as seller": row["seller"], "as buyer": row["buyer"]}


def main() -> int:
    quick = os.environ.get("QUICK", "").strip() not in ("", "0", "false")
    escrows = 100_000 if quick else 1_000_000
    workdir = ROOT / "bench" / "results" / "plans"
    say("running the test suite to record the statements Emanet sends")
    tests = capture(workdir)
    statements = load_statements(workdir)
    say(f"{len(statements)} distinct statements; loading {escrows:,} escrows")
    name = "emanet_bench_plans"
    try:
        counts = asyncio.run(load_database(name, escrows))
        say("replaying every statement under EXPLAIN (ANALYZE, BUFFERS)")
        results = asyncio.run(replay(pg.dsn_for(name), statements))
        as_heavy = heavy_user_statements(statements)
        say(f"again as {seed.HEAVY_USER}: the {len(as_heavy)} statements sent with a user's id")
        heavy = asyncio.run(replay(pg.dsn_for(name), as_heavy, as_heavy_user=True))
        heavy_escrows = asyncio.run(heavy_user_escrows(pg.dsn_for(name)))
    finally:
        asyncio.run(pg.drop_database(name))
    (ROOT / "docs" / "plans.md").write_text(
        report(results, escrows=escrows, counts=counts, tests=tests, heavy=heavy, heavy_escrows=heavy_escrows)
    )
    refused = [
        (r, as_whom)
        for replayed, as_whom in ((results, ""), (heavy, " as the heavy user"))
        for r in replayed
        if is_flagged(r) and r.why_accepted is None
    ]
    for r, as_whom in refused:
        say(f"not accepted{as_whom}: {', '.join(r.origins)}: {r.buffers:,} buffers, scans {r.scans}")
    say(f"docs/plans.md written; {len(refused)} statements not accepted")
    return 1 if refused else 0


if __name__ == "__main__":
    sys.exit(main())
