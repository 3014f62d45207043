"""Sampling profiles of a live server process with py-spy (idle time excluded), summarised by layer.

``py-spy record --format raw`` writes collapsed stacks (``frame;frame;frame count``). The summary gives,
for the sampled process: the share of samples whose stack passes through each layer (our code, the ORM,
the driver, FastAPI/pydantic, logging …); the share each layer spends itself (a sample belongs to the
layer of its innermost frame that has one, so these add up to 100 % and say what removing a layer could
save at most); the functions with the most samples of their own (self time); and our functions with the
most samples under them (inclusive).
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

# First matching pattern (a path fragment of the frame's file) names the layer of a frame.
LAYERS = (
    ("emanet ledger", "emanet/ledger/"),
    ("emanet escrow", "emanet/escrow/"),
    ("emanet payments/providers", ("emanet/payments/", "emanet/providers/", "emanet/webhooks/")),
    ("emanet core (auth, session, middleware, errors)", "emanet/core/"),
    ("SQLAlchemy ORM", ("sqlalchemy/orm/",)),
    ("SQLAlchemy Core/engine", ("sqlalchemy/",)),
    ("asyncpg driver", ("asyncpg/",)),
    ("pydantic", ("pydantic/", "pydantic_core/")),
    ("FastAPI/Starlette", ("fastapi/", "starlette/")),
    ("uvicorn/httptools/uvloop", ("uvicorn/", "httptools/", "uvloop/")),
    ("structlog/logging", ("structlog/", "logging/")),
    ("JWT/crypto", ("jwt/", "cryptography/")),
    ("JSON", ("orjson", "json/")),
    ("asyncio event loop", ("asyncio/",)),
)
UNLAYERED = "other (standard library)"


def record(pid: int, seconds: int, output: Path, rate: int = 200) -> bool:
    """Sample ``pid`` for ``seconds``; False when py-spy is missing or may not attach (no ptrace)."""
    spy = Path(sys.executable).parent / "py-spy"
    try:
        subprocess.run(
            [
                str(spy),
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(seconds),
                "--rate",
                str(rate),
                "--format",
                "raw",
                "--nonblocking",
                "--output",
                str(output),
            ],
            check=True,
            capture_output=True,
            timeout=seconds + 60,
        )
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired):
        return False
    return output.exists()


def _layer(frame: str) -> str | None:
    for name, patterns in LAYERS:
        fragments = (patterns,) if isinstance(patterns, str) else patterns
        if any(fragment in frame for fragment in fragments):
            return name
    return None


def _short(frame: str) -> str:
    """``handler (emanet/escrow/service.py:123)`` -> ``handler (escrow/service.py)``."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = path.split("/")
    return f"{name} ({'/'.join(parts[-2:])})" if parts else name


def summarize(folded: str, top: int = 15) -> dict[str, Any]:
    total = 0
    inclusive: Counter[str] = Counter()
    spent: Counter[str] = Counter()  # by the layer that was running: a partition of the samples
    own: Counter[str] = Counter()
    ours: Counter[str] = Counter()  # our functions, inclusive: which of our steps the time is spent under
    for line in folded.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        layers = [_layer(f) for f in frames]
        for layer in {layer for layer in layers if layer}:
            inclusive[layer] += count
        spent[next((layer for layer in reversed(layers) if layer), UNLAYERED)] += count
        own[_short(frames[-1])] += count
        for function in {_short(f) for f in frames if "emanet/" in f and "emanet/cli.py" not in f}:
            ours[function] += count
    if not total:
        return {"samples": 0, "layers": [], "own_layers": [], "self": [], "ours": []}

    def shares(counter: Counter[str], key: str, limit: int | None = None) -> list[dict[str, Any]]:
        return [{key: name, "pct": round(100 * n / total, 1)} for name, n in counter.most_common(limit)]

    return {
        "samples": total,
        "layers": shares(inclusive, "layer"),
        "own_layers": shares(spent, "layer"),
        "self": shares(own, "function", top),
        "ours": shares(ours, "function", top),
    }
