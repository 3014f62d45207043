"""Reconciliation: what a provider recorded on a day against our payments, refunds and payouts.

Each of our records is matched to the provider's by the provider reference (or by our own id when the
provider echoes it as ``merchant_reference``). We learn of a movement when or after the provider makes it,
never before, so a record near midnight may sit on the provider's day D and on our day D+1:

- **missing**: the provider has it on day D and we have no such record on day D or D+1;
- **extra**: we have it on day D and the provider has no such record on day D-1 or D;
- **mismatched**: both have it, with different amounts (or currencies, or fees when we know ours).

That is the ``listing`` method, for providers whose adapter overrides ``list_settlements``. A provider that
publishes no listing (Jetcheckout) is reconciled ``per_record``: the provider is asked about each of OUR
captured payments of day D with its status query (``get_payment``), at most ``PER_RECORD_CONCURRENCY`` at a
time, each with the adapter's own retries:

- **extra**: the provider says the payment is not captured (not succeeded, refunded or partially refunded);
- **mismatched**: it is captured with a different amount, currency or fee (the fee when both know it);
- **unverified**: the provider could not answer (``ProviderUnavailable`` and every other ``ProviderError``),
  or answered without an amount; the item carries the error code and the report counts it.

Per record, **missing** cannot be found (nothing asks the provider what it has that we don't), and refunds
and payouts are not checked: the provider interface has no refund lookup, and a payout lookup
(``get_payout``) reports no amount. The report's ``notes`` say so, with how many were left unchecked.

The report is stored (``reconciliation_reports``, with its ``method``) and shown to admins and support. No
database transaction is open while a provider is asked anything.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from emanet.core.db import Database
from emanet.core.errors import ProviderError
from emanet.core.settings import Settings
from emanet.payments.models import (
    Payment,
    PaymentAttempt,
    PaymentRefund,
    Payout,
    ReconciliationReport,
    RefundStatus,
)
from emanet.payments.payouts import S as PayoutStatus
from emanet.payments.service import CAPTURED
from emanet.providers.base import (
    PaymentProvider,
    ProviderNotConfigured,
    ProviderPayment,
    SettlementRecord,
)
from emanet.providers.registry import get_provider

log = structlog.get_logger("emanet.reconcile")

Method = Literal["listing", "per_record"]
ISSUES = ("missing", "extra", "mismatched", "unverified")
# What the provider must say of a payment we hold as captured for the two sides to agree.
PROVIDER_CAPTURED = frozenset({"succeeded", "refunded", "partially_refunded"})
# Per-record mode asks the provider once per payment: at most this many questions in flight at a time.
PER_RECORD_CONCURRENCY = 4
MISSING_CAVEAT = (
    "records the provider has and we don't (missing) cannot be detected: only our own records were looked up"
)


@dataclass(frozen=True)
class OurRecord:
    kind: str  # payment, refund, payout
    reference: str | None
    our_id: str
    amount: int
    currency: str
    fee: int | None
    occurred_at: datetime
    merchant_references: tuple[str, ...] = ()


@dataclass(frozen=True)
class Item:
    issue: str  # missing, extra, mismatched, unverified
    kind: str
    reference: str | None
    currency: str
    provider_amount: int | None = None
    our_amount: int | None = None
    provider_fee: int | None = None
    our_fee: int | None = None
    our_id: str | None = None
    occurred_at: str | None = None
    provider_status: str | None = None  # per_record: the provider's status of the payment (ours, mapped)
    error_code: str | None = None  # unverified: why the provider gave no usable answer
    error_detail: str | None = None


def _bounds(day: date, days: int = 1) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time.min, UTC)
    return start, start + timedelta(days=days)


async def our_records(
    session: AsyncSession, provider: str, start: datetime, end: datetime
) -> list[OurRecord]:
    payments = await session.execute(
        select(Payment).where(
            Payment.provider == provider,
            Payment.status.in_(list(CAPTURED)),
            Payment.succeeded_at >= start,
            Payment.succeeded_at < end,
        )
    )
    records: list[OurRecord] = []
    for payment in payments.scalars().all():
        keys = (
            (await session.execute(select(PaymentAttempt.key).where(PaymentAttempt.payment_id == payment.id)))
            .scalars()
            .all()
        )
        records.append(
            OurRecord(
                "payment",
                payment.provider_reference,
                payment.id,
                payment.captured_amount,
                payment.currency,
                payment.fee,
                payment.succeeded_at or start,
                (payment.id, *keys),
            )
        )
    # Some providers list a refund under the payment it refunds (Moyasar, PayTR): a refund also answers to
    # its payment's provider reference. Several refunds of one payment then meet one provider line; the
    # first is matched and the amounts are compared with it, so such a day may show a mismatch to look at.
    refunds = await session.execute(
        select(PaymentRefund, Payment.provider_reference)
        .join(Payment, Payment.id == PaymentRefund.payment_id)
        .where(
            PaymentRefund.provider == provider,
            PaymentRefund.status == RefundStatus.succeeded,
            PaymentRefund.succeeded_at >= start,
            PaymentRefund.succeeded_at < end,
        )
    )
    records += [
        OurRecord(
            "refund",
            r.provider_reference,
            r.id,
            r.amount,
            r.currency,
            None,
            r.succeeded_at or start,
            tuple(ref for ref in (r.id, r.idempotency_key, payment_reference) if ref),
        )
        for r, payment_reference in refunds.all()
    ]
    payouts = await session.execute(
        select(Payout).where(
            Payout.provider == provider,
            Payout.status == PayoutStatus.paid,
            Payout.settled_at >= start,
            Payout.settled_at < end,
        )
    )
    records += [
        OurRecord(
            "payout", p.provider_reference, p.id, p.amount, p.currency, None, p.settled_at or start, (p.id,)
        )
        for p in payouts.scalars().all()
    ]
    return records


def _match(theirs: SettlementRecord, ours: list[OurRecord]) -> OurRecord | None:
    for record in ours:
        if record.kind != theirs.kind:
            continue
        if (
            record.reference == theirs.reference
            or theirs.reference in record.merchant_references
            or (theirs.merchant_reference and theirs.merchant_reference in record.merchant_references)
        ):
            return record
    return None


def compare(
    theirs_day: list[SettlementRecord],
    theirs_before: list[SettlementRecord],
    ours_day: list[OurRecord],
    ours_window: list[OurRecord],
) -> tuple[list[Item], int]:
    """(issues, matched count) — see the module docstring for the windows."""
    items: list[Item] = []
    matched = 0
    for record in theirs_day:
        ours = _match(record, ours_window)
        if ours is None:
            items.append(
                Item(
                    "missing",
                    record.kind,
                    record.reference,
                    record.currency,
                    provider_amount=record.amount,
                    provider_fee=record.fee,
                    occurred_at=record.occurred_at.isoformat(),
                )
            )
            continue
        fee_differs = record.kind == "payment" and ours.fee is not None and ours.fee != record.fee
        if ours.amount != record.amount or ours.currency != record.currency or fee_differs:
            items.append(
                Item(
                    "mismatched",
                    record.kind,
                    record.reference,
                    record.currency,
                    provider_amount=record.amount,
                    our_amount=ours.amount,
                    provider_fee=record.fee,
                    our_fee=ours.fee,
                    our_id=ours.our_id,
                    occurred_at=record.occurred_at.isoformat(),
                )
            )
        else:
            matched += 1
    provider_side = theirs_before + theirs_day
    for ours in ours_day:
        if not any(_match(record, [ours]) for record in provider_side):
            items.append(_about_ours("extra", ours))
    return items, matched


def lists_settlements(provider_class: type[PaymentProvider]) -> bool:
    """Whether the adapter offers a settlement listing (``listing`` mode) or not (``per_record``)."""
    return provider_class.list_settlements is not PaymentProvider.list_settlements


def compare_payment(ours: OurRecord, theirs: ProviderPayment) -> Item | None:
    """Our captured payment against the provider's current view of it; ``None`` when they agree."""
    if theirs.status not in PROVIDER_CAPTURED:
        return _about_ours("extra", ours, provider_amount=theirs.amount, provider_status=theirs.status)
    if theirs.amount is None or theirs.currency is None:
        return _unverified(
            ours, "incomplete_answer", "The provider reported the payment captured without its amount"
        )
    fee_differs = ours.fee is not None and theirs.fee is not None and ours.fee != theirs.fee
    if theirs.amount != ours.amount or theirs.currency != ours.currency or fee_differs:
        return _about_ours(
            "mismatched",
            ours,
            currency=theirs.currency,
            provider_amount=theirs.amount,
            provider_fee=theirs.fee,
            provider_status=theirs.status,
        )
    return None


