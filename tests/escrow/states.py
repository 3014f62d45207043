"""Bring an escrow to any status through the real service calls (used by the generated transition tests)."""

from __future__ import annotations

from dataclasses import dataclass

from emanet.core.db import Database
from emanet.core.tasks import JobContext
from emanet.escrow import tasks
from emanet.escrow.models import Escrow
from emanet.escrow.models import EscrowStatus as S
from emanet.escrow.service import Actor, apply_transition
from emanet.users.models import Role, User
from tests.factories import Factory, capture, create_escrow


@dataclass
class Parties:
    buyer: User
    seller: User
    admin: User


async def parties(factory: Factory) -> Parties:
    return Parties(await factory.user(), await factory.user(), await factory.user(role=Role.admin))


def actor(user: User) -> Actor:
    return Actor(user_id=user.id, role=user.role)


async def move(
    database: Database, escrow_id: str, target: S, who: User | None, *, force: bool = False, **params: object
) -> Escrow:
    async with database.transaction() as session:
        return await apply_transition(
            session,
            escrow_id,
            target,
            actor(who) if who else Actor.system("test"),
            params=dict(params),
            force=force,
        )


async def escrow_in(status: S, database: Database, p: Parties, amount: int = 100_000) -> Escrow:
    escrow = await create_escrow(database, p.buyer, p.seller, amount=amount)
    if status == S.pending_payment:
        return escrow
    if status == S.partially_funded:
        return await capture(database, escrow.id, escrow.total_due // 2)
    if status in (S.cancelled, S.expired):
        return await move(database, escrow.id, status, p.buyer if status == S.cancelled else None)
    escrow = await capture(database, escrow.id, escrow.total_due)
    if status == S.funded:
        return escrow
    if status == S.refunded:
        return await move(database, escrow.id, S.refunded, p.buyer)
    if status == S.delivered:
        return await move(database, escrow.id, S.delivered, p.seller)
    if status == S.released:  # an admin may release inside the minimum hold
        return await move(database, escrow.id, S.released, p.admin, force=True)
    disputed = await move(database, escrow.id, S.disputed, p.buyer, reason="not as described")
    if status == S.disputed:
        return disputed
    return await move(database, escrow.id, S.partially_refunded, p.admin, buyer_refund=escrow.total_due // 3)


async def run_sweep(database: Database, settings: object, sweep: str) -> None:
    handler = {
        "auto_release": tasks.auto_release,
        "expire": tasks.expire_unfunded,
        "escalate": tasks.escalate_disputes,
    }[sweep]
    await handler(JobContext(database=database, settings=settings))  # type: ignore[arg-type]
