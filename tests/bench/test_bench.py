"""Smoke tests of the benchmark's code paths (``make bench``). Nothing here asserts a speed: the targets are
measured by the benchmark itself and reported in docs/benchmarks.md."""

from __future__ import annotations

import asyncio
import math
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from pytest_httpserver import HTTPServer
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from standardwebhooks import Webhook
from werkzeug import Request, Response

from bench import ledger_ceiling, ledger_load, loadgen, pg, profile, report, seed, stack
from bench.config import FULL, QUICK
from bench.run import alternation, combined
from emanet.core.clock import FrozenClock
from emanet.core.db import Database
from emanet.core.settings import Settings
from emanet.escrow.models import Escrow
from tests.conftest import BACKEND
from tests.invariants import assert_ledger_invariants

SECRET = "whsec_" + "c2VjcmV0LXVzZWQtb25seS1ieS10aGUtYmVuY2gtdGVzdHM="

postgres_only = pytest.mark.skipif(BACKEND == "sqlite", reason="bulk loading and pgbench are PostgreSQL's")

PGBENCH_OUTPUT = """pgbench (15.20 (Debian 15.20-0+deb12u1))
transaction type: <builtin: TPC-B (sort of)>
scaling factor: 10
query mode: prepared
number of clients: 8
number of threads: 2
maximum number of tries: 1
duration: 30 s
number of transactions actually processed: 48211
number of failed transactions: 0 (0.000%)
latency average = 4.977 ms
initial connection time = 11.409 ms
tps = 1607.402291 (without initial connection time)
"""


def test_pgbench_output_is_parsed() -> None:
    result = pg.parse_pgbench(PGBENCH_OUTPUT, clients=8, seconds=30)
    assert (result.tps, result.latency_ms, result.transactions) == (1607.402291, 4.977, 48211)
    with pytest.raises(RuntimeError):
        pg.parse_pgbench("pgbench: error: connection refused", clients=8, seconds=30)


def test_quick_plan_is_a_smaller_full_plan() -> None:
    assert QUICK.quick and not FULL.quick
    assert QUICK.lifecycle_seconds < FULL.lifecycle_seconds and QUICK.scale_sizes[-1] < FULL.scale_sizes[-1]
    assert FULL.scale_sizes == (10_000, 1_000_000) and FULL.pgbench_clients == (8, 32)
    assert FULL.ledger_connections % FULL.ledger_processes == 0


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (loadgen.percentile(values, 50), loadgen.percentile(values, 99)) == (50.0, 99.0)
    assert math.isnan(loadgen.percentile([], 99))


def test_profile_summary_by_layer_and_self_time() -> None:
    folded = "\n".join(
        [
            "run (asyncio/runners.py:1);post_entry (emanet/ledger/service.py:10);"
            "execute (asyncpg/connection.py:5) 5",
            "run (asyncio/runners.py:1);handler (emanet/escrow/router.py:3);"
            "_flush (sqlalchemy/orm/session.py:9);match (re/__init__.py:166) 3",
            "run (asyncio/runners.py:1);dumps (orjson:1) 1",
            "_bootstrap (threading.py:1);wait (threading.py:9) 1",
        ]
    )
    summary = profile.summarize(folded)
    layers = {x["layer"]: x["pct"] for x in summary["layers"]}
    assert summary["samples"] == 10
    assert (
        layers["emanet ledger"] == 50.0
        and layers["asyncpg driver"] == 50.0
        and layers["SQLAlchemy ORM"] == 30.0
        and layers["asyncio event loop"] == 90.0
    )
    # Own time: each sample once, to the innermost frame with a layer (the regex counts for the ORM).
    assert summary["own_layers"] == [
        {"layer": "asyncpg driver", "pct": 50.0},
        {"layer": "SQLAlchemy ORM", "pct": 30.0},
        {"layer": "JSON", "pct": 10.0},
        {"layer": profile.UNLAYERED, "pct": 10.0},
    ]
    assert summary["self"][0] == {"function": "execute (asyncpg/connection.py)", "pct": 50.0}
    assert summary["ours"] == [
        {"function": "post_entry (ledger/service.py)", "pct": 50.0},
        {"function": "handler (escrow/router.py)", "pct": 30.0},
    ]


