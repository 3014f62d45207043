"""Request and response bodies of the users domain."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field

from emanet.core.schemas import StrictModel

Locale = Literal["en", "tr", "ar"]


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    email: str | None
    phone: str | None
    name: str
    role: str
    status: str
    verification_level: str
    locale: str
    created_at: datetime


class MeUpdate(StrictModel):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    email: EmailStr | None = None
    locale: Locale | None = None


class ApiKeyCreate(StrictModel):
    name: str = Field(min_length=1, max_length=200)
    scopes: list[str] = Field(min_length=1)


class ApiKeyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    scopes: list[str]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="The secret; shown only once")


class AdminUserOut(UserOut):
    """What support and admins see in the user list."""

    suspended_reason: str | None
    phone_verified_at: datetime | None
    identity_verified_at: datetime | None
    oidc_issuer: str | None
    updated_at: datetime
