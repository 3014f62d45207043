"""HTTP routes of the users domain: the caller's profile and API keys."""

from __future__ import annotations

from fastapi import APIRouter, status

from emanet.core.auth import CurrentPrincipal
from emanet.core.session import DbSession
from emanet.users import service
from emanet.users.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyOut, MeUpdate, UserOut

router = APIRouter(prefix="/api/v1", tags=["users"])


@router.get("/me", response_model=UserOut)
async def get_me(principal: CurrentPrincipal) -> UserOut:
    return UserOut.model_validate(principal.user)


@router.patch("/me", response_model=UserOut)
async def update_me(body: MeUpdate, principal: CurrentPrincipal, session: DbSession) -> UserOut:
    user = await service.update_profile(session, principal.user, name=body.name, email=body.email,
                                        locale=body.locale)
    return UserOut.model_validate(user)


@router.post("/api-keys", response_model=ApiKeyCreated, status_code=status.HTTP_201_CREATED)
async def create_api_key(body: ApiKeyCreate, principal: CurrentPrincipal, session: DbSession) -> ApiKeyCreated:
    key, secret = await service.create_api_key(session, principal.user, body.name, body.scopes)
    return ApiKeyCreated(**ApiKeyOut.model_validate(key).model_dump(), key=secret)


@router.get("/api-keys", response_model=list[ApiKeyOut])
async def list_api_keys(principal: CurrentPrincipal, session: DbSession) -> list[ApiKeyOut]:
    return [ApiKeyOut.model_validate(k) for k in await service.list_api_keys(session, principal.user)]


@router.delete("/api-keys/{key_id}", response_model=ApiKeyOut)
async def revoke_api_key(key_id: str, principal: CurrentPrincipal, session: DbSession) -> ApiKeyOut:
    return ApiKeyOut.model_validate(await service.revoke_api_key(session, principal.user, key_id))
