"""Outbound webhooks: endpoints, fan-out of events into deliveries, and the delivery attempt itself.

Guarantees:
- at-least-once: a delivery is retried on the ``webhook_retry_schedule_seconds`` schedule (hours), every
  attempt carries the same ``webhook-id`` (the event's public id) so receivers deduplicate;
- per-object order: a delivery for an object waits (``blocked``) while an earlier event about the same
  object is not yet delivered to that endpoint, and is released when it succeeds or is given up.
  Creating a delivery and settling its predecessor both lock the endpoint row, so neither misses the other;
- an endpoint failing ``webhook_disable_after_failures`` times in a row is disabled and its owner notified
  (event ``webhook_endpoint.disabled``).
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx
import orjson
import structlog
from cryptography.fernet import Fernet
from sqlalchemy import bindparam, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession
from standardwebhooks import Webhook

from emanet.core import clock
from emanet.core.db import Database
from emanet.core.errors import Conflict, NotFound, Unprocessable
from emanet.core.models import Event
from emanet.core.outbox import emit_event, enqueue
from emanet.core.schemas import newest_first_page
from emanet.core.settings import Settings
from emanet.notifications.audience import parties_of
from emanet.users.models import Role, User
from emanet.webhooks.models import (
    DeliveryStatus,
    EndpointStatus,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)

log = structlog.get_logger("emanet.webhooks")

DELIVER_JOB = "webhooks.deliver"
USER_AGENT = "Emanet-Webhooks/1.0 (+https://emanet.dev/docs/webhooks)"
UNFINISHED = (DeliveryStatus.blocked, DeliveryStatus.pending)
RESPONSE_EXCERPT_CHARS = 500


# --- secrets -------------------------------------------------------------------------------------------


def _cipher(settings: Settings) -> Fernet:
    key = hashlib.sha256(f"emanet:webhook-secrets:{settings.secret_key}".encode()).digest()
    return Fernet(base64.urlsafe_b64encode(key))


def new_signing_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def _seal(settings: Settings, secret: str) -> str:
    return _cipher(settings).encrypt(secret.encode()).decode()


def _unseal(settings: Settings, sealed: str) -> str:
    return _cipher(settings).decrypt(sealed.encode()).decode()


def signing_secrets(endpoint: WebhookEndpoint, settings: Settings) -> list[str]:
    """The current secret, plus the previous one while its overlap after a rotation lasts."""
    keys = [_unseal(settings, endpoint.secret_encrypted)]
    if (
        endpoint.previous_secret_encrypted
        and endpoint.previous_secret_expires_at
        and endpoint.previous_secret_expires_at > clock.now()
    ):
        keys.append(_unseal(settings, endpoint.previous_secret_encrypted))
    return keys


def sign(secrets_: Sequence[str], message_id: str, timestamp: datetime, body: str) -> str:
    """The ``webhook-signature`` header: one ``v1,<base64>`` per secret, space-separated."""
    return " ".join(Webhook(secret).sign(message_id, timestamp, body) for secret in secrets_)


# --- endpoints -----------------------------------------------------------------------------------------


def _check_url(url: str, settings: Settings) -> str:
    if settings.is_production and urlsplit(url).scheme != "https":
        raise Unprocessable("Webhook endpoints must use https", code="insecure_webhook_url")
    return url


async def create_endpoint(
    session: AsyncSession,
    owner: User,
    settings: Settings,
    *,
    url: str,
    event_types: list[str],
    description: str,
) -> tuple[WebhookEndpoint, str]:
    secret = new_signing_secret()
    endpoint = WebhookEndpoint(
        owner_id=owner.id,
        url=_check_url(url, settings),
        event_types=event_types,
        description=description,
        secret_encrypted=_seal(settings, secret),
    )
    session.add(endpoint)
    await session.flush()
    log.info("webhook_endpoint_created", endpoint_id=endpoint.id, owner_id=owner.id, event_types=event_types)
    return endpoint, secret


async def get_endpoint(
    session: AsyncSession, owner: User, endpoint_id: str, *, for_update: bool = False
) -> WebhookEndpoint:
    query = select(WebhookEndpoint).where(
        WebhookEndpoint.id == endpoint_id, WebhookEndpoint.deleted_at.is_(None)
    )
    if for_update:
        query = query.with_for_update()
    endpoint = (await session.execute(query)).scalar_one_or_none()
    if endpoint is None or endpoint.owner_id != owner.id:
        raise NotFound("No such webhook endpoint")
    return endpoint


async def list_endpoints(
    session: AsyncSession, owner: User, *, limit: int, cursor: str | None
) -> tuple[list[WebhookEndpoint], str | None]:
    query = select(WebhookEndpoint).where(
        WebhookEndpoint.owner_id == owner.id, WebhookEndpoint.deleted_at.is_(None)
    )
    rows, next_cursor = await newest_first_page(session, query, WebhookEndpoint, limit=limit, cursor=cursor)
    return rows, next_cursor


async def update_endpoint(
    session: AsyncSession,
    owner: User,
    endpoint_id: str,
    settings: Settings,
    *,
    url: str | None,
    event_types: list[str] | None,
    description: str | None,
    enabled: bool | None,
) -> WebhookEndpoint:
    endpoint = await get_endpoint(session, owner, endpoint_id, for_update=True)
    if url is not None:
        endpoint.url = _check_url(url, settings)
    if event_types is not None:
        endpoint.event_types = event_types
    if description is not None:
        endpoint.description = description
    if enabled is True and endpoint.status == EndpointStatus.disabled:
        endpoint.status = EndpointStatus.enabled
        endpoint.consecutive_failures = 0
        endpoint.disabled_at = endpoint.disabled_reason = None
        await _resume_waiting(session, endpoint)
    elif enabled is False and endpoint.status == EndpointStatus.enabled:
        _disable(endpoint, "disabled by its owner")
    await session.flush()
    return endpoint


async def delete_endpoint(session: AsyncSession, owner: User, endpoint_id: str) -> WebhookEndpoint:
    endpoint = await get_endpoint(session, owner, endpoint_id, for_update=True)
    endpoint.deleted_at = clock.now()
    _disable(endpoint, "deleted")
    await session.flush()
    log.info("webhook_endpoint_deleted", endpoint_id=endpoint.id)
    return endpoint


async def rotate_secret(
    session: AsyncSession, owner: User, endpoint_id: str, settings: Settings
) -> tuple[WebhookEndpoint, str]:
    """A new secret; the old one keeps signing for ``webhook_secret_overlap_hours`` while receivers switch."""
    endpoint = await get_endpoint(session, owner, endpoint_id, for_update=True)
    secret = new_signing_secret()
    endpoint.previous_secret_encrypted = endpoint.secret_encrypted
    endpoint.previous_secret_expires_at = clock.now() + timedelta(hours=settings.webhook_secret_overlap_hours)
    endpoint.secret_encrypted = _seal(settings, secret)
    await session.flush()
    log.info(
        "webhook_secret_rotated",
        endpoint_id=endpoint.id,
        previous_valid_until=endpoint.previous_secret_expires_at.isoformat(),
    )
    return endpoint, secret


def _disable(endpoint: WebhookEndpoint, reason: str) -> None:
    endpoint.status = EndpointStatus.disabled
    endpoint.disabled_reason = reason
    endpoint.disabled_at = clock.now()


async def _resume_waiting(session: AsyncSession, endpoint: WebhookEndpoint) -> None:
    """After re-enabling: attempt every pending delivery again now (each object's head of line)."""
    pending = (
        await session.execute(
            select(WebhookDelivery).where(
                WebhookDelivery.endpoint_id == endpoint.id, WebhookDelivery.status == DeliveryStatus.pending
            )
        )
    ).scalars()
    for delivery in pending:
        delivery.next_attempt_at = clock.now()
        await _schedule(session, delivery)


# --- deliveries ----------------------------------------------------------------------------------------


async def list_deliveries(
    session: AsyncSession,
    owner: User,
    endpoint_id: str,
    *,
    limit: int,
    cursor: str | None,
    status: str | None,
) -> tuple[list[WebhookDelivery], dict[str, list[WebhookAttempt]], str | None]:
    await get_endpoint(session, owner, endpoint_id)
    query = select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id)
    if status:
        query = query.where(WebhookDelivery.status == status)
    rows, next_cursor = await newest_first_page(session, query, WebhookDelivery, limit=limit, cursor=cursor)
    attempts: dict[str, list[WebhookAttempt]] = {row.id: [] for row in rows}
    if rows:
        for attempt in (
            await session.execute(
                select(WebhookAttempt)
                .where(WebhookAttempt.delivery_id.in_(list(attempts)))
                .order_by(WebhookAttempt.number)
            )
        ).scalars():
            attempts[attempt.delivery_id].append(attempt)
    return rows, attempts, next_cursor


