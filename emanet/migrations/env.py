"""Alembic environment: async engine from EMANET_DATABASE_URL (or the -x url=… / config override)."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from emanet.core.db import make_engine
from emanet.core.settings import Settings, get_settings
from emanet.models_registry import metadata

config = context.config


def _settings() -> Settings:
    url = config.attributes.get("database_url") or context.get_x_argument(as_dictionary=True).get("url")
    settings = get_settings()
    return settings.model_copy(update={"database_url": url}) if url else settings


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    engine = make_engine(_settings())
    async with engine.connect() as connection:
        await connection.run_sync(_run)
    await engine.dispose()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
    else:
        asyncio.run(_run_async())


if context.is_offline_mode():
    context.configure(url=_settings().database_url, target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
