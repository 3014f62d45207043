"""SMS: one interface, three providers (Twilio primary, MessageBird fallback, console for development).

``SmsGateway.send`` tries each provider of the chain in turn, retrying transient failures (network errors,
HTTP 429 and 5xx) ``sms_attempts_per_provider`` times, and moves to the next provider on any failure. The
caller records the outcome in ``sms_messages`` with ``record_sms``; message text is stored as the caller
masked it (an OTP code never reaches the database or the log).

Twilio is driven by its official SDK (``twilio.rest.Client.messages.create_async``): the SDK builds and
parses the requests, and our small ``AsyncHttpClient`` transport sends them with httpx to
``EMANET_TWILIO_API_BASE`` so tests run the real adapter against a local fake of Twilio's REST API.
MessageBird has no maintained async SDK, so it is plain httpx against its documented REST shape.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
from collections import deque
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import httpx
import structlog
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from emanet.core import clock
from emanet.core.settings import Settings
from emanet.notifications.locks import lock_name
from emanet.notifications.models import SmsMessage, SmsStatus

log = structlog.get_logger("emanet.sms")

RETRY_PAUSE_SECONDS = 0.25


class SmsSendError(Exception):
    def __init__(self, provider: str, detail: str, *, retryable: bool) -> None:
        super().__init__(f"{provider}: {detail}")
        self.provider = provider
        self.detail = detail
        self.retryable = retryable


class SmsDeliveryFailed(Exception):
    """Every provider of the chain failed."""

    def __init__(self, errors: list[str], attempts: int) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors
        self.attempts = attempts


@dataclass(frozen=True)
class SmsReceipt:
    provider: str
    message_id: str
    status: str  # the provider's status mapped to ours: queued or sent
    attempts: int = 1
    errors: list[str] = field(default_factory=list)


class SmsProvider(Protocol):
    name: str

    async def send(self, to: str, text: str) -> SmsReceipt: ...


def _retryable_status(status: int) -> bool:
    return status == 429 or status >= 500


# --- Twilio ----------------------------------------------------------------------------------------------


@functools.cache
def httpx_twilio_transport() -> type[Any]:
    """The transport class, built on first use: importing the Twilio SDK costs ~20 MB, so a process that
    never sends through Twilio never pays for it."""
    from twilio.http import AsyncHttpClient
    from twilio.http.response import Response as TwilioResponse

    class HttpxTwilioTransport(AsyncHttpClient):  # type: ignore[misc]  # the SDK is untyped
        """Sends the Twilio SDK's requests with httpx, to ``base_url`` instead of https://api.twilio.com."""

        def __init__(self, base_url: str, timeout: float) -> None:
            super().__init__(logging.getLogger("emanet.sms.twilio"), is_async=True, timeout=timeout)
            self.base = urlsplit(base_url.rstrip("/"))

        def _rebase(self, url: str) -> str:
            parts = urlsplit(url)
            return urlunsplit(
                (self.base.scheme, self.base.netloc, self.base.path + parts.path, parts.query, "")
            )

        async def request(
            self,
            method: str,
            uri: str,
            params: dict[str, Any] | None = None,
            data: dict[str, Any] | None = None,
            headers: dict[str, str] | None = None,
            auth: tuple[str, str] | None = None,
            timeout: float | None = None,  # noqa: ASYNC109 - the SDK's transport signature
            allow_redirects: bool = False,
        ) -> TwilioResponse:
            async with httpx.AsyncClient(
                timeout=timeout or self.timeout, follow_redirects=allow_redirects
            ) as http:
                response = await http.request(
                    method,
                    self._rebase(uri),
                    params=params,
                    data=data,
                    headers=headers,
                    auth=auth,
                )
            return TwilioResponse(response.status_code, response.text, response.headers)

    return HttpxTwilioTransport


