"""Reconciliation of a provider's records of a day against ours: missing, extra and mismatched from the
sandbox's settlement listing; extra, mismatched and unverified per record for Jetcheckout, which publishes
no listing (its real adapter against the local fake of its status query, tests/fakes/jetcheckout_fake.py)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select, text
from werkzeug import Request, Response

from emanet.core import clock
from emanet.core.db import Database, new_id
from emanet.core.models import Job
from emanet.core.settings import Settings
from emanet.core.tasks import JobContext
from emanet.payments import reconcile, tasks
from emanet.providers.base import CreatePayment, SettlementRecord
from emanet.providers.jetcheckout import JetcheckoutProvider
from emanet.providers.registry import get_provider
from emanet.users.models import Role
from tests.conftest import bearer
from tests.factories import Factory
from tests.fakes.jetcheckout_fake import JetcheckoutFake, RecordingServer
from tests.invariants import assert_ledger_invariants
from tests.payments.conftest import Live
from tests.payments.helpers import (
    RETURN_URL,
    SUCCESS,
    checkout,
    create_escrow,
    get_payment,
    started,
)

DAY = "2026-11-22"  # the frozen test clock's day
JET_KEY = "jc_app_key_test"
JET_SECRET = "jc_secret_test"
STATUS = "/api/v1/payment/status"


class FlakyJetcheckout(JetcheckoutFake):
    """The Jetcheckout fake whose status query answers 503 for the orders in ``down``, and which counts how
    many status queries are in flight at once (each held ``delay`` seconds)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.down: set[str] = set()
        self.delay = 0.0
        self.in_flight = self.most_in_flight = 0
        self._lock = threading.Lock()

    def _status(self, request: Request) -> Response:
        with self._lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            time.sleep(self.delay)
            if str(json_body(request).get("order_id")) in self.down:
                return Response("upstream connect error", status=503)
            return super()._status(request)
        finally:
            with self._lock:
                self.in_flight -= 1

    def status_queries(self, order_id: str) -> int:
        return sum(1 for body in self.calls(STATUS) if body.get("order_id") == order_id)


def json_body(request: Request) -> dict[str, Any]:
    body: dict[str, Any] = request.get_json(force=True)
    return body


@pytest.fixture(scope="module")
def jet_server() -> Iterator[RecordingServer]:
    server = RecordingServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def jet(jet_server: RecordingServer) -> Iterator[FlakyJetcheckout]:
    with FlakyJetcheckout(JET_KEY, JET_SECRET, server=jet_server) as fake:
        yield fake


@pytest.fixture
def settings_overrides(settings_overrides: dict[str, Any], jet: FlakyJetcheckout) -> dict[str, Any]:
    """Jetcheckout configured against its fake, with the adapter's retries (2 attempts, short waits)."""
    return {
        **settings_overrides,
        "jetcheckout_api_key": JET_KEY,
        "jetcheckout_secret_key": JET_SECRET,
        "jetcheckout_api_base": jet.url,
        "jetcheckout_test_mode": True,
        "provider_max_attempts": 2,
        "provider_retry_initial_seconds": 0.01,
        "provider_retry_max_seconds": 0.02,
    }


async def three_payments(
    live: Live, factory: Factory, database: Database, settings: Settings
) -> dict[str, Any]:
    """One payment both sides agree on, one the provider has and we don't, one whose amounts differ."""
    buyer, seller = await factory.user(), await factory.user()
    agreed_escrow = await create_escrow(live.http, buyer, seller)
    agreed = await started(live.http, buyer, agreed_escrow["id"])
    await checkout(live.http, agreed, SUCCESS)
    # Charged at the provider by someone else's integration: its webhook reaches us but matches nothing.
    sandbox = get_provider("sandbox", settings, database)
    foreign = await sandbox.create_payment(
        CreatePayment(
            payment_id=new_id("ext"),
            amount=7_000,
            currency="TRY",
            description="not ours",
            return_url=RETURN_URL,
        )
    )
    assert foreign.next_action is not None
    await checkout(live.http, {"next_action": {"type": "redirect", "url": foreign.next_action.url}}, SUCCESS)
    differing_escrow = await create_escrow(live.http, buyer, seller, amount=50_000)
    differing = await started(live.http, buyer, differing_escrow["id"])
    await checkout(live.http, differing, SUCCESS)
    async with database.transaction() as session:  # the provider's record of it says 1.00 TRY more
        await session.execute(
            text("UPDATE sandbox_charges SET amount = amount + 100 WHERE id = :ref"),
            {"ref": differing["provider_reference"]},
        )
    return {"agreed": agreed, "foreign": foreign.reference, "differing": differing}


