"""The only way money moves: ``post_entry`` writes one balanced, append-only journal entry.

Every entry carries a unique ``reference`` (``escrow:esc_…:release``); posting the same reference twice
is a no-op that returns the first entry, so retries, duplicate webhooks and re-run jobs move money once.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from emanet.core import clock
from emanet.core.db import transaction_state, upsert
from emanet.core.money import check_currency
from emanet.ledger import accounts
from emanet.ledger.fx import Conversion, reporting_converter
from emanet.ledger.models import Account, AccountBalance, JournalEntry, Posting


@dataclass(frozen=True)
class Leg:
    """``amount`` > 0 debits ``account``; < 0 credits it."""

    account: str
    amount: int


class UnbalancedEntry(ValueError):
    pass


@dataclass(frozen=True)
class PostedEntry:
    id: int
    reference: str
    created: bool  # False when the reference had been posted before: nothing moved this time


def debit(account: str, amount: int) -> Leg:
    return Leg(account, amount)


def credit(account: str, amount: int) -> Leg:
    return Leg(account, -amount)


def _validated(legs: Sequence[Leg]) -> list[Leg]:
    kept = [leg for leg in legs if leg.amount != 0]
    if len(kept) < 2:
        raise UnbalancedEntry("an entry needs at least two non-zero legs")
    if sum(leg.amount for leg in kept) != 0:
        raise UnbalancedEntry(f"debits and credits differ by {sum(leg.amount for leg in kept)}")
    for leg in kept:
        accounts.kind_of(leg.account)
    return kept


def _hot_shard(session: AsyncSession, reference: str) -> int:
    """The balance shard of every hot account a transaction touches: picked by its first entry's reference
    and kept for the rest of the transaction. Were it picked per entry, a transaction posting two entries
    (a capture and its fee) would lock two rows of one account, and two such transactions could each hold
    the row the other waits for (a deadlock, seen in the benchmark at 32 clients)."""
    return transaction_state(
        session, "emanet.ledger.hot_shard", lambda: zlib.crc32(reference.encode()) % accounts.HOT_SHARDS
    )


async def account_ids(session: AsyncSession, codes: Iterable[str], currency: str) -> dict[str, int]:
    """Ids of the accounts, created on first use (wallets are auto-created on first credit)."""
    wanted = set(codes)
    rows = await session.execute(
        select(Account.code, Account.id).where(Account.currency == currency, Account.code.in_(wanted))
    )
    found = {code: account_id for code, account_id in rows.all()}
    missing = sorted(wanted - found.keys())
    if missing:
        found.update(await open_accounts(session, missing, currency))
    return found


async def open_accounts(session: AsyncSession, wanted: Iterable[str], currency: str) -> dict[str, int]:
    """Create the accounts with their balance rows (those that exist are left as they are) and return all
    their ids. On PostgreSQL one statement does both; an account that already existed, or that a concurrent
    transaction created in the meantime, is then looked up. A caller that knows an entry will be the first
    to use an account opens it first: posting to a missing account costs a failed post and a second one."""
    codes = sorted(set(wanted))
    created: dict[str, int] = {}
    if session.get_bind().dialect.name == "postgresql":
        shard_rows = _shard_rows(codes)
        rows = await session.execute(
            _PG_CREATE_ACCOUNTS,
            {
                "currency": currency,
                "created_at": clock.now(),
                "codes": codes,
                "kinds": [accounts.kind_of(code).value for code in codes],
                "user_ids": [accounts.owner_user_id(code) for code in codes],
                "shard_codes": [code for code, _, _ in shard_rows],
                "shards": [shard for _, shard, _ in shard_rows],
                "allow_negative": [allow for _, _, allow in shard_rows],
            },
        )
        created = {code: account_id for code, account_id in rows.all()}
        if len(created) == len(codes):
            return created
    else:
        await session.execute(
            upsert(session, Account)
            .values(
                [
                    {
                        "code": code,
                        "currency": currency,
                        "kind": accounts.kind_of(code).value,
                        "user_id": accounts.owner_user_id(code),
                    }
                    for code in codes
                ]
            )
            .on_conflict_do_nothing(index_elements=["code", "currency"])
        )
    rows = await session.execute(
        select(Account.code, Account.id).where(
            Account.currency == currency, Account.code.in_([c for c in codes if c not in created])
        )
    )
    others = {code: account_id for code, account_id in rows.all()}
    await session.execute(
        upsert(session, AccountBalance)
        .values(
            [
                {"account_id": others[code], "shard": shard, "balance": 0, "allow_negative": allow_negative}
                for code, shard, allow_negative in _shard_rows(list(others))
            ]
        )
        .on_conflict_do_nothing(index_elements=["account_id", "shard"])
    )
    return {**created, **others}


# The accounts and their balance rows in one statement. Arrays rather than a multi-row VALUES list keep
# the statement the same whatever the number of accounts, so it is compiled once and then cached (a
# VALUES list is compiled again on every call: the benchmark found it in every first capture of an escrow).
_PG_CREATE_ACCOUNTS = text(
    "WITH inserted AS ("
    " INSERT INTO ledger_accounts (code, currency, kind, user_id, created_at)"
    " SELECT a.code, :currency, a.kind, a.user_id, :created_at"
    " FROM unnest(CAST(:codes AS text[]), CAST(:kinds AS text[]), CAST(:user_ids AS text[]))"
    " AS a(code, kind, user_id)"
    " ON CONFLICT (code, currency) DO NOTHING RETURNING code, id),"
    " new_balances AS ("
    " INSERT INTO ledger_balances (account_id, shard, balance, allow_negative)"
    " SELECT inserted.id, s.shard, 0, s.allow_negative FROM inserted"
    " JOIN unnest(CAST(:shard_codes AS text[]), CAST(:shards AS integer[]),"
    " CAST(:allow_negative AS boolean[])) AS s(code, shard, allow_negative) ON s.code = inserted.code"
    " ON CONFLICT (account_id, shard) DO NOTHING)"
    " SELECT code, id FROM inserted"
)


def _shard_rows(codes: list[str]) -> list[tuple[str, int, bool]]:
    return [
        (code, shard, accounts.may_go_negative(code))
        for code in sorted(codes)
        for shard in range(accounts.HOT_SHARDS if accounts.is_hot(code) else 1)
    ]


async def post_entry(
    session: AsyncSession,
    reference: str,
    currency: str,
    legs: Sequence[Leg],
    *,
    description: str = "",
    metadata: dict[str, Any] | None = None,
    escrow_id: str | None = None,
) -> PostedEntry:
    """Write one balanced entry and update the cached balances, in the caller's transaction."""
    check_currency(currency)
    kept = _validated(legs)
    volume = _volume(kept)
    fx = (await reporting_converter(currency))(volume)
    if session.get_bind().dialect.name == "postgresql":
        entry_id = await _pg_post_entry(
            session, reference, currency, kept, volume, description, metadata, escrow_id, fx
        )
    else:
        ids = await account_ids(session, {leg.account for leg in kept}, currency)
        deltas: dict[tuple[int, int], int] = defaultdict(int)
        for leg in kept:
            deltas[(ids[leg.account], _shard_of(session, reference, leg.account))] += _balance_delta(leg)
        entry_id = (
            await session.execute(
                upsert(session, JournalEntry)
                .values(
                    reference=reference,
                    currency=currency,
                    amount=volume,
                    description=description[:300],
                    escrow_id=escrow_id,
                    details=metadata or {},
                    fx=fx,
                )
                .on_conflict_do_nothing(index_elements=["reference"])
                .returning(JournalEntry.id)
            )
        ).scalar()
        if entry_id is not None:
            await session.execute(
                insert(Posting),
                [
                    {"entry_id": entry_id, "account_id": ids[leg.account], "amount": leg.amount}
                    for leg in kept
                ],
            )
            await _apply_balance_deltas(session, sorted(deltas.items()))
    if entry_id is None:  # posted before (a retry, a duplicate webhook, a concurrent worker): no effect
        existing = (
            await session.execute(select(JournalEntry.id).where(JournalEntry.reference == reference))
        ).scalar_one()
        return PostedEntry(existing, reference, created=False)
    return PostedEntry(entry_id, reference, created=True)