class TwilioSms:
    name = "twilio"
    _STATUSES = {
        "accepted": SmsStatus.queued,
        "queued": SmsStatus.queued,
        "sending": SmsStatus.queued,
        "sent": SmsStatus.sent,
        "delivered": SmsStatus.delivered,
    }

    def __init__(self, settings: Settings) -> None:
        if not (settings.twilio_account_sid and settings.twilio_auth_token and settings.twilio_from_number):
            raise ValueError("Twilio needs EMANET_TWILIO_ACCOUNT_SID, _AUTH_TOKEN and _FROM_NUMBER")
        self.settings = settings

    async def send(self, to: str, text: str) -> SmsReceipt:
        from twilio.base.exceptions import TwilioRestException
        from twilio.rest import Client  # the SDK's import is heavy; only pay for it when Twilio is used

        settings = self.settings
        client = Client(
            settings.twilio_account_sid,
            settings.twilio_auth_token,
            http_client=httpx_twilio_transport()(settings.twilio_api_base, settings.sms_timeout_seconds),
        )
        callback = (
            f"{settings.public_url.rstrip('/')}/api/v1/webhooks/sms/twilio"
            if settings.sms_status_callbacks
            else None
        )
        try:
            message = await client.messages.create_async(
                to=to,
                from_=settings.twilio_from_number,
                body=text,
                **({"status_callback": callback} if callback else {}),
            )
        except TwilioRestException as exc:
            raise SmsSendError(
                self.name,
                f"HTTP {exc.status} code {exc.code}: {exc.msg}",
                retryable=_retryable_status(exc.status),
            ) from exc
        except httpx.HTTPError as exc:
            raise SmsSendError(self.name, f"{type(exc).__name__}: {exc}", retryable=True) from exc
        if message.status in ("failed", "undelivered"):
            raise SmsSendError(
                self.name,
                f"message {message.sid} {message.status} (error {message.error_code})",
                retryable=False,
            )
        return SmsReceipt(
            self.name, str(message.sid), self._STATUSES.get(str(message.status), SmsStatus.queued)
        )


# --- MessageBird -----------------------------------------------------------------------------------------


class MessageBirdSms:
    name = "messagebird"
    _STATUSES = {
        "scheduled": SmsStatus.queued,
        "buffered": SmsStatus.queued,
        "sent": SmsStatus.sent,
        "delivered": SmsStatus.delivered,
    }

    def __init__(self, settings: Settings) -> None:
        if not settings.messagebird_access_key:
            raise ValueError("MessageBird needs EMANET_MESSAGEBIRD_ACCESS_KEY")
        self.settings = settings

    async def send(self, to: str, text: str) -> SmsReceipt:
        settings = self.settings
        url = settings.messagebird_api_base.rstrip("/") + "/messages"
        body = {"recipients": [to.lstrip("+")], "originator": settings.messagebird_originator, "body": text}
        try:
            async with httpx.AsyncClient(timeout=settings.sms_timeout_seconds) as http:
                response = await http.post(
                    url,
                    json=body,
                    headers={
                        "Authorization": f"AccessKey {settings.messagebird_access_key}",
                        "Accept": "application/json",
                    },
                )
        except httpx.HTTPError as exc:
            raise SmsSendError(self.name, f"{type(exc).__name__}: {exc}", retryable=True) from exc
        if response.status_code >= 300:
            raise SmsSendError(
                self.name,
                f"HTTP {response.status_code}: {_messagebird_errors(response)}",
                retryable=_retryable_status(response.status_code),
            )
        payload: dict[str, Any] = response.json()
        items = (payload.get("recipients") or {}).get("items") or [{}]
        status = str(items[0].get("status") or "sent")
        if status in ("delivery_failed", "expired"):
            raise SmsSendError(self.name, f"message {payload.get('id')} {status}", retryable=False)
        return SmsReceipt(self.name, str(payload["id"]), self._STATUSES.get(status, SmsStatus.sent))


def _messagebird_errors(response: httpx.Response) -> str:
    try:
        errors = response.json().get("errors") or []
        return "; ".join(f"{e.get('code')}: {e.get('description')}" for e in errors) or response.text[:200]
    except ValueError:
        return response.text[:200]


# --- console (development) -------------------------------------------------------------------------------


class ConsoleSms:
    """Development stand-in: writes the message to the terminal (stderr, outside the log pipeline) and keeps
    the last messages in memory so tests and the demo can read them. Refused in production."""

    name = "console"
    outbox: deque[tuple[str, str]] = deque(maxlen=200)
    _counter = 0

    def __init__(self, settings: Settings) -> None:
        if settings.is_production:
            raise ValueError("the console SMS provider is for development only")
        self.echo = settings.env == "development"

    async def send(self, to: str, text: str) -> SmsReceipt:
        ConsoleSms._counter += 1
        ConsoleSms.outbox.append((to, text))
        if self.echo:
            sys.stderr.write(f"[console SMS to {to}] {text}\n")
        return SmsReceipt(self.name, f"console-{ConsoleSms._counter}", SmsStatus.sent)


