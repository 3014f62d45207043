"""Escrow rules: creation, the state machine and every money movement an escrow causes.

``apply_transition`` is the one function that changes an escrow's status: it locks the row, checks the
transition table and the actor's right, runs the guard of the target state, writes the status, the ledger
entry, the activity record and the outbox event — all in the caller's transaction, so all or nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from fastapi import Request
from sqlalchemy import ColumnElement, Select, func, or_, select, text, union_all, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from emanet.core import clock
from emanet.core.auth import Principal
from emanet.core.db import lock_row, upsert
from emanet.core.errors import Conflict, EmanetError, Forbidden, NotFound, Unprocessable
from emanet.core.middleware import client_ip
from emanet.core.outbox import emit_event, enqueue
from emanet.core.schemas import after_cursor
from emanet.core.settings import Settings, get_settings
from emanet.escrow import rules
from emanet.escrow.models import (
    Escrow,
    EscrowActivity,
    EscrowNumberCounter,
    EscrowStatus,
    FeePayer,
    MarketType,
)
from emanet.escrow.models import EscrowStatus as S
from emanet.ledger import accounts
from emanet.ledger.service import Leg, credit, debit, open_accounts, post_entry
from emanet.users.models import User

REFUND_JOB = "payments.refund_for_escrow"


@dataclass(frozen=True)
class Actor:
    """Who acts: a user (with their platform role), the system (timers), or a provider callback."""

    user_id: str | None
    role: str  # user, support, admin, system
    ip: str | None = None
    user_agent: str | None = None
    via: str | None = None  # "api_key", "jwt", "provider:stripe", "timer:auto_release" …

    @classmethod
    def system(cls, reason: str) -> Actor:
        return cls(user_id=None, role=rules.SYSTEM, via=reason)

    @classmethod
    def provider(cls, name: str) -> Actor:
        return cls(user_id=None, role=rules.SYSTEM, via=f"provider:{name}")

    @classmethod
    def from_principal(cls, principal: Principal, request: Request | None = None) -> Actor:
        return cls(
            user_id=principal.id,
            role=principal.role,
            via=principal.method,
            ip=client_ip(request) if request else None,
            user_agent=request.headers.get("user-agent", "")[:300] if request else None,
        )


def party_role(escrow: Escrow, actor: Actor) -> str:
    """The actor's role in this escrow: buyer, seller, admin or system (support only reads)."""
    if actor.role == rules.SYSTEM:
        return rules.SYSTEM
    if actor.user_id == escrow.buyer_id:
        return rules.BUYER
    if actor.user_id == escrow.seller_id:
        return rules.SELLER
    if actor.role == "admin":
        return rules.ADMIN
    return "none"


@dataclass(frozen=True)
class Move:
    """What a transition's effect works with: the locked escrow, who moves it, and how."""

    session: AsyncSession
    escrow: Escrow
    actor: Actor
    params: dict[str, Any]
    force: bool
    settings: Settings
    now: datetime


class IllegalTransition(Conflict):
    code = "illegal_transition"


# ---------------------------------------------------------------------------------------------- creation


@dataclass
class NewEscrow:
    buyer_id: str
    seller_id: str
    amount: int
    currency: str
    title: str
    description: str = ""
    category: str = "general"
    market_type: str = MarketType.product
    is_digital: bool = False
    fee_payer: str = FeePayer.buyer
    inspection_days: float | None = None
    expires_at: datetime | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    escrow_id: str | None = None  # a fixed id, for demo data the README refers to


async def _next_number(session: AsyncSession) -> str:
    if session.get_bind().dialect.name == "postgresql":
        value = (await session.execute(text("SELECT nextval('escrow_number_seq')"))).scalar_one()
    else:
        await session.execute(
            upsert(session, EscrowNumberCounter)
            .values(name="escrow", last_value=1)
            .on_conflict_do_update(
                index_elements=["name"], set_={"last_value": EscrowNumberCounter.last_value + 1}
            )
        )
        value = (
            await session.execute(
                select(EscrowNumberCounter.last_value).where(EscrowNumberCounter.name == "escrow")
            )
        ).scalar_one()
    return f"EM-{clock.now().year}-{int(value):06d}"