def _shard_of(session: AsyncSession, reference: str, account: str) -> int:
    return _hot_shard(session, reference) if accounts.is_hot(account) else 0


def _balance_delta(leg: Leg) -> int:
    """What the leg adds to its account's balance: debits raise asset balances and lower the others."""
    return leg.amount * accounts.normal_sign(accounts.kind_of(leg.account))


async def _pg_post_entry(
    session: AsyncSession,
    reference: str,
    currency: str,
    kept: list[Leg],
    volume: int,
    description: str,
    metadata: dict[str, Any] | None,
    escrow_id: str | None,
    fx: dict[str, Any] | None,
) -> int | None:
    """One statement: the accounts looked up by code, the entry, its postings and the balance updates. Only
    an account used for the first time costs a second round trip (create it, then post)."""
    connection = await session.connection()  # begins the transaction the hot shard is kept for
    deltas: dict[tuple[str, int], int] = defaultdict(int)
    for leg in kept:
        deltas[(leg.account, _shard_of(session, reference, leg.account))] += _balance_delta(leg)
    codes = sorted({leg.account for leg in kept})
    params = {
        "reference": reference,
        "currency": currency,
        "amount": volume,
        "description": description[:300],
        "escrow_id": escrow_id,
        "metadata": orjson.dumps(metadata or {}).decode(),
        "fx": orjson.dumps(fx).decode(),
        "created_at": clock.now(),
        "codes": codes,
        "leg_codes": [leg.account for leg in kept],
        "leg_amounts": [leg.amount for leg in kept],
        "balance_codes": [code for code, _ in deltas],
        "balance_shards": [shard for _, shard in deltas],
        "balance_deltas": list(deltas.values()),
    }
    entry_id, updated, missing = (await connection.execute(_PG_POST_ENTRY, params)).one()
    if missing:
        await open_accounts(session, missing, currency)
        entry_id, updated, missing = (await connection.execute(_PG_POST_ENTRY, params)).one()
        if missing:
            raise RuntimeError(f"ledger accounts {missing} in {currency} could not be created")
    if entry_id is not None and updated != len(deltas):
        raise RuntimeError("a balance row is missing; run `emanet ledger verify`")
    return entry_id  # type: ignore[no-any-return]


