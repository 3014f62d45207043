"""A local Jetcheckout: the hosted-payment ``prepare`` call, the status query, refund and cancel.

Shapes follow Projet's public Odoo integrations (see ``emanet/providers/jetcheckout.py``): ``prepare``
answers ``{"status": 0, "message": "Success", "hash", "url"}`` and refuses a wrong hash with 401; the status
query answers ``response_code "00200"`` with ``successful/completed/cancelled`` flags and decimal amounts,
or another code while no payment attempt exists; refund/cancel answer ``response_code "00"``.

``pay(order_id, outcome)`` plays the payer on the hosted page (3-D Secure included).
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

OUTCOMES = {
    "success": (True, None, None),
    "declined": (False, "05", "Do not honour"),
    "insufficient_funds": (False, "51", "Insufficient funds"),
    "3ds_failed": (False, "3D", "3-D Secure authentication failed"),
}


class RecordingServer(HTTPServer):
    """Records each request when it arrives (the server log only has it once it was answered)."""

    def __init__(self) -> None:
        super().__init__(host="127.0.0.1", threaded=True)
        self.received: list[tuple[str, bytes]] = []

    def dispatch(self, request: Request) -> Response:
        self.received.append((request.path, request.get_data()))
        return super().dispatch(request)


@dataclass
class FakeOrder:
    order_id: str
    amount: Decimal
    currency: str
    outcome: str | None = None  # None until the payer finishes the hosted page
    completed: bool = False  # the day's batch closed
    cancelled: bool = False
    refunded_minor: int = 0


class JetcheckoutFake:
    def __init__(
        self,
        api_key: str,
        secret_key: str,
        *,
        fee_rate: Decimal = Decimal("0.0279"),
        server: RecordingServer | None = None,
    ) -> None:
        self.api_key = api_key
        self.secret_key = secret_key
        self.fee_rate = fee_rate
        self.orders: dict[str, FakeOrder] = {}
        # A server shared by a test module saves a start and a stop per test; state stays per fake.
        self._owns_server = server is None
        self.server = server or RecordingServer()

    def __enter__(self) -> JetcheckoutFake:
        if self._owns_server:
            self.server.start()
        for path, handler in (
            ("prepare", self._prepare),
            ("status", self._status),
            ("refund", self._refund),
            ("cancel", self._cancel),
        ):
            self.server.expect_request(f"/api/v1/payment/{path}", method="POST").respond_with_handler(handler)
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
    def pay(self, order_id: str, outcome: str = "success") -> None:
        self.orders[order_id].outcome = outcome

    def fail_next(self, path: str, status: int = 503, times: int = 1) -> None:
        for _ in range(times):
            self.server.expect_oneshot_request(path, method="POST").respond_with_data("upstream", status)

    def hang_next(self, path: str, seconds: float, times: int = 1) -> None:
        def slow(request: Request) -> Response:
            time.sleep(seconds)
            return Response("late", status=200)

        for _ in range(times):
            self.server.expect_oneshot_request(path, method="POST").respond_with_handler(slow)

    def calls(self, path: str) -> list[dict[str, Any]]:
        return [json.loads(body) for received, body in self.server.received if received == path]

    def order_hash(self, order_id: str) -> str:
        material = self.api_key + self.secret_key + order_id
        return base64.b64encode(hashlib.sha256(material.encode()).digest()).decode()

    # ---- handlers
    def _prepare(self, request: Request) -> Response:
        body = json.loads(request.get_data())
        if body.get("apikey") != self.api_key:
            return Response("Application key is not matched", status=401)
        if body.get("hash") != self.order_hash(str(body.get("id"))):
            return Response("Hash is not matched", status=401)
        order_id = str(body["id"])
        self.orders[order_id] = FakeOrder(order_id, Decimal(str(body["amount"])), body["currency"])
        token = quote(body["hash"], safe="")
        page = f"{self.url}/payment?={token}"
        return _json({"status": 0, "message": "Success", "hash": token, "url": page})

    def _status(self, request: Request) -> Response:
        body = json.loads(request.get_data())
        if body.get("application_key") != self.api_key:
            return Response("Application key is not matched", status=401)
        order = self.orders.get(str(body.get("order_id")))
        if order is None or order.outcome is None:
            return _json({"response_code": "00404", "message": "Transaction not found"})
        successful, code, message = OUTCOMES[order.outcome]
        answer: dict[str, Any] = {
            "response_code": "00200",
            "message": "Success",
            "successful": successful,
            "completed": order.completed,
            "cancelled": order.cancelled,
            "is_3d": True,
            "amount": float(order.amount),
            "currency": order.currency,
            "commission_amount": float((order.amount * self.fee_rate).quantize(Decimal("0.01"))),
            "expected_cost_rate": float(self.fee_rate * 100),
            "transaction_id": f"jt_{order.order_id}",
            "virtual_pos_name": "Fake Bank",
            "auth_code": "123456" if successful else "",
            "service_ref_id": "ref",
            "card_number": "454360******4567",
            "card_family": "Bonus",
            "card_program": "VISA",
        }
        if not successful:
            answer.update(service_resp_code=code, service_resp_message=message)
        return _json(answer)

    def _refund(self, request: Request) -> Response:
        body = json.loads(request.get_data())
        order = self.orders.get(str(body.get("order_id")))
        if order is None or body.get("transaction_id") != f"jt_{order.order_id}":
            return _json({"response_code": "00104", "message": "Transaction not found"})
        total_minor = int(order.amount * 100)
        if not isinstance(body.get("amount"), int) or order.refunded_minor + body["amount"] > total_minor:
            return _json({"response_code": "00111", "message": "Refund amount is not valid"})
        order.refunded_minor += body["amount"]
        return _json(
            {
                "response_code": "00",
                "message": "Success",
                "transaction_id": f"jr_{order.order_id}_{order.refunded_minor}",
            }
        )

    def _cancel(self, request: Request) -> Response:
        body = json.loads(request.get_data())
        order = self.orders.get(str(body.get("order_id")))
        if order is None or order.completed:
            return _json({"response_code": "00105", "message": "Transaction cannot be cancelled"})
        order.cancelled = True
        return _json({"response_code": "00", "message": "Success"})


def _json(payload: dict[str, Any]) -> Response:
    return Response(json.dumps(payload), status=200, content_type="application/json")
