"""Payments: starting, confirming, retrying and refunding payments of escrows, and inbound provider webhooks.

**A provider is never called while a database transaction is open.** Every operation that talks to a
provider has three steps, each its own short unit of work:

1. *intent* — one transaction checks the rules, writes the payment (status ``pending``) and a
   ``PaymentAttempt`` whose ``key`` (``{payment id}-{n}``) is the provider's idempotency key, and commits;
2. *call* — the provider is called with no transaction open (a slow or hanging provider holds no row lock
   and no connection); the same key is sent again whenever the outcome is unknown (timeout, 5xx), so a
   payment is never charged twice;
3. *result* — a new transaction records what the provider said through ``transition``.

That is why these functions take the ``Database`` rather than a session; a router calling them first
commits the request's own unit of work (authentication) — see ``emanet.payments.router``.

``transition`` is the one function that changes a payment's status: it locks the payment row, checks the
transition table, writes the status and what the provider reported, and — for ``succeeded`` — funds the
escrow through ``emanet.escrow.service.record_payment_captured`` (ledger entry ``payment:{id}:capture``)
and books the provider's fee (``payment:{id}:fee``) in the same transaction, and emits the event.

Refunds are decided by the escrow (cancel, refund, dispute resolution): the escrow moves the money in the
ledger at decision time and enqueues one ``payments.refund_for_escrow`` job per provider portion; the job
(``refund_for_escrow``) splits the portion over that escrow's payments through the provider, records a
``PaymentRefund`` per payment BEFORE calling the provider (idempotency key ``{job reference}:{payment id}``)
and marks the payments ``refunded`` / ``partially_refunded`` as the provider confirms.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
import structlog
from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from emanet.core import clock
from emanet.core.auth import Principal
from emanet.core.db import Database, lock_row, new_id, upsert
from emanet.core.errors import Conflict, EmanetError, NotFound, ProviderError, Unprocessable
from emanet.core.models import Job
from emanet.core.outbox import emit_event
from emanet.core.settings import Settings
from emanet.core.worker import enqueue_once
from emanet.escrow import service as escrow_service
from emanet.escrow.models import Escrow, EscrowStatus
from emanet.ledger import accounts
from emanet.ledger.service import credit, debit, post_entry
from emanet.payments.models import (
    Payment,
    PaymentAttempt,
    PaymentRefund,
    PaymentStatus,
    ProviderEvent,
    RefundStatus,
    SavedCard,
)
from emanet.providers.base import (
    CardDetails,
    CreatePayment,
    Customer,
    NextAction,
    PaymentProvider,
    ProviderDeclined,
    ProviderPayment,
    ProviderUnavailable,
    WebhookEvent,
    WebhookReply,
)
from emanet.providers.registry import PROVIDERS, get_provider, payment_methods
from emanet.users.models import User

log = structlog.get_logger("emanet.payments")

P = PaymentStatus
REFRESH_JOB = "payments.refresh"
REFUND_JOB = escrow_service.REFUND_JOB
# Every provider with an inbound webhook route (POST /api/v1/webhooks/{provider}).
WEBHOOK_PROVIDERS = (
    "sandbox",
    "stripe",
    "razorpay",
    "paypal",
    "paystack",
    "jetcheckout",
    "moyasar",
    "paytabs",
    "iyzico",
    "paytr",
)

# Who may make a move: the provider's news, a retry by the payer, or a refund confirmed by the provider.
PROVIDER, RETRY, REFUND = "provider", "retry", "refund"
TRANSITIONS: dict[tuple[P, P], frozenset[str]] = {
    **{
        (source, target): frozenset({PROVIDER})
        for source in (P.pending, P.requires_action, P.processing)
        for target in (P.requires_action, P.processing, P.succeeded, P.failed, P.cancelled)
        if source != target
    },
    # A provider that reported a failure and then captured after all (a late 3-D Secure result): the money
    # is there, so it funds the escrow (which refunds it at once if the escrow is closed by then).
    (P.failed, P.succeeded): frozenset({PROVIDER}),
    (P.failed, P.pending): frozenset({RETRY}),
    (P.cancelled, P.pending): frozenset({RETRY}),
    (P.succeeded, P.partially_refunded): frozenset({REFUND}),
    (P.succeeded, P.refunded): frozenset({REFUND}),
    (P.partially_refunded, P.partially_refunded): frozenset({REFUND}),
    (P.partially_refunded, P.refunded): frozenset({REFUND}),
}
UNSETTLED = frozenset({P.pending, P.requires_action, P.processing})
CAPTURED = frozenset({P.succeeded, P.partially_refunded, P.refunded})
RETRYABLE = frozenset({P.failed, P.cancelled})
# Statuses announced as events (webhooks to platforms, notifications to the payer).
ANNOUNCED = frozenset({P.succeeded, P.failed, P.cancelled, P.refunded, P.partially_refunded})


class IllegalPaymentTransition(Conflict):
    code = "illegal_payment_transition"


class PaymentMismatch(Conflict):
    """The provider reports a capture in another currency than the payment's: nothing is booked."""

    code = "payment_mismatch"


class RefundIncomplete(Exception):
    """Some provider refunds of a refund job failed; raising hands the job to the worker's retries."""


