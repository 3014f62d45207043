"""One structured JSON line per request; secrets, tokens, card numbers and OTP codes never reach the log."""

from __future__ import annotations

import io
import logging

import httpx
import pytest
import structlog

from emanet.core.logging import REDACTED, configure_logging, scrub_text
from tests.conftest import bearer
from tests.core.conftest import LogCapture
from tests.factories import Factory

CARD = "4111 1111 1111 1111"
OTP = "483920"
PASSWORD = "hunter2-Correct-Horse"
SECRETS = {"card_number": CARD, "otp": OTP, "password": PASSWORD}


async def test_access_log_line(client: httpx.AsyncClient, factory: Factory, logs: LogCapture) -> None:
    user = await factory.user()
    response = await client.get("/api/v1/me", headers={**bearer(user), "User-Agent": "shop-backend/2.1"})
    [line] = [r for r in logs.events("request") if r["path"] == "/api/v1/me"]
    assert line["method"] == "GET"
    assert line["route"] == "/api/v1/me"
    assert line["status"] == 200
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    assert line["user_id"] == user.id
    assert line["ip"] == "203.0.113.7"
    assert line["user_agent"] == "shop-backend/2.1"
    assert line["request_id"] == response.headers["x-request-id"]
    assert line["level"] == "info" and line["timestamp"].endswith("Z")


async def test_secrets_never_reach_the_log(
    client: httpx.AsyncClient, factory: Factory, logs: LogCapture
) -> None:
    user = await factory.user()
    headers = bearer(user)
    token = headers["Authorization"].removeprefix("Bearer ")
    api_key = (
        await client.post("/api/v1/api-keys", json={"name": "k", "scopes": ["escrows:read"]}, headers=headers)
    ).json()["key"]
    sneaky = {"User-Agent": f"curl Bearer {token} otp={OTP}", "X-Card": CARD, "Cookie": f"session={token}"}
    # In headers and bodies, in an error's message (500), in structured and free-text log fields, and in a
    # validation error that echoes nothing but the field names.
    await client.post("/_test/crash", json=SECRETS, headers={**headers, **sneaky})
    await client.post("/_test/log-secrets", json=SECRETS, headers={**headers, **sneaky})
    await client.post("/_test/log-secrets", json=SECRETS, headers={"Authorization": f"Bearer {api_key}"})
    await client.post("/_test/log-secrets", json={**SECRETS, "cvv": "123"}, headers=headers)
    await client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}x"})
    text = logs.text
    assert logs.events("unhandled_error") and logs.events("sensitive_fields")
    assert len(logs.events("request")) == 6
    for secret in (token, api_key, CARD, CARD.replace(" ", ""), OTP, PASSWORD):
        assert secret not in text, f"{secret!r} leaked into the log"
    assert REDACTED in text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Bearer abc.def.ghi", "Authorization: [redacted]"),
        ("card 4111-1111-1111-1111 declined", "card [redacted] declined"),
        ("your code: 123456", "your code: [redacted]"),
        ('{"password": "pw", "note": "ok"}', '{"password": "[redacted]", "note": "ok"}'),
        ("key emk_abcDEF123_-x used", "key [redacted] used"),
        ("secret whsec_c2VjcmV0 rotated", "secret [redacted] rotated"),
        # Not secrets: ids, amounts, timings and numbers that fail the card checksum stay readable.
        ("payment pay_01jabc of 125000 TRY took 12 ms", "payment pay_01jabc of 125000 TRY took 12 ms"),
        ("order 4111111111111112", "order 4111111111111112"),
        ("phone +905551234567", "phone +905551234567"),
    ],
)
def test_scrub_text(text: str, expected: str) -> None:
    assert scrub_text(text) == expected


def test_events_below_the_level_skip_the_processors() -> None:
    """At WARNING an info event is dropped before redaction and rendering, which would cost every request."""
    rendered: list[str] = []

    class Spy(str):
        def __str__(self) -> str:  # the redaction reads every key of a logged mapping
            rendered.append("scrubbed")
            return str.__str__(self)

    saved_config, root = structlog.get_config(), logging.getLogger()
    saved_level, saved_handlers = root.level, root.handlers
    try:
        configure_logging("WARNING")
        root.handlers[0].setStream(io.StringIO())  # type: ignore[attr-defined]
        log = structlog.get_logger("emanet.test")
        log.info("dropped", fields={Spy("note"): 1})
        assert rendered == []
        log.warning("kept", fields={Spy("note"): 1})
        assert rendered == ["scrubbed"]
        assert root.handlers[0].stream.getvalue().count('"kept"') == 1  # type: ignore[attr-defined]
    finally:
        structlog.configure(**saved_config)
        root.setLevel(saved_level)
        root.handlers = saved_handlers
