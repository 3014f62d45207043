"""Calling providers over HTTP: one client factory, one retry policy.

Transient failures — timeouts, connection errors, 429 and 5xx answers — are retried with exponential
backoff and full jitter (``tenacity``), but ONLY for idempotent calls: reads, and creates that carry the
provider's idempotency key (Stripe ``Idempotency-Key``, PayPal ``PayPal-Request-Id``, a unique merchant
reference the provider refuses to reuse). A create without such a key is sent once; when its outcome is
unknown ``ProviderUnavailable`` says so and the caller polls or reconciles — it never sends it again blindly.

Attempts and delays come from settings (``provider_max_attempts``, ``provider_retry_initial_seconds``,
``provider_retry_max_seconds``, ``provider_timeout_seconds``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import httpx
import structlog
import tenacity

from emanet.core.settings import Settings
from emanet.providers.base import ProviderUnavailable

log = structlog.get_logger("emanet.providers.http")
T = TypeVar("T")


class TransientResponse(Exception):
    """A 429/5xx answer, raised inside the retry loop so tenacity treats it like a timeout."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


def is_transient_status(status_code: int) -> bool:
    return status_code == 429 or status_code >= 500


def is_transient_error(exc: BaseException) -> bool:
    """Network-level failures (including timeouts) and 429/5xx answers."""
    return isinstance(exc, httpx.TransportError | TransientResponse)


def provider_client(
    settings: Settings,
    base_url: str,
    *,
    headers: Mapping[str, str] | None = None,
    auth: httpx.Auth | tuple[str, str] | None = None,
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` for one provider; use it as ``async with`` so connections are closed."""
    seconds = settings.provider_timeout_seconds
    timeout = httpx.Timeout(seconds, connect=min(5.0, seconds))
    return httpx.AsyncClient(
        base_url=base_url.rstrip("/"),
        timeout=timeout,
        auth=auth,
        headers={"User-Agent": "Emanet", **(headers or {})},
    )


async def with_retries(
    provider: str,
    settings: Settings,
    operation: Callable[[], Awaitable[T]],
    *,
    idempotent: bool,
    is_transient: Callable[[BaseException], bool] = is_transient_error,
    what: str = "request",
) -> T:
    """Run ``operation``; retry it on transient failures when ``idempotent``; map the final transient
    failure to ``ProviderUnavailable``. Non-transient exceptions pass through untouched."""
    attempts = settings.provider_max_attempts if idempotent else 1

    def _log_retry(state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        log.warning(
            "provider_retry",
            provider=provider,
            what=what,
            attempt=state.attempt_number,
            error=_describe(error),
            sleep_seconds=round(state.upcoming_sleep, 3),
        )

    retrying = tenacity.AsyncRetrying(
        stop=tenacity.stop_after_attempt(attempts),
        wait=tenacity.wait_exponential_jitter(
            initial=settings.provider_retry_initial_seconds, max=settings.provider_retry_max_seconds
        ),
        retry=tenacity.retry_if_exception(is_transient),
        before_sleep=_log_retry,
        reraise=True,
    )

    async def attempt() -> T:
        # A coroutine function, so tenacity awaits it (``operation`` may be a lambda returning an awaitable).
        return await operation()

    try:
        return await retrying(attempt)
    except Exception as exc:
        if not is_transient(exc):
            raise
        outcome = "" if idempotent else "; the outcome is unknown, check its status before trying again"
        log.error(
            "provider_unavailable", provider=provider, what=what, attempts=attempts, error=_describe(exc)
        )
        raise ProviderUnavailable(
            f"{provider} did not answer the {what} ({_describe(exc)}) after {attempts} attempt(s){outcome}",
            provider=provider,
        ) from exc


async def request(
    client: httpx.AsyncClient,
    provider: str,
    settings: Settings,
    method: str,
    url: str,
    *,
    idempotent: bool,
    **kwargs: Any,
) -> httpx.Response:
    """One provider HTTP call with the retry policy. Returns every non-transient response (2xx and 4xx)
    for the adapter to interpret."""

    async def send() -> httpx.Response:
        response = await client.request(method, url, **kwargs)
        if is_transient_status(response.status_code):
            raise TransientResponse(response)
        return response

    return await with_retries(provider, settings, send, idempotent=idempotent, what=f"{method} {url}")


def _describe(exc: BaseException | None) -> str:
    if isinstance(exc, TransientResponse):
        return f"HTTP {exc.response.status_code}"
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    return type(exc).__name__ if exc else "unknown"