@dataclass(frozen=True)
class Outcome:
    """What a provider said about a payment (from an API answer or a webhook), in our vocabulary."""

    status: P
    reference: str | None = None
    amount: int | None = None
    currency: str | None = None
    fee: int | None = None
    failure_code: str | None = None
    failure_message: str | None = None
    card: CardDetails | None = None
    next_action: NextAction | None = None

    @classmethod
    def from_payment(cls, result: ProviderPayment) -> Outcome:
        return cls(
            status=_ours(result.status),
            reference=result.reference,
            amount=result.amount,
            currency=result.currency,
            fee=result.fee,
            failure_code=result.failure_code,
            failure_message=result.failure_message,
            card=result.card,
            next_action=result.next_action,
        )

    @classmethod
    def from_event(cls, event: WebhookEvent) -> Outcome:
        return cls(
            status=_ours(event.status or ""),
            reference=event.payment_reference,
            amount=event.amount,
            currency=event.currency,
            failure_code=event.failure_code,
            failure_message=event.failure_message,
            card=event.card,
            fee=event.fee,
        )

    @classmethod
    def refused(cls, exc: ProviderError) -> Outcome:
        code = getattr(exc, "decline_code", None) or exc.code
        return cls(status=P.failed, failure_code=str(code)[:64], failure_message=exc.detail[:300])


def _ours(status: str) -> P:
    """A provider's view of one of its payments. Its own refund states mean the capture happened: our refund
    rows (not the provider's summary) drive ``refunded``/``partially_refunded``."""
    if status in (P.refunded, P.partially_refunded):
        return P.succeeded
    return P(status)


def attempt_key(payment_id: str, number: int) -> str:
    return f"{payment_id}-{number}"


def snapshot(payment: Payment, escrow: Escrow | None = None) -> dict[str, Any]:
    """The payment as events carry it. ``payer_id`` is whom notifications go to; the escrow's parties are not
    copied in, so the seller is not told "your payment was received"."""
    data: dict[str, Any] = {
        "id": payment.id,
        "object": "payment",
        "escrow_id": payment.escrow_id,
        "payer_id": payment.payer_id,
        "status": payment.status,
        "amount": payment.amount,
        "currency": payment.currency,
        "captured_amount": payment.captured_amount,
        "refunded_amount": payment.refunded_amount,
        "provider": payment.provider,
        "method": payment.method,
        "attempt": payment.attempt,
        "failure_code": payment.failure_code,
    }
    if escrow is not None:
        data.update(number=escrow.number, title=escrow.title)
    return data


# ---------------------------------------------------------------------------------------------- reading


async def lock_payment(session: AsyncSession, payment_id: str) -> Payment:
    payment = await lock_row(session, Payment, payment_id)
    if payment is None:
        raise NotFound("No such payment")
    return payment


async def visible_payment(session: AsyncSession, payment_id: str, principal: Principal) -> Payment:
    """The payment, if the caller may see it: the payer, the escrow's seller, or staff (others get 404)."""
    payment = await session.get(Payment, payment_id)
    if payment is not None and (principal.is_staff or principal.id == payment.payer_id):
        return payment
    if payment is not None:
        escrow = await session.get(Escrow, payment.escrow_id)
        if escrow is not None and principal.id == escrow.seller_id:
            return payment
    raise NotFound("No such payment")


def attempt_reference_is(reference: str) -> ColumnElement[bool]:
    """The provider's reference or our attempt key: two index probes however many attempts there are. A
    provider condition stays out of the SQL: beside it, a table without statistics yet made PostgreSQL read
    every attempt of that provider through the (provider, provider_reference) index instead."""
    return or_(PaymentAttempt.provider_reference == reference, PaymentAttempt.key == reference)


async def payment_by_reference(session: AsyncSession, reference: str, principal: Principal) -> Payment:
    """A payment by a provider reference of any of its attempts, or by our attempt key."""
    attempt = (
        await session.execute(
            select(PaymentAttempt)
            .where(attempt_reference_is(reference))
            .order_by(PaymentAttempt.created_at.desc())
            .limit(1)
        )
    ).scalar_one_or_none()
    if attempt is None:
        raise NotFound("No payment with that reference")
    return await visible_payment(session, attempt.payment_id, principal)


async def list_payments(
    session: AsyncSession, principal: Principal, *, escrow_id: str | None, limit: int, before: str | None
) -> tuple[list[Payment], str | None]:
    """The caller's payments (staff: everyone's), newest first, keyset-paginated by id (ids sort by time)."""
    query = select(Payment)
    if not principal.is_staff:
        query = query.where(Payment.payer_id == principal.id)
    if escrow_id:
        query = query.where(Payment.escrow_id == escrow_id)
    if before:
        query = query.where(Payment.id < before)
    rows = list((await session.execute(query.order_by(Payment.id.desc()).limit(limit + 1))).scalars().all())
    next_before = rows[limit - 1].id if len(rows) > limit else None
    return rows[:limit], next_before


async def escrow_payments(session: AsyncSession, escrow_id: str) -> Sequence[Payment]:
    return (
        (
            await session.execute(
                select(Payment).where(Payment.escrow_id == escrow_id).order_by(Payment.created_at, Payment.id)
            )
        )
        .scalars()
        .all()
    )


async def refunds_of(session: AsyncSession, payment_id: str) -> Sequence[PaymentRefund]:
    return (
        (
            await session.execute(
                select(PaymentRefund)
                .where(PaymentRefund.payment_id == payment_id)
                .order_by(PaymentRefund.created_at, PaymentRefund.id)
            )
        )
        .scalars()
        .all()
    )


def needs_refresh(payment: Payment, settings: Settings) -> bool:
    """Not settled yet and nobody asked the provider (or heard from it) recently."""
    if payment.status not in UNSETTLED:
        return False
    last = payment.last_checked_at or payment.created_at
    return clock.now() - last >= timedelta(seconds=settings.payment_status_refresh_seconds)


def available_methods(currency: str, country: str | None, settings: Settings) -> list[tuple[str, list[str]]]:
    return [(m.method, m.providers) for m in payment_methods(currency, country, settings)]


# ------------------------------------------------------------------------------------------ the state machine


