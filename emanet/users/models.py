"""Users, their external identities and API keys."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from emanet.core.db import Base, TimestampMixin, new_id


class Role(StrEnum):
    user = "user"
    support = "support"
    admin = "admin"


class UserStatus(StrEnum):
    active = "active"
    suspended = "suspended"


class VerificationLevel(StrEnum):
    none = "none"
    phone = "phone"
    identity = "identity"


class User(TimestampMixin, Base):
    __tablename__ = "users"
    __table_args__ = (
        UniqueConstraint("oidc_issuer", "oidc_subject", name="uq_users_oidc_identity"),
        Index("ix_users_created_at", "created_at"),
        Index("ix_users_role_status", "role", "status"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("usr"))
    email: Mapped[str | None] = mapped_column(String(320), unique=True)
    phone: Mapped[str | None] = mapped_column(String(20), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    role: Mapped[str] = mapped_column(String(16), default=Role.user)
    status: Mapped[str] = mapped_column(String(16), default=UserStatus.active)
    suspended_reason: Mapped[str | None] = mapped_column(String(500))
    verification_level: Mapped[str] = mapped_column(String(16), default=VerificationLevel.none)
    phone_verified_at: Mapped[datetime | None]
    identity_verified_at: Mapped[datetime | None]
    locale: Mapped[str] = mapped_column(String(5), default="en")
    payout_destination: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    oidc_issuer: Mapped[str | None] = mapped_column(String(300))
    oidc_subject: Mapped[str | None] = mapped_column(String(300))

    @property
    def is_suspended(self) -> bool:
        return self.status == UserStatus.suspended

    @property
    def is_identity_verified(self) -> bool:
        return self.verification_level == VerificationLevel.identity


class ApiKey(TimestampMixin, Base):
    """A server credential. Only the SHA-256 of the secret is stored; the key is shown once."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("key"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[Any]] = mapped_column(JSON, default=list)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
