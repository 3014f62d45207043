"""Request and response bodies of the outbound webhooks domain."""

from __future__ import annotations

import re
from datetime import datetime

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, field_validator

from emanet.core.schemas import StrictModel

# "escrow.funded", "escrow.*" (every escrow event) or "*" (everything).
EVENT_PATTERN = re.compile(r"^(\*|[a-z][a-z0-9_]*\.(\*|[a-z][a-z0-9_.]*))$")


def _check_event_types(values: list[str]) -> list[str]:
    bad = [value for value in values if not EVENT_PATTERN.match(value)]
    if bad:
        raise ValueError(
            f"not an event type or pattern: {', '.join(bad)} (e.g. 'escrow.funded', 'escrow.*', '*')"
        )
    return sorted(set(values))


class EndpointCreate(StrictModel):
    url: AnyHttpUrl = Field(examples=["https://platform.example/hooks/emanet"])
    event_types: list[str] = Field(
        min_length=1, max_length=100, examples=[["escrow.funded", "escrow.released"]]
    )
    description: str = Field(default="", max_length=500)

    _types = field_validator("event_types")(_check_event_types)


class EndpointUpdate(StrictModel):
    url: AnyHttpUrl | None = None
    event_types: list[str] | None = Field(default=None, min_length=1, max_length=100)
    description: str | None = Field(default=None, max_length=500)
    enabled: bool | None = Field(
        default=None,
        description="Re-enabling resets the failure count and resumes the deliveries that were waiting",
    )

    @field_validator("event_types")
    @classmethod
    def _types(cls, values: list[str] | None) -> list[str] | None:
        return _check_event_types(values) if values is not None else None


class EndpointOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    url: str
    description: str
    event_types: list[str]
    status: str
    disabled_reason: str | None
    disabled_at: datetime | None
    consecutive_failures: int
    previous_secret_expires_at: datetime | None = Field(
        description="Until then deliveries are signed with the previous secret too"
    )
    created_at: datetime
    updated_at: datetime


class EndpointWithSecret(EndpointOut):
    secret: str = Field(description="The Standard Webhooks signing secret (whsec_…); shown only once")


class AttemptOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    number: int
    trigger: str
    status_code: int | None
    duration_ms: int
    error: str | None
    created_at: datetime


class DeliveryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    endpoint_id: str
    event_id: str = Field(description="The event's id; sent as the webhook-id header on every attempt")
    event_type: str
    object_id: str
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    attempt_log: list[AttemptOut] = Field(default_factory=list)
