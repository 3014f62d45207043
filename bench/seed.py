"""Bulk-load closed escrows (with their ledger) in SQL, fast enough for 1,000,000 of them.

What one loaded escrow is (``i`` is its index; everything is a pure function of it, so loading 10,000
and then 990,000 more gives the same rows as loading 1,000,000 at once):
- a TRY escrow (one in ten USD) of a product in the general category, 2.5 % platform fee paid by the buyer,
  between two of ``users_for(total)`` bulk users, except that ``HEAVY_USER`` sells one escrow in ten
  (``i % 10 == 3``) and buys another one in ten (``i % 10 == 7``): a marketplace's own store, 200,000 escrows
  of 1,000,000, which ``make plans`` runs every statement as; escrow ``i`` was created ``31.5 * i`` seconds before the
  load (1,000,000 escrows a year; rows of the same period sit together on disk, as in a live table);
- 80 % ``released``: paid in full through the sandbox and released, with both ledger entries exactly as
  Emanet writes them — ``payment:…:capture`` (sandbox clearing → escrow account) and ``escrow:…:release``
  (escrow account → the seller's wallet and platform fees) — its own escrow account (balance 0), the
  seller's wallet and the hot accounts' balances increased by the same amounts;
- 12 % ``cancelled`` and 8 % ``expired`` before any payment: no money moved, so no ledger rows;
- two activity rows each (created, and the closing transition).
Rows are written in chunks, one transaction each, with ``session_replication_role = replica`` (the
pg_restore technique: row triggers and foreign-key checks are skipped while loading rows that are correct
by construction). ``verify`` then recomputes the ledger invariants over every row in SQL.
"""

# ruff: noqa: E501 (the SQL reads better on long lines)

from __future__ import annotations

import time
from typing import Any

import asyncpg

CHUNK = 100_000
HOT_SHARDS = 16
CURRENCIES = ("TRY", "USD")
HEAVY_USER = "usr_bulk_heavy"