def _lifecycle_server(httpserver: HTTPServer, calls: dict[str, int]) -> None:
    """A stand-in for Emanet that checks what the load generator sends: bearer tokens, JSON bodies, and a
    webhook that verifies with the Standard Webhooks library."""

    def handler(request: Request) -> Response:
        path = request.path
        if path == "/api/v1/webhooks/sandbox":
            Webhook(SECRET).verify(request.get_data(), dict(request.headers))
            event = orjson.loads(request.get_data())
            assert event["type"] == "payment.succeeded" and event["data"]["reference"] == "ch_sandbox_1"
            calls["webhook"] += 1
            return Response(b'{"received": true}', 200, content_type="application/json")
        assert request.headers["Authorization"] == "Bearer tok"
        if path == "/api/v1/escrows":
            assert orjson.loads(request.get_data())["seller_id"] == "usr_s"
            calls["create"] += 1
            body = {"id": "esc_1", "fees": {"total_due": {"amount": 102_500, "currency": "TRY"}}}
            return Response(orjson.dumps(body), 201, content_type="application/json")
        if path == "/api/v1/payments":
            calls["pay"] += 1
            return Response(
                orjson.dumps({"id": "pay_1", "provider_reference": "ch_sandbox_1"}),
                201,
                content_type="application/json",
            )
        calls["release"] += 1
        return Response(b'{"status": "released"}', 200, content_type="application/json")

    httpserver.expect_request("/api/v1/escrows", method="POST").respond_with_handler(handler)
    httpserver.expect_request("/api/v1/payments", method="POST").respond_with_handler(handler)
    httpserver.expect_request("/api/v1/webhooks/sandbox", method="POST").respond_with_handler(handler)
    httpserver.expect_request("/api/v1/escrows/esc_1/release", method="POST").respond_with_handler(handler)


async def test_loadgen_runs_the_lifecycle(httpserver: HTTPServer) -> None:
    calls = {"create": 0, "pay": 0, "webhook": 0, "release": 0}
    _lifecycle_server(httpserver, calls)
    result = await loadgen.run(
        {
            "host": httpserver.host,
            "port": httpserver.port,
            "scenario": "lifecycle",
            "clients": 2,
            "seconds": 1.0,
            "warmup_seconds": 0.1,
            "webhook_secret": SECRET,
            "people": [{"token": "tok", "buyer_id": "usr_b", "seller_id": "usr_s"}],
        }
    )
    assert result["client_failures"] == [] and result["error_samples"] == []
    assert set(result["steps"]) == set(loadgen.LIFECYCLE_STEPS)
    assert all(step["count"] > 0 and step["p99_ms"] >= step["p50_ms"] for step in result["steps"].values())
    assert result["cycles_per_second"] > 0 and min(calls.values()) >= result["steps"]["release"]["count"]


