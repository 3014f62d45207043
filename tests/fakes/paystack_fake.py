"""A local Paystack API: transaction initialize/verify/charge_authorization/list, refunds, transfer
recipients, transfers (verify by reference) and their lists.

Shapes follow https://paystack.com/docs/api/ (the ``{"status": bool, "message", "data", "meta"}`` envelope,
``Duplicate Transaction Reference``, transaction ``authorization`` objects with a reusable
``authorization_code``). ``pay(reference, outcome)`` plays the payer on Paystack's checkout page.
Saved authorizations: ``AUTH_success``, ``AUTH_declined``, ``AUTH_3ds`` (needs the payer).
"""

from __future__ import annotations

import itertools
from typing import Any

from emanet.core import clock
from tests.fakes.server import FakeApi, Recorded

_ids = itertools.count(1000)
AUTHORIZATION = {
    "authorization_code": "AUTH_success",
    "bin": "408408",
    "last4": "4081",
    "exp_month": "12",
    "exp_year": "2030",
    "channel": "card",
    "card_type": "visa ",
    "bank": "TEST BANK",
    "country_code": "NG",
    "brand": "visa",
    "reusable": True,
    "signature": "SIG_fake",
}


def _refused(message: str, status: int = 400) -> tuple[int, Any]:
    return status, {"status": False, "message": message}


def _ok(data: Any, message: str = "OK", **extra: Any) -> tuple[int, Any]:
    return 200, {"status": True, "message": message, "data": data, **extra}


