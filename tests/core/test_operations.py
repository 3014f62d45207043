"""Health, Prometheus metrics and the OpenAPI document."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from tests.conftest import bearer
from tests.factories import Factory


async def test_liveness_and_readiness(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health/live")).json() == {"status": "ok"}
    ready = await client.get("/health/ready")
    assert ready.status_code == 200, ready.text
    checks = ready.json()["checks"]
    assert {name: check["status"] for name, check in checks.items() if check["required"]} == {
        "database": "ok",
        "cache": "ok",
        "storage": "ok",
    }
    assert all(check["latency_ms"] >= 0 for check in checks.values())


class TestRedisDown:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"redis_url": "redis://127.0.0.1:1/0"}

    async def test_readiness_is_503_when_a_required_dependency_is_down(
        self, client: httpx.AsyncClient
    ) -> None:
        response = await client.get("/health/ready")
        assert response.status_code == 503
        body = response.json()
        assert body["status"] == "unavailable"
        assert body["checks"]["cache"]["status"] == "down"
        assert body["checks"]["database"]["status"] == "ok"
        assert "127.0.0.1" not in response.text  # the error type only, never connection details
        assert (await client.get("/health/live")).status_code == 200


class TestStorageDown:
    @pytest.fixture
    def settings_overrides(self, tmp_path: Any) -> dict[str, Any]:
        blocker = tmp_path / "a-file"
        blocker.write_text("not a directory")
        return {"storage_dir": str(blocker / "documents")}

    async def test_readiness_reports_the_storage(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/health/ready")
        assert response.status_code == 503
        assert response.json()["checks"]["storage"]["status"] == "down"


PROBLEM_REF = "#/components/schemas/Problem"


def _sample(metrics: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in metrics.splitlines():
        match = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if match and ",".join(sorted(match.group(1).split(","))) == wanted:
            return float(match.group(2))
    return 0.0


async def test_metrics_by_route_template_status_and_pool(client: httpx.AsyncClient, factory: Factory) -> None:
    user = await factory.user()
    before = (await client.get("/metrics")).text
    for _ in range(2):
        await client.get("/api/v1/me", headers=bearer(user))
    await client.get("/api/v1/me")
    await client.delete("/api/v1/api-keys/key_does_not_exist", headers=bearer(user))
    response = await client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    after = response.text

    def delta(name: str, **labels: str) -> float:
        return _sample(after, name, **labels) - _sample(before, name, **labels)

    assert delta("emanet_http_requests_total", method="GET", route="/api/v1/me", status="200") == 2
    assert delta("emanet_http_requests_total", method="GET", route="/api/v1/me", status="401") == 1
    # The route template, not the raw path: ids never explode the label set.
    assert (
        delta("emanet_http_requests_total", method="DELETE", route="/api/v1/api-keys/{key_id}", status="404")
        == 1
    )
    assert "key_does_not_exist" not in after
    assert delta("emanet_http_request_duration_seconds_count", method="GET", route="/api/v1/me") == 3
    assert _sample(after, "emanet_db_pool_connections", state="size") >= 1
    assert 'emanet_db_pool_connections{state="checked_out"}' in after


async def test_openapi_document(client: httpx.AsyncClient) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    spec = response.json()
    assert spec["openapi"].startswith("3.1")
    problem = spec["components"]["schemas"]["Problem"]
    assert set(problem["required"]) >= {"type", "title", "status", "detail", "instance", "code", "trace_id"}
    assert "errors" in problem["properties"]
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    assert (await client.get("/docs")).status_code == 200
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            where = f"{method.upper()} {path}"
            responses = operation["responses"]
            successes = [code for code in responses if code[0] in "23"]
            assert successes, f"{where} documents no success response"
            for code in successes:
                for media_type, content in responses[code].get("content", {}).items():
                    if media_type == "application/json":
                        assert content.get("schema"), f"{where} {code} has no response schema"
            errors = {code: responses[code].get("content", {}) for code in responses if code[0] in "45"}
            problems = [
                code
                for code, content in errors.items()
                if content == {"application/problem+json": {"schema": {"$ref": PROBLEM_REF}}}
            ]
            assert {"401", "404", "422", "429", "500"} <= set(problems), f"{where} does not document problems"
            assert all(m.get("schema") for content in errors.values() for m in content.values()), where
            if "requestBody" in operation:
                for content in operation["requestBody"]["content"].values():
                    assert content.get("schema"), f"{where} has no request schema"


class TestCors:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"cors_origins": ["https://shop.example"]}

    async def test_origins_come_from_settings(self, client: httpx.AsyncClient) -> None:
        preflight = {
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "idempotency-key",
        }
        allowed = await client.options(
            "/api/v1/api-keys", headers={"Origin": "https://shop.example", **preflight}
        )
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://shop.example"
        refused = await client.options(
            "/api/v1/api-keys", headers={"Origin": "https://evil.example", **preflight}
        )
        assert "access-control-allow-origin" not in refused.headers
        simple = await client.get("/health/live", headers={"Origin": "https://shop.example"})
        exposed = set(simple.headers["access-control-expose-headers"].lower().replace(" ", "").split(","))
        assert {"x-request-id", "idempotent-replayed", "retry-after"} <= exposed
