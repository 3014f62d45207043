"""Payouts: a user withdraws their available balance to their payout destination.

Same three-step pattern as payments (see ``emanet.payments.service``): one transaction locks the user's
available balance row, refuses an overdraft and moves the amount ``user:{id}:available`` →
``user:{id}:payout_in_transit`` (entry ``payout:{id}:request``) and commits; then the provider is called with
no transaction open (idempotent per payout id); then its answer is recorded. ``payout_transition`` is the
one function that settles a payout: ``paid`` moves in-transit → ``provider:{p}:clearing`` (the money left
us, ``payout:{id}:settle``); ``failed`` moves it back to available (``payout:{id}:return``).

Changing the destination needs a verified phone and an OTP step-up (purpose ``payout_change``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from emanet.core import clock
from emanet.core.db import Database
from emanet.core.errors import Conflict, EmanetError, Forbidden, NotFound, ProviderError, Unprocessable
from emanet.core.outbox import emit_event
from emanet.core.settings import Settings
from emanet.ledger import accounts
from emanet.ledger.service import credit, debit, lock_balance, post_entry
from emanet.payments.destinations import mask_destination, validate_destination
from emanet.payments.models import Payout, PayoutStatus
from emanet.providers.base import PaymentProvider, PayoutDestination, ProviderUnavailable, WebhookEvent
from emanet.providers.registry import configured_providers, get_provider
from emanet.users.models import User

log = structlog.get_logger("emanet.payouts")

S = PayoutStatus
PAYOUT_TRANSITIONS: dict[S, frozenset[S]] = {
    S.pending: frozenset({S.processing, S.paid, S.failed}),
    S.processing: frozenset({S.paid, S.failed}),
}
UNSETTLED = frozenset({S.pending, S.processing})


class IllegalPayoutTransition(Conflict):
    code = "illegal_payout_transition"


def snapshot(payout: Payout) -> dict[str, Any]:
    return {
        "id": payout.id,
        "object": "payout",
        "user_id": payout.user_id,
        "status": payout.status,
        "amount": payout.amount,
        "currency": payout.currency,
        "provider": payout.provider,
        "failure_message": payout.failure_message,
    }


# ---------------------------------------------------------------------------------------------- destination


async def set_destination(
    session: AsyncSession, settings: Settings, user: User, raw: dict[str, Any], otp_code: str
) -> dict[str, Any]:
    """Replace the user's payout destination: a verified phone and a verified ``payout_change`` code."""
    from emanet.otp.service import check_otp

    if user.phone_verified_at is None:
        raise Forbidden(
            "Verify your phone number before changing where payouts go", code="phone_verification_required"
        )
    destination = validate_destination(raw)  # before the code is used up: a typo must not cost an OTP
    await check_otp(session, user, "payout_change", otp_code, settings=settings)
    user.payout_destination = dict(destination)
    log.info("payout_destination_changed", user_id=user.id, destination=mask_destination(destination))
    return mask_destination(destination)


# ---------------------------------------------------------------------------------------------- requesting


def _payout_provider(
    database: Database, settings: Settings, name: str | None, currency: str
) -> PaymentProvider:
    candidates = [name] if name else configured_providers(settings)
    for candidate in candidates:
        provider = get_provider(candidate, settings, database)
        if provider.supports_payouts and provider.supports_currency(currency):
            return provider
    raise Unprocessable(
        f"No configured provider pays out {currency}" + (f" through {name}" if name else ""),
        code="payouts_not_supported",
    )


async def request_payout(
    database: Database,
    settings: Settings,
    user_id: str,
    *,
    amount: int,
    currency: str,
    provider_name: str | None = None,
) -> Payout:
    provider = _payout_provider(database, settings, provider_name, currency)
    async with database.transaction() as session:
        user = await session.get_one(User, user_id)
        if not user.payout_destination:
            raise Unprocessable(
                "Set a payout destination first (PUT /api/v1/me/payout-destination)",
                code="payout_destination_required",
            )
        available = await lock_balance(session, accounts.user_available(user.id), currency)
        if amount > available:
            raise EmanetError(
                f"Your available balance is {available} {currency}",
                code="insufficient_balance",
                status=409,
                available=available,
                requested=amount,
            )
        payout = Payout(
            user_id=user.id,
            provider=provider.name,
            amount=amount,
            currency=currency,
            status=S.pending,
            destination=dict(user.payout_destination),
        )
        session.add(payout)
        await session.flush()
        await post_entry(
            session,
            f"payout:{payout.id}:request",
            currency,
            [
                debit(accounts.user_available(user.id), amount),
                credit(accounts.user_payout_in_transit(user.id), amount),
            ],
            description=f"Payout {payout.id}",
            metadata={"payout_id": payout.id, "provider": provider.name},
        )
        log.info("payout_requested", payout_id=payout.id, user_id=user.id, amount=amount, currency=currency)
    return await send_payout(database, settings, payout.id, provider)