async def transition(
    session: AsyncSession,
    payment_id: str,
    target: P,
    *,
    via: str,
    settings: Settings,
    outcome: Outcome | None = None,
    attempt: str | None = None,
) -> Payment:
    """Lock the payment, record what the provider said, and move it to ``target`` if the table allows.

    ``attempt`` names the provider attempt the news is about; news about an attempt that is no longer the
    payment's current one only updates that attempt. Moving to the status the payment already has records the
    details (next action, card, fee) and changes nothing else. Raises ``IllegalPaymentTransition`` before
    writing anything when the move is not allowed.
    """
    payment = await lock_payment(session, payment_id)
    source = P(payment.status)
    current_key = attempt_key(payment.id, payment.attempt)
    if attempt is not None and attempt != current_key:
        await _record_stale_attempt(session, payment, attempt, target, outcome)
        return payment
    if target == P.succeeded and source in CAPTURED:
        target = source  # the provider's news about a payment we already booked
    if target == P.pending and via == PROVIDER and source in UNSETTLED:
        target = source  # "still pending" is no news
    # A move to the same status is a move only where the table lists it (another partial refund).
    moving = target != source or via in TRANSITIONS.get((source, target), frozenset())
    if moving and via not in TRANSITIONS.get((source, target), frozenset()):
        raise IllegalPaymentTransition(
            f"A payment cannot go from {source} to {target}", status_now=source.value
        )
    if target == P.succeeded and outcome is not None and outcome.currency not in (None, payment.currency):
        raise PaymentMismatch(f"The provider captured {outcome.currency}, the payment is {payment.currency}")
    # Autoflush off: the payment's changes below go out as one UPDATE, not one per query in between.
    with session.no_autoflush:
        now = clock.now()
        payment.last_checked_at = now
        if outcome is not None:
            await _record_outcome(session, payment, outcome, target)
        if target in (P.failed, P.cancelled, P.succeeded):
            payment.next_action = None
        if moving:
            payment.status = target
            payment.updated_at = now
            attempt_row = await session.get(PaymentAttempt, current_key)
            if attempt_row is not None and via != REFUND:
                attempt_row.status = target
            log.info(
                "payment_transition", payment_id=payment.id, source=source.value, target=target.value, via=via
            )
        if (
            payment.status in CAPTURED
            and outcome is not None
            and outcome.fee is not None
            and payment.fee is None
        ):
            await _book_fee(session, payment, outcome.fee)
        if target == P.succeeded and source not in CAPTURED:
            await _capture(session, settings, payment, outcome, now)
        if moving and target in ANNOUNCED:
            escrow = await session.get(Escrow, payment.escrow_id)
            await emit_event(session, f"payment.{target.value}", payment.id, snapshot(payment, escrow))
    return payment


async def _capture(
    session: AsyncSession, settings: Settings, payment: Payment, outcome: Outcome | None, now: datetime
) -> None:
    """Fund the escrow with what the provider captured, in the caller's transaction."""
    captured = outcome.amount if outcome is not None and outcome.amount else payment.amount
    if captured != payment.amount:
        log.warning(
            "payment_captured_amount_differs", payment_id=payment.id, asked=payment.amount, captured=captured
        )
    payment.captured_amount = captured
    payment.succeeded_at = now
    await escrow_service.record_payment_captured(
        session,
        escrow_id=payment.escrow_id,
        payment_id=payment.id,
        provider=payment.provider,
        amount=captured,
        currency=payment.currency,
        actor=escrow_service.Actor.provider(payment.provider),
        settings=settings,
    )
    if payment.fee is None:
        # The news did not say what the provider charged: ask once, later, outside this transaction.
        await enqueue_once(
            session, REFRESH_JOB, {"payment_id": payment.id}, dedupe_key=f"{REFRESH_JOB}:{payment.id}"
        )


async def _record_outcome(session: AsyncSession, payment: Payment, outcome: Outcome, target: P) -> None:
    attempt = await session.get(PaymentAttempt, attempt_key(payment.id, payment.attempt))
    if outcome.reference and payment.provider_reference is None:
        payment.provider_reference = outcome.reference
        if attempt is not None:
            attempt.provider_reference = outcome.reference
            await _replay_unmatched(session, payment, outcome.reference)
    if outcome.next_action is not None and target in (P.requires_action, P.pending, P.processing):
        payment.next_action = {
            "type": outcome.next_action.type,
            "url": outcome.next_action.url,
            "data": dict(outcome.next_action.data),
        }
    if target == P.failed:
        payment.failure_code = outcome.failure_code or "payment_failed"
        payment.failure_message = outcome.failure_message
        if attempt is not None:
            attempt.failure_code, attempt.failure_message = payment.failure_code, payment.failure_message
    if outcome.card is not None:
        payment.card_brand, payment.card_last4 = outcome.card.brand[:20], outcome.card.last4[-4:]
        if outcome.card.token and payment.save_card and target == P.succeeded:
            payment.saved_card_id = await _save_card(session, payment, outcome.card)


async def _record_stale_attempt(
    session: AsyncSession, payment: Payment, key: str, target: P, outcome: Outcome | None
) -> None:
    """News about an attempt the payment has moved past (a retry replaced it)."""
    attempt = await session.get(PaymentAttempt, key)
    if attempt is None or attempt.payment_id != payment.id:
        return
    if outcome is not None and outcome.reference and attempt.provider_reference is None:
        attempt.provider_reference = outcome.reference
    if target == P.succeeded and attempt.status != P.succeeded:
        # Retries start only after the provider called the attempt final-failed; if it captured anyway the
        # money is at the provider without a booking: reconciliation lists it for an admin.
        log.error("superseded_attempt_captured", payment_id=payment.id, attempt=key)
    attempt.status = target


