"""Driving payments over HTTP: escrows, payments, the sandbox's hosted checkout page, signed webhooks."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from sqlalchemy import select
from standardwebhooks import Webhook

from emanet.core import clock
from emanet.core.db import Database
from emanet.core.models import Job
from emanet.core.settings import Settings
from emanet.ledger.service import balance
from emanet.providers.sandbox import DELIVER_WEBHOOK_JOB
from emanet.users.models import User
from tests.conftest import bearer

SUCCESS = "4242 4242 4242 4242"
DECLINED = "4000 0000 0000 0002"
INSUFFICIENT = "4000 0000 0000 9995"
THREE_D_SECURE = "4000 0000 0000 3220"
RETURN_URL = "https://shop.example/return"


async def create_escrow(
    http: httpx.AsyncClient, buyer: User, seller: User, amount: int = 100_000, **fields: Any
) -> dict[str, Any]:
    response = await http.post(
        "/api/v1/escrows",
        headers=bearer(buyer),
        json={
            "buyer_id": buyer.id,
            "seller_id": seller.id,
            "amount": {"amount": amount, "currency": "TRY"},
            "title": "Vintage camera",
            **fields,
        },
    )
    assert response.status_code == 201, response.text
    escrow: dict[str, Any] = response.json()
    return escrow


async def escrow_of(http: httpx.AsyncClient, user: User, escrow_id: str) -> dict[str, Any]:
    response = await http.get(f"/api/v1/escrows/{escrow_id}", headers=bearer(user))
    assert response.status_code == 200, response.text
    escrow: dict[str, Any] = response.json()
    return escrow


async def start_payment(
    http: httpx.AsyncClient, buyer: User, escrow_id: str, **fields: Any
) -> httpx.Response:
    return await http.post(
        "/api/v1/payments",
        headers=bearer(buyer),
        json={"escrow_id": escrow_id, "provider": "sandbox", "return_url": RETURN_URL, **fields},
    )


async def started(http: httpx.AsyncClient, buyer: User, escrow_id: str, **fields: Any) -> dict[str, Any]:
    response = await start_payment(http, buyer, escrow_id, **fields)
    assert response.status_code == 201, response.text
    payment: dict[str, Any] = response.json()
    return payment


async def get_payment(http: httpx.AsyncClient, user: User, payment_id: str) -> dict[str, Any]:
    response = await http.get(f"/api/v1/payments/{payment_id}", headers=bearer(user))
    assert response.status_code == 200, response.text
    payment: dict[str, Any] = response.json()
    return payment


async def checkout(
    http: httpx.AsyncClient, payment: dict[str, Any], card: str, *, cvc: str = "123", code: str | None = None
) -> dict[str, list[str]]:
    """Drive the sandbox's hosted page as a browser would: open it, submit the card (and the 3-D Secure code
    when asked); returns the query of the final redirect back to the return URL."""
    assert payment["next_action"]["type"] == "redirect"
    page_url = payment["next_action"]["url"]
    page = await http.get(page_url)
    assert page.status_code == 200 and "Card number" in page.text
    action = re.search(r'<form method="post" action="([^"]+)"', page.text)
    assert action is not None
    submitted = await http.post(
        action.group(1),
        data={
            "step": "card",
            "cardholder_name": "Ayse Yilmaz",
            "card_number": card,
            "expiry": "12/30",
            "cvc": cvc,
        },
    )
    assert submitted.status_code == 303, submitted.text
    location = submitted.headers["location"]
    if code is not None:
        challenge = await http.get(location)
        assert challenge.status_code == 200 and "3-D Secure" in challenge.text
        step_up = re.search(r'<form method="post" action="([^"]+)"', challenge.text)
        assert step_up is not None
        submitted = await http.post(
            step_up.group(1), data={"step": "three_d_secure", "three_d_secure_code": code}
        )
        assert submitted.status_code == 303, submitted.text
        location = submitted.headers["location"]
    parts = urlsplit(location)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == RETURN_URL, location
    return parse_qs(parts.query)


async def balances(database: Database, *codes: str, currency: str = "TRY") -> list[int]:
    async with database.transaction() as session:
        return [await balance(session, code, currency) for code in codes]


async def undelivered_sandbox_webhooks(database: Database) -> list[tuple[str, str]]:
    """(webhook-id, body) of the sandbox events its webhook delivery job still has to send."""
    async with database.transaction() as session:
        jobs = (
            (await session.execute(select(Job).where(Job.kind == DELIVER_WEBHOOK_JOB).order_by(Job.id)))
            .scalars()
            .all()
        )
        return [(job.payload["msg_id"], job.payload["body"]) for job in jobs]


def signed(
    settings: Settings, msg_id: str, body: str, *, at: datetime | None = None, secret: str | None = None
) -> dict[str, str]:
    """Standard Webhooks headers for ``body``, signed with the ``standardwebhooks`` library."""
    moment = at or clock.now()
    signature = Webhook(secret or settings.sandbox_webhook_secret).sign(msg_id, moment, body)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
    }
