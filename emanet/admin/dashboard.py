"""The admin dashboard's figures, computed in a few indexed queries and cached for five minutes.

Every figure is over rolling windows ending now (``clock.now()``): the last 24 hours, 7 days and 30 days.
Rates and the average time to release follow the 30-day *cohort* — the escrows created in the last 30 days —
so each figure reads an index range of recent rows instead of the whole table, and stays fast however
many escrows the platform has accumulated (the benchmark times it on 1,000,000).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Protocol

from pydantic import BaseModel, Field
from sqlalchemy import Float, cast, func, literal, select
from sqlalchemy.ext.asyncio import AsyncSession

from emanet.core import clock
from emanet.core.db import UTCDateTime
from emanet.escrow import rules
from emanet.escrow.models import Escrow, EscrowStatus
from emanet.users.models import User

S = EscrowStatus
CACHE_SECONDS = 300
SUCCEEDED = (S.released,)
FAILED = (S.cancelled, S.expired, S.refunded, S.partially_refunded)


class WindowCounts(BaseModel):
    last_24_hours: int
    last_7_days: int
    last_30_days: int


class CurrencyVolume(BaseModel):
    currency: str
    created_last_24_hours: int = Field(description="Sum of escrow prices created in the window, minor units")
    created_last_7_days: int
    created_last_30_days: int
    funded_last_30_days: int = Field(description="Paid in by buyers, escrows created in the last 30 days")
    released_last_30_days: int = Field(description="Released to sellers, escrows created in the last 30 days")
    held_now: int = Field(description="Held right now by every open escrow in this currency")


class Outcomes(BaseModel):
    """Of the escrows created in the last 30 days that are closed: released is a success; cancelled,
    expired, refunded and partially refunded are failures. Rates are fractions of the closed ones."""

    closed: int
    succeeded: int
    failed: int
    success_rate: float | None
    failure_rate: float | None


class UserGrowth(BaseModel):
    total: int
    new: WindowCounts
    per_day: list[int] = Field(description="New users per day for the last 30 days, oldest first")


class DashboardStats(BaseModel):
    generated_at: datetime
    cached: bool = Field(description="Served from the 5-minute cache; ask with fresh=true to recompute")
    escrows_created: WindowCounts
    volume: list[CurrencyVolume]
    outcomes: Outcomes
    average_time_to_release_hours: float | None = Field(
        description="Creation to release, over the escrows created in the last 30 days and released"
    )
    active_disputes: int
    open_escrows: int = Field(description="Escrows that are not closed (pending payment up to disputed)")
    users: UserGrowth


def _is_postgres(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _seconds_between(session: AsyncSession, later: Any, earlier: Any) -> Any:
    if _is_postgres(session):
        return func.extract("epoch", later - earlier)
    return (func.julianday(later) - func.julianday(earlier)) * 86_400.0


def _release_time_sum(session: AsyncSession, released: Any) -> Any:
    """Sum of creation-to-release times: an interval on PostgreSQL (summing intervals is several times
    cheaper per row than converting each one to epoch seconds), seconds on SQLite."""
    if _is_postgres(session):
        return func.sum(Escrow.closed_at - Escrow.created_at).filter(released)
    seconds = cast(_seconds_between(session, Escrow.closed_at, Escrow.created_at), Float)
    return func.sum(seconds).filter(released)


def _seconds(value: Any) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value or 0)


async def compute_stats(session: AsyncSession) -> DashboardStats:
    """Four queries: the 30-day cohort by currency, open escrows by currency, disputes, and users."""
    now = clock.now()
    day, week, month = now - timedelta(days=1), now - timedelta(days=7), now - timedelta(days=30)
    created, status = Escrow.created_at, Escrow.status
    released = status.in_(SUCCEEDED)

    def counted(condition: Any) -> Any:
        return func.count().filter(condition)

    def summed(value: Any, condition: Any) -> Any:
        return func.coalesce(func.sum(value).filter(condition), 0)

    cohort = (
        await session.execute(
            select(
                Escrow.currency,
                counted(created >= day),
                counted(created >= week),
                func.count(),
                summed(Escrow.amount, created >= day),
                summed(Escrow.amount, created >= week),
                func.coalesce(func.sum(Escrow.amount), 0),
                func.coalesce(func.sum(Escrow.funded_amount), 0),
                func.coalesce(func.sum(Escrow.released_amount), 0),
                counted(released),
                counted(status.in_(FAILED)),
                _release_time_sum(session, released),
            )
            .where(created >= month)
            .group_by(Escrow.currency)
        )
    ).all()
    held_now = Escrow.funded_amount - Escrow.released_amount - Escrow.refunded_amount
    holding = dict(
        (
            await session.execute(
                select(Escrow.currency, func.sum(held_now))
                .where(status.in_(rules.HOLDING))
                .group_by(Escrow.currency)
            )
        )
        .tuples()
        .all()
    )
    by_status = dict(
        (
            await session.execute(
                select(status, func.count())
                .where(status.in_([S.pending_payment, *rules.HOLDING]))
                .group_by(status)
            )
        )
        .tuples()
        .all()
    )
    users_created = User.created_at
    user_total, user_day, user_week, user_month = (
        await session.execute(
            select(
                func.count(),
                counted(users_created >= day),
                counted(users_created >= week),
                counted(users_created >= month),
            )
        )
    ).one()
    days_ago = func.floor(_seconds_between(session, literal(now, UTCDateTime()), users_created) / 86_400)
    joined = (
        (
            await session.execute(
                select(days_ago, func.count()).where(users_created >= month).group_by(days_ago)
            )
        )
        .tuples()
        .all()
    )

    per_day = [0] * 30
    for ago, count in joined:
        per_day[29 - min(29, max(0, int(ago)))] += int(count)
    succeeded = sum(int(row[9]) for row in cohort)
    failed = sum(int(row[10]) for row in cohort)
    closed = succeeded + failed
    release_seconds = sum(_seconds(row[11]) for row in cohort)
    currencies = sorted({row[0] for row in cohort} | set(holding))
    rows_by_currency = {row[0]: row for row in cohort}
    volume = []
    for currency in currencies:
        row = rows_by_currency.get(currency)
        volume.append(
            CurrencyVolume(
                currency=currency,
                created_last_24_hours=int(row[4]) if row else 0,
                created_last_7_days=int(row[5]) if row else 0,
                created_last_30_days=int(row[6]) if row else 0,
                funded_last_30_days=int(row[7]) if row else 0,
                released_last_30_days=int(row[8]) if row else 0,
                held_now=int(holding.get(currency) or 0),
            )
        )
    return DashboardStats(
        generated_at=now,
        cached=False,
        escrows_created=WindowCounts(
            last_24_hours=sum(int(r[1]) for r in cohort),
            last_7_days=sum(int(r[2]) for r in cohort),
            last_30_days=sum(int(r[3]) for r in cohort),
        ),
        volume=volume,
        outcomes=Outcomes(
            closed=closed,
            succeeded=succeeded,
            failed=failed,
            success_rate=round(succeeded / closed, 4) if closed else None,
            failure_rate=round(failed / closed, 4) if closed else None,
        ),
        average_time_to_release_hours=round(release_seconds / succeeded / 3600, 2) if succeeded else None,
        active_disputes=int(by_status.get(S.disputed, 0)),
        open_escrows=sum(int(count) for count in by_status.values()),
        users=UserGrowth(
            total=int(user_total),
            per_day=per_day,
            new=WindowCounts(
                last_24_hours=int(user_day), last_7_days=int(user_week), last_30_days=int(user_month)
            ),
        ),
    )


class _Redis(Protocol):
    async def get(self, name: str) -> bytes | None: ...
    async def set(self, name: str, value: bytes, ex: int | None = None) -> Any: ...


class StatsCache:
    """Redis when configured (shared by every server process), otherwise this process's memory."""

    def __init__(self, redis: _Redis | None, key_prefix: str, seconds: int = CACHE_SECONDS) -> None:
        self.redis = redis
        self.key = f"{key_prefix}:admin:dashboard_stats"
        self.seconds = seconds
        self._local: tuple[datetime, bytes] | None = None

    async def get(self) -> DashboardStats | None:
        if self.redis is not None:
            raw = await self.redis.get(self.key)
        elif self._local is not None and clock.now() < self._local[0]:
            raw = self._local[1]
        else:
            raw = None
        if raw is None:
            return None
        return DashboardStats.model_validate_json(raw).model_copy(update={"cached": True})

    async def put(self, stats: DashboardStats) -> None:
        raw = stats.model_dump_json().encode()
        if self.redis is not None:
            await self.redis.set(self.key, raw, ex=self.seconds)
        else:
            self._local = (clock.now() + timedelta(seconds=self.seconds), raw)


async def dashboard_stats(session: AsyncSession, cache: StatsCache, *, fresh: bool) -> DashboardStats:
    """The cached figures unless ``fresh``; a recomputation refreshes the cache."""
    if not fresh:
        hit = await cache.get()
        if hit is not None:
            return hit
    stats = await compute_stats(session)
    await cache.put(stats)
    return stats