@dataclass(frozen=True)
class EntryDraft:
    """One entry for ``post_entries``: the arguments ``post_entry`` takes."""

    reference: str
    currency: str
    legs: Sequence[Leg]
    description: str = ""
    metadata: dict[str, Any] | None = None
    escrow_id: str | None = None


async def post_entries(session: AsyncSession, drafts: Sequence[EntryDraft]) -> list[PostedEntry]:
    """Many entries in the caller's transaction — on PostgreSQL in one statement (plus one account lookup per
    currency), for bulk work such as settlements and the benchmark's batches. Same rules as ``post_entry``:
    each entry balanced, a reference posted before is a no-op (``created=False``)."""
    references = [draft.reference for draft in drafts]
    if len(set(references)) != len(references):
        raise ValueError("a batch may not hold the same reference twice")
    if not drafts:
        return []
    if session.get_bind().dialect.name != "postgresql":
        return [
            await post_entry(
                session,
                d.reference,
                d.currency,
                d.legs,
                description=d.description,
                metadata=d.metadata,
                escrow_id=d.escrow_id,
            )
            for d in drafts
        ]
    kept_legs = {draft.reference: _validated(draft.legs) for draft in drafts}
    conversions: dict[str, Conversion] = {}
    for currency in sorted({d.currency for d in drafts}):
        check_currency(currency)
        conversions[currency] = await reporting_converter(currency)
    connection = await session.connection()  # begins the transaction the hot shard is kept for
    entries: dict[str, list[Any]] = defaultdict(list)
    legs: dict[str, list[Any]] = defaultdict(list)
    keys_of: dict[str, set[tuple[str, str, int]]] = {}
    no_metadata = orjson.dumps({}).decode()
    for draft in drafts:
        kept = kept_legs[draft.reference]
        volume = _volume(kept)
        entries["reference"].append(draft.reference)
        entries["currency"].append(draft.currency)
        entries["amount"].append(volume)
        entries["description"].append(draft.description[:300])
        entries["escrow_id"].append(draft.escrow_id)
        entries["metadata"].append(orjson.dumps(draft.metadata).decode() if draft.metadata else no_metadata)
        entries["fx"].append(orjson.dumps(conversions[draft.currency](volume)).decode())
        keys = keys_of[draft.reference] = set()
        for leg in kept:
            shard = _shard_of(session, draft.reference, leg.account)
            legs["reference"].append(draft.reference)
            legs["code"].append(leg.account)
            legs["currency"].append(draft.currency)
            legs["amount"].append(leg.amount)
            legs["shard"].append(shard)
            legs["delta"].append(_balance_delta(leg))
            keys.add((leg.account, draft.currency, shard))
    params = {
        **{f"entry_{name}": values for name, values in entries.items()},
        **{f"leg_{name}": values for name, values in legs.items()},
        "created_at": clock.now(),
    }
    rows = (await connection.execute(_PG_POST_ENTRIES, params)).all()
    if rows[0].missing:  # accounts used for the first time: create them, then post
        for currency in sorted({d.currency for d in drafts}):
            codes = {leg.account for d in drafts if d.currency == currency for leg in kept_legs[d.reference]}
            await account_ids(session, codes, currency)
        rows = (await connection.execute(_PG_POST_ENTRIES, params)).all()
        if rows[0].missing:
            raise RuntimeError("ledger accounts could not be created")
    created = {row.reference: row.id for row in rows if row.reference is not None}
    expected = len(set().union(*(keys_of[r] for r in created))) if created else 0
    if rows[0].updated != expected:
        raise RuntimeError("a balance row is missing; run `emanet ledger verify`")
    existing: dict[str, int] = {}
    if len(created) != len(drafts):
        found_rows = await session.execute(
            select(JournalEntry.reference, JournalEntry.id).where(
                JournalEntry.reference.in_([r for r in references if r not in created])
            )
        )
        existing = {reference: entry_id for reference, entry_id in found_rows.all()}
    return [
        PostedEntry(created[r], r, created=True)
        if r in created
        else PostedEntry(existing[r], r, created=False)
        for r in references
    ]


