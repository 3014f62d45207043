from __future__ import annotations

import httpx

from tests.conftest import bearer
from tests.factories import Factory


async def test_health_and_me(client: httpx.AsyncClient, factory: Factory) -> None:
    live = await client.get("/health/live")
    assert live.status_code == 200
    assert live.headers["x-request-id"]
    ready = await client.get("/health/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["database"]["status"] == "ok"
    user = await factory.user()
    me = await client.get("/api/v1/me", headers=bearer(user))
    assert me.status_code == 200, me.text
    assert me.json()["id"] == user.id
    anonymous = await client.get("/api/v1/me")
    assert anonymous.status_code == 401
    assert anonymous.headers["content-type"] == "application/problem+json"
    assert anonymous.json()["trace_id"] == anonymous.headers["x-request-id"]
