"""The ledger invariants of DESIGN.md, checked after any sequence of operations."""

from __future__ import annotations

from sqlalchemy import func, select

from emanet.core.db import Database
from emanet.escrow.models import Escrow
from emanet.ledger import accounts
from emanet.ledger.models import Account, AccountBalance, JournalEntry, Posting
from emanet.ledger.service import verify_ledger


async def assert_ledger_invariants(database: Database) -> None:
    async with database.transaction() as session:
        report = await verify_ledger(session)
        assert report.ok, report
        # every escrow account holds exactly what was funded minus what left it
        escrows = (await session.execute(select(Escrow))).scalars().all()
        balances = dict(
            (
                await session.execute(
                    select(Account.code, func.sum(AccountBalance.balance))
                    .join(AccountBalance, AccountBalance.account_id == Account.id)
                    .where(Account.code.like("escrow:%"))
                    .group_by(Account.code)
                )
            ).all()
        )
        for escrow in escrows:
            held = escrow.funded_amount - escrow.released_amount - escrow.refunded_amount
            assert held >= 0, escrow.id
            assert int(balances.get(accounts.escrow_account(escrow.id), 0)) == held, (
                escrow.id,
                escrow.status,
            )
        # no user available balance is negative
        negative = (
            (
                await session.execute(
                    select(Account.code)
                    .join(AccountBalance, AccountBalance.account_id == Account.id)
                    .where(Account.code.like("user:%"), AccountBalance.balance < 0)
                )
            )
            .scalars()
            .all()
        )
        assert not negative, negative
        # every entry's postings balance (also enforced by the database on PostgreSQL)
        unbalanced = (
            await session.execute(
                select(Posting.entry_id).group_by(Posting.entry_id).having(func.sum(Posting.amount) != 0)
            )
        ).all()
        assert not unbalanced
        entries = (await session.execute(select(func.count(JournalEntry.id)))).scalar_one()
        assert entries == report.entries_checked
