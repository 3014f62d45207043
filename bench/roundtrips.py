"""How many SQL statements and commits each lifecycle step sends: one cycle, counted in-process.

The server's cost per step is mostly one database round trip after another (see the profile), so the count
of statements per step is the first number to look at when making a step faster. The cycle runs through
the real application (``create_app``) with the bench's production settings, over an in-process ASGI
transport, against the same kind of fresh database the HTTP runs use.
"""

from __future__ import annotations

from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from sqlalchemy import event
from standardwebhooks import Webhook

from bench.loadgen import LIFECYCLE_STEPS, sandbox_event, signed_headers

_VERBS = {"INSERT", "UPDATE", "DELETE", "SELECT"}
_TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")


class StatementLog:
    def __init__(self) -> None:
        self.statements: list[str] = []
        self.compiled = 0  # statements SQLAlchemy compiled afresh rather than took from its cache
        self.commits = 0

    def on_statement(
        self, _conn: Any, _cursor: Any, statement: str, _params: Any, context: Any, *_: Any
    ) -> None:
        if not statement.lstrip().upper().startswith(_TRANSACTION_CONTROL):
            self.statements.append(" ".join(statement.split()))
            self.compiled += context.cache_hit != context.dialect.CACHE_HIT

    def on_commit(self, _conn: Any) -> None:
        self.commits += 1

    def take(self) -> dict[str, Any]:
        taken = {
            "statements": len(self.statements),
            "compiled": self.compiled,
            "commits": self.commits,
            "first_words": _first_words(self.statements),
        }
        self.statements, self.compiled, self.commits = [], 0, 0
        return taken


def _first_words(statements: list[str]) -> dict[str, int]:
    """``{"SELECT escrows": 3, "INSERT jobs": 2, …}``: what kind of statement, on which table."""
    kinds: dict[str, int] = {}
    for statement in statements:
        words = statement.replace("(", " ").split()
        if words[0].upper() == "WITH":  # a CTE statement counts as its first data-changing part
            upper = [w.upper() for w in words]
            changing = [i for i, w in enumerate(upper) if w in _VERBS - {"SELECT"}]
            words = words[changing[0] if changing else upper.index("SELECT") :]
        verb = words[0].upper()
        table = next(
            (
                w
                for w, before in zip(words[1:], words, strict=False)
                if before.upper() in ("FROM", "INTO", "UPDATE")
            ),
            "?",
        )
        key = f"{verb} {table}"
        kinds[key] = kinds.get(key, 0) + 1
    return dict(sorted(kinds.items(), key=lambda kv: -kv[1]))


async def count(settings: Any, person: dict[str, str]) -> dict[str, Any]:
    """Run one warm-up cycle, then count the statements and commits of each step of a second one."""
    from emanet.app import create_app

    app = create_app(settings)
    log = StatementLog()
    webhook = Webhook(settings.sandbox_webhook_secret)
    auth = {"Authorization": f"Bearer {person['token']}"}
    async with LifespanManager(app):
        engine = app.state.database.engine.sync_engine
        event.listen(engine, "before_cursor_execute", log.on_statement)
        event.listen(engine, "commit", log.on_commit)
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            counted: dict[str, Any] = {}
            for _ in range(2):  # the first cycle warms the caches (compiled statements, accounts)
                log.take()
                escrow = (
                    (
                        await client.post(
                            "/api/v1/escrows",
                            headers=auth,
                            json={
                                "buyer_id": person["buyer_id"],
                                "seller_id": person["seller_id"],
                                "amount": {"amount": 100_000, "currency": "TRY"},
                                "title": "Round trips",
                                "category": "general",
                            },
                        )
                    )
                    .raise_for_status()
                    .json()
                )
                counted["create"] = log.take()
                payment = (
                    (
                        await client.post(
                            "/api/v1/payments",
                            headers=auth,
                            json={
                                "escrow_id": escrow["id"],
                                "provider": "sandbox",
                                "method": "card",
                                "return_url": "https://shop.example/return",
                            },
                        )
                    )
                    .raise_for_status()
                    .json()
                )
                counted["pay"] = log.take()
                msg_id, body = sandbox_event(
                    payment["provider_reference"], payment["id"], escrow["fees"]["total_due"]["amount"], "TRY"
                )
                (
                    await client.post(
                        "/api/v1/webhooks/sandbox",
                        headers=signed_headers(webhook, msg_id, body),
                        content=body,
                    )
                ).raise_for_status()
                counted["webhook"] = log.take()
                (
                    await client.post(f"/api/v1/escrows/{escrow['id']}/release", headers=auth)
                ).raise_for_status()
                counted["release"] = log.take()
                (await client.get(f"/api/v1/escrows/{escrow['id']}", headers=auth)).raise_for_status()
                counted["get_escrow"] = log.take()
    return {step: counted[step] for step in (*LIFECYCLE_STEPS, "get_escrow")}
