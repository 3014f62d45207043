"""The garbage collector's settings for a long-running process (server or worker)."""

from __future__ import annotations

import gc

# Young-generation threshold: a request allocates thousands of container objects (ORM states, rows,
# dicts), so CPython's default of 700 ran a collection every few statements. Measured under the lifecycle
# benchmark (share of a server process's CPU spent collecting, its RSS afterwards): 700: 7 %; 10,000:
# 3-4 %, 137-139 MB; 50,000: 3 %, 141-142 MB.
YOUNG_THRESHOLD = 10_000


def settle() -> None:
    """Call once the process has imported its code: ``gc.freeze()`` moves every object alive now (modules,
    classes, SQLAlchemy's mappers, FastAPI's routes) out of the collector's reach, so a full collection no
    longer walks them. The benchmark measured collections at 10 % of a server process's CPU before."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
