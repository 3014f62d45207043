"""Job kinds for the subprocess worker tests (imported by ``worker_entry`` in the worker processes)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from sqlalchemy import text

from emanet.core.tasks import JobContext, job
from emanet.ledger.accounts import escrow_account, provider_clearing
from emanet.ledger.service import Leg, post_entry


@job("test.process.ledger_post")
async def ledger_post(ctx: JobContext) -> None:
    """Posts one ledger entry under a fixed reference. On its first attempt it signals the test and then
    hangs, either inside the transaction or just after the commit, so the test can SIGKILL it there."""
    reference, pause_at = str(ctx.payload["reference"]), str(ctx.payload["pause_at"])
    marker = Path(str(ctx.payload["marker_dir"])) / f"attempt-{ctx.attempt}-{os.getpid()}"
    async with ctx.database.transaction() as session:
        await post_entry(
            session,
            reference,
            "TRY",
            [Leg(provider_clearing("sandbox"), 10_000), Leg(escrow_account("esc_sigkill"), -10_000)],
            description="SIGKILL test",
        )
        if ctx.attempt == 1 and pause_at == "in_transaction":
            _signal(marker, "in_transaction")
            await asyncio.sleep(600)
    if ctx.attempt == 1 and pause_at == "after_commit":
        _signal(marker, "after_commit")
        await asyncio.sleep(600)


def _signal(marker: Path, text: str) -> None:
    """Write the marker under another name, then rename it: the test, polling for the marker, must never see
    it created but still empty (it did once, under load)."""
    partial = marker.with_suffix(".partial")
    partial.write_text(text)
    partial.rename(marker)


@job("test.process.count")
async def count_run(ctx: JobContext) -> None:
    """Records every run (not deduplicated), so a job run twice would show up as two rows."""
    async with ctx.database.transaction() as session:
        await session.execute(
            text("INSERT INTO worker_test_runs (job_id, pid) VALUES (:job_id, :pid)"),
            {"job_id": ctx.job_id, "pid": os.getpid()},
        )
