"""Rate limits on the real Redis and in process: 429 with Retry-After and RateLimit-* headers; recovery."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from fastapi import FastAPI
from limits import parse

from emanet.core.ratelimit import ROUTE_TIERS
from emanet.core.settings import Settings
from tests.conftest import bearer
from tests.core.conftest import client_from
from tests.core.test_errors import assert_problem
from tests.factories import Factory

# One-second windows: the storages keep wall time, so recovering means waiting the window out.
LIMITS = {"rate_limit_anonymous": "3/second", "rate_limit_default": "4/second", "rate_limit_otp": "2/minute"}
WINDOW_SECONDS = 1.1


async def exhaust(
    client: httpx.AsyncClient, allowed: int, headers: dict[str, str] | None = None
) -> httpx.Response:
    """Spend the window's budget, checking the countdown, and return the first refusal."""
    for spent in range(1, allowed + 1):
        response = await client.get("/_test/ping", headers=headers)
        assert response.status_code == 200, response.text
        assert response.headers["ratelimit-limit"] == str(allowed)
        assert response.headers["ratelimit-remaining"] == str(allowed - spent)
        assert int(response.headers["ratelimit-reset"]) <= 1
    refused = await client.get("/_test/ping", headers=headers)
    body = assert_problem(refused, 429, "rate_limited")
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["ratelimit-remaining"] == "0"
    assert refused.headers["ratelimit-limit"] == str(allowed)
    assert "w=1" in refused.headers["ratelimit-policy"]
    assert "retry in" in body["detail"]
    return refused


class RateLimitCases:
    async def test_anonymous_calls_are_limited_per_ip_and_recover(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        refused = await exhaust(client, 3)
        assert '"anonymous"' in refused.headers["ratelimit-policy"]
        async with client_from(app, "198.51.100.77") as neighbour:
            assert (await neighbour.get("/_test/ping")).status_code == 200
        await asyncio.sleep(WINDOW_SECONDS)
        recovered = await client.get("/_test/ping")
        assert recovered.status_code == 200
        assert recovered.headers["ratelimit-remaining"] == "2"

    async def test_authenticated_calls_are_limited_per_user(
        self, client: httpx.AsyncClient, factory: Factory
    ) -> None:
        alice, bob = await factory.user(), await factory.user()
        refused = await exhaust(client, 4, bearer(alice))
        assert '"default"' in refused.headers["ratelimit-policy"]
        assert (await client.get("/_test/ping", headers=bearer(bob))).status_code == 200
        assert (await client.get("/_test/ping")).status_code == 200  # same IP, anonymous budget
        await asyncio.sleep(WINDOW_SECONDS)
        assert (await client.get("/_test/ping", headers=bearer(alice))).status_code == 200

    async def test_sensitive_routes_have_a_tighter_tier(
        self, client: httpx.AsyncClient, factory: Factory, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setitem(ROUTE_TIERS, "/_test/tiered", "rate_limit_otp")
        user = await factory.user()
        for remaining in ("1", "0"):
            response = await client.post("/_test/tiered", headers=bearer(user))
            assert response.status_code == 200
            assert response.headers["ratelimit-remaining"] == remaining  # the tightest budget is shown
            assert '"otp"' in response.headers["ratelimit-policy"]
        refused = await client.post("/_test/tiered", headers=bearer(user))
        assert_problem(refused, 429, "rate_limited")
        assert refused.headers["ratelimit-policy"] == '"otp";q=2;w=60'
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert (await client.get("/_test/ping", headers=bearer(user))).status_code == 200


class TestInProcess(RateLimitCases):
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return dict(LIMITS)


class TestRedis(RateLimitCases):
    @pytest.fixture
    async def redis_prefix(self, redis_url: str) -> AsyncIterator[str]:
        prefix = f"test-{uuid.uuid4().hex[:12]}"  # parallel runs share the Redis database
        yield prefix
        client = aioredis.from_url(redis_url)
        keys = [key async for key in client.scan_iter(match=f"{prefix}-rl*")]
        assert keys, "the limiter wrote nothing to Redis"
        await client.delete(*keys)
        await client.aclose()

    @pytest.fixture
    def settings_overrides(self, redis_url: str, redis_prefix: str) -> dict[str, Any]:
        return {**LIMITS, "redis_url": redis_url, "redis_key_prefix": redis_prefix}


class TestRedisDown:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {**LIMITS, "redis_url": "redis://127.0.0.1:1/0"}

    async def test_requests_are_served_without_limits(self, client: httpx.AsyncClient) -> None:
        for _ in range(5):
            response = await client.get("/_test/ping")
            assert response.status_code == 200
            assert "ratelimit-limit" not in response.headers


def _per_second(limit: str) -> float:
    item = parse(limit)
    return item.amount / item.get_expiry()


def test_otp_login_and_payment_routes_have_tighter_tiers() -> None:
    assert ROUTE_TIERS["/api/v1/otp/send"] == ROUTE_TIERS["/api/v1/otp/resend"] == "rate_limit_otp"
    assert ROUTE_TIERS["/api/v1/otp/verify"] == "rate_limit_login"
    assert ROUTE_TIERS["/api/v1/payments"] == "rate_limit_payments"
    defaults = Settings()
    assert defaults.rate_limit_default == "100/minute"
    for tier in set(ROUTE_TIERS.values()):
        assert _per_second(getattr(defaults, tier)) < _per_second(defaults.rate_limit_default), tier
