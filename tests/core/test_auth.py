"""Built-in tokens, API keys (hashed, scoped, revocable), roles and suspension, through HTTP."""

from __future__ import annotations

from datetime import timedelta

import httpx
import jwt
import pytest
from sqlalchemy import select

from emanet.core.auth import (
    REMEMBERED_TOKEN_LENGTH,
    _remembered_issuer,
    _verify_builtin,
    hash_api_key,
    issue_access_token,
)
from emanet.core.db import Database
from emanet.core.settings import Settings
from emanet.users.models import ApiKey, Role, User, UserStatus
from tests.conftest import bearer
from tests.core.test_errors import assert_problem
from tests.factories import Factory


async def create_key(client: httpx.AsyncClient, headers: dict[str, str], *scopes: str) -> str:
    response = await client.post(
        "/api/v1/api-keys", json={"name": "server", "scopes": list(scopes)}, headers=headers
    )
    assert response.status_code == 201, response.text
    key: str = response.json()["key"]
    return key


def key_header(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# ---------------------------------------------------------------------------------------- built-in issuer


async def test_built_in_token_identifies_the_user(
    client: httpx.AsyncClient, factory: Factory, settings: Settings
) -> None:
    user = await factory.user()
    token = issue_access_token(user, settings)
    claims = jwt.decode(
        token,
        settings.secret_key,
        algorithms=["HS256"],
        audience=settings.jwt_audience,
        options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
    )
    assert (claims["iss"], claims["sub"], claims["role"]) == (settings.jwt_issuer, user.id, "user")
    response = await client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    assert response.json()["id"] == user.id


async def test_built_in_token_expires_on_our_clock(
    client: httpx.AsyncClient, factory: Factory, settings: Settings, clock: object
) -> None:
    user = await factory.user()
    headers = {"Authorization": f"Bearer {issue_access_token(user, settings, minutes=10)}"}
    clock.advance(minutes=9)  # type: ignore[attr-defined]
    assert (await client.get("/api/v1/me", headers=headers)).status_code == 200
    clock.advance(minutes=2)  # type: ignore[attr-defined]
    assert_problem(await client.get("/api/v1/me", headers=headers), 401, "token_expired")


async def test_a_token_is_decoded_once_then_remembered(
    client: httpx.AsyncClient, factory: Factory, settings: Settings
) -> None:
    """Every request carries the token; decoding and checking it again each time cost 3 % of a request."""
    user = await factory.user()
    headers = bearer(user)
    assert (await client.get("/api/v1/me", headers=headers)).status_code == 200
    decoded, verified = _remembered_issuer.cache_info(), _verify_builtin.cache_info()
    for _ in range(3):
        assert (await client.get("/api/v1/me", headers=headers)).status_code == 200
    assert _remembered_issuer.cache_info().misses == decoded.misses
    assert _remembered_issuer.cache_info().hits >= decoded.hits + 3
    assert _verify_builtin.cache_info().misses == verified.misses
    # Anyone can send a token: an oversized one is decoded (and refused) but never kept.
    padded = jwt.encode(
        {"iss": settings.jwt_issuer, "sub": user.id, "pad": "x" * REMEMBERED_TOKEN_LENGTH},
        "not-our-secret-but-32-bytes-or-longer",
    )
    kept = _remembered_issuer.cache_info().currsize
    response = await client.get("/api/v1/me", headers={"Authorization": f"Bearer {padded}"})
    assert_problem(response, 401, "unauthorized")
    assert _remembered_issuer.cache_info().currsize == kept


@pytest.mark.parametrize("change", ["secret", "audience", "issuer", "garbage", "scheme", "unknown_user"])
async def test_bad_built_in_tokens_are_401(
    client: httpx.AsyncClient, factory: Factory, settings: Settings, change: str
) -> None:
    user = await factory.user()
    other = {
        "secret": settings.model_copy(update={"secret_key": "another-secret-of-sufficient-length-0001"}),
        "audience": settings.model_copy(update={"jwt_audience": "someone-else"}),
        "issuer": settings.model_copy(update={"jwt_issuer": "https://evil.example"}),
    }
    if change in other:
        header = f"Bearer {issue_access_token(user, other[change])}"
    elif change == "garbage":
        header = "Bearer not-a-jwt"
    elif change == "scheme":
        header = f"Basic {issue_access_token(user, settings)}"
    else:
        ghost = User(id="usr_ghost", role=Role.user)
        header = f"Bearer {issue_access_token(ghost, settings)}"
    response = await client.get("/api/v1/me", headers={"Authorization": header})
    assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"


async def test_unsigned_token_is_refused(
    client: httpx.AsyncClient, factory: Factory, settings: Settings, clock: object
) -> None:
    user = await factory.user()
    now = clock.now()  # type: ignore[attr-defined]
    forged = jwt.encode(
        {
            "iss": settings.jwt_issuer,
            "aud": settings.jwt_audience,
            "sub": user.id,
            "exp": now + timedelta(hours=1),
        },
        key=None,
        algorithm="none",
    )
    assert_problem(await client.get("/api/v1/me", headers=key_header(forged)), 401, "unauthorized")


# ---------------------------------------------------------------------------------------------- API keys


async def test_api_key_lifecycle(
    client: httpx.AsyncClient, factory: Factory, database: Database, clock: object
) -> None:
    user = await factory.user()
    created = await client.post(
        "/api/v1/api-keys", json={"name": "shop backend", "scopes": ["escrows:read"]}, headers=bearer(user)
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["key"].startswith("emk_") and body["scopes"] == ["escrows:read"]
    async with database.transaction() as session:
        stored = (await session.execute(select(ApiKey).where(ApiKey.id == body["id"]))).scalar_one()
    assert stored.secret_hash == hash_api_key(body["key"]) and body["key"] not in stored.secret_hash

    me = await client.get("/api/v1/me", headers=key_header(body["key"]))
    assert me.status_code == 200 and me.json()["id"] == user.id
    listed = (await client.get("/api/v1/api-keys", headers=bearer(user))).json()
    assert [k["id"] for k in listed] == [body["id"]]
    assert "key" not in listed[0]  # the secret is shown once
    assert listed[0]["last_used_at"] is not None

    revoked = await client.delete(f"/api/v1/api-keys/{body['id']}", headers=bearer(user))
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    assert_problem(await client.get("/api/v1/me", headers=key_header(body["key"])), 401, "unauthorized")


async def test_unknown_api_key_is_401(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/api/v1/me", headers=key_header("emk_" + "x" * 43)), 401, "unauthorized")


async def test_another_users_key_is_404(client: httpx.AsyncClient, factory: Factory) -> None:
    owner, stranger = await factory.user(), await factory.user()
    created = await client.post(
        "/api/v1/api-keys", json={"name": "k", "scopes": ["escrows:read"]}, headers=bearer(owner)
    )
    response = await client.delete(f"/api/v1/api-keys/{created.json()['id']}", headers=bearer(stranger))
    assert_problem(response, 404, "not_found")


async def test_require_scope_checks_api_keys(client: httpx.AsyncClient, factory: Factory) -> None:
    user = await factory.user()
    reader = await create_key(client, bearer(user), "escrows:read")
    writer = await create_key(client, bearer(user), "escrows:write")
    assert_problem(await client.get("/_test/scoped", headers=key_header(reader)), 403, "scope_required")
    assert (await client.get("/_test/scoped", headers=key_header(writer))).status_code == 200
    assert (await client.get("/_test/scoped", headers=bearer(user))).status_code == 200  # a user's own token


async def test_a_key_cannot_mint_a_stronger_key(client: httpx.AsyncClient, factory: Factory) -> None:
    user = await factory.user()
    reader = await create_key(client, bearer(user), "escrows:read", "payments:read")
    same = await client.post(
        "/api/v1/api-keys", json={"name": "child", "scopes": ["escrows:read"]}, headers=key_header(reader)
    )
    assert same.status_code == 201
    stronger = await client.post(
        "/api/v1/api-keys", json={"name": "child", "scopes": ["payments:write"]}, headers=key_header(reader)
    )
    assert_problem(stronger, 403, "scope_required")


@pytest.mark.parametrize(
    ("scopes", "code"),
    [(["admin"], "invalid_scope"), (["escrows:fly"], "invalid_scope"), ([], "validation_error")],
)
async def test_key_scopes_are_validated(
    client: httpx.AsyncClient, factory: Factory, scopes: list[str], code: str
) -> None:
    user = await factory.user()
    response = await client.post(
        "/api/v1/api-keys", json={"name": "k", "scopes": scopes}, headers=bearer(user)
    )
    assert_problem(response, 422, code)


# --------------------------------------------------------------------------------------- roles, suspension


async def test_admin_routes_check_the_role(client: httpx.AsyncClient, factory: Factory) -> None:
    assert_problem(await client.get("/api/v1/admin/users"), 401, "unauthorized")
    user = await factory.user()
    body = assert_problem(await client.get("/api/v1/admin/users", headers=bearer(user)), 403, "role_required")
    assert "admin" in body["detail"]
    for role in (Role.support, Role.admin):
        staff = await factory.user(role=role)
        assert (await client.get("/api/v1/admin/users", headers=bearer(staff))).status_code == 200


async def test_staff_api_keys_need_the_admin_scope(client: httpx.AsyncClient, factory: Factory) -> None:
    admin = await factory.user(role=Role.admin)
    plain = await create_key(client, bearer(admin), "escrows:read")
    assert_problem(await client.get("/api/v1/admin/users", headers=key_header(plain)), 403, "scope_required")
    staff_key = await create_key(client, bearer(admin), "admin")
    assert (await client.get("/api/v1/admin/users", headers=key_header(staff_key))).status_code == 200


async def test_a_suspended_user_is_refused_everywhere(
    client: httpx.AsyncClient, factory: Factory, database: Database
) -> None:
    user = await factory.user(role=Role.admin)
    key = await create_key(client, bearer(user), "escrows:read", "admin")
    async with database.transaction() as session:
        row = await session.get(User, user.id)
        assert row is not None
        row.status, row.suspended_reason = UserStatus.suspended, "chargeback fraud"
    calls = [
        client.get("/api/v1/me", headers=bearer(user)),
        client.patch("/api/v1/me", json={"name": "New"}, headers=bearer(user)),
        client.get("/api/v1/api-keys", headers=bearer(user)),
        client.post("/api/v1/api-keys", json={"name": "k", "scopes": ["escrows:read"]}, headers=bearer(user)),
        client.get("/api/v1/admin/users", headers=bearer(user)),
        client.get("/api/v1/me", headers=key_header(key)),
        client.get("/_test/ping", headers=bearer(user)),
    ]
    for call in calls:
        assert_problem(await call, 403, "account_suspended")


async def test_profile_update(client: httpx.AsyncClient, factory: Factory) -> None:
    user, other = await factory.user(), await factory.user(email="taken@example.com")
    response = await client.patch(
        "/api/v1/me", headers=bearer(user), json={"name": "Zeynep", "locale": "tr", "email": "Z@Example.com"}
    )
    assert response.status_code == 200, response.text
    assert (response.json()["name"], response.json()["locale"], response.json()["email"]) == (
        "Zeynep",
        "tr",
        "z@example.com",
    )
    assert (await client.get("/api/v1/me", headers=bearer(user))).json()["locale"] == "tr"
    taken = await client.patch("/api/v1/me", json={"email": other.email}, headers=bearer(user))
    assert_problem(taken, 409, "email_taken")
    assert_problem(
        await client.patch("/api/v1/me", json={"locale": "fr"}, headers=bearer(user)), 422, "validation_error"
    )