PROVIDERS: dict[str, type[TwilioSms] | type[MessageBirdSms] | type[ConsoleSms]] = {
    "twilio": TwilioSms,
    "messagebird": MessageBirdSms,
    "console": ConsoleSms,
}


class SmsGateway:
    """The configured provider chain: primary, then fallback."""

    def __init__(self, providers: list[SmsProvider], attempts_per_provider: int) -> None:
        self.providers = providers
        self.attempts_per_provider = max(1, attempts_per_provider)

    async def send(self, to: str, text: str) -> SmsReceipt:
        errors: list[str] = []
        attempts = 0
        for provider in self.providers:
            for attempt in range(1, self.attempts_per_provider + 1):
                attempts += 1
                try:
                    receipt = await provider.send(to, text)
                except SmsSendError as exc:
                    errors.append(str(exc))
                    log.warning(
                        "sms_provider_failed",
                        provider=provider.name,
                        attempt=attempt,
                        retryable=exc.retryable,
                        error=exc.detail,
                    )
                    if not exc.retryable:
                        break
                    if attempt < self.attempts_per_provider:
                        await asyncio.sleep(RETRY_PAUSE_SECONDS * attempt)
                    continue
                return SmsReceipt(receipt.provider, receipt.message_id, receipt.status, attempts, errors)
        raise SmsDeliveryFailed(errors, attempts)


def build_gateway(settings: Settings) -> SmsGateway:
    names = [settings.sms_provider]
    if settings.sms_fallback_provider and settings.sms_fallback_provider != settings.sms_provider:
        names.append(settings.sms_fallback_provider)
    return SmsGateway([PROVIDERS[name](settings) for name in names], settings.sms_attempts_per_provider)


# --- the record ------------------------------------------------------------------------------------------


async def sent_last_hour(session: AsyncSession, account_key: str) -> int:
    since = clock.now() - timedelta(hours=1)
    result = await session.execute(
        select(func.count())
        .select_from(SmsMessage)
        .where(
            SmsMessage.account_key == account_key,
            SmsMessage.created_at > since,
            SmsMessage.status != SmsStatus.rejected,
        )
    )
    return int(result.scalar_one())


async def within_hourly_cap(session: AsyncSession, settings: Settings, account_key: str) -> bool:
    """The seed's cap: ``sms_hourly_cap_per_account`` messages per hour per account (user, or phone).

    Holds a per-account lock until the caller's transaction ends, so a concurrent send for the same account
    counts the row this one records (SQLite writers are serialised already)."""
    await lock_name(session, f"sms-cap:{account_key}")
    return await sent_last_hour(session, account_key) < settings.sms_hourly_cap_per_account


def record_sms(
    session: AsyncSession,
    *,
    account_key: str,
    to: str,
    masked_text: str,
    purpose: str,
    user_id: str | None,
    receipt: SmsReceipt | None = None,
    failure: SmsDeliveryFailed | None = None,
    rejected_reason: str | None = None,
) -> SmsMessage:
    """Add the ``sms_messages`` row of one send (sent, failed or rejected) to the caller's transaction."""
    message = SmsMessage(
        account_key=account_key, user_id=user_id, to_phone=to, purpose=purpose, text_masked=masked_text
    )
    apply_outcome(message, receipt=receipt, failure=failure, rejected_reason=rejected_reason)
    session.add(message)
    return message


def apply_outcome(
    message: SmsMessage,
    *,
    receipt: SmsReceipt | None = None,
    failure: SmsDeliveryFailed | None = None,
    rejected_reason: str | None = None,
) -> None:
    if receipt is not None:
        message.status = receipt.status
        message.provider = receipt.provider
        message.provider_message_id = receipt.message_id
        message.attempts = receipt.attempts
        message.error = "; ".join(receipt.errors)[:500] or None
    elif failure is not None:
        message.status = SmsStatus.failed
        message.attempts = failure.attempts
        message.error = str(failure)[:500]
    elif rejected_reason is not None:
        message.status = SmsStatus.rejected
        message.error = rejected_reason
    message.updated_at = clock.now()
