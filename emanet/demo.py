"""Demo data for ``make run`` and ``emanet demo``: fixed users (so the README's tokens work) and escrows."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from emanet.users.models import Role, User, VerificationLevel


@dataclass(frozen=True)
class DemoUser:
    id: str
    email: str
    phone: str
    name: str
    role: Role


DEMO_USERS = (
    DemoUser("usr_demo_buyer", "buyer@demo.emanet.dev", "+905551110001", "Ayşe Buyer", Role.user),
    DemoUser("usr_demo_seller", "seller@demo.emanet.dev", "+905551110002", "Mehmet Seller", Role.user),
    DemoUser("usr_demo_admin", "admin@demo.emanet.dev", "+905551110003", "Ada Admin", Role.admin),
    DemoUser("usr_demo_support", "support@demo.emanet.dev", "+905551110004", "Sami Support", Role.support),
)


DEMO_ESCROWS = (
    {
        "escrow_id": "esc_demo_camera",
        "title": "Vintage film camera (Canon AE-1)",
        "amount": 1_250_00,
        "currency": "TRY",
        "category": "general",
        "description": "Body and 50 mm lens, tested, ships from Istanbul.",
    },
    {
        "escrow_id": "esc_demo_logo",
        "title": "Logo design package",
        "amount": 150_00,
        "currency": "USD",
        "category": "digital_goods",
        "market_type": "service",
        "description": "Three concepts, two revisions, source files.",
    },
)


async def load_demo(session: AsyncSession) -> list[User]:
    """Create the demo users and escrows if missing (idempotent) and return the users."""
    from emanet.core.auth import Principal
    from emanet.escrow.models import Escrow
    from emanet.escrow.service import Actor, NewEscrow, create_escrow

    users = []
    for demo in DEMO_USERS:
        user = await session.get(User, demo.id)
        if user is None:
            user = User(
                id=demo.id,
                email=demo.email,
                phone=demo.phone,
                name=demo.name,
                role=demo.role,
                verification_level=VerificationLevel.identity,
            )
            session.add(user)
        users.append(user)
    await session.flush()
    buyer, seller = users[0], users[1]
    if (await session.execute(select(Escrow.id).where(Escrow.buyer_id == buyer.id).limit(1))).first() is None:
        principal = Principal(user=buyer, method="jwt")
        for escrow in DEMO_ESCROWS:
            await create_escrow(
                session,
                NewEscrow(buyer_id=buyer.id, seller_id=seller.id, **escrow),  # type: ignore[arg-type]
                Actor.system("demo"),
                principal,
            )
    return users
