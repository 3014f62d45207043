"""Ledger tables. Entries and postings are append-only (PostgreSQL triggers refuse UPDATE and DELETE);
an entry's postings must sum to zero (a statement trigger checks every entry that an INSERT of postings
touched)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, CheckConstraint, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from emanet.core import clock
from emanet.core.db import Base


class Account(Base):
    __tablename__ = "ledger_accounts"
    __table_args__ = (UniqueConstraint("code", "currency", name="uq_ledger_accounts_code_currency"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    code: Mapped[str] = mapped_column(String(120))
    currency: Mapped[str] = mapped_column(String(3))
    kind: Mapped[str] = mapped_column(String(16))
    user_id: Mapped[str | None] = mapped_column(String(40), index=True)
    created_at: Mapped[datetime] = mapped_column(default=lambda: clock.now())


class AccountBalance(Base):
    """Cached normal balance of an account (one row, or several shards for hot accounts)."""

    __tablename__ = "ledger_balances"
    __table_args__ = (CheckConstraint("allow_negative OR balance >= 0", name="non_negative"),)

    account_id: Mapped[int] = mapped_column(ForeignKey("ledger_accounts.id"), primary_key=True)
    shard: Mapped[int] = mapped_column(Integer, primary_key=True, default=0)
    balance: Mapped[int] = mapped_column(default=0)
    allow_negative: Mapped[bool] = mapped_column(Boolean, default=False)


class JournalEntry(Base):
    __tablename__ = "ledger_entries"
    __table_args__ = (Index("ix_ledger_entries_escrow_id", "escrow_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    reference: Mapped[str] = mapped_column(String(200), unique=True)
    currency: Mapped[str] = mapped_column(String(3))
    amount: Mapped[int]  # the sum of the debits: how much money this entry moved
    description: Mapped[str] = mapped_column(String(300), default="")
    escrow_id: Mapped[str | None] = mapped_column(String(40))
    details: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    fx: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=lambda: clock.now())


class Posting(Base):
    """One leg of an entry: ``amount`` > 0 debits the account, < 0 credits it."""

    __tablename__ = "ledger_postings"
    __table_args__ = (
        CheckConstraint("amount <> 0", name="non_zero"),
        Index("ix_ledger_postings_account", "account_id", "id"),
        Index("ix_ledger_postings_entry", "entry_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    entry_id: Mapped[int] = mapped_column(ForeignKey("ledger_entries.id"))
    account_id: Mapped[int] = mapped_column(ForeignKey("ledger_accounts.id"))
    amount: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(default=lambda: clock.now())
