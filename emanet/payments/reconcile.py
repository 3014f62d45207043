"""Reconciliation: what a provider recorded on a day against our payments, refunds and payouts.

Each of our records is matched to the provider's by the provider reference (or by our own id when the
provider echoes it as ``merchant_reference``). We learn of a movement when or after the provider makes it,
never before, so a record near midnight may sit on the provider's day D and on our day D+1:

- **missing**: the provider has it on day D and we have no such record on day D or D+1;
- **extra**: we have it on day D and the provider has no such record on day D-1 or D;
- **mismatched**: both have it, with different amounts (or currencies, or fees when we know ours).

The report is stored (``reconciliation_reports``) and shown to admins and support.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from emanet.core.db import Database
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
from emanet.providers.base import SettlementRecord
from emanet.providers.registry import get_provider

log = structlog.get_logger("emanet.reconcile")


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
    issue: str  # missing, extra, mismatched
    kind: str
    reference: str | None
    currency: str
    provider_amount: int | None = None
    our_amount: int | None = None
    provider_fee: int | None = None
    our_fee: int | None = None
    our_id: str | None = None
    occurred_at: str | None = None


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
    refunds = await session.execute(
        select(PaymentRefund).where(
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
            (r.id, r.idempotency_key),
        )
        for r in refunds.scalars().all()
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
        if record.reference == theirs.reference or (
            theirs.merchant_reference and theirs.merchant_reference in record.merchant_references
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
            items.append(
                Item(
                    "extra",
                    ours.kind,
                    ours.reference,
                    ours.currency,
                    our_amount=ours.amount,
                    our_fee=ours.fee,
                    our_id=ours.our_id,
                    occurred_at=ours.occurred_at.isoformat(),
                )
            )
    return items, matched


async def reconcile(
    database: Database, settings: Settings, provider_name: str, day: date, *, requested_by: str | None = None
) -> ReconciliationReport:
    """Fetch the provider's records (no transaction open), compare, store the report."""
    provider = get_provider(provider_name, settings, database)
    theirs_day = await provider.list_settlements(day)
    theirs_before = await provider.list_settlements(day - timedelta(days=1))
    async with database.transaction() as session:
        ours_day = await our_records(session, provider_name, *_bounds(day))
        ours_window = await our_records(session, provider_name, *_bounds(day, days=2))
        items, matched = compare(theirs_day, theirs_before, ours_day, ours_window)
        counts = {
            issue: sum(1 for item in items if item.issue == issue)
            for issue in ("missing", "extra", "mismatched")
        }
        report = ReconciliationReport(
            provider=provider_name,
            day=day,
            provider_records=len(theirs_day),
            our_records=len(ours_day),
            matched=matched,
            items=[_item_dict(item) for item in items],
            requested_by=requested_by,
            **counts,
        )
        session.add(report)
        await session.flush()
    log.info(
        "reconciled",
        provider=provider_name,
        day=day.isoformat(),
        report_id=report.id,
        matched=matched,
        **counts,
    )
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
