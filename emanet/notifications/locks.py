"""A transaction-scoped named lock: PostgreSQL advisory lock; on SQLite every writing transaction already
holds the database's single write lock (``BEGIN IMMEDIATE``), so there is nothing more to take."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession


async def lock_name(session: AsyncSession, name: str) -> None:
    """Block until no other transaction holds ``name``; released when this transaction ends."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:name, 0))"), {"name": name}
        )