def _unverified(ours: OurRecord, code: str, detail: str) -> Item:
    return _about_ours("unverified", ours, error_code=code, error_detail=detail)


def _about_ours(issue: str, ours: OurRecord, *, currency: str | None = None, **provider_side: Any) -> Item:
    """An item about one of our records, with what the provider said (if anything) in ``provider_side``."""
    return Item(
        issue,
        ours.kind,
        ours.reference,
        currency or ours.currency,
        our_amount=ours.amount,
        our_fee=ours.fee,
        our_id=ours.our_id,
        occurred_at=ours.occurred_at.isoformat(),
        **provider_side,
    )


async def _ask(provider: PaymentProvider, ours: OurRecord, gate: asyncio.Semaphore) -> Item | None:
    """One payment of ours checked with the provider's status query; a provider error becomes an
    ``unverified`` item (a missing configuration is not a per-record problem and is raised)."""
    if ours.reference is None:
        return _unverified(ours, "no_provider_reference", "We hold no provider reference to ask about")
    async with gate:
        try:
            theirs = await provider.get_payment(ours.reference)
        except ProviderNotConfigured:
            raise
        except ProviderError as exc:
            log.warning(
                "reconcile_lookup_failed",
                provider=provider.name,
                payment_id=ours.our_id,
                reference=ours.reference,
                error_code=exc.code,
                error=exc.detail,
            )
            return _unverified(ours, exc.code, exc.detail)
    return compare_payment(ours, theirs)


