"""HTTP routes of the users domain: the caller's profile, API keys, and the admin user list."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from emanet.core.auth import CurrentPrincipal, StaffPrincipal
from emanet.core.schemas import Page, decode_cursor, encode_cursor
from emanet.core.session import DbSession
from emanet.users import service
from emanet.users.models import Role, UserStatus, VerificationLevel
from emanet.users.schemas import AdminUserOut, ApiKeyCreate, ApiKeyCreated, ApiKeyOut, MeUpdate, UserOut

router = APIRouter(prefix="/api/v1", tags=["users"])


@router.get("/me", response_model=UserOut)
async def get_me(principal: CurrentPrincipal) -> UserOut:
    return UserOut.model_validate(principal.user)


@router.patch("/me", response_model=UserOut)
async def update_me(body: MeUpdate, principal: CurrentPrincipal, session: DbSession) -> UserOut:
    user = await service.update_profile(
        session, principal.user, name=body.name, email=body.email, locale=body.locale
    )
    return UserOut.model_validate(user)


@router.post("/api-keys", response_model=ApiKeyCreated, status_code=status.HTTP_201_CREATED)
async def create_api_key(
    body: ApiKeyCreate, principal: CurrentPrincipal, session: DbSession
) -> ApiKeyCreated:
    key, secret = await service.create_api_key(
        session, principal.user, body.name, body.scopes, granted_by=principal.scopes
    )
    return ApiKeyCreated(**ApiKeyOut.model_validate(key).model_dump(), key=secret)


@router.get("/api-keys", response_model=list[ApiKeyOut])
async def list_api_keys(principal: CurrentPrincipal, session: DbSession) -> list[ApiKeyOut]:
    return [ApiKeyOut.model_validate(k) for k in await service.list_api_keys(session, principal.user)]


@router.delete("/api-keys/{key_id}", response_model=ApiKeyOut)
async def revoke_api_key(key_id: str, principal: CurrentPrincipal, session: DbSession) -> ApiKeyOut:
    return ApiKeyOut.model_validate(await service.revoke_api_key(session, principal.user, key_id))


@router.get("/admin/users", response_model=Page[AdminUserOut], tags=["admin"])
async def admin_list_users(
    _staff: StaffPrincipal,
    session: DbSession,
    role: Role | None = None,
    status_: Annotated[UserStatus | None, Query(alias="status")] = None,
    verification_level: VerificationLevel | None = None,
    q: Annotated[
        str | None, Query(max_length=200, description="user id, or part of e-mail, phone or name")
    ] = None,
    sort: Annotated[
        str | None,
        Query(
            description="comma-separated: created_at, name, role, status; "
            "'-' for descending (default -created_at)"
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> Page[AdminUserOut]:
    filters = service.UserFilters(role=role, status=status_, verification_level=verification_level, q=q)
    rows, next_cursor = await service.list_users(
        session, filters, limit=limit, sort=sort, cursor=decode_cursor(cursor) if cursor else None
    )
    return Page[AdminUserOut](
        data=[AdminUserOut.model_validate(row) for row in rows],
        next_cursor=encode_cursor(next_cursor) if next_cursor else None,
    )