async def _party(session: AsyncSession, user_id: str, label: str) -> User:
    user = await session.get(User, user_id)
    if user is None:
        raise Unprocessable(f"The {label} does not exist", code=f"unknown_{label}")
    if user.is_suspended:
        raise Unprocessable(f"The {label}'s account is suspended", code=f"{label}_suspended")
    return user


async def create_escrow(
    session: AsyncSession,
    data: NewEscrow,
    actor: Actor,
    principal: Principal,
    settings: Settings | None = None,
) -> Escrow:
    settings = settings or get_settings()
    if data.buyer_id == data.seller_id:
        raise Unprocessable("Buyer and seller must be different users", code="same_party")
    platform_creator = principal.is_admin or principal.method == "api_key"
    if principal.id not in (data.buyer_id, data.seller_id) and not platform_creator:
        raise Forbidden("You can only create escrows you are a party to", code="not_a_party")
    buyer = await _party(session, data.buyer_id, "buyer")
    seller = await _party(session, data.seller_id, "seller")
    limits = settings.amount_limits.get(data.currency)
    if limits is None:
        raise Unprocessable(
            f"{data.currency} is not a supported escrow currency",
            code="currency_not_supported",
            supported=sorted(settings.amount_limits),
        )
    minimum, maximum = limits
    if not minimum <= data.amount <= maximum:
        raise Unprocessable(
            f"Amount must be between {minimum} and {maximum} minor units of {data.currency}",
            code="amount_out_of_range",
            minimum=minimum,
            maximum=maximum,
        )
    category = rules.category_rule(settings, data.category)
    if category is None:
        raise Unprocessable(
            f"Unknown category {data.category!r}",
            code="unknown_category",
            categories=sorted(settings.category_rules),
        )
    category_max = category.max_amount.get(data.currency)
    if category_max is not None and data.amount > category_max:
        raise Unprocessable(
            f"The category {data.category} allows at most {category_max} {data.currency}",
            code="category_amount_exceeded",
        )
    threshold = settings.verification_required_above.get(data.currency)
    if threshold is not None and data.amount > threshold:
        unverified = [
            label for label, user in (("buyer", buyer), ("seller", seller)) if not user.is_identity_verified
        ]
        if unverified:
            raise Unprocessable(
                f"Identity verification is required above {threshold} {data.currency} "
                f"(not verified: {', '.join(unverified)})",
                code="verification_required",
            )
    now = clock.now()
    expires_at = data.expires_at or now + timedelta(hours=settings.payment_expiry_hours)
    if expires_at <= now or expires_at > now + timedelta(days=90):
        raise Unprocessable("expires_at must be in the future and within 90 days", code="invalid_expiry")
    fee = rules.platform_fee(settings, data.market_type, data.category, data.currency, data.amount)
    buyer_fee, seller_fee = rules.split_fee(fee, data.fee_payer)
    escrow = Escrow(
        number=await _next_number(session),
        buyer_id=buyer.id,
        seller_id=seller.id,
        created_by=principal.id,
        status=S.pending_payment,
        title=data.title,
        description=data.description,
        category=data.category,
        market_type=data.market_type,
        is_digital=data.is_digital or category.digital_auto_deliver,
        requires_delivery_document=category.requires_delivery_document,
        currency=data.currency,
        amount=data.amount,
        fee_payer=data.fee_payer,
        platform_fee=fee,
        buyer_fee=buyer_fee,
        seller_fee=seller_fee,
        total_due=data.amount + buyer_fee,
        funding_sources={},
        inspection_days=data.inspection_days
        if data.inspection_days is not None
        else settings.inspection_days,
        expires_at=expires_at,
        created_at=now,
        updated_at=now,
    )
    if data.escrow_id:
        escrow.id = data.escrow_id
    session.add(escrow)
    await session.flush()
    await _record(session, escrow, "created", actor, None, S.pending_payment, data.metadata)
    await emit_event(session, "escrow.created", escrow.id, snapshot(escrow))
    return escrow


# ---------------------------------------------------------------------------------------------- reading


