"""Money: integer minor units of an ISO 4217 currency. One rounding rule and one allocation rule.

Rounding rule (documented in the README): a share of an amount is computed exactly as a fraction and
rounded **half-up** to the minor unit; when an amount is split into parts, the parts are allocated by the
largest-remainder method so they always add up to the whole (leftover units go to the parts with the
largest fractional remainders, ties to the earlier part).
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache

from babel.numbers import get_currency_precision, list_currencies

from emanet.core.errors import Unprocessable


@lru_cache
def known_currencies() -> frozenset[str]:
    return frozenset(list_currencies())


def currency_exponent(currency: str) -> int:
    """Digits after the decimal point (JPY 0, TRY 2, KWD 3), from Babel's CLDR data."""
    check_currency(currency)
    return int(get_currency_precision(currency))


def check_currency(currency: str) -> str:
    if currency not in known_currencies() or len(currency) != 3 or not currency.isupper():
        raise Unprocessable(f"Unknown ISO 4217 currency {currency!r}", code="invalid_currency")
    return currency


def round_half_up(value: Fraction) -> int:
    """Half-up (away from zero for .5) rounding of an exact fraction to an integer."""
    return divide_half_up(value.numerator, value.denominator)


def divide_half_up(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` (denominator > 0) rounded half-up, in integers only."""
    whole, remainder = divmod(abs(numerator), denominator)
    rounded = whole + (1 if 2 * remainder >= denominator else 0)
    return -rounded if numerator < 0 else rounded


def percentage_of(amount: int, basis_points: int) -> int:
    """``amount * bps / 10 000``, rounded half-up."""
    return round_half_up(Fraction(amount * basis_points, 10_000))


def allocate(total: int, weights: list[int]) -> list[int]:
    """Split ``total`` in proportion to ``weights``; the parts sum exactly to ``total``."""
    if total < 0:
        raise ValueError("allocate() takes a non-negative total")
    if not weights or any(w < 0 for w in weights) or sum(weights) == 0:
        raise ValueError("allocate() needs non-negative weights with a positive sum")
    weight_sum = sum(weights)
    exact = [Fraction(total * w, weight_sum) for w in weights]
    parts = [int(e) for e in exact]
    leftover = total - sum(parts)
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - parts[i]), i))
    for i in order[:leftover]:
        parts[i] += 1
    return parts


def format_amount(amount: int, currency: str) -> str:
    exponent = currency_exponent(currency)
    if exponent == 0:
        return f"{amount} {currency}"
    sign = "-" if amount < 0 else ""
    whole, fraction = divmod(abs(amount), 10**exponent)
    return f"{sign}{whole}.{fraction:0{exponent}d} {currency}"
