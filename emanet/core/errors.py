"""RFC 9457 problem details: one exception type for the domain, handlers for everything else."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from emanet.core.context import current_request_id

PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "https://emanet.dev/problems/"


class ProblemError(BaseModel):
    loc: list[str | int]
    msg: str


class Problem(BaseModel):
    """An RFC 9457 problem. ``code`` is stable and machine-readable; ``trace_id`` links to the server log."""

    model_config = ConfigDict(extra="allow")
    type: str = Field(examples=["https://emanet.dev/problems/not_found"])
    title: str
    status: int
    detail: str
    instance: str
    code: str
    trace_id: str
    errors: list[ProblemError] | None = None


class EmanetError(Exception):
    """Raised by services; rendered as problem+json. Subclasses fix status and code."""

    status: int = 400
    code: str = "bad_request"
    title: str | None = None

    def __init__(
        self,
        detail: str,
        *,
        code: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if code:
            self.code = code
        if status:
            self.status = status
        self.headers = headers or {}
        self.extra = extra


class NotFound(EmanetError):
    status, code = 404, "not_found"


class Unauthorized(EmanetError):
    status, code = 401, "unauthorized"

    def __init__(self, detail: str = "Missing or invalid credentials", **kw: Any) -> None:
        kw.setdefault("headers", {"WWW-Authenticate": "Bearer"})
        super().__init__(detail, **kw)


class Forbidden(EmanetError):
    status, code = 403, "forbidden"


class Conflict(EmanetError):
    status, code = 409, "conflict"


class Unprocessable(EmanetError):
    status, code = 422, "unprocessable"


class RateLimited(EmanetError):
    status, code = 429, "rate_limited"


class ServiceUnavailable(EmanetError):
    status, code = 503, "service_unavailable"


class ProviderError(EmanetError):
    """A payment or messaging provider failed; nothing was charged twice."""

    status, code = 502, "provider_error"


def problem_response(
    request: Request,
    status: int,
    code: str,
    detail: str,
    *,
    title: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + code,
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
        "code": code,
        "trace_id": current_request_id(),
    }
    body.update({k: v for k, v in extra.items() if v is not None})
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    429: "rate_limited",
    503: "service_unavailable",
}


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    out = []
    for err in exc.errors():
        loc = [str(p) if not isinstance(p, int) else p for p in err.get("loc", ())]
        out.append({"loc": loc, "msg": str(err.get("msg", "invalid"))})
    return out


def internal_error_response(request: Request, exc: BaseException, *, debug: bool) -> JSONResponse:
    """The 500 problem. Outside development nothing about the failure reaches the client but the trace_id."""
    extra: dict[str, Any] = {}
    if debug:
        extra["exception"] = f"{type(exc).__name__}: {exc}"
    return problem_response(
        request, 500, "internal_error", "An internal error occurred; quote the trace_id to support", **extra
    )


def install_error_handlers(app: FastAPI) -> None:
    """Problem+json for domain errors, validation errors and the framework's own 4xx.

    Unhandled exceptions (500) are answered by ``RequestContextMiddleware``, which sits inside Starlette's
    outermost error middleware and can therefore still add the ``X-Request-ID`` header.
    """

    @app.exception_handler(EmanetError)
    async def _emanet_error(request: Request, exc: EmanetError) -> JSONResponse:
        return problem_response(
            request, exc.status, exc.code, exc.detail, title=exc.title, headers=exc.headers, **exc.extra
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _validation_errors(exc)
        if any(e.get("type") == "json_invalid" for e in exc.errors()):
            return problem_response(
                request, 400, "malformed_json", "The request body is not valid JSON", errors=errors
            )
        return problem_response(request, 422, "validation_error", "The request is not valid", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "http_error")
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        if exc.status_code == 404 and detail == "Not Found":
            detail = "No such resource"
        return problem_response(request, exc.status_code, code, detail, headers=getattr(exc, "headers", None))

    _document_problems(app)


_PROBLEM_REF = "#/components/schemas/Problem"
_ERROR_SCHEMA_REFS = {_PROBLEM_REF, "#/components/schemas/HTTPValidationError"}
PROBLEM_STATUSES = (400, 401, 403, 404, 409, 422, 429, 500)

# Declared on the app so every route documents its errors; ``_document_problems`` moves the schema under
# ``application/problem+json`` (FastAPI files a response ``model`` under the route's media type).
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem, "description": HTTPStatus(status).phrase} for status in PROBLEM_STATUSES
}


def _document_problems(app: FastAPI) -> None:
    """Make the OpenAPI document say what the service sends: errors are ``application/problem+json``."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        for path_item in schema.get("paths", {}).values():
            for operation in path_item.values():
                for status, response in operation.get("responses", {}).items():
                    if status[:1] not in ("4", "5"):
                        continue
                    # FastAPI files the model under the route's own media type (JSON, HTML, CSV…).
                    content = response.get("content", {})
                    refs = {media.get("schema", {}).get("$ref") for media in content.values()}
                    if refs & _ERROR_SCHEMA_REFS or not response.get("content"):
                        response["content"] = {PROBLEM_JSON: {"schema": {"$ref": _PROBLEM_REF}}}
                        if status == "422":
                            response["description"] = "Validation error (the problem lists ``errors``)"
        components = schema.get("components", {}).get("schemas", {})
        for unused in ("HTTPValidationError", "ValidationError"):
            components.pop(unused, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