async def _replay_unmatched(session: AsyncSession, payment: Payment, reference: str) -> None:
    """A webhook can arrive before we recorded the provider reference it names; such events were stored as
    ``unmatched``. Once the reference is known, ask the provider (a job, outside this transaction)."""
    waiting = (
        await session.execute(
            select(ProviderEvent.id)
            .where(
                ProviderEvent.provider == payment.provider,
                ProviderEvent.object_reference == reference,
                ProviderEvent.outcome == "unmatched",
            )
            .limit(1)
        )
    ).first()
    if waiting:
        await enqueue_once(
            session,
            REFRESH_JOB,
            {"payment_id": payment.id},
            dedupe_key=f"{REFRESH_JOB}:{payment.id}:{reference}",
        )


async def _save_card(session: AsyncSession, payment: Payment, card: CardDetails) -> str:
    assert card.token is not None
    await session.execute(
        upsert(session, SavedCard)
        .values(
            id=new_id("card"),
            user_id=payment.payer_id,
            provider=payment.provider,
            token=card.token,
            brand=card.brand[:20],
            last4=card.last4[-4:],
            exp_month=card.exp_month,
            exp_year=card.exp_year,
            created_at=clock.now(),
        )
        .on_conflict_do_nothing(index_elements=["provider", "token"])
    )
    saved = (
        await session.execute(
            select(SavedCard).where(SavedCard.provider == payment.provider, SavedCard.token == card.token)
        )
    ).scalar_one()
    return saved.id


async def _book_fee(session: AsyncSession, payment: Payment, fee: int) -> None:
    """What the provider charged, as an expense paid out of its clearing account (reference ``…:fee``)."""
    payment.fee = fee
    if fee > 0:
        await post_entry(
            session,
            f"payment:{payment.id}:fee",
            payment.currency,
            [
                debit(accounts.provider_fees(payment.provider), fee),
                credit(accounts.provider_clearing(payment.provider), fee),
            ],
            description=f"{payment.provider} fee for payment {payment.id}",
            metadata={"payment_id": payment.id, "provider": payment.provider},
        )


# ---------------------------------------------------------------------------------------------- starting


@dataclass(frozen=True)
class PaymentRequest:
    escrow_id: str
    return_url: str
    provider: str | None = None
    method: str = "card"
    amount: int | None = None
    currency: str | None = None
    saved_card_id: str | None = None
    save_card: bool = False
    country: str | None = None


async def start_payment(database: Database, settings: Settings, payer: User, req: PaymentRequest) -> Payment:
    """Intent (committed), provider call (no transaction), result (new transaction): see the module doc."""
    async with database.transaction() as session:
        payment, provider, request = await _record_intent(session, database, settings, payer, req)
    return await _send_attempt(database, settings, provider, payment.id, request)


def _choose_provider(
    database: Database, settings: Settings, name: str | None, method: str, currency: str, country: str | None
) -> PaymentProvider:
    if name is None:
        offering = dict(available_methods(currency, country, settings)).get(method)
        if not offering:
            raise Unprocessable(f"No provider offers {method} for {currency}", code="method_not_available")
        name = offering[0]
    provider = get_provider(name, settings, database)
    if method not in provider.methods(currency, country):
        raise Unprocessable(
            f"{provider.display_name} does not offer {method} for {currency}",
            code="method_not_available",
            methods=provider.methods(currency, country),
        )
    return provider


async def _record_intent(
    session: AsyncSession, database: Database, settings: Settings, payer: User, req: PaymentRequest
) -> tuple[Payment, PaymentProvider, CreatePayment]:
    escrow = await escrow_service.lock_escrow(session, req.escrow_id)
    if escrow.buyer_id != payer.id:
        raise NotFound("No such escrow")
    _check_payable(escrow)
    if req.currency is not None and req.currency != escrow.currency:
        raise Unprocessable(f"The escrow is in {escrow.currency}", code="currency_mismatch")
    due = escrow_service.remaining_due(escrow)
    amount = req.amount if req.amount is not None else due
    if not 0 < amount <= due:
        raise Unprocessable(
            f"The amount must be between 1 and the remaining due {due} {escrow.currency}",
            code="amount_exceeds_remaining_due",
            remaining_due=due,
        )
    card: SavedCard | None = None
    if req.saved_card_id:
        card = await session.get(SavedCard, req.saved_card_id)
        if card is None or card.user_id != payer.id:
            raise NotFound("No such saved card")
    provider = _choose_provider(
        database,
        settings,
        req.provider or (card.provider if card else None),
        req.method,
        escrow.currency,
        req.country,
    )
    if card is not None and card.provider != provider.name:
        raise Unprocessable(f"That card is saved with {card.provider}", code="saved_card_provider_mismatch")
    if (req.save_card or card is not None) and not provider.supports_saved_cards:
        raise Unprocessable(f"{provider.display_name} does not keep cards", code="saved_cards_not_supported")
    payment = Payment(
        escrow_id=escrow.id,
        payer_id=payer.id,
        provider=provider.name,
        method=req.method,
        amount=amount,
        currency=escrow.currency,
        status=P.pending,
        attempt=1,
        return_url=req.return_url,
        save_card=req.save_card and card is None,
        saved_card_id=card.id if card else None,
    )
    session.add(payment)
    await session.flush()
    session.add(
        PaymentAttempt(
            key=attempt_key(payment.id, 1),
            payment_id=payment.id,
            number=1,
            provider=provider.name,
            status=P.pending,
        )
    )
    log.info(
        "payment_started",
        payment_id=payment.id,
        escrow_id=escrow.id,
        provider=provider.name,
        amount=amount,
        currency=escrow.currency,
    )
    return payment, provider, _provider_request(payment, escrow, payer, card)


def _check_payable(escrow: Escrow) -> None:
    if escrow.status not in (EscrowStatus.pending_payment, EscrowStatus.partially_funded):
        raise Conflict(
            f"The escrow is {escrow.status}; it cannot take payments",
            code="escrow_not_payable",
            status_now=escrow.status,
        )


