"""The FastAPI application: middleware, error handlers and every domain's router."""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis
from fastapi import APIRouter, Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from emanet import __doc__ as description
from emanet.core.db import Database
from emanet.core.errors import PROBLEM_RESPONSES, install_error_handlers
from emanet.core.health import router as health_router
from emanet.core.idempotency import IdempotencyMiddleware
from emanet.core.logging import configure_logging
from emanet.core.middleware import BodyGuardMiddleware, RequestContextMiddleware
from emanet.core.ratelimit import RateLimiter, enforce_rate_limit
from emanet.core.settings import Settings, get_settings

# Each domain exposes ``router``; listed here once so the app and the OpenAPI document see them all.
DOMAIN_ROUTERS = [
    "emanet.users.router",
    # before escrow: its /admin/escrows/{escrow_id} would otherwise take /admin/escrows/export
    "emanet.admin.router",
    "emanet.escrow.router",
    "emanet.ledger.router",
    "emanet.providers.router",
    "emanet.webhooks.router",
    "emanet.notifications.router",
    "emanet.otp.router",
    "emanet.payments.router",
]


def _routers() -> list[APIRouter]:
    return [importlib.import_module(name).router for name in DOMAIN_ROUTERS]


def create_app(settings: Settings | None = None, database: Database | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.log_level, settings.log_json)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.database = database or Database(settings)
        app.state.redis = aioredis.from_url(settings.redis_url) if settings.redis_url else None
        app.state.rate_limiter = RateLimiter(settings)
        background: Any = None
        if settings.run_worker_in_process:
            from emanet.core.worker import start_in_process_worker

            background = await start_in_process_worker(app.state.database, settings)
        try:
            yield
        finally:
            if background is not None:
                await background.stop()
            if app.state.redis is not None:
                await app.state.redis.aclose()
            if database is None:
                await app.state.database.dispose()

    app = FastAPI(
        title="Emanet API",
        version="1.0.0",
        description=description or "",
        lifespan=lifespan,
        openapi_url="/openapi.json",
        docs_url="/docs",
        responses=PROBLEM_RESPONSES,
    )
    install_error_handlers(app)
    app.include_router(health_router)
    for router in _routers():
        app.include_router(router, dependencies=[Depends(enforce_rate_limit)])

    app.add_middleware(
        IdempotencyMiddleware,
        database_getter=lambda: app.state.database,
        ttl_hours=settings.idempotency_ttl_hours,
    )
    app.add_middleware(BodyGuardMiddleware, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_credentials=True,
        allow_methods=["*"],
        allow_headers=["*"],
        expose_headers=[
            "X-Request-ID",
            "Idempotent-Replayed",
            "Retry-After",
            "RateLimit",
            "RateLimit-Policy",
            "RateLimit-Limit",
            "RateLimit-Remaining",
            "RateLimit-Reset",
        ],
    )
    app.add_middleware(RequestContextMiddleware)
    return app
