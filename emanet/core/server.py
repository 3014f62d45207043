"""``emanet serve``: the API under uvicorn, one process per ``--workers``.

On Linux each server process listens on its own socket bound with ``SO_REUSEPORT``, and the kernel spreads
new connections across them by a hash of the client's address. uvicorn's own ``--workers`` shares one
listening socket: whichever process wakes first accepts a whole burst of connections, and with keep-alive
clients (a proxy's upstream pool, an SDK's connection pool) they stay there; the benchmark's 32 clients all
landed on one of two processes in some runs, leaving the other idle. The supervisor here is small on
purpose: it starts the processes, starts again one that dies (unless it died while starting), and on
SIGTERM or SIGINT asks each to finish its requests and stop. Elsewhere uvicorn's supervisor is used.
"""

from __future__ import annotations

import multiprocessing
import signal
import socket
import sys
import threading
import time
from multiprocessing.process import BaseProcess
from typing import Any

import structlog

from emanet.core.logging import configure_logging
from emanet.core.settings import get_settings

log = structlog.get_logger("emanet.server")

APP = "emanet.main:app"
# A process that dies sooner than this after it started is failing to start (bad settings, a database it
# cannot reach): the server stops with status 1 rather than start it again and again.
STARTUP_SECONDS = 60
STOP_GRACE_SECONDS = 30


def _options(host: str, port: int) -> dict[str, Any]:
    return {
        "host": host,
        "port": port,
        "log_config": None,
        "access_log": False,
        "loop": "uvloop" if sys.platform != "win32" else "auto",
        "proxy_headers": True,
    }


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` that other sockets with ``SO_REUSEPORT`` may share."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def _serve_process(host: str, port: int) -> None:
    import uvicorn

    uvicorn.Server(uvicorn.Config(APP, **_options(host, port))).run(sockets=[listening_socket(host, port)])


def serve(host: str, port: int, workers: int) -> None:
    import uvicorn

    if workers <= 1 or sys.platform != "linux":
        uvicorn.run(APP, workers=workers, **_options(host, port))
        return
    sys.exit(_supervise(host, port, workers))


def _supervise(host: str, port: int, workers: int) -> int:
    """Run ``workers`` server processes until a signal; the exit status (1 if one could not start)."""
    # Bound (never listening, so it is handed no connections) for as long as we run: a port taken by
    # another program fails here, before any process starts.
    reservation = listening_socket(host, port)
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
    spawn = multiprocessing.get_context("spawn")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())

    def start() -> tuple[BaseProcess, float]:
        process = spawn.Process(target=_serve_process, args=(host, port), name="emanet-server")
        process.start()
        return process, time.monotonic()

    processes = [start() for _ in range(workers)]
    status = 0
    try:
        while not stop.wait(0.5):
            for position, (process, started) in enumerate(processes):
                if process.is_alive():
                    continue
                starting = time.monotonic() - started < STARTUP_SECONDS
                log.error(
                    "server_process_exited", pid=process.pid, exit_code=process.exitcode, starting=starting
                )
                if starting:
                    status = 1
                    stop.set()
                    break
                processes[position] = start()
    finally:
        for process, _ in processes:
            if process.is_alive():
                process.terminate()  # SIGTERM: uvicorn finishes the requests in flight, then exits
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for process, _ in processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
        reservation.close()
    return status
