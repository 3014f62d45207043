"""Response bodies of the notifications domain."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict


class NotificationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    kind: str
    title: str
    body: str
    data: dict[str, Any]
    locale: str
    email_status: str
    sms_status: str
    read_at: datetime | None
    created_at: datetime


class SmsStatusAck(BaseModel):
    received: bool
