"""Authentication (built-in JWT issuer, any OIDC provider by JWKS, hashed API keys) and RBAC."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Annotated, Any

import anyio
import jwt
from fastapi import Depends, Request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from emanet.core import clock
from emanet.core.errors import Forbidden, Unauthorized
from emanet.core.session import DbSession
from emanet.core.settings import Settings, get_settings
from emanet.users.models import ApiKey, Role, User

API_KEY_PREFIX = "emk_"
ALL_SCOPES = frozenset({
    "escrows:read", "escrows:write", "payments:read", "payments:write", "payouts:write",
    "webhooks:read", "webhooks:write", "documents:read", "documents:write", "admin",
})


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
        "iss": settings.jwt_issuer, "aud": settings.jwt_audience, "sub": user.id, "role": user.role,
        "iat": issued, "nbf": issued,
        "exp": issued + timedelta(minutes=minutes or settings.access_token_minutes),
        "jti": secrets.token_hex(8),
    }
    return jwt.encode(claims, settings.secret_key, algorithm="HS256")


def hash_api_key(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def new_api_key_secret() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


class _JwksCache:
    """One PyJWKClient per JWKS URL: it caches keys and refetches when a new ``kid`` appears (rotation)."""

    def __init__(self) -> None:
        self._clients: dict[str, jwt.PyJWKClient] = {}

    def client(self, url: str) -> jwt.PyJWKClient:
        if url not in self._clients:
            self._clients[url] = jwt.PyJWKClient(url, cache_keys=True, lifespan=300, timeout=5)
        return self._clients[url]


jwks_cache = _JwksCache()


def _now_ts() -> float:
    return clock.now().timestamp()


def _decode(token: str, key: Any, *, algorithms: list[str], audience: str | None, issuer: str,
            leeway: int) -> dict[str, Any]:
    # PyJWT reads the wall clock; we check exp/nbf against our clock so tests can move time.
    claims: dict[str, Any] = jwt.decode(
        token, key, algorithms=algorithms, audience=audience, issuer=issuer,
        options={"verify_exp": False, "verify_nbf": False, "verify_iat": False, "verify_aud": audience is not None,
                 "require": ["exp", "sub", "iss"]},
    )
    now = _now_ts()
    if claims["exp"] + leeway < now:
        raise jwt.ExpiredSignatureError("token expired")
    if "nbf" in claims and claims["nbf"] - leeway > now:
        raise jwt.ImmatureSignatureError("token not yet valid")
    return claims


async def _user_from_jwt(session: AsyncSession, token: str, settings: Settings) -> Principal:
    try:
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise Unauthorized("Malformed bearer token") from exc
    issuer = unverified.get("iss")
    try:
        if issuer == settings.jwt_issuer:
            claims = _decode(token, settings.secret_key, algorithms=["HS256"], audience=settings.jwt_audience,
                             issuer=settings.jwt_issuer, leeway=0)
            user = await session.get(User, claims["sub"])
            method = "jwt"
        elif settings.oidc_jwks_url and settings.oidc_issuer and issuer == settings.oidc_issuer:
            client = jwks_cache.client(settings.oidc_jwks_url)
            signing_key = await anyio.to_thread.run_sync(client.get_signing_key_from_jwt, token)
            claims = _decode(token, signing_key.key, algorithms=["RS256", "ES256", "PS256"],
                             audience=settings.oidc_audience, issuer=settings.oidc_issuer,
                             leeway=settings.oidc_leeway_seconds)
            user = await _user_for_oidc_claims(session, claims, settings)
            method = "oidc"
        else:
            raise Unauthorized("Token issuer is not trusted")
    except jwt.ExpiredSignatureError as exc:
        raise Unauthorized("Token expired", code="token_expired") from exc
    except (jwt.PyJWTError, jwt.PyJWKClientError) as exc:
        raise Unauthorized("Invalid bearer token") from exc
    if user is None:
        raise Unauthorized("Unknown user")
    return Principal(user=user, method=method)


async def _user_for_oidc_claims(session: AsyncSession, claims: dict[str, Any], settings: Settings) -> User:
    """Map an external identity to a local user, creating the user on first sight."""
    issuer, subject = claims["iss"], str(claims["sub"])
    user = (await session.execute(
        select(User).where(User.oidc_issuer == issuer, User.oidc_subject == subject)
    )).scalar_one_or_none()
    if user is None:
        email = claims.get("email") if claims.get("email_verified", True) else None
        if email and (await session.execute(select(User).where(User.email == email))).scalar_one_or_none():
            email = None  # never take over a local account by e-mail claim alone
        user = User(email=email, name=str(claims.get("name") or claims.get("preferred_username") or ""),
                    role=settings.oidc_default_role, oidc_issuer=issuer, oidc_subject=subject)
        session.add(user)
        await session.flush()
    return user


async def _user_from_api_key(session: AsyncSession, raw: str) -> Principal:
    digest = hash_api_key(raw)
    key = (await session.execute(select(ApiKey).where(ApiKey.secret_hash == digest))).scalar_one_or_none()
    if key is None or not hmac.compare_digest(key.secret_hash, digest) or key.revoked_at is not None:
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
            principal = await _user_from_api_key(session, token)
        else:
            principal = await _user_from_jwt(session, token, settings)
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
    async def _check(principal: CurrentPrincipal) -> Principal:
        if principal.role not in roles:
            raise Forbidden(f"This action needs one of the roles: {', '.join(roles)}", code="role_required")
        return principal

    return Depends(_check)


def require_scope(scope: str) -> Any:
    async def _check(principal: CurrentPrincipal) -> Principal:
        if scope not in principal.scopes:
            raise Forbidden(f"This API key lacks the scope '{scope}'", code="scope_required")
        return principal

    return Depends(_check)


StaffPrincipal = Annotated[Principal, require_roles(Role.admin, Role.support)]
AdminPrincipal = Annotated[Principal, require_roles(Role.admin)]