async def _create_request(database: Database, payment_id: str) -> CreatePayment:
    """The provider request for the payment's current attempt, rebuilt from what we stored (so a resend after
    an unknown outcome is byte-for-byte the same request with the same idempotency key)."""
    async with database.transaction() as session:
        payment = await session.get_one(Payment, payment_id)
        escrow = await session.get_one(Escrow, payment.escrow_id)
        payer = await session.get_one(User, payment.payer_id)
        card = await session.get(SavedCard, payment.saved_card_id) if payment.saved_card_id else None
    return _provider_request(payment, escrow, payer, card)


def _provider_request(payment: Payment, escrow: Escrow, payer: User, card: SavedCard | None) -> CreatePayment:
    return CreatePayment(
        payment_id=attempt_key(payment.id, payment.attempt),
        amount=payment.amount,
        currency=payment.currency,
        description=f"{escrow.number} {escrow.title}"[:200],
        return_url=payment.return_url,
        customer=Customer(name=payer.name or None, email=payer.email, phone=payer.phone),
        method=payment.method,
        saved_card_token=card.token if card else None,
        save_card=payment.save_card,
        metadata={"payment_id": payment.id, "escrow_id": escrow.id, "buyer_id": payer.id},
    )


async def _send_attempt(
    database: Database,
    settings: Settings,
    provider: PaymentProvider,
    payment_id: str,
    request: CreatePayment | None = None,
) -> Payment:
    """Send (or resend, same key) the current attempt to the provider and record the answer. ``request`` is
    the one the caller just built with the intent; otherwise it is rebuilt from what we stored."""
    request = request or await _create_request(database, payment_id)
    try:
        outcome = Outcome.from_payment(await provider.create_payment(request))
    except ProviderUnavailable as exc:
        # The outcome is unknown: keep the payment pending; the poll (or the next GET) resends the same key.
        async with database.transaction() as session:
            locked = await lock_payment(session, payment_id)
            locked.last_checked_at = clock.now()
        log.warning("payment_provider_unavailable", payment_id=payment_id, provider=provider.name)
        raise ProviderUnavailable(
            f"{exc.detail}; payment {payment_id} stays pending and is resumed with the same "
            "idempotency key (GET it later)",
            payment_id=payment_id,
        ) from exc
    except ProviderError as exc:
        outcome = Outcome.refused(exc)
    async with database.transaction() as session:
        return await transition(
            session,
            payment_id,
            outcome.status,
            via=PROVIDER,
            settings=settings,
            outcome=outcome,
            attempt=request.payment_id,
        )


async def refresh_payment(
    database: Database, settings: Settings, payment_id: str, *, return_params: Mapping[str, str] | None = None
) -> Payment:
    """Ask the provider where an unsettled payment stands and record it. ``return_params`` are the query
    parameters of a browser return (``complete_payment`` confirms them server-side)."""
    async with database.transaction() as session:
        payment = await session.get_one(Payment, payment_id)
    if payment.status not in UNSETTLED:
        return payment
    provider = get_provider(payment.provider, settings, database)
    if payment.provider_reference is None:
        return await _send_attempt(database, settings, provider, payment_id)
    key = attempt_key(payment.id, payment.attempt)
    try:
        if return_params is not None:
            result = await provider.complete_payment(payment.provider_reference, return_params)
        else:
            result = await provider.get_payment(payment.provider_reference)
    except ProviderDeclined as exc:
        log.warning("payment_status_refused", payment_id=payment_id, error=exc.detail)
        async with database.transaction() as session:
            locked = await lock_payment(session, payment_id)
            locked.last_checked_at = clock.now()
            return locked
    outcome = Outcome.from_payment(result)
    async with database.transaction() as session:
        return await transition(
            session, payment_id, outcome.status, via=PROVIDER, settings=settings, outcome=outcome, attempt=key
        )


async def record_fee(database: Database, settings: Settings, payment_id: str) -> None:
    """The refresh job for a succeeded payment: learn the provider's fee (and confirm the capture)."""
    async with database.transaction() as session:
        payment = await session.get_one(Payment, payment_id)
    if payment.status in UNSETTLED:
        await refresh_payment(database, settings, payment_id)
        return
    if payment.status not in CAPTURED or payment.fee is not None or payment.provider_reference is None:
        return
    provider = get_provider(payment.provider, settings, database)
    result = await provider.get_payment(payment.provider_reference)
    if result.fee is None:
        return
    async with database.transaction() as session:
        locked = await lock_payment(session, payment_id)
        if locked.fee is None:
            await _book_fee(session, locked, result.fee)


async def retry_payment(
    database: Database, settings: Settings, payer: User, payment_id: str, *, return_url: str | None = None
) -> Payment:
    """A new provider attempt (new idempotency key) of a payment whose last attempt is final-failed."""
    async with database.transaction() as session:
        payment = await lock_payment(session, payment_id)
        if payment.payer_id != payer.id:
            raise NotFound("No such payment")
        if payment.status not in RETRYABLE:
            raise Conflict(
                f"A {payment.status} payment cannot be retried; only failed or cancelled ones",
                code="payment_not_retryable",
                status_now=payment.status,
            )
        if payment.attempt >= settings.payment_max_attempts:
            raise Conflict(
                f"This payment was tried {payment.attempt} times; start a new payment",
                code="retry_limit_reached",
                attempts=payment.attempt,
            )
        escrow = await escrow_service.lock_escrow(session, payment.escrow_id)
        _check_payable(escrow)
        due = escrow_service.remaining_due(escrow)
        if payment.amount > due:
            raise Unprocessable(
                f"Only {due} {escrow.currency} remains due; start a new payment",
                code="amount_exceeds_remaining_due",
                remaining_due=due,
            )
        provider = get_provider(payment.provider, settings, database)
        payment.attempt += 1
        payment.provider_reference = None
        payment.next_action = None
        payment.failure_code = payment.failure_message = None
        payment.card_brand = payment.card_last4 = None
        if return_url:
            payment.return_url = return_url
        session.add(
            PaymentAttempt(
                key=attempt_key(payment.id, payment.attempt),
                payment_id=payment.id,
                number=payment.attempt,
                provider=payment.provider,
                status=P.pending,
            )
        )
        await session.flush()
        await transition(session, payment.id, P.pending, via=RETRY, settings=settings)
        log.info("payment_retried", payment_id=payment.id, attempt=payment.attempt)
    return await _send_attempt(database, settings, provider, payment_id)


