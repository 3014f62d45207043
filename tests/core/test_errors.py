"""Every error is an RFC 9457 problem with a stable code and the request's trace id."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from pydantic import ValidationError

from emanet.core.settings import DEFAULT_SANDBOX_WEBHOOK_SECRET, DEFAULT_SECRET_KEY, Settings
from tests.core.conftest import LogCapture

PROBLEM_FIELDS = {"type", "title", "status", "detail", "instance", "code", "trace_id"}
TWO_MB = 2 * 1024 * 1024


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body.keys() >= PROBLEM_FIELDS
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"].endswith("/" + code)
    assert body["instance"] == response.request.url.path
    assert body["trace_id"] == response.headers["x-request-id"]
    return body


async def test_unknown_route_is_a_404_problem(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/api/v1/nothing-here"), 404, "not_found")


async def test_wrong_method_is_a_405_problem(client: httpx.AsyncClient) -> None:
    response = await client.delete("/api/v1/me")
    assert_problem(response, 405, "method_not_allowed")
    assert "GET" in response.headers["allow"]


async def test_malformed_json_is_a_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/_test/orders", content=b'{"price": {"amount": 1,', headers={"content-type": "application/json"}
    )
    assert_problem(response, 400, "malformed_json")


async def test_wrong_content_type_is_a_415(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/_test/orders", content=b"price=100", headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert_problem(response, 415, "unsupported_media_type")
    no_type = await client.post("/_test/orders", content=b'{"price": {"amount": 100, "currency": "TRY"}}')
    assert_problem(no_type, 415, "unsupported_media_type")


def _two_megabytes_of_json() -> bytes:
    return orjson.dumps({"price": {"amount": 100, "currency": "TRY"}, "note": "x" * TWO_MB})


async def test_a_2mb_body_with_content_length_is_a_413(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/_test/orders", content=_two_megabytes_of_json(), headers={"content-type": "application/json"}
    )
    assert "content-length" in response.request.headers
    body = assert_problem(response, 413, "payload_too_large")
    assert "1048576" in body["detail"]


@pytest.mark.parametrize("idempotency_key", [None, "chunked-2mb"])
async def test_a_2mb_chunked_body_without_content_length_is_a_413(
    client: httpx.AsyncClient, idempotency_key: str | None
) -> None:
    payload = _two_megabytes_of_json()

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(payload), 64 * 1024):
            yield payload[start : start + 64 * 1024]

    headers = {"content-type": "application/json"}
    if idempotency_key:  # the idempotency middleware reads the body before FastAPI does
        headers["idempotency-key"] = idempotency_key
    response = await client.post("/_test/orders", content=chunks(), headers=headers)
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert_problem(response, 413, "payload_too_large")


async def test_unknown_fields_are_refused(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/_test/orders", json={"price": {"amount": 100, "currency": "TRY"}, "discount": 5}
    )
    body = assert_problem(response, 422, "validation_error")
    assert {"loc": ["body", "discount"], "msg": "Extra inputs are not permitted"} in body["errors"]


@pytest.mark.parametrize("amount", [-100, 0, 12.5, 100.0, "100", True])
async def test_amounts_must_be_positive_integers(client: httpx.AsyncClient, amount: Any) -> None:
    response = await client.post("/_test/orders", json={"price": {"amount": amount, "currency": "TRY"}})
    body = assert_problem(response, 422, "validation_error")
    assert [e["loc"] for e in body["errors"]] == [["body", "price", "amount"]]
    assert all(e["msg"] for e in body["errors"])


async def test_a_valid_amount_is_accepted(client: httpx.AsyncClient) -> None:
    response = await client.post("/_test/orders", json={"price": {"amount": 12550, "currency": "TRY"}})
    assert response.status_code == 201, response.text
    assert response.json()["price"] == {"amount": 12550, "currency": "TRY"}


async def test_unknown_currency_is_refused(client: httpx.AsyncClient) -> None:
    response = await client.post("/_test/orders", json={"price": {"amount": 100, "currency": "XYZ"}})
    body = assert_problem(response, 422, "validation_error")
    assert body["errors"][0]["loc"] == ["body", "price", "currency"]


async def test_a_given_request_id_is_kept_and_echoed(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/nothing-here", headers={"x-request-id": "req-abcdef123456"})
    assert response.headers["x-request-id"] == "req-abcdef123456"
    assert response.json()["trace_id"] == "req-abcdef123456"
    forged = await client.get("/health/live", headers={"x-request-id": "bad id\nwith newline"})
    assert forged.headers["x-request-id"] != "bad id\nwith newline"


PRODUCTION = {
    "env": "production",
    "secret_key": "k" * 48,
    "captcha_provider": "turnstile",
    "sandbox_webhook_secret": "whsec_cHJvZHVjdGlvbi1zYW5kYm94LXNlY3JldC0wMTIzNDU2Nzg5",
}


class TestProduction:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return dict(PRODUCTION)

    async def test_a_crash_is_a_500_without_internal_detail(
        self, client: httpx.AsyncClient, logs: LogCapture
    ) -> None:
        response = await client.post(
            "/_test/work",
            json={"value": "boom", "fail": "raise"},
            headers={"x-request-id": "trace-500-abcdef"},
        )
        body = assert_problem(response, 500, "internal_error")
        assert body["trace_id"] == "trace-500-abcdef"
        assert set(body) == PROBLEM_FIELDS
        for leak in ("RuntimeError", "first attempt crashed", "Traceback", "probe.py"):
            assert leak not in response.text
        [error] = logs.events("unhandled_error")
        assert error["request_id"] == "trace-500-abcdef"
        assert "first attempt crashed" in error["exception"]  # the operator sees it, in the log
        [access] = [r for r in logs.events("request") if r["path"] == "/_test/work"]
        assert access["status"] == 500
        assert access["request_id"] == "trace-500-abcdef"


class TestDevelopment:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"env": "development"}

    async def test_a_crash_names_the_exception_for_the_developer(self, client: httpx.AsyncClient) -> None:
        response = await client.post("/_test/work", json={"value": "boom", "fail": "raise"})
        body = assert_problem(response, 500, "internal_error")
        assert body["exception"] == "RuntimeError: the first attempt crashed"


def test_production_refuses_default_secrets() -> None:
    with pytest.raises(ValidationError, match="EMANET_SECRET_KEY"):
        Settings(**{**PRODUCTION, "secret_key": DEFAULT_SECRET_KEY})
    with pytest.raises(ValidationError, match="EMANET_SANDBOX_WEBHOOK_SECRET"):
        Settings(**{**PRODUCTION, "sandbox_webhook_secret": DEFAULT_SANDBOX_WEBHOOK_SECRET})
    with pytest.raises(ValidationError, match="at least 32 characters"):
        Settings(**{**PRODUCTION, "secret_key": "short-but-not-default"})
    with pytest.raises(ValidationError, match="CAPTCHA"):
        Settings(**{**PRODUCTION, "captcha_provider": "test"})
    assert Settings(**PRODUCTION).is_production
    assert Settings(env="development").secret_key == DEFAULT_SECRET_KEY  # fine outside production


def test_oidc_needs_issuer_and_jwks_url_together() -> None:
    with pytest.raises(ValidationError, match="together"):
        Settings(oidc_issuer="https://idp.example/")
    with pytest.raises(ValidationError, match="together"):
        Settings(oidc_jwks_url="https://idp.example/.well-known/jwks.json")


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMANET_MIN_HOLD_HOURS", "12")
    monkeypatch.setenv("EMANET_CORS_ORIGINS", "https://shop.example, https://admin.example")
    monkeypatch.setenv("EMANET_RATE_LIMIT_OTP", "3/minute")
    settings = Settings()
    assert settings.min_hold_hours == 12
    assert settings.cors_origins == ["https://shop.example", "https://admin.example"]
    assert settings.rate_limit_otp == "3/minute"
    monkeypatch.setenv("EMANET_RATE_LIMIT_OTP", "often")
    with pytest.raises(ValidationError, match="not a rate limit"):
        Settings()
