"""Prometheus metrics: requests by route and status, their duration, and the database pool."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

registry = CollectorRegistry()
REQUESTS = Counter(
    "emanet_http_requests_total", "HTTP requests", ["method", "route", "status"], registry=registry
)
DURATION = Histogram(
    "emanet_http_request_duration_seconds",
    "HTTP request duration",
    ["method", "route"],
    registry=registry,
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
DB_POOL = Gauge("emanet_db_pool_connections", "Database pool connections", ["state"], registry=registry)
JOBS = Counter("emanet_jobs_total", "Background jobs finished", ["kind", "outcome"], registry=registry)


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    REQUESTS.labels(method, route, str(status)).inc()
    DURATION.labels(method, route).observe(seconds)


def observe_pool(pool: Any) -> None:
    for state, reader in (("size", "size"), ("checked_out", "checkedout"), ("overflow", "overflow")):
        fn = getattr(pool, reader, None)
        if callable(fn):
            DB_POOL.labels(state).set(fn())


def render() -> bytes:
    return generate_latest(registry)
