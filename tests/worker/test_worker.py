"""The worker in-process: claim, run, retry with backoff, park as dead, leases, periodic sweeps, shutdown."""

from __future__ import annotations

import asyncio
import inspect
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from emanet.core import clock as clock_module
from emanet.core.db import Database
from emanet.core.models import IdempotencyKey, Job
from emanet.core.outbox import enqueue
from emanet.core.settings import Settings
from emanet.core.tasks import PERIODIC, JobContext, job, periodic
from emanet.core.worker import RetryLater, Worker, backoff_seconds, enqueue_once
from emanet.users.models import Role
from tests.conftest import bearer
from tests.factories import Factory

RUNS: list[dict[str, Any]] = []
GATE: dict[str, asyncio.Event] = {}


@job("test.worker.record")
async def _record(ctx: JobContext) -> None:
    RUNS.append({"payload": ctx.payload, "attempt": ctx.attempt, "job_id": ctx.job_id})


@job("test.worker.always_fails")
async def _always_fails(ctx: JobContext) -> None:
    raise RuntimeError(f"provider down (attempt {ctx.attempt})")


@job("test.worker.retry_later")
async def _retry_later(ctx: JobContext) -> None:
    if ctx.attempt == 1:
        raise RetryLater("not yet", delay=42)
    RUNS.append({"attempt": ctx.attempt})


@job("test.worker.blocks")
async def _blocks(ctx: JobContext) -> None:
    await GATE["release"].wait()


@pytest.fixture(autouse=True)
def _reset() -> None:
    RUNS.clear()
    GATE["release"] = asyncio.Event()


async def _job(database: Database, job_id: int) -> Job:
    async with database.transaction() as session:
        return (await session.execute(select(Job).where(Job.id == job_id))).scalar_one()


async def _enqueue(database: Database, kind: str, payload: dict[str, Any] | None = None, **kw: Any) -> int:
    async with database.transaction() as session:
        return (await enqueue(session, kind, payload or {}, **kw)).id


async def test_a_committed_job_runs_once_and_is_done(database: Database, run_jobs: Any) -> None:
    job_id = await _enqueue(database, "test.worker.record", {"n": 1})
    assert await run_jobs() == 1
    assert await run_jobs() == 0
    assert [{"payload": {"n": 1}, "attempt": 1, "job_id": job_id}] == RUNS
    done = await _job(database, job_id)
    assert (done.status, done.attempts, done.locked_by, done.last_error) == ("done", 1, None, None)
    assert done.finished_at == clock_module.now()


async def test_a_job_rolled_back_with_its_transaction_never_runs(database: Database, run_jobs: Any) -> None:
    with pytest.raises(RuntimeError):
        async with database.transaction() as session:
            await enqueue(session, "test.worker.record", {"n": 2})
            raise RuntimeError("the change that caused the job failed")
    assert await run_jobs() == 0
    assert RUNS == []


async def test_failures_back_off_exponentially_then_park_the_job_as_dead(
    database: Database, run_jobs: Any, clock: clock_module.FrozenClock, settings: Settings
) -> None:
    job_id = await _enqueue(database, "test.worker.always_fails", max_attempts=3)
    waits = []
    for attempt in (1, 2):
        before = clock.now()
        assert await run_jobs() == 1
        pending = await _job(database, job_id)
        assert (pending.status, pending.attempts) == ("pending", attempt)
        assert pending.last_error == f"RuntimeError: provider down (attempt {attempt})"
        wait = (pending.run_at - before).total_seconds()
        step = settings.worker_retry_base_seconds * 2 ** (attempt - 1)
        assert step / 2 <= wait <= step  # equal jitter: half fixed, half random
        waits.append(wait)
        assert await run_jobs() == 0  # not due yet
        clock.advance(seconds=wait)
    assert await run_jobs() == 1
    dead = await _job(database, job_id)
    assert (dead.status, dead.attempts) == ("dead", 3)
    assert dead.last_error == "RuntimeError: provider down (attempt 3)"
    clock.advance(days=1)
    assert await run_jobs() == 0


def test_backoff_grows_and_is_capped() -> None:
    for attempt in range(1, 20):
        wait = backoff_seconds(attempt, 10, 3600)
        step = min(3600, 10 * 2 ** (attempt - 1))
        assert step / 2 <= wait <= step


