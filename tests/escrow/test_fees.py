"""Fee and split arithmetic: parts always add up to the whole, for every amount and currency exponent."""

from __future__ import annotations

from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from emanet.core.money import allocate, currency_exponent, percentage_of, round_half_up
from emanet.core.settings import FeeRule, Settings
from emanet.escrow import rules

SETTINGS = Settings(env="test")
amounts = st.integers(min_value=1, max_value=10**12)
currencies = st.sampled_from(["JPY", "TRY", "USD", "KWD", "NGN", "SAR", "INR"])


def test_currency_exponents_come_from_iso_4217() -> None:
    assert (currency_exponent("JPY"), currency_exponent("TRY"), currency_exponent("KWD")) == (0, 2, 3)


def test_half_up_rounding() -> None:
    from fractions import Fraction

    assert [round_half_up(Fraction(n, 2)) for n in (1, 3, 5, -1, -3)] == [1, 2, 3, -1, -2]
    assert percentage_of(12_345, 250) == 309  # 308.625 -> 309
    assert allocate(100, [1, 1, 1]) == [34, 33, 33]


@given(total=st.integers(0, 10**12), weights=st.lists(st.integers(0, 10**6), min_size=1, max_size=8))
def test_allocate_sums_to_the_whole(total: int, weights: list[int]) -> None:
    if sum(weights) == 0:
        return
    parts = allocate(total, weights)
    assert sum(parts) == total
    assert all(p >= 0 for p in parts)
    for part, weight in zip(parts, weights, strict=True):
        exact = total * weight / sum(weights)
        assert abs(part - exact) < 1.0001


@given(
    amount=amounts,
    currency=currencies,
    market=st.sampled_from(["product", "service", "project"]),
    payer=st.sampled_from(["buyer", "seller", "split"]),
    rating=st.none() | st.integers(1, 5),
    bps=st.integers(0, 10_000),
    fixed=st.integers(0, 10_000),
    penalty_to=st.sampled_from(["buyer", "platform"]),
)
@hsettings(max_examples=300)
def test_release_split_adds_up(
    amount: int,
    currency: str,
    market: str,
    payer: str,
    rating: int | None,
    bps: int,
    fixed: int,
    penalty_to: str,
) -> None:
    settings = SETTINGS.model_copy(
        update={
            "fee_rules": [FeeRule(market_type=market, percent_bps=bps, fixed={currency: fixed})],
            "satisfaction_penalty_to": penalty_to,
        }
    )
    fee = rules.platform_fee(settings, market, "general", currency, amount)
    assert 0 <= fee <= amount
    buyer_fee, seller_fee = rules.split_fee(fee, payer)
    assert buyer_fee + seller_fee == fee and min(buyer_fee, seller_fee) >= 0
    split = rules.release_split(
        amount=amount, buyer_fee=buyer_fee, seller_fee=seller_fee, rating=rating, settings=settings
    )
    assert split.total == amount + buyer_fee
    assert min(split.seller, split.platform, split.buyer) >= 0
    if rating in (None, 4, 5):
        assert split.seller == amount - seller_fee


@given(amount=amounts, payer=st.sampled_from(["buyer", "seller", "split"]), data=st.data())
def test_dispute_resolution_adds_up(amount: int, payer: str, data: st.DataObject) -> None:
    fee = rules.platform_fee(SETTINGS, "service", "general", "TRY", amount)
    buyer_fee, seller_fee = rules.split_fee(fee, payer)
    held = amount + buyer_fee
    refund = data.draw(st.integers(0, held))
    split = rules.resolution_split(
        held=held, buyer_refund=refund, amount=amount, buyer_fee=buyer_fee, seller_fee=seller_fee
    )
    assert split.total == held and split.buyer == refund
    assert min(split.seller, split.platform) >= 0


def test_min_and_max_fee_clamp() -> None:
    settings = SETTINGS.model_copy(
        update={
            "fee_rules": [
                FeeRule(market_type="product", percent_bps=100, minimum={"TRY": 500}, maximum={"TRY": 10_000})
            ]
        }
    )
    assert rules.platform_fee(settings, "product", "general", "TRY", 1_000) == 500
    assert rules.platform_fee(settings, "product", "general", "TRY", 10_000_000) == 10_000
    assert rules.platform_fee(settings, "product", "general", "TRY", 300) == 300  # never more than the price


def test_category_rule_beats_market_rule() -> None:
    assert rules.platform_fee(SETTINGS, "product", "digital_goods", "TRY", 10_000) == 500
    assert rules.platform_fee(SETTINGS, "product", "general", "TRY", 10_000) == 250
