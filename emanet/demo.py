"""Demo data for ``make run`` and ``emanet demo``: fixed users (so the README's tokens work) and escrows."""

from __future__ import annotations

from dataclasses import dataclass

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


async def load_demo(session: AsyncSession) -> list[User]:
    """Create the demo users if missing (idempotent) and return them."""
    users = []
    for demo in DEMO_USERS:
        user = await session.get(User, demo.id)
        if user is None:
            user = User(id=demo.id, email=demo.email, phone=demo.phone, name=demo.name, role=demo.role,
                        verification_level=VerificationLevel.identity)
            session.add(user)
        users.append(user)
    await session.flush()
    return users
