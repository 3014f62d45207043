"""How long and how hard each part of the benchmark runs: the full plan, and the two-minute QUICK one."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Plan:
    quick: bool
    pgbench_scale: int
    pgbench_clients: tuple[int, ...]
    pgbench_seconds: int
    pgbench_rounds: int  # 2: once before and once after the Emanet runs (the machine's speed drifts)
    server_workers: int
    lifecycle_clients: tuple[int, ...]
    lifecycle_seconds: int
    warmup_seconds: float
    read_clients: int
    read_seconds: int
    floor_seconds: int  # GET /health/live and GET /api/v1/me: the cost of a request itself
    ledger_processes: int
    ledger_connections: int  # in all, split over the processes (pgbench's 8 clients)
    ledger_accounts: int
    ledger_batch_size: int
    ledger_seconds: int
    scale_sizes: tuple[int, ...]  # escrows already in the database before each scale run
    scale_clients: int
    scale_seconds: int  # each run
    scale_rounds: int  # each round runs every size twice (``run.alternation``)
    stats_runs: int
    profile_seconds: int

    @property
    def name(self) -> str:
        return "quick" if self.quick else "full"


FULL = Plan(
    quick=False,
    pgbench_scale=10,
    pgbench_clients=(8, 32),
    pgbench_seconds=30,
    pgbench_rounds=2,
    server_workers=2,
    lifecycle_clients=(8, 32),
    lifecycle_seconds=30,
    warmup_seconds=3,
    read_clients=64,
    read_seconds=20,
    floor_seconds=10,
    ledger_processes=2,
    ledger_connections=8,
    ledger_accounts=400,
    ledger_batch_size=100,
    ledger_seconds=30,
    scale_sizes=(10_000, 1_000_000),
    scale_clients=32,
    scale_seconds=15,
    scale_rounds=2,
    stats_runs=20,
    profile_seconds=20,
)

QUICK = Plan(
    quick=True,
    pgbench_scale=10,
    pgbench_clients=(8, 32),
    pgbench_seconds=5,
    pgbench_rounds=1,
    server_workers=2,
    lifecycle_clients=(8, 32),
    lifecycle_seconds=6,
    warmup_seconds=1,
    read_clients=64,
    read_seconds=4,
    floor_seconds=3,
    ledger_processes=2,
    ledger_connections=8,
    ledger_accounts=400,
    ledger_batch_size=100,
    ledger_seconds=4,
    scale_sizes=(10_000, 50_000),
    scale_clients=32,
    scale_seconds=6,
    scale_rounds=1,
    stats_runs=5,
    profile_seconds=5,
)


def current_plan() -> Plan:
    return QUICK if os.environ.get("QUICK", "").strip() not in ("", "0", "false") else FULL