async def test_reconciliation_reports_missing_and_mismatched(
    live: Live, factory: Factory, database: Database, settings: Settings
) -> None:
    made = await three_payments(live, factory, database, settings)
    admin, support, user = (
        await factory.user(role=Role.admin),
        await factory.user(role=Role.support),
        await factory.user(),
    )
    forbidden = await live.http.post(
        "/api/v1/admin/reconciliation", headers=bearer(support), json={"provider": "sandbox", "date": DAY}
    )
    assert forbidden.status_code == 403
    response = await live.http.post(
        "/api/v1/admin/reconciliation", headers=bearer(admin), json={"provider": "sandbox", "date": DAY}
    )
    assert response.status_code == 201, response.text
    report = response.json()
    assert (report["method"], report["unverified"], report["notes"]) == ("listing", 0, None)
    assert (report["provider_records"], report["our_records"], report["matched"]) == (3, 2, 1)
    assert (report["missing"], report["extra"], report["mismatched"]) == (1, 0, 1)
    by_issue = {item["issue"]: {k: v for k, v in item.items() if v is not None} for item in report["items"]}
    assert by_issue["missing"] == {
        "issue": "missing",
        "kind": "payment",
        "reference": made["foreign"],
        "currency": "TRY",
        "provider_amount": 7_000,
        "provider_fee": 203,
        "occurred_at": by_issue["missing"]["occurred_at"],
    }
    mismatch = by_issue["mismatched"]
    assert (mismatch["reference"], mismatch["our_id"]) == (
        made["differing"]["provider_reference"],
        made["differing"]["id"],
    )
    assert mismatch["provider_amount"] - mismatch["our_amount"] == 100

    listed = await live.http.get(
        "/api/v1/admin/reconciliation", headers=bearer(support), params={"provider": "sandbox", "date": DAY}
    )
    assert listed.status_code == 200
    assert [r["id"] for r in listed.json()["data"]] == [report["id"]]
    other_day = await live.http.get(
        "/api/v1/admin/reconciliation", headers=bearer(support), params={"date": "2026-11-21"}
    )
    assert other_day.json()["data"] == []
    assert (await live.http.get("/api/v1/admin/reconciliation", headers=bearer(user))).status_code == 403
    await assert_ledger_invariants(database)


@pytest.mark.timeout(600)
async def test_reconcile_job_and_command(
    live: Live, factory: Factory, database: Database, settings: Settings, database_url: str
) -> None:
    await three_payments(live, factory, database, settings)
    await tasks.reconcile_day(
        JobContext(database=database, settings=settings, payload={"provider": "sandbox", "date": DAY})
    )
    env = {**os.environ, "EMANET_DATABASE_URL": database_url, "COLUMNS": "200", "EMANET_LOG_LEVEL": "WARNING"}
    command = [sys.executable, "-m", "emanet.cli", "reconcile", "--provider", "sandbox", "--date", DAY]
    run = await asyncio.to_thread(
        subprocess.run, command, env=env, capture_output=True, text=True, timeout=240
    )
    assert run.returncode == 1, run.stdout + run.stderr  # differences exit non-zero (for cron and CI)
    assert f"sandbox {DAY} (listing):" in run.stdout
    assert "1 missing, 0 extra, 1 mismatched, 0 unverified" in run.stdout
    assert "per-record mode" not in run.stdout
    quiet_day = [*command[:-1], "2026-11-01"]
    clean = await asyncio.to_thread(
        subprocess.run, quiet_day, env=env, capture_output=True, text=True, timeout=240
    )
    assert clean.returncode == 0, clean.stdout + clean.stderr
    async with database.transaction() as session:
        stored = (
            await session.execute(
                text(
                    "SELECT requested_by, mismatched, method FROM reconciliation_reports "
                    "ORDER BY created_at, id"
                )
            )
        ).all()
    assert sorted((r or "", m, method) for r, m, method in stored) == [
        ("", 1, "listing"),
        ("cli", 0, "listing"),
        ("cli", 1, "listing"),
    ]


# ---------------------------------------------------------------------------------- per record (Jetcheckout)


