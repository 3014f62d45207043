"""Authentication (built-in JWT issuer, any OIDC provider by JWKS, hashed API keys) and RBAC."""

from __future__ import annotations

import functools
import hashlib
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Annotated, Any

import anyio
import jwt
from fastapi import Depends, Request
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from emanet.core import clock
from emanet.core.errors import Forbidden, ServiceUnavailable, Unauthorized
from emanet.core.session import DbSession
from emanet.core.settings import Settings, get_settings
from emanet.users.models import ApiKey, Role, User

API_KEY_PREFIX = "emk_"
ALL_SCOPES = frozenset(
    {
        "escrows:read",
        "escrows:write",
        "payments:read",
        "payments:write",
        "payouts:write",
        "webhooks:read",
        "webhooks:write",
        "documents:read",
        "documents:write",
        "admin",
    }
)
STAFF_SCOPE = "admin"  # what an API key needs to act on admin/support routes


@dataclass(frozen=True)
class Principal:
    user: User
    method: str  # "jwt", "oidc" or "api_key"
    scopes: frozenset[str] = field(default_factory=lambda: ALL_SCOPES)

    @property
    def id(self) -> str:
        return self.user.id

    @property
    def role(self) -> str:
        return self.user.role

    @property
    def is_staff(self) -> bool:
        return self.user.role in (Role.admin, Role.support)

    @property
    def is_admin(self) -> bool:
        return self.user.role == Role.admin


def issue_access_token(user: User, settings: Settings | None = None, *, minutes: int | None = None) -> str:
    settings = settings or get_settings()
    issued = clock.now()
    claims = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": user.id,
        "role": user.role,
        "iat": issued,
        "nbf": issued,
        "exp": issued + timedelta(minutes=minutes or settings.access_token_minutes),
        "jti": secrets.token_hex(8),
    }
    return jwt.encode(claims, settings.secret_key, algorithm="HS256")


