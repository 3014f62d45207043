"""Rate limits with the ``limits`` library: Redis when configured, in-process otherwise.

Every route gets the default tier (per user, or per IP when anonymous); routes named in ``ROUTE_TIERS``
get a tighter one on top. Answers carry the IETF draft's ``RateLimit-Policy``/``RateLimit`` headers and
the classic ``RateLimit-Limit/-Remaining/-Reset``; a refusal is a 429 problem with ``Retry-After``.
"""

from __future__ import annotations

import math
import time
from typing import Annotated

import structlog
from fastapi import Depends, Request, Response
from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import FixedWindowRateLimiter
from limits.errors import StorageError

from emanet.core.auth import Principal, optional_principal
from emanet.core.errors import RateLimited
from emanet.core.middleware import client_ip
from emanet.core.settings import Settings

log = structlog.get_logger("emanet.ratelimit")

# route path template -> the settings attribute holding its tighter tier (applies to unsafe methods)
ROUTE_TIERS: dict[str, str] = {
    "/api/v1/otp/send": "rate_limit_otp",
    "/api/v1/otp/resend": "rate_limit_otp",
    "/api/v1/otp/verify": "rate_limit_login",
    "/api/v1/payments": "rate_limit_payments",
    "/api/v1/payments/{payment_id}/retry": "rate_limit_payments",
    "/api/v1/payouts": "rate_limit_payments",
}
EXEMPT_PREFIXES = ("/health", "/metrics", "/api/v1/webhooks/", "/docs", "/openapi.json", "/sandbox/")


class RateLimiter:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.storage: Storage = (
            RedisStorage(
                settings.redis_url,
                implementation="redispy",
                wrap_exceptions=True,
                key_prefix=f"{settings.redis_key_prefix}-rl",
                socket_timeout=2,
                socket_connect_timeout=2,
            )
            if settings.redis_url
            else MemoryStorage()
        )
        self.limiter = FixedWindowRateLimiter(self.storage)

    def item(self, tier: str) -> RateLimitItem:
        return parse(getattr(self.settings, tier))

    async def hit(self, tier: str, identity: str) -> tuple[bool, RateLimitItem, int, int]:
        """Count one hit; return (allowed, item, remaining, seconds until reset)."""
        item = self.item(tier)
        allowed = await self.limiter.hit(item, tier, identity)
        stats = await self.limiter.get_window_stats(item, tier, identity)
        # Windows live in the storage, which keeps wall time (Redis' clock, or time.time() in process), so
        # the reset hint is computed on the same clock and not on the business clock tests move.
        wall_now = time.time()  # clock-ok: the storage keeps wall time
        reset_in = min(max(0, math.ceil(stats.reset_time - wall_now)), item.get_expiry())
        return allowed, item, stats.remaining, reset_in


def _headers(item: RateLimitItem, remaining: int, reset_in: int, tier: str) -> dict[str, str]:
    window = item.get_expiry()
    return {
        "RateLimit-Limit": str(item.amount),
        "RateLimit-Remaining": str(max(0, remaining)),
        "RateLimit-Reset": str(reset_in),
        "RateLimit-Policy": f'"{tier}";q={item.amount};w={window}',
        "RateLimit": f'"{tier}";r={max(0, remaining)};t={reset_in}',
    }


async def enforce_rate_limit(
    request: Request, response: Response, principal: Annotated[Principal | None, Depends(optional_principal)]
) -> None:
    limiter: RateLimiter | None = getattr(request.app.state, "rate_limiter", None)
    if (
        limiter is None
        or not limiter.settings.rate_limit_enabled
        or request.url.path.startswith(EXEMPT_PREFIXES)
    ):
        return
    identity = f"user:{principal.id}" if principal else f"ip:{client_ip(request)}"
    base_tier = "rate_limit_default" if principal else "rate_limit_anonymous"
    route = request.scope.get("route")
    tiers = [base_tier]
    special = ROUTE_TIERS.get(getattr(route, "path", ""))
    if special and request.method != "GET":
        tiers.append(special)
    tightest: dict[str, str] | None = None
    for tier in tiers:
        try:
            allowed, item, remaining, reset_in = await limiter.hit(tier, identity)
        except StorageError as exc:
            # Redis down: serve rather than refuse everyone (/health/ready reports the outage).
            log.warning("rate_limit_storage_unavailable", error=str(exc.storage_error))
            return
        headers = _headers(item, remaining, reset_in, tier.removeprefix("rate_limit_"))
        if not allowed:
            raise RateLimited(
                f"Too many requests; retry in {max(reset_in, 1)} seconds",
                headers={**headers, "Retry-After": str(max(reset_in, 1))},
            )
        if tightest is None or remaining < int(tightest["RateLimit-Remaining"]):
            tightest = headers
    if tightest:
        response.headers.update(tightest)
