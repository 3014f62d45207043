"""A real local SMTP server (aiosmtpd) and local fakes of the Twilio and MessageBird HTTP APIs."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

TWILIO_SID = "AC00000000000000000000000000000001"
TWILIO_TOKEN = "twilio-test-auth-token"
TWILIO_FROM = "+15005550006"
MESSAGEBIRD_KEY = "mb-test-access-key"


class Mailbox:
    """The aiosmtpd handler: keeps every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[tuple[Any, EmailMessage]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((envelope, message_from_bytes(envelope.content, policy=policy.default)))
        return "250 Message accepted for delivery"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def smtp_server() -> Iterator[tuple[Mailbox, int]]:
    mailbox, port = Mailbox(), free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield mailbox, port
    finally:
        controller.stop()


@dataclass
class SmsFakes:
    """Twilio's ``POST /2010-04-01/Accounts/{sid}/Messages.json`` and MessageBird's ``POST /messages``."""

    twilio_failures: list[tuple[int, dict[str, Any]]] = field(
        default_factory=list
    )  # answered first, in order
    messagebird_failures: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    twilio_requests: list[dict[str, Any]] = field(default_factory=list)
    messagebird_requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def twilio(self, request: Request) -> Response:
        with self.lock:
            self.twilio_requests.append({"form": dict(request.form), "authorization": request.authorization})
            if self.twilio_failures:
                status, body = self.twilio_failures.pop(0)
                return Response(json.dumps(body), status=status, content_type="application/json")
            n = len(self.twilio_requests)
        auth = request.authorization
        if auth is None or (auth.username, auth.password) != (TWILIO_SID, TWILIO_TOKEN):
            return Response(
                json.dumps({"code": 20003, "message": "Authenticate", "status": 401}),
                status=401,
                content_type="application/json",
            )
        form = request.form
        return Response(
            json.dumps(
                {
                    "sid": f"SM{n:032d}",
                    "account_sid": TWILIO_SID,
                    "to": form["To"],
                    "from": form["From"],
                    "body": form["Body"],
                    "status": "queued",
                    "num_segments": "1",
                    "direction": "outbound-api",
                    "error_code": None,
                    "error_message": None,
                    "api_version": "2010-04-01",
                    "uri": f"/2010-04-01/Accounts/{TWILIO_SID}/Messages/SM{n:032d}.json",
                }
            ),
            status=201,
            content_type="application/json",
        )

    def messagebird(self, request: Request) -> Response:
        with self.lock:
            body = request.get_json()
            self.messagebird_requests.append(
                {"json": body, "authorization": request.headers.get("Authorization")}
            )
            if self.messagebird_failures:
                status, failure = self.messagebird_failures.pop(0)
                return Response(json.dumps(failure), status=status, content_type="application/json")
            n = len(self.messagebird_requests)
        if request.headers.get("Authorization") != f"AccessKey {MESSAGEBIRD_KEY}":
            return Response(
                json.dumps({"errors": [{"code": 2, "description": "Request not allowed"}]}),
                status=401,
                content_type="application/json",
            )
        return Response(
            json.dumps(
                {
                    "id": f"mb{n:030d}",
                    "direction": "mt",
                    "type": "sms",
                    "originator": body["originator"],
                    "body": body["body"],
                    "recipients": {
                        "totalCount": 1,
                        "totalSentCount": 1,
                        "items": [{"recipient": int(body["recipients"][0]), "status": "sent"}],
                    },
                }
            ),
            status=201,
            content_type="application/json",
        )


@pytest.fixture
def sms_fakes(httpserver: HTTPServer) -> SmsFakes:
    fakes = SmsFakes()
    httpserver.expect_request(
        f"/twilio/2010-04-01/Accounts/{TWILIO_SID}/Messages.json", method="POST"
    ).respond_with_handler(fakes.twilio)
    httpserver.expect_request("/messagebird/messages", method="POST").respond_with_handler(fakes.messagebird)
    return fakes


def sms_settings(httpserver: HTTPServer) -> dict[str, Any]:
    return {
        "sms_provider": "twilio",
        "sms_fallback_provider": "messagebird",
        "twilio_account_sid": TWILIO_SID,
        "twilio_auth_token": TWILIO_TOKEN,
        "twilio_from_number": TWILIO_FROM,
        "twilio_api_base": httpserver.url_for("/twilio"),
        "messagebird_access_key": MESSAGEBIRD_KEY,
        "messagebird_api_base": httpserver.url_for("/messagebird"),
    }
