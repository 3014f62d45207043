"""Wallet routes: the caller's balances per currency and the ledger lines behind them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from emanet.core.auth import CurrentPrincipal
from emanet.core.money import check_currency
from emanet.core.schemas import Page, decode_cursor, encode_cursor
from emanet.core.session import DbSession
from emanet.escrow import service as escrow_service
from emanet.ledger import accounts, fx, service
from emanet.ledger.schemas import WalletEntryOut, WalletOut

router = APIRouter(prefix="/api/v1", tags=["wallets"])


@router.get("/wallets", response_model=list[WalletOut])
async def wallets(
    principal: CurrentPrincipal,
    session: DbSession,
    display_currency: Annotated[str | None, Query(min_length=3, max_length=3)] = None,
) -> list[WalletOut]:
    """Available, held (in open escrows, as buyer and as seller) and pending payout, per currency."""
    user_id = principal.id
    own = await service.balances(
        session, [accounts.user_available(user_id), accounts.user_payout_in_transit(user_id)]
    )
    as_buyer = await escrow_service.held_by_currency(session, user_id, as_buyer=True)
    as_seller = await escrow_service.held_by_currency(session, user_id, as_buyer=False)
    currencies = sorted({c for _, c in own} | set(as_buyer) | set(as_seller))
    out = []
    for currency in currencies:
        available = own.get((accounts.user_available(user_id), currency), 0)
        wallet = WalletOut(
            currency=currency,
            available=available,
            held_as_buyer=as_buyer.get(currency, 0),
            held_as_seller=as_seller.get(currency, 0),
            pending_payout=own.get((accounts.user_payout_in_transit(user_id), currency), 0),
        )
        if display_currency:
            converted = await fx.convert(available, currency, check_currency(display_currency.upper()))
            wallet.display = (
                {
                    "available": converted["amount"],
                    "currency": converted["currency"],
                    "rate": converted["rate"],
                }
                if converted
                else None
            )
        out.append(wallet)
    return out


@router.get("/wallets/{currency}/entries", response_model=Page[WalletEntryOut])
async def wallet_entries(
    currency: str,
    principal: CurrentPrincipal,
    session: DbSession,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> Page[WalletEntryOut]:
    """Ledger lines of the caller's available balance, newest first, with the running balance."""
    check_currency(currency.upper())
    before = decode_cursor(cursor).get("before") if cursor else None
    rows = await service.wallet_lines(
        session,
        accounts.user_available(principal.id),
        currency.upper(),
        limit=limit + 1,
        before_id=int(before) if before is not None else None,
    )
    sign = accounts.normal_sign(accounts.AccountKind.liability)
    data = [
        WalletEntryOut(
            id=p.id,
            reference=e.reference,
            description=e.description,
            amount=p.amount * sign,
            running_balance=running,
            created_at=p.created_at,
        )
        for p, e, running in rows[:limit]
    ]
    next_cursor = encode_cursor({"before": data[-1].id}) if len(rows) > limit and data else None
    return Page[WalletEntryOut](data=data, next_cursor=next_cursor)
