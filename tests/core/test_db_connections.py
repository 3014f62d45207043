"""What every Emanet connection to PostgreSQL is set up with."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from emanet.core.db import Database
from emanet.core.settings import Settings
from tests.conftest import make_settings


@pytest.mark.postgres_only
async def test_connections_run_without_jit(database: Database) -> None:
    async with database.transaction() as session:
        server_default = (
            await session.execute(text("SELECT boot_val FROM pg_settings WHERE name = 'jit'"))
        ).scalar_one()
        ours = (await session.execute(text("SHOW jit"))).scalar_one()
    assert server_default == "on"  # so the connection's own setting is what turns it off
    assert ours == "off"


async def _backends_serving(database: Database, requests: int, *, all_at_once: bool) -> set[int]:
    """The PostgreSQL backends that serve ``requests`` concurrent transactions. ``all_at_once``: each holds
    its connection until every one has its own (otherwise each holds it for 50 ms)."""
    barrier = asyncio.Barrier(requests) if all_at_once else None

    async def one() -> int:
        async with database.transaction() as session:
            pid: int = (await session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            if barrier is not None:
                await barrier.wait()
            else:
                await asyncio.sleep(0.05)
            return pid

    async with asyncio.timeout(20):
        return set(await asyncio.gather(*[one() for _ in range(requests)]))


@pytest.mark.postgres_only
async def test_default_pool_keeps_its_connections_under_load(database_url: str) -> None:
    """A burst the pool can hold opens its connections once; the next burst reuses every one of them (a
    connection above the pool would be closed on return and opened again, a PostgreSQL process each time)."""
    defaults = Settings.model_fields
    database = Database(
        make_settings(
            database_url,
            database_pool_size=defaults["database_pool_size"].default,
            database_max_overflow=defaults["database_max_overflow"].default,
        )
    )
    pool_size = database.settings.database_pool_size
    try:
        first = await _backends_serving(database, pool_size, all_at_once=True)
        second = await _backends_serving(database, pool_size, all_at_once=True)
        assert len(first) == pool_size
        assert second == first
        # More requests than connections wait for one: the process never holds more than its pool.
        crowd = await _backends_serving(database, pool_size + 5, all_at_once=False)
        assert crowd <= first
    finally:
        await database.dispose()