def users_for(total: int) -> int:
    return max(200, total // 100)


_USERS = """
INSERT INTO users (id, email, phone, name, role, status, verification_level, locale, created_at, updated_at)
SELECT 'usr_bulk' || lpad(k::text, 10, '0'), 'bulk' || k || '@bench.emanet.test', NULL, 'Bulk user ' || k,
       'user', 'active', 'identity', 'en', now() - ((k * 7907) % 730) * interval '1 day',
       now() - ((k * 7907) % 730) * interval '1 day'
FROM generate_series(0, $1 - 1) AS k
UNION ALL
SELECT $2, 'heavy@bench.emanet.test', NULL, 'Heavy user', 'user', 'active', 'identity', 'en',
       now() - interval '730 days', now() - interval '730 days'
ON CONFLICT (id) DO NOTHING
"""

_ROWS = """
CREATE TEMP TABLE bulk ON COMMIT DROP AS
WITH base AS (
    SELECT i,
           'esc_bulk' || lpad(i::text, 12, '0') AS id,
           CASE WHEN i % 10 = 7 THEN $4 ELSE 'usr_bulk' || lpad((i % $3)::text, 10, '0') END AS buyer_id,
           CASE WHEN i % 10 = 3 THEN $4
                ELSE 'usr_bulk' || lpad(((i % $3 + 1 + (i / $3) % ($3 - 1)) % $3)::text, 10, '0') END AS seller_id,
           CASE WHEN i % 10 = 0 THEN 'USD' ELSE 'TRY' END AS currency,
           CASE WHEN i % 10 = 0 THEN 1000 + (i * 7919) % 99000 ELSE 10000 + (i * 7919) % 990000 END AS amount,
           CASE WHEN i % 100 < 80 THEN 'released' WHEN i % 100 < 92 THEN 'cancelled' ELSE 'expired' END
               AS status,
           date_trunc('second', now()) - make_interval(secs => (600 + i * 31.536)::double precision) AS created_at
    FROM generate_series($1::bigint, $2::bigint) AS i
)
SELECT base.*, (amount * 250 + 5000) / 10000 AS fee,
       amount + (amount * 250 + 5000) / 10000 AS total_due,
       CASE WHEN status = 'released' THEN row_number() OVER (PARTITION BY status = 'released' ORDER BY i) END AS r
FROM base
"""

_ESCROWS = """
INSERT INTO escrows (
    id, number, buyer_id, seller_id, created_by, status, title, description, category, market_type,
    is_digital, requires_delivery_document, currency, amount, fee_payer, platform_fee, buyer_fee, seller_fee,
    total_due, funded_amount, released_amount, refunded_amount, funding_sources, inspection_days,
    expires_at, funded_at, hold_until, closed_at, created_at, updated_at)
SELECT id, 'EM-B-' || lpad(i::text, 9, '0'), buyer_id, seller_id, buyer_id, status, 'Bulk order ' || i, '',
       'general', 'product', false, false, currency, amount, 'buyer', fee, fee, 0, total_due,
       CASE WHEN status = 'released' THEN total_due ELSE 0 END,
       CASE WHEN status = 'released' THEN total_due ELSE 0 END, 0,
       CASE WHEN status = 'released' THEN json_build_object('sandbox', total_due) ELSE '{}'::json END,
       7, created_at + interval '72 hours',
       CASE WHEN status = 'released' THEN created_at + interval '1 hour' END,
       CASE WHEN status = 'released' THEN created_at + interval '1 hour' END,
       least(now(), created_at + CASE status WHEN 'released' THEN interval '2 days'
                                              WHEN 'cancelled' THEN interval '1 day'
                                              ELSE interval '72 hours' END),
       created_at,
       least(now(), created_at + CASE status WHEN 'released' THEN interval '2 days'
                                              WHEN 'cancelled' THEN interval '1 day'
                                              ELSE interval '72 hours' END)
FROM bulk
"""

_ACTIVITIES = """
INSERT INTO escrow_activities (escrow_id, action, from_status, to_status, actor_id, actor_role, metadata,
                               created_at)
SELECT id, 'created', NULL, 'pending_payment', buyer_id, 'user', '{}'::json, created_at FROM bulk
UNION ALL
SELECT id, status, CASE WHEN status = 'released' THEN 'funded' ELSE 'pending_payment' END, status,
       CASE WHEN status = 'expired' THEN NULL ELSE buyer_id END,
       CASE WHEN status = 'expired' THEN 'system' ELSE 'user' END, '{}'::json,
       least(now(), created_at + interval '1 day')
FROM bulk
"""

_HOT_ACCOUNTS = """
INSERT INTO ledger_accounts (code, currency, kind, user_id, created_at)
SELECT code, currency, kind, NULL, now()
FROM (VALUES ('provider:sandbox:clearing', 'asset'), ('platform:fees', 'revenue')) AS hot(code, kind),
     unnest($1::text[]) AS currency
ON CONFLICT (code, currency) DO NOTHING
"""

_SELLER_ACCOUNTS = """
INSERT INTO ledger_accounts (code, currency, kind, user_id, created_at)
SELECT DISTINCT 'user:' || seller_id || ':available', currency, 'liability', seller_id, now()
FROM bulk WHERE status = 'released'
ON CONFLICT (code, currency) DO NOTHING
"""

_HOT_BALANCE_ROWS = """
INSERT INTO ledger_balances (account_id, shard, balance, allow_negative)
SELECT a.id, shard, 0, true
FROM ledger_accounts a CROSS JOIN generate_series(0, $1 - 1) AS shard
WHERE a.code IN ('provider:sandbox:clearing', 'platform:fees')
ON CONFLICT (account_id, shard) DO NOTHING
"""

_SELLER_BALANCE_ROWS = """
INSERT INTO ledger_balances (account_id, shard, balance, allow_negative)
SELECT a.id, 0, 0, false
FROM (SELECT DISTINCT seller_id, currency FROM bulk WHERE r IS NOT NULL) s
JOIN ledger_accounts a ON a.code = 'user:' || s.seller_id || ':available' AND a.currency = s.currency
ON CONFLICT (account_id, shard) DO NOTHING
"""

_ESCROW_ACCOUNTS = """
INSERT INTO ledger_accounts (id, code, currency, kind, user_id, created_at)
SELECT $1 + r - 1, 'escrow:' || id, currency, 'liability', NULL, created_at FROM bulk WHERE r IS NOT NULL
"""

_ESCROW_BALANCES = """
INSERT INTO ledger_balances (account_id, shard, balance, allow_negative)
SELECT $1 + r - 1, 0, 0, false FROM bulk WHERE r IS NOT NULL
"""

_ENTRIES = """
INSERT INTO ledger_entries (id, reference, currency, amount, description, escrow_id, metadata, created_at)
SELECT $1 + 2 * (r - 1), 'payment:pay_bulk' || lpad(i::text, 12, '0') || ':capture', currency, total_due,
       'Payment pay_bulk' || lpad(i::text, 12, '0') || ' for EM-B-' || lpad(i::text, 9, '0'), id,
       json_build_object('payment_id', 'pay_bulk' || lpad(i::text, 12, '0'), 'provider', 'sandbox'),
       created_at + interval '1 hour'
FROM bulk WHERE r IS NOT NULL
UNION ALL
SELECT $1 + 2 * (r - 1) + 1, 'escrow:' || id || ':release', currency, total_due,
       'Release of EM-B-' || lpad(i::text, 9, '0'), id, '{}'::json,
       least(now(), created_at + interval '2 days')
FROM bulk WHERE r IS NOT NULL
"""

# Each release's payment as the sandbox's success card leaves it, with its one attempt: the webhook and the
# browser's return find an attempt among all of them by reference.
_PAYMENTS = """
INSERT INTO payments (id, escrow_id, payer_id, provider, method, amount, currency, captured_amount,
                      refunded_amount, status, attempt, provider_reference, return_url, save_card,
                      last_checked_at, succeeded_at, created_at, updated_at)
SELECT 'pay_bulk' || lpad(i::text, 12, '0'), id, buyer_id, 'sandbox', 'card', total_due, currency, total_due,
       0, 'succeeded', 1, 'ch_sandbox_bulk' || lpad(i::text, 12, '0'), 'https://shop.example/return', false,
       created_at + interval '1 hour', created_at + interval '1 hour', created_at, created_at + interval '1 hour'
FROM bulk WHERE r IS NOT NULL
"""

_ATTEMPTS = """
INSERT INTO payment_attempts (key, payment_id, number, provider, provider_reference, status, created_at,
                              updated_at)
SELECT 'pay_bulk' || lpad(i::text, 12, '0') || '-1', 'pay_bulk' || lpad(i::text, 12, '0'), 1, 'sandbox',
       'ch_sandbox_bulk' || lpad(i::text, 12, '0'), 'succeeded', created_at, created_at + interval '1 hour'
FROM bulk WHERE r IS NOT NULL
"""

_POSTINGS = """
WITH hot AS (
    SELECT code, currency, id FROM ledger_accounts WHERE code IN ('provider:sandbox:clearing', 'platform:fees')
), rel AS (
    SELECT b.*, s.id AS seller_account
    FROM bulk b JOIN ledger_accounts s ON s.code = 'user:' || b.seller_id || ':available' AND s.currency = b.currency
    WHERE b.r IS NOT NULL
)
INSERT INTO ledger_postings (entry_id, account_id, amount, created_at)
SELECT $1 + 2 * (r - 1), (SELECT id FROM hot WHERE code = 'provider:sandbox:clearing' AND currency = rel.currency),
       total_due, created_at + interval '1 hour' FROM rel
UNION ALL SELECT $1 + 2 * (r - 1), $2 + r - 1, -total_due, created_at + interval '1 hour' FROM rel
UNION ALL SELECT $1 + 2 * (r - 1) + 1, $2 + r - 1, total_due, least(now(), created_at + interval '2 days') FROM rel
UNION ALL SELECT $1 + 2 * (r - 1) + 1, seller_account, -amount, least(now(), created_at + interval '2 days') FROM rel
UNION ALL
SELECT $1 + 2 * (r - 1) + 1, (SELECT id FROM hot WHERE code = 'platform:fees' AND currency = rel.currency), -fee,
       least(now(), created_at + interval '2 days') FROM rel
"""

_BALANCES = """
UPDATE ledger_balances b SET balance = b.balance + d.delta
FROM (
    SELECT s.id AS account_id, sum(x.amount) AS delta
    FROM bulk x JOIN ledger_accounts s ON s.code = 'user:' || x.seller_id || ':available' AND s.currency = x.currency
    WHERE x.r IS NOT NULL GROUP BY s.id
    UNION ALL
    SELECT h.id, sum(CASE WHEN h.code = 'platform:fees' THEN x.fee ELSE x.total_due END)
    FROM bulk x JOIN ledger_accounts h ON h.currency = x.currency
         AND h.code IN ('provider:sandbox:clearing', 'platform:fees')
    WHERE x.r IS NOT NULL GROUP BY h.id
) d
WHERE b.account_id = d.account_id AND b.shard = 0
"""


async def _reserve(connection: asyncpg.Connection, table: str, count: int) -> int:
    """Take ``count`` consecutive ids from the table's sequence; returns the first."""
    if count == 0:
        return 0
    sequence = await connection.fetchval("SELECT pg_get_serial_sequence($1, 'id')", table)
    first = int(await connection.fetchval("SELECT nextval($1::regclass)", sequence))
    await connection.execute("SELECT setval($1::regclass, $2)", sequence, first + count - 1)
    return first


async def load(dsn: str, first: int, count: int, *, total: int, log: Any = print) -> dict[str, Any]:
    """Load escrows ``first`` … ``first + count - 1``; ``total`` sizes the pool of users."""
    started = time.perf_counter()
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(_USERS, users_for(total), HEAVY_USER)
        await connection.execute(_HOT_ACCOUNTS, list(CURRENCIES))
        await connection.execute(_HOT_BALANCE_ROWS, HOT_SHARDS)
        for low in range(first, first + count, CHUNK):
            high = min(first + count, low + CHUNK) - 1
            async with connection.transaction():
                await connection.execute("SET LOCAL session_replication_role = replica")
                await connection.execute(_ROWS, low, high, users_for(total), HEAVY_USER)
                released = int(await connection.fetchval("SELECT count(r) FROM bulk"))
                await connection.execute(_ESCROWS)
                await connection.execute(_ACTIVITIES)
                await connection.execute(_SELLER_ACCOUNTS)
                await connection.execute(_SELLER_BALANCE_ROWS)
                accounts = await _reserve(connection, "ledger_accounts", released)
                entries = await _reserve(connection, "ledger_entries", 2 * released)
                await connection.execute(_ESCROW_ACCOUNTS, accounts)
                await connection.execute(_ESCROW_BALANCES, accounts)
                await connection.execute(_ENTRIES, entries)
                await connection.execute(_POSTINGS, entries, accounts)
                await connection.execute(_BALANCES)
                await connection.execute(_PAYMENTS)
                await connection.execute(_ATTEMPTS)
            log(f"  loaded escrows {low:,}…{high:,} ({time.perf_counter() - started:.0f} s)")
        load_seconds = time.perf_counter() - started
        for table in (
            "users",
            "escrows",
            "escrow_activities",
            "ledger_accounts",
            "ledger_balances",
            "ledger_entries",
            "ledger_postings",
            "payments",
            "payment_attempts",
        ):
            await connection.execute(f"VACUUM (ANALYZE) {table}")
        # The load's dirty pages written now, not by a checkpoint in the middle of the run measured next.
        await connection.execute("CHECKPOINT")
    finally:
        await connection.close()
    return {
        "escrows": count,
        "load_s": round(load_seconds, 1),
        "load_and_vacuum_s": round(time.perf_counter() - started, 1),
    }


_VERIFY = {
    "unbalanced_entries": """
        SELECT count(*) FROM (SELECT entry_id FROM ledger_postings GROUP BY entry_id
                              HAVING sum(amount) <> 0 OR count(*) < 2) x""",
    "entries_without_postings": """
        SELECT count(*) FROM ledger_entries e
        WHERE NOT EXISTS (SELECT 1 FROM ledger_postings p WHERE p.entry_id = e.id)""",
    "balance_mismatches": """
        SELECT count(*) FROM ledger_accounts a
        LEFT JOIN (SELECT account_id, sum(amount) AS s FROM ledger_postings GROUP BY account_id) p
               ON p.account_id = a.id
        LEFT JOIN (SELECT account_id, sum(balance) AS b FROM ledger_balances GROUP BY account_id) c
               ON c.account_id = a.id
        WHERE coalesce(c.b, 0) <> coalesce(p.s, 0) * CASE WHEN a.kind IN ('asset', 'expense') THEN 1 ELSE -1 END""",
    "currencies_not_zero": """
        SELECT count(*) FROM (SELECT a.currency FROM ledger_postings p JOIN ledger_accounts a ON a.id = p.account_id
                              GROUP BY a.currency HAVING sum(p.amount) <> 0) x""",
    "negative_wallets": """
        SELECT count(*) FROM ledger_balances WHERE balance < 0 AND NOT allow_negative""",
    "escrows_not_matching_ledger": """
        SELECT count(*) FROM escrows e
        LEFT JOIN (SELECT escrow_id, sum(amount) FILTER (WHERE reference LIKE 'payment:%') AS paid
                   FROM ledger_entries GROUP BY escrow_id) l ON l.escrow_id = e.id
        WHERE e.funded_amount <> coalesce(l.paid, 0)""",
    "captures_without_payment": """
        SELECT count(*) FROM ledger_entries e
        WHERE e.reference LIKE 'payment:%:capture'
          AND NOT EXISTS (SELECT 1 FROM payments p JOIN payment_attempts a ON a.payment_id = p.id
                          WHERE p.id = split_part(e.reference, ':', 2) AND p.captured_amount > 0)""",
}


async def verify(dsn: str) -> dict[str, int]:
    """The ledger's invariants (DESIGN.md) over every row, plus: each escrow's funded amount is what its
    capture entries moved. Every count must be 0."""
    connection = await asyncpg.connect(dsn)
    try:
        return {name: int(await connection.fetchval(query)) for name, query in _VERIFY.items()}
    finally:
        await connection.close()


async def counts(dsn: str) -> dict[str, int]:
    connection = await asyncpg.connect(dsn)
    try:
        return {
            table: int(await connection.fetchval(f"SELECT count(*) FROM {table}"))
            for table in (
                "escrows",
                "payments",
                "ledger_entries",
                "ledger_postings",
                "ledger_accounts",
                "users",
            )
        }
    finally:
        await connection.close()
