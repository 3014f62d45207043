"""Who an event concerns: the users named in its data (used by webhooks and notifications alike).

An event's ``data`` is the full object. Its parties are the values of the keys in ``PARTY_KEYS`` at the top
level and inside a nested ``escrow`` object (a payment or dispute event that embeds its escrow).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from emanet.users.models import Role, User, UserStatus

PARTY_KEYS = ("buyer_id", "seller_id", "user_id", "owner_id", "payer_id", "payee_id")


def parties_of(data: Mapping[str, Any]) -> set[str]:
    found: set[str] = set()
    for scope in (data, data.get("escrow")):
        if isinstance(scope, Mapping):
            found.update(str(scope[key]) for key in PARTY_KEYS if isinstance(scope.get(key), str))
    return found


async def active_admin_ids(session: AsyncSession) -> list[str]:
    result = await session.execute(
        select(User.id).where(User.role == Role.admin, User.status == UserStatus.active).order_by(User.id)
    )
    return list(result.scalars().all())
