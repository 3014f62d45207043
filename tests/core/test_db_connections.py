"""What every Emanet connection to PostgreSQL is set up with."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from emanet.core.db import Database


@pytest.mark.postgres_only
async def test_connections_run_without_jit(database: Database) -> None:
    async with database.transaction() as session:
        server_default = (
            await session.execute(text("SELECT boot_val FROM pg_settings WHERE name = 'jit'"))
        ).scalar_one()
        ours = (await session.execute(text("SHOW jit"))).scalar_one()
    assert server_default == "on"  # so the connection's own setting is what turns it off
    assert ours == "off"