async def jetcheckout_payment(
    live: Live, factory: Factory, jet: FlakyJetcheckout, amount: int
) -> dict[str, Any]:
    """A payment through the real flow: prepared at Jetcheckout, paid on its hosted page, confirmed by the
    status query when the buyer's app asks for it."""
    buyer, seller = await factory.user(), await factory.user()
    escrow = await create_escrow(live.http, buyer, seller, amount=amount)
    payment = await started(live.http, buyer, escrow["id"], provider="jetcheckout")
    assert payment["status"] == "requires_action"
    jet.pay(payment["provider_reference"], "success")
    confirmed = await get_payment(live.http, buyer, payment["id"])
    assert confirmed["status"] == "succeeded", confirmed
    return confirmed


@pytest.mark.timeout(600)
async def test_provider_without_listing_is_reconciled_per_record(
    live: Live, factory: Factory, database: Database, jet: FlakyJetcheckout, database_url: str
) -> None:
    agreed = await jetcheckout_payment(live, factory, jet, 100_000)
    differing = await jetcheckout_payment(live, factory, jet, 50_000)
    voided = await jetcheckout_payment(live, factory, jet, 30_000)
    unanswered = await jetcheckout_payment(live, factory, jet, 20_000)
    # The provider's side changes behind our back: 1.00 TRY more, a failed attempt, a status query that 5xxs.
    jet.orders[differing["provider_reference"]].amount += Decimal("1.00")
    jet.pay(voided["provider_reference"], "declined")
    jet.down.add(unanswered["provider_reference"])
    asked_before = len(jet.calls(STATUS))

    admin = await factory.user(role=Role.admin)
    response = await live.http.post(
        "/api/v1/admin/reconciliation", headers=bearer(admin), json={"provider": "jetcheckout", "date": DAY}
    )

    assert response.status_code == 201, response.text
    report = response.json()
    assert report["method"] == "per_record"
    assert (report["our_records"], report["provider_records"], report["matched"]) == (4, 2, 1)
    assert (report["missing"], report["extra"], report["mismatched"], report["unverified"]) == (0, 1, 1, 1)
    assert "(missing) cannot be detected" in report["notes"]
    assert "Not checked: 0 refund(s) and 0 payout(s)" in report["notes"]
    # One status query per payment of ours, plus the adapter's retry of the one that 5xxed.
    assert len(jet.calls(STATUS)) - asked_before == 5
    assert jet.status_queries(unanswered["provider_reference"]) == 2 + 1  # + the query that confirmed it
    by_issue = {item["issue"]: {k: v for k, v in item.items() if v is not None} for item in report["items"]}
    mismatch = by_issue["mismatched"]
    assert (mismatch["reference"], mismatch["our_id"], mismatch["provider_status"]) == (
        differing["provider_reference"],
        differing["id"],
        "succeeded",
    )
    captured = differing["captured"]["amount"]
    assert (mismatch["our_amount"], mismatch["provider_amount"]) == (captured, captured + 100)
    assert mismatch["our_fee"] == differing["fee"]["amount"]
    assert mismatch["provider_fee"] == int((Decimal(captured + 100) * jet.fee_rate).quantize(Decimal(1)))
    extra = by_issue["extra"]
    assert (extra["reference"], extra["our_id"], extra["provider_status"], extra["our_amount"]) == (
        voided["provider_reference"],
        voided["id"],
        "failed",
        voided["captured"]["amount"],
    )
    unverified = by_issue["unverified"]
    assert (unverified["reference"], unverified["our_id"], unverified["error_code"]) == (
        unanswered["provider_reference"],
        unanswered["id"],
        "provider_unavailable",
    )
    assert "after 2 attempt(s)" in unverified["error_detail"]
    assert agreed["provider_reference"] not in {item["reference"] for item in report["items"]}

    env = {
        **os.environ,
        "EMANET_DATABASE_URL": database_url,
        "EMANET_JETCHECKOUT_API_KEY": JET_KEY,
        "EMANET_JETCHECKOUT_SECRET_KEY": JET_SECRET,
        "EMANET_JETCHECKOUT_API_BASE": jet.url,
        "EMANET_PROVIDER_MAX_ATTEMPTS": "2",
        "EMANET_PROVIDER_RETRY_INITIAL_SECONDS": "0.01",
        "COLUMNS": "200",
        "EMANET_LOG_LEVEL": "WARNING",
    }
    command = [sys.executable, "-m", "emanet.cli", "reconcile", "--provider", "jetcheckout", "--date", DAY]
    run = await asyncio.to_thread(
        subprocess.run, command, env=env, capture_output=True, text=True, timeout=240
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert f"jetcheckout {DAY} (per_record):" in run.stdout
    assert "0 missing, 1 extra, 1 mismatched, 1 unverified" in run.stdout
    assert "per-record mode:" in run.stdout
    assert "records the provider has and we don't (missing) cannot be detected" in run.stdout
    assert "provider_unavailable" in run.stdout
    async with database.transaction() as session:
        stored = (
            await session.execute(text("SELECT method, unverified, requested_by FROM reconciliation_reports"))
        ).all()
    assert sorted((m, u, r or "") for m, u, r in stored) == [
        ("per_record", 1, "cli"),
        ("per_record", 1, admin.id),
    ]
    await assert_ledger_invariants(database)


async def test_per_record_lookups_are_bounded_and_each_failure_is_counted(
    settings: Settings, jet: FlakyJetcheckout
) -> None:
    provider = get_provider("jetcheckout", settings)
    assert isinstance(provider, JetcheckoutProvider)
    ours = []
    for n in range(10):
        prepared = await provider.create_payment(
            CreatePayment(
                payment_id=f"pay_bound{n}-1",
                amount=10_000,
                currency="TRY",
                description="bounded",
                return_url=RETURN_URL,
            )
        )
        jet.pay(prepared.reference, "success")
        ours.append(
            reconcile.OurRecord(
                "payment", prepared.reference, f"pay_bound{n}", 10_000, "TRY", 279, clock.now()
            )
        )
    jet.down = {"pay_bound3-1", "pay_bound7-1"}
    jet.delay = 0.05

    items, matched = await reconcile.check_records(provider, ours)

    assert 1 < jet.most_in_flight <= reconcile.PER_RECORD_CONCURRENCY
    assert matched == 8
    assert sorted((item.issue, item.our_id, item.error_code) for item in items) == [
        ("unverified", "pay_bound3", "provider_unavailable"),
        ("unverified", "pay_bound7", "provider_unavailable"),
    ]


async def test_daily_job_reconciles_every_configured_provider_once(
    database: Database, settings: Settings, jet: FlakyJetcheckout
) -> None:
    context = JobContext(database=database, settings=settings)
    await tasks.reconcile_yesterday(context)
    await tasks.reconcile_yesterday(context)  # the hourly tick again: the per-provider dedupe holds

    async with database.transaction() as session:
        jobs = (
            (await session.execute(select(Job).where(Job.kind == tasks.RECONCILE_JOB).order_by(Job.id)))
            .scalars()
            .all()
        )
    payloads = [job.payload for job in jobs]
    assert sorted(p["provider"] for p in payloads) == ["jetcheckout", "sandbox"]
    assert {p["date"] for p in payloads} == {"2026-11-21"}
    assert not tasks.lists_settlements("jetcheckout") and tasks.lists_settlements("sandbox")

    [jetcheckout_job] = [p for p in payloads if p["provider"] == "jetcheckout"]
    await tasks.reconcile_day(JobContext(database=database, settings=settings, payload=jetcheckout_job))
    async with database.transaction() as session:
        stored = (
            await session.execute(
                text("SELECT provider, day, method, our_records FROM reconciliation_reports")
            )
        ).all()
    assert [(p, str(d), m, n) for p, d, m, n in stored] == [("jetcheckout", "2026-11-21", "per_record", 0)]
    assert jet.calls(STATUS) == []  # nothing of ours that day: nothing to ask


def test_a_refund_listed_under_its_payment_matches_ours() -> None:
    """Moyasar and PayTR list a refund under the payment's reference, not the refund's own id."""
    when = clock.now()
    ours = reconcile.OurRecord(
        "refund", "mp_1:idem-1", "rfd_1", 500, "SAR", None, when, ("rfd_1", "idem-1", "mp_1")
    )
    listed = SettlementRecord(
        reference="mp_1", kind="refund", amount=500, currency="SAR", fee=0, occurred_at=when
    )
    items, matched = reconcile.compare([listed], [], [ours], [ours])
    assert (items, matched) == ([], 1)
    other = SettlementRecord(
        reference="mp_2", kind="refund", amount=500, currency="SAR", fee=0, occurred_at=when
    )
    items, matched = reconcile.compare([other], [], [ours], [ours])
    assert matched == 0
    assert sorted(item.issue for item in items) == ["extra", "missing"]
    # A refund of the payment is not the payment: kinds still have to agree.
    payment_line = SettlementRecord(
        reference="mp_1", kind="payment", amount=500, currency="SAR", fee=0, occurred_at=when
    )
    items, matched = reconcile.compare([payment_line], [], [ours], [ours])
    assert matched == 0
