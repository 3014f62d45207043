"""``make bench`` (``QUICK=1`` for two minutes): every measurement of docs/benchmarks.md, in one run.

1. pgbench tpcb-like on its own fresh database: the baseline (twice in the full run: first and last).
2. Emanet served the production way (``emanet serve --workers N`` + ``emanet worker``) on a fresh, migrated
   database; the escrow lifecycle over HTTP at 8 and 32 clients; a py-spy profile of one server process.
3. Reads: ``GET /api/v1/escrows/{id}`` and ``GET /api/v1/escrows?…`` at 64 clients.
4. The ledger alone (``post_entry``), single and batched; ``post_entry``'s own statement driven by pgbench
   (the database's ceiling for one transfer, no Python); then the same workload through django-hordak in
   its own virtualenv and database.
5. Scale: the lifecycle again with 10,000 and with 1,000,000 escrows already loaded; the uncached dashboard
   stats and the peak memory of a full CSV export on the large database.
The full run writes docs/benchmarks.md and docs/benchmarks/*.png; QUICK writes to bench/results/quick/.
Every database the run creates is dropped and every process it starts is stopped, whatever happens.
"""

from __future__ import annotations

import asyncio
import math
import os
import platform
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil

from bench import ledger_ceiling, ledger_load, pg, profile, report, seed
from bench.config import Plan, current_plan
from bench.stack import DATABASE_POOL, ROOT, CpuMeter, Secrets, Stack, redis_reachable, running
from emanet.core.settings import Settings

HORDAK_VENV = ROOT / "bench" / ".hordak-venv"
# Pinned so that every run compares against the same release.
HORDAK_REQUIREMENTS = ("django-hordak==2.0.0", "Django>=5.2,<5.3", "psycopg[binary]>=3.2,<3.4")
PEOPLE = 64  # buyer/seller pairs: each virtual client buys from its own seller (no shared wallet row)
STARTED = time.monotonic()


def say(message: str) -> None:
    print(f"[{time.monotonic() - STARTED:6.0f}s] {message}", flush=True)


def machine_facts() -> dict[str, Any]:
    cpu_model = ""
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    pgbench_version = subprocess.run(["pgbench", "--version"], capture_output=True, text=True).stdout.strip()
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "pgbench": pgbench_version,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


# ------------------------------------------------------------------------------------------ processes
def python_module(module: str, config: dict[str, Any], workdir: Path, name: str) -> subprocess.Popen[bytes]:
    config_path, result_path = workdir / f"{name}.config.json", workdir / f"{name}.result.json"
    config_path.write_bytes(orjson.dumps(config))
    result_path.unlink(missing_ok=True)
    return subprocess.Popen([sys.executable, "-m", module, str(config_path), str(result_path)], cwd=ROOT)


def collect(process: subprocess.Popen[bytes], workdir: Path, name: str, timeout: float) -> dict[str, Any]:
    try:
        code = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise RuntimeError(f"{name} did not finish in {timeout:.0f} s") from None
    if code != 0:
        raise RuntimeError(f"{name} exited with {code}")
    result: dict[str, Any] = orjson.loads((workdir / f"{name}.result.json").read_bytes())
    return result


