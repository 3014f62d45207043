"""pytest plugin: every distinct SQL statement Emanet's own code sends to PostgreSQL during a test run.

Loaded by ``bench.plans`` as ``pytest -p bench.statements`` with ``EMANET_STATEMENTS_DIR`` set; each test
process writes what it saw there when it ends. A statement is kept with the place in ``emanet/`` that sent
it and up to ``KEPT_PARAMETERS`` of the parameter sets it was sent with, so ``bench.plans`` can replay it
under EXPLAIN on a large database. Statements the tests send themselves (arranging rows, reading results)
and migrations are left out: they are not what production runs.
"""

from __future__ import annotations

import os
import pickle
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import greenlet
from sqlalchemy import event
from sqlalchemy.engine import Engine

KEPT_PARAMETERS = 3
_DATA_VERBS = ("SELECT", "INSERT", "UPDATE", "DELETE", "WITH")
# Helpers every domain calls: the origin named is the domain code that called them.
_HELPERS = ("/emanet/core/db.py",)
# Where work enters: an HTTP route, a background job or sweep, a command of the CLI.
_ENTRIES = ("/router.py", "/tasks.py", "/cli.py")

seen: dict[str, dict[str, Any]] = {}


def caller_frames() -> FrameType | None:
    """The frames that led to the statement. SQLAlchemy's async layer runs the statement in a greenlet of
    its own; the code that awaited it is suspended in the parent greenlet."""
    current = greenlet.getcurrent()
    if current.parent is not None and current.parent.gr_frame is not None:
        return current.parent.gr_frame
    return sys._getframe(1)


def origin_of(frame: FrameType | None) -> str | None:
    """Where in ``emanet/`` the statement was sent from: the first function there on the way out (shared
    helpers skipped), then the route, job or command it served when that is another function
    (``escrow/service.py:list_escrows via escrow/router.py:admin_escrows``). None when a test, a factory
    or a migration sent it."""
    first = helper = entry = None
    while frame is not None:
        path = frame.f_code.co_filename.replace(os.sep, "/")
        if "/tests/" in path or "/migrations/" in path:
            if first is None:
                return None
            break
        if "/emanet/" in path and "/site-packages/" not in path:
            name = f"{path.rsplit('/emanet/', 1)[1]}:{frame.f_code.co_name}"
            if path.endswith(_HELPERS):
                helper = helper or name
            elif first is None:
                first = name
            if path.endswith(_ENTRIES):
                entry = name  # the outermost one
        frame = frame.f_back
    origin = first or helper
    if origin is None or entry in (None, origin):
        return origin
    return f"{origin} via {entry}"


def remember(statement: str, parameters: Any, origin: str) -> None:
    kept = seen.setdefault(statement, {"origins": set(), "parameters": []})
    kept["origins"].add(origin)
    if len(kept["parameters"]) < KEPT_PARAMETERS:
        try:
            pickle.dumps(parameters)
        except (pickle.PicklingError, TypeError, AttributeError):
            return
        kept["parameters"].append(parameters)


def _on_statement(
    conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, executemany: bool
) -> None:
    if conn.dialect.name != "postgresql" or not statement.lstrip()[:6].upper().startswith(_DATA_VERBS):
        return
    origin = origin_of(caller_frames())
    if origin is None:
        return
    if executemany and parameters and isinstance(parameters[0], (tuple, list, dict)):
        parameters = parameters[0]  # one row of an executemany; a multi-row INSERT comes as one flat list
    remember(statement, parameters, origin)


def pytest_configure(config: Any) -> None:
    # Listening from here rather than on import lets the tests of this module import it without recording.
    event.listen(Engine, "before_cursor_execute", _on_statement)


def pytest_sessionfinish(session: Any, exitstatus: int) -> None:
    directory = os.environ.get("EMANET_STATEMENTS_DIR")
    if directory and seen:
        Path(directory, f"statements-{os.getpid()}.pickle").write_bytes(pickle.dumps(seen))
