"""Real worker processes on PostgreSQL: a SIGKILLed worker's job is finished by another exactly once, and
two workers share 1,000 jobs without running any twice. Each worker is ``python -m tests.worker.worker_entry``
(``emanet worker`` plus the test job kinds) pointed at the test database through ``EMANET_DATABASE_URL``."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text

from emanet.core import clock as clock_module
from emanet.core.db import Database
from emanet.core.models import Job
from emanet.core.outbox import enqueue
from emanet.ledger.models import JournalEntry
from tests.conftest import BACKEND

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(600),  # process start-up on a loaded machine (see ProcessWorker.started)
    pytest.mark.postgres_only,
    pytest.mark.skipif(BACKEND != "postgres", reason="worker processes share a PostgreSQL database"),
]
ROOT = Path(__file__).resolve().parents[2]
LEASE_SECONDS = 3


class WorkerProcess:
    def __init__(self, database_url: str, log_path: Path, concurrency: int, pycache: Path) -> None:
        env = {
            **{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
            # Bytecode cached outside the tree, so only the first worker process pays for compiling imports.
            "PYTHONPYCACHEPREFIX": str(pycache),
            "EMANET_DATABASE_URL": database_url,
            "EMANET_ENV": "test",
            "EMANET_WORKER_LEASE_SECONDS": str(LEASE_SECONDS),
            "EMANET_WORKER_POLL_SECONDS": "0.05",
            "EMANET_WORKER_SHUTDOWN_GRACE_SECONDS": "5",
            "EMANET_LOG_JSON": "true",
            "EMANET_LOG_LEVEL": "INFO",
            "EMANET_DATABASE_POOL_SIZE": str(concurrency + 2),
        }
        self.log_path = log_path
        self._log = log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.worker.worker_entry", str(concurrency)],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text()

    async def started(self) -> None:
        # A cold start imports every domain; on a loaded 2-core CI machine that has taken over 30 s.
        await until(
            lambda: "worker_started" in self.log(),
            what=f"worker {self.pid} to start",
            within=180,
            log=self.log,
        )

    def stop(self, signum: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signum)

    async def exit_code(self, within: float = 15) -> int:
        await until(
            lambda: self.process.poll() is not None,
            what=f"worker {self.pid} to exit",
            within=within,
            log=self.log,
        )
        self._log.close()
        return int(self.process.returncode)


async def until(
    condition: Callable[[], Any], *, what: str, within: float = 30, log: Callable[[], str] | None = None
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        if await condition() if asyncio.iscoroutinefunction(condition) else condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(
        f"timed out waiting for {what}" + (f"\n--- worker log ---\n{log()[-3000:]}" if log else "")
    )


@pytest.fixture(autouse=True)
def _wall_clock(clock: clock_module.FrozenClock) -> None:
    """The worker processes read the real clock; jobs enqueued here must be due by it."""
    clock.set(datetime.now(UTC))


@pytest.fixture(scope="module")
def pycache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pycache")


@pytest.fixture
async def workers(
    database_url: str, tmp_path: Path, pycache: Path
) -> AsyncIterator[Callable[[int], WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(concurrency: int) -> WorkerProcess:
        process = WorkerProcess(database_url, tmp_path / f"worker-{len(started)}.log", concurrency, pycache)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop(signal.SIGKILL)
        process.process.wait(timeout=10)


async def _job(database: Database, job_id: int) -> Job:
    async with database.transaction() as session:
        return (await session.execute(select(Job).where(Job.id == job_id))).scalar_one()


@pytest.mark.parametrize("pause_at", ["in_transaction", "after_commit"])
async def test_a_sigkilled_workers_job_is_finished_by_another_exactly_once(
    database: Database, workers: Callable[[int], WorkerProcess], tmp_path: Path, pause_at: str
) -> None:
    reference = f"test:sigkill:{pause_at}"
    pool = [workers(2), workers(2)]
    await asyncio.gather(*(w.started() for w in pool))
    async with database.transaction() as session:
        job_id = (
            await enqueue(
                session,
                "test.process.ledger_post",
                {"reference": reference, "pause_at": pause_at, "marker_dir": str(tmp_path)},
            )
        ).id

    def first_attempt_paused() -> bool:
        return any((tmp_path / f"attempt-1-{w.pid}").exists() for w in pool)

    await until(first_attempt_paused, what=f"the first attempt to reach {pause_at}", log=pool[0].log)
    killed, survivor = pool if (tmp_path / f"attempt-1-{pool[0].pid}").exists() else pool[::-1]
    assert (tmp_path / f"attempt-1-{killed.pid}").read_text() == pause_at
    killed.stop(signal.SIGKILL)
    assert await killed.exit_code() == -signal.SIGKILL

    async def job_done() -> bool:
        return (await _job(database, job_id)).status == "done"

    await until(job_done, what="the other worker to finish the job", log=survivor.log)
    finished = await _job(database, job_id)
    assert finished.attempts == 2  # the killed attempt counted; its lease ran out; the survivor's succeeded
    async with database.transaction() as session:
        entries = (
            await session.execute(
                select(func.count()).select_from(JournalEntry).where(JournalEntry.reference == reference)
            )
        ).scalar_one()
    assert entries == 1
    assert '"job_done"' in survivor.log() and f'"job_id": {job_id}' in survivor.log()
    survivor.stop()
    assert await survivor.exit_code() == 0


@pytest.fixture
async def run_log_table(database: Database) -> AsyncIterator[None]:
    async with database.transaction() as session:
        await session.execute(
            text("CREATE TABLE worker_test_runs (job_id bigint NOT NULL, pid integer NOT NULL)")
        )
    yield
    async with database.transaction() as session:
        await session.execute(text("DROP TABLE worker_test_runs"))


@pytest.mark.usefixtures("run_log_table")
async def test_two_worker_processes_run_a_thousand_jobs_each_exactly_once(
    database: Database, workers: Callable[[int], WorkerProcess]
) -> None:
    pool = [workers(8), workers(8)]
    await asyncio.gather(*(w.started() for w in pool))
    async with database.transaction() as session:
        for n in range(1000):
            await enqueue(session, "test.process.count", {"n": n})

    async def all_done() -> bool:
        async with database.transaction() as session:
            return (
                await session.execute(
                    select(func.count())
                    .select_from(Job)
                    .where(Job.kind == "test.process.count", Job.status == "done")
                )
            ).scalar_one() == 1000

    await until(all_done, what="1,000 jobs to be done", within=120, log=lambda: pool[0].log()[-1500:])
    async with database.transaction() as session:
        runs = (
            await session.execute(
                text(
                    "SELECT count(*), count(DISTINCT job_id), max(n) FROM (SELECT job_id, count(*) AS n "
                    "FROM worker_test_runs GROUP BY job_id) per_job"
                )
            )
        ).one()
        per_worker = dict(
            (await session.execute(text("SELECT pid, count(*) FROM worker_test_runs GROUP BY pid"))).all()
        )
        attempts = (await session.execute(select(func.max(Job.attempts)))).scalar_one()
    assert tuple(runs) == (1000, 1000, 1)  # 1,000 jobs, each ran once
    assert attempts == 1
    assert set(per_worker) == {w.pid for w in pool}  # both processes took part
    assert sum(per_worker.values()) == 1000
    for worker in pool:  # SIGTERM: graceful stop, exit 0
        worker.stop()
    assert [await w.exit_code() for w in pool] == [0, 0]
    assert all("worker_stopped" in w.log() for w in pool)