async def get_escrow(
    session: AsyncSession, escrow_id: str, principal: Principal | None = None, *, lock: bool = False
) -> Escrow:
    """The escrow, if the caller may see it: a party or staff. Anyone else gets 404, not 403. ``lock`` takes
    the row lock a transition will need anyway, so the check and the transition cost one round trip."""
    escrow = await (lock_row(session, Escrow, escrow_id) if lock else session.get(Escrow, escrow_id))
    if escrow is None or (
        principal is not None
        and not principal.is_staff
        and principal.id not in (escrow.buyer_id, escrow.seller_id)
    ):
        raise NotFound("No such escrow")
    return escrow


async def lock_escrow(session: AsyncSession, escrow_id: str) -> Escrow:
    escrow = await lock_row(session, Escrow, escrow_id)
    if escrow is None:
        raise NotFound("No such escrow")
    return escrow


def snapshot(escrow: Escrow) -> dict[str, Any]:
    """The escrow as events and webhooks carry it."""

    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {
        "id": escrow.id,
        "number": escrow.number,
        "status": escrow.status,
        "buyer_id": escrow.buyer_id,
        "seller_id": escrow.seller_id,
        "title": escrow.title,
        "category": escrow.category,
        "market_type": escrow.market_type,
        "amount": escrow.amount,
        "currency": escrow.currency,
        "platform_fee": escrow.platform_fee,
        "total_due": escrow.total_due,
        "funded_amount": escrow.funded_amount,
        "released_amount": escrow.released_amount,
        "refunded_amount": escrow.refunded_amount,
        "satisfaction_rating": escrow.satisfaction_rating,
        "expires_at": iso(escrow.expires_at),
        "hold_until": iso(escrow.hold_until),
        "auto_release_at": iso(escrow.auto_release_at),
        "dispute_deadline": iso(escrow.dispute_deadline),
        "created_at": iso(escrow.created_at),
        "updated_at": iso(escrow.updated_at),
    }


def held(escrow: Escrow) -> int:
    return escrow.funded_amount - escrow.released_amount - escrow.refunded_amount


# ---------------------------------------------------------------------------------------------- transitions


async def _record(
    session: AsyncSession,
    escrow: Escrow,
    action: str,
    actor: Actor,
    source: str | None,
    target: str | None,
    details: dict[str, Any] | None = None,
) -> None:
    session.add(
        EscrowActivity(
            escrow_id=escrow.id,
            action=action,
            from_status=source,
            to_status=target,
            actor_id=actor.user_id,
            actor_role=party_role(escrow, actor) if actor.role != "support" else "support",
            ip=actor.ip,
            user_agent=actor.user_agent,
            details={**(details or {}), **({"via": actor.via} if actor.via else {})},
            created_at=clock.now(),
        )
    )


async def apply_transition(
    session: AsyncSession,
    escrow_id: str,
    target: S,
    actor: Actor,
    *,
    params: dict[str, Any] | None = None,
    force: bool = False,
    settings: Settings | None = None,
) -> Escrow:
    """Move the escrow to ``target`` or raise; everything it implies happens in this transaction.

    ``force`` (admin override, with a reason) skips time guards such as the minimum hold — never the
    transition table or the money checks.
    """
    settings = settings or get_settings()
    params = params or {}
    escrow = await lock_escrow(session, escrow_id)
    source = S(escrow.status)
    allowed = rules.TRANSITIONS.get((source, target))
    if allowed is None:
        raise IllegalTransition(
            f"An escrow cannot go from {source} to {target}",
            allowed=rules.allowed_targets(source),
            status_now=source.value,
        )
    who = party_role(escrow, actor)
    if who not in allowed:
        raise Forbidden(
            f"A {who} may not move an escrow from {source} to {target}", code="transition_not_allowed"
        )
    if force and who != rules.ADMIN:
        raise Forbidden("Only an admin may force a transition", code="override_not_allowed")
    now = clock.now()
    details = await _EFFECTS[target](Move(session, escrow, actor, params, force, settings, now))
    escrow.status = target
    escrow.updated_at = now
    if target in rules.TERMINAL:
        escrow.closed_at = now
    await _record(session, escrow, params.get("action", target.value), actor, source, target, details)
    await emit_event(session, f"escrow.{target.value}", escrow.id, snapshot(escrow))
    if target == S.funded and escrow.is_digital:
        # Digital goods are delivered the moment they are paid for (seed 003's auto-complete).
        return await apply_transition(
            session, escrow.id, S.delivered, Actor.system("digital_auto_deliver"), settings=settings
        )
    return escrow


