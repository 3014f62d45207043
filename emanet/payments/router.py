"""HTTP routes of the payments domain: payments, provider webhooks, saved cards, payouts, the payout
destination and reconciliation.

Routes that call a provider first end the request's own unit of work (``_release``: authentication read the
caller and may have touched an API key), so no transaction — and on SQLite no write lock — is held while the
provider answers; the service then works in its own short transactions on the ``Database``.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated

import structlog
from fastapi import APIRouter, Query, Request, Response, status
from sqlalchemy.ext.asyncio import AsyncSession

from emanet.core.auth import AdminPrincipal, CurrentPrincipal, StaffPrincipal, require_scope
from emanet.core.errors import ProviderError, Unprocessable
from emanet.core.middleware import client_ip
from emanet.core.money import check_currency
from emanet.core.schemas import Page, decode_cursor, encode_cursor
from emanet.core.session import Db, DbSession
from emanet.core.settings import Settings
from emanet.escrow.service import Actor
from emanet.payments import payouts, reconcile, service
from emanet.payments.destinations import mask_destination
from emanet.payments.models import Payment
from emanet.payments.schemas import (
    PaymentCreate,
    PaymentMethodOut,
    PaymentMethodsOut,
    PaymentOut,
    PaymentRetry,
    PayoutCreate,
    PayoutDestinationOut,
    PayoutDestinationUpdate,
    PayoutOut,
    ReconciliationReportOut,
    ReconciliationRun,
    RefundCreate,
    RefundOut,
    SavedCardOut,
    WebhookAck,
)

log = structlog.get_logger("emanet.payments.router")
router = APIRouter(prefix="/api/v1", tags=["payments"])
PAY = require_scope("payments:write")
READ = require_scope("payments:read")
PAYOUT = require_scope("payouts:write")


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def _release(session: AsyncSession) -> None:
    """End the request's unit of work before a provider call (see the module docstring)."""
    await session.commit()


def _before(cursor: str | None) -> str | None:
    if cursor is None:
        return None
    value = decode_cursor(cursor).get("before")
    if not isinstance(value, str):
        raise Unprocessable("Malformed cursor", code="invalid_cursor")
    return value


def _cursor(before: str | None) -> str | None:
    return encode_cursor({"before": before}) if before else None


# ---------------------------------------------------------------------------------------------- methods


@router.get("/payment-methods", response_model=PaymentMethodsOut)
async def list_payment_methods(
    request: Request,
    currency: Annotated[str, Query(min_length=3, max_length=3)],
    country: Annotated[
        str | None, Query(min_length=2, max_length=2, description="Payer's ISO country")
    ] = None,
) -> PaymentMethodsOut:
    """Methods available for a currency (and payer country) with the configured providers offering each."""
    currency = check_currency(currency.upper())
    country = country.upper() if country else None
    methods = service.available_methods(currency, country, _settings(request))
    return PaymentMethodsOut(
        currency=currency,
        country=country,
        methods=[PaymentMethodOut(method=m, providers=p) for m, p in methods],
    )


# ---------------------------------------------------------------------------------------------- payments


@router.post(
    "/payments",
    response_model=PaymentOut,
    status_code=status.HTTP_201_CREATED,
    dependencies=[PAY],
    responses={
        503: {
            "description": "The provider did not answer; the payment (payment_id) stays "
            "pending and is resumed with the same idempotency key"
        }
    },
)
async def create_payment(
    body: PaymentCreate, principal: CurrentPrincipal, session: DbSession, database: Db, request: Request
) -> PaymentOut:
    """Start paying an escrow (only its buyer may). The answer carries the status and the ``next_action``
    (redirect to a hosted page, 3-D Secure challenge, client secret)."""
    await _release(session)
    payment = await service.start_payment(
        database,
        _settings(request),
        principal.user,
        service.PaymentRequest(
            escrow_id=body.escrow_id,
            return_url=body.return_url,
            provider=body.provider,
            method=body.method,
            amount=body.amount.amount if body.amount else None,
            currency=body.amount.currency if body.amount else None,
            saved_card_id=body.saved_card_id,
            save_card=body.save_card,
            country=body.country.upper() if body.country else None,
        ),
    )
    return PaymentOut.of(payment)


