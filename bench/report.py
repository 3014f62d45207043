"""docs/benchmarks.md and its plots, from the results of one run (bench/results/<plan>/results.json).

``python -m bench.report RESULTS.json OUT.md PLOTS_DIR`` re-renders a report without re-running anything.
"""

# ruff: noqa: E501 (the Markdown text reads better on long lines)

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import orjson

STEPS = ("create", "pay", "webhook", "release")
STEP_NAMES = {
    "create": "create escrow (`POST /api/v1/escrows`)",
    "pay": "create sandbox payment (`POST /api/v1/payments`)",
    "webhook": "signed provider webhook (`POST /api/v1/webhooks/sandbox`)",
    "release": "release (`POST /api/v1/escrows/{id}/release`)",
}


# Issue 6's targets, stated once for the summary, the "what it would take" table and the plots.
LIFECYCLE_GOAL = 0.5  # lifecycle steps/s ÷ pgbench tps
LEDGER_BATCH_GOAL = 5  # batched postings/s ÷ pgbench tps
LEDGER_SINGLE_GOAL = 0.8  # single transfers/s ÷ pgbench tps
HORDAK_GOAL = 5  # single transfers/s ÷ django-hordak's
STEP_P99_MS = 50  # per lifecycle step, at 32 clients
READ_P99_MS = 10  # GET /escrows/{id}, at 64 clients


def pgbench_tps(results: dict[str, Any], clients: int) -> float:
    """Mean tps over the rounds at this concurrency (the full run measures before and after Emanet)."""
    values = [
        run["tps"] for round_ in results.get("pgbench", []) for run in round_ if run["clients"] == clients
    ]
    return sum(values) / len(values) if values else math.nan


def ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(b) and not math.isnan(a) else math.nan


def fmt(value: Any, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, (int, float)):
        return f"{value:,.{digits}f}"
    return str(value)


def verdict(ok: bool | None) -> str:
    return "–" if ok is None else ("**met**" if ok else "not met")


def quotient_row(
    label: str, top: float, bottom: float, digits: tuple[int, int] = (1, 0), unit: str = ""
) -> list[str]:
    """A row of the ratio table: what is divided by what, and the quotient."""
    return [
        label,
        f"{fmt(top, digits[0])}{unit} ÷ {fmt(bottom, digits[1])}{unit}",
        fmt(ratio(top, bottom), 2) + "×",
    ]


def _safe(fn: Any, default: Any = math.nan) -> Any:
    try:
        return fn()
    except (KeyError, IndexError, TypeError):
        return default


def ratios_and_targets(r: dict[str, Any]) -> tuple[list[list[str]], list[list[str]]]:
    """(ratio rows, target rows) for the summary tables."""
    ratio_rows: list[list[str]] = []
    target_rows: list[list[str]] = []
    for clients, run in r.get("lifecycle", {}).items():
        tps = pgbench_tps(r, int(clients))
        steps = run["steps_per_second"]
        ratio_rows += [
            quotient_row(f"lifecycle steps/s ÷ pgbench tps, {clients} clients", steps, tps),
            quotient_row(
                f"lifecycle cycles/s ÷ pgbench tps, {clients} clients", run["cycles_per_second"], tps
            ),
        ]
        value = ratio(steps, tps)
        target_rows.append(
            [
                f"lifecycle steps/s ≥ {LIFECYCLE_GOAL}× pgbench tps ({clients} clients; goal 1.0×)",
                fmt(value, 2) + "×",
                verdict(None if math.isnan(value) else value >= LIFECYCLE_GOAL),
            ]
        )
    ledger, hordak = r.get("ledger", {}), r.get("hordak", {})
    base = pgbench_tps(r, 8)
    single = _safe(lambda: ledger["single"]["entries_per_second"])
    batch_postings = _safe(lambda: ledger["batch"]["postings_per_second"])
    hordak_single = _safe(lambda: hordak["single"]["entries_per_second"])
    hordak_batch = _safe(lambda: hordak["batch"]["entries_per_second"])
    batch_entries = _safe(lambda: ledger["batch"]["entries_per_second"])
    statement_tps = _safe(lambda: ledger["pgbench_statement"]["tps"])
    ratio_rows += [
        quotient_row("ledger single transfers/s ÷ pgbench tps (8)", single, base),
        quotient_row(
            "`post_entry`'s statement under pgbench (no Python) ÷ pgbench tps (8): the database's ceiling",
            statement_tps,
            base,
            (0, 0),
        ),
        quotient_row("ledger single transfers/s ÷ its statement under pgbench", single, statement_tps),
        quotient_row("ledger batched postings/s ÷ pgbench tps (8)", batch_postings, base),
        quotient_row("ledger ÷ django-hordak, single transfers", single, hordak_single, (1, 1)),
        quotient_row("ledger ÷ django-hordak, batched transfers", batch_entries, hordak_batch, (1, 1)),
    ]

    def target(label: str, value: float, goal: float, unit: str = "×", lower_is_better: bool = False) -> None:
        met = None if math.isnan(value) else (value <= goal if lower_is_better else value >= goal)
        target_rows.append([label, fmt(value, 2 if unit == "×" else 1) + unit, verdict(met)])

    target(
        f"ledger batched postings ≥ {LEDGER_BATCH_GOAL}× pgbench tps",
        ratio(batch_postings, base),
        LEDGER_BATCH_GOAL,
    )
    target(
        f"ledger single transfers ≥ {LEDGER_SINGLE_GOAL}× pgbench tps",
        ratio(single, base),
        LEDGER_SINGLE_GOAL,
    )
    target(
        f"ledger ≥ {HORDAK_GOAL}× django-hordak (single transfers)", ratio(single, hordak_single), HORDAK_GOAL
    )
    at32 = r.get("lifecycle", {}).get("32", {}).get("steps", {})
    worst = max((s["p99_ms"] for s in at32.values()), default=math.nan)
    target(
        f"p99 ≤ {STEP_P99_MS} ms per lifecycle step at 32 clients (worst step)",
        worst,
        STEP_P99_MS,
        " ms",
        lower_is_better=True,
    )
    get_p99 = _safe(lambda: r["reads"]["get_escrow"]["steps"]["get_escrow"]["p99_ms"])
    target(
        f"p99 ≤ {READ_P99_MS} ms for GET /escrows/{{id}} (64 clients)",
        get_p99,
        READ_P99_MS,
        " ms",
        lower_is_better=True,
    )
    sizes = r.get("scale", {}).get("sizes", {})
    if len(sizes) >= 2:
        keys = sorted(sizes, key=int)
        small, large = sizes[keys[0]]["lifecycle"], sizes[keys[-1]]["lifecycle"]
        scale = ratio(large["steps_per_second"], small["steps_per_second"])
        ratio_rows += [
            quotient_row(
                f"lifecycle throughput, {int(keys[-1]):,} ÷ {int(keys[0]):,} escrows",
                large["steps_per_second"],
                small["steps_per_second"],
                (1, 1),
            ),
            quotient_row(
                f"server CPU per step, {int(keys[0]):,} ÷ {int(keys[-1]):,} escrows (less sensitive to other load)",
                server_ms_value(small),
                server_ms_value(large),
                (1, 1),
                " ms",
            ),
        ]
        target(f"throughput with {int(keys[-1]):,} escrows ≥ 0.9× with {int(keys[0]):,}", scale, 0.9)
    stats = r.get("scale", {}).get("stats", {})
    target(
        "dashboard stats uncached ≤ 100 ms (median)",
        stats.get("median_ms", math.nan),
        100,
        " ms",
        lower_is_better=True,
    )
    export = r.get("scale", {}).get("export", {})
    target(
        "CSV export peak RSS ≤ 150 MB", export.get("peak_rss_mb", math.nan), 150, " MB", lower_is_better=True
    )
    return ratio_rows, target_rows


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def server_split(cpu: dict[str, Any]) -> str:
    """Each server process's cores: how evenly the kernel spread the clients' connections."""
    split = cpu.get("server_processes", [])
    return f" ({' + '.join(f'{p:.2f}' for p in split)} by process)" if len(split) > 1 else ""