Effect = Any


async def _on_funded(move: Move) -> dict[str, Any]:
    escrow, settings, now = move.escrow, move.settings, move.now
    escrow.funded_at = now
    escrow.hold_until = now + timedelta(hours=settings.min_hold_hours)
    return {"hold_until": escrow.hold_until.isoformat()}


async def _on_partially_funded(move: Move) -> dict[str, Any]:
    escrow = move.escrow
    return {"funded_amount": escrow.funded_amount, "total_due": escrow.total_due}


async def _on_delivered(move: Move) -> dict[str, Any]:
    escrow, actor, params, settings, now = move.escrow, move.actor, move.params, move.settings, move.now
    document_ids = list(params.get("document_ids") or [])
    if escrow.requires_delivery_document and not document_ids and actor.role != rules.SYSTEM:
        raise Unprocessable(
            f"The category {escrow.category} needs a delivery document", code="delivery_document_required"
        )
    escrow.delivery = {
        "tracking_number": params.get("tracking_number"),
        "carrier": params.get("carrier"),
        "note": params.get("note"),
        "document_ids": document_ids,
    }
    escrow.delivered_at = now
    escrow.auto_release_at = now + timedelta(days=escrow.inspection_days)
    escrow.dispute_deadline = now + timedelta(days=settings.dispute_window_days)
    return {"auto_release_at": escrow.auto_release_at.isoformat(), **escrow.delivery}


async def _on_released(move: Move) -> dict[str, Any]:
    session, escrow, params, force, settings, now = (
        move.session,
        move.escrow,
        move.params,
        move.force,
        move.settings,
        move.now,
    )
    if escrow.status == S.disputed:
        return await _settle(session, escrow, buyer_refund=0, reason="dispute_resolved_release")
    hold_until = escrow.hold_until or now
    if now < hold_until and not force:
        raise EmanetError(
            f"Funds are held until {hold_until.isoformat()} (minimum hold after funding)",
            code="hold_period",
            status=409,
            hold_until=hold_until.isoformat(),
        )
    rating = params.get("rating")
    if rating is not None and rating not in range(1, 6):
        raise Unprocessable("rating must be 1 to 5", code="invalid_rating")
    split = rules.release_split(
        amount=escrow.amount,
        buyer_fee=escrow.buyer_fee,
        seller_fee=escrow.seller_fee,
        rating=rating,
        settings=settings,
    )
    if split.total != held(escrow):
        raise Conflict("The escrow does not hold its full amount", code="not_fully_funded")
    await post_entry(
        session,
        f"escrow:{escrow.id}:release",
        escrow.currency,
        [
            debit(accounts.escrow_account(escrow.id), split.total),
            credit(accounts.user_available(escrow.seller_id), split.seller),
            credit(accounts.PLATFORM_FEES, split.platform),
            credit(accounts.user_available(escrow.buyer_id), split.buyer),
        ],
        description=f"Release of {escrow.number}",
        escrow_id=escrow.id,
        metadata={"rating": rating, "seller": split.seller, "platform": split.platform, "buyer": split.buyer},
    )
    escrow.released_amount += split.seller + split.platform
    escrow.refunded_amount += split.buyer
    escrow.satisfaction_rating = rating
    return {
        "rating": rating,
        "seller_amount": split.seller,
        "platform_amount": split.platform,
        "buyer_amount": split.buyer,
    }


