"""Operations routes: liveness, readiness of every dependency (with latency) and Prometheus metrics."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text

from emanet.core import metrics
from emanet.core.db import Database

router = APIRouter(tags=["operations"])
PROBE_TIMEOUT_SECONDS = 3.0  # a dependency that does not answer in time counts as down


class Check(BaseModel):
    status: str
    latency_ms: float | None = None
    detail: str | None = None
    required: bool = True


class Readiness(BaseModel):
    status: str
    checks: dict[str, Check]


class Liveness(BaseModel):
    status: str


@router.get("/health/live", response_model=Liveness)
async def live() -> Liveness:
    return Liveness(status="ok")


async def _timed(name: str, probe: Any, required: bool = True) -> tuple[str, Check]:
    started = time.perf_counter()
    try:
        detail = await asyncio.wait_for(probe(), timeout=PROBE_TIMEOUT_SECONDS)
        status = "ok"
    except Exception as exc:  # the exception type only: messages may carry hosts and credentials
        detail, status = type(exc).__name__, "down"
    return name, Check(
        status=status,
        latency_ms=round((time.perf_counter() - started) * 1000, 2),
        detail=detail,
        required=required,
    )


@router.get("/health/ready", response_model=Readiness, responses={503: {"model": Readiness}})
async def ready(request: Request) -> JSONResponse:
    settings = request.app.state.settings
    database: Database = request.app.state.database

    async def db_probe() -> str:
        async with database.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return database.engine.dialect.name

    async def redis_probe() -> str:
        redis = request.app.state.redis
        if redis is None:
            return "in-process (EMANET_REDIS_URL unset)"
        await redis.ping()
        return "redis"

    def write_and_remove_probe_file() -> None:
        path = Path(settings.storage_dir)
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".ready-{uuid.uuid4().hex}"  # unique: probes may run concurrently
        probe.write_bytes(b"ok")
        probe.unlink()

    async def storage_probe() -> str:
        await asyncio.to_thread(write_and_remove_probe_file)
        return "local-disk"

    probes = [_timed("database", db_probe), _timed("cache", redis_probe), _timed("storage", storage_probe)]
    probes += [
        _timed(f"provider:{name}", provider_probe, required=False)
        for name, provider_probe in getattr(request.app.state, "provider_probes", {}).items()
    ]
    checks = dict(await asyncio.gather(*probes))
    healthy = all(c.status == "ok" for c in checks.values() if c.required)
    body = Readiness(status="ok" if healthy else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if healthy else 503)


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
async def prometheus_metrics(request: Request) -> Response:
    metrics.observe_pool(request.app.state.database.engine.pool)
    return Response(metrics.render(), media_type="text/plain; version=0.0.4")