async def check_records(provider: PaymentProvider, ours_day: list[OurRecord]) -> tuple[list[Item], int]:
    """(issues, matched count) of our payments of the day, each looked up at the provider; refunds and
    payouts are left out (see the module docstring)."""
    gate = asyncio.Semaphore(PER_RECORD_CONCURRENCY)
    payments = [record for record in ours_day if record.kind == "payment"]
    outcomes = await asyncio.gather(*(_ask(provider, record, gate) for record in payments))
    items = [item for item in outcomes if item is not None]
    return items, len(payments) - len(items)


def _per_record_notes(provider: PaymentProvider, ours_day: list[OurRecord]) -> str:
    refunds = sum(1 for record in ours_day if record.kind == "refund")
    payouts = sum(1 for record in ours_day if record.kind == "payout")
    return (
        f"Per-record check: {provider.display_name} publishes no settlement listing, so each of our captured "
        f"payments of the day was looked up with its status query; {MISSING_CAVEAT}. Not checked: "
        f"{refunds} refund(s) and {payouts} payout(s) of ours on this day "
        f"({provider.display_name} offers no lookup that reports their amounts)."
    )


async def reconcile(
    database: Database, settings: Settings, provider_name: str, day: date, *, requested_by: str | None = None
) -> ReconciliationReport:
    """Compare the provider's records of ``day`` with ours and store the report: from the provider's
    settlement listing when it has one, else by asking it about each of our payments. No transaction is
    open while the provider is asked."""
    provider = get_provider(provider_name, settings, database)
    if lists_settlements(type(provider)):
        theirs_day = await provider.list_settlements(day)
        theirs_before = await provider.list_settlements(day - timedelta(days=1))
        async with database.transaction() as session:
            ours_day = await our_records(session, provider_name, *_bounds(day))
            ours_window = await our_records(session, provider_name, *_bounds(day, days=2))
            items, matched = compare(theirs_day, theirs_before, ours_day, ours_window)
            report = await _store(
                session,
                provider_name,
                day,
                "listing",
                provider_records=len(theirs_day),
                our_count=len(ours_day),
                matched=matched,
                items=items,
                notes=None,
                requested_by=requested_by,
            )
    else:
        async with database.transaction() as session:
            ours_day = await our_records(session, provider_name, *_bounds(day))
        items, matched = await check_records(provider, ours_day)
        confirmed = matched + sum(1 for item in items if item.issue == "mismatched")
        async with database.transaction() as session:
            report = await _store(
                session,
                provider_name,
                day,
                "per_record",
                provider_records=confirmed,
                our_count=len(ours_day),
                matched=matched,
                items=items,
                notes=_per_record_notes(provider, ours_day),
                requested_by=requested_by,
            )
    log.info(
        "reconciled",
        provider=provider_name,
        day=day.isoformat(),
        method=report.method,
        report_id=report.id,
        matched=report.matched,
        **{issue: getattr(report, issue) for issue in ISSUES},
    )
    return report


async def _store(
    session: AsyncSession,
    provider_name: str,
    day: date,
    method: Method,
    *,
    provider_records: int,
    our_count: int,
    matched: int,
    items: list[Item],
    notes: str | None,
    requested_by: str | None,
) -> ReconciliationReport:
    """``provider_records`` is the provider's listing of the day (``listing``) or how many of our payments
    the provider confirmed as captured (``per_record``)."""
    counts = {issue: sum(1 for item in items if item.issue == issue) for issue in ISSUES}
    report = ReconciliationReport(
        provider=provider_name,
        day=day,
        method=method,
        provider_records=provider_records,
        our_records=our_count,
        matched=matched,
        items=[_item_dict(item) for item in items],
        requested_by=requested_by,
        notes=notes,
        **counts,
    )
    session.add(report)
    await session.flush()
    return report


def _item_dict(item: Item) -> dict[str, Any]:
    return {key: value for key, value in asdict(item).items() if value is not None}


async def reports(
    session: AsyncSession, *, provider: str | None, day: date | None, limit: int, before: str | None
) -> tuple[list[ReconciliationReport], str | None]:
    query = select(ReconciliationReport)
    if provider:
        query = query.where(ReconciliationReport.provider == provider)
    if day:
        query = query.where(ReconciliationReport.day == day)
    if before:
        query = query.where(ReconciliationReport.id < before)
    rows = list(
        (await session.execute(query.order_by(ReconciliationReport.id.desc()).limit(limit + 1)))
        .scalars()
        .all()
    )
    return rows[:limit], rows[limit - 1].id if len(rows) > limit else None