def cpu_line(run: dict[str, Any]) -> str:
    cpu = run.get("cpu", {})
    cores = cpu.get("cores_used", {})
    parts = [
        f"{name} {value:.2f}{server_split(cpu) if name == 'emanet server' else ''}"
        for name, value in cores.items()
    ]
    parts.append(f"load generator {run.get('loadgen_cpu_s', 0) / max(run.get('window_s', 1), 1e-9):.2f}")
    line = (
        f"cores used — {', '.join(parts)}; machine busy {fmt(cpu.get('machine_busy_pct'))} % "
        f"(load generator: {fmt(run.get('loadgen_cpu_us_per_request'))} µs CPU per request)"
    )
    per_second = run.get("steps_per_second") or 0
    if per_second and cores:
        # CPU per step depends less on how much of the machine the run got than steps/s does.
        line += ". CPU per request: " + ", ".join(
            f"{name} {value * 1000 / per_second:.1f} ms" for name, value in cores.items()
        )
    return line


def server_ms_value(run: dict[str, Any], group: str = "emanet server") -> float:
    cores = run.get("cpu", {}).get("cores_used", {}).get(group)
    per_second = run.get("steps_per_second") or 0
    return float(cores * 1000 / per_second) if cores and per_second else math.nan


def server_ms_per_step(run: dict[str, Any]) -> str:
    return fmt(server_ms_value(run), 1)


def cost_per_step(r: dict[str, Any]) -> list[str]:
    """CPU per lifecycle step, by process group."""
    runs = r.get("lifecycle", {})
    if not runs:
        return []
    clients = max(runs, key=int)
    run = runs[clients]
    per = {name: server_ms_value(run, name) for name in run.get("cpu", {}).get("cores_used", {})}
    line = (
        f"CPU per lifecycle step at {clients} clients: "
        + ", ".join(f"{name} {fmt(ms, 1)} ms" for name, ms in per.items())
        + "."
    )
    line += (
        " On two cores the Python processes' CPU per step bounds the throughput; the statement counts and "
        "the profiles below show what it is spent on."
    )
    return [line, "", *request_floor(r)]


FLOOR_ROWS = (
    (
        "health_live",
        "floor",
        "`GET /health/live`",
        "the HTTP server, routing and middleware; no token, no database",
    ),
    (
        "me",
        "floor",
        "`GET /api/v1/me`",
        "+ the token, a transaction and one statement (the caller's user row)",
    ),
    (
        "get_escrow",
        "reads",
        "`GET /api/v1/escrows/{id}`",
        "+ three statements: the escrow, its ledger lines, its payments",
    ),
)


def request_floor(r: dict[str, Any]) -> list[str]:
    """What a request costs by itself, and with the least database work: the floor under every step."""
    rows = []
    for label, section, request, does in FLOOR_ROWS:
        run = r.get(section, {}).get(label)
        if run is None:
            continue
        rows.append(
            [
                request,
                does,
                fmt(run["steps"][label]["per_second"], 0),
                fmt(server_ms_value(run), 2),
                fmt(server_ms_value(run, "postgres"), 2),
            ]
        )
    if not rows:
        return []
    return [
        f"The floor under every request, at {r.get('plan', {}).get('read_clients')} clients:",
        "",
        table(["request", "what it does", "per second", "server CPU ms", "postgres CPU ms"], rows),
        "",
    ]