async def _refund_held(session: AsyncSession, escrow: Escrow, amount: int, reference: str) -> dict[str, int]:
    """Return ``amount`` of what the escrow holds to the buyer, back through the providers it came from."""
    if amount <= 0:
        return {}
    sources: dict[str, int] = dict(escrow.funding_sources or {})
    portions: dict[str, int] = {}
    remaining = amount
    for provider, refundable in sorted(sources.items(), key=lambda kv: (-kv[1], kv[0])):
        take = min(remaining, refundable)
        if take > 0:
            portions[provider] = take
            remaining -= take
    if remaining:
        raise Conflict("The escrow holds less than the refund", code="refund_exceeds_held")
    legs: list[Leg] = [debit(accounts.escrow_account(escrow.id), amount)]
    legs += [credit(accounts.provider_clearing(p), part) for p, part in portions.items()]
    await post_entry(
        session,
        reference,
        escrow.currency,
        legs,
        description=f"Refund of {escrow.number}",
        escrow_id=escrow.id,
        metadata={"portions": portions},
    )
    for provider, part in portions.items():
        sources[provider] -= part
        await enqueue(
            session,
            REFUND_JOB,
            {
                "escrow_id": escrow.id,
                "provider": provider,
                "amount": part,
                "currency": escrow.currency,
                "reference": f"{reference}:{provider}",
            },
            dedupe_key=f"{reference}:{provider}",
        )
    escrow.funding_sources = sources
    escrow.refunded_amount += amount
    return portions


async def _on_refund_everything(move: Move) -> dict[str, Any]:
    """cancelled, expired, refunded: whatever was paid goes back."""
    session, escrow, params = move.session, move.escrow, move.params
    if escrow.status == S.disputed:
        return await _settle(session, escrow, buyer_refund=held(escrow), reason="dispute_resolved_refund")
    amount = held(escrow)
    portions = await _refund_held(session, escrow, amount, f"escrow:{escrow.id}:refund")
    return {"reason": params.get("reason"), "refunded": amount, "portions": portions}


async def _on_partially_refunded(move: Move) -> dict[str, Any]:
    session, escrow, params = move.session, move.escrow, move.params
    buyer_refund = params.get("buyer_refund")
    if not isinstance(buyer_refund, int) or not 0 < buyer_refund < held(escrow):
        raise Unprocessable(
            f"A split needs buyer_refund between 1 and {held(escrow) - 1}", code="invalid_split"
        )
    return await _settle(session, escrow, buyer_refund=buyer_refund, reason="dispute_resolved_split")


async def _settle(session: AsyncSession, escrow: Escrow, *, buyer_refund: int, reason: str) -> dict[str, Any]:
    """A dispute outcome: refund part (or all, or none) to the buyer, release the rest to the seller."""
    split = rules.resolution_split(
        held=held(escrow),
        buyer_refund=buyer_refund,
        amount=escrow.amount,
        buyer_fee=escrow.buyer_fee,
        seller_fee=escrow.seller_fee,
    )
    if split.seller + split.platform:
        await post_entry(
            session,
            f"escrow:{escrow.id}:release",
            escrow.currency,
            [
                debit(accounts.escrow_account(escrow.id), split.seller + split.platform),
                credit(accounts.user_available(escrow.seller_id), split.seller),
                credit(accounts.PLATFORM_FEES, split.platform),
            ],
            description=f"Dispute release of {escrow.number}",
            escrow_id=escrow.id,
            metadata={"reason": reason},
        )
        escrow.released_amount += split.seller + split.platform
    portions = await _refund_held(session, escrow, split.buyer, f"escrow:{escrow.id}:refund")
    escrow.resolution = {
        "outcome": reason,
        "buyer_refund": split.buyer,
        "seller_amount": split.seller,
        "platform_amount": split.platform,
        "resolved_at": clock.now().isoformat(),
    }
    return {**escrow.resolution, "portions": portions}


async def _on_disputed(move: Move) -> dict[str, Any]:
    escrow, actor, params, now = move.escrow, move.actor, move.params, move.now
    if escrow.dispute_deadline is not None and now > escrow.dispute_deadline:
        raise EmanetError(
            "The dispute window has closed",
            code="dispute_window_closed",
            status=409,
            dispute_deadline=escrow.dispute_deadline.isoformat(),
        )
    reason = (params.get("reason") or "").strip()
    if not reason:
        raise Unprocessable("A dispute needs a reason", code="dispute_reason_required")
    escrow.disputed_at = now
    escrow.resolution = {
        "reason": reason,
        "description": params.get("description", ""),
        "evidence_document_ids": list(params.get("document_ids") or []),
        "opened_by": actor.user_id,
    }
    return {"reason": reason}


