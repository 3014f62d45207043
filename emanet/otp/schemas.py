"""Request and response bodies of the OTP domain."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from emanet.core.schemas import StrictModel
from emanet.otp.models import BlockKind, OtpPurpose


class OtpSendRequest(StrictModel):
    purpose: OtpPurpose
    phone: str | None = Field(
        default=None,
        max_length=32,
        examples=["+905551234567"],
        description="International format; for step-up purposes the account's phone is used",
    )
    locale: Literal["en", "tr", "ar"] | None = Field(
        default=None, description="SMS language; default from the account, else the number's country"
    )
    captcha_token: str | None = Field(
        default=None, max_length=4096, description="Required after repeated failures (see captcha_required)"
    )


class OtpVerifyRequest(StrictModel):
    purpose: OtpPurpose
    phone: str | None = Field(default=None, max_length=32)
    code: str = Field(pattern=r"^\d{6}$", examples=["123456"])
    captcha_token: str | None = Field(default=None, max_length=4096)


class OtpStatusOut(BaseModel):
    phone: str = Field(description="Masked")
    purpose: str
    status: str = Field(
        description="none, active, verified, consumed, exhausted, expired, superseded, send_failed"
    )
    expires_at: datetime | None
    attempts_left: int | None
    can_resend_at: datetime | None
    captcha_required: bool


class OtpVerifyOut(BaseModel):
    verified: bool
    purpose: str
    valid_until: datetime | None = Field(
        default=None, description="Step-up purposes: pass the same code to the action before this time"
    )
    user_id: str | None = None
    access_token: str | None = Field(default=None, description="purpose=login only")
    token_type: str | None = None


class BlockCreate(StrictModel):
    pattern: str = Field(min_length=2, max_length=32, examples=["+90850", "+905551234567"])
    kind: BlockKind = BlockKind.number
    reason: str = Field(default="", max_length=300)


class BlockOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    pattern: str
    kind: str
    reason: str
    created_by: str | None
    created_at: datetime