async def test_loadgen_counts_errors_and_reads(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/api/v1/escrows/esc_ok").respond_with_json({"id": "esc_ok"})
    httpserver.expect_request("/api/v1/escrows/esc_gone").respond_with_json({"code": "not_found"}, status=404)
    result = await loadgen.run(
        {
            "host": httpserver.host,
            "port": httpserver.port,
            "scenario": "get_escrow",
            "clients": 3,
            "seconds": 0.5,
            "warmup_seconds": 0,
            "paths": [
                {"path": "/api/v1/escrows/esc_ok", "token": "t"},
                {"path": "/api/v1/escrows/esc_gone", "token": "t"},
            ],
        }
    )
    step = result["steps"]["get_escrow"]
    assert step["count"] > 0 and step["errors"].get("404", 0) > 0
    assert result["loadgen_cpu_us_per_request"] is not None


async def test_the_bench_webhook_is_what_the_sandbox_accepts(database: Database, clock: FrozenClock) -> None:
    """The load generator signs its ``payment.succeeded`` events the way Emanet's sandbox verifies them."""
    from emanet.providers.sandbox import SandboxProvider

    clock.set(datetime.now(UTC))  # the generator signs with the wall clock
    settings = Settings(env="test", database_url="sqlite+aiosqlite://", sandbox_webhook_secret=SECRET)
    msg_id, body = loadgen.sandbox_event("ch_sandbox_9", "pay_9", 102_500, "TRY")
    headers = loadgen.signed_headers(Webhook(SECRET), msg_id, body)
    event = await SandboxProvider(settings, database).parse_webhook(headers, body)
    assert (event.kind, event.status, event.payment_reference, event.amount) == (
        "payment",
        "succeeded",
        "ch_sandbox_9",
        102_500,
    )


def test_scale_runs_alternate_so_a_steady_drift_costs_every_size_the_same() -> None:
    assert alternation((10_000, 1_000_000), 1) == [10_000, 1_000_000, 1_000_000, 10_000]
    order = alternation((10_000, 1_000_000), 2)
    assert order == [10_000, 1_000_000, 1_000_000, 10_000] * 2
    # A machine that slows by a fixed amount per run: the run at position i is slowed by i units.
    slowdown = {size: sum(i for i, s in enumerate(order) if s == size) for size in set(order)}
    assert slowdown[10_000] == slowdown[1_000_000]


def _lifecycle_run(
    steps_per_second: float, p99: float, server_cores: float, errors: dict[str, int]
) -> dict[str, Any]:
    return {
        "window_s": 20.0,
        "steps": {
            "create_escrow": {
                "count": int(steps_per_second * 20),
                "per_second": steps_per_second,
                "p50_ms": p99 / 4,
                "p95_ms": p99 / 2,
                "p99_ms": p99,
                "max_ms": p99 * 2,
                "errors": errors,
            }
        },
        "steps_per_second": steps_per_second,
        "cycles_per_second": steps_per_second / 4,
        "cpu": {
            "cores_used": {"emanet server": server_cores, "postgres": 0.5},
            "machine_busy_pct": 100.0,
            "server_processes": [server_cores / 2, server_cores / 2],
        },
        "loadgen_cpu_s": 1.0,
        "error_samples": [f"create_escrow 409 {steps_per_second}"] if errors else [],
    }


def test_combined_scale_runs_average_throughput_and_keep_the_worst_latency() -> None:
    first = _lifecycle_run(100.0, 300.0, 1.0, {})
    second = _lifecycle_run(140.0, 200.0, 1.2, {"409": 2})
    merged = combined([first, second])
    assert merged["steps_per_second"] == 120.0
    assert merged["cycles_per_second"] == 30.0
    step = merged["steps"]["create_escrow"]
    assert (step["count"], step["per_second"], step["p99_ms"], step["max_ms"]) == (4800, 120.0, 300.0, 600.0)
    assert step["errors"] == {"409": 2}
    assert merged["cpu"]["cores_used"] == {"emanet server": 1.1, "postgres": 0.5}
    assert merged["cpu"]["server_processes"] == [0.55, 0.55]
    assert (merged["window_s"], merged["loadgen_cpu_s"]) == (40.0, 2.0)
    assert merged["error_samples"] == ["create_escrow 409 140.0"]
    # A step that finished nothing in one run (NaN percentiles) takes the other run's figure.
    idle = _lifecycle_run(0.0, math.nan, 0.1, {})
    idle["cpu"]["server_processes"] = [0.1]  # and a run that saw one server process fewer
    lopsided = combined([idle, first])
    assert lopsided["steps"]["create_escrow"]["p99_ms"] == 300.0
    assert lopsided["cpu"]["server_processes"] == []
    # The report's CPU per step of the merged run: 1.1 cores over 120 steps/s.
    assert report.server_ms_value(merged) == pytest.approx(1.1 * 1000 / 120)


def _read_run(label: str, per_second: float, cores: dict[str, float]) -> dict[str, Any]:
    step = {"count": 1, "per_second": per_second, "p50_ms": 1.0, "p95_ms": 2.0, "p99_ms": 3.0, "max_ms": 4.0}
    return {
        "window_s": 10.0,
        "steps": {label: {**step, "errors": {}}},
        "steps_per_second": per_second,
        "cycles_per_second": 0.0,
        "cpu": {"cores_used": cores, "machine_busy_pct": 100.0, "server_processes": [0.5, 0.5]},
        "loadgen_cpu_s": 1.0,
        "error_samples": [],
    }


def test_a_p99_target_is_set_against_littles_law() -> None:
    """32 closed-loop clients at 160 steps/s wait 200 ms on average: no p99 of 50 ms below 640 steps/s."""
    run = _lifecycle_run(160.0, 300.0, 1.0, {})
    lines = report.what_targets_need({"machine": {"cpus": 2}, "lifecycle": {"32": run}})
    [row] = [line for line in lines if "p99 ≤ 50 ms" in line]
    assert "more than 640 steps/s" in row
    assert "160.0 steps/s: a mean of 200 ms per step" in row
    assert (
        report.what_targets_need(
            {"machine": {"cpus": 2}, "lifecycle": {"32": _lifecycle_run(900, 40, 1, {})}}
        )
        == []
    )


def test_the_lifecycle_budget_is_set_against_the_databases_own_part() -> None:
    """At 0.5x of 4,000 tps two cores leave 1 ms per step; PostgreSQL alone spent 3.1 ms (0.5 cores / 160)."""
    run = _lifecycle_run(160.0, 300.0, 1.0, {})
    results = {
        "machine": {"cpus": 2},
        "pgbench": [[{"clients": 32, "tps": 4000.0}]],
        "lifecycle": {"32": run},
    }
    [row] = [line for line in report.what_targets_need(results) if "0.5× pgbench" in line]  # noqa: RUF001
    assert "| 2,000 steps/s: 1.00 ms of CPU per step for every process together on 2 cores |" in row
    assert "(emanet server 6.2, postgres 3.1, load generator included)" in row
    assert "; PostgreSQL's part alone is 3.1× that budget;" in row  # noqa: RUF001


def test_report_renders_targets_and_ratios(tmp_path: Path) -> None:
    steps = {
        s: {
            "count": 100,
            "per_second": 10.0,
            "p50_ms": 5.0,
            "p95_ms": 9.0,
            "p99_ms": 12.0,
            "max_ms": 20.0,
            "errors": {},
        }
        for s in report.STEPS
    }
    run: dict[str, Any] = {
        "window_s": 10.0,
        "steps": steps,
        "steps_per_second": 40.0,
        "cycles_per_second": 10.0,
        "cpu": {
            "cores_used": {"emanet server": 1.2},
            "machine_busy_pct": 90.0,
            "server_processes": [0.7, 0.5],
        },
        "loadgen_cpu_s": 0.5,
        "loadgen_cpu_us_per_request": 40.0,
        "error_samples": [],
    }
    ledger = {"entries_per_second": 500.0, "postings_per_second": 1000.0, "client_cpu_s": 3.0, "errors": []}
    slow_read = _read_run("get_escrow", 500.0, {"emanet server": 1.0, "postgres": 0.25})
    slow_read["steps"]["get_escrow"]["p99_ms"] = 30.0
    results = {
        "plan": {"quick": True, "server_workers": 2, "ledger_batch_size": 100, "read_clients": 64},
        "machine": {"cpus": 2},
        "database_pool": {"size": 20, "overflow": 0},
        "postgres": {"version": "15"},
        "pgbench": [[{"clients": 8, "tps": 1000.0, "latency_ms": 8.0, "transactions": 30000, "seconds": 30}]],
        "lifecycle": {"8": run},
        "floor": {
            "health_live": _read_run("health_live", 5000.0, {"emanet server": 0.75, "postgres": 0.01}),
            "me": _read_run("me", 2000.0, {"emanet server": 1.4, "postgres": 0.2}),
        },
        "reads": {"get_escrow": slow_read},
        "ledger": {"single": ledger, "batch": ledger, "pgbench_statement": {"tps": 400.0}},
        "hordak": {"single": {**ledger, "entries_per_second": 100.0}},
        "profile": {
            "server": {
                "samples": 200,
                "clients": 32,
                "layers": [{"layer": "asyncpg driver", "pct": 40.0}],
                "own_layers": [
                    {"layer": "asyncpg driver", "pct": 40.0},
                    {"layer": "SQLAlchemy Core/engine", "pct": 20.0},
                    {"layer": "SQLAlchemy ORM", "pct": 10.0},
                ],
                "ours": [{"function": "post_entry (ledger/service.py)", "pct": 12.5}],
                "self": [{"function": "execute (asyncpg/connection.py)", "pct": 30.0}],
            },
            "worker": {"samples": 0},
        },
        "scale": {
            "sizes": {
                "10000": {"load": {"load_and_vacuum_s": 1.0}, "lifecycle": run, "runs": [run, run]},
                "1000000": {
                    "load": {"load_and_vacuum_s": 100.0},
                    "lifecycle": {**run, "steps_per_second": 36.0},
                    "runs": [{**run, "steps_per_second": 34.0}, {**run, "steps_per_second": 38.0}],
                },
            },
            "order": [10000, 1000000, 1000000, 10000],
            "drains": [
                {"backlog_jobs": 40, "left": 0, "seconds": 1.5},
                {"backlog_jobs": 75, "left": 0, "seconds": 2.0},
            ],
            "stats": {"median_ms": 80.0},
            "export": {"peak_rss_mb": 160.0},
            "verify": {"10000": {"unbalanced_entries": 0}, "1000000": {"unbalanced_entries": 0}},
            "counts": {"10000": {"escrows": 10_100}, "1000000": {"escrows": 1_000_100}},
        },
    }
    written = report.write(results, tmp_path / "benchmarks.md", tmp_path / "plots")
    text = written.read_text()
    assert "| lifecycle steps/s ÷ pgbench tps, 8 clients | 40.0 ÷ 1,000 | 0.04× |" in text  # noqa: RUF001
    assert "| ledger ÷ django-hordak, single transfers | 500.0 ÷ 100.0 | 5.00× |" in text  # noqa: RUF001
    assert "| ledger single transfers/s ÷ its statement under pgbench | 500.0 ÷ 400 | 1.25× |" in text  # noqa: RUF001
    assert "| `post_entry`'s statement under pgbench (no Python) | one per commit | 400.0 | 800.0 |" in text
    assert "| throughput with 1,000,000 escrows ≥ 0.9× with 10,000 | 0.90× | **met** |" in text  # noqa: RUF001
    assert "| 1,000,000 | 100.0 | 36.0 | 34.0 + 38.0 | 10.0 |" in text
    assert "in the order 10,000 → 1,000,000 → 1,000,000 → 10,000" in text
    assert "(at most 75 jobs, 2.0 s; 0 left)" in text
    assert "- 1,000,000 escrows: unbalanced_entries 0. Rows: escrows 1,000,100." in text
    assert (
        "| `GET /health/live` | the HTTP server, routing and middleware; no token, no database "
        "| 5,000 | 0.15 | 0.00 |" in text
    )
    assert (
        "| `GET /api/v1/me` | + the token, a transaction and one statement (the caller's user row) "
        "| 2,000 | 0.70 | 0.10 |" in text
    )
    # What the targets not met need, beside what was measured: 0.5 x 1,000 tps on 2 cores is 4 ms per step.
    assert (
        "| lifecycle ≥ 0.5× pgbench, 8 clients | 500 steps/s: 4.00 ms of CPU per step for every process "  # noqa: RUF001
        "together on 2 cores | a step costs 31.2 ms (emanet server 30.0, load generator included); an "
        "authenticated one-statement read (`GET /api/v1/me`) costs 0.85 ms, and the HTTP server alone "
        "(`GET /health/live`) 0.15 ms of server CPU; SQLAlchemy itself spends 9.0 ms of it, its ORM 3.0 ms "
        "of those (the profiles' own time by layer, section 6): with nothing in their place, 56 steps/s = "
        "0.06× pgbench without SQLAlchemy, 44 without its ORM |" in text  # noqa: RUF001
    )  # 30 % (ORM 10 %) of the server's 30.0 ms; 40 steps/s x 31.25 / (31.25 - 9.0) ms of CPU per step
    assert (
        "| `GET /escrows/{id}` p99 ≤ 10 ms, 64 clients | more than 6,400 reads/s, by the same law "
        "| 500 reads/s; at 2.50 ms of server and PostgreSQL CPU each, 2 cores give at most 800/s; "
        "the HTTP server with no token and no database answers 5,000/s |" in text
    )
    assert (
        "| ledger single transfers ≥ 0.8× pgbench | 800 transfers/s | 500/s; `post_entry`'s own statement, "  # noqa: RUF001
        "sent by pgbench with no Python at all, reaches 400/s on this database — below what the target "
        "needs |" in text
    )
    assert "django-hordak, single |" not in text  # 500/s is 5x hordak's 100/s: met, so no row
    assert "p99 ≤ 50 ms per step" not in text  # the worst step's p99 is 12 ms
    assert "| dashboard stats uncached ≤ 100 ms (median) | 80.0 ms | **met** |" in text
    assert "EMANET_RATE_LIMIT_ENABLED=false, database pool 20 per process, no Redis" in text
    overflowing = {"database_pool": {"size": 10, "overflow": 10}}
    assert report.database_pool(overflowing) == "database pool 10 (+10 closed after use) per process"
    assert "| CSV export peak RSS ≤ 150 MB | 160.0 MB | not met |" in text
    assert "cores used — emanet server 1.20 (0.70 + 0.50 by process), load generator 0.05" in text
    assert "py-spy sampled one of the 2 server processes during a separate 32-client" in text
    assert "| `post_entry (ledger/service.py)` | 12.5 |" in text
    assert "| SQLAlchemy Core/engine | 20.0 |" in text.split("% of samples spent in it |")[1]
    assert "py-spy sampled the worker" not in text  # no samples, no section
    if _has_matplotlib():
        assert {p.name for p in (tmp_path / "plots").iterdir()} == {
            "throughput.png",
            "latency.png",
            "scale.png",
        }
        assert "![scale.png](plots/scale.png)" in text


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


@postgres_only
async def test_bulk_load_writes_a_valid_ledger(database: Database, database_url: str) -> None:
    dsn = database_url.replace("postgresql+asyncpg://", "postgresql://")
    first = await seed.load(dsn, 0, 60, total=100, log=lambda _: None)
    await seed.load(dsn, 60, 40, total=100, log=lambda _: None)  # a second load adds to the first
    assert first["escrows"] == 60
    assert await seed.verify(dsn) == {name: 0 for name in seed._VERIFY}
    await assert_ledger_invariants(database)  # Emanet's own check agrees
    async with database.transaction() as session:
        by_status = dict(
            (await session.execute(select(Escrow.status, func.count()).group_by(Escrow.status)))
            .tuples()
            .all()
        )
        heavy = (
            await session.execute(
                select(
                    func.count().filter(Escrow.seller_id == seed.HEAVY_USER),
                    func.count().filter(Escrow.buyer_id == seed.HEAVY_USER),
                    func.count().filter(Escrow.buyer_id == Escrow.seller_id),
                )
            )
        ).one()
    assert by_status == {"released": 80, "cancelled": 12, "expired": 8}
    assert tuple(heavy) == (
        10,
        10,
        0,
    )  # one in ten sold, another one in ten bought; nobody buys from themself
    # Every release was paid: its payment and attempt are there for the webhooks' lookups to search.
    assert (await seed.counts(dsn))["payments"] == 80


@postgres_only
async def test_ledger_workload_moves_money_and_keeps_the_invariants(
    database: Database, database_url: str
) -> None:
    await ledger_load.fund_wallets_at(database_url, 8)
    for mode in ("single", "batch"):
        result = await ledger_load.run(
            {
                "database_url": database_url,
                "mode": mode,
                "connections": 2,
                "batch_size": 5,
                "seconds": 0.4,
                "warmup_seconds": 0,
                "run_id": mode,
                "process": 0,
                "wallet_slices": [[0, 1, 2, 3], [4, 5, 6, 7]],
            }
        )
        assert result["entries"] > 0
    await assert_ledger_invariants(database)


@postgres_only
async def test_pgbench_drives_the_ledgers_own_transfer_statement(
    database: Database, database_url: str
) -> None:
    await ledger_load.fund_wallets_at(database_url, 8)
    name = make_url(database_url).database
    assert name is not None
    result = await asyncio.to_thread(ledger_ceiling.run, name, 8, 2, 1)
    assert result["transactions"] > 0
    assert result["entries_posted"] == result["transactions"]
    await assert_ledger_invariants(database)  # balanced entries, balances equal to their postings


def test_the_pgbench_script_leaves_no_parameter_of_the_statement_unbound() -> None:
    text = ledger_ceiling.script(400)
    variables = set(re.findall(r"(?<![:\w]):(\w+)", text))
    assert variables == {"payer", "payee", "amount", "negative"}


@postgres_only
async def test_one_lifecycle_through_the_app_counts_its_round_trips(
    factory: Any, database_url: str, clock: FrozenClock
) -> None:
    """The bench's lifecycle (escrow, sandbox payment, signed webhook, release) works against the real app,
    and each step's statements are counted."""
    from bench import roundtrips
    from emanet.core.auth import issue_access_token
    from tests.conftest import make_settings

    clock.set(datetime.now(UTC))  # the bench signs webhooks with the wall clock
    settings = make_settings(database_url, min_hold_hours=0, rate_limit_enabled=False, log_level="WARNING")
    buyer, seller = await factory.user(), await factory.user()
    person = {"token": issue_access_token(buyer, settings), "buyer_id": buyer.id, "seller_id": seller.id}
    counted = await roundtrips.count(settings, person)
    assert list(counted) == [*loadgen.LIFECYCLE_STEPS, "get_escrow"]
    assert all(step["statements"] > 0 and step["commits"] >= 1 for step in counted.values())
    # warm: every statement of the second cycle comes from SQLAlchemy's compiled cache
    assert {name: step["compiled"] for name, step in counted.items()} == dict.fromkeys(counted, 0)
    assert counted["release"]["first_words"].get("INSERT ledger_entries") == 1
    # the capture and its fee, the escrow's new account opened before its first capture
    assert counted["webhook"]["first_words"].get("INSERT ledger_entries") == 2
    assert counted["webhook"]["first_words"].get("INSERT ledger_accounts") == 1


def test_the_bench_runs_emanet_with_productions_default_pool() -> None:
    env = stack.emanet_env("emanet_bench_x", 8000, stack.Secrets(), use_redis=False)
    fields = Settings.model_fields
    assert env["EMANET_DATABASE_POOL_SIZE"] == str(fields["database_pool_size"].default)
    assert env["EMANET_DATABASE_MAX_OVERFLOW"] == str(fields["database_max_overflow"].default)
