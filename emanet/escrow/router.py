"""HTTP routes of the escrow domain (user and admin views)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request, status

from emanet.core.auth import AdminPrincipal, CurrentPrincipal, StaffPrincipal, require_scope
from emanet.core.errors import Unprocessable
from emanet.core.schemas import MoneyOut, Page, decode_cursor, encode_cursor
from emanet.core.session import DbSession
from emanet.escrow import rules, service
from emanet.escrow.models import Escrow, EscrowStatus, MarketType
from emanet.escrow.schemas import (
    ActivityOut,
    Cancel,
    Deadlines,
    Delivery,
    DisputeOpen,
    EscrowCreate,
    EscrowDetail,
    EscrowOut,
    Fees,
    LedgerLine,
    Override,
    Release,
    StatusChange,
)
from emanet.ledger import service as ledger_service
from emanet.payments.schemas import PaymentSummary
from emanet.payments.service import escrow_payments

router = APIRouter(prefix="/api/v1", tags=["escrows"])
S = EscrowStatus
WRITE = require_scope("escrows:write")
READ = require_scope("escrows:read")


def _money(amount: int, escrow: Escrow) -> MoneyOut:
    return MoneyOut(amount=amount, currency=escrow.currency)


def to_out(escrow: Escrow) -> EscrowOut:
    return EscrowOut(
        id=escrow.id,
        number=escrow.number,
        status=S(escrow.status),
        buyer_id=escrow.buyer_id,
        seller_id=escrow.seller_id,
        title=escrow.title,
        description=escrow.description,
        category=escrow.category,
        market_type=MarketType(escrow.market_type),
        digital=escrow.is_digital,
        amount=_money(escrow.amount, escrow),
        fees=Fees(
            platform_fee=_money(escrow.platform_fee, escrow),
            buyer_pays=_money(escrow.buyer_fee, escrow),
            seller_pays=_money(escrow.seller_fee, escrow),
            fee_payer=escrow.fee_payer,
            total_due=_money(escrow.total_due, escrow),
            seller_receives=_money(escrow.amount - escrow.seller_fee, escrow),
        ),
        funded=_money(escrow.funded_amount, escrow),
        remaining_due=_money(service.remaining_due(escrow), escrow),
        held=_money(service.held(escrow), escrow),
        released=_money(escrow.released_amount, escrow),
        refunded=_money(escrow.refunded_amount, escrow),
        inspection_days=escrow.inspection_days,
        satisfaction_rating=escrow.satisfaction_rating,
        delivery=escrow.delivery,
        dispute=escrow.resolution if escrow.disputed_at else None,
        deadlines=Deadlines(
            expires_at=escrow.expires_at,
            hold_until=escrow.hold_until,
            auto_release_at=escrow.auto_release_at,
            dispute_deadline=escrow.dispute_deadline,
        ),
        accepted_at=escrow.accepted_at,
        allowed_transitions=rules.allowed_targets(S(escrow.status)),
        created_at=escrow.created_at,
        updated_at=escrow.updated_at,
    )


async def to_detail(session: DbSession, escrow: Escrow) -> EscrowDetail:
    lines = [
        LedgerLine(
            reference=e.reference,
            description=e.description,
            created_at=e.created_at,
            amount=MoneyOut(amount=e.amount, currency=e.currency),
        )
        for e in await ledger_service.escrow_entries(session, escrow.id)
    ]
    payments = [PaymentSummary.of(p) for p in await escrow_payments(session, escrow.id)]
    return EscrowDetail(**to_out(escrow).model_dump(), ledger=lines, payments=payments)


@router.post("/escrows", response_model=EscrowOut, status_code=status.HTTP_201_CREATED, dependencies=[WRITE])
async def create_escrow(
    body: EscrowCreate, principal: CurrentPrincipal, session: DbSession, request: Request
) -> EscrowOut:
    escrow = await service.create_escrow(
        session,
        service.NewEscrow(
            buyer_id=body.buyer_id,
            seller_id=body.seller_id,
            amount=body.amount.amount,
            currency=body.amount.currency,
            title=body.title,
            description=body.description,
            category=body.category,
            market_type=body.market_type,
            is_digital=body.digital,
            fee_payer=body.fee_payer,
            inspection_days=body.inspection_days,
            expires_at=body.expires_at,
            metadata=body.metadata,
        ),
        service.Actor.from_principal(principal, request),
        principal,
        request.app.state.settings,
    )
    return to_out(escrow)


def _filters(
    role: str,
    status_: str | None,
    market_type: MarketType | None,
    created_from: datetime | None,
    created_to: datetime | None,
    amount_min: int | None,
    amount_max: int | None,
    q: str | None,
    currency: str | None = None,
    user_id: str | None = None,
) -> service.EscrowFilters:
    statuses = [s.strip() for s in (status_ or "").split(",") if s.strip()]
    unknown = [s for s in statuses if s not in set(S)]
    if unknown:
        raise Unprocessable(f"Unknown status {', '.join(unknown)}", code="invalid_filter")
    return service.EscrowFilters(
        role=role,
        status=statuses,
        market_type=market_type,
        created_from=created_from,
        created_to=created_to,
        amount_min=amount_min,
        amount_max=amount_max,
        q=q,
        currency=currency,
        user_id=user_id,
    )


async def _page(
    session: DbSession,
    filters: service.EscrowFilters,
    viewer_id: str | None,
    limit: int,
    cursor: str | None,
    sort: str | None,
) -> Page[EscrowOut]:
    rows, next_cursor = await service.list_escrows(
        session,
        filters,
        viewer_id=viewer_id,
        limit=limit,
        cursor=decode_cursor(cursor) if cursor else None,
        sort=sort,
    )
    return Page[EscrowOut](
        data=[to_out(r) for r in rows], next_cursor=encode_cursor(next_cursor) if next_cursor else None
    )


@router.get("/escrows", response_model=Page[EscrowOut], dependencies=[READ])
async def list_escrows(
    principal: CurrentPrincipal,
    session: DbSession,
    role: Annotated[str, Query(pattern="^(buyer|seller|any)$")] = "any",
    status_: Annotated[str | None, Query(alias="status", description="comma-separated statuses")] = None,
    market_type: MarketType | None = None,
    created_from: datetime | None = None,
    created_to: datetime | None = None,
    amount_min: Annotated[int | None, Query(ge=0)] = None,
    amount_max: Annotated[int | None, Query(ge=0)] = None,
    q: Annotated[str | None, Query(max_length=200, description="transaction number or title")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
    sort: Annotated[str | None, Query(description="e.g. -created_at,amount")] = None,
) -> Page[EscrowOut]:
    filters = _filters(role, status_, market_type, created_from, created_to, amount_min, amount_max, q)
    return await _page(session, filters, principal.id, limit, cursor, sort)


@router.get("/escrows/{escrow_id}", response_model=EscrowDetail, dependencies=[READ])
async def get_escrow(escrow_id: str, principal: CurrentPrincipal, session: DbSession) -> EscrowDetail:
    return await to_detail(session, await service.get_escrow(session, escrow_id, principal))


async def _transition(
    session: DbSession,
    request: Request,
    principal: CurrentPrincipal,
    escrow_id: str,
    target: S,
    **params: object,
) -> EscrowOut:
    # 404 for strangers before any rule is checked
    await service.get_escrow(session, escrow_id, principal, lock=True)
    escrow = await service.apply_transition(
        session,
        escrow_id,
        target,
        service.Actor.from_principal(principal, request),
        params=params,
        settings=request.app.state.settings,
    )
    return to_out(escrow)


@router.put(
    "/escrows/{escrow_id}/status",
    response_model=EscrowOut,
    dependencies=[WRITE],
    responses={409: {"description": "Illegal transition; `allowed` lists the legal targets"}},
)
async def change_status(
    escrow_id: str, body: StatusChange, principal: CurrentPrincipal, session: DbSession, request: Request
) -> EscrowOut:
    return await _transition(
        session,
        request,
        principal,
        escrow_id,
        body.status,
        reason=body.reason,
        rating=body.rating,
        buyer_refund=body.buyer_refund,
    )


@router.post("/escrows/{escrow_id}/accept", response_model=EscrowOut, dependencies=[WRITE])
async def accept(
    escrow_id: str, principal: CurrentPrincipal, session: DbSession, request: Request
) -> EscrowOut:
    await service.get_escrow(session, escrow_id, principal)
    return to_out(await service.accept(session, escrow_id, service.Actor.from_principal(principal, request)))


@router.post("/escrows/{escrow_id}/deliver", response_model=EscrowOut, dependencies=[WRITE])
async def deliver(
    escrow_id: str, body: Delivery, principal: CurrentPrincipal, session: DbSession, request: Request
) -> EscrowOut:
    return await _transition(session, request, principal, escrow_id, S.delivered, **body.model_dump())


@router.post("/escrows/{escrow_id}/release", response_model=EscrowOut, dependencies=[WRITE])
async def release(
    escrow_id: str,
    principal: CurrentPrincipal,
    session: DbSession,
    request: Request,
    body: Release | None = None,
) -> EscrowOut:
    return await _transition(
        session, request, principal, escrow_id, S.released, rating=body.rating if body else None
    )


@router.post(
    "/escrows/{escrow_id}/complete",
    response_model=EscrowOut,
    dependencies=[WRITE],
    description="Alias of release, kept for the seed's clients.",
)
async def complete(
    escrow_id: str,
    principal: CurrentPrincipal,
    session: DbSession,
    request: Request,
    body: Release | None = None,
) -> EscrowOut:
    return await release(escrow_id, principal, session, request, body)


@router.post("/escrows/{escrow_id}/cancel", response_model=EscrowOut, dependencies=[WRITE])
async def cancel(
    escrow_id: str,
    principal: CurrentPrincipal,
    session: DbSession,
    request: Request,
    body: Cancel | None = None,
) -> EscrowOut:
    escrow = await service.get_escrow(session, escrow_id, principal)
    # Before funding a cancel is "cancelled"; after funding (before delivery) it is a refund.
    target = S.refunded if escrow.status == S.funded else S.cancelled
    return await _transition(
        session, request, principal, escrow_id, target, reason=body.reason if body else None
    )


@router.post(
    "/escrows/{escrow_id}/disputes",
    response_model=EscrowOut,
    status_code=status.HTTP_201_CREATED,
    dependencies=[WRITE],
)
async def open_dispute(
    escrow_id: str, body: DisputeOpen, principal: CurrentPrincipal, session: DbSession, request: Request
) -> EscrowOut:
    return await _transition(
        session,
        request,
        principal,
        escrow_id,
        S.disputed,
        reason=body.reason,
        description=body.description,
        document_ids=body.evidence_document_ids,
    )


@router.get("/escrows/{escrow_id}/activity", response_model=list[ActivityOut], dependencies=[READ])
async def escrow_activity(
    escrow_id: str, principal: CurrentPrincipal, session: DbSession
) -> list[ActivityOut]:
    escrow = await service.get_escrow(session, escrow_id, principal)
    return [ActivityOut.model_validate(a) for a in await service.activity(session, escrow)]


# ------------------------------------------------------------------------------------------------ admin


@router.get("/admin/escrows", response_model=Page[EscrowOut], tags=["admin"])
async def admin_list_escrows(
    principal: StaffPrincipal,
    session: DbSession,
    status_: Annotated[str | None, Query(alias="status")] = None,
    market_type: MarketType | None = None,
    created_from: datetime | None = None,
    created_to: datetime | None = None,
    amount_min: Annotated[int | None, Query(ge=0)] = None,
    amount_max: Annotated[int | None, Query(ge=0)] = None,
    q: Annotated[str | None, Query(max_length=200)] = None,
    user: str | None = None,
    currency: Annotated[str | None, Query(min_length=3, max_length=3)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
    sort: str | None = None,
) -> Page[EscrowOut]:
    filters = _filters(
        "any",
        status_,
        market_type,
        created_from,
        created_to,
        amount_min,
        amount_max,
        q,
        currency=currency,
        user_id=user,
    )
    return await _page(session, filters, None, limit, cursor, sort)


@router.get("/admin/escrows/{escrow_id}", response_model=EscrowDetail, tags=["admin"])
async def admin_get_escrow(escrow_id: str, principal: StaffPrincipal, session: DbSession) -> EscrowDetail:
    return await to_detail(session, await service.get_escrow(session, escrow_id, principal))


@router.post("/admin/escrows/{escrow_id}/override", response_model=EscrowOut, tags=["admin"])
async def admin_override(
    escrow_id: str, body: Override, principal: AdminPrincipal, session: DbSession, request: Request
) -> EscrowOut:
    """A forced action with a mandatory reason; recorded in the activity log."""
    actor = service.Actor.from_principal(principal, request)
    settings = request.app.state.settings
    escrow = await service.get_escrow(session, escrow_id, principal)
    if body.action == "extend_deadline":
        if body.deadline is None or body.until is None:
            raise Unprocessable("extend_deadline needs deadline and until", code="invalid_override")
        return to_out(
            await service.extend_deadline(
                session, escrow_id, actor, field_name=body.deadline, until=body.until, reason=body.reason
            )
        )
    if body.action == "release":
        target = S.released
    elif escrow.status in (S.pending_payment, S.partially_funded):
        target = S.cancelled
    else:
        target = S.refunded
    return to_out(
        await service.apply_transition(
            session,
            escrow_id,
            target,
            actor,
            force=True,
            params={"reason": body.reason, "action": f"override_{body.action}"},
            settings=settings,
        )
    )
