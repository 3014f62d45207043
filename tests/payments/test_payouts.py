"""Payouts to the payout destination (set with an OTP step-up), through the sandbox's fake bank."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from emanet.core.clock import FrozenClock
from emanet.core.db import Database
from emanet.core.settings import Settings
from emanet.core.tasks import JobContext
from emanet.escrow.models import EscrowStatus
from emanet.ledger import accounts
from emanet.notifications.sms import ConsoleSms
from emanet.payments import tasks
from emanet.payments.destinations import InvalidDestination, validate_destination
from emanet.users.models import Role, User
from tests.conftest import bearer
from tests.escrow.states import move
from tests.factories import Factory, capture, create_escrow
from tests.invariants import assert_ledger_invariants
from tests.payments.conftest import Live
from tests.payments.helpers import balances

PAID_IBAN = "TR33 0006 1005 1978 6457 8413 26"
CLOSED_IBAN = "TR42 0006 1005 1978 6457 8400 00"  # the sandbox's bank fails accounts ending in 0000


async def seller_with_balance(factory: Factory, database: Database, clock: FrozenClock) -> tuple[User, int]:
    """A seller (with a verified phone) whose escrow was released: money in their available wallet."""
    buyer = await factory.user()
    seller = await factory.user(phone_verified_at=clock.now())
    admin = await factory.user(role=Role.admin)
    escrow = await create_escrow(database, buyer, seller, amount=100_000)
    await capture(database, escrow.id, escrow.total_due)
    await move(database, escrow.id, EscrowStatus.released, admin, force=True)
    [available] = await balances(database, accounts.user_available(seller.id))
    return seller, available


async def step_up_code(http: httpx.AsyncClient, user: User) -> str:
    """A payout_change code sent by SMS and verified at /otp/verify, as the app does it."""
    sent = await http.post("/api/v1/otp/send", headers=bearer(user), json={"purpose": "payout_change"})
    assert sent.status_code == 202, sent.text
    to, text = ConsoleSms.outbox[-1]
    assert to == user.phone
    match = re.search(r"\b(\d{6})\b", text)
    assert match is not None
    verified = await http.post(
        "/api/v1/otp/verify", headers=bearer(user), json={"purpose": "payout_change", "code": match.group(1)}
    )
    assert verified.status_code == 200, verified.text
    return match.group(1)


async def set_destination(http: httpx.AsyncClient, user: User, iban: str) -> httpx.Response:
    code = await step_up_code(http, user)
    return await http.put(
        "/api/v1/me/payout-destination",
        headers=bearer(user),
        json={"destination": {"type": "iban", "iban": iban, "name": "Mehmet Demir"}, "otp_code": code},
    )


async def wallet(http: httpx.AsyncClient, user: User) -> dict[str, Any]:
    [try_wallet] = (await http.get("/api/v1/wallets", headers=bearer(user))).json()
    return dict(try_wallet)


async def test_payout_paid(
    live: Live, factory: Factory, database: Database, clock: FrozenClock, run_jobs: Any
) -> None:
    seller, available = await seller_with_balance(factory, database, clock)
    changed = await set_destination(live.http, seller, PAID_IBAN)
    assert changed.status_code == 200, changed.text
    assert changed.json()["destination"] == {
        "type": "iban",
        "name": "Mehmet Demir",
        "country": "TR",
        "iban": "TR33 •••• 1326",
    }

    response = await live.http.post(
        "/api/v1/payouts", headers=bearer(seller), json={"amount": {"amount": 60_000, "currency": "TRY"}}
    )
    assert response.status_code == 201, response.text
    payout = response.json()
    assert (payout["status"], payout["provider"]) == ("processing", "sandbox")
    assert payout["destination"]["iban"] == "TR33 •••• 1326"
    during = await wallet(live.http, seller)
    assert (during["available"], during["pending_payout"]) == (available - 60_000, 60_000)

    await run_jobs()  # the sandbox's bank settles and calls our webhook back
    paid = (await live.http.get(f"/api/v1/payouts/{payout['id']}", headers=bearer(seller))).json()
    assert paid["status"] == "paid" and paid["settled_at"]
    after = await wallet(live.http, seller)
    assert (after["available"], after["pending_payout"]) == (available - 60_000, 0)
    [clearing] = await balances(database, accounts.provider_clearing("sandbox"))
    assert clearing == 100_000 + 2_500 - 60_000  # captured through the sandbox, then 60,000 left us
    listed = (await live.http.get("/api/v1/payouts", headers=bearer(seller))).json()
    assert [p["id"] for p in listed["data"]] == [payout["id"]]
    stranger = await factory.user()
    assert (
        await live.http.get(f"/api/v1/payouts/{payout['id']}", headers=bearer(stranger))
    ).status_code == 404
    await assert_ledger_invariants(database)


async def test_payout_failed_returns_the_money(
    live: Live, factory: Factory, database: Database, clock: FrozenClock, run_jobs: Any
) -> None:
    seller, available = await seller_with_balance(factory, database, clock)
    assert (await set_destination(live.http, seller, CLOSED_IBAN)).status_code == 200
    payout = (
        await live.http.post(
            "/api/v1/payouts",
            headers=bearer(seller),
            json={"amount": {"amount": available, "currency": "TRY"}},
        )
    ).json()
    assert (await wallet(live.http, seller))["available"] == 0
    await run_jobs()
    failed = (await live.http.get(f"/api/v1/payouts/{payout['id']}", headers=bearer(seller))).json()
    assert failed["status"] == "failed"
    assert failed["failure_message"] == "The receiving account is closed"
    after = await wallet(live.http, seller)
    assert (after["available"], after["pending_payout"]) == (available, 0)
    await assert_ledger_invariants(database)


async def test_overdraft_is_refused(
    live: Live, factory: Factory, database: Database, clock: FrozenClock
) -> None:
    seller, available = await seller_with_balance(factory, database, clock)
    no_destination = await live.http.post(
        "/api/v1/payouts", headers=bearer(seller), json={"amount": {"amount": 1_000, "currency": "TRY"}}
    )
    assert (
        no_destination.status_code == 422 and no_destination.json()["code"] == "payout_destination_required"
    )
    await set_destination(live.http, seller, PAID_IBAN)
    response = await live.http.post(
        "/api/v1/payouts",
        headers=bearer(seller),
        json={"amount": {"amount": available + 1, "currency": "TRY"}},
    )
    assert response.status_code == 409
    assert (response.json()["code"], response.json()["available"]) == ("insufficient_balance", available)
    other_currency = await live.http.post(
        "/api/v1/payouts", headers=bearer(seller), json={"amount": {"amount": 100, "currency": "USD"}}
    )
    assert other_currency.status_code == 409
    assert (await wallet(live.http, seller))["available"] == available
    await assert_ledger_invariants(database)


async def test_destination_change_needs_a_verified_phone_and_otp(
    live: Live, factory: Factory, clock: FrozenClock
) -> None:
    unverified = await factory.user()
    body = {"destination": {"type": "iban", "iban": PAID_IBAN, "name": "Ali Veli"}, "otp_code": "123456"}
    refused = await live.http.put("/api/v1/me/payout-destination", headers=bearer(unverified), json=body)
    assert refused.status_code == 403 and refused.json()["code"] == "phone_verification_required"

    user = await factory.user(phone_verified_at=clock.now())
    without_step_up = await live.http.put("/api/v1/me/payout-destination", headers=bearer(user), json=body)
    assert without_step_up.status_code == 422 and without_step_up.json()["code"] == "otp_required"
    code = await step_up_code(live.http, user)
    bad_iban = await live.http.put(
        "/api/v1/me/payout-destination",
        headers=bearer(user),
        json={
            "destination": {"type": "iban", "iban": "TR33 0006 1005 1978 6457 8413 27", "name": "Ali Veli"},
            "otp_code": code,
        },
    )
    assert bad_iban.status_code == 422 and bad_iban.json()["code"] == "invalid_payout_destination"
    # the refused IBAN did not use the code up
    ok = await live.http.put(
        "/api/v1/me/payout-destination", headers=bearer(user), json={**body, "otp_code": code}
    )
    assert ok.status_code == 200, ok.text
    reused = await live.http.put(
        "/api/v1/me/payout-destination", headers=bearer(user), json={**body, "otp_code": code}
    )
    assert reused.status_code == 422
    shown = (await live.http.get("/api/v1/me/payout-destination", headers=bearer(user))).json()
    assert shown["destination"]["iban"] == "TR33 •••• 1326"


async def test_payout_poll_settles_a_payout_whose_webhook_never_came(
    live: Live, factory: Factory, database: Database, clock: FrozenClock, settings: Settings
) -> None:
    seller, _available = await seller_with_balance(factory, database, clock)
    await set_destination(live.http, seller, PAID_IBAN)
    payout = (
        await live.http.post(
            "/api/v1/payouts", headers=bearer(seller), json={"amount": {"amount": 10_000, "currency": "TRY"}}
        )
    ).json()
    clock.advance(seconds=settings.payment_poll_after_seconds + 1)
    await tasks.poll_payouts(JobContext(database=database, settings=settings))  # no worker ran the bank's job
    assert (await live.http.get(f"/api/v1/payouts/{payout['id']}", headers=bearer(seller))).json()[
        "status"
    ] == "paid"
    assert (await wallet(live.http, seller))["pending_payout"] == 0
    await assert_ledger_invariants(database)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (
            {
                "type": "bank_account",
                "country": "IN",
                "account_number": "12345678901",
                "bank_code": "HDFC0001234",
                "name": "Asha Rao",
            },
            None,
        ),
        (
            {
                "type": "bank_account",
                "country": "IN",
                "account_number": "123",
                "bank_code": "HDFC0001234",
                "name": "Asha Rao",
            },
            "account_number",
        ),
        (
            {
                "type": "bank_account",
                "country": "IN",
                "account_number": "12345678901",
                "bank_code": "HDFC1001234",
                "name": "Asha Rao",
            },
            "bank_code",
        ),
        (
            {
                "type": "bank_account",
                "country": "US",
                "account_number": "000123456789",
                "bank_code": "011000015",
                "name": "Jo Smith",
            },
            None,
        ),
        (
            {
                "type": "bank_account",
                "country": "US",
                "account_number": "000123456789",
                "bank_code": "011000016",
                "name": "Jo Smith",
            },
            "bank_code",
        ),
        (
            {
                "type": "bank_account",
                "country": "NG",
                "account_number": "0123456789",
                "bank_code": "058",
                "name": "Ada Obi",
            },
            None,
        ),
        (
            {
                "type": "bank_account",
                "country": "TR",
                "account_number": "12345678",
                "bank_code": "00061",
                "name": "Ali Veli",
            },
            "type",
        ),
        ({"type": "upi", "vpa": "asha@okhdfc", "name": "Asha Rao"}, None),
        ({"type": "upi", "vpa": "not a vpa", "name": "Asha Rao"}, "vpa"),
        ({"type": "paypal", "email": "jo@example.com", "name": "Jo Smith"}, None),
        ({"type": "stripe_account", "account_id": "acct_1234567890AB", "name": "Jo Smith"}, None),
        ({"type": "iban", "iban": "DE89 3704 0044 0532 0130 00", "country": "FR", "name": "Jo"}, "country"),
    ],
)
def test_destination_formats(raw: dict[str, Any], field: str | None) -> None:
    if field is None:
        assert validate_destination(raw)["type"] == raw["type"]
    else:
        with pytest.raises(InvalidDestination) as refused:
            validate_destination(raw)
        assert refused.value.extra["field"] == field
