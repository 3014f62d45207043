"""Test harness: a fresh PostgreSQL database per test process, migrated by the real Alembic migrations.

``EMANET_TEST_DB=sqlite`` runs the same suite on SQLite. With CI=true an unreachable PostgreSQL or Redis
fails the run instead of skipping.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, NoReturn

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from emanet.app import create_app
from emanet.core import clock as clock_module
from emanet.core.auth import issue_access_token
from emanet.core.db import Database
from emanet.core.migrate import upgrade
from emanet.core.settings import Settings
from emanet.models_registry import metadata
from tests.factories import Factory

# Processes the tests start (workers, the CLI, uvicorn) reuse compiled bytecode instead of recompiling every
# import: with PYTHONDONTWRITEBYTECODE set, a cold start on a loaded 2-core machine took over 30 s.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
os.environ.setdefault("PYTHONPYCACHEPREFIX", os.path.join(tempfile.gettempdir(), "emanet-test-pycache"))

PG_ADMIN_DSN = os.environ.get("EMANET_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("EMANET_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
BACKEND = os.environ.get("EMANET_TEST_DB", "postgres")
IN_CI = os.environ.get("CI", "").lower() == "true"
START = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


def _unavailable(what: str, exc: BaseException, *, in_ci: bool = IN_CI) -> NoReturn:
    """On CI a missing PostgreSQL or Redis fails the run; on a laptop the tests that need it are skipped."""
    message = f"{what} is not reachable: {exc!r}"
    if in_ci:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def worker_id_suffix(request: pytest.FixtureRequest) -> str:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    return f"{uuid.uuid4().hex[:8]}_{worker}"


@pytest.fixture(scope="session")
async def database_url(worker_id_suffix: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    if BACKEND == "sqlite":
        path = tmp_path_factory.mktemp("db") / "emanet.db"
        url = f"sqlite+aiosqlite:///{path}"
        await asyncio.to_thread(upgrade, url, "heads")
        yield url
        return
    name = f"emanet_t_{worker_id_suffix}"
    try:
        admin = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        _unavailable("PostgreSQL", exc)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        url = make_url(PG_ADMIN_DSN).set(drivername="postgresql+asyncpg", database=name)
        url = url.render_as_string(hide_password=False)
        await asyncio.to_thread(upgrade, url, "heads")
        yield url
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture(scope="session")
async def redis_url() -> AsyncIterator[str]:
    client = aioredis.from_url(REDIS_URL)
    try:
        await client.ping()
    except Exception as exc:
        _unavailable("Redis", exc)
    finally:
        await client.aclose()
    yield REDIS_URL


def make_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "env": "test",
        "database_url": database_url,
        "rate_limit_default": "10000/minute",
        "rate_limit_anonymous": "10000/minute",
        "log_json": True,
        "database_pool_size": 5,
        "run_worker_in_process": False,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Override in a test module or test to change settings for the ``app`` fixture."""
    return {}


@pytest.fixture
def settings(database_url: str, settings_overrides: dict[str, Any], tmp_path: Any) -> Settings:
    return make_settings(database_url, **{"storage_dir": str(tmp_path / "documents"), **settings_overrides})


@pytest.fixture(scope="session")
async def database(database_url: str) -> AsyncIterator[Database]:
    db = Database(make_settings(database_url))
    yield db
    await db.dispose()


