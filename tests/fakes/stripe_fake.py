"""A local Stripe API: customers, payment methods, PaymentIntents, refunds, transfers, balance transactions.

Shapes follow https://docs.stripe.com/api (PaymentIntent, Refund, Transfer, BalanceTransaction objects, the
``{"error": {...}}`` envelope with HTTP 402 for card errors carrying ``payment_intent``), form-encoded
requests as stripe-python sends them, and idempotent replay of POSTs by ``Idempotency-Key``.

Test PaymentMethods mirror Stripe's (https://docs.stripe.com/testing#cards): ``pm_card_visa`` succeeds,
``pm_card_visa_chargeDeclined`` is declined (``generic_decline``),
``pm_card_visa_chargeDeclinedInsufficientFunds`` (``insufficient_funds``), ``pm_card_threeDSecure2Required``
needs a 3-D Secure redirect.
``pay(intent_id, payment_method)`` plays Stripe.js confirming in the browser.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

from emanet.core import clock
from tests.fakes.server import FakeApi, Recorded

FEE_BPS = 290
_ids = itertools.count(1)

CARDS = {
    "pm_card_visa": ("visa", "4242", None),
    "pm_card_mastercard": ("mastercard", "4444", None),
    "pm_card_visa_chargeDeclined": (
        "visa",
        "0002",
        ("card_declined", "generic_decline", "Your card was declined."),
    ),
    "pm_card_visa_chargeDeclinedInsufficientFunds": (
        "visa",
        "9995",
        ("card_declined", "insufficient_funds", "Your card has insufficient funds."),
    ),
    "pm_card_threeDSecure2Required": ("visa", "3220", "3ds"),
}


def _id(prefix: str) -> str:
    return f"{prefix}_fake{next(_ids):06d}"


def _nested(form: dict[str, str], name: str) -> dict[str, str]:
    prefix = f"{name}["
    return {k[len(prefix) : -1]: v for k, v in form.items() if k.startswith(prefix) and k.endswith("]")}


class StripeFake(FakeApi):
    def __init__(self, api_key: str) -> None:
        super().__init__()
        self.api_key = api_key
        self.customers: dict[str, dict[str, Any]] = {}
        self.payment_methods: dict[str, dict[str, Any]] = {}
        self.intents: dict[str, dict[str, Any]] = {}
        self.charges: dict[str, dict[str, Any]] = {}
        self.refunds: dict[str, dict[str, Any]] = {}
        self.transfers: dict[str, dict[str, Any]] = {}
        self.balance: list[dict[str, Any]] = []
        self.page_size = 100
        self._idempotent: dict[str, tuple[int, Any]] = {}
        for pm, (brand, last4, _) in CARDS.items():
            self.payment_methods[pm] = self._payment_method(pm, brand, last4)
        routes = [
            ("POST", "/v1/customers", self._create_customer),
            ("GET", "/v1/payment_methods/(?P<pm>[^/]+)", self._get_payment_method),
            ("POST", "/v1/payment_intents", self._create_intent),
            ("GET", "/v1/payment_intents/(?P<pi>[^/]+)", self._get_intent),
            ("POST", "/v1/refunds", self._create_refund),
            ("POST", "/v1/transfers", self._create_transfer),
            ("GET", "/v1/transfers/(?P<tr>[^/]+)", self._get_transfer),
            ("GET", "/v1/balance_transactions", self._list_balance),
        ]
        for method, pattern, handler in routes:
            self.route(method, pattern, self._authorized(handler))

    # ---- test controls
    def save_card(self, pm: str, customer: str) -> None:
        self.payment_methods[pm]["customer"] = customer

    def add_customer(self) -> str:
        customer = {"id": _id("cus"), "object": "customer"}
        self.customers[customer["id"]] = customer
        return customer["id"]

    def pay(self, intent_id: str, payment_method: str) -> dict[str, Any]:
        """Stripe.js confirmed the intent in the browser with this card (3-D Secure passed)."""
        intent = self.intents[intent_id]
        intent["payment_method"] = payment_method
        if intent.get("customer") and intent.get("setup_future_usage"):
            self.payment_methods[payment_method]["customer"] = intent["customer"]
        self._confirm(intent, three_d_secure_done=True)
        return intent

    def reverse(self, transfer_id: str) -> None:
        self.transfers[transfer_id]["reversed"] = True

    # ---- plumbing
    def _authorized(self, handler: Any) -> Any:
        def check(request: Recorded, **kw: str) -> tuple[int, Any]:
            if request.headers.get("Authorization") != f"Bearer {self.api_key}":
                return 401, {
                    "error": {"type": "invalid_request_error", "message": "Invalid API Key provided"}
                }
            key = request.headers.get("Idempotency-Key")
            if request.method == "POST" and key and key in self._idempotent:
                return self._idempotent[key]  # Stripe replays the first result
            result: tuple[int, Any] = handler(request, **kw)
            if request.method == "POST" and key and result[0] < 500:
                self._idempotent[key] = result
            return result

        return check

    def _now(self) -> int:
        return int(clock.now().timestamp())

    def _payment_method(self, pm: str, brand: str, last4: str) -> dict[str, Any]:
        return {
            "id": pm,
            "object": "payment_method",
            "type": "card",
            "customer": None,
            "card": {"brand": brand, "last4": last4, "exp_month": 12, "exp_year": 2030},
        }

    # ---- customers and payment methods
    def _create_customer(self, request: Recorded) -> tuple[int, Any]:
        form = request.form()
        customer = {
            "id": _id("cus"),
            "object": "customer",
            "email": form.get("email"),
            "name": form.get("name"),
        }
        self.customers[customer["id"]] = customer
        return 200, customer

    def _get_payment_method(self, request: Recorded, pm: str) -> tuple[int, Any]:
        if pm not in self.payment_methods:
            return 404, {
                "error": {
                    "type": "invalid_request_error",
                    "code": "resource_missing",
                    "message": f"No such PaymentMethod: '{pm}'",
                }
            }
        return 200, self.payment_methods[pm]

    # ---- payment intents
    def _create_intent(self, request: Recorded) -> tuple[int, Any]:
        form = request.form()
        intent_id = _id("pi")
        intent: dict[str, Any] = {
            "id": intent_id,
            "object": "payment_intent",
            "amount": int(form["amount"]),
            "amount_received": 0,
            "currency": form["currency"],
            "status": "requires_payment_method",
            "customer": form.get("customer"),
            "client_secret": f"{intent_id}_secret_fake",
            "payment_method": form.get("payment_method"),
            "setup_future_usage": form.get("setup_future_usage"),
            "description": form.get("description"),
            "metadata": _nested(form, "metadata"),
            "last_payment_error": None,
            "next_action": None,
            "latest_charge": None,
            "return_url": form.get("return_url"),
            "created": self._now(),
            "livemode": False,
        }
        self.intents[intent_id] = intent
        if form.get("confirm") == "true":
            self._confirm(intent, three_d_secure_done=False)
            error = intent["last_payment_error"]
            if error:
                return 402, {"error": {**error, "payment_intent": intent}}
        return 200, intent

    def _confirm(self, intent: dict[str, Any], *, three_d_secure_done: bool) -> None:
        brand, last4, outcome = CARDS[intent["payment_method"]]
        if outcome == "3ds" and not three_d_secure_done:
            intent["status"] = "requires_action"
            intent["next_action"] = {
                "type": "redirect_to_url",
                "redirect_to_url": {
                    "url": f"https://hooks.stripe.com/3d_secure_2/hosted?payment_intent={intent['id']}",
                    "return_url": intent["return_url"],
                },
            }
            return
        intent["next_action"] = None
        if isinstance(outcome, tuple):
            code, decline_code, message = outcome
            intent["status"] = "requires_payment_method"
            intent["last_payment_error"] = {
                "type": "card_error",
                "code": code,
                "decline_code": decline_code,
                "message": message,
            }
            return
        charge_id = _id("ch")
        fee = (intent["amount"] * FEE_BPS + 5_000) // 10_000
        txn = {
            "id": _id("txn"),
            "object": "balance_transaction",
            "amount": intent["amount"],
            "fee": fee,
            "currency": intent["currency"],
            "type": "charge",
            "source": charge_id,
            "created": self._now(),
        }
        self.balance.append(txn)
        self.charges[charge_id] = {
            "id": charge_id,
            "object": "charge",
            "amount": intent["amount"],
            "payment_intent": intent["id"],
            "balance_transaction": txn["id"],
            "paid": True,
            "status": "succeeded",
            "payment_method_details": {
                "type": "card",
                "card": {"brand": brand, "last4": last4, "exp_month": 12, "exp_year": 2030},
            },
        }
        intent.update(
            status="succeeded",
            amount_received=intent["amount"],
            latest_charge=charge_id,
            last_payment_error=None,
        )

    def _get_intent(self, request: Recorded, pi: str) -> tuple[int, Any]:
        if pi not in self.intents:
            return 404, {
                "error": {
                    "type": "invalid_request_error",
                    "code": "resource_missing",
                    "message": f"No such payment_intent: '{pi}'",
                }
            }
        intent = json.loads(json.dumps(self.intents[pi]))
        expand = {v for k, v in request.query.items() if k.startswith("expand")}
        if "latest_charge.balance_transaction" in expand and intent["latest_charge"]:
            charge = dict(self.charges[intent["latest_charge"]])
            charge["balance_transaction"] = next(
                t for t in self.balance if t["id"] == charge["balance_transaction"]
            )
            intent["latest_charge"] = charge
        if "payment_method" in expand and intent["payment_method"]:
            intent["payment_method"] = self.payment_methods[intent["payment_method"]]
        return 200, intent

    # ---- refunds
    def _create_refund(self, request: Recorded) -> tuple[int, Any]:
        form = request.form()
        intent = self.intents.get(form["payment_intent"])
        if intent is None or intent["status"] != "succeeded":
            return 400, {
                "error": {
                    "type": "invalid_request_error",
                    "code": "charge_not_refundable",
                    "message": "This PaymentIntent has no successful charge to refund.",
                }
            }
        refunded = sum(r["amount"] for r in self.refunds.values() if r["payment_intent"] == intent["id"])
        amount = int(form.get("amount", intent["amount"] - refunded))
        if amount > intent["amount"] - refunded:
            return 400, {
                "error": {
                    "type": "invalid_request_error",
                    "code": "amount_too_large",
                    "message": "Refund amount is greater than the unrefunded amount.",
                }
            }
        refund = {
            "id": _id("re"),
            "object": "refund",
            "amount": amount,
            "currency": intent["currency"],
            "payment_intent": intent["id"],
            "charge": intent["latest_charge"],
            "status": "succeeded",
        }
        self.refunds[refund["id"]] = refund
        self.balance.append(
            {
                "id": _id("txn"),
                "object": "balance_transaction",
                "amount": -amount,
                "fee": 0,
                "currency": intent["currency"],
                "type": "refund",
                "source": refund["id"],
                "created": self._now(),
            }
        )
        return 200, refund

    # ---- transfers
    def _create_transfer(self, request: Recorded) -> tuple[int, Any]:
        form = request.form()
        if form["destination"] == "acct_missing":
            return 400, {
                "error": {
                    "type": "invalid_request_error",
                    "code": "resource_missing",
                    "param": "destination",
                    "message": "No such destination: 'acct_missing'",
                }
            }
        transfer = {
            "id": _id("tr"),
            "object": "transfer",
            "amount": int(form["amount"]),
            "currency": form["currency"],
            "destination": form["destination"],
            "transfer_group": form.get("transfer_group"),
            "reversed": False,
            "created": self._now(),
        }
        self.transfers[transfer["id"]] = transfer
        self.balance.append(
            {
                "id": _id("txn"),
                "object": "balance_transaction",
                "amount": -transfer["amount"],
                "fee": 0,
                "currency": transfer["currency"],
                "type": "transfer",
                "source": transfer["id"],
                "created": self._now(),
            }
        )
        return 200, transfer

    def _get_transfer(self, request: Recorded, tr: str) -> tuple[int, Any]:
        return 200, self.transfers[tr]

    # ---- balance transactions
    def _list_balance(self, request: Recorded) -> tuple[int, Any]:
        gte, lt = int(request.query["created[gte]"]), int(request.query["created[lt]"])
        rows = [t for t in self.balance if gte <= t["created"] < lt]
        after = request.query.get("starting_after")
        if after:
            rows = rows[[t["id"] for t in rows].index(after) + 1 :]
        size = min(int(request.query.get("limit", 10)), self.page_size)
        page = [dict(t) for t in rows[:size]]
        if any(v == "data.source" for k, v in request.query.items() if k.startswith("expand")):
            for t in page:
                objects = {**self.charges, **self.refunds, **self.transfers}
                t["source"] = objects[t["source"]]
        return 200, {
            "object": "list",
            "data": page,
            "has_more": len(rows) > size,
            "url": "/v1/balance_transactions",
        }
