"""A provider that does not answer: the payment stays pending, is resumed with the SAME idempotency key, and
the card is never charged twice. Stripe's real adapter against the local fake of its API."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from emanet.core.db import Database
from emanet.payments.models import Payment
from tests.conftest import bearer
from tests.factories import Factory
from tests.fakes.server import CLIENT_TIMEOUT_SECONDS
from tests.fakes.stripe_fake import StripeFake
from tests.invariants import assert_ledger_invariants
from tests.payments.conftest import Live
from tests.payments.helpers import create_escrow, get_payment, start_payment

API_KEY = "sk_test_emanet_fake"


@pytest.fixture
def stripe_fake() -> Iterator[StripeFake]:
    server = StripeFake(API_KEY)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def settings_overrides(settings_overrides: dict[str, Any], stripe_fake: StripeFake) -> dict[str, Any]:
    return {
        **settings_overrides,
        "stripe_api_key": API_KEY,
        "stripe_api_base": stripe_fake.url,
        "provider_timeout_seconds": CLIENT_TIMEOUT_SECONDS,
    }


async def test_lost_answer_leaves_the_payment_pending_and_resumes_it_once(
    live: Live, factory: Factory, database: Database, stripe_fake: StripeFake
) -> None:
    buyer, seller = await factory.user(), await factory.user()
    escrow = await create_escrow(live.http, buyer, seller)
    # Stripe creates the PaymentIntent, then its answer is lost on the way back.
    stripe_fake.fail_next("lost", path="/v1/payment_intents")
    response = await start_payment(live.http, buyer, escrow["id"], provider="stripe")
    assert response.status_code == 503, response.text
    problem = response.json()
    assert problem["code"] == "provider_unavailable"
    payment_id = problem["payment_id"]
    async with database.transaction() as session:
        assert (await session.get_one(Payment, payment_id)).status == "pending"

    resumed = await get_payment(live.http, buyer, payment_id)  # asks again, same idempotency key
    assert resumed["status"] == "requires_action"
    assert resumed["next_action"]["type"] == "client_secret"
    posts = stripe_fake.calls("POST", "/v1/payment_intents")
    assert len(posts) == 2
    assert {p.headers["Idempotency-Key"] for p in posts} == {f"{payment_id}-1"}
    assert len(stripe_fake.intents) == 1  # sent twice, created once
    assert resumed["provider_reference"] == next(iter(stripe_fake.intents))
    listed = (
        await live.http.get("/api/v1/payments", headers=bearer(buyer), params={"escrow_id": escrow["id"]})
    ).json()
    assert [p["id"] for p in listed["data"]] == [payment_id]
    await assert_ledger_invariants(database)
