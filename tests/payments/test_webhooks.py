"""Inbound provider webhooks: verified on the raw body, stored by event id before acting, effective once.

The sandbox's own delivery is pointed at a port nothing listens on, so its real signed events stay in its
delivery job; the tests then deliver them (or tampered copies) to the live server themselves.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
from datetime import timedelta
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import func, select, text

from emanet.core.clock import FrozenClock
from emanet.core.db import Database
from emanet.core.errors import ServiceUnavailable
from emanet.core.settings import Settings
from emanet.core.tasks import JobContext
from emanet.escrow import service as escrow_service
from emanet.ledger.models import JournalEntry
from emanet.payments import tasks
from emanet.payments.models import Payment, ProviderEvent
from tests.factories import Factory
from tests.invariants import assert_ledger_invariants
from tests.payments.conftest import UNREACHABLE, Live
from tests.payments.helpers import (
    SUCCESS,
    checkout,
    create_escrow,
    escrow_of,
    get_payment,
    signed,
    started,
    undelivered_sandbox_webhooks,
)

WEBHOOK = "/api/v1/webhooks/sandbox"


@pytest.fixture
def callback_base() -> str:
    return UNREACHABLE


@pytest.fixture
def settings_overrides(settings_overrides: dict[str, Any]) -> dict[str, Any]:
    # GET /payments/{id} must not ask the sandbox here: these tests are about what webhooks alone do.
    return {
        **settings_overrides,
        "payment_status_refresh_seconds": 3600,
        "paytr_merchant_id": "123456",
        "paytr_merchant_key": "paytr-key",
        "paytr_merchant_salt": "paytr-salt",
    }


async def paid_but_unannounced(
    live: Live, factory: Factory, database: Database
) -> tuple[Any, dict[str, Any], dict[str, Any], str, str]:
    """An escrow whose payment the sandbox decided (success card) but whose webhook has not reached us."""
    buyer, seller = await factory.user(), await factory.user()
    escrow = await create_escrow(live.http, buyer, seller)
    payment = await started(live.http, buyer, escrow["id"])
    await checkout(live.http, payment, SUCCESS)
    [(msg_id, body)] = await undelivered_sandbox_webhooks(database)
    return buyer, escrow, payment, msg_id, body


async def counts(database: Database) -> tuple[int, int]:
    async with database.transaction() as session:
        events = (await session.execute(select(func.count()).select_from(ProviderEvent))).scalar_one()
        captures = (
            await session.execute(
                select(func.count())
                .select_from(JournalEntry)
                .where(JournalEntry.reference.like("payment:%:capture"))
            )
        ).scalar_one()
    return events, captures


async def test_twenty_concurrent_deliveries_take_effect_once(
    live: Live, factory: Factory, database: Database, settings: Settings
) -> None:
    buyer, escrow, payment, msg_id, body = await paid_but_unannounced(live, factory, database)
    assert (await get_payment(live.http, buyer, payment["id"]))["status"] == "requires_action"
    headers = signed(settings, msg_id, body)

    async def deliver() -> httpx.Response:
        async with httpx.AsyncClient(base_url=live.url, timeout=30) as own_connection:
            return await own_connection.post(WEBHOOK, content=body, headers=headers)

    responses = await asyncio.gather(*(deliver() for _ in range(20)))
    assert [r.status_code for r in responses] == [200] * 20
    assert await counts(database) == (1, 1)
    funded = await escrow_of(live.http, buyer, escrow["id"])
    assert (funded["status"], funded["held"]["amount"]) == ("funded", escrow["fees"]["total_due"]["amount"])
    async with database.transaction() as session:
        event = (await session.execute(select(ProviderEvent))).scalar_one()
    assert (event.provider, event.event_id, event.type, event.outcome) == (
        "sandbox",
        msg_id,
        "payment.succeeded",
        "applied",
    )
    await assert_ledger_invariants(database)


@pytest.mark.postgres_only  # the attempt is arranged in PostgreSQL's SQL
async def test_a_reference_another_provider_also_uses_reaches_the_senders_attempt(
    live: Live, factory: Factory, database: Database, settings: Settings
) -> None:
    """References are unique per provider only. Another provider's attempt with the same reference (here a
    PayTR attempt of the same payment, stored after the sandbox's row) must not take the sandbox's news."""
    buyer, escrow, payment, msg_id, body = await paid_but_unannounced(live, factory, database)
    async with database.transaction() as session:
        await session.execute(
            text(
                "INSERT INTO payment_attempts (key, payment_id, number, provider, provider_reference, status,"
                " created_at, updated_at) VALUES (:payment || '-2', :payment, 2, 'paytr', :reference,"
                " 'pending', now(), now())"
            ),
            {"payment": payment["id"], "reference": payment["provider_reference"]},
        )
        # A new version of the sandbox's row, so that it is no longer the first one a scan meets.
        await session.execute(
            text("UPDATE payment_attempts SET updated_at = now() WHERE key = :payment || '-1'"),
            {"payment": payment["id"]},
        )
    response = await live.http.post(WEBHOOK, content=body, headers=signed(settings, msg_id, body))
    assert response.status_code == 200, response.text
    assert (await get_payment(live.http, buyer, payment["id"]))["status"] == "succeeded"
    funded = await escrow_of(live.http, buyer, escrow["id"])
    assert (funded["status"], funded["held"]["amount"]) == ("funded", escrow["fees"]["total_due"]["amount"])
    assert await counts(database) == (1, 1)
    await assert_ledger_invariants(database)


async def test_news_the_state_machine_refuses_is_stored_and_acknowledged(
    live: Live, factory: Factory, database: Database, settings: Settings
) -> None:
    buyer, escrow, payment, msg_id, body = await paid_but_unannounced(live, factory, database)
    assert (
        await live.http.post(WEBHOOK, content=body, headers=signed(settings, msg_id, body))
    ).status_code == 200
    # a (validly signed) "failed" about a payment already booked as succeeded changes nothing
    event = orjson.loads(body)
    event["type"], event["data"]["status"] = "payment.failed", "failed"
    late = orjson.dumps(event).decode()
    response = await live.http.post(WEBHOOK, content=late, headers=signed(settings, "msg_late_failure", late))
    assert response.status_code == 200
    async with database.transaction() as session:
        stored = (
            await session.execute(select(ProviderEvent).where(ProviderEvent.event_id == "msg_late_failure"))
        ).scalar_one()
    assert (stored.outcome, stored.detail.split(":")[0]) == ("refused", "illegal_payment_transition")
    assert (await get_payment(live.http, buyer, payment["id"]))["status"] == "succeeded"
    assert (await escrow_of(live.http, buyer, escrow["id"]))["status"] == "funded"
    await assert_ledger_invariants(database)


async def test_bad_signature_is_400_and_changes_nothing(
    live: Live, factory: Factory, database: Database, settings: Settings
) -> None:
    buyer, escrow, payment, msg_id, body = await paid_but_unannounced(live, factory, database)
    wrong_secret = "whsec_" + base64.b64encode(b"not-the-sandbox-secret-at-all-000").decode()
    tampered = body.replace('"succeeded"', '"succeeded" ', 1)
    attempts = [
        (body, signed(settings, msg_id, body, secret=wrong_secret)),
        (tampered, signed(settings, msg_id, body)),
        (body, {**signed(settings, msg_id, body), "webhook-signature": "v1,AAAA"}),
        (body, {"content-type": "application/json"}),
    ]
    for content, headers in attempts:
        response = await live.http.post(WEBHOOK, content=content, headers=headers)
        assert response.status_code == 400, response.text
        assert response.json()["code"] == "invalid_webhook_signature"
    assert await counts(database) == (0, 0)
    assert (await get_payment(live.http, buyer, payment["id"]))["status"] == "requires_action"
    assert (await escrow_of(live.http, buyer, escrow["id"]))["status"] == "pending_payment"
    await assert_ledger_invariants(database)


async def test_a_refusal_part_way_through_leaves_nothing_of_what_the_event_began(
    live: Live, factory: Factory, database: Database, settings: Settings
) -> None:
    """The payment moves to succeeded before the escrow refuses the capture (a negative amount): the payment
    change is undone with the rest, and the event is kept with the refusal."""
    buyer, escrow, payment, msg_id, body = await paid_but_unannounced(live, factory, database)
    event = orjson.loads(body)
    event["data"]["amount"] = -100
    bad = orjson.dumps(event).decode()
    response = await live.http.post(WEBHOOK, content=bad, headers=signed(settings, msg_id, bad))
    assert response.status_code == 200
    async with database.transaction() as session:
        stored = (await session.execute(select(ProviderEvent))).scalar_one()
    assert (stored.event_id, stored.outcome, stored.detail.split(":")[0]) == (
        msg_id,
        "refused",
        "payment_mismatch",
    )
    assert (await get_payment(live.http, buyer, payment["id"]))["status"] == "requires_action"
    assert (await escrow_of(live.http, buyer, escrow["id"]))["status"] == "pending_payment"
    assert await counts(database) == (1, 0)
    # the same delivery again is a duplicate: acknowledged, nothing more happens
    again = await live.http.post(WEBHOOK, content=bad, headers=signed(settings, msg_id, bad))
    assert again.status_code == 200 and await counts(database) == (1, 0)
    await assert_ledger_invariants(database)


async def test_a_failure_on_our_side_is_not_a_refusal_the_provider_delivers_again(
    live: Live, factory: Factory, database: Database, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    buyer, escrow, payment, msg_id, body = await paid_but_unannounced(live, factory, database)

    async def unavailable(*_: Any, **__: Any) -> None:
        raise ServiceUnavailable("the ledger is being migrated")

    with monkeypatch.context() as patched:
        patched.setattr(escrow_service, "record_payment_captured", unavailable)
        failed = await live.http.post(WEBHOOK, content=body, headers=signed(settings, msg_id, body))
    assert failed.status_code == 503
    assert await counts(database) == (0, 0)  # not stored: the next delivery acts on it
    assert (await get_payment(live.http, buyer, payment["id"]))["status"] == "requires_action"
    again = await live.http.post(WEBHOOK, content=body, headers=signed(settings, msg_id, body))
    assert again.status_code == 200
    assert await counts(database) == (1, 1)
    assert (await escrow_of(live.http, buyer, escrow["id"]))["status"] == "funded"
    await assert_ledger_invariants(database)


async def test_stale_timestamp_is_refused(
    live: Live, factory: Factory, database: Database, settings: Settings, clock: FrozenClock
) -> None:
    buyer, escrow, _payment, msg_id, body = await paid_but_unannounced(live, factory, database)
    old = signed(settings, msg_id, body, at=clock.now() - timedelta(minutes=6))
    future = signed(settings, msg_id, body, at=clock.now() + timedelta(minutes=6))
    for headers in (old, future):
        response = await live.http.post(WEBHOOK, content=body, headers=headers)
        assert response.status_code == 400 and response.json()["code"] == "invalid_webhook_signature"
    assert await counts(database) == (0, 0)
    # the same event signed now (a provider's retry) is accepted
    assert (
        await live.http.post(WEBHOOK, content=body, headers=signed(settings, msg_id, body))
    ).status_code == 200
    assert (await escrow_of(live.http, buyer, escrow["id"]))["status"] == "funded"
    await assert_ledger_invariants(database)


async def test_unknown_event_type_is_stored_and_acknowledged(
    live: Live, database: Database, settings: Settings
) -> None:
    body = orjson.dumps(
        {
            "type": "charge.dispute.created",
            "timestamp": "2026-11-22T09:00:00+00:00",
            "data": {"object": "dispute", "reference": "dp_1"},
        }
    ).decode()
    for _ in range(2):  # a redelivery is acknowledged too, and stored once
        response = await live.http.post(
            WEBHOOK, content=body, headers=signed(settings, "msg_dispute_1", body)
        )
        assert response.status_code == 200 and response.json() == {"received": True}
    async with database.transaction() as session:
        [event] = (await session.execute(select(ProviderEvent))).scalars().all()
    assert (event.type, event.kind, event.outcome) == ("charge.dispute.created", "other", "ignored")
    assert event.payload["data"]["reference"] == "dp_1"
    await assert_ledger_invariants(database)


async def test_unknown_or_unconfigured_provider(live: Live) -> None:
    assert (await live.http.post("/api/v1/webhooks/acmepay", content=b"{}")).status_code == 404
    unconfigured = await live.http.post("/api/v1/webhooks/stripe", content=b"{}")
    assert unconfigured.status_code == 422 and unconfigured.json()["code"] == "provider_not_configured"


async def test_paytr_callback_is_answered_with_plain_ok(live: Live, database: Database) -> None:
    fields = {
        "merchant_oid": "pay01unknown1",
        "status": "success",
        "total_amount": "10000",
        "payment_amount": "10000",
        "currency": "TL",
    }
    digest = hmac.new(
        b"paytr-key", ("pay01unknown1" + "paytr-salt" + "success" + "10000").encode(), hashlib.sha256
    ).digest()
    response = await live.http.post(
        "/api/v1/webhooks/paytr", data={**fields, "hash": base64.b64encode(digest).decode()}
    )
    assert response.status_code == 200
    assert (response.text, response.headers["content-type"].split(";")[0]) == ("OK", "text/plain")
    async with database.transaction() as session:
        [event] = (await session.execute(select(ProviderEvent))).scalars().all()
    assert (event.provider, event.kind, event.outcome) == ("paytr", "payment", "unmatched")
    forged = await live.http.post("/api/v1/webhooks/paytr", data={**fields, "hash": "forged"})
    assert forged.status_code == 400


async def test_status_poll_funds_an_escrow_whose_webhook_never_came(
    live: Live, factory: Factory, database: Database, settings: Settings, clock: FrozenClock
) -> None:
    buyer, escrow, payment, _msg_id, _body = await paid_but_unannounced(live, factory, database)
    poll = JobContext(database=database, settings=settings)
    await tasks.poll_pending_payments(poll)  # too recent: left alone
    async with database.transaction() as session:
        assert (await session.get_one(Payment, payment["id"])).status == "requires_action"
    clock.advance(seconds=settings.payment_poll_after_seconds + 1)
    await tasks.poll_pending_payments(poll)
    async with database.transaction() as session:
        polled = await session.get_one(Payment, payment["id"])
    assert polled.status == "succeeded"
    funded = await escrow_of(live.http, buyer, escrow["id"])
    assert funded["status"] == "funded"
    await assert_ledger_invariants(database)
