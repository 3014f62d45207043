"""A local PayTR: ``/odeme/api/get-token``, ``/odeme/durum-sorgu``, ``/odeme/iade`` and the signed
notification it posts to the merchant. Shapes and hash concatenations from PayTR's iFrame API sample code;
every request is form-encoded, every answer JSON.

``pay(merchant_oid, outcome)`` plays the payer in the iFrame (3-D Secure included) and returns the
notification form PayTR would post.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, urlencode

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

FAILURES = {"declined": ("2", "Kart limiti yetersiz"), "3ds_failed": ("6", "3D Secure dogrulamasi basarisiz")}


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
    merchant_oid: str
    payment_amount: int  # kuruş
    currency: str
    paid: bool = False
    returns: list[Decimal] = field(default_factory=list)


class PaytrFake:
    def __init__(
        self,
        merchant_id: str,
        merchant_key: str,
        merchant_salt: str,
        *,
        server: RecordingServer | None = None,
    ) -> None:
        self.merchant_id = merchant_id
        self.merchant_key = merchant_key
        self.merchant_salt = merchant_salt
        self.orders: dict[str, FakeOrder] = {}
        self.tokens: dict[str, str] = {}
        # A server shared by a test module saves a start and a stop per test; state stays per fake.
        self._owns_server = server is None
        self.server = server or RecordingServer()

    def __enter__(self) -> PaytrFake:
        if self._owns_server:
            self.server.start()
        for path, handler in (
            ("/odeme/api/get-token", self._get_token),
            ("/odeme/durum-sorgu", self._status),
            ("/odeme/iade", self._refund),
        ):
            self.server.expect_request(path, method="POST").respond_with_handler(handler)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.clear()
        self.server.received.clear()
        if self._owns_server:
            self.server.stop()

    @property
    def url(self) -> str:
        return self.server.url_for("").rstrip("/")

    def sign(self, *parts: str) -> str:
        digest = hmac.new(self.merchant_key.encode(), "".join(parts).encode(), hashlib.sha256).digest()
        return base64.b64encode(digest).decode()

    # ---- test controls
    def pay(self, merchant_oid: str, outcome: str = "success") -> bytes:
        """The payer finishes the iFrame; returns the notification body PayTR posts (form-encoded)."""
        order = self.orders[merchant_oid]
        status = "success" if outcome == "success" else "failed"
        order.paid = status == "success"
        total = str(order.payment_amount)
        form = {
            "merchant_oid": merchant_oid,
            "status": status,
            "total_amount": total,
            "hash": self.sign(merchant_oid, self.merchant_salt, status, total),
            "payment_amount": total,
            "currency": order.currency,
            "test_mode": "1",
            "payment_type": "card",
        }
        if status == "failed":
            form["failed_reason_code"], form["failed_reason_msg"] = FAILURES[outcome]
        return urlencode(form).encode()

    def fail_next(self, path: str, status: int = 503, times: int = 1) -> None:
        for _ in range(times):
            self.server.expect_oneshot_request(path, method="POST").respond_with_data("gateway error", status)

    def hang_next(self, path: str, seconds: float) -> None:
        def slow(request: Request) -> Response:
            time.sleep(seconds)
            return Response("late")

        self.server.expect_oneshot_request(path, method="POST").respond_with_handler(slow)

    def calls(self, path: str) -> list[dict[str, str]]:
        return [dict(parse_qsl(body.decode())) for p, body in self.server.received if p == path]

    # ---- handlers
    def _get_token(self, request: Request) -> Response:
        f = request.form
        signed = (
            "merchant_id",
            "user_ip",
            "merchant_oid",
            "email",
            "payment_amount",
            "user_basket",
            "no_installment",
            "max_installment",
            "currency",
            "test_mode",
        )
        expected = self.sign(*(f[name] for name in signed), self.merchant_salt)
        if f["merchant_id"] != self.merchant_id or f["paytr_token"] != expected:
            return _json({"status": "failed", "reason": "paytr_token gonderilen bilgilerle uyusmuyor"})
        if not f["merchant_oid"].isalnum():
            return _json({"status": "failed", "reason": "merchant_oid sadece alfanumerik olabilir"})
        basket = json.loads(base64.b64decode(f["user_basket"]))
        basket_total = sum(Decimal(price) * qty for _, price, qty in basket)
        if basket_total * 100 != int(f["payment_amount"]):
            return _json({"status": "failed", "reason": "sepet tutari ile odeme tutari uyusmuyor"})
        existing = self.orders.get(f["merchant_oid"])
        if existing is not None and existing.paid:
            return _json({"status": "failed", "reason": "merchant_oid daha once kullanilmis"})
        self.orders[f["merchant_oid"]] = FakeOrder(f["merchant_oid"], int(f["payment_amount"]), f["currency"])
        token = hashlib.sha256(f["merchant_oid"].encode()).hexdigest()[:32]
        self.tokens[token] = f["merchant_oid"]
        return _json({"status": "success", "token": token})

    def _status(self, request: Request) -> Response:
        f = request.form
        if f.get("paytr_token") != self.sign(f["merchant_id"], f["merchant_oid"], self.merchant_salt):
            return _json({"status": "error", "err_no": "004", "err_msg": "paytr_token hatali"})
        order = self.orders.get(f["merchant_oid"])
        if order is None or not order.paid:
            return _json({"status": "error", "err_no": "005", "err_msg": "Odeme bulunamadi"})
        amount = f"{Decimal(order.payment_amount) / 100:.2f}"
        return _json(
            {
                "status": "success",
                "payment_amount": amount,
                "payment_total": amount,
                "currency": order.currency,
                "taksit": "0",
                "kart_marka": "WORLD",
                "masked_pan": "545616****5454",
                "odeme_tipi": "KART",
                "test_mode": "1",
                "returns": [{"return_amount": f"{r:.2f}", "return_type": "iade"} for r in order.returns],
            }
        )

    def _refund(self, request: Request) -> Response:
        f = request.form
        expected = self.sign(f["merchant_id"], f["merchant_oid"], f["return_amount"], self.merchant_salt)
        if f.get("paytr_token") != expected:
            return _json({"status": "error", "err_no": "004", "err_msg": "paytr_token hatali"})
        order = self.orders.get(f["merchant_oid"])
        amount = Decimal(f["return_amount"])
        if order is None or not order.paid:
            return _json({"status": "error", "err_no": "005", "err_msg": "Odeme bulunamadi"})
        if (sum(order.returns) + amount) * 100 > order.payment_amount:
            return _json({"status": "error", "err_no": "006", "err_msg": "Iade tutari odemeyi asiyor"})
        order.returns.append(amount)
        return _json(
            {
                "status": "success",
                "is_test": 1,
                "merchant_oid": order.merchant_oid,
                "return_amount": f["return_amount"],
                "reference_no": f.get("reference_no", ""),
            }
        )


def _json(payload: dict[str, Any]) -> Response:
    return Response(json.dumps(payload), status=200, content_type="application/json")
