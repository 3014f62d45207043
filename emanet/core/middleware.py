"""ASGI middleware: request id, access log, metrics, unhandled errors, body-size and content-type guards."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import structlog
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from emanet.core import metrics
from emanet.core.context import set_request_id
from emanet.core.errors import internal_error_response, problem_response

log = structlog.get_logger("emanet.access")
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,128}$")
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Routes that take provider callbacks, forms or uploads rather than JSON.
_NON_JSON_PREFIXES = ("/api/v1/webhooks/", "/sandbox/", "/api/v1/documents")
DOCUMENT_UPLOAD_LIMIT = 11 * 1024 * 1024  # 10 MB files plus multipart overhead


class RequestContextMiddleware:
    """Assigns X-Request-ID, logs one structured line per request, records Prometheus metrics, and turns an
    unhandled exception into a 500 problem that still carries the request id."""

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
        response: dict[str, Any] = {"status": 500, "started": False}
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                response["status"], response["started"] = message["status"], True
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            log.exception(
                "unhandled_error", method=scope["method"], path=scope["path"], error_type=type(exc).__name__
            )
            if response["started"]:
                raise  # too late for a problem document; the server closes the connection
            settings = getattr(getattr(scope.get("app"), "state", None), "settings", None)
            debug = settings is not None and settings.env == "development"
            await internal_error_response(Request(scope), exc, debug=debug)(scope, receive, send_with_id)
        finally:
            duration = time.perf_counter() - started
            route_path = _route_template(scope)
            state = scope.get("state", {})
            metrics.observe_request(scope["method"], route_path, response["status"], duration)
            log.info(
                "request",
                method=scope["method"],
                path=scope["path"],
                route=route_path,
                status=response["status"],
                duration_ms=round(duration * 1000, 2),
                user_id=state.get("user_id"),
                ip=client_ip(scope),
                user_agent=headers.get(b"user-agent", b"").decode("latin-1")[:200],
            )


def _route_template(scope: Scope) -> str:
    """The matched route's path template (``/api/v1/escrows/{escrow_id}``): a bounded metrics label."""
    route = scope.get("route")
    if route is None and "endpoint" in scope:  # plain Starlette routes (/docs, /openapi.json) set no route
        routes = getattr(getattr(scope.get("app"), "router", None), "routes", [])
        route = next((r for r in routes if getattr(r, "endpoint", None) is scope["endpoint"]), None)
    return str(getattr(route, "path", None) or "unmatched")


class BodyTooLarge(StarletteHTTPException):
    """Raised from ``receive`` once a body passes the limit. It is an HTTPException so FastAPI's body parsing
    re-raises it (instead of turning it into a 400) and the problem handler renders the 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"The request body exceeds {limit} bytes")


class BodyGuardMiddleware:
    """Refuses oversized bodies (413, declared or streamed) and non-JSON bodies on JSON routes (415)."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in UNSAFE_METHODS:
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        path: str = scope["path"]
        limit = DOCUMENT_UPLOAD_LIMIT if path.startswith("/api/v1/documents") else self.max_body_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            await problem_response(request, 413, "payload_too_large", BodyTooLarge(limit).detail)(
                scope, receive, send
            )
            return
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        has_body = (declared not in (None, "0")) or "transfer-encoding" in request.headers
        if (
            has_body
            and not path.startswith(_NON_JSON_PREFIXES)
            and content_type != "application/json"
            and not content_type.endswith("+json")
        ):
            await problem_response(
                request, 415, "unsupported_media_type", "Send JSON with 'Content-Type: application/json'"
            )(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        try:
            await self.app(scope, limited_receive, send)
        except BodyTooLarge as exc:
            # Read outside FastAPI (the idempotency middleware buffers the body first).
            await problem_response(request, 413, "payload_too_large", exc.detail)(scope, receive, send)


def client_ip(scope_or_request: Any) -> str:
    """The peer address (uvicorn's ``--proxy-headers`` puts the forwarded client here behind a proxy)."""
    scope = scope_or_request.scope if isinstance(scope_or_request, Request) else scope_or_request
    client = scope.get("client")
    return str(client[0]) if client else "unknown"