async def test_a_handler_can_ask_for_a_retry_after_a_delay(
    database: Database, run_jobs: Any, clock: clock_module.FrozenClock
) -> None:
    job_id = await _enqueue(database, "test.worker.retry_later")
    await run_jobs()
    waiting = await _job(database, job_id)
    assert waiting.run_at == clock.now() + timedelta(seconds=42)
    assert waiting.last_error == "not yet"
    clock.advance(seconds=42)
    await run_jobs()
    assert RUNS == [{"attempt": 2}]
    assert (await _job(database, job_id)).status == "done"


async def test_unknown_kind_is_parked_with_the_reason(database: Database, run_jobs: Any) -> None:
    job_id = await _enqueue(database, "test.worker.nobody_handles_this")
    await run_jobs()
    dead = await _job(database, job_id)
    assert dead.status == "dead"
    assert "no handler" in (dead.last_error or "")


async def test_a_lost_worker_lease_is_claimed_again_and_the_old_holder_cannot_settle(
    database: Database, settings: Settings, clock: clock_module.FrozenClock
) -> None:
    job_id = await _enqueue(database, "test.worker.record", {"n": 3})
    crashed = Worker(database, settings, name="crashed")
    survivor = Worker(database, settings, name="survivor")
    [claimed] = await crashed.claim(10)
    assert await survivor.claim(10) == []  # leased: nobody else takes it
    clock.advance(seconds=settings.worker_lease_seconds + 1)
    [again] = await survivor.claim(10)
    assert (again.id, again.attempt) == (job_id, 2)
    await crashed.execute(claimed)  # the "crashed" worker wakes up: it runs, but cannot mark the job
    still = await _job(database, job_id)
    assert (still.status, still.locked_by) == ("running", "survivor")
    await survivor.execute(again)
    done = await _job(database, job_id)
    assert (done.status, done.attempts) == ("done", 2)


async def test_a_starved_worker_does_not_claim_its_own_running_job_again(
    database: Database, settings: Settings, clock: clock_module.FrozenClock
) -> None:
    job_id = await _enqueue(database, "test.worker.record")
    slow = Worker(database, settings, name="slow")
    await slow.claim(10)
    clock.advance(seconds=settings.worker_lease_seconds + 1)  # its heartbeat did not get to run in time
    assert await slow.claim(10) == []
    [taken] = await Worker(database, settings, name="other").claim(10)
    assert taken.id == job_id


async def test_two_workers_claiming_at_once_never_share_a_job(database: Database, settings: Settings) -> None:
    async with database.transaction() as session:
        for n in range(40):
            await enqueue(session, "test.worker.record", {"n": n})
    workers = [Worker(database, settings, name=f"w{i}") for i in range(4)]
    batches = await asyncio.gather(*(w.claim(15) for w in workers))
    claimed = [job.id for batch in batches for job in batch]
    assert len(claimed) == len(set(claimed)) == 40


@periodic("test.worker.sweep", every=300)
async def _sweep(ctx: JobContext) -> None:
    RUNS.append({"sweep": ctx.payload["bucket"]})


