"""The shared provider HTTP client: timeouts, retries of idempotent calls only, backoff, a clear error."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import structlog

from emanet.core.settings import Settings
from emanet.providers.base import ProviderUnavailable
from emanet.providers.http import provider_client, request, with_retries
from tests.fakes.server import CLIENT_TIMEOUT_SECONDS, HANG_SECONDS, FakeApi, Recorded


@pytest.fixture
def api() -> Iterator[FakeApi]:
    server = FakeApi()
    server.hang_seconds = HANG_SECONDS
    server.route("POST", "/charges", lambda r: (201, {"id": "ch_1"}))
    server.route("GET", "/charges/(?P<charge>[^/]+)", lambda r, charge: (200, {"id": charge}))
    server.route("POST", "/bad", lambda r: (422, {"error": "nope"}))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {
        "provider_timeout_seconds": CLIENT_TIMEOUT_SECONDS,
        "provider_max_attempts": 4,
        "provider_retry_initial_seconds": 0.01,
        "provider_retry_max_seconds": 0.02,
    }


async def call(
    api: FakeApi, settings: Settings, method: str, path: str, *, idempotent: bool
) -> httpx.Response:
    async with provider_client(settings, api.url, headers={"X-Test": "1"}) as client:
        return await request(
            client,
            "acme",
            settings,
            method,
            path,
            idempotent=idempotent,
            headers={"Idempotency-Key": "key-1"},
        )


async def test_idempotent_calls_retry_transient_failures(api: FakeApi, settings: Settings) -> None:
    api.fail_next("500", "429", "timeout")
    with structlog.testing.capture_logs() as logs:
        response = await call(api, settings, "POST", "/charges", idempotent=True)
    assert response.status_code == 201 and response.json() == {"id": "ch_1"}
    calls = api.calls("POST", "/charges")
    assert len(calls) == 4
    assert all(c.headers["Idempotency-Key"] == "key-1" and c.headers["X-Test"] == "1" for c in calls)
    assert calls[0].headers["User-Agent"] == "Emanet"
    retries = [entry for entry in logs if entry["event"] == "provider_retry"]
    assert [entry["attempt"] for entry in retries] == [1, 2, 3]
    assert [entry["error"] for entry in retries] == ["HTTP 500", "HTTP 429", "timeout"]
    assert all(0 < entry["sleep_seconds"] <= 0.03 for entry in retries)


async def test_giving_up_is_a_clear_provider_error(api: FakeApi, settings: Settings) -> None:
    api.fail_next("503", "503", "503", "503", "503")
    with pytest.raises(ProviderUnavailable) as unavailable:
        await call(api, settings, "GET", "/charges/ch_9", idempotent=True)
    assert unavailable.value.status == 503 and unavailable.value.code == "provider_unavailable"
    assert (
        unavailable.value.detail == "acme did not answer the GET /charges/ch_9 (HTTP 503) after 4 attempt(s)"
    )
    assert len(api.calls("GET", "/charges/ch_9")) == 4


async def test_non_idempotent_calls_are_sent_once(api: FakeApi, settings: Settings) -> None:
    api.fail_next("timeout")
    with pytest.raises(ProviderUnavailable) as unknown:
        await call(api, settings, "POST", "/charges", idempotent=False)
    assert "timeout" in unknown.value.detail and "the outcome is unknown" in unknown.value.detail
    assert len(api.calls("POST", "/charges")) == 1


async def test_client_errors_are_returned_not_retried(api: FakeApi, settings: Settings) -> None:
    response = await call(api, settings, "POST", "/bad", idempotent=True)
    assert response.status_code == 422
    assert len(api.calls("POST", "/bad")) == 1


async def test_connection_refused_is_transient(settings: Settings) -> None:
    async with provider_client(settings, "http://127.0.0.1:9") as client:
        with pytest.raises(ProviderUnavailable) as refused:
            await request(client, "acme", settings, "GET", "/x", idempotent=True)
    assert "ConnectError" in refused.value.detail


async def test_with_retries_wraps_sdk_calls(settings: Settings) -> None:
    attempts: list[int] = []

    class SdkTimeout(Exception):
        pass

    async def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise SdkTimeout
        return "ok"

    assert (
        await with_retries(
            "sdk", settings, flaky, idempotent=True, is_transient=lambda e: isinstance(e, SdkTimeout)
        )
        == "ok"
    )
    assert len(attempts) == 3

    async def refused() -> str:
        raise ValueError("card declined")

    with pytest.raises(ValueError):  # not transient: passes straight through, once
        await with_retries("sdk", settings, refused, idempotent=True)


def test_recorded_requests_decode_forms() -> None:
    recorded = Recorded(method="POST", path="/", headers={}, body=b"a=1&metadata%5Bx%5D=2")
    assert recorded.form() == {"a": "1", "metadata[x]": "2"}