def cpu_ms_per_request(run: dict[str, Any]) -> float:
    """CPU of every process the run measured (the load generator too) per request, in ms."""
    per_second = run.get("steps_per_second") or 0
    if not per_second:
        return math.nan
    cores = sum(run.get("cpu", {}).get("cores_used", {}).values())
    cores += run.get("loadgen_cpu_s", 0) / max(run.get("window_s", 1), 1e-9)
    return float(cores * 1000 / per_second)


ORM_LAYERS = ("SQLAlchemy ORM",)
SQLALCHEMY_LAYERS = ("SQLAlchemy ORM", "SQLAlchemy Core/engine")
PROFILED_GROUPS = (("server", "emanet server"), ("worker", "emanet worker"))


def database_pool(r: dict[str, Any]) -> str:
    pool = r["database_pool"]
    overflow = f" (+{pool['overflow']} closed after use)" if pool["overflow"] else ""
    return f"database pool {pool['size']}{overflow} per process"


def layers_share(r: dict[str, Any], process: str, layers: tuple[str, ...]) -> float:
    """The share (0 to 1) of a profiled process's samples that ``layers`` spent themselves; NaN without one."""
    spent = {x["layer"]: x["pct"] for x in r.get("profile", {}).get(process, {}).get("own_layers", [])}
    return sum(spent.get(layer, 0.0) for layer in layers) / 100 if spent else math.nan


def without_layers(r: dict[str, Any], run: dict[str, Any], layers: tuple[str, ...]) -> tuple[float, float]:
    """What ``layers`` spend of the server's and the worker's CPU per step (ms, by the profiles' own-time
    shares), and the steps/s the run would have reached on the CPU it used without them, with nothing in
    their place: the most that rewriting them away could give."""
    spent = 0.0
    for process, group in PROFILED_GROUPS:
        share = layers_share(r, process, layers)
        if not math.isnan(share):
            spent += share * server_ms_value(run, group)
    total = cpu_ms_per_request(run)
    if not spent or math.isnan(spent) or math.isnan(total):
        return math.nan, math.nan
    return spent, run["steps_per_second"] * total / (total - spent)


def rewrite_bound(r: dict[str, Any], run: dict[str, Any], tps: float) -> str:
    """The lifecycle row's note on what taking the steps off SQLAlchemy, or off its ORM only, could give."""
    spent, reachable = without_layers(r, run, SQLALCHEMY_LAYERS)
    if math.isnan(reachable):
        return ""
    orm_spent, orm_reachable = without_layers(r, run, ORM_LAYERS)
    return (
        f"; SQLAlchemy itself spends {fmt(spent, 1)} ms of it, its ORM {fmt(orm_spent, 1)} ms of those "
        f"(the profiles' own time by layer, section 6): with nothing in their place, {fmt(reachable)} "
        f"steps/s = {fmt(ratio(reachable, tps), 2)}× pgbench without SQLAlchemy, {fmt(orm_reachable)} "
        "without its ORM"
    )


def what_targets_need(r: dict[str, Any]) -> list[str]:
    """For each target not met, the throughput it implies on this machine beside the measured floor: the
    arithmetic behind "not met", so nobody has to redo it."""
    cpus = r.get("machine", {}).get("cpus") or 1
    plan = r.get("plan", {})
    rows: list[list[str]] = []
    floor = r.get("floor", {})
    health_ms = server_ms_value(floor["health_live"]) if "health_live" in floor else math.nan
    me_ms = cpu_ms_per_request(floor["me"]) if "me" in floor else math.nan
    for clients, run in sorted(r.get("lifecycle", {}).items(), key=lambda kv: int(kv[0])):
        need = LIFECYCLE_GOAL * pgbench_tps(r, int(clients))
        if math.isnan(need) or not run.get("steps_per_second") or run["steps_per_second"] >= need:
            continue
        split = ", ".join(
            f"{name} {fmt(server_ms_value(run, name), 1)}"
            for name in run.get("cpu", {}).get("cores_used", {})
        )
        budget, database_ms = cpus * 1000 / need, server_ms_value(run, "postgres")
        database_alone = (
            f"; PostgreSQL's part alone is {fmt(database_ms / budget, 1)}× that budget"
            if database_ms > budget
            else ""
        )
        rows.append(
            [
                f"lifecycle ≥ {LIFECYCLE_GOAL}× pgbench, {clients} clients",
                f"{fmt(need)} steps/s: {fmt(budget, 2)} ms of CPU per step for every process together on "
                f"{cpus} cores",
                f"a step costs {fmt(cpu_ms_per_request(run), 1)} ms ({split}, load generator included)"
                f"{database_alone}; an authenticated one-statement read (`GET /api/v1/me`) costs "
                f"{fmt(me_ms, 2)} ms, and the HTTP server alone (`GET /health/live`) {fmt(health_ms, 2)} ms "
                f"of server CPU{rewrite_bound(r, run, pgbench_tps(r, int(clients)))}",
            ]
        )
    lifecycle = r.get("lifecycle", {})
    if lifecycle:
        clients = max(lifecycle, key=int)
        run = lifecycle[clients]
        worst = max((s["p99_ms"] for s in run["steps"].values()), default=math.nan)
        if run.get("steps_per_second") and worst > STEP_P99_MS:
            rows.append(
                [
                    f"p99 ≤ {STEP_P99_MS} ms per step, {clients} clients",
                    f"each client sends its next request when the last is answered, so the mean latency is "
                    f"clients ÷ throughput (Little's law): a p99 within {STEP_P99_MS} ms needs more than "
                    f"{fmt(int(clients) * 1000 / STEP_P99_MS)} steps/s",
                    f"{fmt(run['steps_per_second'], 1)} steps/s: a mean of "
                    f"{fmt(int(clients) * 1000 / run['steps_per_second'])} ms per step",
                ]
            )
    read = r.get("reads", {}).get("get_escrow")
    read_clients = plan.get("read_clients") or 0
    if read and read_clients and read["steps"]["get_escrow"]["p99_ms"] > READ_P99_MS:
        ms = server_ms_value(read) + server_ms_value(read, "postgres")
        health = floor.get("health_live", {}).get("steps_per_second")
        rows.append(
            [
                f"`GET /escrows/{{id}}` p99 ≤ {READ_P99_MS} ms, {read_clients} clients",
                f"more than {fmt(read_clients * 1000 / READ_P99_MS)} reads/s, by the same law",
                f"{fmt(read['steps_per_second'])} reads/s; at {fmt(ms, 2)} ms of server and PostgreSQL CPU each, "
                f"{cpus} cores give at most {fmt(cpus * 1000 / ms)}/s"
                + (
                    f"; the HTTP server with no token and no database answers {fmt(health)}/s"
                    if health
                    else ""
                ),
            ]
        )
    ledger, hordak = r.get("ledger", {}), r.get("hordak", {})
    single = _safe(lambda: ledger["single"]["entries_per_second"])
    ceiling = _safe(lambda: ledger["pgbench_statement"]["tps"])
    needs = [
        (f"ledger single transfers ≥ {LEDGER_SINGLE_GOAL}× pgbench", LEDGER_SINGLE_GOAL * pgbench_tps(r, 8)),
        (
            f"ledger ≥ {HORDAK_GOAL}× django-hordak, single",
            HORDAK_GOAL * _safe(lambda: hordak["single"]["entries_per_second"]),
        ),
    ]
    for label, need in needs:
        if not math.isnan(need) and single < need and not math.isnan(ceiling):
            rows.append(
                [
                    label,
                    f"{fmt(need)} transfers/s",
                    f"{fmt(single)}/s; `post_entry`'s own statement, sent by pgbench with no Python at all, "
                    f"reaches {fmt(ceiling)}/s on this database"
                    + (" — below what the target needs" if ceiling < need else ""),
                ]
            )
    if not rows:
        return []
    return [
        "### What the targets not met would take on this machine",
        "",
        table(["target", "what it needs here", "what this run measured"], rows),
        "",
    ]


