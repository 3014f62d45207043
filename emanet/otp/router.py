"""HTTP routes of OTP (/api/v1/otp/…) and the admin-managed phone blocklist (/api/v1/admin/otp/blocklist)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, status
from fastapi.responses import JSONResponse

from emanet.core.auth import AdminPrincipal, Principal, StaffPrincipal, optional_principal
from emanet.core.errors import PROBLEM_JSON, Problem, problem_response
from emanet.core.middleware import client_ip
from emanet.core.session import DbSession
from emanet.core.settings import Settings
from emanet.otp import service
from emanet.otp.models import OtpPurpose
from emanet.otp.schemas import (
    BlockCreate,
    BlockOut,
    OtpSendRequest,
    OtpStatusOut,
    OtpVerifyOut,
    OtpVerifyRequest,
)

router = APIRouter(tags=["otp"])
MaybePrincipal = Annotated[Principal | None, Depends(optional_principal)]
SMS_FAILED: dict[int | str, dict[str, Any]] = {
    502: {"model": Problem, "content": {PROBLEM_JSON: {}}, "description": "No SMS provider took the code"}
}


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _failure(request: Request, failure: service.OtpFailure) -> JSONResponse:
    # Returned, not raised: the request's transaction commits the counted attempt or the failed SMS.
    return problem_response(
        request, failure.status, failure.code, failure.detail, attempts_left=failure.attempts_left
    )


async def _send(
    request: Request, body: OtpSendRequest, principal: Principal | None, session: DbSession, *, resend: bool
) -> OtpStatusOut | JSONResponse:
    settings = _settings(request)
    user = principal.user if principal else None
    _, failure = await service.send_code(
        session,
        settings,
        purpose=body.purpose,
        phone=body.phone,
        user=user,
        locale=body.locale,
        captcha_token=body.captcha_token,
        remote_ip=client_ip(request),
        resend=resend,
    )
    if failure is not None:
        return _failure(request, failure)
    current = await service.status_of(session, settings, purpose=body.purpose, phone=body.phone, user=user)
    return OtpStatusOut(**current.__dict__)


@router.post(
    "/api/v1/otp/send",
    response_model=OtpStatusOut,
    status_code=status.HTTP_202_ACCEPTED,
    responses=SMS_FAILED,
)
async def send_code(
    body: OtpSendRequest, request: Request, principal: MaybePrincipal, session: DbSession
) -> OtpStatusOut | JSONResponse:
    return await _send(request, body, principal, session, resend=False)


@router.post(
    "/api/v1/otp/resend",
    response_model=OtpStatusOut,
    status_code=status.HTTP_202_ACCEPTED,
    responses=SMS_FAILED,
)
async def resend_code(
    body: OtpSendRequest, request: Request, principal: MaybePrincipal, session: DbSession
) -> OtpStatusOut | JSONResponse:
    return await _send(request, body, principal, session, resend=True)


@router.post("/api/v1/otp/verify", response_model=OtpVerifyOut)
async def verify_code(
    body: OtpVerifyRequest, request: Request, principal: MaybePrincipal, session: DbSession
) -> OtpVerifyOut | JSONResponse:
    outcome = await service.verify_code(
        session,
        _settings(request),
        purpose=body.purpose,
        phone=body.phone,
        code=body.code,
        user=principal.user if principal else None,
        captcha_token=body.captcha_token,
        remote_ip=client_ip(request),
    )
    if isinstance(outcome, service.OtpFailure):
        return _failure(request, outcome)
    step_up = body.purpose in service.STEP_UP
    return OtpVerifyOut(
        verified=True,
        purpose=body.purpose,
        valid_until=outcome.challenge.expires_at if step_up else None,
        user_id=outcome.user.id if outcome.user else None,
        access_token=outcome.access_token,
        token_type="Bearer" if outcome.access_token else None,
    )


@router.get("/api/v1/otp/status", response_model=OtpStatusOut)
async def code_status(
    purpose: OtpPurpose,
    request: Request,
    principal: MaybePrincipal,
    session: DbSession,
    phone: str | None = None,
) -> OtpStatusOut:
    current = await service.status_of(
        session, _settings(request), purpose=purpose, phone=phone, user=principal.user if principal else None
    )
    return OtpStatusOut(**current.__dict__)


@router.get("/api/v1/admin/otp/blocklist", response_model=list[BlockOut], tags=["admin"])
async def list_blocks(_: StaffPrincipal, session: DbSession) -> list[BlockOut]:
    return [BlockOut.model_validate(block) for block in await service.list_blocks(session)]


@router.post(
    "/api/v1/admin/otp/blocklist",
    response_model=BlockOut,
    status_code=status.HTTP_201_CREATED,
    tags=["admin"],
)
async def add_block(body: BlockCreate, principal: AdminPrincipal, session: DbSession) -> BlockOut:
    block = await service.add_block(
        session, principal.user, pattern=body.pattern, kind=body.kind, reason=body.reason
    )
    return BlockOut.model_validate(block)


@router.delete("/api/v1/admin/otp/blocklist/{block_id}", response_model=BlockOut, tags=["admin"])
async def remove_block(block_id: str, principal: AdminPrincipal, session: DbSession) -> BlockOut:
    return BlockOut.model_validate(await service.remove_block(session, principal.user, block_id))