_EFFECTS: dict[S, Effect] = {
    S.partially_funded: _on_partially_funded,
    S.funded: _on_funded,
    S.delivered: _on_delivered,
    S.released: _on_released,
    S.refunded: _on_refund_everything,
    S.cancelled: _on_refund_everything,
    S.expired: _on_refund_everything,
    S.disputed: _on_disputed,
    S.partially_refunded: _on_partially_refunded,
}


# ---------------------------------------------------------------------------------------------- payments


async def record_payment_captured(
    session: AsyncSession,
    *,
    escrow_id: str,
    payment_id: str,
    provider: str,
    amount: int,
    currency: str,
    actor: Actor,
    settings: Settings | None = None,
) -> Escrow:
    """A provider captured ``amount`` for this escrow: move it into escrow and fund (exactly once)."""
    settings = settings or get_settings()
    escrow = await lock_escrow(session, escrow_id)
    if currency != escrow.currency or amount <= 0:
        raise Unprocessable("Payment currency or amount does not match the escrow", code="payment_mismatch")
    holding = accounts.escrow_account(escrow.id)
    if escrow.funded_amount == 0:
        await open_accounts(session, [holding], currency)  # the escrow's first money: its account is new
    posted = await post_entry(
        session,
        f"payment:{payment_id}:capture",
        currency,
        [debit(accounts.provider_clearing(provider), amount), credit(holding, amount)],
        description=f"Payment {payment_id} for {escrow.number}",
        escrow_id=escrow.id,
        metadata={"payment_id": payment_id, "provider": provider},
    )
    if not posted.created:
        return escrow  # this payment was recorded before
    escrow.funded_amount += amount
    sources = dict(escrow.funding_sources or {})
    sources[provider] = sources.get(provider, 0) + amount
    escrow.funding_sources = sources
    source = S(escrow.status)
    if source not in (S.pending_payment, S.partially_funded):
        # The escrow closed while the buyer was paying: give the late payment straight back.
        await _refund_held(session, escrow, amount, f"payment:{payment_id}:late_refund")
        await _record(
            session,
            escrow,
            "late_payment_refunded",
            actor,
            source,
            source,
            {"payment_id": payment_id, "amount": amount},
        )
        return escrow
    await _record(
        session,
        escrow,
        "payment_captured",
        actor,
        source,
        source,
        {"payment_id": payment_id, "amount": amount, "provider": provider},
    )
    excess = escrow.funded_amount - escrow.total_due
    if excess > 0:
        # Two payments raced past the total: keep what is due, refund the rest.
        await _refund_held(session, escrow, excess, f"payment:{payment_id}:excess_refund")
    if held(escrow) >= escrow.total_due:
        return await apply_transition(session, escrow.id, S.funded, actor, settings=settings)
    if source == S.pending_payment:
        return await apply_transition(session, escrow.id, S.partially_funded, actor, settings=settings)
    await emit_event(session, "escrow.payment_received", escrow.id, snapshot(escrow))
    return escrow


def remaining_due(escrow: Escrow) -> int:
    return max(0, escrow.total_due - held(escrow))


async def held_by_currency(session: AsyncSession, user_id: str, *, as_buyer: bool) -> dict[str, int]:
    """Money held in the user's open escrows (funded, not yet released or refunded), per currency."""
    party = Escrow.buyer_id if as_buyer else Escrow.seller_id
    rows = await session.execute(
        select(
            Escrow.currency, func.sum(Escrow.funded_amount - Escrow.released_amount - Escrow.refunded_amount)
        )
        .where(party == user_id, Escrow.status.in_(rules.HOLDING))
        .group_by(Escrow.currency)
    )
    return {currency: int(total or 0) for currency, total in rows.all()}


# ---------------------------------------------------------------------------------------------- other actions


