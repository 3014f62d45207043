"""A local PayPal REST API: OAuth, Orders v2 (create, get, capture), capture refunds, Payouts, Transaction
Search, and a webhook signing certificate made with ``cryptography``.

Shapes follow https://developer.paypal.com/docs/api/ (order with ``payer-action`` link, capture with
``seller_receivable_breakdown.paypal_fee``, the error envelope ``{"name", "message", "details": [...]}``,
``INSTRUMENT_DECLINED`` on capture, payouts batch/items). ``PayPal-Request-Id`` replays the first answer.
``approve(order_id, declined=False)`` plays the payer on PayPal's approval page; ``sign(body)`` makes the
headers PayPal would send with a webhook.
"""

from __future__ import annotations

import base64
import itertools
import zlib
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from werkzeug import Request, Response

from emanet.core import clock
from tests.fakes.server import FakeApi, Recorded

_ids = itertools.count(1)
FEE_RATE = Decimal("0.0349")


def _id(prefix: str = "") -> str:
    return f"{prefix}FAKE{next(_ids):010d}"


def _error(status: int, name: str, issue: str, message: str) -> tuple[int, Any]:
    return status, {
        "name": name,
        "message": message,
        "debug_id": "fake",
        "details": [{"issue": issue, "description": message}],
    }


def make_certificate(
    not_before: datetime,
    not_after: datetime,
    common_name: str = "messageverificationcerts.paypal.com",
) -> tuple[rsa.RSAPrivateKey, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )
    return key, certificate.public_bytes(serialization.Encoding.PEM)


