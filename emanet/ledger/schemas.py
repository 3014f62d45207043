"""Wallet views of the ledger."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class WalletOut(BaseModel):
    currency: str
    available: int
    held_as_buyer: int
    held_as_seller: int
    pending_payout: int
    display: dict[str, int | str] | None = None


class WalletEntryOut(BaseModel):
    id: int
    reference: str
    description: str
    amount: int
    running_balance: int
    created_at: datetime
