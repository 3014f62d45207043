"""Transaction-scoped named locks: PostgreSQL advisory locks; on SQLite every writing transaction already
holds the database's single write lock (``BEGIN IMMEDIATE``), so there is nothing more to take."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.types import Text

# Taken in the order of their keys, so two transactions locking overlapping sets cannot deadlock.
_LOCK_IN_ORDER = text(
    "SELECT pg_advisory_xact_lock(key) FROM"
    " (SELECT DISTINCT hashtextextended(name, 0) AS key FROM unnest(:names) AS name ORDER BY key) AS keys"
).bindparams(bindparam("names", type_=ARRAY(Text)))


async def lock_names(session: AsyncSession, names: Iterable[str]) -> None:
    """Block until no other transaction holds any of ``names``; released when this transaction ends."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(_LOCK_IN_ORDER, {"names": sorted(set(names))})


async def lock_name(session: AsyncSession, name: str) -> None:
    await lock_names(session, [name])
