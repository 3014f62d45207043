"""Currency conversion for display and reporting only: money held in escrow is never converted.

Rates come from a ``RateProvider``; the conversion used for an entry is stored on the entry (``fx``), so a
report always shows the rate that was in force. The default provider reads fixed rates from settings
(``EMANET_FX_RATES``, units of the reporting currency per unit of the other, as decimal strings).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from functools import lru_cache
from typing import Any, Protocol

from emanet.core import clock
from emanet.core.money import currency_exponent, divide_half_up
from emanet.core.settings import get_settings


@dataclass(frozen=True)
class Rate:
    base: str
    quote: str
    value: Decimal  # units of quote per unit of base
    source: str
    as_of: datetime


class RateProvider(Protocol):
    async def rate(self, base: str, quote: str) -> Rate | None: ...


@lru_cache(maxsize=16)
def _settings_table(rates: tuple[tuple[str, str], ...], reporting: str) -> dict[str, Decimal]:
    return {**{k: Decimal(v) for k, v in rates}, reporting: Decimal(1)}


class SettingsRateProvider:
    """Fixed rates from settings: {"TRY": "0.029", …} in units of the reporting currency."""

    async def rate(self, base: str, quote: str) -> Rate | None:
        settings = get_settings()
        table = _settings_table(tuple(settings.fx_rates.items()), settings.reporting_currency)
        if base not in table or quote not in table:
            return None
        return Rate(base, quote, table[base] / table[quote], "settings", clock.now())


_provider: RateProvider = SettingsRateProvider()


def use_rate_provider(provider: RateProvider) -> None:
    global _provider
    _provider = provider


def convert_minor(amount: int, base: str, quote: str, rate: Decimal) -> int:
    """Convert minor units of ``base`` into minor units of ``quote`` (half-up)."""
    factor = _minor_factor(base, quote, rate)
    return divide_half_up(amount * factor.numerator, factor.denominator)


@lru_cache(maxsize=256)
def _minor_factor(base: str, quote: str, rate: Decimal) -> Fraction:
    return Fraction(rate) * Fraction(10 ** currency_exponent(quote), 10 ** currency_exponent(base))


Conversion = Callable[[int], dict[str, Any] | None]


async def converter(base: str, quote: str) -> Conversion:
    """Amounts of ``base`` into ``quote`` at one rate, looked up once (a batch of entries shares it)."""
    if base == quote:
        return lambda amount: {"amount": amount, "currency": quote, "rate": "1", "source": "identity"}
    rate = await _provider.rate(base, quote)
    if rate is None:
        return lambda amount: None
    value = rate.value
    fixed = {"currency": quote, "rate": str(value), "source": rate.source, "as_of": rate.as_of.isoformat()}
    return lambda amount: {"amount": convert_minor(amount, base, quote, value), **fixed}


async def convert(amount: int, base: str, quote: str) -> dict[str, Any] | None:
    return (await converter(base, quote))(amount)


async def reporting_converter(currency: str) -> Conversion:
    """An entry's volume in the reporting currency, stored with the entry that used the rate."""
    return await converter(currency, get_settings().reporting_currency)