# ---------------------------------------------------------------------------------------------- refunds


def _refund_job_reference(escrow_id: str, provider: str) -> str:
    """The reference the escrow gives a provider portion's refund job (``escrow.service._refund_held``)."""
    return f"escrow:{escrow_id}:refund:{provider}"


async def _open_refund_total(session: AsyncSession, payment_id: str) -> int:
    """Allocated to the payment but not yet confirmed by the provider (failed rows are retried, so count)."""
    total = (
        await session.execute(
            select(func.coalesce(func.sum(PaymentRefund.amount), 0)).where(
                PaymentRefund.payment_id == payment_id, PaymentRefund.status != RefundStatus.succeeded
            )
        )
    ).scalar_one()
    return int(total)


async def refundable(session: AsyncSession, payment: Payment) -> int:
    if payment.status not in (P.succeeded, P.partially_refunded):
        return 0
    return payment.captured_amount - payment.refunded_amount - await _open_refund_total(session, payment.id)


async def refund_payment(
    session: AsyncSession,
    settings: Settings,
    payment_id: str,
    *,
    actor: escrow_service.Actor,
    amount: int | None,
    reason: str,
) -> list[PaymentRefund]:
    """An admin refund of a payment, decided through the escrow so ledger and escrow stay consistent.

    All of what the escrow holds: the escrow is cancelled (not yet funded) or refunded (funded, or
    disputed). Part of it: only as the outcome of a dispute (``partially_refunded``: the rest is released to
    the seller). The escrow's transition posts the ledger entry and enqueues the provider refund jobs; the
    part of this payment's provider portion that this payment can return is allocated to it here.
    """
    payment = await lock_payment(session, payment_id)
    left = await refundable(session, payment)
    if left <= 0:
        raise Conflict(
            f"A {payment.status} payment has nothing left to refund",
            code="payment_not_refundable",
            status_now=payment.status,
        )
    amount = left if amount is None else amount
    if not 0 < amount <= left:
        raise Unprocessable(
            f"At most {left} {payment.currency} of this payment can be refunded",
            code="refund_exceeds_payment",
            refundable=left,
        )
    escrow = await escrow_service.lock_escrow(session, payment.escrow_id)
    held = escrow_service.held(escrow)
    status = EscrowStatus(escrow.status)
    whole = amount == held
    if whole and status in (EscrowStatus.pending_payment, EscrowStatus.partially_funded):
        target = EscrowStatus.cancelled
    elif whole and status in (EscrowStatus.funded, EscrowStatus.disputed):
        target = EscrowStatus.refunded
    elif status == EscrowStatus.disputed and 0 < amount < held:
        target = EscrowStatus.partially_refunded
    else:
        raise Conflict(
            f"The escrow is {status.value} and holds {held} {escrow.currency}: a refund of {amount} is "
            "possible only as all of it (cancel or refund) or, in a dispute, as part of it",
            code="refund_not_allowed_by_escrow",
            escrow_status=status.value,
            held=held,
        )
    await escrow_service.apply_transition(
        session,
        escrow.id,
        target,
        actor,
        params={
            "reason": reason,
            "buyer_refund": amount,
            "action": "payment_refund",
            "payment_id": payment.id,
        },
        settings=settings,
    )
    reference = _refund_job_reference(escrow.id, payment.provider)
    job = (await session.execute(select(Job).where(Job.dedupe_key == reference))).scalar_one_or_none()
    portion = int(job.payload["amount"]) if job is not None else 0
    share = min(amount, portion, left)
    if share <= 0:
        return []
    refund = PaymentRefund(
        payment_id=payment.id,
        escrow_id=escrow.id,
        escrow_reference=reference,
        idempotency_key=f"{reference}:{payment.id}",
        provider=payment.provider,
        amount=share,
        currency=payment.currency,
        status=RefundStatus.pending,
        requested_by=actor.user_id,
        reason=reason,
    )
    session.add(refund)
    await session.flush()
    log.info("payment_refund_requested", payment_id=payment.id, refund_id=refund.id, amount=share)
    return [refund]


async def _allocate(
    session: AsyncSession, *, escrow_id: str, provider: str, amount: int, currency: str, reference: str
) -> list[PaymentRefund]:
    """The ``PaymentRefund`` rows of one refund job: kept from an earlier run (or an admin's request), plus
    new ones covering the rest, the preferred payment first, then the largest refundable."""
    rows = list(
        (
            await session.execute(
                select(PaymentRefund)
                .where(PaymentRefund.escrow_reference == reference)
                .order_by(PaymentRefund.id)
            )
        )
        .scalars()
        .all()
    )
    remaining = amount - sum(r.amount for r in rows)
    if remaining <= 0:
        return rows
    payments = (
        (
            await session.execute(
                select(Payment)
                .where(
                    Payment.escrow_id == escrow_id,
                    Payment.provider == provider,
                    Payment.status.in_([P.succeeded, P.partially_refunded]),
                )
                .order_by(Payment.id)
                .with_for_update()
                .execution_options(populate_existing=True)
            )
        )
        .scalars()
        .all()
    )
    # "payment:{id}:late_refund:{provider}": the escrow names the payment the money came from.
    preferred = reference.split(":")[1] if reference.startswith("payment:") else None
    taken = {r.payment_id for r in rows}
    candidates = [(p, await refundable(session, p)) for p in payments if p.id not in taken]
    candidates.sort(key=lambda pair: (pair[0].id != preferred, -pair[1], pair[0].id))
    for payment, can_return in candidates:
        take = min(remaining, can_return)
        if take <= 0:
            continue
        row = PaymentRefund(
            payment_id=payment.id,
            escrow_id=escrow_id,
            escrow_reference=reference,
            idempotency_key=f"{reference}:{payment.id}",
            provider=provider,
            amount=take,
            currency=currency,
            status=RefundStatus.pending,
        )
        session.add(row)
        rows.append(row)
        remaining -= take
        if remaining == 0:
            break
    if remaining:
        raise RefundIncomplete(
            f"{reference}: the escrow's {provider} payments cannot return {remaining} {currency}"
        )
    await session.flush()
    return rows


