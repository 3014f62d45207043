"""The one clock every rule reads. Tests replace it with a ``FrozenClock`` and move time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


class Clock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class FrozenClock(Clock):
    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime.now(UTC)

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta | None = None, **kwargs: float) -> datetime:
        self._now += delta or timedelta(**kwargs)
        return self._now

    def set(self, moment: datetime) -> None:
        self._now = moment


_clock: Clock = Clock()


def now() -> datetime:
    return _clock.now()


def use_clock(clock: Clock) -> Clock:
    """Install ``clock`` as the process clock and return the previous one."""
    global _clock
    previous, _clock = _clock, clock
    return previous


def as_utc(moment: datetime) -> datetime:
    """SQLite returns naive datetimes; everything Emanet stores is UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