async def test_periodic_sweeps_are_enqueued_once_per_period_however_many_workers(
    database: Database, settings: Settings, clock: clock_module.FrozenClock, run_jobs: Any
) -> None:
    workers = [Worker(database, settings, name=f"w{i}") for i in range(3)]
    added = [await w.schedule_periodic() for w in workers]
    assert added == [len(PERIODIC), 0, 0]
    assert [await w.schedule_periodic() for w in workers] == [0, 0, 0]  # same bucket: nothing new
    clock.advance(seconds=300)
    await asyncio.gather(*(w.schedule_periodic() for w in workers))
    async with database.transaction() as session:
        keys = (
            (await session.execute(select(Job.dedupe_key).where(Job.kind == "test.worker.sweep")))
            .scalars()
            .all()
        )
    bucket = int(clock.now().timestamp() // 300)
    assert sorted(keys) == [
        f"periodic:test.worker.sweep:{bucket - 1}",
        f"periodic:test.worker.sweep:{bucket}",
    ]


async def test_enqueue_once_ignores_a_duplicate_inside_a_larger_transaction(database: Database) -> None:
    async with database.transaction() as session:
        assert await enqueue_once(session, "test.worker.record", {"n": 1}, dedupe_key="once:1")
        assert not await enqueue_once(session, "test.worker.record", {"n": 2}, dedupe_key="once:1")
        await enqueue(session, "test.worker.record", {"n": 3})  # the transaction is still usable
    async with database.transaction() as session:
        rows = (await session.execute(select(Job.payload).order_by(Job.id))).scalars().all()
    assert rows == [{"n": 1}, {"n": 3}]


async def test_stop_lets_jobs_finish_within_the_grace_then_gives_the_rest_back(
    database: Database, settings: Settings
) -> None:
    fast_settings = settings.model_copy(
        update={"worker_poll_seconds": 0.02, "worker_shutdown_grace_seconds": 0.2}
    )
    quick = await _enqueue(database, "test.worker.record", {"n": 1})
    stuck = await _enqueue(database, "test.worker.blocks")
    worker = Worker(database, fast_settings, concurrency=2, name="stopping")
    running = asyncio.create_task(worker.run())
    for _ in range(200):
        if (await _job(database, quick)).status == "done" and (
            await _job(database, stuck)
        ).status == "running":
            break
        await asyncio.sleep(0.02)
    worker.request_stop()
    await asyncio.wait_for(running, timeout=5)
    assert (await _job(database, quick)).status == "done"
    released = await _job(database, stuck)
    assert (released.status, released.attempts, released.locked_by) == ("pending", 0, None)


async def test_the_api_process_runs_a_worker_when_asked(database: Database, settings: Settings) -> None:
    """``make run``: the app's lifespan starts the worker with the server and stops it with the server."""
    from asgi_lifespan import LifespanManager

    from emanet.app import create_app

    in_process = settings.model_copy(update={"run_worker_in_process": True, "worker_poll_seconds": 0.02})
    job_id = await _enqueue(database, "test.worker.record", {"n": "in-process"})
    async with LifespanManager(create_app(in_process, database=database)):
        for _ in range(250):
            if (await _job(database, job_id)).status == "done":
                break
            await asyncio.sleep(0.02)
    assert (await _job(database, job_id)).status == "done"
    assert RUNS[0]["payload"] == {"n": "in-process"}


async def test_housekeeping_forgets_old_done_jobs_and_expired_idempotency_keys(
    database: Database, run_jobs: Any, clock: clock_module.FrozenClock, settings: Settings
) -> None:
    old = await _enqueue(database, "test.worker.record", {"n": "old"})
    await run_jobs()
    dead = await _enqueue(database, "test.worker.nobody_handles_this")
    await run_jobs()
    async with database.transaction() as session:
        session.add(IdempotencyKey(caller="c", key="expired", fingerprint="f", expires_at=clock.now()))
        session.add(
            IdempotencyKey(
                caller="c", key="live", fingerprint="f", expires_at=clock.now() + timedelta(days=9)
            )
        )
    clock.advance(days=settings.job_retention_days + 1)
    recent = await _enqueue(database, "test.worker.record", {"n": "recent"})
    await run_jobs()
    async with database.transaction() as session:
        await enqueue(session, "jobs.cleanup")
        await enqueue(session, "idempotency.cleanup")
    await run_jobs()
    async with database.transaction() as session:
        ids = set((await session.execute(select(Job.id))).scalars().all())
        keys = (await session.execute(select(IdempotencyKey.key))).scalars().all()
    assert old not in ids and {dead, recent} <= ids
    assert keys == ["live"]


async def test_admins_see_dead_jobs_and_retry_them(
    client: httpx.AsyncClient, database: Database, run_jobs: Any, factory: Factory
) -> None:
    admin, support, user = [await factory.user(role=role) for role in (Role.admin, Role.support, Role.user)]
    job_id = await _enqueue(database, "test.worker.always_fails", max_attempts=1)
    await _enqueue(database, "test.worker.record")
    await run_jobs()

    listed = await client.get("/api/v1/admin/jobs", params={"status": "dead"}, headers=bearer(support))
    assert listed.status_code == 200, listed.text
    [row] = listed.json()["data"]
    assert (row["id"], row["kind"], row["attempts"]) == (job_id, "test.worker.always_fails", 1)
    assert row["last_error"] == "RuntimeError: provider down (attempt 1)"
    assert (await client.get("/api/v1/admin/jobs", headers=bearer(user))).status_code == 403
    assert (
        await client.post(f"/api/v1/admin/jobs/{job_id}/retry", headers=bearer(support))
    ).status_code == 403

    retried = await client.post(f"/api/v1/admin/jobs/{job_id}/retry", headers=bearer(admin))
    assert retried.status_code == 200, retried.text
    assert (retried.json()["status"], retried.json()["attempts"]) == ("pending", 0)
    again = await client.post(f"/api/v1/admin/jobs/{job_id}/retry", headers=bearer(admin))
    assert (again.status_code, again.json()["code"]) == (409, "job_not_dead")
    await run_jobs()
    assert (await _job(database, job_id)).status == "dead"  # it failed again, with a fresh set of attempts
    missing = await client.post("/api/v1/admin/jobs/999999/retry", headers=bearer(admin))
    assert missing.status_code == 404


@job("test.worker.in_one_transaction")
async def _in_one_transaction(ctx: JobContext) -> None:
    if ctx.payload.get("steal"):
        # Another worker takes the job over (this one's lease expired) while it runs.
        async with ctx.database.transaction() as session:
            await session.execute(update(Job).where(Job.id == ctx.job_id).values(locked_by="someone-else"))
    async with ctx.transaction() as session:
        await enqueue(session, "test.worker.record", {"effect_of": ctx.job_id})


async def _effects(database: Database, job_id: int) -> list[Job]:
    async with database.transaction() as session:
        jobs = (await session.execute(select(Job).where(Job.kind == "test.worker.record"))).scalars().all()
        return [j for j in jobs if j.payload.get("effect_of") == job_id]


async def test_a_job_done_in_its_handlers_transaction_commits_with_its_effects(
    database: Database, settings: Settings
) -> None:
    job_id = await _enqueue(database, "test.worker.in_one_transaction")
    worker = Worker(database, settings, name="w1")
    [claimed] = await worker.claim(1)
    await worker.execute(claimed)
    done = await _job(database, job_id)
    assert (done.status, done.locked_by, done.finished_at) == ("done", None, clock_module.now())
    assert len(await _effects(database, job_id)) == 1


async def test_a_worker_that_lost_the_lease_leaves_no_effect(database: Database, settings: Settings) -> None:
    job_id = await _enqueue(database, "test.worker.in_one_transaction", {"steal": True})
    worker = Worker(database, settings, name="w1")
    [claimed] = await worker.claim(1)
    await worker.execute(claimed)
    taken = await _job(database, job_id)
    assert (taken.status, taken.locked_by) == ("running", "someone-else")
    assert await _effects(database, job_id) == []


BATCH_CALLS: list[list[int]] = []


@job("test.worker.batched", batch=3)
async def _batched(ctx: JobContext) -> None:
    BATCH_CALLS.append([payload["n"] for payload in ctx.payloads])
    if any(payload.get("poison") for payload in ctx.payloads):
        raise RuntimeError("poison")
    async with ctx.transaction() as session:
        for payload in ctx.payloads:
            await enqueue(session, "test.worker.record", {"effect_of_n": payload["n"]})


async def _batched_jobs(database: Database, count: int, poison: int | None = None) -> list[int]:
    return [
        await _enqueue(database, "test.worker.batched", {"n": n, "poison": n == poison}) for n in range(count)
    ]


async def _effects_by_n(database: Database) -> list[int]:
    async with database.transaction() as session:
        jobs = (await session.execute(select(Job).where(Job.kind == "test.worker.record"))).scalars().all()
    return sorted(j.payload["effect_of_n"] for j in jobs if "effect_of_n" in j.payload)


@pytest.fixture
def _reset_batches() -> None:
    BATCH_CALLS.clear()


@pytest.mark.usefixtures("_reset_batches")
async def test_jobs_of_a_batched_kind_run_together_in_one_transaction(
    database: Database, settings: Settings
) -> None:
    single = await _enqueue(database, "test.worker.record", {"n": "alone"})
    ids = await _batched_jobs(database, 7)
    # One slot: each claim brings one job; a batched one is topped up with more of its kind.
    ran = await Worker(database, settings, concurrency=1, name="w1").run_until_idle()
    assert ran == 1 + 7 + 7  # the single job, the batched ones, and the record job each of them queued
    assert BATCH_CALLS == [[0, 1, 2], [3, 4, 5], [6]]
    for job_id in [single, *ids]:
        done = await _job(database, job_id)
        assert (done.status, done.attempts, done.locked_by) == ("done", 1, None)
    assert await _effects_by_n(database) == list(range(7))


@pytest.mark.usefixtures("_reset_batches")
async def test_a_failing_batch_runs_its_jobs_one_by_one(
    database: Database, settings: Settings, clock: clock_module.FrozenClock
) -> None:
    ids = await _batched_jobs(database, 3, poison=1)
    worker = Worker(database, settings, concurrency=1, name="w1")
    assert await worker.run_until_idle() == 3 + 2
    assert BATCH_CALLS == [[0, 1, 2], [0], [1], [2]]
    statuses = [(j.status, j.attempts, j.last_error) for j in [await _job(database, i) for i in ids]]
    assert statuses == [("done", 1, None), ("pending", 1, "RuntimeError: poison"), ("done", 1, None)]
    assert await _effects_by_n(database) == [0, 2]  # the failed batch left nothing behind
    # The retry runs alone (a job that keeps failing drags no batch down); a fresh job still batches.
    BATCH_CALLS.clear()
    fresh = await _enqueue(database, "test.worker.batched", {"n": 3})
    clock.advance(days=1)
    assert await worker.run_until_idle() == 2 + 1
    assert BATCH_CALLS == [[1], [3]]
    assert ((await _job(database, ids[1])).attempts, (await _job(database, fresh)).status) == (2, "done")


@pytest.mark.usefixtures("_reset_batches")
async def test_a_batch_with_a_lost_lease_changes_nothing_and_its_jobs_go_one_by_one(
    database: Database, settings: Settings
) -> None:
    ids = await _batched_jobs(database, 3)
    worker = Worker(database, settings, concurrency=1, name="w1")
    [group] = await worker.claim_groups(1)
    assert [job.id for job in group] == ids
    async with database.transaction() as session:  # another worker took job 1 over (this lease expired)
        await session.execute(update(Job).where(Job.id == ids[1]).values(locked_by="someone-else"))
    await worker.execute_group(group)
    assert BATCH_CALLS == [[0, 1, 2], [0], [1], [2]]
    statuses = [(j.status, j.locked_by) for j in [await _job(database, i) for i in ids]]
    assert statuses == [("done", None), ("running", "someone-else"), ("done", None)]
    assert await _effects_by_n(database) == [0, 2]


@job("test.worker.batched_waits", batch=3)
async def _batched_waits(ctx: JobContext) -> None:
    BATCH_CALLS.append([payload["n"] for payload in ctx.payloads])
    if len(ctx.payloads) > 1 and any(payload.get("poison") for payload in ctx.payloads):
        raise RuntimeError("poison")
    await GATE["release"].wait()
    async with ctx.transaction() as session:
        for payload in ctx.payloads:
            await enqueue(session, "test.worker.record", {"effect_of_n": payload["n"]})


async def _until(check: Any, seconds: float = 10) -> None:
    """Wait until ``check()`` (a value or an awaitable) is true."""
    for _ in range(int(seconds / 0.02)):
        outcome = check()
        if await outcome if inspect.isawaitable(outcome) else outcome:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("timed out")


@pytest.mark.usefixtures("_reset_batches")
async def test_the_worker_loop_renews_a_running_batchs_leases_and_settles_it(
    database: Database, settings: Settings, clock: clock_module.FrozenClock
) -> None:
    ids = [await _enqueue(database, "test.worker.batched_waits", {"n": n}) for n in range(3)]
    quick = settings.model_copy(update={"worker_poll_seconds": 0.02, "worker_lease_seconds": 0.6})
    worker = Worker(database, quick, concurrency=2, name="looping")
    running = asyncio.create_task(worker.run())
    await _until(lambda: BATCH_CALLS)
    claimed_until = [(await _job(database, i)).locked_until for i in ids]
    clock.advance(hours=1)

    async def renewed() -> bool:
        now_until = [(await _job(database, i)).locked_until for i in ids]
        return now_until == [until + timedelta(hours=1) for until in claimed_until]

    await _until(renewed)  # the heartbeat renewed every job of the batch
    GATE["release"].set()

    async def settled() -> bool:
        return [(await _job(database, i)).status for i in ids] == ["done"] * 3

    await _until(settled)
    worker.request_stop()
    await asyncio.wait_for(running, timeout=5)
    assert BATCH_CALLS == [[0, 1, 2]]
    assert await _effects_by_n(database) == [0, 1, 2]


@pytest.mark.usefixtures("_reset_batches")
async def test_stopping_during_a_failed_batchs_one_by_one_run_gives_every_job_back(
    database: Database, settings: Settings
) -> None:
    ids = [
        await _enqueue(database, "test.worker.batched_waits", {"n": n, "poison": n == 0}) for n in range(3)
    ]
    worker = Worker(database, settings, concurrency=1, name="w1")
    [group] = await worker.claim_groups(1)
    one_by_one = asyncio.create_task(worker.execute_group(group))
    await _until(lambda: BATCH_CALLS == [[0, 1, 2], [0]])  # the first job runs alone and waits
    one_by_one.cancel()
    with pytest.raises(asyncio.CancelledError):
        await one_by_one
    given_back = [(j.status, j.attempts, j.locked_by) for j in [await _job(database, i) for i in ids]]
    assert given_back == [("pending", 0, None)] * 3