@router.get("/payments", response_model=Page[PaymentOut], dependencies=[READ])
async def list_payments(
    principal: CurrentPrincipal,
    session: DbSession,
    escrow_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> Page[PaymentOut]:
    """The caller's payments, newest first (staff: everyone's)."""
    rows, before = await service.list_payments(
        session, principal, escrow_id=escrow_id, limit=limit, before=_before(cursor)
    )
    return Page[PaymentOut](data=[PaymentOut.of(p) for p in rows], next_cursor=_cursor(before))


async def _refreshed(
    session: AsyncSession,
    database: Db,
    settings: Settings,
    payment: Payment,
    *,
    return_params: dict[str, str] | None = None,
) -> Payment:
    """Ask the provider when the result is not final; a provider problem leaves the stored answer standing."""
    if return_params is None and not service.needs_refresh(payment, settings):
        return payment
    if payment.status not in service.UNSETTLED:
        return payment
    await _release(session)
    try:
        return await service.refresh_payment(database, settings, payment.id, return_params=return_params)
    except (ProviderError, service.IllegalPaymentTransition) as exc:
        log.warning("payment_refresh_failed", payment_id=payment.id, error=exc.detail)
        async with database.transaction() as fresh:
            return await fresh.get_one(Payment, payment.id)


@router.get("/payments/verify/{reference}", response_model=PaymentOut, dependencies=[READ])
async def verify_payment(
    reference: str, principal: CurrentPrincipal, session: DbSession, database: Db, request: Request
) -> PaymentOut:
    """A payment by its provider reference (or our attempt key, as the sandbox return URL carries it),
    confirmed server-side with the provider; the browser return's query parameters are passed along."""
    payment = await service.payment_by_reference(session, reference, principal)
    return PaymentOut.of(
        await _refreshed(
            session, database, _settings(request), payment, return_params=dict(request.query_params)
        )
    )


@router.get("/payments/{payment_id}", response_model=PaymentOut, dependencies=[READ])
async def get_payment(
    payment_id: str, principal: CurrentPrincipal, session: DbSession, database: Db, request: Request
) -> PaymentOut:
    """Status, asking the provider when the result is not yet known and the last check is old."""
    payment = await service.visible_payment(session, payment_id, principal)
    return PaymentOut.of(await _refreshed(session, database, _settings(request), payment))


@router.post("/payments/{payment_id}/retry", response_model=PaymentOut, dependencies=[PAY])
async def retry_payment(
    payment_id: str,
    principal: CurrentPrincipal,
    session: DbSession,
    database: Db,
    request: Request,
    body: PaymentRetry | None = None,
) -> PaymentOut:
    """A new provider attempt (new idempotency key) of a failed or cancelled payment; at most
    ``EMANET_PAYMENT_MAX_ATTEMPTS`` attempts in all."""
    await _release(session)
    payment = await service.retry_payment(
        database, _settings(request), principal.user, payment_id, return_url=body.return_url if body else None
    )
    return PaymentOut.of(payment)


@router.post(
    "/payments/{payment_id}/refunds", response_model=list[RefundOut], status_code=status.HTTP_202_ACCEPTED
)
async def refund_payment(
    payment_id: str, body: RefundCreate, principal: AdminPrincipal, session: DbSession, request: Request
) -> list[RefundOut]:
    """Admin refund, full or partial, decided through the escrow (cancel, refund, or a dispute's split) so the
    ledger and the escrow stay consistent; the provider refund follows in the background."""
    payment = await service.visible_payment(session, payment_id, principal)
    if body.amount is not None and body.amount.currency != payment.currency:
        raise Unprocessable(f"The payment is in {payment.currency}", code="currency_mismatch")
    refunds = await service.refund_payment(
        session,
        _settings(request),
        payment_id,
        actor=Actor.from_principal(principal, request),
        amount=body.amount.amount if body.amount else None,
        reason=body.reason,
    )
    return [RefundOut.of(r) for r in refunds]


@router.get("/payments/{payment_id}/refunds", response_model=list[RefundOut], dependencies=[READ])
async def list_refunds(payment_id: str, principal: CurrentPrincipal, session: DbSession) -> list[RefundOut]:
    payment = await service.visible_payment(session, payment_id, principal)
    return [RefundOut.of(r) for r in await service.refunds_of(session, payment.id)]


# ---------------------------------------------------------------------------------------------- webhooks


@router.post(
    "/webhooks/{provider}",
    response_model=WebhookAck,
    tags=["webhooks"],
    responses={
        400: {
            "description": "Signature, timestamp window or source address did not verify; nothing was changed"
        }
    },
)
async def provider_webhook(provider: str, request: Request, database: Db) -> Response:
    """Inbound provider callbacks (sandbox, stripe, razorpay, paypal, paystack, jetcheckout, moyasar, paytabs,
    iyzico, paytr): verified on the raw body, stored by event id, acted on once, answered as the provider
    expects (PayTR: plain ``OK``)."""
    reply = await service.receive_webhook(
        database, _settings(request), provider, request.headers, await request.body(), client_ip(request)
    )
    return Response(content=reply.content, status_code=reply.status_code, media_type=reply.media_type)


# ---------------------------------------------------------------------------------------------- saved cards


@router.get("/saved-cards", response_model=list[SavedCardOut], dependencies=[READ])
async def list_saved_cards(principal: CurrentPrincipal, session: DbSession) -> list[SavedCardOut]:
    """The caller's tokenized cards: brand, last four digits, expiry. Never a card number."""
    return [SavedCardOut.model_validate(c) for c in await service.list_saved_cards(session, principal.user)]


@router.delete("/saved-cards/{card_id}", response_model=SavedCardOut, dependencies=[PAY])
async def delete_saved_card(card_id: str, principal: CurrentPrincipal, session: DbSession) -> SavedCardOut:
    return SavedCardOut.model_validate(await service.delete_saved_card(session, principal.user, card_id))


# ---------------------------------------------------------------------------------------------- payouts


@router.post(
    "/payouts",
    response_model=PayoutOut,
    status_code=status.HTTP_201_CREATED,
    dependencies=[PAYOUT],
    tags=["payouts"],
)
async def create_payout(
    body: PayoutCreate, principal: CurrentPrincipal, session: DbSession, database: Db, request: Request
) -> PayoutOut:
    """Withdraw available balance to the payout destination: the amount moves to "pending payout" at once and
    back to available if the provider fails it. 409 ``insufficient_balance`` on an overdraft."""
    await _release(session)
    payout = await payouts.request_payout(
        database,
        _settings(request),
        principal.id,
        amount=body.amount.amount,
        currency=body.amount.currency,
        provider_name=body.provider,
    )
    return PayoutOut.of(payout)


@router.get("/payouts", response_model=Page[PayoutOut], dependencies=[READ], tags=["payouts"])
async def list_payouts(
    principal: CurrentPrincipal,
    session: DbSession,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> Page[PayoutOut]:
    rows, before = await payouts.list_payouts(session, principal.id, limit=limit, before=_before(cursor))
    return Page[PayoutOut](data=[PayoutOut.of(p) for p in rows], next_cursor=_cursor(before))


@router.get("/payouts/{payout_id}", response_model=PayoutOut, dependencies=[READ], tags=["payouts"])
async def get_payout(payout_id: str, principal: CurrentPrincipal, session: DbSession) -> PayoutOut:
    return PayoutOut.of(await payouts.visible_payout(session, payout_id, principal.id, principal.is_staff))


@router.get("/me/payout-destination", response_model=PayoutDestinationOut, tags=["payouts"])
async def get_payout_destination(principal: CurrentPrincipal) -> PayoutDestinationOut:
    destination = principal.user.payout_destination
    return PayoutDestinationOut(destination=mask_destination(destination) if destination else None)


@router.put(
    "/me/payout-destination", response_model=PayoutDestinationOut, dependencies=[PAYOUT], tags=["payouts"]
)
async def set_payout_destination(
    body: PayoutDestinationUpdate, principal: CurrentPrincipal, session: DbSession, request: Request
) -> PayoutDestinationOut:
    """Where payouts go (IBAN, national bank account, UPI, PayPal, Stripe account). Needs a verified phone and
    a
    ``payout_change`` code verified at /otp/verify (step-up)."""
    shown = await payouts.set_destination(
        session,
        _settings(request),
        principal.user,
        body.destination.model_dump(exclude_none=True),
        body.otp_code,
    )
    return PayoutDestinationOut(destination=shown)


# ------------------------------------------------------------------------------------------- reconciliation


@router.get("/admin/reconciliation", response_model=Page[ReconciliationReportOut], tags=["admin"])
async def list_reconciliation(
    _staff: StaffPrincipal,
    session: DbSession,
    provider: str | None = None,
    date_: Annotated[date | None, Query(alias="date")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
    cursor: str | None = None,
) -> Page[ReconciliationReportOut]:
    """Stored reports (ledger vs provider records: missing, extra, mismatched), newest first."""
    rows, before = await reconcile.reports(
        session, provider=provider, day=date_, limit=limit, before=_before(cursor)
    )
    return Page[ReconciliationReportOut](
        data=[ReconciliationReportOut.model_validate(r) for r in rows], next_cursor=_cursor(before)
    )


@router.post(
    "/admin/reconciliation",
    response_model=ReconciliationReportOut,
    status_code=status.HTTP_201_CREATED,
    tags=["admin"],
)
async def run_reconciliation(
    body: ReconciliationRun, principal: AdminPrincipal, session: DbSession, database: Db, request: Request
) -> ReconciliationReportOut:
    """Reconcile one provider's day now (the worker does yesterday for every provider on its own)."""
    await _release(session)
    report = await reconcile.reconcile(
        database, _settings(request), body.provider, body.date, requested_by=principal.id
    )
    return ReconciliationReportOut.model_validate(report)
