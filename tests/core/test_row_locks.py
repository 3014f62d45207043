"""``core.db.lock_row``: one locking round trip per row and transaction, and no unsaved change lost."""

from __future__ import annotations

from typing import Any

from emanet.core.db import Database, lock_row
from emanet.users.models import User
from tests.factories import Factory


async def test_a_row_is_locked_once_per_transaction(
    database: Database, factory: Factory, count_queries: Any
) -> None:
    user = await factory.user()
    async with database.transaction() as session:
        with count_queries() as queries:
            first = await lock_row(session, User, user.id)
            again = await lock_row(session, User, user.id)
        assert first is again and first is not None
        assert queries.count == 1
        if database.engine.dialect.name == "postgresql":  # SQLite: the transaction holds the write lock
            assert "FOR UPDATE" in queries.statements[0]
        assert await lock_row(session, User, "usr_missing") is None
    async with database.transaction() as session:  # a new transaction locks anew
        with count_queries() as queries:
            await lock_row(session, User, user.id)
        assert queries.count == 1


async def test_locking_keeps_an_unsaved_change_even_without_autoflush(
    database: Database, factory: Factory
) -> None:
    user = await factory.user(name="Before")
    async with database.transaction() as session:
        loaded = await session.get(User, user.id)
        assert loaded is not None
        loaded.name = "After"
        with session.no_autoflush:
            locked = await lock_row(session, User, user.id)
        assert locked is loaded and locked.name == "After"
    async with database.transaction() as session:
        stored = await session.get(User, user.id)
        assert stored is not None and stored.name == "After"
