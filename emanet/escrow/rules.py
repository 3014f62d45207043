"""Pure escrow rules: the transition table, fees and the satisfaction split. No I/O here."""

from __future__ import annotations

from dataclasses import dataclass

from emanet.core.money import allocate, percentage_of
from emanet.core.settings import CategoryRule, FeeRule, Settings
from emanet.escrow.models import EscrowStatus as S
from emanet.escrow.models import FeePayer

BUYER, SELLER, ADMIN, SYSTEM = "buyer", "seller", "admin", "system"

# (from, to) -> who may make that move. The one table the state machine is checked against.
TRANSITIONS: dict[tuple[S, S], frozenset[str]] = {
    (S.pending_payment, S.partially_funded): frozenset({SYSTEM}),
    (S.pending_payment, S.funded): frozenset({SYSTEM}),
    (S.partially_funded, S.funded): frozenset({SYSTEM}),
    (S.pending_payment, S.cancelled): frozenset({BUYER, SELLER, ADMIN}),
    (S.partially_funded, S.cancelled): frozenset({BUYER, SELLER, ADMIN}),
    (S.pending_payment, S.expired): frozenset({SYSTEM}),
    (S.partially_funded, S.expired): frozenset({SYSTEM}),
    (S.funded, S.delivered): frozenset({SELLER, ADMIN, SYSTEM}),
    (S.funded, S.released): frozenset({BUYER, ADMIN, SYSTEM}),
    (S.delivered, S.released): frozenset({BUYER, ADMIN, SYSTEM}),
    (S.funded, S.refunded): frozenset({BUYER, SELLER, ADMIN}),
    (S.funded, S.disputed): frozenset({BUYER, SELLER}),
    (S.delivered, S.disputed): frozenset({BUYER, SELLER}),
    (S.disputed, S.released): frozenset({ADMIN}),
    (S.disputed, S.refunded): frozenset({ADMIN}),
    (S.disputed, S.partially_refunded): frozenset({ADMIN}),
}
TERMINAL = frozenset({S.released, S.refunded, S.partially_refunded, S.cancelled, S.expired})
HOLDING = frozenset({S.partially_funded, S.funded, S.delivered, S.disputed})


def allowed_targets(source: S) -> list[str]:
    return sorted(target.value for (start, target) in TRANSITIONS if start == source)


def fee_rule_for(settings: Settings, market_type: str, category: str) -> FeeRule | None:
    candidates = [
        r for r in settings.fee_rules if r.market_type == market_type and r.category in (None, category)
    ]
    # A rule for the category beats the market type's general rule.
    return max(candidates, key=lambda r: r.category is not None, default=None)


def platform_fee(settings: Settings, market_type: str, category: str, currency: str, amount: int) -> int:
    rule = fee_rule_for(settings, market_type, category)
    if rule is None:
        return 0
    fee = percentage_of(amount, rule.percent_bps) + rule.fixed.get(currency, 0)
    if currency in rule.minimum:
        fee = max(fee, rule.minimum[currency])
    if currency in rule.maximum:
        fee = min(fee, rule.maximum[currency])
    return max(0, min(fee, amount))


def split_fee(fee: int, payer: str) -> tuple[int, int]:
    """(buyer's share, seller's share) of the platform fee."""
    if payer == FeePayer.buyer:
        return fee, 0
    if payer == FeePayer.seller:
        return 0, fee
    buyer_share, seller_share = allocate(fee, [1, 1])
    return buyer_share, seller_share


def category_rule(settings: Settings, category: str) -> CategoryRule | None:
    return settings.category_rules.get(category)


@dataclass(frozen=True)
class ReleaseSplit:
    seller: int
    platform: int
    buyer: int

    @property
    def total(self) -> int:
        return self.seller + self.platform + self.buyer


def release_split(
    *, amount: int, buyer_fee: int, seller_fee: int, rating: int | None, settings: Settings
) -> ReleaseSplit:
    """How a fully funded escrow (amount + buyer_fee) is shared on release.

    The seller gets the price less their fee share, less a penalty from the satisfaction table
    (seed 002); the penalty goes to the buyer or the platform by policy. Parts add up to the whole.
    """
    seller_gross = amount - seller_fee
    bps = settings.satisfaction_penalty_bps.get(rating, 0) if rating is not None else 0
    penalty = min(percentage_of(seller_gross, bps), seller_gross)
    to_buyer = penalty if settings.satisfaction_penalty_to == "buyer" else 0
    return ReleaseSplit(
        seller=seller_gross - penalty, platform=buyer_fee + seller_fee + penalty - to_buyer, buyer=to_buyer
    )


def resolution_split(
    *, held: int, buyer_refund: int, amount: int, buyer_fee: int, seller_fee: int
) -> ReleaseSplit:
    """A dispute outcome: ``buyer_refund`` goes back to the buyer; the rest is shared between seller and
    platform in the proportion a normal release would use."""
    if not 0 <= buyer_refund <= held:
        raise ValueError("refund must be between 0 and what is held")
    remaining = held - buyer_refund
    seller_weight, platform_weight = amount - seller_fee, buyer_fee + seller_fee
    if remaining == 0 or seller_weight + platform_weight == 0:
        return ReleaseSplit(seller=0, platform=0, buyer=buyer_refund)
    seller, platform = allocate(remaining, [seller_weight, platform_weight])
    return ReleaseSplit(seller=seller, platform=platform, buyer=buyer_refund)
