"""A local PayTabs (PT2): ``/payment/request`` (sale page and refund), ``/payment/query``, the signed IPN
and the signed browser return. Shapes from the PT2 API documentation; the server key sits in the
``authorization`` header; amounts are decimal numbers in the currency's unit.

``pay(tran_ref, outcome)`` plays the payer on the hosted page (3-D Secure included) and returns what the
browser posts back to the return URL, signed as PayTabs signs it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from decimal import Decimal
from typing import Any

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

RESULTS = {
    "authorised": ("A", "G77015", "Authorised"),
    "declined": ("D", "51", "Insufficient funds"),
    "3ds_failed": ("D", "3DS", "3DSecure authentication failed"),
    "error": ("E", "400", "Processing error"),
}


class RecordingServer(HTTPServer):
    """Records each request when it arrives (the server log only has it once it was answered)."""

    def __init__(self) -> None:
        super().__init__(host="127.0.0.1", threaded=True)
        self.received: list[tuple[str, bytes]] = []

    def dispatch(self, request: Request) -> Response:
        self.received.append((request.path, request.get_data()))
        return super().dispatch(request)


class PaytabsFake:
    def __init__(self, profile_id: int, server_key: str, *, server: RecordingServer | None = None) -> None:
        self.profile_id = profile_id
        self.server_key = server_key
        self.transactions: dict[str, dict[str, Any]] = {}
        # A server shared by a test module saves a start and a stop per test; state stays per fake.
        self._owns_server = server is None
        self.server = server or RecordingServer()

    def __enter__(self) -> PaytabsFake:
        if self._owns_server:
            self.server.start()
        self.server.expect_request("/payment/request", method="POST").respond_with_handler(self._request)
        self.server.expect_request("/payment/query", method="POST").respond_with_handler(self._query)
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
    def pay(self, tran_ref: str, outcome: str = "authorised") -> dict[str, str]:
        """The payer finishes the page; returns the signed form the browser posts to the return URL."""
        transaction = self.transactions[tran_ref]
        status, code, message = RESULTS[outcome]
        transaction["payment_result"] = {
            "response_status": status,
            "response_code": code,
            "response_message": message,
            "transaction_time": "2026-11-22T09:00:00Z",
        }
        transaction["payment_info"] = {
            "payment_method": "Visa",
            "card_type": "Credit",
            "card_scheme": "Visa",
            "payment_description": "4111 11## #### 1111",
            "expiryMonth": 12,
            "expiryYear": 2030,
        }
        if transaction.pop("tokenise", False):
            transaction["token"] = "2C4654BC67A3E935C6B691FD6C8374BD"
        form = {
            "acquirerMessage": "",
            "acquirerRRN": "",
            "cartId": transaction["cart_id"],
            "customerEmail": "sara@example.com",
            "respCode": code,
            "respMessage": message,
            "respStatus": status,
            "token": transaction.get("token", ""),
            "tranRef": tran_ref,
        }
        form["signature"] = self.sign_return(form)
        return form

    def sign_return(self, form: dict[str, str]) -> str:
        fields = sorted((k, v) for k, v in form.items() if k != "signature" and v != "")
        query = "&".join(f"{_php_urlencode(k)}={_php_urlencode(v)}" for k, v in fields)
        return hmac.new(self.server_key.encode(), query.encode(), hashlib.sha256).hexdigest()

    def ipn(self, tran_ref: str) -> tuple[dict[str, str], bytes]:
        """The IPN PayTabs posts to the callback URL: headers and raw body."""
        body = json.dumps(self._public(self.transactions[tran_ref])).encode()
        signature = hmac.new(self.server_key.encode(), body, hashlib.sha256).hexdigest()
        return {"Content-Type": "application/json", "Signature": signature}, body

    def fail_next(self, path: str, status: int = 503, times: int = 1) -> None:
        for _ in range(times):
            self.server.expect_oneshot_request(path, method="POST").respond_with_data("unavailable", status)

    def hang_next(self, path: str, seconds: float) -> None:
        def slow(request: Request) -> Response:
            time.sleep(seconds)
            return Response("late")

        self.server.expect_oneshot_request(path, method="POST").respond_with_handler(slow)

    def calls(self, path: str) -> list[dict[str, Any]]:
        return [json.loads(body, parse_float=Decimal) for p, body in self.server.received if p == path]

    # ---- handlers
    def _refused(self, request: Request, body: dict[str, Any]) -> Response | None:
        key, profile = request.headers.get("authorization"), body.get("profile_id")
        if key != self.server_key or profile != self.profile_id:
            return _json(
                {
                    "code": 1,
                    "message": "Authentication failed. Check authentication header.",
                    "trace": "PMNT0402",
                },
                401,
            )
        return None

    def _request(self, request: Request) -> Response:
        body = json.loads(request.get_data(), parse_float=Decimal)
        refused = self._refused(request, body)
        if refused:
            return refused
        if not isinstance(body.get("cart_amount"), Decimal | int):
            return _json({"code": 5, "message": "Invalid cart amount", "trace": "PMNT0405"}, 400)
        if body["tran_type"] == "refund":
            return self._refund(body)
        tran_ref = f"TST26{len(self.transactions) + 1:010d}"
        self.transactions[tran_ref] = {
            "tran_ref": tran_ref,
            "tran_type": "Sale",
            "cart_id": body["cart_id"],
            "cart_description": body["cart_description"],
            "cart_currency": body["cart_currency"],
            "cart_amount": str(body["cart_amount"]),
            "tran_currency": body["cart_currency"],
            "tran_total": str(body["cart_amount"]),
            "tokenise": body.get("tokenise") == 2,
            "customer_details": body.get("customer_details", {}),
            "refunded": Decimal(0),
        }
        return _json(
            {
                "tran_ref": tran_ref,
                "tran_type": "Sale",
                "cart_id": body["cart_id"],
                "cart_currency": body["cart_currency"],
                "cart_amount": str(body["cart_amount"]),
                "callback": body.get("callback"),
                "return": body.get("return"),
                "redirect_url": f"{self.url}/payment/page/{tran_ref}",
                "profileId": self.profile_id,
            }
        )

    def _refund(self, body: dict[str, Any]) -> Response:
        sale = self.transactions.get(body.get("tran_ref", ""))
        if sale is None or sale.get("payment_result", {}).get("response_status") != "A":
            return _json({"code": 4, "message": "Transaction not found or not refundable", "trace": "x"}, 400)
        tran_ref = f"TST26R{len(self.transactions) + 1:09d}"
        allowed = sale["refunded"] + body["cart_amount"] <= Decimal(sale["cart_amount"])
        status, code, message = ("A", "R001", "Refunded") if allowed else ("D", "R401", "Amount exceeds sale")
        if allowed:
            sale["refunded"] += body["cart_amount"]
        refund = {
            "tran_ref": tran_ref,
            "previous_tran_ref": sale["tran_ref"],
            "tran_type": "Refund",
            "cart_id": body["cart_id"],
            "cart_currency": body["cart_currency"],
            "cart_amount": str(body["cart_amount"]),
            "tran_currency": body["cart_currency"],
            "payment_result": {"response_status": status, "response_code": code, "response_message": message},
        }
        self.transactions[tran_ref] = refund
        return _json(refund)

    def _query(self, request: Request) -> Response:
        body = json.loads(request.get_data())
        refused = self._refused(request, body)
        if refused:
            return refused
        transaction = self.transactions.get(body.get("tran_ref", ""))
        if transaction is None:
            return _json({"code": 4, "message": "Transaction not found", "trace": "PMNT0404"}, 400)
        return _json(self._public(transaction))

    @staticmethod
    def _public(transaction: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in transaction.items() if k not in {"refunded", "tokenise"}}


def _php_urlencode(text: str) -> str:
    """PHP ``urlencode``: letters, digits and ``-_.`` stay; space is ``+``; every other byte is ``%XX``."""
    out = []
    for byte in text.encode():
        char = chr(byte)
        if char.isascii() and (char.isalnum() or char in "-_."):
            out.append(char)
        elif char == " ":
            out.append("+")
        else:
            out.append(f"%{byte:02X}")
    return "".join(out)


def _json(payload: dict[str, Any], status: int = 200) -> Response:
    return Response(json.dumps(payload, default=str), status=status, content_type="application/json")
