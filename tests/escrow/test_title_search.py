"""The escrow lists' title search (`q`): a substring of the title, served on PostgreSQL by a trigram index."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import httpx
import pytest
from alembic import command
from sqlalchemy import make_url

from emanet.core.db import Database
from emanet.core.migrate import alembic_config, upgrade
from tests.conftest import PG_ADMIN_DSN, bearer
from tests.escrow.states import parties
from tests.factories import Factory, create_escrow


async def test_a_title_is_found_by_any_part_of_it_in_any_case(
    client: httpx.AsyncClient, factory: Factory, database: Database
) -> None:
    p = await parties(factory)
    lens = await create_escrow(database, p.buyer, p.seller, title="Vintage Camera Lens 50mm")
    await create_escrow(database, p.buyer, p.seller, title="Sofa")
    for headers, path in ((bearer(p.buyer), "/api/v1/escrows"), (bearer(p.admin), "/api/v1/admin/escrows")):
        for term in ("camera lens", "LENS 50", "ens 5"):
            found = (await client.get(path, headers=headers, params={"q": term})).json()["data"]
            assert [e["id"] for e in found] == [lens.id], (path, term)
        assert (await client.get(path, headers=headers, params={"q": "sofa lens"})).json()["data"] == []


@pytest.mark.postgres_only
async def test_the_trigram_migration_goes_down_and_up_again() -> None:
    name = f"emanet_t_trgm_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = make_url(PG_ADMIN_DSN).set(drivername="postgresql+asyncpg", database=name)
    rendered = url.render_as_string(hide_password=False)
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)

    async def title_indexes() -> dict[str, str]:
        connection = await asyncpg.connect(dsn)
        try:
            rows = await connection.fetch(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'escrows'"
                " AND indexname LIKE 'ix_escrows_title%'"
            )
        finally:
            await connection.close()
        return {row["indexname"]: row["indexdef"] for row in rows}

    try:
        await asyncio.to_thread(upgrade, rendered, "heads")
        [(index, definition)] = (await title_indexes()).items()
        assert index == "ix_escrows_title_trgm"
        assert "USING gin (lower((title)::text) gin_trgm_ops)" in definition
        await asyncio.to_thread(command.downgrade, alembic_config(rendered), "0008")
        assert list(await title_indexes()) == ["ix_escrows_title_lower"]
        await asyncio.to_thread(upgrade, rendered, "heads")
        assert list(await title_indexes()) == ["ix_escrows_title_trgm"]
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
