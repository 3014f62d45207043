"""ASGI middleware: request id, access log, metrics, body-size and content-type guards."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import structlog
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from emanet.core import metrics
from emanet.core.context import set_request_id
from emanet.core.errors import problem_response

log = structlog.get_logger("emanet.access")
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,128}$")
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Routes that take provider callbacks, forms or uploads rather than JSON.
_NON_JSON_PREFIXES = ("/api/v1/webhooks/", "/sandbox/", "/api/v1/documents")


class RequestContextMiddleware:
    """Assigns X-Request-ID, logs one structured line per request and records Prometheus metrics."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        incoming = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _VALID_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        set_request_id(request_id)
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        scope.setdefault("state", {})["request_id"] = request_id
        status_holder = {"status": 500}
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            duration = time.perf_counter() - started
            route = scope.get("route")
            route_path = getattr(route, "path", None) or "unmatched"
            state = scope.get("state", {})
            metrics.observe_request(scope["method"], route_path, status_holder["status"], duration)
            client = scope.get("client")
            log.info(
                "request",
                method=scope["method"], path=scope["path"], route=route_path, status=status_holder["status"],
                duration_ms=round(duration * 1000, 2), user_id=state.get("user_id"),
                ip=client[0] if client else None,
                user_agent=headers.get(b"user-agent", b"").decode("latin-1")[:200],
            )


class BodyGuardMiddleware:
    """Refuses oversized bodies (413) and non-JSON bodies on JSON routes (415), as problem+json."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in UNSAFE_METHODS:
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        path: str = scope["path"]
        limit = self.max_body_bytes if not path.startswith("/api/v1/documents") else 11 * 1024 * 1024
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            await problem_response(request, 413, "payload_too_large",
                                   f"The request body exceeds {limit} bytes")(scope, receive, send)
            return
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        has_body = (declared not in (None, "0")) or "transfer-encoding" in request.headers
        if (has_body and not path.startswith(_NON_JSON_PREFIXES)
                and content_type != "application/json" and not content_type.endswith("+json")):
            await problem_response(request, 415, "unsupported_media_type",
                                   "Send JSON with 'Content-Type: application/json'")(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge()
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _BodyTooLarge:
            await problem_response(request, 413, "payload_too_large",
                                   f"The request body exceeds {limit} bytes")(scope, receive, send)


class _BodyTooLarge(Exception):
    pass


def client_ip(scope_or_request: Any) -> str:
    client = scope_or_request.client if hasattr(scope_or_request, "client") else scope_or_request.get("client")
    return client[0] if client else "unknown"
