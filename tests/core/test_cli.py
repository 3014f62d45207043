"""The ``emanet`` command line against a temporary SQLite file, and ``emanet serve`` in a subprocess."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import psutil
import pytest
from typer.testing import CliRunner

from emanet.cli import app
from emanet.core.settings import Settings, get_settings


@pytest.fixture
def sqlite_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Point the CLI's settings at a fresh SQLite file in a directory that does not exist yet."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'fresh' / 'emanet.db'}"
    monkeypatch.setenv("EMANET_DATABASE_URL", url)
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_migrate_create_user_and_token(sqlite_env: str) -> None:
    code, output = run("migrate")
    assert code == 0, output
    assert "migrated" in output
    assert run("migrate")[0] == 0  # idempotent
    code, output = run(
        "users",
        "create",
        "--name",
        "Ada Operator",
        "--email",
        "Ada@Example.com",
        "--phone",
        "+90 555 123 45 67",
        "--role",
        "admin",
    )
    assert code == 0, output
    user_id = output.strip()
    assert user_id.startswith("usr_")
    for reference in (user_id, "ada@example.com", "+905551234567"):
        code, output = run("token", reference, "--minutes", "5")
        assert code == 0, output
        settings = Settings()
        claims = jwt.decode(
            output.strip(),
            settings.secret_key,
            algorithms=["HS256"],
            audience=settings.jwt_audience,
            options={"verify_exp": False, "verify_nbf": False, "verify_iat": False},
        )  # frozen clock
        assert (claims["sub"], claims["role"]) == (user_id, "admin")
        assert claims["exp"] - claims["iat"] == 300


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--name", "Dup", "--email", "ada@example.com"], "already exists"),
        (["--name", "Bad", "--role", "wizard"], "Unknown role"),
        (["--name", "Bad", "--phone", "12345"], "international format"),
    ],
)
def test_users_create_reports_errors(sqlite_env: str, args: list[str], message: str) -> None:
    assert run("migrate")[0] == 0
    assert run("users", "create", "--name", "Ada", "--email", "ada@example.com")[0] == 0
    code, output = run("users", "create", *args)
    assert code == 1
    assert message in output


def test_token_for_an_unknown_user_fails(sqlite_env: str) -> None:
    assert run("migrate")[0] == 0
    code, output = run("token", "nobody@example.com")
    assert code == 1 and "No user" in output


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


OUR_SUPERVISOR = pytest.mark.skipif(sys.platform != "linux", reason="our supervisor runs on Linux only")


def _serve(sqlite_env: str, tmp_path: Path, port: int, *command: str) -> subprocess.Popen[bytes]:
    """``emanet serve`` (or ``command``) in its own process group, answering on ``port``."""
    assert run("migrate")[0] == 0
    env = {
        **os.environ,
        "EMANET_DATABASE_URL": sqlite_env,
        "EMANET_STORAGE_DIR": str(tmp_path / "docs"),
        "EMANET_LOG_LEVEL": "WARNING",
    }
    emanet = Path(sys.executable).parent / "emanet"
    server = subprocess.Popen(
        list(command) or [str(emanet), "serve", "--port", str(port), "--workers", "2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    _wait_live(server, port)
    return server


def _wait_live(server: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + 180
    while True:
        assert server.poll() is None, server.stdout.read().decode() if server.stdout else ""
        try:
            live = httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=1)
            assert live.status_code == 200 and live.json() == {"status": "ok"}
            return
        except httpx.TransportError:
            assert time.monotonic() < deadline, "the server did not come up"
            time.sleep(0.3)


def _serving(server: subprocess.Popen[bytes]) -> list[psutil.Process]:
    """The live processes serving requests (not the supervisor, nor multiprocessing's resource tracker)."""
    serving = []
    for child in psutil.Process(server.pid).children():
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in " ".join(child.cmdline()):
                serving.append(child)
        except psutil.NoSuchProcess:
            continue
    return serving


def _server_processes(server: subprocess.Popen[bytes], count: int = 2) -> list[psutil.Process]:
    deadline = time.monotonic() + 60
    while len(serving := _serving(server)) != count:
        assert time.monotonic() < deadline, f"{len(serving)} server processes, expected {count}"
        time.sleep(0.2)
    return serving


def _stop(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)  # the supervisor and its workers: our own process group
    try:
        server.wait(timeout=40)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def _listening_inodes(process: psutil.Process, port: int) -> set[str]:
    fds = {c.fd for c in process.net_connections("tcp") if c.status == "LISTEN" and c.laddr.port == port}
    return {os.readlink(f"/proc/{process.pid}/fd/{fd}") for fd in fds}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_serve_with_two_workers_spreads_connections_over_both(sqlite_env: str, tmp_path: Path) -> None:
    port = _free_port()
    server = _serve(sqlite_env, tmp_path, port)
    try:
        ready = httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=10)
        assert ready.status_code == 200, ready.text
        assert httpx.get(f"http://127.0.0.1:{port}/api/v1/me", timeout=5).status_code == 401
        processes = _server_processes(server)
        if sys.platform == "linux":
            # Each process listens on its own socket (SO_REUSEPORT): the kernel spreads connections.
            deadline = time.monotonic() + 120  # the first process may answer before the second listens
            while not all(sockets := [_listening_inodes(process, port) for process in processes]):
                assert time.monotonic() < deadline, "a server process never listened"
                time.sleep(0.2)
            assert all(len(inodes) == 1 for inodes in sockets) and sockets[0] != sockets[1]
            clients = [httpx.Client(base_url=f"http://127.0.0.1:{port}") for _ in range(16)]
            try:
                for client in clients:  # each client keeps its connection open
                    assert client.get("/health/live").status_code == 200
                held = [
                    sum(c.status == "ESTABLISHED" and c.laddr.port == port for c in p.net_connections("tcp"))
                    for p in processes
                ]
            finally:
                for client in clients:
                    client.close()
            assert sum(held) == 16 and min(held) > 0, held
    finally:
        _stop(server)
    assert server.returncode == 0


@pytest.mark.slow
@pytest.mark.timeout(600)
@OUR_SUPERVISOR
def test_serve_starts_a_server_process_again_when_one_dies(sqlite_env: str, tmp_path: Path) -> None:
    port = _free_port()
    # Every process counts as started at once, so a death is a crash to recover from, not a failed start.
    supervisor = (
        f"from emanet.core import server; server.STARTUP_SECONDS = 0; server.serve('127.0.0.1', {port}, 2)"
    )
    server = _serve(sqlite_env, tmp_path, port, sys.executable, "-c", supervisor)
    try:
        first, second = _server_processes(server)
        first.kill()
        deadline = time.monotonic() + 120
        while len(pids := {p.pid for p in _serving(server)}) != 2 or first.pid in pids:
            assert time.monotonic() < deadline, f"no new server process: {pids}"
            time.sleep(0.2)
        assert second.pid in pids
        _wait_live(server, port)
    finally:
        _stop(server)
    assert server.returncode == 0


@pytest.mark.slow
@pytest.mark.timeout(600)
@OUR_SUPERVISOR
def test_serve_stops_with_an_error_when_a_process_dies_while_starting(
    sqlite_env: str, tmp_path: Path
) -> None:
    server = _serve(sqlite_env, tmp_path, port := _free_port())
    try:
        first, second = _server_processes(server)
        first.kill()  # within a minute of starting: a start that failed, not worth repeating forever
        assert server.wait(timeout=60) == 1
        assert server.stdout is not None and b"server_process_exited" in server.stdout.read()
        assert not second.is_running() or second.status() == psutil.STATUS_ZOMBIE
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=1)
    finally:
        _stop(server)
