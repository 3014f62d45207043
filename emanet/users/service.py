"""Rules of the users domain: creation, profile changes, API keys."""

from __future__ import annotations

from collections.abc import Sequence

import phonenumbers
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from emanet.core import clock
from emanet.core.auth import ALL_SCOPES, hash_api_key, new_api_key_secret
from emanet.core.errors import Conflict, NotFound, Unprocessable
from emanet.users.models import ApiKey, Role, User


def normalize_phone(raw: str) -> str:
    """E.164, or Unprocessable for anything that is not a valid number."""
    try:
        parsed = phonenumbers.parse(raw, None)
    except phonenumbers.NumberParseException as exc:
        raise Unprocessable("Phone number must be in international format, e.g. +905551234567",
                            code="invalid_phone") from exc
    if not phonenumbers.is_valid_number(parsed):
        raise Unprocessable("Phone number is not valid", code="invalid_phone")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


async def create_user(session: AsyncSession, *, email: str | None, phone: str | None, name: str,
                      role: str = Role.user, user_id: str | None = None) -> User:
    if role not in set(Role):
        raise Unprocessable(f"Unknown role {role!r}", code="invalid_role")
    phone = normalize_phone(phone) if phone else None
    email = email.lower() if email else None
    for column, value in ((User.email, email), (User.phone, phone)):
        if value and (await session.execute(select(User.id).where(column == value))).first():
            raise Conflict(f"A user with this {column.key} already exists", code="user_exists")
    user = User(email=email, phone=phone, name=name, role=role)
    if user_id:
        user.id = user_id
    session.add(user)
    await session.flush()
    return user


async def get_user(session: AsyncSession, user_id: str) -> User:
    user = await session.get(User, user_id)
    if user is None:
        raise NotFound("No such user")
    return user


async def find_user(session: AsyncSession, reference: str) -> User:
    """A user by id, e-mail or phone (for operators and the CLI)."""
    column = User.id if reference.startswith("usr_") else User.email if "@" in reference else User.phone
    value = normalize_phone(reference) if column is User.phone else reference.lower() if column is User.email \
        else reference
    user = (await session.execute(select(User).where(column == value))).scalar_one_or_none()
    if user is None:
        raise NotFound(f"No user {reference!r}")
    return user


async def update_profile(session: AsyncSession, user: User, *, name: str | None, email: str | None,
                         locale: str | None) -> User:
    if email is not None and email.lower() != user.email:
        taken = (await session.execute(select(User.id).where(User.email == email.lower()))).first()
        if taken:
            raise Conflict("This e-mail belongs to another account", code="email_taken")
        user.email = email.lower()
    if name is not None:
        user.name = name
    if locale is not None:
        user.locale = locale
    await session.flush()
    return user


async def create_api_key(session: AsyncSession, user: User, name: str, scopes: Sequence[str]) -> tuple[ApiKey, str]:
    unknown = sorted(set(scopes) - ALL_SCOPES)
    if unknown:
        raise Unprocessable(f"Unknown scopes: {', '.join(unknown)}", code="invalid_scope")
    if "admin" in scopes and user.role != Role.admin:
        raise Unprocessable("Only admins may create keys with the admin scope", code="invalid_scope")
    secret = new_api_key_secret()
    key = ApiKey(user_id=user.id, name=name, scopes=sorted(set(scopes)), secret_hash=hash_api_key(secret))
    session.add(key)
    await session.flush()
    return key, secret


async def list_api_keys(session: AsyncSession, user: User) -> Sequence[ApiKey]:
    result = await session.execute(select(ApiKey).where(ApiKey.user_id == user.id).order_by(ApiKey.created_at))
    return result.scalars().all()


async def revoke_api_key(session: AsyncSession, user: User, key_id: str) -> ApiKey:
    key = await session.get(ApiKey, key_id)
    if key is None or key.user_id != user.id:
        raise NotFound("No such API key")
    if key.revoked_at is None:
        key.revoked_at = clock.now()
    await session.flush()
    return key
