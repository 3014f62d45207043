"""Idempotency-Key (IETF draft): replay the stored response, 422 on a different request, 409 while in flight.

Keys are scoped to the caller: the verified identity behind a bearer JWT (so a refreshed token keeps its
keys), the API key, or the client IP for anonymous calls. They are kept ``EMANET_IDEMPOTENCY_TTL_HOURS``;
an expired row is replaced by the next request with its key. The response is stored before it is sent,
so a client that retries the moment it has an answer gets the replay, never a 409.

An attempt that ends in a 5xx or an exception releases its key so the client can retry, and so do answers
given before the handler ran (401 bad credentials, 429 rate limited). An attempt still "in flight" after
``STALE_AFTER`` (a crashed process) may be taken over, which is safe because every money effect below is
itself idempotent (ledger references, the escrow state machine).
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from emanet.core import clock
from emanet.core.auth import API_KEY_PREFIX, bearer_token, hash_api_key, verify_token
from emanet.core.db import Database
from emanet.core.errors import EmanetError, problem_response
from emanet.core.middleware import UNSAFE_METHODS, client_ip
from emanet.core.models import IdempotencyKey
from emanet.core.settings import Settings

HEADER = "idempotency-key"
STALE_AFTER = timedelta(minutes=5)
MAX_KEY_LENGTH = 255
_REPLAYED_HEADERS = frozenset({"content-type", "location"})
# Answers given before the operation ran: storing them would replay a refusal after the cause is gone.
_NOT_STORED = frozenset({401, 429})


async def caller_identity(request: Request, settings: Settings) -> str:
    """Whose key space an Idempotency-Key lives in. Never trusts an unverified token."""
    try:
        token = bearer_token(request)
    except EmanetError:  # not a Bearer header: the request will be refused with 401
        return "credential:" + hashlib.sha256(request.headers.get("authorization", "").encode()).hexdigest()
    if token is None:
        return f"ip:{client_ip(request)}"
    if token.startswith(API_KEY_PREFIX):
        return f"api_key:{hash_api_key(token)}"
    try:
        verified = await verify_token(token, settings)
    except EmanetError:
        # The request will be refused with 401; keep such attempts apart from everyone else's keys.
        return "credential:" + hashlib.sha256(token.encode()).hexdigest()
    request.state.verified_token = verified  # saves the authentication dependency a second check
    return verified.identity


def _fingerprint(method: str, path: str, query: str, caller: str, body: bytes) -> str:
    digest = hashlib.sha256()
    for part in (method.encode(), path.encode(), query.encode(), caller.encode(), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


class IdempotencyMiddleware:
    def __init__(self, app: ASGIApp, database_getter: Any, ttl_hours: int) -> None:
        self.app = app
        self._database_getter = database_getter
        self.ttl = timedelta(hours=ttl_hours)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in UNSAFE_METHODS:
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        key = request.headers.get(HEADER)
        if key is None:
            await self.app(scope, receive, send)
            return
        if not (1 <= len(key) <= MAX_KEY_LENGTH):
            invalid = problem_response(
                request,
                400,
                "invalid_idempotency_key",
                f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters",
            )
            await invalid(scope, receive, send)
            return
        body = await _read_body(receive)
        try:
            identity = await caller_identity(request, scope["app"].state.settings)
        except EmanetError as exc:  # the identity provider is unreachable: same answer auth would give
            await problem_response(request, exc.status, exc.code, exc.detail)(scope, receive, send)
            return
        caller = hashlib.sha256(identity.encode()).hexdigest()
        fingerprint = _fingerprint(
            scope["method"], scope["path"], scope.get("query_string", b"").decode(), caller, body
        )
        database: Database = self._database_getter()
        existing = await self._claim(database, caller, key, fingerprint)
        if existing is not None:
            await self._answer_existing(request, existing, fingerprint, scope, receive, send)
            return

        start: Message = {}
        chunks: list[bytes] = []

        async def replay_receive() -> Message:
            nonlocal body
            chunk, body = body, b""
            return {"type": "http.request", "body": chunk, "more_body": False}

        async def buffering_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        try:
            await self.app(scope, replay_receive, buffering_send)
        except BaseException:
            await self._release(database, caller, key)
            raise
        status: int = start.get("status", 500)
        response_body = b"".join(chunks)
        if status >= 500 or status in _NOT_STORED:
            await self._release(database, caller, key)
        else:
            await self._complete(database, caller, key, status, start.get("headers", []), response_body)
        await send({**start, "status": status})
        await send({"type": "http.response.body", "body": response_body})

    async def _claim(
        self, database: Database, caller: str, key: str, fingerprint: str
    ) -> IdempotencyKey | None:
        """Insert an in-flight row; return the existing row when another request holds the key."""
        now = clock.now()
        for _ in range(2):
            try:
                async with database.transaction() as session:
                    row = (
                        await session.execute(
                            select(IdempotencyKey).where(
                                IdempotencyKey.caller == caller, IdempotencyKey.key == key
                            )
                        )
                    ).scalar_one_or_none()
                    if row is not None:
                        expired = row.expires_at <= now
                        stale = row.state == "in_flight" and row.created_at <= now - STALE_AFTER
                        if not (expired or (stale and row.fingerprint == fingerprint)):
                            return row
                        await session.delete(row)
                        await session.flush()
                    session.add(
                        IdempotencyKey(
                            caller=caller,
                            key=key,
                            fingerprint=fingerprint,
                            state="in_flight",
                            created_at=now,
                            expires_at=now + self.ttl,
                        )
                    )
                return None
            except IntegrityError:
                continue  # a concurrent request inserted first: read it on the next pass
        async with database.transaction() as session:
            return (
                await session.execute(
                    select(IdempotencyKey).where(IdempotencyKey.caller == caller, IdempotencyKey.key == key)
                )
            ).scalar_one()

    async def _complete(
        self,
        database: Database,
        caller: str,
        key: str,
        status: int,
        raw_headers: list[tuple[bytes, bytes]],
        body: bytes,
    ) -> None:
        headers = {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in raw_headers
            if name.decode("latin-1").lower() in _REPLAYED_HEADERS
        }
        async with database.transaction() as session:
            await session.execute(
                update(IdempotencyKey)
                .where(IdempotencyKey.caller == caller, IdempotencyKey.key == key)
                .values(
                    state="completed",
                    response_status=status,
                    response_headers=headers,
                    response_body=body.decode("utf-8", "replace"),
                )
            )

    async def _release(self, database: Database, caller: str, key: str) -> None:
        async with database.transaction() as session:
            await session.execute(
                delete(IdempotencyKey).where(
                    IdempotencyKey.caller == caller,
                    IdempotencyKey.key == key,
                    IdempotencyKey.state == "in_flight",
                )
            )

    async def _answer_existing(
        self,
        request: Request,
        row: IdempotencyKey,
        fingerprint: str,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        if row.fingerprint != fingerprint:
            response = problem_response(
                request,
                422,
                "idempotency_key_reused",
                "This Idempotency-Key was used with a different request",
            )
        elif row.state == "in_flight":
            response = problem_response(
                request,
                409,
                "idempotency_request_in_flight",
                "A request with this Idempotency-Key is still being processed",
                headers={"Retry-After": "1"},
            )
        else:
            await _replay(row, send)
            return
        await response(scope, receive, send)


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _replay(row: IdempotencyKey, send: Send) -> None:
    body = (row.response_body or "").encode()
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in (row.response_headers or {}).items()]
    headers += [(b"content-length", str(len(body)).encode()), (b"idempotent-replayed", b"true")]
    await send({"type": "http.response.start", "status": row.response_status or 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