async def get_delivery(
    session: AsyncSession, owner: User, endpoint_id: str, delivery_id: str
) -> tuple[WebhookDelivery, list[WebhookAttempt]]:
    await get_endpoint(session, owner, endpoint_id)
    delivery = await session.get(WebhookDelivery, delivery_id)
    if delivery is None or delivery.endpoint_id != endpoint_id:
        raise NotFound("No such delivery")
    attempts = (
        (
            await session.execute(
                select(WebhookAttempt)
                .where(WebhookAttempt.delivery_id == delivery_id)
                .order_by(WebhookAttempt.number)
            )
        )
        .scalars()
        .all()
    )
    return delivery, list(attempts)


async def redeliver(
    session: AsyncSession, owner: User, endpoint_id: str, delivery_id: str
) -> tuple[WebhookDelivery, list[WebhookAttempt]]:
    """Send a delivery again now, whatever its state (an explicit resend may overtake per-object order)."""
    endpoint = await get_endpoint(session, owner, endpoint_id)
    if endpoint.status != EndpointStatus.enabled:
        raise Conflict("The endpoint is disabled; enable it first", code="webhook_endpoint_disabled")
    delivery, attempts = await get_delivery(session, owner, endpoint_id, delivery_id)
    await enqueue(session, DELIVER_JOB, {"delivery_id": delivery.id, "manual": True}, max_attempts=3)
    log.info("webhook_redelivery_requested", delivery_id=delivery.id, endpoint_id=endpoint_id)
    return delivery, attempts


