"""The background worker: claims due jobs, runs their handlers, retries with backoff, parks dead jobs.

The queue is the ``jobs`` table that ``emanet.core.outbox`` writes in the caller's transaction. We keep it
hand-written rather than adopting procrastinate because (1) the embedded default runs on SQLite, which
procrastinate does not support, (2) the outbox row must be written by the same SQLAlchemy session as the
change that causes it, and procrastinate enqueues through its own psycopg connector and schema, and (3)
what we need is small: one claim query, a lease, a retry rule.

Claiming: on PostgreSQL ``SELECT … FOR UPDATE SKIP LOCKED`` picks due rows that no other worker is
claiming, and the same transaction marks them ``running`` with a lease (``locked_until``); on SQLite the
engine opens every transaction with ``BEGIN IMMEDIATE``, so claims are serialised. A running worker
renews its leases (heartbeat); a job whose lease ran out (its worker was killed) is due again. Handlers
are at-least-once: their effects are made exactly-once by ledger references, state machines and unique
keys. Periodic sweeps are enqueued by every worker with ``dedupe_key="periodic:{kind}:{time bucket}"``,
so however many workers run, each bucket's sweep exists once.

Batches: first attempts of a kind registered with ``@job(kind, batch=n)`` that are claimed together run
as one handler call in one slot; when the first claim brings such jobs and was full (more are probably
due), a second claim tops the batch up with jobs of that kind only. A batch that fails or loses a lease is
rolled back and its jobs run one by one, each with its own retries; a retried job runs alone, so a job that
keeps failing does not drag batches down with it.

Rows of the jobs table are locked in id order by every statement that changes several of them (batch
completion, lease renewal), so a worker's own statements never deadlock each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import signal
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import and_, delete, or_, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from emanet.core import clock, heap, metrics
from emanet.core.db import Database, upsert
from emanet.core.logging import configure_logging
from emanet.core.models import IdempotencyKey, Job
from emanet.core.settings import Settings
from emanet.core.tasks import (
    BATCH_SIZES,
    HANDLERS,
    PERIODIC,
    JobContext,
    LeaseLost,
    load_task_modules,
    periodic,
)

log = structlog.get_logger("emanet.worker")

PENDING, RUNNING, DONE, DEAD = "pending", "running", "done", "dead"
MAX_ERROR_CHARS = 2000
CLEANUP_BATCH = 5000


class RetryLater(Exception):
    """Raised by a handler that wants another attempt after ``delay`` seconds (it still counts as one)."""

    def __init__(self, reason: str, delay: float) -> None:
        super().__init__(reason)
        self.reason = reason
        self.delay = delay


@dataclass(frozen=True)
class ClaimedJob:
    id: int
    kind: str
    payload: dict[str, Any]
    attempt: int
    max_attempts: int


def backoff_seconds(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with equal jitter: half of the step is fixed, half random, so retries of many
    jobs that failed together do not come back together."""
    step = float(min(cap, base * 2.0 ** max(0, attempt - 1)))
    return step / 2 + random.uniform(0, step / 2)


async def enqueue_once(
    session: AsyncSession,
    kind: str,
    payload: dict[str, Any] | None = None,
    *,
    dedupe_key: str,
    run_at: datetime | None = None,
    max_attempts: int = 10,
) -> bool:
    """Add a job unless one with ``dedupe_key`` exists (any status); True when this call added it.

    Unlike ``outbox.enqueue`` a duplicate never raises, so it is safe inside a larger transaction.
    """
    statement = (
        upsert(session, Job)
        .values(
            kind=kind,
            payload=payload or {},
            run_at=run_at or clock.now(),
            dedupe_key=dedupe_key,
            max_attempts=max_attempts,
            status=PENDING,
            attempts=0,
            created_at=clock.now(),
        )
        .on_conflict_do_nothing(index_elements=["dedupe_key"])
    )
    result = await session.execute(statement)
    return bool(getattr(result, "rowcount", 0))


def _in_id_order(condition: Any) -> Any:
    """The ids of the jobs matching ``condition``, their rows locked in id order (``FOR UPDATE`` is left
    out on SQLite, whose writers hold the whole database)."""
    return select(Job.id).where(condition).order_by(Job.id).with_for_update().scalar_subquery()


