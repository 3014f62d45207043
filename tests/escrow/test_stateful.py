"""Random escrow operations across users and currencies; the ledger invariants hold after every step."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from emanet.core.auth import Principal
from emanet.core.clock import FrozenClock
from emanet.core.db import Database, new_id
from emanet.core.errors import EmanetError
from emanet.core.tasks import JobContext
from emanet.escrow import tasks
from emanet.escrow.models import Escrow
from emanet.escrow.models import EscrowStatus as S
from emanet.escrow.service import Actor, NewEscrow, apply_transition, create_escrow, record_payment_captured
from emanet.users.models import Role, User, VerificationLevel
from tests.conftest import make_settings, truncate_all
from tests.invariants import assert_ledger_invariants

T = TypeVar("T")
CURRENCIES = {
    "TRY": (1_000, 2_000_000),
    "USD": (100, 500_000),
    "JPY": (100, 500_000),
    "KWD": (1_000, 500_000),
}
PROVIDERS = ["sandbox", "stripe", "paystack"]


class EscrowMachine(RuleBasedStateMachine):
    database_url: str
    clock: FrozenClock

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.settings = make_settings(self.database_url)
        self.database = Database(self.settings)
        self.escrows: list[str] = []
        self.users: list[User] = []

    def run(self, work: Awaitable[T]) -> T:
        return self.loop.run_until_complete(work)

    def teardown(self) -> None:
        self.run(self._truncate())
        self.run(self.database.dispose())
        self.loop.close()

    async def _truncate(self) -> None:
        await truncate_all(self.database.engine)

    async def _in_tx(self, work: Any) -> Any:
        try:
            async with self.database.transaction() as session:
                return await work(session)
        except EmanetError:
            return None  # the move was not legal in this state: nothing may have changed

    @initialize()
    def people(self) -> None:
        async def make(session: Any) -> list[User]:
            users = [
                User(
                    email=f"{new_id('u')}@x.test",
                    name=f"u{i}",
                    role=Role.admin if i == 3 else Role.user,
                    verification_level=VerificationLevel.identity,
                )
                for i in range(4)
            ]
            session.add_all(users)
            await session.flush()
            return users

        self.run(self._truncate())
        self.users = self.run(self._in_tx(make))

    def _escrow(self, index: int) -> str:
        return self.escrows[index % len(self.escrows)]

    def _actor(self, user: User) -> Actor:
        return Actor(user_id=user.id, role=user.role)

    async def _get(self, escrow_id: str) -> Escrow:
        async with self.database.transaction() as session:
            return await session.get_one(Escrow, escrow_id)

    def _move(self, escrow_id: str, target: S, who: str, **params: Any) -> None:
        escrow = self.run(self._get(escrow_id))
        user = {"buyer": escrow.buyer_id, "seller": escrow.seller_id}.get(who)
        actor = (
            self._actor(next(u for u in self.users if u.id == user))
            if user
            else (self._actor(self.users[3]) if who == "admin" else Actor.system("test"))
        )
        self.run(
            self._in_tx(
                lambda s: apply_transition(s, escrow_id, target, actor, params=params, settings=self.settings)
            )
        )

    @rule(
        buyer=st.integers(0, 2),
        seller=st.integers(0, 2),
        currency=st.sampled_from(sorted(CURRENCIES)),
        data=st.data(),
        fee_payer=st.sampled_from(["buyer", "seller", "split"]),
        category=st.sampled_from(["general", "digital_goods"]),
    )
    def create(
        self, buyer: int, seller: int, currency: str, data: st.DataObject, fee_payer: str, category: str
    ) -> None:
        if buyer == seller:
            return
        low, high = CURRENCIES[currency]
        amount = data.draw(st.integers(low, high))
        creator = self.users[buyer]
        principal = Principal(user=creator, method="jwt")
        new = NewEscrow(
            buyer_id=self.users[buyer].id,
            seller_id=self.users[seller].id,
            amount=amount,
            currency=currency,
            title="t",
            fee_payer=fee_payer,
            category=category,
        )
        escrow = self.run(
            self._in_tx(lambda s: create_escrow(s, new, self._actor(creator), principal, self.settings))
        )
        if escrow is not None:
            self.escrows.append(escrow.id)

    @precondition(lambda self: self.escrows)
    @rule(
        index=st.integers(0, 100),
        share=st.sampled_from([30, 50, 100, 100, 100]),
        provider=st.sampled_from(PROVIDERS),
    )
    def pay(self, index: int, share: int, provider: str) -> None:
        escrow = self.run(self._get(self._escrow(index)))
        due = escrow.total_due - (escrow.funded_amount - escrow.released_amount - escrow.refunded_amount)
        amount = max(1, due * share // 100) if due > 0 else 1 + share  # sometimes a late payment
        self.run(
            self._in_tx(
                lambda s: record_payment_captured(
                    s,
                    escrow_id=escrow.id,
                    payment_id=new_id("pay"),
                    provider=provider,
                    amount=amount,
                    currency=escrow.currency,
                    actor=Actor.provider(provider),
                    settings=self.settings,
                )
            )
        )

    @precondition(lambda self: self.escrows)
    @rule(index=st.integers(0, 100))
    def deliver(self, index: int) -> None:
        self._move(self._escrow(index), S.delivered, "seller", note="shipped")

    @precondition(lambda self: self.escrows)
    @rule(
        index=st.integers(0, 100),
        rating=st.none() | st.integers(1, 5),
        who=st.sampled_from(["buyer", "admin"]),
    )
    def release(self, index: int, rating: int | None, who: str) -> None:
        self._move(self._escrow(index), S.released, who, rating=rating)

    @precondition(lambda self: self.escrows)
    @rule(index=st.integers(0, 100), who=st.sampled_from(["buyer", "seller", "admin"]))
    def cancel(self, index: int, who: str) -> None:
        escrow = self.run(self._get(self._escrow(index)))
        self._move(escrow.id, S.refunded if escrow.status == S.funded else S.cancelled, who, reason="r")

    @precondition(lambda self: self.escrows)
    @rule(index=st.integers(0, 100), who=st.sampled_from(["buyer", "seller"]))
    def dispute(self, index: int, who: str) -> None:
        self._move(self._escrow(index), S.disputed, who, reason="problem")

    @precondition(lambda self: self.escrows)
    @rule(
        index=st.integers(0, 100),
        outcome=st.sampled_from([S.released, S.refunded, S.partially_refunded]),
        share=st.integers(1, 99),
    )
    def resolve(self, index: int, outcome: S, share: int) -> None:
        escrow = self.run(self._get(self._escrow(index)))
        held = escrow.funded_amount - escrow.released_amount - escrow.refunded_amount
        self._move(escrow.id, outcome, "admin", buyer_refund=max(1, held * share // 100))

    @rule(hours=st.sampled_from([1, 12, 25, 24 * 8, 24 * 4]))
    def time_passes(self, hours: int) -> None:
        self.clock.advance(hours=hours)
        context = JobContext(database=self.database, settings=self.settings)
        self.run(tasks.auto_release(context))
        self.run(tasks.expire_unfunded(context))
        self.run(tasks.escalate_disputes(context))

    @invariant()
    def ledger_holds(self) -> None:
        if self.users:
            self.run(assert_ledger_invariants(self.database))


def test_escrow_operations_keep_the_ledger_sound(database_url: str, clock: FrozenClock) -> None:
    EscrowMachine.database_url = database_url
    EscrowMachine.clock = clock
    runner = EscrowMachine.TestCase
    runner.settings = settings(
        max_examples=15, stateful_step_count=40, deadline=None, suppress_health_check=list(HealthCheck)
    )
    runner().runTest()


pytestmark = pytest.mark.slow