async def _schedule(session: AsyncSession, delivery: WebhookDelivery) -> None:
    # The job names the attempt it will make; a job left over from an earlier schedule sees a different
    # attempt count and does nothing (e.g. a retry already queued when the endpoint was re-enabled).
    await enqueue(
        session,
        DELIVER_JOB,
        {"delivery_id": delivery.id, "attempt": delivery.attempts + 1},
        run_at=delivery.next_attempt_at or clock.now(),
        max_attempts=5,
    )


def subscribed(patterns: Sequence[str], event_type: str) -> bool:
    return any(
        p == "*" or p == event_type or (p.endswith(".*") and event_type.startswith(p[:-1])) for p in patterns
    )


_ENABLED_ENDPOINTS = (
    select(WebhookEndpoint.id, WebhookEndpoint.owner_id, WebhookEndpoint.event_types, User.role)
    .join(User, User.id == WebhookEndpoint.owner_id)
    .where(WebhookEndpoint.status == EndpointStatus.enabled, WebhookEndpoint.deleted_at.is_(None))
)
# Built once: built on every fan-out, this statement cost 0.8-1.0 ms of CPU a batch, against 0.26-0.31 ms
# (the single select over every enabled endpoint it replaces: 0.45-0.58 ms).
_RECEIVING_ENDPOINTS = union_all(
    _ENABLED_ENDPOINTS.where(WebhookEndpoint.owner_id.in_(bindparam("owners", expanding=True))),
    _ENABLED_ENDPOINTS.where(User.role == Role.admin),
)


async def fan_out(session: AsyncSession, events: Sequence[Event]) -> list[WebhookDelivery]:
    """Create the deliveries of ``events``, in their order (idempotent: an existing (endpoint, event)
    delivery is kept). The endpoints that may receive them — their parties' and admins' — are read once for
    all of them, each set through an index: every enabled endpoint, read per batch, grows with the users
    who register one."""
    parties_by_event = {event.id: parties_of(event.data) for event in events}
    rows = await session.execute(
        _RECEIVING_ENDPOINTS, {"owners": sorted(set().union(*parties_by_event.values()))}
    )
    candidates = list({row.id: row for row in rows}.values())  # an admin may also be a party
    if not candidates:
        return []
    targets_of: dict[int, list[str]] = {}
    for event in events:
        parties = parties_by_event[event.id]
        targets_of[event.id] = sorted(
            row.id
            for row in candidates
            if subscribed(row.event_types, event.type) and (row.role == Role.admin or row.owner_id in parties)
        )
    targets = sorted({target for ids in targets_of.values() for target in ids})
    if not targets:
        return []
    # Lock in id order (no deadlocks between concurrent fan-outs); see the module docstring.
    endpoints = {
        endpoint.id: endpoint
        for endpoint in (
            await session.execute(
                select(WebhookEndpoint)
                .where(WebhookEndpoint.id.in_(targets))
                .order_by(WebhookEndpoint.id)
                .with_for_update()
            )
        ).scalars()
    }
    created: list[WebhookDelivery] = []
    for event in events:
        for endpoint_id in targets_of[event.id]:
            endpoint = endpoints.get(endpoint_id)
            if endpoint is None or endpoint.status != EndpointStatus.enabled:
                continue
            delivery = await _add_delivery(session, endpoint, event)
            if delivery is not None:
                created.append(delivery)
    return created