# The batch: input rows unnested, the accounts looked up by (code, currency) — when one does not exist yet
# (``missing`` > 0) nothing is written, and the caller creates it and runs the statement again — the
# entries not posted before inserted, their postings, and their balance deltas summed per row, the rows
# locked in (account, shard) order first so concurrent batches queue instead of deadlocking. Each result row
# is one created entry with the count of balance rows updated and of accounts missing.
_PG_POST_ENTRIES = text(
    "WITH input AS ("
    " SELECT * FROM unnest(CAST(:entry_reference AS text[]), CAST(:entry_currency AS text[]),"
    " CAST(:entry_amount AS bigint[]), CAST(:entry_description AS text[]), CAST(:entry_escrow_id AS text[]),"
    " CAST(:entry_metadata AS json[]), CAST(:entry_fx AS json[]))"
    " AS e(reference, currency, amount, description, escrow_id, metadata, fx)),"
    " leg AS ("
    " SELECT * FROM unnest(CAST(:leg_reference AS text[]), CAST(:leg_code AS text[]),"
    " CAST(:leg_currency AS text[]), CAST(:leg_amount AS bigint[]), CAST(:leg_shard AS integer[]),"
    " CAST(:leg_delta AS bigint[])) AS l(reference, code, currency, amount, shard, delta)),"
    " wanted AS (SELECT DISTINCT code, currency FROM leg),"
    " acct AS ("
    " SELECT a.id, a.code, a.currency FROM wanted"
    " JOIN ledger_accounts AS a ON a.code = wanted.code AND a.currency = wanted.currency),"
    " absent AS (SELECT (SELECT count(*) FROM wanted) - (SELECT count(*) FROM acct) AS n),"
    " entry AS ("
    " INSERT INTO ledger_entries"
    " (reference, currency, amount, description, escrow_id, metadata, fx, created_at)"
    " SELECT reference, currency, amount, description, escrow_id, metadata, fx, :created_at FROM input"
    " WHERE (SELECT n FROM absent) = 0"
    " ON CONFLICT (reference) DO NOTHING RETURNING id, reference),"
    " resolved AS ("
    " SELECT leg.reference, acct.id AS account_id, leg.amount, leg.shard, leg.delta FROM leg"
    " JOIN acct ON acct.code = leg.code AND acct.currency = leg.currency),"
    " posted AS ("
    " INSERT INTO ledger_postings (entry_id, account_id, amount, created_at)"
    " SELECT entry.id, resolved.account_id, resolved.amount, :created_at"
    " FROM entry JOIN resolved USING (reference)"
    " RETURNING 1),"
    " delta AS ("
    " SELECT resolved.account_id, resolved.shard, sum(resolved.delta) AS delta"
    " FROM resolved JOIN entry USING (reference) GROUP BY resolved.account_id, resolved.shard),"
    " locked AS ("
    " SELECT b.account_id, b.shard FROM ledger_balances AS b"
    " WHERE (b.account_id, b.shard) IN (SELECT account_id, shard FROM delta)"
    " ORDER BY b.account_id, b.shard FOR UPDATE),"
    " balanced AS ("
    " UPDATE ledger_balances AS b SET balance = b.balance + delta.delta"
    " FROM delta JOIN locked USING (account_id, shard)"
    " WHERE b.account_id = delta.account_id AND b.shard = delta.shard"
    " RETURNING 1)"
    " SELECT entry.reference, entry.id, updated.n AS updated, absent.n AS missing"
    " FROM (SELECT count(*) AS n FROM balanced) AS updated CROSS JOIN absent LEFT JOIN entry ON true"
)


