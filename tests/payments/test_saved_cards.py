"""Saved cards are provider tokens with brand, last four digits and expiry; a card number or CVC is found
nowhere in Emanet — not in any column of any table, not in the logs."""

from __future__ import annotations

import re
from typing import Any

import orjson
from sqlalchemy import select

from emanet.core.db import Database
from emanet.models_registry import metadata
from emanet.payments.models import SavedCard
from tests.conftest import bearer
from tests.factories import Factory
from tests.invariants import assert_ledger_invariants
from tests.payments.conftest import Live, LogCapture
from tests.payments.helpers import SUCCESS, THREE_D_SECURE, checkout, create_escrow, escrow_of, started

CVC = "9517"


async def everything_stored(database: Database) -> str:
    """Every value of every row of every table, as text."""
    chunks: list[str] = []
    async with database.transaction() as session:
        for table in metadata.sorted_tables:
            for row in (await session.execute(select(table))).all():
                chunks.extend(orjson.dumps(value, default=str).decode() for value in row)
    return "\n".join(chunks)


async def test_saved_card_pays_again_and_can_be_deleted(
    live: Live, factory: Factory, database: Database
) -> None:
    buyer, seller, stranger = await factory.user(), await factory.user(), await factory.user()
    first = await create_escrow(live.http, buyer, seller)
    payment = await started(live.http, buyer, first["id"], save_card=True)
    await checkout(live.http, payment, SUCCESS)
    [card] = (await live.http.get("/api/v1/saved-cards", headers=bearer(buyer))).json()
    assert {k: card[k] for k in ("provider", "brand", "last4", "exp_month", "exp_year")} == {
        "provider": "sandbox",
        "brand": "visa",
        "last4": "4242",
        "exp_month": 12,
        "exp_year": 2030,
    }
    assert set(card) == {"id", "provider", "brand", "last4", "exp_month", "exp_year", "created_at"}
    async with database.transaction() as session:
        token = (await session.get_one(SavedCard, card["id"])).token
    assert token.startswith("tok_sandbox_")

    second = await create_escrow(live.http, buyer, seller, amount=20_000)
    strangers_escrow = await create_escrow(live.http, stranger, seller, amount=20_000)
    not_theirs = await live.http.post(
        "/api/v1/payments",
        headers=bearer(stranger),
        json={
            "escrow_id": strangers_escrow["id"],
            "saved_card_id": card["id"],
            "return_url": "https://shop.example/r",
        },
    )
    assert not_theirs.status_code == 404
    again = await live.http.post(
        "/api/v1/payments",
        headers=bearer(buyer),
        json={"escrow_id": second["id"], "saved_card_id": card["id"], "return_url": "https://shop.example/r"},
    )
    assert again.status_code == 201, again.text
    assert (again.json()["status"], again.json()["saved_card_id"]) == ("succeeded", card["id"])
    assert (await escrow_of(live.http, buyer, second["id"]))["status"] == "funded"

    assert (
        await live.http.delete(f"/api/v1/saved-cards/{card['id']}", headers=bearer(stranger))
    ).status_code == 404
    deleted = await live.http.delete(f"/api/v1/saved-cards/{card['id']}", headers=bearer(buyer))
    assert deleted.status_code == 200 and deleted.json()["last4"] == "4242"
    assert (await live.http.get("/api/v1/saved-cards", headers=bearer(buyer))).json() == []
    assert (
        await live.http.delete(f"/api/v1/saved-cards/{card['id']}", headers=bearer(buyer))
    ).status_code == 404
    await assert_ledger_invariants(database)


async def test_no_card_number_or_cvc_anywhere(
    live: Live, factory: Factory, database: Database, logs: LogCapture, run_jobs: Any
) -> None:
    buyer, seller = await factory.user(), await factory.user()
    for card, code in ((SUCCESS, None), (THREE_D_SECURE, "123456")):
        escrow = await create_escrow(live.http, buyer, seller)
        payment = await started(live.http, buyer, escrow["id"], save_card=True)
        await checkout(live.http, payment, card, cvc=CVC, code=code)
    await run_jobs()  # deliveries, notifications, fee refreshes: everything that copies data around
    stored = await everything_stored(database)
    assert "tok_sandbox_" in stored and "4242" in stored  # the scan does see the cards' rows
    assert logs.events("payment_transition")  # …and the server's log
    for text, where in ((stored, "the database"), (logs.text, "the log")):
        for number in (SUCCESS, THREE_D_SECURE):
            for form in (number, number.replace(" ", "")):
                assert form not in text, f"card number {form} found in {where}"
        assert not re.search(rf"\b{CVC}\b", text), f"CVC found in {where}"
