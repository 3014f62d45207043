"""Account codes of the chart of accounts (DESIGN.md) and what kind of account each one is.

Normal balances: assets and expenses grow with debits; liabilities and revenue grow with credits.
User and escrow accounts may never go below zero (a database CHECK enforces it). Provider and
platform accounts are *hot* — every payment touches them — so their balance is kept in several
shard rows (picked by entry reference) instead of one row that would serialise all payments.
"""

from __future__ import annotations

from enum import StrEnum


class AccountKind(StrEnum):
    asset = "asset"
    liability = "liability"
    revenue = "revenue"
    expense = "expense"


PLATFORM_FEES = "platform:fees"
HOT_SHARDS = 16


def provider_clearing(provider: str) -> str:
    return f"provider:{provider}:clearing"


def provider_fees(provider: str) -> str:
    return f"provider:{provider}:fees"


def escrow_account(escrow_id: str) -> str:
    return f"escrow:{escrow_id}"


def user_available(user_id: str) -> str:
    return f"user:{user_id}:available"


def user_payout_in_transit(user_id: str) -> str:
    return f"user:{user_id}:payout_in_transit"


def kind_of(code: str) -> AccountKind:
    if code.startswith("provider:") and code.endswith(":clearing"):
        return AccountKind.asset
    if code.startswith("provider:") and code.endswith(":fees"):
        return AccountKind.expense
    if code.startswith("platform:"):
        return AccountKind.revenue
    if code.startswith(("escrow:", "user:")):
        return AccountKind.liability
    raise ValueError(f"unknown account code {code!r}")


def is_hot(code: str) -> bool:
    return code.startswith(("provider:", "platform:"))


def may_go_negative(code: str) -> bool:
    """Only hot accounts may: a clearing account pays out money captured through another provider."""
    return is_hot(code)


def owner_user_id(code: str) -> str | None:
    if code.startswith("user:"):
        return code.split(":")[1]
    return None


def normal_sign(kind: AccountKind | str) -> int:
    """+1 when a debit increases the account's balance, -1 when a credit does."""
    return 1 if kind in (AccountKind.asset, AccountKind.expense) else -1