async def refund_for_escrow(database: Database, settings: Settings, payload: Mapping[str, Any]) -> None:
    """The ``payments.refund_for_escrow`` job: send one provider portion of an escrow refund back through the
    escrow's payments. Safe to run twice: rows are reused, the provider dedupes on the idempotency key."""
    provider_name, reference, currency = payload["provider"], payload["reference"], payload["currency"]
    provider = get_provider(provider_name, settings, database)
    async with database.transaction() as session:
        rows = await _allocate(
            session,
            escrow_id=payload["escrow_id"],
            provider=provider_name,
            amount=int(payload["amount"]),
            currency=currency,
            reference=reference,
        )
        work = [
            (row.id, row.amount, row.idempotency_key, (await session.get_one(Payment, row.payment_id)))
            for row in rows
            if row.status in (RefundStatus.pending, RefundStatus.failed)
        ]
    failures: list[str] = []
    for refund_id, amount, key, payment in work:
        if payment.provider_reference is None:
            failures.append(f"{payment.id} has no provider reference")
            continue
        try:
            result = await provider.refund(payment.provider_reference, amount, currency, idempotency_key=key)
        except ProviderError as exc:
            failures.append(f"{payment.id}: {exc.detail}")
            async with database.transaction() as session:
                await record_refund_result(
                    session, settings, refund_id, RefundStatus.failed, failure=exc.detail
                )
            continue
        status = {
            "succeeded": RefundStatus.succeeded,
            "pending": RefundStatus.processing,
            "failed": RefundStatus.failed,
        }[result.status]
        async with database.transaction() as session:
            await record_refund_result(
                session, settings, refund_id, status, provider_reference=result.reference
            )
        if status == RefundStatus.failed:
            failures.append(f"{payment.id}: the provider refused the refund")
    if failures:
        raise RefundIncomplete(f"{reference}: " + "; ".join(failures))