async def send_payout(
    database: Database, settings: Settings, payout_id: str, provider: PaymentProvider | None = None
) -> Payout:
    """Send (or resend, idempotent per payout id) a pending payout and record the provider's answer."""
    async with database.transaction() as session:
        payout = await session.get_one(Payout, payout_id)
    provider = provider or get_provider(payout.provider, settings, database)
    destination = PayoutDestination(**payout.destination)  # type: ignore[typeddict-item]
    try:
        result = await provider.create_payout(payout.id, payout.amount, payout.currency, destination)
    except ProviderUnavailable:
        # Unknown outcome: the money stays in transit; the payout poll resends with the same id.
        log.warning("payout_provider_unavailable", payout_id=payout.id, provider=provider.name)
        async with database.transaction() as session:
            (await _lock(session, payout.id)).last_checked_at = clock.now()
            return await session.get_one(Payout, payout.id)
    except ProviderError as exc:
        async with database.transaction() as session:
            return await payout_transition(session, payout.id, S.failed, failure=exc.detail)
    async with database.transaction() as session:
        return await payout_transition(
            session, payout.id, S(result.status), reference=result.reference, failure=result.failure_message
        )


async def refresh_payout(database: Database, settings: Settings, payout_id: str) -> Payout:
    async with database.transaction() as session:
        payout = await session.get_one(Payout, payout_id)
    if payout.status not in UNSETTLED:
        return payout
    if payout.provider_reference is None:
        return await send_payout(database, settings, payout.id)
    provider = get_provider(payout.provider, settings, database)
    result = await provider.get_payout(payout.provider_reference)
    async with database.transaction() as session:
        return await payout_transition(session, payout.id, S(result.status), failure=result.failure_message)


# ---------------------------------------------------------------------------------------------- settling


async def _lock(session: AsyncSession, payout_id: str) -> Payout:
    payout = (
        await session.execute(
            select(Payout)
            .where(Payout.id == payout_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()
    if payout is None:
        raise NotFound("No such payout")
    return payout


async def payout_transition(
    session: AsyncSession,
    payout_id: str,
    target: S,
    *,
    reference: str | None = None,
    failure: str | None = None,
) -> Payout:
    """Lock the payout, check the move, write it with its ledger entry and event. Same status: no-op."""
    payout = await _lock(session, payout_id)
    now = clock.now()
    payout.last_checked_at = now
    if reference and payout.provider_reference is None:
        payout.provider_reference = reference
    source = S(payout.status)
    if target == source:
        return payout
    if target not in PAYOUT_TRANSITIONS.get(source, frozenset()):
        raise IllegalPayoutTransition(
            f"A payout cannot go from {source} to {target}", status_now=source.value
        )
    in_transit = accounts.user_payout_in_transit(payout.user_id)
    if target == S.paid:
        await post_entry(
            session,
            f"payout:{payout.id}:settle",
            payout.currency,
            [
                debit(in_transit, payout.amount),
                credit(accounts.provider_clearing(payout.provider), payout.amount),
            ],
            description=f"Payout {payout.id} paid",
            metadata={"payout_id": payout.id},
        )
        payout.settled_at = now
    elif target == S.failed:
        await post_entry(
            session,
            f"payout:{payout.id}:return",
            payout.currency,
            [
                debit(in_transit, payout.amount),
                credit(accounts.user_available(payout.user_id), payout.amount),
            ],
            description=f"Payout {payout.id} failed: back to available",
            metadata={"payout_id": payout.id},
        )
        payout.failure_message = (failure or "The provider could not pay out")[:300]
        payout.settled_at = now
    payout.status = target
    payout.updated_at = now
    log.info("payout_transition", payout_id=payout.id, source=source.value, target=target.value)
    if target in (S.paid, S.failed):
        await emit_event(session, f"payout.{target.value}", payout.id, snapshot(payout))
    return payout


async def on_payout_event(session: AsyncSession, provider: str, event: WebhookEvent) -> str:
    payout = (
        await session.execute(
            select(Payout).where(
                Payout.provider == provider, Payout.provider_reference == event.payout_reference
            )
        )
    ).scalar_one_or_none()
    if payout is None:
        return "unmatched"
    before = payout.status
    payout = await payout_transition(session, payout.id, S(event.status or ""), failure=event.failure_message)
    return "applied" if payout.status != before else "unchanged"


# ---------------------------------------------------------------------------------------------- reading


async def visible_payout(session: AsyncSession, payout_id: str, user_id: str, is_staff: bool) -> Payout:
    payout = await session.get(Payout, payout_id)
    if payout is None or (payout.user_id != user_id and not is_staff):
        raise NotFound("No such payout")
    return payout


async def list_payouts(
    session: AsyncSession, user_id: str, *, limit: int, before: str | None
) -> tuple[Sequence[Payout], str | None]:
    query = select(Payout).where(Payout.user_id == user_id)
    if before:
        query = query.where(Payout.id < before)
    rows = list((await session.execute(query.order_by(Payout.id.desc()).limit(limit + 1))).scalars().all())
    return rows[:limit], rows[limit - 1].id if len(rows) > limit else None


async def unsettled_payouts(database: Database, settings: Settings, *, limit: int = 100) -> list[str]:
    cutoff = clock.now() - timedelta(seconds=settings.payment_poll_after_seconds)
    async with database.transaction() as session:
        rows = await session.execute(
            select(Payout.id)
            .where(
                Payout.status.in_(list(UNSETTLED)),
                func.coalesce(Payout.last_checked_at, Payout.created_at) <= cutoff,
            )
            .order_by(func.coalesce(Payout.last_checked_at, Payout.created_at))
            .limit(limit)
        )
        return list(rows.scalars().all())
