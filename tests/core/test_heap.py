"""The production entry points settle the heap: imported objects frozen, young collections less frequent."""

from __future__ import annotations

import subprocess
import sys

from emanet.core import heap


def test_importing_the_asgi_entry_point_freezes_the_imported_objects() -> None:
    probe = "import gc, emanet.main; print(gc.get_freeze_count(), gc.get_threshold()[0])"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    frozen, young = (int(word) for word in done.stdout.split())
    assert frozen > 100_000  # FastAPI, SQLAlchemy, pydantic and our modules
    assert young == heap.YOUNG_THRESHOLD