def others_cores(run: dict[str, Any], r: dict[str, Any]) -> float:
    """Cores used during a run by processes that are not the benchmark's (the machine may be shared)."""
    cpus = r.get("machine", {}).get("cpus") or 1
    cpu = run.get("cpu", {})
    loadgen = run.get("loadgen_cpu_s", 0) / max(run.get("window_s", 1), 1e-9)
    ours = sum(cpu.get("cores_used", {}).values()) + loadgen
    return float(max(0.0, cpu.get("machine_busy_pct", 0) / 100 * cpus - ours))


def shared_machine_note(r: dict[str, Any]) -> list[str]:
    """How much of the machine other processes took during the HTTP runs (the machine may be shared)."""
    cpus = r.get("machine", {}).get("cpus") or 1
    runs = list(r.get("lifecycle", {}).values()) + list(r.get("reads", {}).values())
    others = [others_cores(run, r) for run in runs]
    if not others:
        return []
    average = sum(others) / len(others)
    return [
        f"During the HTTP runs, processes other than the benchmark's used on average **{average:.2f} of the "
        f"{cpus} cores** (the machine was {'shared' if average > 0.2 else 'quiet'}); Emanet's figures below are "
        "what it reached with the rest. pgbench ran in the same conditions.",
        "",
    ]


def lifecycle_table(run: dict[str, Any]) -> str:
    rows = []
    for step in STEPS:
        s = run["steps"].get(step)
        if s is None:
            continue
        errors = ", ".join(f"{code}×{n}" for code, n in s["errors"].items()) or "0"
        rows.append(
            [
                STEP_NAMES[step],
                fmt(s["per_second"], 1),
                fmt(s["p50_ms"], 1),
                fmt(s["p95_ms"], 1),
                fmt(s["p99_ms"], 1),
                errors,
            ]
        )
    rows.append(
        [
            "**whole cycle** (all four steps)",
            f"{fmt(run['cycles_per_second'], 1)} cycles/s = {fmt(run['steps_per_second'], 1)} steps/s",
            "",
            "",
            "",
            "",
        ]
    )
    return table(["step", "per second", "p50 ms", "p95 ms", "p99 ms", "errors (status×count)"], rows)