async def accept(session: AsyncSession, escrow_id: str, actor: Actor) -> Escrow:
    """The counterparty (the party who did not create the escrow) agrees to the terms."""
    escrow = await lock_escrow(session, escrow_id)
    who = party_role(escrow, actor)
    if who not in (rules.BUYER, rules.SELLER) or actor.user_id == escrow.created_by:
        raise Forbidden("Only the counterparty can accept the terms", code="not_counterparty")
    if escrow.status in rules.TERMINAL:
        raise Conflict(f"The escrow is already {escrow.status}", code="escrow_closed")
    if escrow.accepted_at is None:
        escrow.accepted_at = clock.now()
        await _record(session, escrow, "accepted", actor, escrow.status, escrow.status)
        await emit_event(session, "escrow.accepted", escrow.id, snapshot(escrow))
    return escrow


async def extend_deadline(
    session: AsyncSession, escrow_id: str, actor: Actor, *, field_name: str, until: datetime, reason: str
) -> Escrow:
    """Admin override: move one of the escrow's deadlines."""
    if field_name not in ("expires_at", "auto_release_at", "dispute_deadline", "hold_until"):
        raise Unprocessable(f"Unknown deadline {field_name!r}", code="invalid_deadline")
    escrow = await lock_escrow(session, escrow_id)
    if escrow.status in rules.TERMINAL:
        raise Conflict(f"The escrow is already {escrow.status}", code="escrow_closed")
    previous = getattr(escrow, field_name)
    setattr(escrow, field_name, until)
    await _record(
        session,
        escrow,
        "deadline_extended",
        actor,
        escrow.status,
        escrow.status,
        {
            "deadline": field_name,
            "from": previous.isoformat() if previous else None,
            "to": until.isoformat(),
            "reason": reason,
        },
    )
    return escrow


async def activity(session: AsyncSession, escrow: Escrow) -> Sequence[EscrowActivity]:
    rows = await session.execute(
        select(EscrowActivity).where(EscrowActivity.escrow_id == escrow.id).order_by(EscrowActivity.id)
    )
    return rows.scalars().all()


# ---------------------------------------------------------------------------------------------- listing


SORTABLE = ("created_at", "updated_at", "amount", "status", "number")  # Escrow's columns, by name


@dataclass
class EscrowFilters:
    role: str = "any"
    status: list[str] = field(default_factory=list)
    market_type: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    amount_min: int | None = None
    amount_max: int | None = None
    q: str | None = None
    user_id: str | None = None  # admin: escrows of this user
    currency: str | None = None


def _parse_sort(sort: str | None) -> list[tuple[str, bool]]:
    """ "-created_at,amount" -> [("created_at", descending), ("amount", ascending)]."""
    fields = [part.strip() for part in (sort or "-created_at").split(",") if part.strip()]
    parsed = []
    for item in fields:
        name, descending = item.lstrip("-"), item.startswith("-")
        if name not in SORTABLE:
            raise Unprocessable(f"Cannot sort by {name!r}; use {', '.join(SORTABLE)}", code="invalid_sort")
        parsed.append((name, descending))
    return parsed


def _cursor_value(name: str, raw: Any) -> Any:
    if name in ("created_at", "updated_at"):
        return datetime.fromisoformat(raw)
    return raw


def filtered_escrows(filters: EscrowFilters, viewer_id: str | None) -> Select[Any]:
    query = select(Escrow)
    if viewer_id is not None:
        if filters.role == "buyer":
            query = query.where(Escrow.buyer_id == viewer_id)
        elif filters.role == "seller":
            query = query.where(Escrow.seller_id == viewer_id)
        else:
            query = query.where(or_(Escrow.buyer_id == viewer_id, Escrow.seller_id == viewer_id))
    if filters.user_id:
        query = query.where(or_(Escrow.buyer_id == filters.user_id, Escrow.seller_id == filters.user_id))
    return query.where(*_conditions(filters))


def _conditions(filters: EscrowFilters) -> list[ColumnElement[bool]]:
    """The filters other than whose escrows they are."""
    conditions: list[ColumnElement[bool]] = []
    if filters.status:
        conditions.append(Escrow.status.in_(filters.status))
    if filters.market_type:
        conditions.append(Escrow.market_type == filters.market_type)
    if filters.currency:
        conditions.append(Escrow.currency == filters.currency)
    if filters.created_from:
        conditions.append(Escrow.created_at >= filters.created_from)
    if filters.created_to:
        conditions.append(Escrow.created_at < filters.created_to)
    if filters.amount_min is not None:
        conditions.append(Escrow.amount >= filters.amount_min)
    if filters.amount_max is not None:
        conditions.append(Escrow.amount <= filters.amount_max)
    if filters.q:
        term = filters.q.strip()
        conditions.append(
            or_(
                Escrow.number == term.upper(),
                func.lower(Escrow.title).contains(term.lower(), autoescape=True),
            )
        )
    return conditions


