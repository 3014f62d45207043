"""Factories: build rows through the services, each in its own committed transaction."""

from __future__ import annotations

import itertools
from typing import Any

from emanet.core.db import Database
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
                session, email=fields.pop("email", f"user{n}@example.com"),
                phone=fields.pop("phone", f"+90555{n:07d}"), name=fields.pop("name", f"User {n}"), role=role,
            )
            user.verification_level = VerificationLevel.identity if verified else VerificationLevel.none
            for key, value in fields.items():
                setattr(user, key, value)
        return user
