"""Tokens from an external OIDC provider, verified against its JWKS served by a local HTTP server."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from pytest_httpserver import HTTPServer
from sqlalchemy import select
from werkzeug import Request, Response

from emanet.core.clock import FrozenClock
from emanet.core.db import Database
from emanet.users.models import User, UserStatus
from tests.core.test_errors import assert_problem
from tests.factories import Factory

ISSUER = "https://idp.example.test/"
AUDIENCE = "emanet-oidc-tests"
LEEWAY = 30


@dataclass
class SigningKey:
    kid: str
    private: rsa.RSAPrivateKey

    @property
    def jwk(self) -> dict[str, Any]:
        public: dict[str, Any] = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.private.public_key()))
        return {**public, "kid": self.kid, "use": "sig", "alg": "RS256"}


@dataclass
class IdentityProvider:
    """A JWKS endpoint whose published keys the test changes, and a token minting helper."""

    server: HTTPServer
    path: str
    clock: FrozenClock
    published: list[SigningKey] = field(default_factory=list)

    @property
    def jwks_url(self) -> str:
        return self.server.url_for(self.path)

    @property
    def fetches(self) -> int:
        return sum(1 for request, _ in self.server.log if request.path == self.path)

    def token(self, key: SigningKey, *, sub: str = "idp|alice", minutes: int = 5, **claims: Any) -> str:
        now = self.clock.now()
        payload = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": sub,
            "iat": now,
            "nbf": now,
            "exp": now + timedelta(minutes=minutes),
            "email": "alice@idp.example",
            "email_verified": True,
            "name": "Alice From IdP",
            **claims,
        }
        return jwt.encode(payload, key.private, algorithm="RS256", headers={"kid": key.kid})


@pytest.fixture(scope="module")
def rsa_keys() -> list[rsa.RSAPrivateKey]:
    return [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(3)]


@pytest.fixture
def idp(httpserver: HTTPServer, clock: FrozenClock, rsa_keys: list[rsa.RSAPrivateKey]) -> IdentityProvider:
    # A path of its own per test: the process keeps one key cache per JWKS URL.
    provider = IdentityProvider(httpserver, f"/{uuid.uuid4().hex}/.well-known/jwks.json", clock)
    provider.published.append(SigningKey("key-1", rsa_keys[0]))

    def jwks(_request: Request) -> Response:
        return Response(
            json.dumps({"keys": [k.jwk for k in provider.published]}), content_type="application/json"
        )

    httpserver.expect_request(provider.path).respond_with_handler(jwks)
    return provider


@pytest.fixture
def settings_overrides(idp: IdentityProvider) -> dict[str, Any]:
    return {
        "oidc_issuer": ISSUER,
        "oidc_audience": AUDIENCE,
        "oidc_jwks_url": idp.jwks_url,
        "oidc_leeway_seconds": LEEWAY,
    }


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_first_sight_creates_the_local_user_then_reuses_it(
    client: httpx.AsyncClient, idp: IdentityProvider, database: Database
) -> None:
    key = idp.published[0]
    first = await client.get("/api/v1/me", headers=auth(idp.token(key)))
    assert first.status_code == 200, first.text
    me = first.json()
    assert (me["email"], me["name"], me["role"]) == ("alice@idp.example", "Alice From IdP", "user")
    again = await client.get("/api/v1/me", headers=auth(idp.token(key, jti="another-token")))
    assert again.json()["id"] == me["id"]
    async with database.transaction() as session:
        users = (await session.execute(select(User).where(User.oidc_subject == "idp|alice"))).scalars().all()
    assert [(u.id, u.oidc_issuer) for u in users] == [(me["id"], ISSUER)]
    assert idp.fetches == 1  # the key set is cached


async def test_an_existing_email_is_not_taken_over(
    client: httpx.AsyncClient, idp: IdentityProvider, factory: Factory
) -> None:
    local = await factory.user(email="alice@idp.example")
    response = await client.get("/api/v1/me", headers=auth(idp.token(idp.published[0])))
    assert response.status_code == 200
    assert response.json()["id"] != local.id and response.json()["email"] is None


async def test_a_rotated_key_is_fetched_and_accepted(
    client: httpx.AsyncClient, idp: IdentityProvider, rsa_keys: list[rsa.RSAPrivateKey]
) -> None:
    old = idp.published[0]
    assert (await client.get("/api/v1/me", headers=auth(idp.token(old)))).status_code == 200
    assert idp.fetches == 1
    rotated = SigningKey("key-2", rsa_keys[1])
    idp.published[:] = [rotated, old]  # the provider rotates; our cache still holds only key-1
    response = await client.get("/api/v1/me", headers=auth(idp.token(rotated)))
    assert response.status_code == 200, response.text
    assert idp.fetches == 2
    assert (await client.get("/api/v1/me", headers=auth(idp.token(old)))).status_code == 200
    assert idp.fetches == 2
    # A made-up kid right after a refresh does not make us fetch again (no hammering the provider).
    stranger = SigningKey("key-unknown", rsa_keys[2])
    assert_problem(await client.get("/api/v1/me", headers=auth(idp.token(stranger))), 401, "unauthorized")
    assert idp.fetches == 2


async def test_expiry_allows_the_configured_clock_skew(
    client: httpx.AsyncClient, idp: IdentityProvider, clock: FrozenClock
) -> None:
    token = idp.token(idp.published[0], minutes=5)
    clock.advance(minutes=5, seconds=LEEWAY - 1)
    assert (await client.get("/api/v1/me", headers=auth(token))).status_code == 200
    clock.advance(seconds=2)
    assert_problem(await client.get("/api/v1/me", headers=auth(token)), 401, "token_expired")


async def test_a_token_from_the_future_is_refused(
    client: httpx.AsyncClient, idp: IdentityProvider, clock: FrozenClock
) -> None:
    early = idp.token(idp.published[0], nbf=clock.now() + timedelta(seconds=LEEWAY + 60))
    assert_problem(await client.get("/api/v1/me", headers=auth(early)), 401, "unauthorized")


@pytest.mark.parametrize("defect", ["audience", "issuer", "signature", "unknown_kid", "algorithm"])
async def test_bad_tokens_are_401(
    client: httpx.AsyncClient, idp: IdentityProvider, rsa_keys: list[rsa.RSAPrivateKey], defect: str
) -> None:
    key = idp.published[0]
    if defect == "audience":
        token = idp.token(key, aud="another-api")
    elif defect == "issuer":
        token = idp.token(key, iss="https://evil.example/")
    elif defect == "signature":  # signed by a key we never published, under the published kid
        token = idp.token(SigningKey(key.kid, rsa_keys[2]))
    elif defect == "unknown_kid":
        token = idp.token(SigningKey("never-published", rsa_keys[2]))
    else:  # HS256 with the public key as the "secret": the classic algorithm confusion attack
        token = jwt.encode(
            {
                "iss": ISSUER,
                "aud": AUDIENCE,
                "sub": "idp|mallory",
                "exp": idp.clock.now() + timedelta(minutes=5),
            },
            "k" * 32,
            algorithm="HS256",
            headers={"kid": key.kid},
        )
    assert_problem(await client.get("/api/v1/me", headers=auth(token)), 401, "unauthorized")


async def test_a_suspended_oidc_user_is_refused(
    client: httpx.AsyncClient, idp: IdentityProvider, database: Database
) -> None:
    token = idp.token(idp.published[0])
    user_id = (await client.get("/api/v1/me", headers=auth(token))).json()["id"]
    async with database.transaction() as session:
        user = await session.get(User, user_id)
        assert user is not None
        user.status = UserStatus.suspended
    assert_problem(await client.get("/api/v1/me", headers=auth(token)), 403, "account_suspended")


class TestProviderDown:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {
            "oidc_issuer": ISSUER,
            "oidc_audience": AUDIENCE,
            "oidc_jwks_url": f"http://127.0.0.1:1/{uuid.uuid4().hex}/jwks.json",
        }

    async def test_an_unreachable_jwks_is_a_503_not_a_401(
        self, client: httpx.AsyncClient, idp: IdentityProvider
    ) -> None:
        response = await client.get("/api/v1/me", headers=auth(idp.token(idp.published[0])))
        assert_problem(response, 503, "identity_provider_unavailable")