async def _add_delivery(
    session: AsyncSession, endpoint: WebhookEndpoint, event: Event
) -> WebhookDelivery | None:
    """The delivery of ``event`` to ``endpoint`` (whose row the caller has locked); None if it exists."""
    exists = (
        await session.execute(
            select(WebhookDelivery.id).where(
                WebhookDelivery.endpoint_id == endpoint.id, WebhookDelivery.event_id == event.id
            )
        )
    ).first()
    if exists:
        return None
    waiting_on = (
        await session.execute(
            select(WebhookDelivery.id)
            .where(
                WebhookDelivery.endpoint_id == endpoint.id,
                WebhookDelivery.object_id == event.object_id,
                WebhookDelivery.event_id < event.id,
                WebhookDelivery.status.in_(UNFINISHED),
            )
            .limit(1)
        )
    ).first()
    delivery = WebhookDelivery(
        endpoint_id=endpoint.id,
        event_id=event.id,
        event_public_id=event.public_id,
        event_type=event.type,
        object_id=event.object_id,
        status=DeliveryStatus.blocked if waiting_on else DeliveryStatus.pending,
        next_attempt_at=None if waiting_on else clock.now(),
    )
    session.add(delivery)
    await session.flush()
    if not waiting_on:
        await _schedule(session, delivery)
    return delivery


async def _release_next(session: AsyncSession, delivery: WebhookDelivery) -> None:
    """The head of an object's line is settled: let the next event about that object go."""
    following = (
        await session.execute(
            select(WebhookDelivery)
            .where(
                WebhookDelivery.endpoint_id == delivery.endpoint_id,
                WebhookDelivery.object_id == delivery.object_id,
                WebhookDelivery.event_id > delivery.event_id,
                WebhookDelivery.status.in_(UNFINISHED),
            )
            .order_by(WebhookDelivery.event_id)
            .limit(1)
        )
    ).scalar_one_or_none()
    if following is not None and following.status == DeliveryStatus.blocked:
        following.status = DeliveryStatus.pending
        following.next_attempt_at = clock.now()
        await _schedule(session, following)


def event_body(event: Event) -> str:
    """The payload: the event envelope with the full object under ``data``."""
    return orjson.dumps(
        {
            "id": event.public_id,
            "type": event.type,
            "timestamp": event.created_at.isoformat(),
            "data": event.data,
        }
    ).decode()


@dataclass
class _Outcome:
    status_code: int | None
    duration_ms: int
    error: str | None
    excerpt: str | None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def _private_targets_allowed(settings: Settings) -> bool:
    if settings.webhook_allow_private_targets is not None:
        return settings.webhook_allow_private_targets
    return not settings.is_production


