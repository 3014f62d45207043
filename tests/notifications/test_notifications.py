"""Who is told what: both parties of every escrow change, admins of disputes, reminders before deadlines;
the in-app inbox; e-mail copies read back from a real local SMTP server."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from emanet.core import clock as clock_module
from emanet.core.db import Database
from emanet.core.models import Event, Job
from emanet.core.outbox import DISPATCH_EVENT_JOB, emit_event, enqueue
from emanet.core.schemas import encode_cursor
from emanet.core.settings import Settings
from emanet.core.worker import Worker
from emanet.escrow.models import Escrow
from emanet.notifications.models import Notification
from emanet.notifications.service import EMAIL_JOB, EMAIL_MAX_ATTEMPTS, Notice, notify_all
from emanet.users.models import Role, User
from tests.conftest import bearer
from tests.factories import Factory, capture, create_escrow
from tests.notifications.conftest import Mailbox, free_port


@pytest.fixture
def settings_overrides(smtp_server: tuple[Mailbox, int]) -> dict[str, Any]:
    return {
        "smtp_host": "127.0.0.1",
        "smtp_port": smtp_server[1],
        "smtp_from": "Emanet <no-reply@emanet.test>",
    }


async def _inbox(client: httpx.AsyncClient, user: User, **params: Any) -> list[dict[str, Any]]:
    response = await client.get("/api/v1/notifications", headers=bearer(user), params=params)
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


async def test_both_parties_hear_of_every_escrow_change_in_their_language(
    client: httpx.AsyncClient, database: Database, factory: Factory, run_jobs: Any
) -> None:
    buyer = await factory.user(locale="tr")
    seller = await factory.user(locale="en")
    escrow = await create_escrow(database, buyer, seller, amount=12550, title="Bisiklet")
    await capture(database, escrow.id, escrow.total_due)
    await run_jobs()
    async with database.transaction() as session:
        events = (
            (await session.execute(select(Event.type).where(Event.object_id == escrow.id).order_by(Event.id)))
            .scalars()
            .all()
        )
    assert "escrow.created" in events and "escrow.funded" in events
    for user in (buyer, seller):
        kinds = sorted(n["kind"] for n in await _inbox(client, user))
        assert kinds == sorted(events)
    funded_tr = next(n for n in await _inbox(client, buyer) if n["kind"] == "escrow.funded")
    assert funded_tr["title"] == f"{escrow.number} için ödeme emanette"
    assert "Bisiklet" in funded_tr["body"] and "₺" in funded_tr["body"]
    funded_en = next(n for n in await _inbox(client, seller) if n["kind"] == "escrow.funded")
    assert funded_en["title"] == f"Escrow {escrow.number} is funded"
    assert funded_en["data"]["id"] == escrow.id


async def test_admins_hear_of_new_disputes_and_everyone_of_the_resolution(
    client: httpx.AsyncClient, database: Database, factory: Factory, run_jobs: Any
) -> None:
    buyer, seller = await factory.user(), await factory.user()
    admin, support = await factory.user(role=Role.admin), await factory.user(role=Role.support)
    data = {
        "id": "esc_d",
        "number": "EM-2026-000007",
        "title": "Laptop",
        "buyer_id": buyer.id,
        "seller_id": seller.id,
    }
    async with database.transaction() as session:
        await emit_event(session, "escrow.disputed", "esc_d", {**data, "status": "disputed"})
        await emit_event(session, "escrow.resolved", "esc_d", {**data, "status": "released"})
    await run_jobs()
    assert [n["kind"] for n in await _inbox(client, admin)] == ["escrow.disputed"]
    assert await _inbox(client, support) == []
    for party in (buyer, seller):
        assert sorted(n["kind"] for n in await _inbox(client, party)) == [
            "escrow.disputed",
            "escrow.resolved",
        ]


async def test_dispatching_an_event_twice_notifies_nobody_twice(
    client: httpx.AsyncClient, database: Database, factory: Factory, run_jobs: Any
) -> None:
    buyer, seller = await factory.user(), await factory.user()
    async with database.transaction() as session:
        event = await emit_event(
            session, "escrow.funded", "esc_x", {"id": "esc_x", "buyer_id": buyer.id, "seller_id": seller.id}
        )
        await enqueue(session, DISPATCH_EVENT_JOB, {"event_id": event.id})
    assert await run_jobs() >= 2
    assert len(await _inbox(client, buyer)) == 1
    async with database.transaction() as session:
        email_jobs = (
            (await session.execute(select(Job).where(Job.kind == "notifications.email"))).scalars().all()
        )
    assert len(email_jobs) == 2  # one per person


async def test_notify_all_skips_keys_that_exist_and_returns_the_new_rows_in_the_order_given(
    database: Database, factory: Factory, settings: Settings
) -> None:
    users = [await factory.user() for _ in range(3)]
    data = {"id": "pay_x", "amount": 1000, "currency": "USD"}
    async with database.transaction() as session:
        [first] = await notify_all(session, settings, [Notice(users[0], "payment.failed", data, "k:0")])
    # 1,200 notices (more than one insert batch), newest key first, the one above among them.
    notices = [Notice(users[i % 3], "payment.failed", data, f"k:{i}") for i in reversed(range(1200))]
    async with database.transaction() as session:
        created = await notify_all(session, settings, notices)
        assert [n.dedupe_key for n in created] == [f"k:{i}" for i in reversed(range(1, 1200))]
        assert all(n.user_id == users[int(n.dedupe_key[2:]) % 3].id for n in created)
        assert created[0].title == "Payment failed" and created[0].id != first.id
    async with database.transaction() as session:
        stored = (await session.execute(select(Notification.dedupe_key))).scalars().all()
        email_jobs = (await session.execute(select(Job).where(Job.kind == EMAIL_JOB))).scalars().all()
    assert sorted(stored) == sorted(f"k:{i}" for i in range(1200))
    assert len(email_jobs) == 1200  # one per notification created, none for the skipped one


async def test_the_inbox_pages_newest_first_and_marks_read(
    client: httpx.AsyncClient,
    database: Database,
    factory: Factory,
    run_jobs: Any,
    clock: clock_module.FrozenClock,
) -> None:
    user, other = await factory.user(), await factory.user()
    for n in range(3):
        async with database.transaction() as session:
            await emit_event(
                session,
                "payment.failed",
                f"pay_{n}",
                {"id": f"pay_{n}", "user_id": user.id, "amount": 1000, "currency": "USD"},
            )
        await run_jobs()
        clock.advance(seconds=1)
    first = await client.get("/api/v1/notifications", headers=bearer(user), params={"limit": 2})
    page = first.json()
    assert [n["data"]["id"] for n in page["data"]] == ["pay_2", "pay_1"]
    assert page["data"][0]["body"] == "Your payment of $10.00 did not go through. You can try again."
    second = (
        await client.get(
            "/api/v1/notifications", headers=bearer(user), params={"limit": 2, "cursor": page["next_cursor"]}
        )
    ).json()
    assert [n["data"]["id"] for n in second["data"]] == ["pay_0"] and second["next_cursor"] is None
    bad_cursor = encode_cursor({"t": "yesterday", "id": "x"})
    malformed = await client.get("/api/v1/notifications", headers=bearer(user), params={"cursor": bad_cursor})
    assert malformed.status_code == 422 and malformed.json()["code"] == "invalid_cursor"

    target = page["data"][0]["id"]
    assert (
        await client.post(f"/api/v1/notifications/{target}/read", headers=bearer(other))
    ).status_code == 404
    read = await client.post(f"/api/v1/notifications/{target}/read", headers=bearer(user))
    assert read.status_code == 200 and read.json()["read_at"]
    unread = await _inbox(client, user, unread="true")
    assert [n["data"]["id"] for n in unread] == ["pay_1", "pay_0"]
    assert (await client.get("/api/v1/notifications")).status_code == 401


async def test_email_copies_arrive_over_smtp_in_the_recipients_locale(
    database: Database, factory: Factory, run_jobs: Any, smtp_server: tuple[Mailbox, int]
) -> None:
    mailbox, _ = smtp_server
    buyer = await factory.user(locale="ar", name="Layla", email="layla@example.com")
    seller = await factory.user(locale="en", name="Sam", email="sam@example.com")
    async with database.transaction() as session:
        await emit_event(
            session,
            "escrow.released",
            "esc_mail",
            {
                "id": "esc_mail",
                "number": "EM-2026-000100",
                "title": "Camera",
                "amount": 250000,
                "currency": "SAR",
                "buyer_id": buyer.id,
                "seller_id": seller.id,
            },
        )
    await run_jobs()
    by_recipient = {envelope.rcpt_tos[0]: message for envelope, message in mailbox.messages}
    assert set(by_recipient) == {"layla@example.com", "sam@example.com"}

    english = by_recipient["sam@example.com"]
    assert english["Subject"] == "Emanet: Payment released for EM-2026-000100"
    assert english["From"] == "Emanet <no-reply@emanet.test>" and english["Message-ID"]
    text = english.get_body(preferencelist=("plain",)).get_content()
    html = english.get_body(preferencelist=("html",)).get_content()
    assert "Hello Sam," in text and "SAR" in text and "Camera" in text
    assert 'dir="ltr"' in html and "Camera" in html

    arabic = by_recipient["layla@example.com"]
    assert arabic["Subject"] == "Emanet: تم تحرير الدفعة لـ EM-2026-000100"
    assert 'dir="rtl"' in arabic.get_body(preferencelist=("html",)).get_content()
    assert "مرحبًا Layla" in arabic.get_body(preferencelist=("plain",)).get_content()
    async with database.transaction() as session:
        assert set((await session.execute(select(Notification.email_status))).scalars().all()) == {"sent"}


async def test_html_escapes_what_users_typed(
    database: Database, factory: Factory, run_jobs: Any, smtp_server: tuple[Mailbox, int]
) -> None:
    mailbox, _ = smtp_server
    seller = await factory.user(email="s@example.com")
    async with database.transaction() as session:
        await emit_event(
            session,
            "escrow.funded",
            "esc_xss",
            {"id": "esc_xss", "seller_id": seller.id, "title": "<script>alert(1)</script>"},
        )
    await run_jobs()
    [(_, message)] = mailbox.messages
    html = message.get_body(preferencelist=("html",)).get_content()
    assert "<script>" not in html and "&lt;script&gt;" in html


async def test_email_failures_are_retried_then_recorded(
    database: Database, factory: Factory, settings: Settings, clock: clock_module.FrozenClock
) -> None:
    offline = Worker(database, settings.model_copy(update={"smtp_port": free_port()})).run_until_idle
    seller = await factory.user(email="s@example.com")
    async with database.transaction() as session:
        await emit_event(session, "escrow.funded", "esc_smtp", {"id": "esc_smtp", "seller_id": seller.id})
    for _ in range(EMAIL_MAX_ATTEMPTS):
        await offline()
        clock.advance(hours=2)
    async with database.transaction() as session:
        job = (await session.execute(select(Job).where(Job.kind == "notifications.email"))).scalar_one()
        notification = (await session.execute(select(Notification))).scalar_one()
    assert (job.status, job.attempts) == ("done", EMAIL_MAX_ATTEMPTS)
    assert notification.email_status == "failed"


async def test_reminders_go_out_once_before_a_deadline(
    client: httpx.AsyncClient,
    database: Database,
    factory: Factory,
    run_jobs: Any,
    clock: clock_module.FrozenClock,
    settings: Settings,
) -> None:
    buyer, seller = await factory.user(locale="en"), await factory.user()
    unpaid = await create_escrow(database, buyer, seller, amount=50_000, title="Sofa")
    paid = await create_escrow(database, buyer, seller, amount=70_000, title="Desk")
    await capture(database, paid.id, paid.total_due)
    async with database.transaction() as session:
        delivered = await session.get_one(Escrow, paid.id)
        delivered.status = "delivered"
        delivered.auto_release_at = clock.now() + timedelta(days=7)
    await run_jobs()

    async def sweep() -> list[dict[str, Any]]:
        async with database.transaction() as session:
            await enqueue(session, "notifications.reminders")
        await run_jobs()
        return [n for n in await _inbox(client, buyer) if n["kind"].startswith("reminder.")]

    assert await sweep() == []  # nothing within reminder_lead_hours yet
    clock.set(unpaid.expires_at - timedelta(hours=settings.reminder_lead_hours - 1))
    [payment_due] = await sweep()
    assert (payment_due["kind"], payment_due["data"]["id"]) == ("reminder.payment_due", unpaid.id)
    assert payment_due["title"] == f"Escrow {unpaid.number} awaits payment"
    assert "before" in payment_due["body"] and "UTC" in payment_due["body"]
    assert len(await sweep()) == 1  # not twice
    clock.set(delivered.auto_release_at - timedelta(hours=2))
    kinds = sorted(n["kind"] for n in await sweep())
    assert kinds == ["reminder.auto_release", "reminder.payment_due"]
    assert [n for n in await _inbox(client, seller) if n["kind"].startswith("reminder.")] == []
