"""HTTP routes of outbound webhooks: a platform's endpoints, their deliveries, redelivery, secret rotation."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, status

from emanet.core.auth import CurrentPrincipal, require_scope
from emanet.core.schemas import Page
from emanet.core.session import DbSession
from emanet.core.settings import Settings
from emanet.webhooks import service
from emanet.webhooks.models import WebhookAttempt, WebhookDelivery
from emanet.webhooks.schemas import (
    AttemptOut,
    DeliveryOut,
    EndpointCreate,
    EndpointOut,
    EndpointUpdate,
    EndpointWithSecret,
)

router = APIRouter(prefix="/api/v1/webhook-endpoints", tags=["webhooks"])
READ = [require_scope("webhooks:read")]
WRITE = [require_scope("webhooks:write")]
Limit = Annotated[int, Query(ge=1, le=200)]


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _delivery_out(delivery: WebhookDelivery, attempts: list[WebhookAttempt]) -> DeliveryOut:
    return DeliveryOut(
        id=delivery.id,
        endpoint_id=delivery.endpoint_id,
        event_id=delivery.event_public_id,
        event_type=delivery.event_type,
        object_id=delivery.object_id,
        status=delivery.status,
        attempts=delivery.attempts,
        next_attempt_at=delivery.next_attempt_at,
        last_status_code=delivery.last_status_code,
        last_error=delivery.last_error,
        created_at=delivery.created_at,
        delivered_at=delivery.delivered_at,
        attempt_log=[AttemptOut.model_validate(a) for a in attempts],
    )


@router.post("", response_model=EndpointWithSecret, status_code=status.HTTP_201_CREATED, dependencies=WRITE)
async def create_endpoint(
    body: EndpointCreate, principal: CurrentPrincipal, session: DbSession, request: Request
) -> EndpointWithSecret:
    endpoint, secret = await service.create_endpoint(
        session,
        principal.user,
        _settings(request),
        url=str(body.url),
        event_types=body.event_types,
        description=body.description,
    )
    return EndpointWithSecret(**EndpointOut.model_validate(endpoint).model_dump(), secret=secret)


@router.get("", response_model=Page[EndpointOut], dependencies=READ)
async def list_endpoints(
    principal: CurrentPrincipal, session: DbSession, limit: Limit = 50, cursor: str | None = None
) -> Page[EndpointOut]:
    rows, next_cursor = await service.list_endpoints(session, principal.user, limit=limit, cursor=cursor)
    return Page(data=[EndpointOut.model_validate(row) for row in rows], next_cursor=next_cursor)


@router.get("/{endpoint_id}", response_model=EndpointOut, dependencies=READ)
async def get_endpoint(endpoint_id: str, principal: CurrentPrincipal, session: DbSession) -> EndpointOut:
    return EndpointOut.model_validate(await service.get_endpoint(session, principal.user, endpoint_id))


@router.patch("/{endpoint_id}", response_model=EndpointOut, dependencies=WRITE)
async def update_endpoint(
    endpoint_id: str, body: EndpointUpdate, principal: CurrentPrincipal, session: DbSession, request: Request
) -> EndpointOut:
    endpoint = await service.update_endpoint(
        session,
        principal.user,
        endpoint_id,
        _settings(request),
        url=str(body.url) if body.url else None,
        event_types=body.event_types,
        description=body.description,
        enabled=body.enabled,
    )
    return EndpointOut.model_validate(endpoint)


@router.delete("/{endpoint_id}", response_model=EndpointOut, dependencies=WRITE)
async def delete_endpoint(endpoint_id: str, principal: CurrentPrincipal, session: DbSession) -> EndpointOut:
    return EndpointOut.model_validate(await service.delete_endpoint(session, principal.user, endpoint_id))


@router.post("/{endpoint_id}/rotate-secret", response_model=EndpointWithSecret, dependencies=WRITE)
async def rotate_secret(
    endpoint_id: str, principal: CurrentPrincipal, session: DbSession, request: Request
) -> EndpointWithSecret:
    endpoint, secret = await service.rotate_secret(session, principal.user, endpoint_id, _settings(request))
    return EndpointWithSecret(**EndpointOut.model_validate(endpoint).model_dump(), secret=secret)


@router.get("/{endpoint_id}/deliveries", response_model=Page[DeliveryOut], dependencies=READ)
async def list_deliveries(
    endpoint_id: str,
    principal: CurrentPrincipal,
    session: DbSession,
    limit: Limit = 50,
    cursor: str | None = None,
    status: Literal["blocked", "pending", "succeeded", "failed"] | None = None,
) -> Page[DeliveryOut]:
    rows, attempts, next_cursor = await service.list_deliveries(
        session, principal.user, endpoint_id, limit=limit, cursor=cursor, status=status
    )
    return Page(data=[_delivery_out(row, attempts[row.id]) for row in rows], next_cursor=next_cursor)


@router.get("/{endpoint_id}/deliveries/{delivery_id}", response_model=DeliveryOut, dependencies=READ)
async def get_delivery(
    endpoint_id: str, delivery_id: str, principal: CurrentPrincipal, session: DbSession
) -> DeliveryOut:
    delivery, attempts = await service.get_delivery(session, principal.user, endpoint_id, delivery_id)
    return _delivery_out(delivery, attempts)


@router.post(
    "/{endpoint_id}/deliveries/{delivery_id}/redeliver",
    response_model=DeliveryOut,
    status_code=status.HTTP_202_ACCEPTED,
    dependencies=WRITE,
)
async def redeliver(
    endpoint_id: str, delivery_id: str, principal: CurrentPrincipal, session: DbSession
) -> DeliveryOut:
    delivery, attempts = await service.redeliver(session, principal.user, endpoint_id, delivery_id)
    return _delivery_out(delivery, attempts)