async def _refuse_private_target(url: str) -> str | None:
    """Server-side request forgery guard: refuse hosts that resolve to internal addresses."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        infos = await anyio.getaddrinfo(host, parts.port or (443 if parts.scheme == "https" else 80))
    except OSError as exc:
        return f"cannot resolve {host}: {exc}"
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if not address.is_global:
            return f"{host} resolves to a non-public address"
    return None


async def _post(url: str, body: str, headers: dict[str, str], settings: Settings) -> _Outcome:
    started = time.perf_counter()
    if not _private_targets_allowed(settings):
        refused = await _refuse_private_target(url)
        if refused:
            return _Outcome(None, 0, refused, None)
    try:
        async with httpx.AsyncClient(
            timeout=settings.webhook_timeout_seconds, follow_redirects=False
        ) as http:
            response = await http.post(url, content=body.encode(), headers=headers)
    except httpx.HTTPError as exc:
        elapsed = round((time.perf_counter() - started) * 1000)
        return _Outcome(None, elapsed, f"{type(exc).__name__}: {exc}"[:1000], None)
    elapsed = round((time.perf_counter() - started) * 1000)
    error = None if response.is_success else f"HTTP {response.status_code}"
    return _Outcome(response.status_code, elapsed, error, response.text[:RESPONSE_EXCERPT_CHARS] or None)


async def attempt_delivery(
    database: Database, settings: Settings, delivery_id: str, *, expected_attempt: int | None, manual: bool
) -> None:
    """One attempt: read what to send, POST it without holding a transaction, then record the outcome."""
    async with database.transaction() as session:
        delivery = await session.get(WebhookDelivery, delivery_id)
        if delivery is None:
            return
        endpoint = await session.get(WebhookEndpoint, delivery.endpoint_id)
        event = await session.get(Event, delivery.event_id)
        if endpoint is None or event is None or endpoint.deleted_at is not None:
            return
        if not manual and (
            delivery.status != DeliveryStatus.pending
            or endpoint.status != EndpointStatus.enabled
            or delivery.attempts + 1 != expected_attempt
        ):
            return  # settled, waiting for the endpoint to be re-enabled, or a superseded schedule
        url, keys, body = endpoint.url, signing_secrets(endpoint, settings), event_body(event)
    sent_at = clock.now()
    headers = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": event.public_id,
        "webhook-timestamp": str(int(sent_at.timestamp())),
        "webhook-signature": sign(keys, event.public_id, sent_at, body),
    }
    outcome = await _post(url, body, headers, settings)
    await _record(database, settings, delivery_id, outcome, manual=manual)


async def _record(
    database: Database, settings: Settings, delivery_id: str, outcome: _Outcome, *, manual: bool
) -> None:
    async with database.transaction() as session:
        delivery = await session.get(WebhookDelivery, delivery_id)
        if delivery is None:
            return
        endpoint = (
            await session.execute(
                select(WebhookEndpoint).where(WebhookEndpoint.id == delivery.endpoint_id).with_for_update()
            )
        ).scalar_one()
        await session.refresh(delivery, with_for_update=True)
        delivery.attempts += 1
        session.add(
            WebhookAttempt(
                delivery_id=delivery.id,
                number=delivery.attempts,
                trigger="manual" if manual else "auto",
                status_code=outcome.status_code,
                duration_ms=outcome.duration_ms,
                error=outcome.error,
                response_excerpt=outcome.excerpt,
            )
        )
        delivery.last_status_code = outcome.status_code
        delivery.last_error = outcome.error
        log_fields = {
            "delivery_id": delivery.id,
            "endpoint_id": endpoint.id,
            "event_id": delivery.event_public_id,
            "attempt": delivery.attempts,
            "status_code": outcome.status_code,
            "duration_ms": outcome.duration_ms,
        }
        if outcome.ok:
            endpoint.consecutive_failures = 0
            was_open = delivery.status in UNFINISHED or delivery.status == DeliveryStatus.failed
            if was_open:
                delivery.status = DeliveryStatus.succeeded
                delivery.delivered_at = clock.now()
                delivery.next_attempt_at = None
                await _release_next(session, delivery)
            log.info("webhook_delivered", **log_fields)
            return
        log.warning("webhook_attempt_failed", error=outcome.error, **log_fields)
        if manual:
            return  # an operator's resend does not change the schedule or count against the endpoint
        endpoint.consecutive_failures += 1
        schedule = settings.webhook_retry_schedule_seconds
        if delivery.attempts <= len(schedule):
            base = schedule[delivery.attempts - 1]
            # ±10% jitter so many deliveries that failed together do not retry together
            delay = base * (0.9 + 0.2 * secrets.randbelow(1001) / 1000)
            delivery.next_attempt_at = clock.now() + timedelta(seconds=delay)
            await _schedule(session, delivery)
        else:
            delivery.status = DeliveryStatus.failed
            delivery.next_attempt_at = None
            log.error("webhook_delivery_given_up", **log_fields)
            await _release_next(session, delivery)
        if (
            endpoint.status == EndpointStatus.enabled
            and endpoint.consecutive_failures >= settings.webhook_disable_after_failures
        ):
            _disable(endpoint, f"{endpoint.consecutive_failures} consecutive failed deliveries")
            await emit_event(session, "webhook_endpoint.disabled", endpoint.id, endpoint_object(endpoint))
            log.error(
                "webhook_endpoint_disabled", endpoint_id=endpoint.id, failures=endpoint.consecutive_failures
            )


def endpoint_object(endpoint: WebhookEndpoint) -> dict[str, Any]:
    """The endpoint as an event's data (its owner is a party, so the owner is notified)."""
    return {
        "id": endpoint.id,
        "object": "webhook_endpoint",
        "owner_id": endpoint.owner_id,
        "url": endpoint.url,
        "status": endpoint.status,
        "disabled_reason": endpoint.disabled_reason,
        "consecutive_failures": endpoint.consecutive_failures,
    }
