"""The transactional outbox: jobs and events are rows of the caller's transaction; a crash loses none."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from emanet.core import clock
from emanet.core.models import Event, Job

DISPATCH_EVENT_JOB = "events.dispatch"


async def enqueue(
    session: AsyncSession,
    kind: str,
    payload: dict[str, Any] | None = None,
    *,
    run_at: datetime | None = None,
    dedupe_key: str | None = None,
    max_attempts: int = 10,
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


async def emit_event(session: AsyncSession, event_type: str, object_id: str, data: dict[str, Any]) -> Event:
    """Record a domain event and the job that fans it out to webhooks and notifications."""
    event = Event(type=event_type, object_id=object_id, data=data)
    session.add(event)
    await session.flush()
    await enqueue(session, DISPATCH_EVENT_JOB, {"event_id": event.id})
    return event