# PostgreSQL: the accounts (by code), the entry, its postings and the balance updates in ONE statement.
# ``missing`` names the accounts that do not exist yet: then nothing is written, and the caller creates them
# and runs the statement again. When the reference exists, the entry CTE is empty and nothing else is
# written. The balance rows are locked in (account, shard) order first: an UPDATE … FROM locks in whatever
# order its plan joins, and a custom and a generic plan of this prepared statement joined in opposite
# orders, so two postings to the same two hot rows deadlocked (benchmark, 32 clients, a capture's fee:
# provider clearing and provider fees).
_PG_POST_ENTRY = text(
    "WITH acct AS ("
    " SELECT a.id, a.code FROM ledger_accounts AS a"
    " WHERE a.currency = :currency AND a.code = ANY(CAST(:codes AS text[]))),"
    " absent AS (SELECT ARRAY(SELECT unnest(CAST(:codes AS text[])) EXCEPT SELECT code::text FROM acct)"
    " AS missing),"
    " entry AS ("
    " INSERT INTO ledger_entries"
    " (reference, currency, amount, description, escrow_id, metadata, fx, created_at)"
    " SELECT :reference, :currency, :amount, :description, :escrow_id, CAST(:metadata AS json),"
    " CAST(:fx AS json), :created_at WHERE cardinality((SELECT missing FROM absent)) = 0"
    " ON CONFLICT (reference) DO NOTHING RETURNING id),"
    " posted AS ("
    " INSERT INTO ledger_postings (entry_id, account_id, amount, created_at)"
    " SELECT entry.id, acct.id, leg.amount, :created_at FROM entry,"
    " unnest(CAST(:leg_codes AS text[]), CAST(:leg_amounts AS bigint[])) AS leg(code, amount)"
    " JOIN acct ON acct.code = leg.code"
    " RETURNING 1),"
    " d AS ("
    " SELECT acct.id AS account_id, d.shard, d.delta FROM unnest(CAST(:balance_codes AS text[]),"
    " CAST(:balance_shards AS integer[]), CAST(:balance_deltas AS bigint[])) AS d(code, shard, delta)"
    " JOIN acct ON acct.code = d.code WHERE EXISTS (SELECT 1 FROM entry)),"
    " locked AS ("
    " SELECT b.account_id, b.shard FROM ledger_balances AS b"
    " WHERE (b.account_id, b.shard) IN (SELECT account_id, shard FROM d)"
    " ORDER BY b.account_id, b.shard FOR UPDATE),"
    " balanced AS ("
    " UPDATE ledger_balances AS b SET balance = b.balance + d.delta"
    " FROM d JOIN locked USING (account_id, shard)"
    " WHERE b.account_id = d.account_id AND b.shard = d.shard"
    " RETURNING 1)"
    " SELECT (SELECT id FROM entry), (SELECT count(*) FROM balanced), (SELECT missing FROM absent)"
)