def plots(r: dict[str, Any], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    written = []
    lifecycle = r.get("lifecycle", {})
    if lifecycle:
        fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
        concurrency = sorted(lifecycle, key=int)
        width = 0.8 / (len(STEPS) + 2)
        for i, step in enumerate(STEPS):
            left.bar(
                [c + i * width for c in range(len(concurrency))],
                [lifecycle[c]["steps"].get(step, {}).get("per_second", 0) for c in concurrency],
                width,
                label=step,
            )
        left.bar(
            [c + len(STEPS) * width for c in range(len(concurrency))],
            [lifecycle[c]["steps_per_second"] for c in concurrency],
            width,
            label="all steps",
        )
        left.bar(
            [c + (len(STEPS) + 1) * width for c in range(len(concurrency))],
            [pgbench_tps(r, int(c)) for c in concurrency],
            width,
            label="pgbench tps",
            color="black",
        )
        left.set_xticks(
            [c + width * (len(STEPS) + 1) / 2 for c in range(len(concurrency))],
            [f"{c} clients" for c in concurrency],
        )
        left.set_yscale("log")  # pgbench is orders of magnitude above the steps
        left.set_ylabel("per second (log)")
        left.set_title("Escrow lifecycle over HTTP vs pgbench")
        left.legend(fontsize=8)
        labels, values = [], []
        for name, source in (
            ("Emanet single", r.get("ledger", {}).get("single")),
            ("Emanet batched", r.get("ledger", {}).get("batch")),
            ("hordak single", r.get("hordak", {}).get("single")),
            ("hordak batched", r.get("hordak", {}).get("batch")),
        ):
            if source:
                labels.append(name)
                values.append(source["entries_per_second"])
        labels.append("pgbench (8)")
        values.append(pgbench_tps(r, 8))
        right.bar(
            labels,
            values,
            color=["tab:blue", "tab:blue", "tab:orange", "tab:orange", "black"][-len(values) :],
        )
        right.set_ylabel("transfers per second")
        right.set_title("Ledger alone: transfers/s (8 connections)")
        right.tick_params(axis="x", labelsize=8)
        fig.tight_layout()
        fig.savefig(out / "throughput.png", dpi=110)
        plt.close(fig)
        written.append("throughput.png")

        fig, axis = plt.subplots(figsize=(10, 4.5))
        runs = [
            (f"{step}\n{c} cl.", lifecycle[c]["steps"][step])
            for c in concurrency
            for step in STEPS
            if step in lifecycle[c]["steps"]
        ]
        runs += [(name.replace("_", " "), run["steps"][name]) for name, run in r.get("reads", {}).items()]
        positions = range(len(runs))
        for i, (q, color) in enumerate(
            (("p50_ms", "tab:green"), ("p95_ms", "tab:orange"), ("p99_ms", "tab:red"))
        ):
            axis.bar(
                [p + (i - 1) * 0.27 for p in positions],
                [max(s[q], 0.01) for _, s in runs],
                0.27,
                label=q.replace("_ms", ""),
                color=color,
            )
        axis.axhline(
            STEP_P99_MS, color="grey", linestyle="--", linewidth=1, label=f"{STEP_P99_MS} ms target (steps)"
        )
        axis.axhline(
            READ_P99_MS, color="grey", linestyle=":", linewidth=1, label=f"{READ_P99_MS} ms target (GET one)"
        )
        axis.set_yscale("log")
        axis.set_xticks(list(positions), [label for label, _ in runs], fontsize=7)
        axis.set_ylabel("latency, ms (log)")
        axis.set_title("Latency per step and per read")
        axis.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "latency.png", dpi=110)
        plt.close(fig)
        written.append("latency.png")
    sizes = r.get("scale", {}).get("sizes", {})
    if sizes:
        keys = sorted(sizes, key=int)
        fig, axis = plt.subplots(figsize=(7, 4.5))
        xs = [int(k) for k in keys]
        axis.plot(xs, [sizes[k]["lifecycle"]["steps_per_second"] for k in keys], marker="o", label="steps/s")
        axis.plot(
            xs, [sizes[k]["lifecycle"]["cycles_per_second"] for k in keys], marker="s", label="cycles/s"
        )
        each_run = [(int(k), run["steps_per_second"]) for k in keys for run in sizes[k].get("runs", [])]
        if each_run:
            axis.scatter(
                [x for x, _ in each_run],
                [y for _, y in each_run],
                s=14,
                color="tab:blue",
                alpha=0.5,
                label="steps/s, each run",
            )
        axis.set_xscale("log")
        axis.set_xlabel("escrows already in the database")
        axis.set_ylabel("per second (32 clients)")
        axis.set_ylim(bottom=0)
        twin = axis.twinx()
        twin.plot(
            xs,
            [max(s["p99_ms"] for s in sizes[k]["lifecycle"]["steps"].values()) for k in keys],
            marker="^",
            color="tab:red",
            linestyle="--",
            label="worst step p99 (ms)",
        )
        twin.set_ylabel("ms")
        twin.set_ylim(bottom=0)
        axis.set_title("Lifecycle throughput as the database grows")
        lines = axis.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
        axis.legend(lines, [str(line.get_label()) for line in lines], fontsize=8, loc="center")
        fig.tight_layout()
        fig.savefig(out / "scale.png", dpi=110)
        plt.close(fig)
        written.append("scale.png")
    return written


def own_time_by_layer(prof: dict[str, Any]) -> list[str]:
    """The partition of a profile's samples by the layer that was running: what removing one could save."""
    if not prof.get("own_layers"):
        return []
    return [
        "Where the same samples were spent: each belongs to the layer of its innermost frame that has one "
        "(a standard-library call counts for its caller's layer), so this column adds up to 100 % and a "
        "layer's figure is the most that removing it, with nothing in its place, could save:",
        "",
        table(
            ["layer", "% of samples spent in it"],
            [[x["layer"], fmt(x["pct"], 1)] for x in prof["own_layers"]],
        ),
        "",
    ]


