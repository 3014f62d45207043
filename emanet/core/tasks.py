"""The registry of background job handlers and periodic sweeps.

A domain's ``tasks.py`` registers handlers with ``@job("kind")`` and sweeps with
``@periodic("kind", every=seconds)``. Handlers open their own short transactions through
``ctx.database`` (never holding one across a call to a provider) and must be safe to run twice:
the worker guarantees at-least-once; the effects (ledger references, state machines, unique
constraints) make it exactly-once. A handler whose work is one transaction opens it with
``ctx.transaction()``: the job is then marked done in that same transaction.

``@job("kind", batch=n)`` lets the worker hand one call up to ``n`` claimed jobs of that kind together
(``ctx.payloads``), done in one transaction: for small, frequent jobs whose per-job cost is mostly
round trips and commits (the fan-out of events). If a batch fails, the worker runs its jobs one by one,
so a job that cannot succeed holds up no other.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from emanet.core.db import Database
from emanet.core.settings import Settings

# Every module that registers handlers; the worker imports them all.
TASK_MODULES = [
    "emanet.escrow.tasks",
    "emanet.providers.sandbox",
    "emanet.webhooks.tasks",
    "emanet.notifications.tasks",
    "emanet.otp.tasks",
    "emanet.payments.tasks",
]


class LeaseLost(Exception):
    """Another worker holds this job now (this one's lease expired): its work must not take effect."""


@dataclass
class JobContext:
    database: Database
    settings: Settings
    payload: dict[str, Any] = field(default_factory=dict)
    # Every job's payload when the worker runs a batch (``payload`` is the first); ``[payload]`` otherwise.
    payloads: list[dict[str, Any]] = field(default_factory=list)
    job_id: int | None = None
    attempt: int = 1
    # Set by the worker: marks the job done inside a session; False when the lease was lost.
    finish_in: Callable[[AsyncSession], Awaitable[bool]] | None = None
    finished: bool = False

    def __post_init__(self) -> None:
        if not self.payloads:
            self.payloads = [self.payload]

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """The handler's unit of work with the job's completion in it (every job's, for a batch): both
        commit or neither does (one transaction less per job, and a worker that lost a lease changes
        nothing)."""
        async with self.database.transaction() as session:
            yield session
            if self.finish_in is not None and not self.finished:
                if not await self.finish_in(session):
                    raise LeaseLost(f"job {self.job_id}")
                self.finished = True


JobHandler = Callable[[JobContext], Awaitable[None]]


@dataclass(frozen=True)
class Periodic:
    kind: str
    every_seconds: float


HANDLERS: dict[str, JobHandler] = {}
PERIODIC: dict[str, Periodic] = {}
BATCH_SIZES: dict[str, int] = {}  # kinds whose handler takes several jobs at once, and how many at most


def job(kind: str, *, batch: int = 1) -> Callable[[JobHandler], JobHandler]:
    def register(handler: JobHandler) -> JobHandler:
        if kind in HANDLERS and HANDLERS[kind] is not handler:
            raise RuntimeError(f"two handlers for job kind {kind!r}")
        HANDLERS[kind] = handler
        if batch > 1:
            BATCH_SIZES[kind] = batch
        return handler

    return register


def periodic(kind: str, *, every: float) -> Callable[[JobHandler], JobHandler]:
    def register(handler: JobHandler) -> JobHandler:
        job(kind)(handler)
        PERIODIC[kind] = Periodic(kind, every)
        return handler

    return register


def load_task_modules() -> dict[str, JobHandler]:
    import importlib

    for name in TASK_MODULES:
        importlib.import_module(name)
    return HANDLERS
