"""SMS adapters against local fakes of Twilio (driven by the official SDK) and MessageBird: retries,
fallback, the hourly cap, delivery receipts."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from pytest_httpserver import HTTPServer
from sqlalchemy import select
from twilio.request_validator import RequestValidator

from emanet.core.db import Database
from emanet.core.outbox import emit_event
from emanet.core.settings import Settings
from emanet.notifications import sms
from emanet.notifications.models import Notification, SmsMessage
from tests.factories import Factory
from tests.notifications.conftest import (
    MESSAGEBIRD_KEY,
    TWILIO_FROM,
    TWILIO_SID,
    TWILIO_TOKEN,
    SmsFakes,
    sms_settings,
)

TWILIO_SERVER_ERROR = (500, {"code": 20500, "message": "Internal Server Error", "status": 500})
TWILIO_BAD_NUMBER = (
    400,
    {"code": 21211, "message": "The 'To' number is not a valid phone number.", "status": 400},
)


@pytest.fixture
def settings_overrides(httpserver: HTTPServer) -> dict[str, Any]:
    return sms_settings(httpserver)


async def test_twilio_sends_through_the_official_sdk(settings: Settings, sms_fakes: SmsFakes) -> None:
    receipt = await sms.build_gateway(settings).send("+905551234567", "Merhaba")
    assert (receipt.provider, receipt.status, receipt.attempts) == ("twilio", "queued", 1)
    assert receipt.message_id.startswith("SM")
    [request] = sms_fakes.twilio_requests
    assert request["form"] == {"To": "+905551234567", "From": TWILIO_FROM, "Body": "Merhaba"}
    assert (request["authorization"].username, request["authorization"].password) == (
        TWILIO_SID,
        TWILIO_TOKEN,
    )
    assert sms_fakes.messagebird_requests == []


async def test_a_failing_twilio_is_retried_then_messagebird_takes_over(
    settings: Settings, sms_fakes: SmsFakes
) -> None:
    sms_fakes.twilio_failures = [TWILIO_SERVER_ERROR, TWILIO_SERVER_ERROR]
    receipt = await sms.build_gateway(settings).send("+905551234567", "Merhaba")
    assert (receipt.provider, receipt.status, receipt.attempts) == ("messagebird", "sent", 3)
    assert len(receipt.errors) == 2 and "HTTP 500 code 20500" in receipt.errors[0]
    [request] = sms_fakes.messagebird_requests
    assert request["json"] == {"recipients": ["905551234567"], "originator": "Emanet", "body": "Merhaba"}
    assert request["authorization"] == f"AccessKey {MESSAGEBIRD_KEY}"


async def test_a_refused_message_is_not_retried_on_the_same_provider(
    settings: Settings, sms_fakes: SmsFakes
) -> None:
    sms_fakes.twilio_failures = [TWILIO_BAD_NUMBER]
    receipt = await sms.build_gateway(settings).send("+905551234567", "Merhaba")
    assert (receipt.provider, receipt.attempts) == ("messagebird", 2)
    assert len(sms_fakes.twilio_requests) == 1


async def test_every_provider_failing_reports_every_error(settings: Settings, sms_fakes: SmsFakes) -> None:
    sms_fakes.twilio_failures = [TWILIO_SERVER_ERROR] * 2
    sms_fakes.messagebird_failures = [(503, {"errors": [{"code": 99, "description": "Down"}]})] * 2
    with pytest.raises(sms.SmsDeliveryFailed) as failed:
        await sms.build_gateway(settings).send("+905551234567", "Merhaba")
    assert failed.value.attempts == 4
    assert "messagebird: HTTP 503: 99: Down" in str(failed.value)


async def test_an_unreachable_provider_falls_back(settings: Settings, sms_fakes: SmsFakes) -> None:
    unreachable = settings.model_copy(update={"twilio_api_base": "http://127.0.0.1:9"})
    receipt = await sms.build_gateway(unreachable).send("+905551234567", "Merhaba")
    assert receipt.provider == "messagebird" and "ConnectError" in receipt.errors[0]


async def _funded_event_for(database: Database, user_id: str) -> None:
    async with database.transaction() as session:
        await emit_event(
            session,
            "escrow.funded",
            "esc_sms",
            {
                "id": "esc_sms",
                "number": "EM-2026-000042",
                "title": "Bike",
                "amount": 12550,
                "currency": "TRY",
                "seller_id": user_id,
                "buyer_id": "usr_elsewhere",
            },
        )


async def test_notification_sms_is_recorded_with_its_delivery_status(
    database: Database, factory: Factory, run_jobs: Any, sms_fakes: SmsFakes, clock: Any
) -> None:
    seller = await factory.user(phone_verified_at=clock.now(), locale="en")
    await _funded_event_for(database, seller.id)
    await run_jobs()
    async with database.transaction() as session:
        [message] = (await session.execute(select(SmsMessage))).scalars().all()
        [notification] = (await session.execute(select(Notification))).scalars().all()
    assert (message.provider, message.status, message.to_phone, message.user_id) == (
        "twilio",
        "queued",
        seller.phone,
        seller.id,
    )
    assert message.text_masked.startswith("Emanet: Escrow EM-2026-000042 is funded.")
    assert notification.sms_status == "sent"
    assert sms_fakes.twilio_requests[0]["form"]["Body"] == message.text_masked


async def test_the_hourly_cap_stops_sms_per_account(
    database: Database, factory: Factory, settings: Settings, sms_fakes: SmsFakes, clock: Any
) -> None:
    from emanet.core.worker import Worker

    capped = Worker(database, settings.model_copy(update={"sms_hourly_cap_per_account": 1})).run_until_idle
    seller = await factory.user(phone_verified_at=clock.now())
    await _funded_event_for(database, seller.id)
    async with database.transaction() as session:
        await emit_event(session, "escrow.released", "esc_sms", {"id": "esc_sms", "seller_id": seller.id})
    await capped()
    async with database.transaction() as session:
        statuses = sorted((await session.execute(select(SmsMessage.status))).scalars().all())
        channel = sorted((await session.execute(select(Notification.sms_status))).scalars().all())
    assert statuses == ["queued", "rejected"]
    assert channel == ["sent", "skipped"]
    assert len(sms_fakes.twilio_requests) == 1
    clock.advance(hours=1, seconds=1)
    async with database.transaction() as session:
        assert await sms.within_hourly_cap(
            session, settings.model_copy(update={"sms_hourly_cap_per_account": 1}), seller.id
        )


async def test_twilio_delivery_receipts_update_the_record(
    client: httpx.AsyncClient,
    database: Database,
    factory: Factory,
    run_jobs: Any,
    settings: Settings,
    sms_fakes: SmsFakes,
    clock: Any,
) -> None:
    seller = await factory.user(phone_verified_at=clock.now())
    await _funded_event_for(database, seller.id)
    await run_jobs()
    async with database.transaction() as session:
        message = (await session.execute(select(SmsMessage))).scalar_one()
    url = settings.public_url + "/api/v1/webhooks/sms/twilio"
    form = {"MessageSid": message.provider_message_id, "MessageStatus": "delivered", "AccountSid": TWILIO_SID}
    forged = await client.post(
        "/api/v1/webhooks/sms/twilio", data=form, headers={"X-Twilio-Signature": "bad"}
    )
    assert forged.status_code == 403
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(url, form)
    signed = await client.post(
        "/api/v1/webhooks/sms/twilio", data=form, headers={"X-Twilio-Signature": signature}
    )
    assert signed.status_code == 200, signed.text
    assert signed.json() == {"received": True}
    late = {**form, "MessageStatus": "sent"}  # a late intermediate status never overwrites a final one
    stale = await client.post(
        "/api/v1/webhooks/sms/twilio",
        data=late,
        headers={"X-Twilio-Signature": RequestValidator(TWILIO_TOKEN).compute_signature(url, late)},
    )
    assert stale.json() == {"received": False}
    async with database.transaction() as session:
        delivered = (await session.execute(select(SmsMessage))).scalar_one()
    assert (delivered.status, delivered.delivered_at) == ("delivered", clock.now())