def _either_side_of(filters: EscrowFilters, viewer_id: str | None) -> str | None:
    """The user whose escrows, bought or sold, are asked for: a member's own list, or an admin's ``user``
    filter (None when the list is of one side, or of everyone)."""
    if viewer_id is None:
        return filters.user_id
    return viewer_id if filters.role not in ("buyer", "seller") and not filters.user_id else None


async def list_escrows(
    session: AsyncSession,
    filters: EscrowFilters,
    *,
    viewer_id: str | None,
    limit: int,
    cursor: dict[str, Any] | None,
    sort: str | None,
) -> tuple[list[Escrow], dict[str, Any] | None]:
    """Keyset pagination over any multi-field sort (the id breaks ties); one query per page."""
    order = _parse_sort(sort)
    keys = [*order, ("id", order[0][1])]
    after: list[ColumnElement[bool]] = []
    if cursor:
        try:
            values = [_cursor_value(name, cursor[name]) for name, _ in keys]
        except (KeyError, ValueError, TypeError) as exc:
            raise Unprocessable("The cursor does not match this sort", code="invalid_cursor") from exc
        after.append(after_cursor([(getattr(Escrow, name), descending) for name, descending in keys], values))

    def ordered(entity: Any) -> list[ColumnElement[Any]]:
        return [getattr(entity, n).desc() if d else getattr(entity, n).asc() for n, d in keys]

    party = _either_side_of(filters, viewer_id)
    if party is None:
        query = filtered_escrows(filters, viewer_id).where(*after).order_by(*ordered(Escrow))
    else:
        # One side at a time, each cut at the page in its own (party, created_at, id) index's order, then
        # merged. Asked as `buyer_id = :u OR seller_id = :u`, PostgreSQL may walk the whole index of the
        # sort key skipping everyone else's escrows, expecting to stop early: for a user with few escrows
        # that read every row (8,039 buffers by creation time, 100,757 by amount, on 100,000 escrows).
        sides = [
            select(Escrow).where(Escrow.buyer_id == party),
            select(Escrow).where(Escrow.seller_id == party, Escrow.buyer_id != party),
        ]
        pages = [
            side.where(*_conditions(filters), *after).order_by(*ordered(Escrow)).limit(limit + 1)
            for side in sides
        ]
        # each page a subquery of its own: SQLite takes no ORDER BY or LIMIT in a bare UNION member
        merged = aliased(Escrow, union_all(*(select(page.subquery()) for page in pages)).subquery())
        query = select(merged).order_by(*ordered(merged))
    rows: list[Escrow] = list((await session.execute(query.limit(limit + 1))).scalars().all())
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        next_cursor = {
            name: (
                getattr(last, name).isoformat()
                if isinstance(getattr(last, name), datetime)
                else getattr(last, name)
            )
            for name, _ in keys
        }
    return rows, next_cursor


async def due_for(
    session: AsyncSession, column: Any, statuses: Sequence[S], now: datetime, limit: int = 500
) -> list[str]:
    """Ids of escrows in ``statuses`` whose deadline ``column`` has passed (the sweeps' work list)."""
    rows = await session.execute(
        select(Escrow.id)
        .where(Escrow.status.in_(list(statuses)), column <= now)
        .order_by(column)
        .limit(limit)
    )
    return list(rows.scalars().all())


async def mark_dispute_escalated(session: AsyncSession, escrow_id: str) -> bool:
    result = await session.execute(
        update(Escrow)
        .where(
            Escrow.id == escrow_id,
            Escrow.status == EscrowStatus.disputed,
            Escrow.dispute_escalated_at.is_(None),
        )
        .values(dispute_escalated_at=clock.now())
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]