async def _apply_balance_deltas(session: AsyncSession, deltas: list[tuple[tuple[int, int], int]]) -> None:
    """SQLite: add each delta to its balance row; the CHECK refuses overdrafts."""
    updated = 0
    for (account_id, shard), delta in deltas:
        result = await session.execute(
            update(AccountBalance)
            .where(AccountBalance.account_id == account_id, AccountBalance.shard == shard)
            .values(balance=AccountBalance.balance + delta)
        )
        updated += result.rowcount  # type: ignore[attr-defined]
    if updated != len(deltas):
        raise RuntimeError("a balance row is missing; run `emanet ledger verify`")


def _volume(legs: Sequence[Leg]) -> int:
    return sum(leg.amount for leg in legs if leg.amount > 0)


async def balance(session: AsyncSession, code: str, currency: str) -> int:
    """The account's normal balance (0 for an account never used): one indexed read of ≤16 rows."""
    total = (
        await session.execute(
            select(func.coalesce(func.sum(AccountBalance.balance), 0))
            .join(Account, Account.id == AccountBalance.account_id)
            .where(Account.code == code, Account.currency == currency)
        )
    ).scalar_one()
    return int(total)


async def balances(session: AsyncSession, codes: Iterable[str]) -> dict[tuple[str, str], int]:
    """Normal balances of several accounts in every currency they hold: {(code, currency): balance}."""
    rows = await session.execute(
        select(Account.code, Account.currency, func.sum(AccountBalance.balance))
        .join(AccountBalance, AccountBalance.account_id == Account.id)
        .where(Account.code.in_(list(codes)))
        .group_by(Account.code, Account.currency)
    )
    return {(code, currency): int(total) for code, currency, total in rows.all()}


async def lock_balance(session: AsyncSession, code: str, currency: str) -> int:
    """Read a non-hot account's balance under a row lock, so a check-then-debit cannot race."""
    if accounts.is_hot(code):
        raise ValueError("hot accounts are sharded and cannot be locked as one row")
    row = (
        await session.execute(
            select(AccountBalance.balance)
            .join(Account, Account.id == AccountBalance.account_id)
            .where(Account.code == code, Account.currency == currency)
            .with_for_update()
        )
    ).scalar()
    return int(row or 0)


