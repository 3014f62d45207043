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


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_serve_with_two_workers(sqlite_env: str, tmp_path: Path) -> None:
    assert run("migrate")[0] == 0
    port = _free_port()
    env = {
        **os.environ,
        "EMANET_DATABASE_URL": sqlite_env,
        "EMANET_STORAGE_DIR": str(tmp_path / "docs"),
        "EMANET_LOG_LEVEL": "WARNING",
    }
    emanet = Path(sys.executable).parent / "emanet"
    server = subprocess.Popen(
        [str(emanet), "serve", "--port", str(port), "--workers", "2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, server.stdout.read().decode() if server.stdout else ""
            try:
                live = httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the server did not come up"
                time.sleep(0.3)
        assert live.status_code == 200 and live.json() == {"status": "ok"}
        ready = httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=10)
        assert ready.status_code == 200, ready.text
        assert httpx.get(f"http://127.0.0.1:{port}/api/v1/me", timeout=5).status_code == 401
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the supervisor and its two workers: our own process group
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    assert server.returncode is not None