class PaystackFake(FakeApi):
    def __init__(self, secret_key: str) -> None:
        super().__init__()
        self.secret_key = secret_key
        self.transactions: dict[str, dict[str, Any]] = {}
        self.refunds: dict[int, dict[str, Any]] = {}
        self.recipients: dict[str, dict[str, Any]] = {}
        self.transfers: dict[str, dict[str, Any]] = {}
        self.per_page = 100
        routes = [
            ("POST", "/transaction/initialize", self._initialize),
            ("GET", "/transaction/verify/(?P<reference>[^/]+)", self._verify),
            ("POST", "/transaction/charge_authorization", self._charge_authorization),
            ("GET", "/transaction", self._list("transactions")),
            ("POST", "/refund", self._refund),
            ("GET", "/refund", self._list("refunds")),
            ("POST", "/transferrecipient", self._recipient),
            ("POST", "/transfer", self._transfer),
            ("GET", "/transfer/verify/(?P<reference>[^/]+)", self._verify_transfer),
            ("GET", "/transfer/(?P<code>TRF_[^/]+)", self._get_transfer),
            ("GET", "/transfer", self._list("transfers")),
        ]
        for method, pattern, handler in routes:
            self.route(method, pattern, self._authorized(handler))

    # ---- test controls
    def pay(self, reference: str, outcome: str = "success") -> None:
        transaction = self.transactions[reference]
        transaction.update(
            status=outcome,
            gateway_response="Approved" if outcome == "success" else "Declined",
            paid_at=self._now() if outcome == "success" else None,
            authorization=dict(AUTHORIZATION),
        )
        if outcome == "success":
            transaction["fees"] = min(200_000, transaction["amount"] * 15 // 1000 + 10_000)

    def settle_transfer(self, code: str, status: str, reason: str | None = None) -> None:
        self.transfers[code].update(status=status, reason=reason, transferred_at=self._now())

    def process_refund(self, refund_id: int) -> None:
        self.refunds[refund_id].update(status="processed", refunded_at=self._now())

    # ---- plumbing
    def _authorized(self, handler: Any) -> Any:
        def check(request: Recorded, **kw: str) -> tuple[int, Any]:
            if request.headers.get("Authorization") != f"Bearer {self.secret_key}":
                return _refused("Invalid key", 401)
            result: tuple[int, Any] = handler(request, **kw)
            return result

        return check

    def _now(self) -> str:
        return clock.now().strftime("%Y-%m-%dT%H:%M:%S.000Z")

    def _new_transaction(self, body: dict[str, Any], status: str) -> dict[str, Any]:
        transaction = {
            "id": next(_ids),
            "domain": "test",
            "status": status,
            "reference": body["reference"],
            "amount": body["amount"],
            "currency": body.get("currency", "NGN"),
            "gateway_response": None,
            "paid_at": None,
            "created_at": self._now(),
            "channel": "card",
            "fees": None,
            "metadata": body.get("metadata") or {},
            "authorization": {},
            "customer": {"email": body["email"]},
        }
        self.transactions[body["reference"]] = transaction
        return transaction

    # ---- transactions
    def _initialize(self, request: Recorded) -> tuple[int, Any]:
        body = request.json()
        if body["reference"] in self.transactions:
            return _refused("Duplicate Transaction Reference")
        self._new_transaction(body, "abandoned")
        access_code = f"acc{next(_ids)}"
        return _ok(
            {
                "authorization_url": f"https://checkout.paystack.com/{access_code}",
                "access_code": access_code,
                "reference": body["reference"],
            },
            "Authorization URL created",
        )

    def _verify(self, request: Recorded, reference: str) -> tuple[int, Any]:
        if reference not in self.transactions:
            return _refused("Transaction reference not found")
        return _ok(self.transactions[reference], "Verification successful")

    def _charge_authorization(self, request: Recorded) -> tuple[int, Any]:
        body = request.json()
        if body["reference"] in self.transactions:
            return _refused("Duplicate Transaction Reference")
        code = body["authorization_code"]
        if code not in ("AUTH_success", "AUTH_declined", "AUTH_3ds"):
            return _refused("Invalid authorization code")
        transaction = self._new_transaction(body, "success")
        transaction["authorization"] = {**AUTHORIZATION, "authorization_code": code}
        if code == "AUTH_declined":
            transaction.update(status="failed", gateway_response="Insufficient Funds")
        elif code == "AUTH_3ds":
            transaction.update(
                status="send_otp",
                paused=True,
                authorization_url=f"https://checkout.paystack.com/resume/{body['reference']}",
            )
        else:
            self.pay(body["reference"])
            transaction["authorization"]["authorization_code"] = code
        return _ok(transaction, "Charge attempted")

    # ---- refunds
    def _refund(self, request: Recorded) -> tuple[int, Any]:
        body = request.json()
        transaction = self.transactions.get(body["transaction"])
        if transaction is None or transaction["status"] != "success":
            return _refused("Transaction has not been completed")
        refunded = sum(
            r["amount"] for r in self.refunds.values() if r["transaction"]["reference"] == body["transaction"]
        )
        if refunded + body["amount"] > transaction["amount"]:
            return _refused("Refund amount cannot be more than the transaction amount")
        refund = {
            "id": next(_ids),
            "transaction": {"id": transaction["id"], "reference": transaction["reference"]},
            "amount": body["amount"],
            "currency": transaction["currency"],
            "status": "pending",
            "merchant_note": body.get("merchant_note"),
            "createdAt": self._now(),
            "refunded_at": None,
        }
        self.refunds[refund["id"]] = refund
        return _ok(refund, "Refund has been queued for processing")

    # ---- transfers
    def _recipient(self, request: Recorded) -> tuple[int, Any]:
        body = request.json()
        key = f"{body['bank_code']}:{body['account_number']}"
        if key not in self.recipients:
            self.recipients[key] = {
                "recipient_code": f"RCP_{next(_ids)}",
                "type": body["type"],
                "name": body["name"],
                "details": {"account_number": body["account_number"], "bank_code": body["bank_code"]},
            }
        return _ok(self.recipients[key], "Transfer recipient created successfully")

    def _transfer(self, request: Recorded) -> tuple[int, Any]:
        body = request.json()
        if any(t["reference"] == body["reference"] for t in self.transfers.values()):
            return _refused("Please provide a unique reference. Reference already exists on a transfer")
        transfer = {
            "transfer_code": f"TRF_{next(_ids)}",
            "reference": body["reference"],
            "amount": body["amount"],
            "currency": body["currency"],
            "recipient": body["recipient"],
            "status": "pending",
            "reason": None,
            "fee_charged": 5_000,
            "createdAt": self._now(),
            "transferred_at": None,
        }
        self.transfers[transfer["transfer_code"]] = transfer
        return _ok(transfer, "Transfer has been queued")

    def _verify_transfer(self, request: Recorded, reference: str) -> tuple[int, Any]:
        for transfer in self.transfers.values():
            if transfer["reference"] == reference:
                return _ok(transfer)
        return _refused("Transfer not found", 404)

    def _get_transfer(self, request: Recorded, code: str) -> tuple[int, Any]:
        return _ok(self.transfers[code])

    # ---- lists
    def _list(self, collection: str) -> Any:
        def handler(request: Recorded) -> tuple[int, Any]:
            rows = list(getattr(self, collection).values())
            if request.query.get("status"):
                rows = [r for r in rows if r["status"] == request.query["status"]]
            page = int(request.query.get("page", 1))
            size = min(int(request.query.get("perPage", 50)), self.per_page)
            count = max(1, -(-len(rows) // size))
            return _ok(
                rows[(page - 1) * size : page * size],
                meta={"total": len(rows), "page": page, "perPage": size, "pageCount": count},
            )

        return handler