class PaypalFake(FakeApi):
    def __init__(self, client_id: str, secret: str) -> None:
        super().__init__()
        self.client_id, self.secret = client_id, secret
        self.orders: dict[str, dict[str, Any]] = {}
        self.captures: dict[str, dict[str, Any]] = {}
        self.refunds: dict[str, dict[str, Any]] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.tokens_issued = 0
        self._replies: dict[str, tuple[int, Any]] = {}
        self._declined: set[str] = set()
        now = clock.now()
        self.signing_key, self.certificate_pem = make_certificate(
            now - timedelta(days=1), now + timedelta(days=365)
        )
        self.server.expect_request("/certs/CERT-fake").respond_with_handler(self._certificate)
        self.route("POST", "/v1/oauth2/token", self._token)
        routes = [
            ("POST", "/v2/checkout/orders", self._create_order),
            ("GET", "/v2/checkout/orders/(?P<order_id>[^/]+)", self._get_order),
            ("POST", "/v2/checkout/orders/(?P<order_id>[^/]+)/capture", self._capture),
            ("POST", "/v2/payments/captures/(?P<capture_id>[^/]+)/refund", self._refund),
            ("POST", "/v1/payments/payouts", self._create_batch),
            ("GET", "/v1/payments/payouts/(?P<batch_id>[^/]+)", self._get_batch),
            ("GET", "/v1/reporting/transactions", self._transactions),
        ]
        for method, pattern, handler in routes:
            self.route(method, pattern, self._authorized(handler))

    @property
    def cert_url(self) -> str:
        return f"{self.url}/certs/CERT-fake"

    # ---- test controls
    def approve(self, order_id: str, *, declined: bool = False) -> None:
        self.orders[order_id]["status"] = "APPROVED"
        if declined:
            self._declined.add(order_id)

    def settle_batch(self, batch_id: str, item_status: str, error: str | None = None) -> None:
        batch = self.batches[batch_id]
        batch["batch_header"]["batch_status"] = "SUCCESS"
        batch["items"][0]["transaction_status"] = item_status
        if error:
            batch["items"][0]["errors"] = {"name": "RECEIVER_UNREGISTERED", "message": error}

    def sign(
        self,
        body: bytes,
        webhook_id: str,
        *,
        transmission_time: datetime | None = None,
        key: rsa.RSAPrivateKey | None = None,
        cert_url: str | None = None,
    ) -> dict[str, str]:
        transmission_id = _id("tx-")
        sent = (transmission_time or clock.now()).strftime("%Y-%m-%dT%H:%M:%SZ")
        message = f"{transmission_id}|{sent}|{webhook_id}|{zlib.crc32(body)}".encode()
        signature = (key or self.signing_key).sign(message, padding.PKCS1v15(), hashes.SHA256())
        return {
            "PAYPAL-TRANSMISSION-ID": transmission_id,
            "PAYPAL-TRANSMISSION-TIME": sent,
            "PAYPAL-TRANSMISSION-SIG": base64.b64encode(signature).decode(),
            "PAYPAL-CERT-URL": cert_url or self.cert_url,
            "PAYPAL-AUTH-ALGO": "SHA256withRSA",
        }

    # ---- plumbing
    def _certificate(self, request: Request) -> Response:
        return Response(self.certificate_pem, content_type="application/x-pem-file")

    def _token(self, request: Recorded) -> tuple[int, Any]:
        expected = "Basic " + base64.b64encode(f"{self.client_id}:{self.secret}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return 401, {"error": "invalid_client", "error_description": "Client Authentication failed"}
        self.tokens_issued += 1
        return 200, {
            "scope": "https://uri.paypal.com/services/payments",
            "access_token": f"A21AAFake{next(_ids)}",
            "token_type": "Bearer",
            "app_id": "APP-FAKE",
            "expires_in": 32400,
        }

    def _authorized(self, handler: Any) -> Any:
        def check(request: Recorded, **kw: str) -> tuple[int, Any]:
            if not request.headers.get("Authorization", "").startswith("Bearer A21AAFake"):
                return 401, {
                    "error": "invalid_token",
                    "error_description": "Token signature verification failed",
                }
            key = request.headers.get("Paypal-Request-Id")
            if request.method == "POST" and key and key in self._replies:
                return self._replies[key]
            result: tuple[int, Any] = handler(request, **kw)
            if request.method == "POST" and key and result[0] < 500:
                self._replies[key] = result
            return result

        return check

    def _now(self) -> str:
        return clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")

    # ---- orders
    def _create_order(self, request: Recorded) -> tuple[int, Any]:
        body = request.json()
        order_id = _id()
        order = {
            "id": order_id,
            "intent": body["intent"],
            "status": "PAYER_ACTION_REQUIRED",
            "purchase_units": body["purchase_units"],
            "payment_source": {"paypal": {}},
            "create_time": self._now(),
            "links": [
                {"href": f"{self.url}/v2/checkout/orders/{order_id}", "rel": "self", "method": "GET"},
                {
                    "href": f"https://www.sandbox.paypal.com/checkoutnow?token={order_id}",
                    "rel": "payer-action",
                    "method": "GET",
                },
            ],
        }
        self.orders[order_id] = order
        return 200, order

    def _get_order(self, request: Recorded, order_id: str) -> tuple[int, Any]:
        if order_id not in self.orders:
            return _error(
                404, "RESOURCE_NOT_FOUND", "INVALID_RESOURCE_ID", "Specified resource ID does not exist."
            )
        return 200, self.orders[order_id]

    def _capture(self, request: Recorded, order_id: str) -> tuple[int, Any]:
        order = self.orders[order_id]
        if order["status"] == "COMPLETED":
            return _error(422, "UNPROCESSABLE_ENTITY", "ORDER_ALREADY_CAPTURED", "Order already captured.")
        if order["status"] != "APPROVED":
            return _error(
                422, "UNPROCESSABLE_ENTITY", "ORDER_NOT_APPROVED", "Payer has not yet approved the Order."
            )
        if order_id in self._declined:
            return _error(
                422,
                "UNPROCESSABLE_ENTITY",
                "INSTRUMENT_DECLINED",
                "The instrument presented was either declined by the processor or bank.",
            )
        unit = order["purchase_units"][0]
        value = Decimal(unit["amount"]["value"])
        currency = unit["amount"]["currency_code"]
        fee = (value * FEE_RATE + Decimal("0.49")).quantize(Decimal("0.01"))
        capture = {
            "id": _id("CAP"),
            "status": "COMPLETED",
            "amount": unit["amount"],
            "final_capture": True,
            "custom_id": unit.get("custom_id"),
            "create_time": self._now(),
            "seller_receivable_breakdown": {
                "gross_amount": unit["amount"],
                "paypal_fee": {"currency_code": currency, "value": str(fee)},
                "net_amount": {"currency_code": currency, "value": str(value - fee)},
            },
        }
        self.captures[capture["id"]] = capture
        unit["payments"] = {"captures": [capture]}
        order["status"] = "COMPLETED"
        return 201, order

    # ---- refunds
    def _refund(self, request: Recorded, capture_id: str) -> tuple[int, Any]:
        capture = self.captures[capture_id]
        amount = Decimal(request.json()["amount"]["value"])
        refunded = sum(
            Decimal(r["amount"]["value"]) for r in self.refunds.values() if r["capture_id"] == capture_id
        )
        if refunded + amount > Decimal(capture["amount"]["value"]):
            return _error(
                422,
                "UNPROCESSABLE_ENTITY",
                "REFUND_AMOUNT_EXCEEDED",
                "The refund amount must be less than or equal to the capture amount.",
            )
        refund = {
            "id": _id("REF"),
            "status": "COMPLETED",
            "capture_id": capture_id,
            "create_time": self._now(),
            "amount": {"currency_code": capture["amount"]["currency_code"], "value": str(amount)},
        }
        self.refunds[refund["id"]] = refund
        full = refunded + amount == Decimal(capture["amount"]["value"])
        capture["status"] = "REFUNDED" if full else "PARTIALLY_REFUNDED"
        return 201, refund

    # ---- payouts
    def _create_batch(self, request: Recorded) -> tuple[int, Any]:
        body = request.json()
        header = body["sender_batch_header"]
        if any(
            b["batch_header"]["sender_batch_header"]["sender_batch_id"] == header["sender_batch_id"]
            for b in self.batches.values()
        ):
            return _error(
                400,
                "USER_BUSINESS_ERROR",
                "DUPLICATE_REQUEST_ID",
                "Batch with given sender_batch_id already exists",
            )
        batch_id = _id("BATCH")
        item = body["items"][0]
        self.batches[batch_id] = {
            "batch_header": {
                "payout_batch_id": batch_id,
                "batch_status": "PENDING",
                "sender_batch_header": header,
                "time_created": self._now(),
            },
            "items": [
                {
                    "payout_item_id": _id("ITEM"),
                    "transaction_status": "PENDING",
                    "payout_batch_id": batch_id,
                    "payout_item": {
                        "amount": item["amount"],
                        "receiver": item["receiver"],
                        "sender_item_id": item["sender_item_id"],
                    },
                }
            ],
        }
        return 201, {"batch_header": self.batches[batch_id]["batch_header"], "links": []}

    def _get_batch(self, request: Recorded, batch_id: str) -> tuple[int, Any]:
        return 200, self.batches[batch_id]

    # ---- transaction search
    def _transactions(self, request: Recorded) -> tuple[int, Any]:
        details = []
        for capture in self.captures.values():
            fee = capture["seller_receivable_breakdown"]["paypal_fee"]
            details.append(
                {
                    "transaction_info": {
                        "transaction_id": capture["id"],
                        "transaction_event_code": "T0006",
                        "transaction_initiation_date": capture["create_time"],
                        "transaction_amount": capture["amount"],
                        "fee_amount": {"currency_code": fee["currency_code"], "value": f"-{fee['value']}"},
                        "custom_field": capture["custom_id"],
                    }
                }
            )
        for refund in self.refunds.values():
            details.append(
                {
                    "transaction_info": {
                        "transaction_id": refund["id"],
                        "transaction_event_code": "T1107",
                        "transaction_initiation_date": refund["create_time"],
                        "transaction_amount": {
                            "currency_code": refund["amount"]["currency_code"],
                            "value": f"-{refund['amount']['value']}",
                        },
                    }
                }
            )
        page, size = int(request.query.get("page", 1)), 2
        total_pages = max(1, -(-len(details) // size))
        return 200, {
            "transaction_details": details[(page - 1) * size : page * size],
            "page": page,
            "total_pages": total_pages,
            "total_items": len(details),
        }
