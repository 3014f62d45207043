"""HTTP routes: the caller's in-app notifications, and the SMS provider's delivery receipts."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from emanet.core.auth import CurrentPrincipal
from emanet.core.errors import Forbidden, NotFound
from emanet.core.schemas import Page
from emanet.core.session import DbSession
from emanet.core.settings import Settings
from emanet.notifications import service
from emanet.notifications.schemas import NotificationOut, SmsStatusAck

router = APIRouter(tags=["notifications"])
TWILIO_STATUS_PATH = "/api/v1/webhooks/sms/twilio"


@router.get("/api/v1/notifications", response_model=Page[NotificationOut])
async def list_notifications(
    principal: CurrentPrincipal,
    session: DbSession,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
    unread: bool = False,
) -> Page[NotificationOut]:
    rows, next_cursor = await service.list_notifications(
        session, principal.user, limit=limit, cursor=cursor, unread_only=unread
    )
    return Page(data=[NotificationOut.model_validate(row) for row in rows], next_cursor=next_cursor)


@router.post("/api/v1/notifications/{notification_id}/read", response_model=NotificationOut)
async def mark_read(notification_id: str, principal: CurrentPrincipal, session: DbSession) -> NotificationOut:
    return NotificationOut.model_validate(await service.mark_read(session, principal.user, notification_id))


@router.post(TWILIO_STATUS_PATH, response_model=SmsStatusAck, include_in_schema=True)
async def twilio_status_callback(request: Request, session: DbSession) -> SmsStatusAck:
    """Twilio's message status callback (form-encoded, signed with ``X-Twilio-Signature``)."""
    settings: Settings = request.app.state.settings
    if not settings.twilio_auth_token:
        raise NotFound("Twilio is not configured")
    form = await request.form()
    params = {key: str(value) for key, value in form.items()}
    url = settings.public_url.rstrip("/") + TWILIO_STATUS_PATH
    signature = request.headers.get("x-twilio-signature", "")
    from twilio.request_validator import RequestValidator  # lazy: the SDK is heavy (see sms.py)

    if not RequestValidator(settings.twilio_auth_token).validate(url, params, signature):
        raise Forbidden("Invalid Twilio signature", code="invalid_signature")
    updated = await service.record_sms_status(
        session,
        provider="twilio",
        message_id=params.get("MessageSid", ""),
        status=params.get("MessageStatus", ""),
        error_code=params.get("ErrorCode"),
    )
    return SmsStatusAck(received=updated)
