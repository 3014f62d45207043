"""Factories: build rows through the services, each in its own committed transaction."""

from __future__ import annotations

import itertools
from typing import Any

from emanet.core.db import Database
from emanet.escrow.models import Escrow
from emanet.users.models import Role, User, VerificationLevel
from emanet.users.service import create_user

_counter = itertools.count(1)


class Factory:
    def __init__(self, database: Database) -> None:
        self.database = database

    async def user(self, *, role: str = Role.user, verified: bool = True, **fields: Any) -> User:
        n = next(_counter)
        async with self.database.transaction() as session:
            user = await create_user(
                session,
                email=fields.pop("email", f"user{n}@example.com"),
                phone=fields.pop("phone", f"+90555{n:07d}"),
                name=fields.pop("name", f"User {n}"),
                role=role,
            )
            user.verification_level = VerificationLevel.identity if verified else VerificationLevel.none
            for key, value in fields.items():
                setattr(user, key, value)
        return user


async def create_escrow(
    database: Database,
    buyer: User,
    seller: User,
    *,
    amount: int = 100_000,
    currency: str = "TRY",
    **fields: Any,
) -> Escrow:
    """An escrow created by the buyer through the service (the HTTP route is tested on its own)."""
    from emanet.core.auth import Principal
    from emanet.escrow.service import Actor, NewEscrow
    from emanet.escrow.service import create_escrow as create

    async with database.transaction() as session:
        principal = Principal(user=buyer, method="jwt")
        return await create(
            session,
            NewEscrow(
                buyer_id=buyer.id,
                seller_id=seller.id,
                amount=amount,
                currency=currency,
                title=fields.pop("title", "Test escrow"),
                **fields,
            ),
            Actor.from_principal(principal),
            principal,
        )


async def capture(
    database: Database,
    escrow_id: str,
    amount: int,
    currency: str = "TRY",
    *,
    provider: str = "sandbox",
    payment_id: str | None = None,
) -> Escrow:
    """What a succeeded provider payment does to its escrow."""
    from emanet.core.db import new_id
    from emanet.escrow.service import Actor, record_payment_captured

    async with database.transaction() as session:
        return await record_payment_captured(
            session,
            escrow_id=escrow_id,
            payment_id=payment_id or new_id("pay"),
            provider=provider,
            amount=amount,
            currency=currency,
            actor=Actor.provider(provider),
        )
