"""The local PostgreSQL server: fresh databases for each part of the run, server facts, and pgbench."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

import asyncpg

ADMIN_DSN = os.environ.get("EMANET_BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


def dsn_for(database: str) -> str:
    parts = urlsplit(ADMIN_DSN)
    return parts._replace(path=f"/{database}").geturl()


def sqlalchemy_url(database: str) -> str:
    return dsn_for(database).replace("postgresql://", "postgresql+asyncpg://", 1)


async def create_database(name: str) -> None:
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()


async def drop_database(name: str) -> None:
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def server_facts() -> dict[str, str]:
    """The settings that decide what a commit costs; the benchmark refuses to run without durability."""
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        facts = {"version": await admin.fetchval("SHOW server_version")}
        for name in (
            "synchronous_commit",
            "fsync",
            "full_page_writes",
            "wal_sync_method",
            "shared_buffers",
            "max_connections",
            "max_wal_size",
            "work_mem",
        ):
            facts[name] = await admin.fetchval(f"SHOW {name}")
    finally:
        await admin.close()
    if facts["synchronous_commit"] != "on" or facts["fsync"] != "on":
        raise SystemExit("the benchmark needs synchronous_commit=on and fsync=on (durable commits)")
    return facts


def pgbench_env() -> dict[str, str]:
    """The environment that points pgbench and psql at the benchmark's PostgreSQL server."""
    parts = urlsplit(ADMIN_DSN)
    env = dict(os.environ)
    env.update(
        PGHOST=parts.hostname or "127.0.0.1",
        PGPORT=str(parts.port or 5432),
        PGUSER=parts.username or "postgres",
    )
    if parts.password:
        env["PGPASSWORD"] = parts.password
    return env


@dataclass
class PgbenchResult:
    clients: int
    seconds: int
    tps: float
    latency_ms: float
    transactions: int


_TPS = re.compile(r"^tps = ([\d.]+) \(without initial connection time\)", re.M)
_LATENCY = re.compile(r"^latency average = ([\d.]+) ms", re.M)
_DONE = re.compile(r"^number of transactions actually processed: (\d+)", re.M)


def parse_pgbench(output: str, clients: int, seconds: int) -> PgbenchResult:
    tps, latency, done = _TPS.search(output), _LATENCY.search(output), _DONE.search(output)
    if not (tps and latency and done):
        raise RuntimeError(f"unexpected pgbench output:\n{output}")
    return PgbenchResult(
        clients=clients,
        seconds=seconds,
        tps=float(tps.group(1)),
        latency_ms=float(latency.group(1)),
        transactions=int(done.group(1)),
    )


def pgbench_init(database: str, scale: int) -> None:
    subprocess.run(
        ["pgbench", "-i", "-q", "-s", str(scale), database],
        env=pgbench_env(),
        check=True,
        capture_output=True,
        timeout=600,
    )


def pgbench_run(database: str, clients: int, seconds: int) -> PgbenchResult:
    """TPC-B-like (the default script): one durable bank transfer per transaction, prepared statements."""
    threads = min(clients, os.cpu_count() or 1)
    done = subprocess.run(
        ["pgbench", "-M", "prepared", "-c", str(clients), "-j", str(threads), "-T", str(seconds), database],
        env=pgbench_env(),
        check=True,
        capture_output=True,
        text=True,
        timeout=seconds + 120,
    )
    return parse_pgbench(done.stdout, clients, seconds)


def as_dict(result: PgbenchResult) -> dict[str, Any]:
    return asdict(result)