@dataclass
class LedgerReport:
    """What ``emanet ledger verify`` found; ``ok`` only when every list is empty."""

    accounts_checked: int = 0
    entries_checked: int = 0
    balance_mismatches: list[dict[str, Any]] = field(default_factory=list)
    unbalanced_entries: list[dict[str, Any]] = field(default_factory=list)
    currency_totals_not_zero: list[dict[str, Any]] = field(default_factory=list)
    negative_accounts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (
            self.balance_mismatches
            or self.unbalanced_entries
            or self.currency_totals_not_zero
            or self.negative_accounts
        )


async def verify_ledger(session: AsyncSession) -> LedgerReport:
    """Recompute every balance from the postings and check the invariants of DESIGN.md."""
    report = LedgerReport()
    computed = dict(
        (
            await session.execute(
                select(Posting.account_id, func.sum(Posting.amount)).group_by(Posting.account_id)
            )
        ).all()
    )
    cached = dict(
        (
            await session.execute(
                select(AccountBalance.account_id, func.sum(AccountBalance.balance)).group_by(
                    AccountBalance.account_id
                )
            )
        ).all()
    )
    all_accounts = (await session.execute(select(Account))).scalars().all()
    report.accounts_checked = len(all_accounts)
    for account in all_accounts:
        from_postings = int(computed.get(account.id, 0)) * accounts.normal_sign(account.kind)
        stored = int(cached.get(account.id, 0))
        if from_postings != stored:
            report.balance_mismatches.append(
                {
                    "account": account.code,
                    "currency": account.currency,
                    "cached": stored,
                    "from_postings": from_postings,
                }
            )
        if from_postings < 0 and not accounts.may_go_negative(account.code):
            report.negative_accounts.append(
                {"account": account.code, "currency": account.currency, "balance": from_postings}
            )
    unbalanced = await session.execute(
        select(Posting.entry_id, func.sum(Posting.amount), func.count())
        .group_by(Posting.entry_id)
        .having((func.sum(Posting.amount) != 0) | (func.count() < 2))
    )
    report.unbalanced_entries = [
        {"entry_id": entry_id, "sum": int(total), "postings": count}
        for entry_id, total, count in unbalanced.all()
    ]
    report.entries_checked = int((await session.execute(select(func.count(JournalEntry.id)))).scalar_one())
    totals = await session.execute(
        select(Account.currency, func.sum(Posting.amount))
        .join(Account, Account.id == Posting.account_id)
        .group_by(Account.currency)
    )
    report.currency_totals_not_zero = [
        {"currency": currency, "sum": int(total)} for currency, total in totals.all() if int(total) != 0
    ]
    return report


async def escrow_entries(session: AsyncSession, escrow_id: str) -> Sequence[JournalEntry]:
    """The entries that moved an escrow's money, oldest first."""
    rows = await session.execute(
        select(JournalEntry).where(JournalEntry.escrow_id == escrow_id).order_by(JournalEntry.id)
    )
    return rows.scalars().all()


async def wallet_lines(
    session: AsyncSession, code: str, currency: str, *, limit: int, before_id: int | None
) -> list[tuple[Posting, JournalEntry, int]]:
    """Postings of one account, newest first, each with the account's normal balance after it."""
    account_id = (
        await session.execute(select(Account.id).where(Account.code == code, Account.currency == currency))
    ).scalar()
    if account_id is None:
        return []
    sign = accounts.normal_sign(accounts.kind_of(code))
    running = func.sum(Posting.amount * sign).over(order_by=Posting.id).label("running")
    inner = select(Posting.id.label("posting_id"), running).where(Posting.account_id == account_id).subquery()
    query = (
        select(Posting, JournalEntry, inner.c.running)
        .join(inner, inner.c.posting_id == Posting.id)
        .join(JournalEntry, JournalEntry.id == Posting.entry_id)
        .order_by(Posting.id.desc())
        .limit(limit)
    )
    if before_id is not None:
        query = query.where(Posting.id < before_id)
    return [(p, e, int(r)) for p, e, r in (await session.execute(query)).all()]
