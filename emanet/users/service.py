"""Rules of the users domain: creation, profile changes, API keys."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import phonenumbers
from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from emanet.core import clock
from emanet.core.auth import ALL_SCOPES, STAFF_SCOPE, hash_api_key, new_api_key_secret
from emanet.core.errors import Conflict, Forbidden, NotFound, Unprocessable
from emanet.core.schemas import after_cursor
from emanet.users.models import ApiKey, Role, User


def normalize_phone(raw: str) -> str:
    """E.164, or Unprocessable for anything that is not a valid number."""
    try:
        parsed = phonenumbers.parse(raw, None)
    except phonenumbers.NumberParseException as exc:
        raise Unprocessable(
            "Phone number must be in international format, e.g. +905551234567", code="invalid_phone"
        ) from exc
    if not phonenumbers.is_valid_number(parsed):
        raise Unprocessable("Phone number is not valid", code="invalid_phone")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


async def create_user(
    session: AsyncSession,
    *,
    email: str | None,
    phone: str | None,
    name: str,
    role: str = Role.user,
    user_id: str | None = None,
) -> User:
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
    if reference.startswith("usr_"):
        condition = User.id == reference
    elif "@" in reference:
        condition = User.email == reference.lower()
    else:
        condition = User.phone == normalize_phone(reference)
    user = (await session.execute(select(User).where(condition))).scalar_one_or_none()
    if user is None:
        raise NotFound(f"No user {reference!r}")
    return user


async def update_profile(
    session: AsyncSession, user: User, *, name: str | None, email: str | None, locale: str | None
) -> User:
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


async def create_api_key(
    session: AsyncSession,
    user: User,
    name: str,
    scopes: Sequence[str],
    *,
    granted_by: frozenset[str] = ALL_SCOPES,
) -> tuple[ApiKey, str]:
    """A new key for ``user``. ``granted_by`` is what the creating credential may do itself: a key can never
    mint a key with more rights than its own."""
    unknown = sorted(set(scopes) - ALL_SCOPES)
    if unknown:
        raise Unprocessable(f"Unknown scopes: {', '.join(unknown)}", code="invalid_scope")
    if STAFF_SCOPE in scopes and user.role not in (Role.admin, Role.support):
        raise Unprocessable(
            "Only admin and support users may create keys with the admin scope", code="invalid_scope"
        )
    beyond = sorted(set(scopes) - granted_by)
    if beyond:
        raise Forbidden(f"This credential cannot grant: {', '.join(beyond)}", code="scope_required")
    secret = new_api_key_secret()
    key = ApiKey(user_id=user.id, name=name, scopes=sorted(set(scopes)), secret_hash=hash_api_key(secret))
    session.add(key)
    await session.flush()
    return key, secret


async def list_api_keys(session: AsyncSession, user: User) -> Sequence[ApiKey]:
    result = await session.execute(
        select(ApiKey).where(ApiKey.user_id == user.id).order_by(ApiKey.created_at, ApiKey.id)
    )
    return result.scalars().all()


async def revoke_api_key(session: AsyncSession, user: User, key_id: str) -> ApiKey:
    key = await session.get(ApiKey, key_id)
    if key is None or key.user_id != user.id:
        raise NotFound("No such API key")
    if key.revoked_at is None:
        key.revoked_at = clock.now()
    await session.flush()
    return key


# ---------------------------------------------------------------------------------------------- admin listing

SORTABLE = {"created_at": User.created_at, "name": User.name, "role": User.role, "status": User.status}


@dataclass(frozen=True)
class UserFilters:
    role: str | None = None
    status: str | None = None
    verification_level: str | None = None
    q: str | None = None  # id, or part of e-mail, phone or name


def _parse_sort(sort: str | None) -> list[tuple[str, bool]]:
    """``"-created_at,name"`` -> ``[("created_at", True), ("name", False)]`` (True: descending)."""
    parsed = []
    for item in [part.strip() for part in (sort or "-created_at").split(",") if part.strip()]:
        name = item.lstrip("-")
        if name not in SORTABLE:
            raise Unprocessable(f"Cannot sort by {name!r}; use {', '.join(SORTABLE)}", code="invalid_sort")
        parsed.append((name, item.startswith("-")))
    return parsed


def _filtered(filters: UserFilters) -> Any:
    query = select(User)
    if filters.role:
        query = query.where(User.role == filters.role)
    if filters.status:
        query = query.where(User.status == filters.status)
    if filters.verification_level:
        query = query.where(User.verification_level == filters.verification_level)
    if filters.q and filters.q.strip():
        term = filters.q.strip()
        lowered = term.lower()
        query = query.where(
            or_(
                User.id == term,
                func.lower(User.email).contains(lowered, autoescape=True),
                User.phone.contains(term, autoescape=True),
                func.lower(User.name).contains(lowered, autoescape=True),
            )
        )
    return query


UserPage = tuple[list[User], dict[str, Any] | None]


async def list_users(
    session: AsyncSession,
    filters: UserFilters,
    *,
    limit: int,
    cursor: dict[str, Any] | None,
    sort: str | None,
) -> UserPage:
    """Keyset pagination over the chosen sort (the id breaks ties): one query per page, whatever its size."""
    order = _parse_sort(sort)
    keys = [*order, ("id", order[0][1])]
    columns = {**SORTABLE, "id": User.id}
    query = _filtered(filters)
    if cursor:
        try:
            values = [
                datetime.fromisoformat(cursor[name]) if name == "created_at" else str(cursor[name])
                for name, _ in keys
            ]
        except (KeyError, TypeError, ValueError) as exc:
            raise Unprocessable("The cursor does not match this sort", code="invalid_cursor") from exc
        query = query.where(after_cursor([(columns[name], descending) for name, descending in keys], values))
    query = query.order_by(*[columns[n].desc() if d else columns[n].asc() for n, d in keys]).limit(limit + 1)
    rows = list((await session.execute(query)).scalars().all())
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    last = rows[-1]
    next_cursor = {
        name: (last.created_at.isoformat() if name == "created_at" else getattr(last, name))
        for name, _ in keys
    }
    return rows, next_cursor