async def record_refund_result(
    session: AsyncSession,
    settings: Settings,
    refund_id: str,
    status: RefundStatus,
    *,
    provider_reference: str | None = None,
    failure: str | None = None,
) -> PaymentRefund:
    """Record the provider's answer about one refund; a confirmed refund updates its payment's status."""
    refund = (
        await session.execute(
            select(PaymentRefund)
            .where(PaymentRefund.id == refund_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).scalar_one()
    if provider_reference and refund.provider_reference is None:
        refund.provider_reference = provider_reference
    if refund.status == RefundStatus.succeeded or refund.status == status:
        return refund
    refund.status = status
    refund.failure_message = failure[:300] if failure else None
    if status != RefundStatus.succeeded:
        log.info("payment_refund_status", refund_id=refund.id, status=status.value)
        return refund
    refund.succeeded_at = clock.now()
    payment = await lock_payment(session, refund.payment_id)
    payment.refunded_amount += refund.amount
    target = P.refunded if payment.refunded_amount >= payment.captured_amount else P.partially_refunded
    await transition(session, payment.id, target, via=REFUND, settings=settings)
    log.info("payment_refunded", payment_id=payment.id, refund_id=refund.id, amount=refund.amount)
    return refund


# ---------------------------------------------------------------------------------------------- webhooks


def webhook_provider(name: str, settings: Settings, database: Database) -> PaymentProvider:
    if name not in WEBHOOK_PROVIDERS or name not in PROVIDERS:
        raise NotFound(f"No webhook route for {name!r}", code="unknown_provider")
    return get_provider(name, settings, database)


def _json_safe(raw: Mapping[str, Any]) -> dict[str, Any]:
    safe: dict[str, Any] = orjson.loads(orjson.dumps(dict(raw), default=str))
    return safe


async def receive_webhook(
    database: Database,
    settings: Settings,
    provider_name: str,
    headers: Mapping[str, str],
    body: bytes,
    remote_ip: str | None,
) -> WebhookReply:
    """Verify (no transaction open: some schemes call the provider), then store the event by its id and act on
    it in ONE transaction. A concurrent delivery of the same event waits on the unique index and then finds
    it stored, so whatever the number of deliveries the event takes effect at most once. An event our rules
    refuse is stored with the refusal in a transaction of its own; a delivery that arrives before that may
    act on the event again, and the later of the two records the outcome."""
    provider = webhook_provider(provider_name, settings, database)
    event = await provider.parse_webhook(headers, body, remote_ip)
    try:
        async with database.transaction() as session:
            stored = await _store_event(session, provider_name, event)
            if stored is None:
                log.info("provider_event_duplicate", provider=provider_name, event_id=event.event_id)
            else:
                await _process_event(session, settings, provider_name, stored, event)
    except EmanetError as exc:
        if exc.status >= 500:
            raise  # something failed on our side, not a refusal: the provider delivers again
        # Refused by our rules (an illegal transition, a mismatch): nothing it did stays, and redelivering
        # would not change it, so the event is stored with the refusal and acknowledged. Rolling back the
        # whole transaction here, not a savepoint around the processing, spares every accepted event the
        # SAVEPOINT and RELEASE round trips.
        detail = f"{exc.code}: {exc.detail}"[:300]
        async with database.transaction() as session:
            stored = await _store_event(session, provider_name, event, outcome="refused", detail=detail)
        if stored is None:  # a concurrent delivery stored it meanwhile, and acted on it
            log.info("provider_event_duplicate", provider=provider_name, event_id=event.event_id)
        else:
            log.warning(
                "provider_event_refused", provider=provider_name, event_id=event.event_id, code=exc.code
            )
            _log_outcome(provider_name, event, stored)
    return provider.webhook_reply(event)


def _log_outcome(provider: str, event: WebhookEvent, stored: ProviderEvent) -> None:
    log.info(
        "provider_event", provider=provider, event_id=event.event_id, type=event.type, outcome=stored.outcome
    )


async def _store_event(
    session: AsyncSession,
    provider: str,
    event: WebhookEvent,
    *,
    outcome: str = "received",
    detail: str | None = None,
) -> ProviderEvent | None:
    reference = (
        event.payment_reference
        if event.kind == "payment"
        else (event.refund_reference if event.kind == "refund" else event.payout_reference)
    )
    # One round trip: the insert hands back the stored row, or nothing when the event came before.
    return (
        await session.scalars(
            select(ProviderEvent).from_statement(
                upsert(session, ProviderEvent)
                .values(
                    provider=provider,
                    event_id=event.event_id[:200],
                    type=event.type[:100],
                    kind=event.kind,
                    status=event.status,
                    object_reference=reference,
                    outcome=outcome,
                    detail=detail,
                    payload=_json_safe(event.raw),
                    received_at=clock.now(),
                )
                .on_conflict_do_nothing(index_elements=["provider", "event_id"])
                .returning(ProviderEvent)
            )
        )
    ).one_or_none()


async def _process_event(
    session: AsyncSession, settings: Settings, provider: str, stored: ProviderEvent, event: WebhookEvent
) -> None:
    """Act on a stored event. A refusal by our rules raises an ``EmanetError`` (``receive_webhook`` records
    it); anything else propagates too (the delivery fails and the provider sends it again)."""
    from emanet.payments import payouts

    if event.kind == "payment" and event.status:
        stored.outcome = await _on_payment_event(session, settings, provider, event)
    elif event.kind == "refund" and event.status and event.refund_reference:
        stored.outcome = await _on_refund_event(session, settings, provider, event)
    elif event.kind == "payout" and event.status and event.payout_reference:
        stored.outcome = await payouts.on_payout_event(session, provider, event)
    else:
        stored.outcome = "ignored"
        stored.detail = "event type not acted on"
    _log_outcome(provider, event, stored)


async def _on_payment_event(
    session: AsyncSession, settings: Settings, provider: str, event: WebhookEvent
) -> str:
    reference = event.payment_reference
    if not reference:
        return "ignored"
    matching = (await session.scalars(select(PaymentAttempt).where(attempt_reference_is(reference)))).all()
    attempt = next((candidate for candidate in matching if candidate.provider == provider), None)
    if attempt is None:
        return "unmatched"
    before = (await lock_payment(session, attempt.payment_id)).status
    payment = await transition(
        session,
        attempt.payment_id,
        _ours(event.status or ""),
        via=PROVIDER,
        settings=settings,
        outcome=Outcome.from_event(event),
        attempt=attempt.key,
    )
    return "applied" if payment.status != before else "unchanged"


async def _on_refund_event(
    session: AsyncSession, settings: Settings, provider: str, event: WebhookEvent
) -> str:
    refund = (
        await session.execute(
            select(PaymentRefund).where(
                PaymentRefund.provider == provider, PaymentRefund.provider_reference == event.refund_reference
            )
        )
    ).scalar_one_or_none()
    if refund is None:
        return "unmatched"
    status = {
        "succeeded": RefundStatus.succeeded,
        "pending": RefundStatus.processing,
        "failed": RefundStatus.failed,
    }.get(event.status or "")
    if status is None:
        return "ignored"
    before = refund.status
    refund = await record_refund_result(session, settings, refund.id, status, failure=event.failure_message)
    return "applied" if refund.status != before else "unchanged"


# ---------------------------------------------------------------------------------------------- saved cards


async def list_saved_cards(session: AsyncSession, user: User) -> Sequence[SavedCard]:
    return (
        (
            await session.execute(
                select(SavedCard)
                .where(SavedCard.user_id == user.id)
                .order_by(SavedCard.created_at.desc(), SavedCard.id)
            )
        )
        .scalars()
        .all()
    )


async def delete_saved_card(session: AsyncSession, user: User, card_id: str) -> SavedCard:
    card = await session.get(SavedCard, card_id)
    if card is None or card.user_id != user.id:
        raise NotFound("No such saved card")
    await session.delete(card)
    await session.flush()
    log.info("saved_card_deleted", card_id=card_id, user_id=user.id)
    return card


# ---------------------------------------------------------------------------------------------- polling


async def unsettled_payments(database: Database, settings: Settings, *, limit: int = 100) -> list[str]:
    """Unsettled payments whose last news is older than ``payment_poll_after_seconds``."""
    cutoff: datetime = clock.now() - timedelta(seconds=settings.payment_poll_after_seconds)
    async with database.transaction() as session:
        rows = await session.execute(
            select(Payment.id)
            .where(
                Payment.status.in_(list(UNSETTLED)),
                func.coalesce(Payment.last_checked_at, Payment.created_at) <= cutoff,
            )
            .order_by(func.coalesce(Payment.last_checked_at, Payment.created_at))
            .limit(limit)
        )
        return list(rows.scalars().all())
