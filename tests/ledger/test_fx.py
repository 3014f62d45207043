from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from emanet.core.db import Database
from emanet.core.money import divide_half_up, round_half_up
from emanet.ledger import accounts
from emanet.ledger.fx import convert, convert_minor
from emanet.ledger.models import JournalEntry
from emanet.ledger.service import EntryDraft, Leg, credit, debit, post_entries, post_entry

CLEARING = accounts.provider_clearing("sandbox")


@given(st.integers(-(10**15), 10**15), st.integers(1, 10**9))
def test_integer_half_up_division_is_exact_half_up_rounding(numerator: int, denominator: int) -> None:
    assert divide_half_up(numerator, denominator) == round_half_up(Fraction(numerator, denominator))
    exact = Fraction(numerator, denominator)
    assert abs(divide_half_up(numerator, denominator) - exact) <= Fraction(1, 2)


def test_minor_units_follow_each_currency_exponent_and_round_half_up() -> None:
    assert convert_minor(100_000, "TRY", "USD", Decimal("0.029")) == 2_900  # 1,000.00 TRY → 29.00 USD
    assert convert_minor(150, "JPY", "USD", Decimal("0.0067")) == 101  # ¥150 → 1.005 USD → 1.01
    assert convert_minor(-150, "JPY", "USD", Decimal("0.0067")) == -101  # away from zero
    assert convert_minor(1_000, "KWD", "USD", Decimal("3.25")) == 325  # 1.000 KWD → 3.25 USD
    assert convert_minor(100, "USD", "JPY", Decimal("1") / Decimal("0.0067")) == 149  # 1.00 USD → ¥149.25


async def test_conversion_names_its_rate_and_source() -> None:
    converted = await convert(100_000, "TRY", "USD")
    assert converted is not None
    assert {k: converted[k] for k in ("amount", "currency", "rate", "source")} == {
        "amount": 2_900,
        "currency": "USD",
        "rate": "0.029",
        "source": "settings",
    }
    assert converted["as_of"]
    assert await convert(500, "USD", "USD") == {
        "amount": 500,
        "currency": "USD",
        "rate": "1",
        "source": "identity",
    }
    assert await convert(500, "CHF", "USD") is None  # no rate configured: the entry stores none


def _legs(escrow: str, amount: int) -> list[Leg]:
    return [debit(CLEARING, amount), credit(accounts.escrow_account(escrow), amount)]


async def test_entries_store_the_conversion_one_by_one_or_in_a_batch(database: Database) -> None:
    async with database.transaction() as session:
        await post_entry(session, "fx:single", "TRY", _legs("esc_fx1", 12_345))
        await post_entries(
            session,
            [
                EntryDraft("fx:batch:try", "TRY", _legs("esc_fx2", 12_345)),
                EntryDraft("fx:batch:usd", "USD", _legs("esc_fx3", 700)),
                EntryDraft("fx:batch:chf", "CHF", _legs("esc_fx4", 700)),
            ],
        )
    async with database.transaction() as session:
        rows = await session.execute(
            select(JournalEntry.reference, JournalEntry.fx).where(JournalEntry.reference.like("fx:%"))
        )
        stored = dict(rows.tuples().all())
    # 123.45 TRY at 0.029 = 3.58005 USD, 358 cents, the same on both paths
    assert stored["fx:single"]["amount"] == stored["fx:batch:try"]["amount"] == 358
    assert stored["fx:single"]["rate"] == stored["fx:batch:try"]["rate"] == "0.029"
    assert stored["fx:batch:usd"]["amount"] == 700 and stored["fx:batch:usd"]["source"] == "identity"
    assert stored["fx:batch:chf"] is None
