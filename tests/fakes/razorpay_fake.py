"""A local Razorpay API: orders (``unique_receipt``), an order's payments, refunds (``X-Refund-Idempotency``),
RazorpayX payouts (``X-Payout-Idempotency``, mandatory) and settlement recon.

Shapes follow https://razorpay.com/docs/api/ (order, payment, refund and payout entities; the error envelope
``{"error": {"code": "BAD_REQUEST_ERROR", "description", "reason", ...}}``). ``pay(order_id, outcome)`` plays
the payer in Razorpay Checkout and returns what Checkout posts back (payment id and signature).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
from typing import Any

from emanet.core import clock
from tests.fakes.server import FakeApi, Recorded

_ids = itertools.count(1)
OUTCOMES = {
    "captured": None,
    "declined": ("BAD_REQUEST_ERROR", "payment_declined", "Payment was declined by the bank"),
    "insufficient_funds": ("BAD_REQUEST_ERROR", "insufficient_funds", "Insufficient balance in the card"),
    "3ds_failed": ("BAD_REQUEST_ERROR", "authentication_failed", "Payment authentication failed"),
}


def _id(prefix: str) -> str:
    return f"{prefix}_Fake{next(_ids):08d}"


def _error(description: str, reason: str = "input_validation_failed", status: int = 400) -> tuple[int, Any]:
    return status, {
        "error": {
            "code": "BAD_REQUEST_ERROR",
            "description": description,
            "source": "business",
            "step": "payment_initiation",
            "reason": reason,
            "metadata": {},
        }
    }


class RazorpayFake(FakeApi):
    def __init__(self, key_id: str, key_secret: str) -> None:
        super().__init__()
        self.key_id, self.key_secret = key_id, key_secret
        self.orders: dict[str, dict[str, Any]] = {}
        self.payments: dict[str, dict[str, Any]] = {}
        self.refunds: dict[str, dict[str, Any]] = {}
        self.payouts: dict[str, dict[str, Any]] = {}
        self._refund_keys: dict[str, tuple[int, Any]] = {}
        self._payout_keys: dict[str, tuple[int, Any]] = {}
        routes = [
            ("POST", "/v1/orders", self._create_order),
            ("GET", "/v1/orders/(?P<order_id>[^/]+)", self._get_order),
            ("GET", "/v1/orders/(?P<order_id>[^/]+)/payments", self._order_payments),
            ("POST", "/v1/payments/(?P<payment_id>[^/]+)/refund", self._refund),
            ("POST", "/v1/payouts", self._create_payout),
            ("GET", "/v1/payouts/(?P<payout_id>[^/]+)", self._get_payout),
            ("GET", "/v1/payouts", self._list_payouts),
            ("GET", "/v1/settlements/recon/combined", self._recon),
        ]
        for method, pattern, handler in routes:
            self.route(method, pattern, self._authorized(handler))

    # ---- test controls
    def pay(self, order_id: str, outcome: str = "captured") -> dict[str, str]:
        order = self.orders[order_id]
        payment_id = _id("pay")
        error = OUTCOMES[outcome]
        payment = {
            "id": payment_id,
            "entity": "payment",
            "amount": order["amount"],
            "currency": order["currency"],
            "status": "failed" if error else "captured",
            "order_id": order_id,
            "method": "card",
            "amount_refunded": 0,
            "refund_status": None,
            "captured": not error,
            "card": {
                "id": _id("card"),
                "entity": "card",
                "last4": "1111",
                "network": "Visa",
                "type": "debit",
            },
            "fee": None if error else (order["amount"] * 2 + 50) // 100,
            "tax": None,
            "error_code": error[0] if error else None,
            "error_reason": error[1] if error else None,
            "error_description": error[2] if error else None,
            "created_at": self._now(),
        }
        self.payments[payment_id] = payment
        order["attempts"] += 1
        if not error:
            order.update(status="paid", amount_paid=order["amount"], amount_due=0)
        signature = hmac.new(self.key_secret.encode(), f"{order_id}|{payment_id}".encode(), hashlib.sha256)
        return {
            "razorpay_payment_id": payment_id,
            "razorpay_order_id": order_id,
            "razorpay_signature": signature.hexdigest(),
        }

    def settle_payout(self, payout_id: str, status: str, reason: str | None = None) -> None:
        self.payouts[payout_id].update(status=status, failure_reason=reason)

    # ---- plumbing
    def _authorized(self, handler: Any) -> Any:
        expected = "Basic " + base64.b64encode(f"{self.key_id}:{self.key_secret}".encode()).decode()

        def check(request: Recorded, **kw: str) -> tuple[int, Any]:
            if request.headers.get("Authorization") != expected:
                return _error("Authentication failed", "authentication_failed", 401)
            result: tuple[int, Any] = handler(request, **kw)
            return result

        return check

    def _now(self) -> int:
        return int(clock.now().timestamp())

    # ---- orders and payments
    def _create_order(self, request: Recorded) -> tuple[int, Any]:
        body = request.json()
        if body["amount"] < 100:
            return _error("Order amount less than minimum amount allowed")
        if body.get("unique_receipt"):
            for order in self.orders.values():
                if order["receipt"] == body["receipt"]:
                    return 200, order
        order = {
            "id": _id("order"),
            "entity": "order",
            "amount": body["amount"],
            "amount_paid": 0,
            "amount_due": body["amount"],
            "currency": body["currency"],
            "receipt": body["receipt"],
            "status": "created",
            "attempts": 0,
            "notes": body.get("notes") or {},
            "created_at": self._now(),
        }
        self.orders[order["id"]] = order
        return 200, order

    def _get_order(self, request: Recorded, order_id: str) -> tuple[int, Any]:
        if order_id not in self.orders:
            return _error("The id provided does not exist", "input_validation_failed")
        return 200, self.orders[order_id]

    def _order_payments(self, request: Recorded, order_id: str) -> tuple[int, Any]:
        items = [p for p in self.payments.values() if p["order_id"] == order_id]
        return 200, {"entity": "collection", "count": len(items), "items": items}

    # ---- refunds
    def _refund(self, request: Recorded, payment_id: str) -> tuple[int, Any]:
        key = request.headers.get("X-Refund-Idempotency")
        if key and key in self._refund_keys:
            return self._refund_keys[key]
        payment = self.payments[payment_id]
        amount = request.json().get("amount", payment["amount"] - payment["amount_refunded"])
        if amount > payment["amount"] - payment["amount_refunded"]:
            result = _error("The refund amount provided is greater than amount captured")
        else:
            payment["amount_refunded"] += amount
            full = payment["amount_refunded"] == payment["amount"]
            payment.update(
                refund_status="full" if full else "partial", status="refunded" if full else "captured"
            )
            refund = {
                "id": _id("rfnd"),
                "entity": "refund",
                "amount": amount,
                "currency": payment["currency"],
                "payment_id": payment_id,
                "status": "processed",
                "speed_processed": "normal",
                "created_at": self._now(),
            }
            self.refunds[refund["id"]] = refund
            result = (200, refund)
        if key:
            self._refund_keys[key] = result
        return result

    # ---- payouts
    def _create_payout(self, request: Recorded) -> tuple[int, Any]:
        key = request.headers.get("X-Payout-Idempotency")
        if not key:
            return _error("Idempotency key is missing. Include idempotency header and key in the request.")
        if key in self._payout_keys:
            return self._payout_keys[key]
        body = request.json()
        payout = {
            "id": _id("pout"),
            "entity": "payout",
            "fund_account_id": _id("fa"),
            "amount": body["amount"],
            "currency": body["currency"],
            "fees": 590,
            "tax": 90,
            "status": "processing",
            "utr": None,
            "mode": body["mode"],
            "purpose": body["purpose"],
            "reference_id": body["reference_id"],
            "narration": body.get("narration"),
            "failure_reason": None,
            "created_at": self._now(),
            "fund_account": body["fund_account"],
        }
        self.payouts[payout["id"]] = payout
        self._payout_keys[key] = (200, payout)
        return 200, payout

    def _get_payout(self, request: Recorded, payout_id: str) -> tuple[int, Any]:
        return 200, self.payouts[payout_id]

    def _list_payouts(self, request: Recorded) -> tuple[int, Any]:
        start, end = int(request.query["from"]), int(request.query["to"])
        items = [p for p in self.payouts.values() if start <= p["created_at"] <= end]
        return 200, {"entity": "collection", "count": len(items), "items": items}

    # ---- settlement recon
    def _recon(self, request: Recorded) -> tuple[int, Any]:
        items: list[dict[str, Any]] = []
        for payment in self.payments.values():
            if payment["captured"]:
                items.append(
                    {
                        "entity_id": payment["id"],
                        "type": "payment",
                        "amount": payment["amount"],
                        "currency": payment["currency"],
                        "fee": payment["fee"],
                        "tax": 0,
                        "order_id": payment["order_id"],
                        "credit": payment["amount"] - payment["fee"],
                        "debit": 0,
                        "created_at": payment["created_at"],
                        "settled": True,
                    }
                )
        for refund in self.refunds.values():
            items.append(
                {
                    "entity_id": refund["id"],
                    "type": "refund",
                    "amount": refund["amount"],
                    "currency": refund["currency"],
                    "fee": 0,
                    "tax": 0,
                    "order_id": None,
                    "credit": 0,
                    "debit": refund["amount"],
                    "created_at": refund["created_at"],
                    "settled": True,
                }
            )
        skip, count = int(request.query.get("skip", 0)), int(request.query.get("count", 10))
        page = items[skip : skip + count]
        return 200, {"entity": "collection", "count": len(page), "items": page}
