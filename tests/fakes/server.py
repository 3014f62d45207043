"""A small base for local fakes of providers' HTTP APIs, on a real port (pytest-httpserver, threaded).

A fake registers routes (method + path regex -> handler returning ``(status, json_body)``), records every
request as it arrives (method, path, headers, body), and can be told to misbehave for the next requests:
``fail_next("500", "timeout")`` answers 500, then hangs longer than the client's timeout, then recovers.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

Handler = Callable[..., tuple[int, Any]]

# A fake asked to answer too late takes HANG_SECONDS; the provider client in tests gives up after
# CLIENT_TIMEOUT_SECONDS: under the hang, and over what a busy machine takes to answer (0.3 s flaked in CI).
HANG_SECONDS = 1.5
CLIENT_TIMEOUT_SECONDS = 1.0


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    query: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        """Stripe-style form bodies, keys kept flat (``metadata[payment_id]``)."""
        return dict(parse_qsl(self.body.decode()))


class FakeApi:
    hang_seconds = HANG_SECONDS

    def __init__(self) -> None:
        self.server = HTTPServer(host="127.0.0.1", threaded=True)
        self.routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self.requests: list[Recorded] = []
        self._faults: list[tuple[str, re.Pattern[str] | None]] = []
        self._lock = threading.Lock()

    # ---- lifecycle
    def start(self) -> None:
        self.server.expect_request(re.compile(".*")).respond_with_handler(self._handle)
        self.server.start()

    def stop(self) -> None:
        self.server.clear()
        if self.server.is_running():
            self.server.stop()

    @property
    def url(self) -> str:
        return self.server.url_for("/").rstrip("/")

    # ---- configuration
    def route(self, method: str, pattern: str, handler: Handler) -> None:
        self.routes.append((method, re.compile(f"^{pattern}$"), handler))

    def fail_next(self, *faults: str, path: str | None = None) -> None:
        """Misbehave on the next requests (to ``path``, a regex, when given): ``"500"``, ``"503"``, ``"429"``…
        answer that status; ``"timeout"`` hangs past the client's timeout without doing anything; ``"lost"``
        does the work, then hangs (the answer is lost on the way back)."""
        pattern = re.compile(path) if path else None
        with self._lock:
            self._faults.extend((fault, pattern) for fault in faults)

    def calls(self, method: str, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and re.fullmatch(path, r.path)]

    # ---- dispatch
    def _handle(self, request: Request) -> Response:
        recorded = Recorded(
            method=request.method,
            path=request.path,
            headers=dict(request.headers),
            body=request.get_data(),
            query=dict(request.args),
        )
        with self._lock:
            self.requests.append(recorded)
            fault = self._take_fault(request.path)
        if fault == "timeout":
            time.sleep(self.hang_seconds)
            return Response("late", status=504)
        if fault is not None and fault != "lost":
            return self.json_response(
                int(fault), {"error": {"type": "api_error", "message": "fault injected"}}
            )
        response = self._route(request, recorded)
        if fault == "lost":
            time.sleep(self.hang_seconds)
        return response

    def _take_fault(self, path: str) -> str | None:
        for i, (fault, pattern) in enumerate(self._faults):
            if pattern is None or pattern.fullmatch(path):
                del self._faults[i]
                return fault
        return None

    def _route(self, request: Request, recorded: Recorded) -> Response:
        for method, pattern, handler in self.routes:
            match = pattern.match(request.path)
            if method == request.method and match:
                status, body = handler(recorded, **match.groupdict())
                return self.json_response(status, body)
        return self.json_response(404, {"error": {"type": "invalid_request_error", "message": "no route"}})

    @staticmethod
    def json_response(status: int, body: Any) -> Response:
        return Response(json.dumps(body), status=status, content_type="application/json")
