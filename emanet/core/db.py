"""Database engine, the declarative base, id generation and the per-request session."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import orjson
from sqlalchemy import JSON, BigInteger, DateTime, Integer, MetaData, event, select
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.pool import NullPool
from sqlalchemy.types import TypeDecorator
from ulid import ULID

from emanet.core import clock
from emanet.core.settings import Settings, get_settings

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_id(prefix: str) -> str:
    """Opaque, time-sortable id with a type prefix (``esc_01J…``)."""
    return f"{prefix}_{str(ULID()).lower()}"


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on PostgreSQL and SQLite alike."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return clock.as_utc(value) if value is not None else None

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value


# BIGINT on PostgreSQL, INTEGER on SQLite (so an integer primary key is the rowid and autoincrements).
BigInt = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON(), list[Any]: JSON(), int: BigInt}


class TimestampMixin:
    created_at: Mapped[datetime] = mapped_column(default=lambda: clock.now(), index=False)
    updated_at: Mapped[datetime] = mapped_column(default=lambda: clock.now(), onupdate=lambda: clock.now())


def _json_serializer(value: Any) -> str:
    return orjson.dumps(value).decode()


def make_engine(settings: Settings | None = None, **overrides: Any) -> AsyncEngine:
    settings = settings or get_settings()
    kwargs: dict[str, Any] = {
        "echo": settings.database_echo,
        "json_serializer": _json_serializer,
        "json_deserializer": orjson.loads,
    }
    if settings.is_sqlite:
        kwargs["connect_args"] = {"timeout": 30}
        database_file = make_url(settings.database_url).database
        if not database_file or database_file == ":memory:" or ":memory:" in settings.database_url:
            kwargs["poolclass"] = NullPool
        else:
            Path(database_file).parent.mkdir(parents=True, exist_ok=True)  # ./var on a fresh clone
    else:
        # No pre-ping: it costs a round trip on every checkout; a dropped connection is invalidated on its
        # first error instead, and recycling bounds a connection's age.
        kwargs.update(
            pool_size=settings.database_pool_size,
            max_overflow=settings.database_max_overflow,
            pool_recycle=1800,
            # No JIT: a stale row estimate can lift a small OLTP query over jit_above_cost, and then every run
            # compiles it with LLVM first (12-40 ms; seen in the ledger's balance trigger, migration 0008).
            # The heaviest query we run, the dashboard stats over 1,000,000 escrows, took the same time
            # with JIT on or off (median 36.5-37.3 ms).
            connect_args={"server_settings": {"jit": "off"}},
        )
    kwargs.update(overrides)
    engine = create_async_engine(settings.database_url, **kwargs)
    if settings.is_sqlite:
        _configure_sqlite(engine)
    return engine


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # aiosqlite: let SQLAlchemy emit BEGIN itself so "BEGIN IMMEDIATE" serialises writers.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        # Writers take the lock up front: SQLite's stand-in for SELECT … FOR UPDATE.
        connection.exec_driver_sql("BEGIN IMMEDIATE")


ModelT = TypeVar("ModelT")
StateT = TypeVar("StateT")


def transaction_state(
    session: AsyncSession, key: str, make: Callable[[], StateT], *, per_savepoint: bool = False
) -> StateT:
    """State that lives as long as the session's current transaction (or savepoint, when
    ``per_savepoint``: what a rolled-back savepoint did, such as taking row locks, is undone with it);
    the next transaction starts from ``make()``. Call it once the transaction has begun (after a statement
    or ``await session.connection()``): before that there is no transaction to keep the state for."""
    transaction = (session.get_nested_transaction() if per_savepoint else None) or session.get_transaction()
    held: tuple[Any, StateT] | None = session.info.get(key)
    if held is None or transaction is None or held[0] is not transaction:
        held = (transaction, make())
        session.info[key] = held
    return held[1]


def _locked_rows(session: AsyncSession) -> dict[tuple[type[Any], Any], Any]:
    """The rows this (sub)transaction has locked, held strongly (the identity map would let go of an
    unmodified object)."""
    return transaction_state(session, "emanet.locked_rows", dict, per_savepoint=True)


async def lock_row(session: AsyncSession, model: type[ModelT], key: Any) -> ModelT | None:
    """``SELECT … FOR UPDATE`` of one row by primary key, refreshed from the database (SQLite: the transaction
    already holds the write lock). Once per (sub)transaction: a row this transaction locked cannot change
    under it, so asking again returns the same object without a round trip."""
    locked: ModelT | None = _locked_rows(session).get((model, key))
    if locked is not None:
        return locked
    mapper = model.__mapper__  # type: ignore[attr-defined]
    loaded = session.sync_session.identity_map.get(mapper.identity_key_from_primary_key([key]))
    if loaded is not None and loaded in session.dirty:
        await session.flush([loaded])  # the refresh below would discard its unsaved changes (no_autoflush)
    primary_key = mapper.primary_key[0]
    row: ModelT | None = (
        await session.execute(
            select(model)
            .where(primary_key == key)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()
    if row is not None:
        _locked_rows(session)[(model, key)] = row
    return row


def upsert(session: AsyncSession, model: Any) -> Any:
    """``INSERT … ON CONFLICT`` for the session's dialect (PostgreSQL and SQLite share the API)."""
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(model)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(model)


class Database:
    """Holds the engine and session factory of one process."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.engine = make_engine(self.settings)
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False, autoflush=True)

    async def dispose(self) -> None:
        await self.engine.dispose()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A unit of work: commits when the block succeeds, rolls back otherwise."""
        async with self.sessionmaker() as session:
            try:
                yield session
                await session.commit()
            except BaseException:
                await session.rollback()
                raise