def _done() -> dict[str, Any]:
    return {"status": DONE, "finished_at": clock.now(), "last_error": None}


def _error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text[:MAX_ERROR_CHARS]


class Worker:
    """One process's share of the queue: up to ``concurrency`` jobs at once."""

    def __init__(
        self, database: Database, settings: Settings, *, concurrency: int = 4, name: str | None = None
    ) -> None:
        self.database = database
        self.settings = settings
        self.concurrency = max(1, concurrency)
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._stop = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._tasks: dict[asyncio.Task[None], list[int]] = {}  # each running task and the jobs it holds
        self._scheduled_buckets: dict[str, int] = {}

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.settings.worker_lease_seconds)

    def request_stop(self) -> None:
        """Stop claiming; jobs in progress get ``worker_shutdown_grace_seconds`` to finish."""
        if not self._stop.is_set():
            log.info("worker_stopping", worker=self.name, in_flight=len(self._tasks))
        self._stop.set()

    # --- the queue -----------------------------------------------------------------------------------

    async def claim(self, limit: int, *, kind: str | None = None) -> list[ClaimedJob]:
        """Lease up to ``limit`` due jobs (of ``kind`` only, if given): pending ones whose time has come and
        running ones whose worker stopped renewing its lease."""
        if limit <= 0:
            return []
        now = clock.now()
        due = or_(
            and_(Job.status == PENDING, Job.run_at <= now),
            # A lease this worker let lapse (its event loop starved) is still its own: it is running that job.
            and_(Job.status == RUNNING, Job.locked_until < now, Job.locked_by != self.name),
        )
        if kind is not None:
            due = and_(due, Job.kind == kind)
        # One statement: WITH due AS (SELECT … FOR UPDATE SKIP LOCKED) UPDATE jobs … FROM due RETURNING …
        # (the CTE is evaluated once, so the LIMIT holds however the planner joins it).
        due_ids = (
            select(Job.id)
            .where(due)
            .order_by(Job.run_at, Job.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .cte("due")
        )
        async with self.database.transaction() as session:
            rows = (
                await session.execute(
                    update(Job)
                    .where(Job.id == due_ids.c.id)
                    .values(
                        status=RUNNING,
                        locked_by=self.name,
                        locked_until=now + self.lease,
                        attempts=Job.attempts + 1,
                    )
                    .returning(Job.id, Job.kind, Job.payload, Job.attempts, Job.max_attempts)
                    .execution_options(synchronize_session=False)
                )
            ).all()
        claimed = [
            ClaimedJob(
                id=r.id,
                kind=r.kind,
                payload=dict(r.payload or {}),
                attempt=r.attempts,
                max_attempts=r.max_attempts,
            )
            for r in rows
        ]
        claimed.sort(key=lambda job: job.id)
        return claimed

    async def claim_groups(self, limit: int) -> list[list[ClaimedJob]]:
        """Claim up to ``limit`` units of work: single jobs, and batches of the kinds that take them."""
        claimed = await self.claim(limit)
        groups: list[list[ClaimedJob]] = []
        batches: dict[str, list[ClaimedJob]] = {}

        def place(jobs: list[ClaimedJob]) -> None:
            for job in jobs:
                if job.kind in BATCH_SIZES and job.attempt == 1:
                    batches.setdefault(job.kind, []).append(job)
                else:
                    groups.append([job])

        place(claimed)
        if len(claimed) == limit:
            for kind, jobs in list(batches.items()):
                try:
                    place(await self.claim(BATCH_SIZES[kind] - len(jobs), kind=kind))
                except Exception:  # what the first claim brought is leased to us: run it rather than drop it
                    log.exception("worker_top_up_failed", worker=self.name, kind=kind)
        for kind, jobs in batches.items():
            size = BATCH_SIZES[kind]
            groups.extend(jobs[start : start + size] for start in range(0, len(jobs), size))
        return groups

    def _mine(self, job: ClaimedJob) -> Any:
        # Only the holder of this attempt's lease may settle it; a worker that lost its lease changes nothing.
        return and_(
            Job.id == job.id, Job.status == RUNNING, Job.locked_by == self.name, Job.attempts == job.attempt
        )

    async def _settle_in(self, session: AsyncSession, job: ClaimedJob, **values: Any) -> bool:
        result = await session.execute(
            update(Job)
            .where(self._mine(job))
            .values(locked_by=None, locked_until=None, **values)
            .execution_options(synchronize_session=False)
        )
        return bool(getattr(result, "rowcount", 0))

    async def _settle(self, job: ClaimedJob, **values: Any) -> bool:
        async with self.database.transaction() as session:
            settled = await self._settle_in(session, job, **values)
        if not settled:
            self._lease_lost(job)
        return settled

    def _lease_lost(self, job: ClaimedJob) -> None:
        log.warning("job_lease_lost", job_id=job.id, kind=job.kind, attempt=job.attempt, worker=self.name)

    async def _finish_in(self, session: AsyncSession, job: ClaimedJob) -> bool:
        return await self._settle_in(session, job, **_done())

    async def _finish_all_in(self, session: AsyncSession, jobs: list[ClaimedJob]) -> bool:
        """Mark a batch done in the handler's transaction; False unless this worker holds every lease."""
        held = and_(
            tuple_(Job.id, Job.attempts).in_([(job.id, job.attempt) for job in jobs]),
            Job.status == RUNNING,
            Job.locked_by == self.name,
        )
        result = await session.execute(
            update(Job)
            .where(Job.id.in_(_in_id_order(held)))
            .values(locked_by=None, locked_until=None, **_done())
            .execution_options(synchronize_session=False)
        )
        return getattr(result, "rowcount", 0) == len(jobs)

    async def _complete(self, job: ClaimedJob, seconds: float, *, settled: bool = False) -> None:
        if settled or await self._settle(job, **_done()):
            metrics.JOBS.labels(job.kind, "done").inc()
            log.info(
                "job_done",
                job_id=job.id,
                kind=job.kind,
                attempt=job.attempt,
                duration_ms=round(seconds * 1000, 2),
            )

    async def _fail(self, job: ClaimedJob, error: str, *, delay: float | None = None) -> None:
        now = clock.now()
        if job.attempt >= job.max_attempts:
            if await self._settle(job, status=DEAD, finished_at=now, last_error=error):
                metrics.JOBS.labels(job.kind, "dead").inc()
                log.error("job_dead", job_id=job.id, kind=job.kind, attempts=job.attempt, error=error)
            return
        wait = (
            delay
            if delay is not None
            else backoff_seconds(
                job.attempt, self.settings.worker_retry_base_seconds, self.settings.worker_retry_max_seconds
            )
        )
        if await self._settle(job, status=PENDING, run_at=now + timedelta(seconds=wait), last_error=error):
            metrics.JOBS.labels(job.kind, "retry").inc()
            log.warning(
                "job_retry",
                job_id=job.id,
                kind=job.kind,
                attempt=job.attempt,
                retry_in_s=round(wait, 2),
                error=error,
            )

    async def _release(self, job: ClaimedJob) -> None:
        """Give a job back untouched (shutdown interrupted it): due now, this attempt not counted."""
        await self._settle(job, status=PENDING, run_at=clock.now(), attempts=job.attempt - 1)
        log.info("job_released", job_id=job.id, kind=job.kind, worker=self.name)

    async def execute(self, job: ClaimedJob) -> None:
        """Run one claimed job and settle it: done, retry later, or dead."""
        if job.attempt > job.max_attempts:
            await self._fail(job, "the worker running the final attempt was lost (lease expired)")
            return
        handler = HANDLERS.get(job.kind)
        if handler is None:
            await self._settle(
                job,
                status=DEAD,
                finished_at=clock.now(),
                last_error=f"no handler registered for job kind {job.kind!r}",
            )
            log.error("job_without_handler", job_id=job.id, kind=job.kind)
            return
        context = JobContext(
            database=self.database,
            settings=self.settings,
            payload=job.payload,
            job_id=job.id,
            attempt=job.attempt,
            finish_in=lambda session: self._finish_in(session, job),
        )
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.settings.worker_job_timeout_seconds):
                await handler(context)
        except asyncio.CancelledError:
            await self._release(job)
            raise
        except LeaseLost:
            self._lease_lost(job)  # rolled back: the worker holding the lease now does the work
        except RetryLater as exc:
            await self._fail(job, exc.reason[:MAX_ERROR_CHARS], delay=exc.delay)
        except Exception as exc:
            log.exception("job_failed", job_id=job.id, kind=job.kind, attempt=job.attempt)
            await self._fail(job, _error_text(exc))
        else:
            await self._complete(job, time.perf_counter() - started, settled=context.finished)

    async def execute_group(self, jobs: list[ClaimedJob]) -> None:
        """Run a unit of work from ``claim_groups``: one job, or a batch in one handler call and one
        transaction. A batch that fails (or lost a lease) changed nothing; its jobs then run one by one."""
        if len(jobs) == 1:
            await self.execute(jobs[0])
            return
        first = jobs[0]
        context = JobContext(
            database=self.database,
            settings=self.settings,
            payload=first.payload,
            payloads=[job.payload for job in jobs],
            job_id=first.id,
            attempt=max(job.attempt for job in jobs),
            finish_in=lambda session: self._finish_all_in(session, jobs),
        )
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.settings.worker_job_timeout_seconds):
                await HANDLERS[first.kind](context)
        except asyncio.CancelledError:
            if not context.finished:
                for job in jobs:
                    await self._release(job)
            raise
        except Exception as exc:
            if context.finished:  # it failed after its work committed: the jobs are done
                log.exception("job_batch_failed_after_commit", kind=first.kind, jobs=len(jobs))
            else:
                log.warning("job_batch_failed", kind=first.kind, jobs=len(jobs), error=_error_text(exc))
                await self._one_by_one(jobs)
                return
        seconds = time.perf_counter() - started
        for job in jobs:
            await self._complete(job, seconds, settled=context.finished)

    async def _one_by_one(self, jobs: list[ClaimedJob]) -> None:
        for position, job in enumerate(jobs):
            try:
                await self.execute(job)
            except asyncio.CancelledError:  # shutdown: ``execute`` gave its own job back; the rest follow
                for waiting in jobs[position + 1 :]:
                    await self._release(waiting)
                raise

    async def schedule_periodic(self) -> int:
        """Enqueue each periodic sweep once per time bucket (shared by all workers); returns how many new."""
        now = clock.now()
        due: dict[str, int] = {}
        for kind, sweep in PERIODIC.items():
            bucket = int(now.timestamp() // sweep.every_seconds)
            if self._scheduled_buckets.get(kind) != bucket:
                due[kind] = bucket
        if not due:
            return 0
        added = 0
        async with self.database.transaction() as session:
            for kind, bucket in due.items():
                added += await enqueue_once(
                    session,
                    kind,
                    {"bucket": bucket},
                    dedupe_key=f"periodic:{kind}:{bucket}",
                    run_at=now,
                    max_attempts=3,
                )
        self._scheduled_buckets.update(due)
        return added

    async def run_until_idle(self, max_jobs: int = 100_000) -> int:
        """Run due jobs batch by batch until none is due; returns how many ran. For tests and one-off runs:
        jobs retried later (with the clock frozen) are left pending."""
        ran = 0
        while ran < max_jobs:
            groups = await self.claim_groups(min(self.concurrency, max_jobs - ran))
            if not groups:
                break
            await asyncio.gather(*(self.execute_group(jobs) for jobs in groups))
            ran += sum(len(jobs) for jobs in groups)
        return ran

    # --- the loop ------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Claim and run jobs until ``request_stop``; then let in-flight jobs finish (within the grace)."""
        log.info(
            "worker_started",
            worker=self.name,
            concurrency=self.concurrency,
            kinds=len(HANDLERS),
            periodic=sorted(PERIODIC),
        )
        heartbeat = asyncio.create_task(self._heartbeat(), name=f"heartbeat:{self.name}")
        failures = 0
        try:
            while not self._stop.is_set():
                free = self.concurrency - len(self._tasks)
                try:
                    await self.schedule_periodic()
                    groups = await self.claim_groups(free)
                    failures = 0
                except Exception:
                    failures += 1
                    log.exception("worker_poll_failed", worker=self.name, consecutive=failures)
                    await self._pause(min(30.0, self.settings.worker_poll_seconds * 2**failures))
                    continue
                for jobs in groups:
                    self._start(jobs)
                if free == 0 or sum(len(jobs) for jobs in groups) < free:
                    await self._pause(self.settings.worker_poll_seconds)
        finally:
            await self._drain()
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            log.info("worker_stopped", worker=self.name)

    def _start(self, jobs: list[ClaimedJob]) -> None:
        task = asyncio.create_task(self.execute_group(jobs), name=f"job:{jobs[0].id}:{jobs[0].kind}")
        self._tasks[task] = [job.id for job in jobs]

        def _done(_: asyncio.Task[None]) -> None:
            self._tasks.pop(task, None)
            self._slot_freed.set()

        task.add_done_callback(_done)

    async def _pause(self, seconds: float) -> None:
        """Sleep until the poll interval passes, a slot frees up, or a stop is requested."""
        self._slot_freed.clear()
        stop, freed = asyncio.ensure_future(self._stop.wait()), asyncio.ensure_future(self._slot_freed.wait())
        try:
            await asyncio.wait({stop, freed}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            freed.cancel()

    async def _drain(self) -> None:
        tasks = list(self._tasks)
        if not tasks:
            return
        _, unfinished = await asyncio.wait(tasks, timeout=self.settings.worker_shutdown_grace_seconds)
        for task in unfinished:
            task.cancel()
        await asyncio.gather(*unfinished, return_exceptions=True)

    async def _heartbeat(self) -> None:
        """Renew the leases of the jobs this worker is running, well before they run out."""
        interval = max(0.2, self.settings.worker_lease_seconds / 3)
        while True:
            await asyncio.sleep(interval)
            ids = [job_id for held in self._tasks.values() for job_id in held]
            if not ids:
                continue
            try:
                async with self.database.transaction() as session:
                    held = and_(Job.id.in_(ids), Job.status == RUNNING, Job.locked_by == self.name)
                    await session.execute(
                        update(Job)
                        .where(Job.id.in_(_in_id_order(held)))
                        .values(locked_until=clock.now() + self.lease)
                        .execution_options(synchronize_session=False)
                    )
            except Exception:
                log.exception("worker_heartbeat_failed", worker=self.name)


class InProcessWorker:
    """The worker running inside the API process (``make run``)."""

    def __init__(self, worker: Worker, task: asyncio.Task[None]) -> None:
        self.worker = worker
        self.task = task

    async def stop(self) -> None:
        self.worker.request_stop()
        await self.task


async def start_in_process_worker(database: Database, settings: Settings) -> InProcessWorker:
    load_task_modules()
    worker = Worker(database, settings, concurrency=settings.worker_concurrency)
    return InProcessWorker(worker, asyncio.create_task(worker.run(), name="emanet-worker"))


async def run_worker(settings: Settings, *, concurrency: int = 4) -> None:
    """``emanet worker``: run until SIGTERM or SIGINT, then finish in-flight jobs and exit."""
    configure_logging(settings.log_level, settings.log_json)
    load_task_modules()
    heap.settle()
    database = Database(settings)
    worker = Worker(database, settings, concurrency=concurrency)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, worker.request_stop)
    try:
        await worker.run()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        await database.dispose()


# --- the worker's own housekeeping ------------------------------------------------------------------------


async def _delete_in_batches(session: AsyncSession, model: Any, condition: Any) -> int:
    deleted = 0
    while True:
        ids = (await session.execute(select(model.id).where(condition).limit(CLEANUP_BATCH))).scalars().all()
        if not ids:
            return deleted
        await session.execute(
            delete(model).where(model.id.in_(ids)).execution_options(synchronize_session=False)
        )
        deleted += len(ids)
        if len(ids) < CLEANUP_BATCH:
            return deleted


@periodic("jobs.cleanup", every=3600)
async def cleanup_finished_jobs(ctx: JobContext) -> None:
    """Forget jobs finished longer ago than ``job_retention_days`` (dead jobs stay for admins)."""
    cutoff = clock.now() - timedelta(days=ctx.settings.job_retention_days)
    async with ctx.database.transaction() as session:
        deleted = await _delete_in_batches(session, Job, and_(Job.status == DONE, Job.finished_at < cutoff))
    log.info("jobs_cleaned", deleted=deleted)


@periodic("idempotency.cleanup", every=900)
async def cleanup_idempotency_keys(ctx: JobContext) -> None:
    """Drop Idempotency-Key records past their expiry."""
    async with ctx.database.transaction() as session:
        deleted = await _delete_in_batches(session, IdempotencyKey, IdempotencyKey.expires_at < clock.now())
    log.info("idempotency_keys_cleaned", deleted=deleted)
