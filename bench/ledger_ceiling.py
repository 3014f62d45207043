"""The database's own ceiling for one ledger transfer: ``post_entry``'s statement driven by pgbench.

pgbench (a C client, prepared statements, 8 clients) runs exactly the statement ``post_entry`` sends for a
transfer between two funded wallets — accounts looked up, the entry and its two postings inserted, both
balance rows updated under the non-negative CHECK, the balance trigger and the foreign keys checked — one
transaction each, as the ledger bench does. No Python is involved, so its tps is what PostgreSQL itself does
for our transfer on this machine: the most any client of this ledger could reach, next to TPC-B's.

The script is generated from ``emanet.ledger.service._PG_POST_ENTRY``, so it cannot drift from the code.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import tempfile
from typing import Any

import asyncpg

from bench import pg
from bench.ledger_load import CURRENCY
from emanet.ledger.service import _PG_POST_ENTRY

# pgbench reads ``:name`` as a variable everywhere, string literals included, so no colon may appear in
# the SQL other than its own variables: the account codes are built with chr(58).
_COLON = "chr(58)"
_PAYER = (
    f"('user' || {_COLON} || 'usr_ledgerbench' || lpad(CAST(:payer AS text), 6, '0')"
    f" || {_COLON} || 'available')"
)
_PAYEE = _PAYER.replace(":payer", ":payee")
# A transfer of ``amount`` from payer to payee: wallets are liabilities, so the payer's balance falls.
_ARGUMENTS = {
    "currency": f"'{CURRENCY}'",
    "codes": f"ARRAY[{_PAYER}, {_PAYEE}]",
    "leg_codes": f"ARRAY[{_PAYER}, {_PAYEE}]",
    "leg_amounts": "ARRAY[CAST(:amount AS bigint), CAST(:negative AS bigint)]",
    "balance_codes": f"ARRAY[{_PAYER}, {_PAYEE}]",
    "balance_shards": "ARRAY[0, 0]",
    "balance_deltas": "ARRAY[CAST(:negative AS bigint), CAST(:amount AS bigint)]",
    "reference": "('pgbench' || gen_random_uuid())",
    "amount": "CAST(:amount AS bigint)",
    "description": "'bench transfer'",
    "escrow_id": "CAST(NULL AS text)",
    "metadata": "'{}'",
    "fx": "'null'",
    "created_at": "now()",
}
_PARAMETER = re.compile(r"(?<![:\w]):(\w+)")


def script(wallets: int) -> str:
    """The pgbench script: two distinct random wallets of ``wallets``, an amount, one transfer."""
    statement = _PARAMETER.sub(lambda m: _ARGUMENTS[m.group(1)], str(_PG_POST_ENTRY))
    return (
        f"\\set payer random(0, {wallets - 1})\n"
        f"\\set payee (:payer + random(1, {wallets - 1})) % {wallets}\n"
        "\\set amount random(100, 999)\n"
        "\\set negative -1 * :amount\n"
        "BEGIN;\n"
        f"{statement};\n"
        "COMMIT;\n"
    )


async def _entries(database: str) -> int:
    connection = await asyncpg.connect(pg.dsn_for(database))
    try:
        count: int = await connection.fetchval("SELECT count(*) FROM ledger_entries")
        return count
    finally:
        await connection.close()


def run(database: str, wallets: int, clients: int, seconds: int) -> dict[str, Any]:
    """Run the script on ``database`` (migrated, wallets funded by ``ledger_load.fund_wallets``); raises
    unless every transaction pgbench counted posted exactly one entry."""
    before = asyncio.run(_entries(database))
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as file:
        file.write(script(wallets))
    try:
        done = subprocess.run(
            [
                "pgbench",
                "-n",  # no vacuum of pgbench's own tables: there are none here
                "-M",
                "prepared",
                "-c",
                str(clients),
                "-j",
                str(min(clients, os.cpu_count() or 1)),
                "-T",
                str(seconds),
                "-f",
                file.name,
                database,
            ],
            env=pg.pgbench_env(),
            check=True,
            capture_output=True,
            text=True,
            timeout=seconds + 120,
        )
    finally:
        os.unlink(file.name)
    result = pg.parse_pgbench(done.stdout, clients, seconds)
    posted = asyncio.run(_entries(database)) - before
    if posted != result.transactions:
        raise RuntimeError(
            f"pgbench counted {result.transactions} transfers but {posted} entries were posted"
        )
    return {**pg.as_dict(result), "entries_posted": posted}
