"""Emanet started the production way: ``emanet serve --workers N`` and ``emanet worker`` on a fresh database.

Each process is started in its own session (process group) and stopped by that group's id, so the bench
ends exactly what it started.
"""

from __future__ import annotations

import base64
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench import pg
from emanet.core.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
REDIS_URL = os.environ.get("EMANET_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
# Production's default pool, set explicitly: an EMANET_ variable in the caller's shell cannot change it.
DATABASE_POOL = {
    "size": Settings.model_fields["database_pool_size"].default,
    "overflow": Settings.model_fields["database_max_overflow"].default,
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def redis_reachable(url: str = REDIS_URL) -> bool:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=1)
        client.ping()
        client.close()
        return True
    except redis.RedisError:
        return False


@dataclass
class Secrets:
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(48))
    webhook_secret: str = field(
        default_factory=lambda: "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    )
    captcha_secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))


def emanet_env(database: str, port: int, keys: Secrets, *, use_redis: bool) -> dict[str, str]:
    """Production settings (non-default secrets, JSON logs at WARNING, the default database pool), with the
    two bench allowances: no minimum hold, so an escrow can be released as soon as it is funded, and rate
    limits off."""
    env = {
        "EMANET_ENV": "production",
        "EMANET_DATABASE_URL": pg.sqlalchemy_url(database),
        "EMANET_DATABASE_POOL_SIZE": str(DATABASE_POOL["size"]),
        "EMANET_DATABASE_MAX_OVERFLOW": str(DATABASE_POOL["overflow"]),
        "EMANET_SECRET_KEY": keys.secret_key,
        "EMANET_SANDBOX_WEBHOOK_SECRET": keys.webhook_secret,
        # production refuses the test CAPTCHA verifier; no bench request asks for a CAPTCHA
        "EMANET_CAPTCHA_PROVIDER": "turnstile",
        "EMANET_CAPTCHA_SECRET": keys.captcha_secret,
        "EMANET_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "EMANET_MIN_HOLD_HOURS": "0",
        "EMANET_RATE_LIMIT_ENABLED": "false",
        "EMANET_LOG_LEVEL": "WARNING",
        "EMANET_LOG_JSON": "true",
        "EMANET_RUN_WORKER_IN_PROCESS": "false",
    }
    if use_redis:
        env["EMANET_REDIS_URL"] = REDIS_URL
        env["EMANET_REDIS_KEY_PREFIX"] = f"emanet-bench-{os.getpid()}"
    return env


@dataclass
class Stack:
    database: str
    port: int
    env: dict[str, str]
    workers: int
    log_dir: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self, name: str, args: list[str]) -> None:
        log = (self.log_dir / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            args,
            cwd=ROOT,
            env={**os.environ, **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def start(self) -> None:
        self._spawn(
            "server",
            [
                str(BIN / "emanet"),
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                str(self.workers),
            ],
        )
        self._spawn("worker", [str(BIN / "emanet"), "worker"])
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"emanet {name} exited with {process.returncode}; see {self.log_dir}")
            if len(self.server_worker_pids()) == self.workers and self._answers():
                return
            time.sleep(0.3)
        raise RuntimeError(f"emanet did not start in 90 s; see {self.log_dir}")

    def _answers(self) -> bool:
        try:
            # Several answers in a row: every server process has finished starting.
            return all(
                httpx.get(f"{self.base_url}/health/live", timeout=2).status_code == 200
                for _ in range(self.workers * 3)
            )
        except httpx.HTTPError:
            return False

    def server_worker_pids(self) -> list[int]:
        """The uvicorn worker processes (the children that serve requests, not the supervisor)."""
        server = self.processes.get("server")
        if server is None or server.poll() is not None:
            return []
        if self.workers == 1:  # uvicorn serves in its own process
            return [server.pid]
        try:
            children = psutil.Process(server.pid).children(recursive=True)
            return [c.pid for c in children if "resource_tracker" not in " ".join(c.cmdline())]
        except psutil.Error:
            return []

    def worker_pid(self) -> int:
        return self.processes["worker"].pid

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        self.processes.clear()


@contextmanager
def running(database: str, keys: Secrets, *, workers: int, log_dir: Path, use_redis: bool) -> Iterator[Stack]:
    port = free_port()
    stack = Stack(
        database=database,
        port=port,
        workers=workers,
        log_dir=log_dir,
        env=emanet_env(database, port, keys, use_redis=use_redis),
    )
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


# ------------------------------------------------------------------------------------------ CPU accounting
POSTGRES_NAMES = ("postgres", "postmaster")


class CpuMeter:
    """CPU seconds used during a run by each group of processes: Emanet's server processes, its worker,
    PostgreSQL and the load generator. Shows where the machine's two cores went."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups
        self.start = self._sample()
        self.started_at = time.monotonic()
        psutil.cpu_percent()

    def _sample(self) -> dict[str, dict[int, float]]:
        groups = dict(self.groups)
        groups["postgres"] = [
            p.pid for p in psutil.process_iter(["name"]) if p.info["name"] in POSTGRES_NAMES
        ]
        sample: dict[str, dict[int, float]] = {}
        for name, pids in groups.items():
            sample[name] = {}
            for pid in pids:
                try:
                    times = psutil.Process(pid).cpu_times()
                    sample[name][pid] = times.user + times.system
                except psutil.Error:
                    continue
        return sample

    def stop(self) -> dict[str, Any]:
        end = self._sample()
        elapsed = time.monotonic() - self.started_at
        used = {
            name: sum(seconds - self.start.get(name, {}).get(pid, 0.0) for pid, seconds in pids.items())
            for name, pids in end.items()
        }
        servers = end.get("emanet server", {})
        return {
            "elapsed_s": round(elapsed, 2),
            "machine_busy_pct": psutil.cpu_percent(),
            "cores_used": {name: round(seconds / elapsed, 2) for name, seconds in used.items()},
            # How evenly the kernel spread the clients' connections over the server processes.
            "server_processes": [
                round((seconds - self.start.get("emanet server", {}).get(pid, 0.0)) / elapsed, 2)
                for pid, seconds in servers.items()
            ],
        }


def add_group(meter: CpuMeter, name: str, pids: list[int]) -> None:
    meter.groups[name] = pids
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
            meter.start.setdefault(name, {})[pid] = times.user + times.system
        except psutil.Error:
            continue
