"""A local Moyasar: payments (token source, 3-D Secure, ``given_id`` idempotency), invoices, refunds,
and webhook bodies carrying ``secret_token``. Shapes from docs.moyasar.com (Payment Object, Invoices,
Webhook Reference); amounts in halalas.

Test tokens: ``token_3ds`` needs the 3-D Secure page (``finish_3ds``), ``token_frictionless`` is paid at
once, ``token_insufficient`` is declined. ``pay_invoice`` plays the payer on the hosted invoice page.
"""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
from typing import Any

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

DECLINES = {
    "insufficient_funds": ("51", "INSUFFICIENT_FUNDS"),
    "declined": ("05", "DECLINED"),
    "3ds_failed": ("3D", "3-D Secure transaction attempt failed"),
}
CARD_BRANDS = {"mada": "mada", "card": "visa", "apple_pay": "visa"}


class RecordingServer(HTTPServer):
    """Records each request when it arrives (the server log only has it once it was answered)."""

    def __init__(self) -> None:
        super().__init__(host="127.0.0.1", threaded=True)
        self.received: list[tuple[str, str, bytes]] = []

    def dispatch(self, request: Request) -> Response:
        self.received.append((request.method, request.path, request.get_data()))
        return super().dispatch(request)


class MoyasarFake:
    def __init__(
        self, secret_key: str, webhook_token: str, *, fee: int = 230, server: RecordingServer | None = None
    ) -> None:
        self.secret_key = secret_key
        self.webhook_token = webhook_token
        self.fee = fee
        self.payments: dict[str, dict[str, Any]] = {}
        self.invoices: dict[str, dict[str, Any]] = {}
        self.by_given_id: dict[str, str] = {}
        # A server shared by a test module saves a start and a stop per test; state stays per fake.
        self._owns_server = server is None
        self.server = server or RecordingServer()

    def __enter__(self) -> MoyasarFake:
        if self._owns_server:
            self.server.start()
        routes = [
            ("/v1/payments", "POST", self._create_payment),
            (re.compile(r"^/v1/payments/[^/]+$"), "GET", self._fetch_payment),
            (re.compile(r"^/v1/payments/[^/]+/refund$"), "POST", self._refund),
            ("/v1/invoices", "POST", self._create_invoice),
            (re.compile(r"^/v1/invoices/[^/]+$"), "GET", self._fetch_invoice),
        ]
        for uri, method, handler in routes:
            self.server.expect_request(uri, method=method).respond_with_handler(handler)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.clear()
        self.server.received.clear()
        if self._owns_server:
            self.server.stop()

    @property
    def url(self) -> str:
        return self.server.url_for("").rstrip("/")

    # ---- test controls
    def finish_3ds(self, payment_id: str, *, passed: bool = True) -> None:
        payment = self.payments[payment_id]
        if passed:
            payment.update(status="paid", fee=self.fee)
            payment["source"].update(message="APPROVED", transaction_url=None)
        else:
            self._decline(payment, "3ds_failed")

    def pay_invoice(self, invoice_id: str, outcome: str = "paid", method: str = "mada") -> dict[str, Any]:
        invoice = self.invoices[invoice_id]
        payment = self._new_payment(
            invoice["amount"],
            invoice["currency"],
            invoice["description"],
            {
                "type": "creditcard",
                "company": CARD_BRANDS.get(method, "visa"),
                "name": "Sara A",
                "number": "4201-32XX-XXXX-1010",
                "month": 9,
                "year": 2030,
            },
        )
        payment["invoice_id"] = invoice_id
        if outcome == "paid":
            payment.update(status="paid", fee=self.fee)
            invoice["status"] = "paid"
        else:
            self._decline(payment, outcome)
        invoice["payments"].append(payment)
        return payment

    def webhook_body(
        self,
        event_type: str,
        payment: dict[str, Any],
        *,
        token: str | None = None,
        event_id: str | None = None,
    ) -> bytes:
        return json.dumps(
            {
                "id": event_id or str(uuid.uuid4()),
                "type": event_type,
                "created_at": "2026-11-22T09:00:00.000Z",
                "secret_token": self.webhook_token if token is None else token,
                "account_name": "Emanet",
                "live": False,
                "data": payment,
            }
        ).encode()

    def fail_next(self, method: str, uri: str | re.Pattern[str], status: int = 503, times: int = 1) -> None:
        for _ in range(times):
            self.server.expect_oneshot_request(uri, method=method).respond_with_data("bad gateway", status)

    def hang_next(
        self, method: str, uri: str | re.Pattern[str], seconds: float, *, process: bool = False
    ) -> None:
        """Answer the next matching request too late; with ``process`` it takes effect first (the
        provider did the work and only the answer is lost)."""

        def slow(request: Request) -> Response:
            answer = self.server.handlers.match(request).respond(request) if process else Response("late")
            time.sleep(seconds)
            return answer

        self.server.expect_oneshot_request(uri, method=method).respond_with_handler(slow)

    def calls(self, method: str, path: str) -> list[bytes]:
        return [body for m, p, body in self.server.received if m == method and p == path]

    # ---- handlers
    def _authorized(self, request: Request) -> bool:
        expected = "Basic " + base64.b64encode(f"{self.secret_key}:".encode()).decode()
        return request.headers.get("Authorization") == expected

    def _create_payment(self, request: Request) -> Response:
        if not self._authorized(request):
            return _json({"type": "authentication_error", "message": "Invalid credentials"}, 401)
        body = json.loads(request.get_data())
        if not isinstance(body.get("amount"), int) or body["amount"] < 100:
            return _json(
                {
                    "type": "invalid_request_error",
                    "message": "Validation Failed",
                    "errors": {"amount": ["must be an integer of at least 100"]},
                },
                400,
            )
        if body.get("given_id") in self.by_given_id:
            return _json(self.payments[self.by_given_id[body["given_id"]]], 201)
        token = body["source"]["token"]
        payment = self._new_payment(
            body["amount"],
            body["currency"],
            body.get("description"),
            {
                "type": "token",
                "company": "mada",
                "name": "Sara A",
                "number": "4464-04XX-XXXX-1234",
                "month": 9,
                "year": 2030,
            },
        )
        payment["callback_url"] = body.get("callback_url")
        payment["metadata"] = body.get("metadata")
        self.by_given_id[body["given_id"]] = payment["id"]
        if token == "token_3ds":
            payment["source"]["transaction_url"] = f"{self.url}/3ds/{payment['id']}"
        elif token == "token_frictionless":
            payment.update(status="paid", fee=self.fee)
        else:
            self._decline(payment, "insufficient_funds")
        return _json(payment, 201)

    def _fetch_payment(self, request: Request) -> Response:
        payment = self.payments.get(request.path.rsplit("/", 1)[-1])
        if payment is None:
            return _json({"type": "api_error", "message": "Object not found"}, 404)
        return _json(payment)

    def _refund(self, request: Request) -> Response:
        payment = self.payments.get(request.path.split("/")[3])
        amount = json.loads(request.get_data() or b"{}").get("amount", None)
        if payment is None:
            return _json({"type": "api_error", "message": "Object not found"}, 404)
        if (
            payment["status"] not in {"paid", "refunded"}
            or not isinstance(amount, int)
            or payment["refunded"] + amount > payment["amount"]
        ):
            return _json({"type": "invalid_request_error", "message": "Refund exceeds the payment"}, 400)
        payment["refunded"] += amount
        payment["status"] = "refunded"
        return _json(payment)

    def _create_invoice(self, request: Request) -> Response:
        if not self._authorized(request):
            return _json({"type": "authentication_error", "message": "Invalid credentials"}, 401)
        body = json.loads(request.get_data())
        invoice_id = str(uuid.uuid4())
        invoice = {
            "id": invoice_id,
            "status": "initiated",
            "amount": body["amount"],
            "currency": body["currency"],
            "description": body["description"],
            "url": f"{self.url}/invoices/{invoice_id}",
            "success_url": body.get("success_url"),
            "back_url": body.get("back_url"),
            "metadata": body.get("metadata"),
            "payments": [],
        }
        self.invoices[invoice_id] = invoice
        return _json(invoice, 201)

    def _fetch_invoice(self, request: Request) -> Response:
        invoice = self.invoices.get(request.path.rsplit("/", 1)[-1])
        return _json(invoice) if invoice else _json({"type": "api_error", "message": "Object not found"}, 404)

    def _new_payment(
        self, amount: int, currency: str, description: str | None, source: dict[str, Any]
    ) -> dict[str, Any]:
        payment = {
            "id": str(uuid.uuid4()),
            "status": "initiated",
            "amount": amount,
            "fee": 0,
            "currency": currency,
            "refunded": 0,
            "captured": 0,
            "description": description,
            "invoice_id": None,
            "source": {**source, "message": None, "transaction_url": None},
        }
        self.payments[payment["id"]] = payment
        return payment

    @staticmethod
    def _decline(payment: dict[str, Any], reason: str) -> None:
        code, message = DECLINES[reason]
        payment["status"] = "failed"
        payment["source"].update(response_code=code, message=message, transaction_url=None)


def _json(payload: dict[str, Any], status: int = 200) -> Response:
    return Response(json.dumps(payload), status=status, content_type="application/json")
