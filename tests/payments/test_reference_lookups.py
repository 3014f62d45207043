"""Finding a payment attempt by the provider's reference or our attempt key stays one index probe each,
however many attempts exist: webhooks and the browser's return do it for every payment."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from sqlalchemy import Select, select, text
from sqlalchemy.dialects import postgresql

from emanet.core.db import Database
from emanet.payments.models import PaymentAttempt
from emanet.payments.service import attempt_reference_is
from tests.conftest import bearer
from tests.factories import Factory
from tests.payments.conftest import Live
from tests.payments.helpers import SUCCESS, checkout, create_escrow, started
from tests.plans import nodes

pytestmark = pytest.mark.postgres_only  # plans, and rows arranged with generate_series

OTHER_ATTEMPTS = 3_000


async def _plan(database: Database, statement: Select[Any]) -> dict[str, Any]:
    sql = statement.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True})
    async with database.transaction() as session:
        explained = await session.scalar(text(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}"))
    plan: dict[str, Any] = (orjson.loads(explained) if isinstance(explained, str) else explained)[0]["Plan"]
    return plan


async def test_an_attempt_is_found_by_reference_without_reading_the_others(
    live: Live, factory: Factory, database: Database
) -> None:
    buyer, seller = await factory.user(), await factory.user()
    escrow = await create_escrow(live.http, buyer, seller)
    payment = await started(live.http, buyer, escrow["id"])
    returned = await checkout(live.http, payment, SUCCESS)
    key, reference = returned["payment_id"][0], payment["provider_reference"]
    async with database.transaction() as session:
        await session.execute(
            text(
                "INSERT INTO payment_attempts (key, payment_id, number, provider, provider_reference, status,"
                " created_at, updated_at) SELECT :payment || '-' || n, :payment, n, 'sandbox',"
                " 'ch_other_' || n, 'failed', now(), now() FROM generate_series(2, :last) AS n"
            ),
            {"payment": payment["id"], "last": OTHER_ATTEMPTS + 1},
        )
    for found_by in (key, reference):
        verified = await live.http.get(f"/api/v1/payments/verify/{found_by}", headers=bearer(buyer))
        assert (verified.status_code, verified.json()["id"]) == (200, payment["id"])

    lookups = {
        "webhook": lambda ref: select(PaymentAttempt).where(attempt_reference_is(ref)),
        "browser return": lambda ref: (
            select(PaymentAttempt)
            .where(attempt_reference_is(ref))
            .order_by(PaymentAttempt.created_at.desc())
            .limit(1)
        ),
    }
    for statistics in ("before ANALYZE", "after ANALYZE"):
        for name, lookup in lookups.items():
            for found_by in (key, reference):
                plan = await _plan(database, lookup(found_by))
                assert plan["Actual Rows"] == 1, (statistics, name, found_by)
                scans = {node["Node Type"] for node in nodes(plan) if node.get("Relation Name")}
                assert "Seq Scan" not in scans, (statistics, name, plan)
                # A probe of two small indexes and the row: a handful of pages, not one per attempt.
                assert plan["Shared Hit Blocks"] + plan["Shared Read Blocks"] <= 12, (statistics, name, plan)
        async with database.transaction() as session:
            await session.execute(text("ANALYZE payment_attempts"))
