"""The request's database session: one per request, committed before the response is sent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from emanet.core.db import Database


async def get_database(request: Request) -> Database:
    """Async although it awaits nothing: FastAPI runs a plain ``def`` dependency in its thread pool, a
    thread hand-off on every request that asks for it."""
    database: Database = request.app.state.database
    return database


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    database: Database = request.app.state.database
    async with database.transaction() as session:
        yield session


# scope="function": the commit happens before the response leaves, so a 2xx always means committed.
DbSession = Annotated[AsyncSession, Depends(get_session, scope="function")]
Db = Annotated[Database, Depends(get_database)]
