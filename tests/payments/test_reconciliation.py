"""Reconciliation of the sandbox's records of a day against ours: missing, extra and mismatched."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import Any

import pytest
from sqlalchemy import text

from emanet.core.db import Database, new_id
from emanet.core.settings import Settings
from emanet.core.tasks import JobContext
from emanet.payments import tasks
from emanet.providers.base import CreatePayment
from emanet.providers.registry import get_provider
from emanet.users.models import Role
from tests.conftest import bearer
from tests.factories import Factory
from tests.invariants import assert_ledger_invariants
from tests.payments.conftest import Live
from tests.payments.helpers import RETURN_URL, SUCCESS, checkout, create_escrow, started

DAY = "2026-11-22"  # the frozen test clock's day


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
    assert "1 missing, 0 extra, 1 mismatched" in run.stdout
    quiet_day = [*command[:-1], "2026-11-01"]
    clean = await asyncio.to_thread(
        subprocess.run, quiet_day, env=env, capture_output=True, text=True, timeout=240
    )
    assert clean.returncode == 0, clean.stdout + clean.stderr
    async with database.transaction() as session:
        stored = (
            await session.execute(
                text("SELECT requested_by, mismatched FROM reconciliation_reports ORDER BY created_at, id")
            )
        ).all()
    assert sorted((r or "", m) for r, m in stored) == [("", 1), ("cli", 0), ("cli", 1)]
