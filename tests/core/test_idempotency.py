"""Idempotency-Key: replay, reuse with another body, concurrent duplicates, 5xx release, expiry, scoping."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import FastAPI

from emanet.core.auth import issue_access_token
from emanet.core.clock import FrozenClock
from emanet.core.settings import Settings
from tests.conftest import bearer
from tests.core import probe
from tests.core.conftest import client_from
from tests.core.test_errors import assert_problem
from tests.factories import Factory


def keyed(key: str, headers: dict[str, str] | None = None) -> dict[str, str]:
    return {**(headers or {}), "Idempotency-Key": key}


async def test_a_replay_returns_the_stored_response(client: httpx.AsyncClient, factory: Factory) -> None:
    user = await factory.user()
    body = {"name": "shop", "scopes": ["escrows:read"]}
    first = await client.post("/api/v1/api-keys", json=body, headers=keyed("create-key-1", bearer(user)))
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers
    replay = await client.post("/api/v1/api-keys", json=body, headers=keyed("create-key-1", bearer(user)))
    assert replay.status_code == 201
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json() == first.json()  # the same key secret: the key was created once
    assert replay.headers["content-type"] == "application/json"
    assert replay.headers["x-request-id"] != first.headers["x-request-id"]
    keys = (await client.get("/api/v1/api-keys", headers=bearer(user))).json()
    assert [k["id"] for k in keys] == [first.json()["id"]]


async def test_a_stored_4xx_is_replayed_too(client: httpx.AsyncClient, factory: Factory) -> None:
    user = await factory.user()
    body = {"name": "shop", "scopes": ["no-such-scope"]}
    first = await client.post("/api/v1/api-keys", json=body, headers=keyed("bad-scope", bearer(user)))
    replay = await client.post("/api/v1/api-keys", json=body, headers=keyed("bad-scope", bearer(user)))
    assert first.status_code == replay.status_code == 422
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json()["code"] == "invalid_scope"


async def test_the_same_key_with_another_request_is_422(client: httpx.AsyncClient, factory: Factory) -> None:
    user = await factory.user()
    headers = keyed("reused", bearer(user))
    assert (await client.post("/_test/work", json={"value": "a"}, headers=headers)).status_code == 201
    assert_problem(
        await client.post("/_test/work", json={"value": "b"}, headers=headers), 422, "idempotency_key_reused"
    )
    assert_problem(
        await client.post("/_test/orders", json={"value": "a"}, headers=headers),
        422,
        "idempotency_key_reused",
    )  # another path is another request
    assert probe.executions == {"a": 1}


async def test_concurrent_duplicates_run_once(client: httpx.AsyncClient) -> None:
    request = {"value": "slow", "delay": 0.4}
    first, second = await asyncio.gather(
        client.post("/_test/work", json=request, headers=keyed("concurrent")),
        client.post("/_test/work", json=request, headers=keyed("concurrent")),
    )
    statuses = sorted([first.status_code, second.status_code])
    assert statuses == [201, 409], (first.text, second.text)
    conflict = first if first.status_code == 409 else second
    assert_problem(conflict, 409, "idempotency_request_in_flight")
    assert conflict.headers["retry-after"] == "1"
    assert probe.executions["slow"] == 1
    later = await client.post("/_test/work", json=request, headers=keyed("concurrent"))
    assert later.status_code == 201 and later.headers["idempotent-replayed"] == "true"


@pytest.mark.postgres_only
async def test_concurrent_duplicates_of_an_authenticated_caller(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    user = await factory.user()
    request = {"value": "slow-user", "delay": 0.4}
    headers = keyed("concurrent", bearer(user))
    responses = await asyncio.gather(
        *[client.post("/_test/work", json=request, headers=headers) for _ in range(3)]
    )
    assert sorted(r.status_code for r in responses) == [201, 409, 409]
    assert probe.executions["slow-user"] == 1


@pytest.mark.parametrize("failure", ["raise", "503"])
async def test_a_5xx_releases_the_key(client: httpx.AsyncClient, factory: Factory, failure: str) -> None:
    user = await factory.user()
    request = {"value": f"flaky-{failure}", "fail": failure}
    first = await client.post("/_test/work", json=request, headers=keyed("retry-me", bearer(user)))
    assert first.status_code in (500, 503)
    retry = await client.post("/_test/work", json=request, headers=keyed("retry-me", bearer(user)))
    assert retry.status_code == 201, retry.text
    assert "idempotent-replayed" not in retry.headers
    assert retry.json()["execution"] == 2


async def test_keys_are_kept_for_the_configured_hours(
    client: httpx.AsyncClient, factory: Factory, clock: FrozenClock, settings: Settings
) -> None:
    user = await factory.user()
    request = {"value": "daily"}
    first = await client.post("/_test/work", json=request, headers=keyed("k", bearer(user)))
    assert first.status_code == 201
    clock.advance(hours=settings.idempotency_ttl_hours, seconds=-1)
    replay = await client.post("/_test/work", json=request, headers=keyed("k", bearer(user)))
    assert replay.headers["idempotent-replayed"] == "true"
    clock.advance(seconds=2)
    headers = keyed("k", bearer(user))  # a token valid at the new time
    again = await client.post("/_test/work", json=request, headers=headers)
    assert again.status_code == 201 and "idempotent-replayed" not in again.headers
    assert again.json()["execution"] == 2
    # The expired row was replaced by a fresh one, which replays in turn.
    assert (await client.post("/_test/work", json=request, headers=headers)).json()["execution"] == 2


async def test_keys_are_scoped_per_caller(
    app: FastAPI, client: httpx.AsyncClient, factory: Factory, settings: Settings, clock: FrozenClock
) -> None:
    alice, bob = await factory.user(), await factory.user()
    request = {"value": "shared-key"}
    first_token = bearer(alice)
    for headers in (first_token, bearer(bob)):
        response = await client.post("/_test/work", json=request, headers=keyed("same", headers))
        assert response.status_code == 201 and "idempotent-replayed" not in response.headers
    assert probe.executions["shared-key"] == 2
    # Alice with a freshly issued token is still Alice: her retry is a replay.
    clock.advance(minutes=1)
    fresh_token = {"Authorization": f"Bearer {issue_access_token(alice, settings)}"}
    assert fresh_token != first_token
    replay = await client.post("/_test/work", json=request, headers=keyed("same", fresh_token))
    assert replay.headers["idempotent-replayed"] == "true"
    # Anonymous callers are scoped by address.
    for ip in ("198.51.100.1", "198.51.100.2"):
        async with client_from(app, ip) as anonymous:
            response = await anonymous.post("/_test/work", json={"value": "anon"}, headers=keyed("a"))
            assert response.status_code == 201 and "idempotent-replayed" not in response.headers
    assert probe.executions["anon"] == 2


async def test_a_401_is_not_stored(client: httpx.AsyncClient) -> None:
    headers = keyed("k", {"Authorization": "Bearer not-a-token"})
    for _ in range(2):
        response = await client.post(
            "/api/v1/api-keys", json={"name": "x", "scopes": ["escrows:read"]}, headers=headers
        )
        assert_problem(response, 401, "unauthorized")
        assert "idempotent-replayed" not in response.headers


@pytest.mark.parametrize("key", ["", "k" * 256])
async def test_an_invalid_key_is_400(client: httpx.AsyncClient, key: str) -> None:
    response = await client.post("/_test/work", json={"value": "x"}, headers=keyed(key))
    assert_problem(response, 400, "invalid_idempotency_key")
    assert probe.executions["x"] == 0


async def test_safe_methods_ignore_the_header(client: httpx.AsyncClient, factory: Factory) -> None:
    user = await factory.user()
    for _ in range(2):
        response = await client.get("/api/v1/me", headers=keyed("get", bearer(user)))
        assert response.status_code == 200 and "idempotent-replayed" not in response.headers
