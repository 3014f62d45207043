"""Payments tests run the app in a real uvicorn server on a free local port: the sandbox's hosted checkout
calls our webhook back over real HTTP (to ``public_url``), exactly as in production.

The server runs in a thread with its own event loop and its own ``Database`` on the test database; the
frozen test clock is process-wide, so the server and the test share it.
"""

from __future__ import annotations

import asyncio
import io
import logging
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
import uvicorn

from emanet.app import create_app
from emanet.core.db import Database
from emanet.core.settings import Settings

# Nothing listens on port 1: the sandbox's webhook to it fails and is left to its delivery job.
UNREACHABLE = "http://127.0.0.1:1"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def port() -> int:
    return _free_port()


@pytest.fixture
def callback_base() -> str | None:
    """Where the sandbox posts its webhooks; ``None`` means our live server. Override to lose them."""
    return None


@pytest.fixture
def settings_overrides(port: int, callback_base: str | None) -> dict[str, Any]:
    return {
        "public_url": f"http://127.0.0.1:{port}",
        "sandbox_callback_base": callback_base,
        "provider_max_attempts": 1,
        "provider_timeout_seconds": 5,
        "sandbox_payout_settle_seconds": 0,
        "payment_status_refresh_seconds": 0,
        "database_pool_size": 10,
    }


@dataclass
class Live:
    url: str
    http: httpx.AsyncClient


@pytest.fixture
async def live(settings: Settings, database: Database, port: int) -> AsyncIterator[Live]:
    """The app served by uvicorn at ``settings.public_url``, and an HTTP client for it."""
    app = create_app(settings)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_config=None,
            access_log=False,
            lifespan="on",
            loop="asyncio",
            timeout_graceful_shutdown=5,
        )
    )
    thread = threading.Thread(target=server.run, name="live-emanet", daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        await asyncio.sleep(0.05)
    assert server.started, "the live server did not start"
    try:
        async with httpx.AsyncClient(base_url=settings.public_url, timeout=30) as http:
            yield Live(settings.public_url, http)
    finally:
        server.should_exit = True
        await asyncio.to_thread(thread.join, 15)


class LogCapture:
    def __init__(self) -> None:
        self.stream = io.StringIO()

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def events(self, name: str) -> list[dict[str, Any]]:
        return [
            record
            for line in self.text.splitlines()
            if line.strip()
            for record in [orjson.loads(line)]
            if record.get("event") == name
        ]


@pytest.fixture
def logs(live: Live) -> Iterator[LogCapture]:
    """Everything the server (and the test's own calls into emanet) log, as rendered to stdout."""
    capture = LogCapture()
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    previous = handler.setStream(capture.stream)
    try:
        yield capture
    finally:
        handler.setStream(previous)