def migrate(database: str) -> None:
    subprocess.run(
        [str(Path(sys.executable).parent / "emanet"), "migrate"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=300,
        env={**os.environ, "EMANET_DATABASE_URL": pg.sqlalchemy_url(database)},
    )


# ------------------------------------------------------------------------------------------ people
async def create_people(database: str, keys: Secrets) -> dict[str, Any]:
    """An admin and PEOPLE buyer/seller pairs, identity-verified, each with an access token."""
    from emanet.core.auth import issue_access_token
    from emanet.core.db import Database
    from emanet.users.models import Role, VerificationLevel
    from emanet.users.service import create_user

    settings = token_settings(database, keys)
    db = Database(settings)
    try:
        async with db.transaction() as session:
            admin = await create_user(
                session, email="admin@bench.emanet.test", phone=None, name="Bench admin", role=Role.admin
            )
            pairs = []
            for i in range(PEOPLE):
                buyer = await create_user(
                    session, email=f"buyer{i}@bench.emanet.test", phone=None, name=f"Buyer {i}"
                )
                seller = await create_user(
                    session, email=f"seller{i}@bench.emanet.test", phone=None, name=f"Seller {i}"
                )
                for user in (buyer, seller):
                    user.verification_level = VerificationLevel.identity
                pairs.append((buyer, seller))
    finally:
        await db.dispose()
    return {
        "admin_token": issue_access_token(admin, settings, minutes=24 * 60),
        "people": [
            {
                "token": issue_access_token(buyer, settings, minutes=24 * 60),
                "buyer_id": buyer.id,
                "seller_id": seller.id,
            }
            for buyer, seller in pairs
        ],
    }


def token_settings(database: str, keys: Secrets) -> Any:
    return Settings(
        env="production",
        database_url=pg.sqlalchemy_url(database),
        secret_key=keys.secret_key,
        sandbox_webhook_secret=keys.webhook_secret,
        captcha_provider="turnstile",
        captcha_secret=keys.captcha_secret,
        log_level="WARNING",
    )


async def count_roundtrips(database: str, keys: Secrets, people: dict[str, Any]) -> dict[str, Any]:
    from bench import roundtrips

    settings = token_settings(database, keys).model_copy(
        update={"min_hold_hours": 0, "rate_limit_enabled": False, "public_url": "http://127.0.0.1:9"}
    )
    counted = await roundtrips.count(settings, people["people"][-1])
    say("statements per step: " + ", ".join(f"{k} {v['statements']}" for k, v in counted.items()))
    return counted


# ------------------------------------------------------------------------------------------ HTTP runs
def http_run(
    stack: Stack, workdir: Path, name: str, config: dict[str, Any], seconds: float
) -> dict[str, Any]:
    config = {"host": "127.0.0.1", "port": stack.port, **config}
    meter = CpuMeter({"emanet server": stack.server_worker_pids(), "emanet worker": [stack.worker_pid()]})
    process = python_module("bench.loadgen", config, workdir, name)
    result = collect(process, workdir, name, timeout=seconds + 120)
    result["cpu"] = meter.stop()
    return result


def lifecycle(
    stack: Stack,
    plan: Plan,
    workdir: Path,
    people: dict[str, Any],
    keys: Secrets,
    clients: int,
    seconds: float,
    name: str,
) -> dict[str, Any]:
    result = http_run(
        stack,
        workdir,
        name,
        {
            "scenario": "lifecycle",
            "clients": clients,
            "seconds": seconds,
            "warmup_seconds": plan.warmup_seconds,
            "people": people["people"],
            "webhook_secret": keys.webhook_secret,
        },
        seconds,
    )
    say(
        f"lifecycle {name}: {result['steps_per_second']} steps/s, {result['cycles_per_second']} cycles/s, "
        + ", ".join(f"{step} p99 {s['p99_ms']} ms" for step, s in result["steps"].items())
    )
    if result["error_samples"]:
        say(f"  errors: {result['error_samples'][:2]}")
    return result


async def read_targets(
    database: str, people: dict[str, Any], limit: int = 2_000
) -> dict[str, list[dict[str, str]]]:
    import asyncpg

    tokens = {p["buyer_id"]: p["token"] for p in people["people"]}
    connection = await asyncpg.connect(pg.dsn_for(database))
    try:
        rows = await connection.fetch(
            "SELECT id, buyer_id FROM escrows WHERE buyer_id = ANY($1::text[]) "
            "ORDER BY created_at DESC LIMIT $2",
            list(tokens),
            limit,
        )
    finally:
        await connection.close()
    one = [{"path": f"/api/v1/escrows/{r['id']}", "token": tokens[r["buyer_id"]]} for r in rows]
    listing = [
        {
            "path": "/api/v1/escrows?role=buyer&status=released,funded&limit=20&sort=-created_at",
            "token": token,
        }
        for token in tokens.values()
    ]
    return {"one": one, "list": listing}


FLOOR_PATHS = {
    "health_live": "/health/live",  # the HTTP stack and middleware alone: no token, no database
    "me": "/api/v1/me",  # plus a token, a transaction and one statement (the caller's user row)
}


def request_floor(stack: Stack, plan: Plan, workdir: Path, people: dict[str, Any]) -> dict[str, Any]:
    """What a request costs before it does any work of its own, and with the least database work."""
    floor = {}
    for label, path in FLOOR_PATHS.items():
        floor[label] = http_run(
            stack,
            workdir,
            f"floor-{label}",
            {
                "scenario": label,
                "clients": plan.read_clients,
                "seconds": plan.floor_seconds,
                "warmup_seconds": plan.warmup_seconds,
                "paths": [{"path": path, "token": person["token"]} for person in people["people"]],
            },
            plan.floor_seconds,
        )
        step = floor[label]["steps"][label]
        say(f"{path}: {step['per_second']} req/s, p99 {step['p99_ms']} ms")
    return floor


# ------------------------------------------------------------------------------------------ ledger
def wallet_slices(plan: Plan) -> list[list[int]]:
    """Disjoint slices of the wallets, one per connection over all processes."""
    per = plan.ledger_accounts // plan.ledger_connections
    return [list(range(i * per, (i + 1) * per)) for i in range(plan.ledger_connections)]


def ledger_runs(plan: Plan, workdir: Path, database: str, run_id: str) -> dict[str, Any]:
    asyncio.run(ledger_load.fund_wallets_at(pg.sqlalchemy_url(database), plan.ledger_accounts))
    slices = wallet_slices(plan)
    per_process = plan.ledger_connections // plan.ledger_processes
    results = {}
    for mode in ("single", "batch"):
        processes = []
        for p in range(plan.ledger_processes):
            config = {
                "database_url": pg.sqlalchemy_url(database),
                "mode": mode,
                "connections": per_process,
                "batch_size": plan.ledger_batch_size,
                "seconds": plan.ledger_seconds,
                "warmup_seconds": plan.warmup_seconds,
                "run_id": f"{run_id}{mode}",
                "process": p,
                "wallet_slices": slices[p * per_process : (p + 1) * per_process],
            }
            processes.append(python_module("bench.ledger_load", config, workdir, f"ledger-{mode}-{p}"))
        parts = [
            collect(proc, workdir, f"ledger-{mode}-{i}", timeout=plan.ledger_seconds + 120)
            for i, proc in enumerate(processes)
        ]
        results[mode] = _ledger_summary(parts, plan)
        say(
            f"ledger {mode}: {results[mode]['entries_per_second']} transfers/s, "
            f"{results[mode]['postings_per_second']} postings/s"
        )
    return results


def _ledger_summary(parts: list[dict[str, Any]], plan: Plan) -> dict[str, Any]:
    entries = sum(p["entries"] for p in parts)
    window = parts[0]["window_s"]
    errors = [e for p in parts for e in p.get("errors", [])]
    return {
        "entries_per_second": round(entries / window, 1),
        "postings_per_second": round(2 * entries / window, 1),
        "entries": entries,
        "window_s": window,
        "processes": plan.ledger_processes,
        "connections": plan.ledger_connections,
        "client_cpu_s": round(sum(p["cpu_s"] for p in parts), 1),
        "errors": errors[:3],
    }


def hordak_python() -> Path:
    """bench/.hordak-venv, created and filled from PyPI on first use (never Emanet's environment)."""
    python = HORDAK_VENV / "bin" / "python"
    stamp = HORDAK_VENV / ".requirements"
    wanted = "\n".join(HORDAK_REQUIREMENTS)
    if not (python.exists() and stamp.exists() and stamp.read_text() == wanted):
        say("installing django-hordak into bench/.hordak-venv")
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(HORDAK_VENV)], check=True, timeout=300)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", *HORDAK_REQUIREMENTS], check=True, timeout=900
        )
        stamp.write_text(wanted)
    return python


