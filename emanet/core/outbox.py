"""The transactional outbox: jobs and events are rows of the caller's transaction; a crash loses none."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, literal, select
from sqlalchemy.ext.asyncio import AsyncSession

from emanet.core import clock
from emanet.core.db import UTCDateTime, new_id
from emanet.core.models import Event, Job

DISPATCH_EVENT_JOB = "events.dispatch"
DEFAULT_MAX_ATTEMPTS = 10


async def enqueue(
    session: AsyncSession,
    kind: str,
    payload: dict[str, Any] | None = None,
    *,
    run_at: datetime | None = None,
    dedupe_key: str | None = None,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
) -> Job:
    """Add a job to the caller's transaction; it becomes visible to workers when that commits."""
    job = Job(
        kind=kind,
        payload=payload or {},
        run_at=run_at or clock.now(),
        dedupe_key=dedupe_key,
        max_attempts=max_attempts,
    )
    session.add(job)
    await session.flush()
    return job


@dataclass(frozen=True)
class EmittedEvent:
    id: int
    public_id: str


async def emit_event(
    session: AsyncSession, event_type: str, object_id: str, data: dict[str, Any]
) -> EmittedEvent:
    """Record a domain event and the job that fans it out to webhooks and notifications (on PostgreSQL in
    one statement: every money step emits events, and each round trip counts)."""
    now = clock.now()
    public_id = new_id("evt")
    values = {"public_id": public_id, "type": event_type, "object_id": object_id, "data": data}
    if session.get_bind().dialect.name != "postgresql":
        event = Event(**values, created_at=now)
        session.add(event)
        await session.flush()
        await enqueue(session, DISPATCH_EVENT_JOB, {"event_id": event.id, "object_id": object_id})
        return EmittedEvent(event.id, event.public_id)
    event_row = insert(Event).values(**values, created_at=now).returning(Event.id).cte("event")
    payload = await session.scalar(
        insert(Job)
        .from_select(
            ["kind", "payload", "status", "attempts", "max_attempts", "run_at", "created_at"],
            select(
                literal(DISPATCH_EVENT_JOB),
                func.json_build_object("event_id", event_row.c.id, "object_id", literal(object_id)),
                literal("pending"),
                literal(0),
                literal(DEFAULT_MAX_ATTEMPTS),
                literal(now, UTCDateTime()),
                literal(now, UTCDateTime()),
            ),
        )
        .returning(Job.payload)
    )
    assert payload is not None
    return EmittedEvent(int(payload["event_id"]), public_id)