def render(r: dict[str, Any], plot_dir: str, images: list[str]) -> str:
    m, p, plan = r.get("machine", {}), r.get("postgres", {}), r.get("plan", {})
    ratio_rows, target_rows = ratios_and_targets(r)
    out: list[str] = [
        "# Benchmarks",
        "",
        "Emanet measured against the physical limit of the same database in the same run: PostgreSQL's own "
        "bank-transfer benchmark (`pgbench`, TPC-B-like: one durable money movement per transaction). "
        "Everything on this page was written by `make bench`"
        + (
            " in its **QUICK** (short) form — run `make bench` for the real figures"
            if plan.get("quick")
            else ""
        )
        + f" on {r.get('started_at', '?')} ({fmt(r.get('elapsed_s'))} s).",
        "",
        "## Summary",
        "",
        *shared_machine_note(r),
        table(["target (issue 6)", "measured", ""], target_rows),
        "",
        table(["ratio", "figures", "ratio"], ratio_rows),
        "",
        *what_targets_need(r),
        *[f"![{name}]({plot_dir}/{name})" for name in images],
        "",
        "## Machine and settings",
        "",
        table(
            ["", ""],
            [
                ["CPU", f"{m.get('cpus')} × {m.get('cpu_model', '?')}"],
                ["memory", f"{m.get('memory_gib')} GiB"],
                ["load average at start", ", ".join(str(x) for x in m.get("load_average_at_start", []))],
                ["kernel / Python", f"{m.get('kernel')} / {m.get('python')}"],
                [
                    "PostgreSQL",
                    f"{p.get('version')} ({m.get('pgbench')}), synchronous_commit={p.get('synchronous_commit')}, "
                    f"fsync={p.get('fsync')}, full_page_writes={p.get('full_page_writes')}, "
                    f"wal_sync_method={p.get('wal_sync_method')}, shared_buffers={p.get('shared_buffers')}, "
                    f"max_connections={p.get('max_connections')}",
                ],
                [
                    "Emanet",
                    f"`emanet serve --workers {plan.get('server_workers')}` (uvicorn, uvloop, httptools; one SO_REUSEPORT listening socket per process) + "
                    "`emanet worker`; EMANET_ENV=production with generated secrets, JSON logs at WARNING, "
                    "EMANET_MIN_HOLD_HOURS=0, EMANET_RATE_LIMIT_ENABLED=false, "
                    + database_pool(r)
                    + ", "
                    + ("Redis on 127.0.0.1" if r.get("redis") else "no Redis (in-process cache)"),
                ],
                ["plan", ", ".join(f"{k}={tuple(v) if isinstance(v, list) else v}" for k, v in plan.items())],
            ],
        ),
        "",
        "The machine is shared: the `cores used` lines below show what Emanet, its worker, PostgreSQL and the "
        "load generator used during each run; `machine busy` above their sum was used by other processes. "
        "The server's figure is followed by each server process's share: every process listens on its own "
        "`SO_REUSEPORT` socket and the kernel assigns each client's keep-alive connection by a hash, so with "
        "8 clients one process can get most of them.",
        "",
        "## 1. Baseline: pgbench",
        "",
        f"`pgbench -i -s {plan.get('pgbench_scale')}` on its own fresh database, then `pgbench -M prepared -c N "
        f"-j 2 -T {plan.get('pgbench_seconds')}` (the default TPC-B-like script: update an account, a teller "
        "and a branch, read the account, insert a history row, commit)."
        + (
            " Run once before and once after the Emanet runs; the ratios use the mean."
            if len(r.get("pgbench", [])) > 1
            else ""
        ),
        "",
        table(
            ["round", "clients", "tps", "latency avg ms", "transactions"],
            [
                [
                    str(i + 1),
                    str(run["clients"]),
                    fmt(run["tps"]),
                    fmt(run["latency_ms"], 2),
                    fmt(run["transactions"]),
                ]
                for i, round_ in enumerate(r.get("pgbench", []))
                for run in round_
            ],
        ),
        "",
        "## 2. Escrow lifecycle over HTTP",
        "",
        "Each virtual client repeats, with its own buyer and seller: create an escrow (TRY 1,000.00, general "
        "product) → create a sandbox card payment for it → deliver the sandbox's `payment.succeeded` webhook "
        "for that payment, signed with Standard Webhooks (`standardwebhooks`, the sandbox's own secret and "
        "body shape), which captures the money into the escrow and funds it → release. Every step is a real "
        "request through authentication, validation, the state machine, the ledger entry, the activity record "
        "and the outbox, committed with `synchronous_commit=on`. Steps/s counts every successful step; a "
        f"cycle is all four. First {plan.get('warmup_seconds')} s of each run are warm-up and not counted.",
        "",
    ]
    for clients, run in r.get("lifecycle", {}).items():
        out += [
            f"### {clients} concurrent clients, {run['window_s']} s",
            "",
            lifecycle_table(run),
            "",
            cpu_line(run),
            "",
        ]
    if r.get("reads"):
        out += [
            "## 3. Reads at 64 concurrent clients",
            "",
            "`GET /api/v1/escrows/{id}` (the detail view with its ledger lines) of escrows made by the lifecycle "
            "runs, by their buyer; `GET /api/v1/escrows?role=buyer&status=released,funded&limit=20&sort=-created_at`.",
            "",
            table(
                ["read", "per second", "p50 ms", "p95 ms", "p99 ms", "errors"],
                [
                    [
                        f"`{name}`",
                        fmt(run["steps"][name]["per_second"], 1),
                        fmt(run["steps"][name]["p50_ms"], 1),
                        fmt(run["steps"][name]["p95_ms"], 1),
                        fmt(run["steps"][name]["p99_ms"], 1),
                        ", ".join(f"{c}×{n}" for c, n in run["steps"][name]["errors"].items()) or "0",
                    ]
                    for name, run in r["reads"].items()
                ],
            ),
            "",
            *[f"- {name}: {cpu_line(run)}" for name, run in r["reads"].items()],
            "",
        ]
    ledger, hordak = r.get("ledger", {}), r.get("hordak", {})
    if ledger:
        rows = []
        for label, source in (
            ("Emanet", ledger),
            (f"django-hordak {hordak.get('version', '')}", hordak),
        ):
            for mode in ("single", "batch"):
                run = source.get(mode)
                if run:
                    call = (
                        {"single": "`post_entry`", "batch": "`post_entries`"}[mode]
                        if source is ledger
                        else ""
                    )
                    rows.append(
                        [
                            f"{label} {call}".strip(),
                            "one per commit"
                            if mode == "single"
                            else f"{plan.get('ledger_batch_size')} per commit",
                            fmt(run["entries_per_second"], 1),
                            fmt(run["postings_per_second"], 1),
                            fmt(run["client_cpu_s"], 1),
                            "; ".join(run.get("errors", [])) or "–",
                        ]
                    )
        statement = ledger.get("pgbench_statement")
        if statement:
            rows.insert(
                2,
                [
                    "`post_entry`'s statement under pgbench (no Python)",
                    "one per commit",
                    fmt(statement["tps"], 1),
                    fmt(2 * statement["tps"], 1),
                    "–",
                    "–",
                ],
            )
        out += [
            "## 4. The ledger alone, and django-hordak",
            "",
            f"{plan.get('ledger_accounts')} wallets, transfers of 1.00–9.99 between two random wallets of a "
            f"connection's own slice; {plan.get('ledger_connections')} connections over "
            f"{plan.get('ledger_processes')} processes (pgbench's 8 clients), {plan.get('ledger_seconds')} s each. "
            "Emanet single: `emanet.ledger.service.post_entry` — one balanced entry with two postings, both "
            "balance rows updated under the non-negative CHECK, the balance trigger checking the entry, one "
            "commit each. Emanet batch: `post_entries` — the same entries and checks, the whole batch in one "
            "statement and one commit (the ledger's bulk API, for settlements and batch payouts). "
            "`post_entry`'s statement under pgbench: the very statement `post_entry` sends for such a transfer "
            "(generated from the code by `bench/ledger_ceiling.py`), run by pgbench — a C client, prepared, "
            f"{plan.get('ledger_connections')} clients, one transaction each — so no Python is involved: what "
            "PostgreSQL itself does for one of our transfers, the most any client of this ledger could reach. "
            "The run checks that every transaction it counted posted one entry. "
            "django-hordak: `Account.transfer_to` (one Transaction, two Legs, its PostgreSQL triggers), one "
            "commit each, or a batch of them in one database transaction (it has no bulk transfer call), "
            "installed by the bench into `bench/.hordak-venv` and run against its own fresh database on the "
            "same server.",
            "",
            table(
                ["ledger", "entries per commit", "transfers/s", "postings/s", "client CPU s", "errors"], rows
            ),
            "",
        ]
    scale = r.get("scale", {})
    if scale:
        rows = []
        for size, data in sorted(scale.get("sizes", {}).items(), key=lambda kv: int(kv[0])):
            run = data["lifecycle"]
            rows.append(
                [
                    f"{int(size):,}",
                    fmt(data["load"]["load_and_vacuum_s"], 1),
                    fmt(run["steps_per_second"], 1),
                    " + ".join(fmt(each["steps_per_second"], 1) for each in data.get("runs", [])),
                    fmt(run["cycles_per_second"], 1),
                    server_ms_per_step(run),
                    fmt(others_cores(run, r), 2),
                    " / ".join(fmt(run["steps"][s]["p99_ms"], 1) for s in STEPS if s in run["steps"]),
                ]
            )
        stats, export = scale.get("stats", {}), scale.get("export", {})
        drains = scale.get("drains", [])
        out += [
            "## 5. Scale",
            "",
            "Each size has its own database, bulk-loaded in SQL (`bench/seed.py`): TRY escrows (one in ten "
            "USD) between bulk users (one of them, a marketplace's own store, sells one escrow in ten and buys "
            "another one in ten), one every 31.5 s back from now (1,000,000 a year); 80 % released with "
            "their two ledger entries exactly as Emanet writes them (capture: sandbox clearing → escrow; "
            "release: escrow → the seller's wallet and platform fees), their escrow account and the balances "
            "updated, and their succeeded sandbox payment with its attempt; 12 % cancelled and 8 % expired "
            "before payment (no money moved, no ledger rows); two "
            f"activity rows each. The lifecycle then runs at {plan.get('scale_clients')} clients for "
            f"{plan.get('scale_seconds')} s at a time, alternating between the databases in the order "
            f"{' → '.join(f'{int(s):,}' for s in scale.get('order', []))}, each run on an Emanet stack started "
            "for it and stopped once its worker had run the jobs the run queued (at most "
            f"{fmt(max((d['backlog_jobs'] for d in drains), default=math.nan))} jobs, "
            f"{fmt(max((d['seconds'] for d in drains), default=math.nan), 1)} s; "
            f"{fmt(sum(d['left'] for d in drains))} left). Why alternate: under sustained load this machine's "
            "speed drifts by 20 % and more within minutes, and every process's CPU per step rises together, "
            "whatever the data (seen while developing the benchmark, and in the spread of each size's runs "
            "below); in this order a steady drift costs each size the same, where running the large size "
            "after the small one charged the drift to the data. Throughput and CPU are the mean of a size's "
            "runs; each p99 is the worst of its runs.",
            "",
            table(
                [
                    "escrows loaded",
                    "load + VACUUM s",
                    "steps/s",
                    "each run's steps/s",
                    "cycles/s",
                    "server CPU ms per step",
                    "cores used by other processes",
                    "p99 ms create / pay / webhook / release",
                ],
                rows,
            ),
            "",
            f"**Dashboard stats** (`GET /api/v1/admin/dashboard/stats?fresh=true` on the largest database, "
            f"{stats.get('runs')} runs, {fmt(stats.get('escrows_created_last_30_days'))} escrows in the 30-day "
            f"window): first {fmt(stats.get('first_ms'), 1)} ms, median {fmt(stats.get('median_ms'), 1)} ms, "
            f"p95 {fmt(stats.get('p95_ms'), 1)} ms, max {fmt(stats.get('max_ms'), 1)} ms (round trip from the "
            "client), on a stack of its own with no jobs queued.",
            "",
            f"**Full CSV export** (`GET /api/v1/admin/escrows/export?format=csv`): {fmt(export.get('rows'))} rows, "
            f"{fmt((export.get('bytes') or 0) / 2**20, 1)} MiB in {fmt(export.get('seconds'), 1)} s "
            f"({fmt(export.get('rows_per_second'))} rows/s); the server process that served it: "
            f"{fmt(export.get('baseline_rss_mb'), 1)} MB RSS before, **{fmt(export.get('peak_rss_mb'), 1)} MB "
            f"peak** (+{fmt(export.get('growth_mb'), 1)} MB), sampled every 20 ms.",
            "",
            "Ledger invariants over every row of each database after the runs (each must be 0):",
            "",
            *[
                f"- {int(size):,} escrows: "
                + ", ".join(f"{k} {v}" for k, v in checks.items())
                + ". Rows: "
                + ", ".join(f"{k} {fmt(v)}" for k, v in scale.get("counts", {}).get(size, {}).items())
                + "."
                for size, checks in sorted(scale.get("verify", {}).items(), key=lambda kv: int(kv[0]))
            ],
            "",
            "Every statement Emanet sends, not only the lifecycle's, planned and run on 1,000,000 escrows:"
            " [plans.md](plans.md) (`make plans`).",
            "",
        ]
    trips = r.get("roundtrips", {})
    profiles = {name: p for name, p in r.get("profile", {}).items() if p.get("samples")}
    if trips or profiles:
        out += ["## 6. Where the time goes", "", *cost_per_step(r)]
    if trips:
        out += [
            "SQL statements and commits sent by each step of one lifecycle cycle (counted in-process on the "
            "second of two cycles, so caches are warm; BEGIN/COMMIT/SAVEPOINT not counted as statements), "
            "and how many of the statements SQLAlchemy compiled again instead of taking from its compiled "
            "cache. Each statement is a round trip to PostgreSQL; for comparison, a pgbench transaction is 5 "
            "statements and one commit.",
            "",
            table(
                ["step", "statements", "compiled again", "commits", "statements by kind and table"],
                [
                    [
                        f"`{step}`",
                        str(data["statements"]),
                        str(data.get("compiled", "–")),
                        str(data["commits"]),
                        ", ".join(f"{kind} ×{n}" for kind, n in data["first_words"].items()),
                    ]
                    for step, data in trips.items()
                ],
            ),
            "",
        ]
    sampled = {
        "server": f"one of the {plan.get('server_workers')} server processes",
        "worker": "the worker (`emanet worker`)",
    }
    for name, prof in profiles.items():
        out += [
            f"py-spy sampled {sampled.get(name, name)} during a separate {prof.get('clients')}-client "
            f"lifecycle run ({prof['samples']:,} samples, idle time excluded). Share of samples whose stack "
            "passes through each layer, and through each of our functions (a sample counts once per layer or "
            "function, so the columns do not add up to 100 %):",
            "",
            table(["layer", "% of samples"], [[x["layer"], fmt(x["pct"], 1)] for x in prof["layers"]]),
            "",
            *own_time_by_layer(prof),
            table(
                ["our function", "% of samples"],
                [[f"`{x['function']}`", fmt(x["pct"], 1)] for x in prof["ours"]],
            ),
            "",
            "Functions with the most samples of their own (self time). A caution on the driver's share: py-spy "
            "counts a thread inside a socket `write()` as busy, and the self time of asyncpg's "
            "`PreparedStatement.__do_execute` and `Connection.execute` is mostly that call (a `--native` "
            "profile put 28 % of a server process's samples in libc's `write` under them, while the kernel's "
            "share of the process's CPU, from `/proc`, was 14 %). The Python layers' shares of the CPU are "
            "larger than their shares of the samples.",
            "",
            table(["function", "% self"], [[f"`{x['function']}`", fmt(x["pct"], 1)] for x in prof["self"]]),
            "",
        ]
    out += [
        "## The load generator",
        "",
        "`bench/loadgen.py`: closed-loop virtual clients on one uvloop event loop in a separate process, each "
        "with one HTTP/1.1 keep-alive connection, speaking the protocol directly over asyncio streams. The "
        "two cores are shared by PostgreSQL, the server processes and the load, so the generator must cost "
        "little: its own CPU is reported with every run above (a few hundredths of a core at these request "
        "rates, against most of a core for the server). `wrk` would cost less still, but its Lua scripts cannot chain the "
        "lifecycle (each step needs ids from the previous answer) without re-implementing it; an HTTP client "
        "library (httpx, aiohttp) costs several times more CPU per request than the bare protocol.",
        "",
        "## Reproduce",
        "",
        "Needs a local PostgreSQL on 127.0.0.1:5432 reachable as `postgres` without a password (or set "
        "`EMANET_BENCH_PG_DSN`), `pgbench` (Debian: `postgresql-contrib`/`postgresql-client`), and optionally "
        "Redis on 127.0.0.1:6379 (`EMANET_BENCH_REDIS_URL`). Then:",
        "",
        "```",
        "make bench          # the full run (about 15 minutes), writes this page and docs/benchmarks/*.png",
        "make bench QUICK=1  # about 3 minutes, writes bench/results/quick/",
        "```",
        "",
        "The run creates its own databases (`emanet_bench_*`) and drops them at the end, starts and stops its "
        "own server processes, installs django-hordak into `bench/.hordak-venv` on first use, and keeps its "
        "raw results and logs in `bench/results/<plan>/` (`results.json`, the py-spy profiles, server logs). "
        "`python -m bench.report bench/results/full/results.json docs/benchmarks.md docs/benchmarks` "
        "re-renders this page from them.",
        "",
    ]
    return "\n".join(out)


def write(results: dict[str, Any], markdown: Path, plot_dir: Path) -> Path:
    try:
        images = plots(results, plot_dir)
    except ImportError:  # matplotlib is in the bench extra; the page is still written without plots
        images = []
    relative = plot_dir.relative_to(markdown.parent) if plot_dir.is_relative_to(markdown.parent) else plot_dir
    markdown.parent.mkdir(parents=True, exist_ok=True)
    markdown.write_text(render(results, str(relative), images))
    return markdown


def main() -> None:
    results = orjson.loads(Path(sys.argv[1]).read_bytes())
    print(write(results, Path(sys.argv[2]), Path(sys.argv[3])))


if __name__ == "__main__":
    main()