def hordak_runs(plan: Plan, workdir: Path, database: str) -> dict[str, Any]:
    python = hordak_python()
    script = str(ROOT / "bench" / "hordak_workload.py")
    dsn = pg.dsn_for(database)
    subprocess.run([str(python), script, "setup", dsn, str(plan.ledger_accounts)], check=True, timeout=600)
    version = subprocess.run(
        [str(python), "-m", "pip", "show", "django-hordak"], capture_output=True, text=True, check=True
    ).stdout
    slices = wallet_slices(plan)
    per_process = plan.ledger_connections // plan.ledger_processes
    results: dict[str, Any] = {
        "version": next(
            (line.split(":", 1)[1].strip() for line in version.splitlines() if line.startswith("Version:")),
            "?",
        )
    }
    for mode in ("single", "batch"):
        processes = []
        for p in range(plan.ledger_processes):
            name = f"hordak-{mode}-{p}"
            config = {
                "mode": mode,
                "connections": per_process,
                "batch_size": plan.ledger_batch_size,
                "seconds": plan.ledger_seconds,
                "warmup_seconds": plan.warmup_seconds,
                "process": p,
                "wallet_slices": slices[p * per_process : (p + 1) * per_process],
            }
            (workdir / f"{name}.config.json").write_bytes(orjson.dumps(config))
            (workdir / f"{name}.result.json").unlink(missing_ok=True)
            processes.append(
                subprocess.Popen(
                    [
                        str(python),
                        script,
                        "run",
                        dsn,
                        str(workdir / f"{name}.config.json"),
                        str(workdir / f"{name}.result.json"),
                    ]
                )
            )
        parts = [
            collect(proc, workdir, f"hordak-{mode}-{i}", timeout=plan.ledger_seconds + 180)
            for i, proc in enumerate(processes)
        ]
        results[mode] = _ledger_summary(parts, plan)
        say(f"hordak {mode}: {results[mode]['entries_per_second']} transfers/s")
    return results


