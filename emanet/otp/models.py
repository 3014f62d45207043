"""One-time codes (stored only as an HMAC), per-phone throttling state, and the admin-managed blocklist."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from emanet.core import clock
from emanet.core.db import Base, new_id


class OtpPurpose(StrEnum):
    login = "login"
    verify_phone = "verify_phone"
    confirm_release = "confirm_release"
    payout_change = "payout_change"


class ChallengeStatus(StrEnum):
    active = "active"  # sent; can be verified
    verified = "verified"  # a step-up code proven at /otp/verify, waiting to be used once by check_otp
    consumed = "consumed"  # used: logged in, phone verified, or the confirmed action done
    exhausted = "exhausted"  # too many wrong attempts
    expired = "expired"
    superseded = "superseded"  # a resend replaced it
    send_failed = "send_failed"  # no SMS provider took it


class OtpChallenge(Base):
    __tablename__ = "otp_challenges"
    __table_args__ = (
        Index("ix_otp_challenges_phone_purpose", "phone", "purpose", "created_at"),
        Index("ix_otp_challenges_expires_at", "expires_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("otp"))
    phone: Mapped[str] = mapped_column(String(20))
    purpose: Mapped[str] = mapped_column(String(20))
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    # HMAC-SHA256(secret key, id|phone|purpose|code): useless without the key, and bound to one purpose.
    code_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=ChallengeStatus.active)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[datetime]
    sms_message_id: Mapped[str | None] = mapped_column(String(40))
    verified_at: Mapped[datetime | None]
    consumed_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=lambda: clock.now())


class OtpPhoneState(Base):
    """Per phone: when a code was last sent (1 a minute) and failed checks in a row (CAPTCHA after N).
    Its row is locked while a code is sent or checked, so concurrent requests for a phone take turns."""

    __tablename__ = "otp_phone_states"

    phone: Mapped[str] = mapped_column(String(20), primary_key=True)
    last_sent_at: Mapped[datetime | None]
    failed_verifications: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=lambda: clock.now())


class BlockKind(StrEnum):
    number = "number"
    prefix = "prefix"


class PhoneBlock(Base):
    __tablename__ = "otp_blocklist"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("blk"))
    pattern: Mapped[str] = mapped_column(
        String(20), unique=True
    )  # an E.164 number, or a prefix such as +90850
    kind: Mapped[str] = mapped_column(String(10))
    reason: Mapped[str] = mapped_column(String(300), default="")
    created_by: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(default=lambda: clock.now())
