"""A local iyzico: Checkout Form initialize and retrieve, v2 refund, and ``X-IYZ-SIGNATURE-V3`` webhooks.

Requests come from the real ``iyzipay`` SDK, so the fake checks its IYZWSv2 ``Authorization`` header
(``base64("apiKey:…&randomKey:…&signature:" + hex HMAC-SHA256(secret, random + path + body))``). Shapes
follow docs.iyzico.com and the SDK samples; prices are decimal strings in requests and numbers in answers.

``pay(token, outcome)`` plays the payer on the hosted form (3-D Secure included).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

INITIALIZE = "/payment/iyzipos/checkoutform/initialize/ecom"
RETRIEVE = "/payment/iyzipos/checkoutform/auth/ecom/detail"
REFUND = "/v2/payment/refund"
DECLINES = {
    "insufficient_funds": ("10051", "Kart limiti yetersiz, yetersiz bakiye"),
    "3ds_failed": ("10217", "3D Secure dogrulamasi basarisiz"),
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
class FakeForm:
    token: str
    conversation_id: str
    price: Decimal
    currency: str
    basket_id: str
    outcome: str | None = None
    payment_id: str = ""
    refunded: Decimal = Decimal(0)


class IyzicoFake:
    def __init__(self, api_key: str, secret_key: str, *, server: RecordingServer | None = None) -> None:
        self.api_key = api_key
        self.secret_key = secret_key
        self.forms: dict[str, FakeForm] = {}
        # A server shared by a test module saves a start and a stop per test; state stays per fake.
        self._owns_server = server is None
        self.server = server or RecordingServer()

    def __enter__(self) -> IyzicoFake:
        if self._owns_server:
            self.server.start()
        for path, handler in (
            (INITIALIZE, self._initialize),
            (RETRIEVE, self._retrieve),
            (REFUND, self._refund),
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

    # ---- test controls
    def pay(self, token: str, outcome: str = "success") -> None:
        form = self.forms[token]
        form.outcome = outcome
        form.payment_id = str(22_400_000 + len(self.forms))

    def webhook(
        self, token: str, *, status: str = "SUCCESS", secret: str | None = None
    ) -> tuple[dict[str, str], bytes]:
        form = self.forms[token]
        event = {
            "paymentConversationId": form.conversation_id,
            "merchantId": 3391,
            "token": token,
            "status": status,
            "iyziReferenceCode": f"ref-{token}-{status}",
            "iyziEventType": "CHECKOUT_FORM_AUTH",
            "iyziEventTime": 1795338000000,
            "iyziPaymentId": int(form.payment_id or 0),
        }
        key = secret or self.secret_key
        material = (
            key + event["iyziEventType"] + str(event["iyziPaymentId"]) + token + form.conversation_id + status
        )
        signature = hmac.new(key.encode(), material.encode(), hashlib.sha256).hexdigest()
        return {"X-IYZ-SIGNATURE-V3": signature, "Content-Type": "application/json"}, json.dumps(
            event
        ).encode()

    def fail_next(self, path: str, status: int = 503, times: int = 1) -> None:
        for _ in range(times):
            self.server.expect_oneshot_request(path, method="POST").respond_with_data("gateway error", status)

    def hang_next(self, path: str, seconds: float) -> None:
        def slow(request: Request) -> Response:
            time.sleep(seconds)
            return Response("late")

        self.server.expect_oneshot_request(path, method="POST").respond_with_handler(slow)

    def calls(self, path: str) -> list[dict[str, Any]]:
        return [json.loads(body) for p, body in self.server.received if p == path]

    # ---- handlers
    def _authenticated(self, request: Request) -> bool:
        authorization = request.headers.get("Authorization", "")
        if not authorization.startswith("IYZWSv2 "):
            return False
        fields = dict(part.split(":", 1) for part in base64.b64decode(authorization[8:]).decode().split("&"))
        material = fields.get("randomKey", "") + request.path + request.get_data(as_text=True)
        expected = hmac.new(self.secret_key.encode(), material.encode(), hashlib.sha256).hexdigest()
        return fields.get("apiKey") == self.api_key and hmac.compare_digest(
            fields.get("signature", ""), expected
        )

    def _initialize(self, request: Request) -> Response:
        if not self._authenticated(request):
            return _failure("1000", "Geçersiz imza")
        body = json.loads(request.get_data())
        items_total = sum(Decimal(item["price"]) for item in body["basketItems"])
        if Decimal(body["price"]) != items_total or any(
            not body["buyer"].get(k)
            for k in (
                "id",
                "name",
                "surname",
                "identityNumber",
                "email",
                "registrationAddress",
                "ip",
                "city",
                "country",
            )
        ):
            return _failure("11", "Geçersiz istek")
        token = str(uuid.uuid4())
        self.forms[token] = FakeForm(
            token, body["conversationId"], Decimal(body["price"]), body["currency"], body["basketId"]
        )
        return _json(
            {
                "status": "success",
                "locale": body["locale"],
                "systemTime": 1795338000000,
                "conversationId": body["conversationId"],
                "token": token,
                "tokenExpireTime": 1800,
                "checkoutFormContent": "<script>/* iyzico form */</script>",
                "paymentPageUrl": f"{self.url}/checkout/{token}?lang={body['locale']}",
            }
        )

    def _retrieve(self, request: Request) -> Response:
        if not self._authenticated(request):
            return _failure("1000", "Geçersiz imza")
        form = self.forms.get(json.loads(request.get_data()).get("token", ""))
        if form is None or form.outcome is None:
            return _failure("5124", "Odeme formu tamamlanmadi")
        base: dict[str, Any] = {
            "locale": "tr",
            "systemTime": 1795338000000,
            "token": form.token,
            "conversationId": form.conversation_id,
            "basketId": form.basket_id,
            "currency": form.currency,
            "price": float(form.price),
            "paidPrice": float(form.price),
            "installment": 1,
            "callbackUrl": "x",
        }
        if form.outcome != "success":
            code, message = DECLINES[form.outcome]
            return _json(
                {
                    **base,
                    "status": "failure",
                    "paymentStatus": "FAILURE",
                    "errorCode": code,
                    "errorMessage": message,
                }
            )
        fee_rate = (form.price * Decimal("0.0249")).quantize(Decimal("0.01"))
        return _json(
            {
                **base,
                "status": "success",
                "paymentStatus": "SUCCESS",
                "paymentId": form.payment_id,
                "fraudStatus": 1,
                "iyziCommissionRateAmount": float(fee_rate),
                "iyziCommissionFee": 0.25,
                "merchantCommissionRate": 0,
                "cardType": "CREDIT_CARD",
                "cardAssociation": "MASTER_CARD",
                "cardFamily": "Bonus",
                "binNumber": "552879",
                "lastFourDigits": "0008",
            }
        )

    def _refund(self, request: Request) -> Response:
        if not self._authenticated(request):
            return _failure("1000", "Geçersiz imza")
        body = json.loads(request.get_data())
        form = next(
            (f for f in self.forms.values() if f.payment_id and f.payment_id == body["paymentId"]), None
        )
        if form is None:
            return _failure("5092", "Odeme bulunamadi")
        amount = Decimal(body["price"])
        if form.refunded + amount > form.price:
            return _failure("5111", "Iade tutari odeme tutarindan fazla olamaz")
        form.refunded += amount
        return _json(
            {
                "status": "success",
                "locale": "tr",
                "conversationId": body["conversationId"],
                "paymentId": form.payment_id,
                "paymentTransactionId": f"{form.payment_id}-{form.refunded}",
                "price": float(amount),
                "currency": form.currency,
            }
        )


def _failure(code: str, message: str) -> Response:
    return _json({"status": "failure", "errorCode": code, "errorMessage": message, "locale": "tr"})


def _json(payload: dict[str, Any]) -> Response:
    return Response(json.dumps(payload), status=200, content_type="application/json")