@pytest.fixture(autouse=True)
async def _clean_tables(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    yield
    if "database" not in request.fixturenames:
        return
    await truncate_all(request.getfixturevalue("database").engine)


async def truncate_all(engine: Any) -> None:
    """Empty every table the migrations created and restart their sequences.

    On PostgreSQL only the tables that hold rows are emptied, with DELETE under the ``replica`` replication
    role so neither foreign keys nor the ledger's append-only row triggers fire. A TRUNCATE of every table
    costs ~0.7 s per test; this costs milliseconds.
    """
    async with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            tables = (
                (
                    await conn.execute(
                        text(
                            "SELECT tablename FROM pg_tables "
                            "WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
                        )
                    )
                )
                .scalars()
                .all()
            )
            filled = (
                (
                    await conn.execute(
                        text(
                            " UNION ALL ".join(
                                f"SELECT '{table}' WHERE EXISTS (SELECT 1 FROM \"{table}\")"
                                for table in tables
                            )
                        )
                    )
                )
                .scalars()
                .all()
            )
            if not filled:
                return
            await conn.execute(text("SET LOCAL session_replication_role = replica"))
            for table in filled:
                await conn.execute(text(f'DELETE FROM "{table}"'))
            sequences = (
                (
                    await conn.execute(
                        text(
                            "SELECT DISTINCT seq.oid::regclass::text FROM pg_class seq "
                            "JOIN pg_depend dep ON dep.objid = seq.oid "
                            "JOIN pg_class tab ON tab.oid = dep.refobjid "
                            "WHERE seq.relkind = 'S' AND tab.relname = ANY(:tables)"
                        ),
                        {"tables": list(filled)},
                    )
                )
                .scalars()
                .all()
            )
            for sequence in sequences:
                await conn.execute(text(f"ALTER SEQUENCE {sequence} RESTART"))
        else:
            existing = set(
                (await conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'table'")))
                .scalars()
                .all()
            )
            for table in reversed(metadata.sorted_tables):
                if table.name in existing:
                    await conn.execute(text(f"DELETE FROM {table.name}"))


@pytest.fixture(autouse=True)
def clock() -> Iterator[clock_module.FrozenClock]:
    frozen = clock_module.FrozenClock(START)
    previous = clock_module.use_clock(frozen)
    yield frozen
    clock_module.use_clock(previous)


@pytest.fixture
async def app(settings: Settings, database: Database) -> AsyncIterator[FastAPI]:
    application = create_app(settings, database=database)
    async with LifespanManager(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


@pytest.fixture
async def session(database: Database) -> AsyncIterator[AsyncSession]:
    """A session for arranging data and reading results; commits at the end of the block it is used in."""
    async with database.sessionmaker() as s:
        yield s


@pytest.fixture
def factory(database: Database) -> Factory:
    return Factory(database)


class QueryCounter:
    """The SQL statements sent while the block ran (transaction control excluded), and those SQLAlchemy
    compiled afresh instead of taking from its compiled cache."""

    def __init__(self) -> None:
        self.statements: list[str] = []
        self.compiled: list[str] = []

    @property
    def count(self) -> int:
        return len(self.statements)

    def __call__(self, _conn: Any, _cursor: Any, statement: str, _params: Any, context: Any, *_: Any) -> None:
        if not statement.lstrip().upper().startswith(_TRANSACTION_CONTROL):
            self.statements.append(statement)
            if context.cache_hit != context.dialect.CACHE_HIT:
                self.compiled.append(statement)


_TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")


@pytest.fixture
def count_queries(database: Database) -> Any:
    """``with count_queries() as queries: ...`` then ``queries.count``: for N+1 tests on list endpoints."""

    @contextmanager
    def counting() -> Iterator[QueryCounter]:
        counter = QueryCounter()
        event.listen(database.engine.sync_engine, "before_cursor_execute", counter)
        try:
            yield counter
        finally:
            event.remove(database.engine.sync_engine, "before_cursor_execute", counter)

    return counting


@pytest.fixture
def run_jobs(database: Database, settings: Settings) -> Any:
    """``await run_jobs()``: run every due background job in-process (handlers and the worker's own retry
    rules, with the test clock) until none is due; returns how many ran. Jobs retried later stay pending
    until the clock is moved past their ``run_at``."""
    from emanet.core.tasks import load_task_modules
    from emanet.core.worker import Worker

    load_task_modules()
    return Worker(database, settings, concurrency=4, name="test-worker").run_until_idle


def bearer(user: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_access_token(user)}"}
