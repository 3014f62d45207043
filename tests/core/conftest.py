"""Fixtures of the foundation tests: the app with the ``/_test`` probe routes, and log capture."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import orjson
import pytest
from asgi_lifespan import LifespanManager
from fastapi import Depends, FastAPI

from emanet.app import create_app
from emanet.core.db import Database
from emanet.core.ratelimit import enforce_rate_limit
from emanet.core.settings import Settings
from tests.core import probe


@pytest.fixture
async def app(settings: Settings, database: Database) -> AsyncIterator[FastAPI]:
    application = create_app(settings, database=database)
    application.include_router(probe.router, dependencies=[Depends(enforce_rate_limit)])
    probe.executions.clear()
    async with LifespanManager(application):
        yield application


def client_from(app: FastAPI, ip: str) -> httpx.AsyncClient:
    """Another HTTP client on the same app, calling from ``ip``."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=(ip, 50001)), base_url="http://testserver"
    )


class LogCapture:
    def __init__(self) -> None:
        self.stream = io.StringIO()

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    @property
    def records(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.text.splitlines() if line.strip()]

    def events(self, name: str) -> list[dict[str, Any]]:
        return [record for record in self.records if record.get("event") == name]


@pytest.fixture
def logs(app: FastAPI) -> Iterator[LogCapture]:
    """Everything the app logs, exactly as its JSON handler renders it to stdout."""
    capture = LogCapture()
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    previous = handler.setStream(capture.stream)
    try:
        yield capture
    finally:
        handler.setStream(previous)