# ------------------------------------------------------------------------------------------ scale
async def drain_jobs(database: str, limit_s: float = 180) -> dict[str, Any]:
    """Wait until the worker has run every job that is due (the lifecycle run leaves it a backlog of event
    dispatches), so the timings that follow measure the request and not the worker's catch-up."""
    import asyncpg

    connection = await asyncpg.connect(pg.dsn_for(database))
    try:
        started = time.perf_counter()
        backlog = None
        while True:
            due = await connection.fetchval(
                "SELECT count(*) FROM jobs WHERE status IN ('pending', 'running') AND run_at <= now()"
            )
            backlog = due if backlog is None else backlog
            if due == 0 or time.perf_counter() - started > limit_s:
                return {
                    "backlog_jobs": backlog,
                    "left": due,
                    "seconds": round(time.perf_counter() - started, 1),
                }
            await asyncio.sleep(0.5)
    finally:
        await connection.close()


def time_stats(stack: Stack, token: str, runs: int) -> dict[str, Any]:
    timings = []
    with httpx.Client(
        base_url=stack.base_url, timeout=60, headers={"Authorization": f"Bearer {token}"}
    ) as http:
        body: dict[str, Any] = {}
        for _ in range(runs):
            started = time.perf_counter()
            response = http.get("/api/v1/admin/dashboard/stats", params={"fresh": "true"})
            timings.append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
            body = response.json()
    ordered = sorted(timings)
    return {
        "runs": runs,
        "first_ms": round(timings[0], 1),
        "median_ms": round(ordered[len(ordered) // 2], 1),
        "p95_ms": round(ordered[max(0, int(len(ordered) * 0.95) - 1)], 1),
        "max_ms": round(ordered[-1], 1),
        "escrows_created_last_30_days": body.get("escrows_created", {}).get("last_30_days"),
    }


def export_memory(stack: Stack, token: str) -> dict[str, Any]:
    """Download the full CSV export while sampling the RSS of every server process every 20 ms."""
    pids = stack.server_worker_pids()
    baseline = {pid: psutil.Process(pid).memory_info().rss for pid in pids}
    peak = dict(baseline)
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            for pid in pids:
                try:
                    peak[pid] = max(peak[pid], psutil.Process(pid).memory_info().rss)
                except psutil.Error:
                    continue
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    size = 0
    lines = 0
    try:
        with (
            httpx.Client(base_url=stack.base_url, timeout=600) as http,
            http.stream(
                "GET",
                "/api/v1/admin/escrows/export",
                params={"format": "csv"},
                headers={"Authorization": f"Bearer {token}"},
            ) as response,
        ):
            response.raise_for_status()
            for chunk in response.iter_bytes():
                size += len(chunk)
                lines += chunk.count(b"\n")
    finally:
        stop.set()
        sampler.join()
    elapsed = time.perf_counter() - started
    serving = max(pids, key=lambda pid: peak[pid] - baseline[pid])
    return {
        "rows": lines - 1,
        "bytes": size,
        "seconds": round(elapsed, 1),
        "rows_per_second": round((lines - 1) / elapsed),
        "baseline_rss_mb": round(baseline[serving] / 2**20, 1),
        "peak_rss_mb": round(peak[serving] / 2**20, 1),
        "growth_mb": round((peak[serving] - baseline[serving]) / 2**20, 1),
    }


def alternation(sizes: tuple[int, ...], rounds: int) -> list[int]:
    """The order of the scale runs: every size, then every size backwards, ``rounds`` times (10k, 1M, 1M,
    10k, ...). This machine's speed drifts under sustained load, by 20 % and more within minutes; in this
    order a steady drift costs each size the same, where running the large size after the small one charged
    the drift to the data."""
    return [*sizes, *reversed(sizes)] * rounds


def mean(values: list[float]) -> float:
    return round(sum(values) / len(values), 2)


def worst(values: list[float]) -> float:
    """The largest value that is a number: a step that finished nothing in a run has NaN percentiles."""
    numbers = [value for value in values if not math.isnan(value)]
    return max(numbers) if numbers else math.nan


def combined(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Equal-length lifecycle runs of one size as one: mean throughput, per-step rates and cores used, the
    worst of the runs' latency percentiles (percentiles of separate runs cannot be merged exactly), errors
    added up."""
    steps: dict[str, Any] = {}
    for name in runs[0]["steps"]:
        each = [run["steps"][name] for run in runs]
        errors: dict[str, int] = {}
        for step in each:
            for status, count in step["errors"].items():
                errors[status] = errors.get(status, 0) + count
        steps[name] = {
            "count": sum(step["count"] for step in each),
            "per_second": mean([step["per_second"] for step in each]),
            **{q: worst([step[q] for step in each]) for q in ("p50_ms", "p95_ms", "p99_ms", "max_ms")},
            "errors": errors,
        }
    groups = runs[0]["cpu"]["cores_used"]
    shares = [run["cpu"]["server_processes"] for run in runs]
    return {
        "window_s": sum(run["window_s"] for run in runs),
        "steps": steps,
        "steps_per_second": mean([run["steps_per_second"] for run in runs]),
        "cycles_per_second": mean([run["cycles_per_second"] for run in runs]),
        "cpu": {
            "cores_used": {
                group: mean([run["cpu"]["cores_used"][group] for run in runs]) for group in groups
            },
            "machine_busy_pct": mean([run["cpu"]["machine_busy_pct"] for run in runs]),
            # Per process, when every run saw the same number of server processes (it is only a spread).
            "server_processes": [mean(list(process)) for process in zip(*shares, strict=True)]
            if len({len(share) for share in shares}) == 1
            else [],
        },
        "loadgen_cpu_s": sum(run["loadgen_cpu_s"] for run in runs),
        "error_samples": [sample for run in runs for sample in run["error_samples"]][:5],
    }


def scale_runs(
    plan: Plan, workdir: Path, databases: dict[int, str], keys: Secrets, use_redis: bool
) -> dict[str, Any]:
    """Each size in its own database. Every lifecycle run gets a stack of its own, started for it and
    stopped once its worker has run the jobs the run queued, so no run inherits another's backlog or
    shares the machine with an idle stack; the runs alternate between the sizes (``alternation``). Stats
    and export on the largest database, the ledger checked in each."""
    people: dict[int, dict[str, Any]] = {}
    loads: dict[int, dict[str, Any]] = {}
    for size, database in databases.items():
        migrate(database)
        people[size] = asyncio.run(create_people(database, keys))
        say(f"bulk-loading {size:,} escrows")
        loads[size] = asyncio.run(seed.load(pg.dsn_for(database), 0, size, total=size, log=say))
    runs: dict[int, list[dict[str, Any]]] = {size: [] for size in databases}
    results: dict[str, Any] = {"order": alternation(tuple(databases), plan.scale_rounds), "drains": []}
    for size in results["order"]:
        name = f"scale-{size}-{len(runs[size]) + 1}"
        with running(
            databases[size], keys, workers=plan.server_workers, log_dir=workdir, use_redis=use_redis
        ) as stack:
            runs[size].append(
                lifecycle(
                    stack, plan, workdir, people[size], keys, plan.scale_clients, plan.scale_seconds, name
                )
            )
            results["drains"].append(asyncio.run(drain_jobs(databases[size])))
    results["sizes"] = {
        str(size): {"load": loads[size], "lifecycle": combined(runs[size]), "runs": runs[size]}
        for size in databases
    }
    say(f"worker backlogs after each run: {results['drains']}")
    largest = max(databases)
    with running(
        databases[largest], keys, workers=plan.server_workers, log_dir=workdir, use_redis=use_redis
    ) as stack:
        say("timing GET /api/v1/admin/dashboard/stats?fresh=true")
        results["stats"] = time_stats(stack, people[largest]["admin_token"], plan.stats_runs)
        say(f"stats: median {results['stats']['median_ms']} ms")
        say("full CSV export")
        results["export"] = export_memory(stack, people[largest]["admin_token"])
        say(f"export: {results['export']}")
    say("verifying the ledger invariants over every row of each database")
    results["verify"] = {
        str(size): asyncio.run(seed.verify(pg.dsn_for(db))) for size, db in databases.items()
    }
    results["counts"] = {
        str(size): asyncio.run(seed.counts(pg.dsn_for(db))) for size, db in databases.items()
    }
    say(f"verify: {results['verify']}")
    return results


# ------------------------------------------------------------------------------------------ main
def pgbench_round(plan: Plan, database: str) -> list[dict[str, Any]]:
    runs = []
    for clients in plan.pgbench_clients:
        result = pg.as_dict(pg.pgbench_run(database, clients, plan.pgbench_seconds))
        say(f"pgbench {clients} clients: {result['tps']:.0f} tps, {result['latency_ms']} ms")
        runs.append(result)
    return runs


def main() -> None:
    plan = current_plan()
    run_id = f"{os.getpid()}"
    workdir = ROOT / "bench" / "results" / plan.name
    workdir.mkdir(parents=True, exist_ok=True)
    names = {part: f"emanet_bench_{part}_{run_id}" for part in ("pgbench", "api", "ledger", "hordak")} | {
        f"scale_{size}": f"emanet_bench_scale_{size}_{run_id}" for size in plan.scale_sizes
    }
    use_redis = redis_reachable()
    results: dict[str, Any] = {
        "plan": asdict(plan),
        "machine": machine_facts(),
        "redis": use_redis,
        "database_pool": DATABASE_POOL,
        "started_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    say(f"{plan.name} benchmark; work files in {workdir}")
    try:
        results["postgres"] = asyncio.run(pg.server_facts())
        asyncio.run(pg.create_database(names["pgbench"]))
        pg.pgbench_init(names["pgbench"], plan.pgbench_scale)
        results["pgbench"] = [pgbench_round(plan, names["pgbench"])]

        keys = Secrets()
        asyncio.run(pg.create_database(names["api"]))
        migrate(names["api"])
        people = asyncio.run(create_people(names["api"], keys))
        results["roundtrips"] = asyncio.run(count_roundtrips(names["api"], keys, people))
        with running(
            names["api"], keys, workers=plan.server_workers, log_dir=workdir, use_redis=use_redis
        ) as stack:
            results["lifecycle"] = {
                str(c): lifecycle(
                    stack, plan, workdir, people, keys, c, plan.lifecycle_seconds, f"lifecycle-{c}"
                )
                for c in plan.lifecycle_clients
            }
            results["profile"] = profile_run(stack, plan, workdir, people, keys)
            targets = asyncio.run(read_targets(names["api"], people))
            results["reads"] = {}
            for kind, label in (("one", "get_escrow"), ("list", "list_escrows")):
                run = http_run(
                    stack,
                    workdir,
                    f"read-{kind}",
                    {
                        "scenario": label,
                        "clients": plan.read_clients,
                        "seconds": plan.read_seconds,
                        "warmup_seconds": plan.warmup_seconds,
                        "paths": targets[kind],
                    },
                    plan.read_seconds,
                )
                results["reads"][label] = run
                step = run["steps"][label]
                say(f"{label}: {step['per_second']} req/s, p50 {step['p50_ms']} ms, p99 {step['p99_ms']} ms")
            results["floor"] = request_floor(stack, plan, workdir, people)
        asyncio.run(pg.drop_database(names["api"]))

        asyncio.run(pg.create_database(names["ledger"]))
        migrate(names["ledger"])
        results["ledger"] = ledger_runs(plan, workdir, names["ledger"], run_id)
        results["ledger"]["pgbench_statement"] = ledger_ceiling.run(
            names["ledger"], plan.ledger_accounts, plan.ledger_connections, plan.ledger_seconds
        )
        say(f"post_entry's statement under pgbench: {results['ledger']['pgbench_statement']['tps']:.0f} tps")
        asyncio.run(pg.drop_database(names["ledger"]))
        asyncio.run(pg.create_database(names["hordak"]))
        results["hordak"] = hordak_runs(plan, workdir, names["hordak"])
        asyncio.run(pg.drop_database(names["hordak"]))

        scale_databases = {size: names[f"scale_{size}"] for size in plan.scale_sizes}
        for database in scale_databases.values():
            asyncio.run(pg.create_database(database))
        results["scale"] = scale_runs(plan, workdir, scale_databases, Secrets(), use_redis)
        for database in scale_databases.values():
            asyncio.run(pg.drop_database(database))

        if plan.pgbench_rounds > 1:
            results["pgbench"].append(pgbench_round(plan, names["pgbench"]))
    finally:
        for name in names.values():
            asyncio.run(pg.drop_database(name))
        results["finished_at"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        results["elapsed_s"] = round(time.monotonic() - STARTED)
        (workdir / "results.json").write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    docs = ROOT / "docs" if not plan.quick else workdir
    written = report.write(
        results, docs / "benchmarks.md", docs / "benchmarks" if not plan.quick else workdir
    )
    say(f"wrote {written} in {results['elapsed_s']} s")


def profile_run(
    stack: Stack, plan: Plan, workdir: Path, people: dict[str, Any], keys: Secrets
) -> dict[str, Any]:
    """A separate lifecycle run while py-spy samples one server process and the worker (not counted in the
    figures); returns a summary per process."""
    targets = {"server": stack.server_worker_pids()[0], "worker": stack.worker_pid()}
    clients = max(plan.lifecycle_clients)
    recorded: dict[str, bool] = {}
    samplers = [
        threading.Thread(
            target=lambda name=name, pid=pid: recorded.update(
                {name: profile.record(pid, plan.profile_seconds, workdir / f"profile-{name}.txt")}
            )
        )
        for name, pid in targets.items()
    ]
    for sampler in samplers:
        sampler.start()
    lifecycle(
        stack, plan, workdir, people, keys, clients, plan.profile_seconds + plan.warmup_seconds, "profiled"
    )
    for sampler in samplers:
        sampler.join()
    summaries: dict[str, Any] = {}
    for name in targets:
        if not recorded.get(name):
            say(f"py-spy could not sample the {name} process (no ptrace permission?): no profile")
            continue
        summaries[name] = profile.summarize((workdir / f"profile-{name}.txt").read_text())
        summaries[name]["clients"] = clients
    return summaries


if __name__ == "__main__":
    main()