def hash_api_key(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def new_api_key_secret() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


class JwksKeySet:
    """The signing keys one OIDC provider publishes at its JWKS URL.

    The key set is cached for ``lifespan`` seconds. A token whose ``kid`` is not in the cache (the provider
    rotated its key) triggers an immediate refetch. PyJWT's own client refuses that refetch for 30 seconds
    after *any* fetch, so a rotation right after start-up would be refused; here only forced refetches
    count against the cooldown, which still stops tokens with made-up kids from hammering the provider.
    """

    def __init__(
        self, url: str, *, lifespan: float = 300, refresh_cooldown: float = 10, timeout: float = 5
    ) -> None:
        self._client = jwt.PyJWKClient(url, cache_jwk_set=True, lifespan=lifespan, timeout=timeout)
        self._refresh_cooldown = refresh_cooldown
        self._last_forced_refresh: float | None = None
        self._lock = threading.Lock()  # called from worker threads: fetching is blocking I/O

    def signing_key(self, kid: str | None) -> jwt.PyJWK:
        with self._lock:
            key = self._client.match_kid(self._client.get_signing_keys(), kid or "")
            # Monotonic process time, not the business clock: this only paces HTTP calls.
            now = time.monotonic()
            may_refresh = (
                self._last_forced_refresh is None or now - self._last_forced_refresh >= self._refresh_cooldown
            )
            if key is None and may_refresh:
                self._last_forced_refresh = now
                key = self._client.match_kid(self._client.get_signing_keys(refresh=True), kid or "")
            if key is None:
                raise jwt.PyJWKClientError(f"No signing key with kid {kid!r}")
            return key


class _JwksRegistry:
    """One ``JwksKeySet`` per JWKS URL for the life of the process."""

    def __init__(self) -> None:
        self._key_sets: dict[str, JwksKeySet] = {}
        self._lock = threading.Lock()

    def for_url(self, url: str) -> JwksKeySet:
        with self._lock:
            if url not in self._key_sets:
                self._key_sets[url] = JwksKeySet(url)
            return self._key_sets[url]


jwks_registry = _JwksRegistry()
OIDC_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"]


@dataclass(frozen=True)
class VerifiedToken:
    """A bearer JWT whose signature, issuer, audience and lifetime have been checked."""

    token: str
    method: str  # "jwt" (built-in issuer) or "oidc"
    claims: dict[str, Any]

    @property
    def identity(self) -> str:
        """Who this is, independent of which token they hold: stable across token refreshes."""
        return f"{self.method}:{self.claims['iss']}:{self.claims['sub']}"


def _verify_signed(
    token: str, key: Any, *, algorithms: list[str], audience: str | None, issuer: str
) -> dict[str, Any]:
    """Signature, issuer, audience and claim types; the lifetime is checked by ``_check_lifetime``."""
    # PyJWT reads the wall clock; we check exp/nbf against our clock so tests can move time.
    claims: dict[str, Any] = jwt.decode(
        token,
        key,
        algorithms=algorithms,
        audience=audience,
        issuer=issuer,
        options={
            "verify_exp": False,
            "verify_nbf": False,
            "verify_iat": False,
            "verify_aud": audience is not None,
            "require": ["exp", "sub", "iss"],
        },
    )
    for name in ("exp", "nbf"):
        if name in claims and (isinstance(claims[name], bool) or not isinstance(claims[name], int | float)):
            raise jwt.InvalidTokenError(f"'{name}' must be a number")
    return claims


@functools.lru_cache(maxsize=2048)
def _verify_builtin(token: str, secret: str, audience: str | None, issuer: str) -> dict[str, Any]:
    """The built-in issuer's check is deterministic, so a token is verified once and then remembered (a
    failure is not); its lifetime is still checked on every use."""
    return _verify_signed(token, secret, algorithms=["HS256"], audience=audience, issuer=issuer)


def _claimed_issuer(token: str) -> Any:
    """Who the token says issued it, unverified: picks the key to check it with."""
    return jwt.decode(token, options={"verify_signature": False}).get("iss")


# Decoding costs as much as the check itself, so it is remembered too; unlike a verified token anyone can
# send one, so only tokens of a sane length are kept (at most 2048 x 4 KB).
_remembered_issuer = functools.lru_cache(maxsize=2048)(_claimed_issuer)
REMEMBERED_TOKEN_LENGTH = 4096


def _check_lifetime(claims: dict[str, Any], leeway: int) -> dict[str, Any]:
    now = clock.now().timestamp()
    if claims["exp"] + leeway < now:
        raise jwt.ExpiredSignatureError("token expired")
    if "nbf" in claims and claims["nbf"] - leeway > now:
        raise jwt.ImmatureSignatureError("token not yet valid")
    return dict(claims)


async def verify_token(token: str, settings: Settings) -> VerifiedToken:
    """Check a bearer JWT from the built-in issuer or the configured OIDC provider (no database access)."""
    try:
        issuer = (_remembered_issuer if len(token) <= REMEMBERED_TOKEN_LENGTH else _claimed_issuer)(token)
    except jwt.PyJWTError as exc:
        raise Unauthorized("Malformed bearer token") from exc
    try:
        if issuer == settings.jwt_issuer:
            claims = _verify_builtin(token, settings.secret_key, settings.jwt_audience, settings.jwt_issuer)
            return VerifiedToken(token, "jwt", _check_lifetime(claims, leeway=0))
        if settings.oidc_jwks_url and settings.oidc_issuer and issuer == settings.oidc_issuer:
            key_set = jwks_registry.for_url(settings.oidc_jwks_url)
            kid = jwt.get_unverified_header(token).get("kid")
            signing_key = await anyio.to_thread.run_sync(key_set.signing_key, kid)
            claims = _verify_signed(
                token,
                signing_key,
                algorithms=OIDC_ALGORITHMS,
                audience=settings.oidc_audience,
                issuer=settings.oidc_issuer,
            )
            return VerifiedToken(token, "oidc", _check_lifetime(claims, leeway=settings.oidc_leeway_seconds))
    except jwt.ExpiredSignatureError as exc:
        raise Unauthorized("Token expired", code="token_expired") from exc
    except jwt.PyJWKClientConnectionError as exc:
        raise ServiceUnavailable(
            "The identity provider's keys cannot be fetched; retry shortly",
            code="identity_provider_unavailable",
        ) from exc
    except (jwt.PyJWTError, jwt.PyJWKClientError) as exc:
        raise Unauthorized("Invalid bearer token") from exc
    raise Unauthorized("Token issuer is not trusted")


async def _principal_from_jwt(
    session: AsyncSession, verified: VerifiedToken, settings: Settings
) -> Principal:
    if verified.method == "jwt":
        user = await session.get(User, str(verified.claims["sub"]))
    else:
        user = await _user_for_oidc_claims(session, verified.claims, settings)
    if user is None:
        raise Unauthorized("Unknown user")
    return Principal(user=user, method=verified.method)


async def _user_for_oidc_claims(session: AsyncSession, claims: dict[str, Any], settings: Settings) -> User:
    """Map an external identity to a local user, creating the user on first sight."""
    issuer, subject = str(claims["iss"]), str(claims["sub"])
    query = select(User).where(User.oidc_issuer == issuer, User.oidc_subject == subject)
    user = (await session.execute(query)).scalar_one_or_none()
    if user is not None:
        return user
    email = claims.get("email") if claims.get("email_verified", True) else None
    if email and (await session.execute(select(User.id).where(User.email == str(email).lower()))).first():
        email = None  # never take over a local account by e-mail claim alone
    user = User(
        email=str(email).lower() if email else None,
        name=str(claims.get("name") or claims.get("preferred_username") or "")[:200],
        role=settings.oidc_default_role,
        oidc_issuer=issuer,
        oidc_subject=subject,
    )
    try:
        async with session.begin_nested():  # a concurrent first request may create the same identity
            session.add(user)
    except IntegrityError:
        return (await session.execute(query)).scalar_one()
    return user


async def _principal_from_api_key(session: AsyncSession, raw: str) -> Principal:
    key = (
        await session.execute(select(ApiKey).where(ApiKey.secret_hash == hash_api_key(raw)))
    ).scalar_one_or_none()
    if key is None or key.revoked_at is not None:
        raise Unauthorized("Invalid or revoked API key")
    user = await session.get(User, key.user_id)
    if user is None:
        raise Unauthorized("Invalid or revoked API key")
    key.last_used_at = clock.now()
    return Principal(user=user, method="api_key", scopes=frozenset(key.scopes) & ALL_SCOPES)


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Authorization must be 'Bearer <token>'")
    return token.strip()


async def optional_principal(request: Request, session: DbSession) -> Principal | None:
    """The caller, or None for anonymous calls. Cached on the request for rate limits and logs."""
    if hasattr(request.state, "principal"):
        cached: Principal | None = request.state.principal
        return cached
    token = bearer_token(request)
    principal: Principal | None = None
    if token is not None:
        settings: Settings = request.app.state.settings
        if token.startswith(API_KEY_PREFIX):
            principal = await _principal_from_api_key(session, token)
        else:
            # The idempotency middleware may have verified this token already.
            verified: VerifiedToken | None = getattr(request.state, "verified_token", None)
            if verified is None or verified.token != token:
                verified = await verify_token(token, settings)
            principal = await _principal_from_jwt(session, verified, settings)
        if principal.user.is_suspended:
            raise Forbidden("This account is suspended", code="account_suspended")
    request.state.principal = principal
    request.state.user_id = principal.id if principal else None
    return principal


async def current_principal(principal: Annotated[Principal | None, Depends(optional_principal)]) -> Principal:
    if principal is None:
        raise Unauthorized()
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def require_roles(*roles: str) -> Any:
    """Staff routes: the caller needs one of ``roles``; an API key also needs the ``admin`` scope."""

    async def _check(principal: CurrentPrincipal) -> Principal:
        if principal.role not in roles:
            raise Forbidden(f"This action needs one of the roles: {', '.join(roles)}", code="role_required")
        _check_scope(principal, STAFF_SCOPE)
        return principal

    return Depends(_check)


def _check_scope(principal: Principal, scope: str) -> None:
    if scope not in principal.scopes:
        raise Forbidden(f"This API key lacks the scope '{scope}'", code="scope_required")


def require_scope(scope: str) -> Any:
    async def _check(principal: CurrentPrincipal) -> Principal:
        _check_scope(principal, scope)
        return principal

    return Depends(_check)


StaffPrincipal = Annotated[Principal, require_roles(Role.admin, Role.support)]
AdminPrincipal = Annotated[Principal, require_roles(Role.admin)]
