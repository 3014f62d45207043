"""``python -m tests.worker.worker_entry CONCURRENCY``: ``emanet worker`` with the test job kinds registered.

Settings come from the environment (``EMANET_DATABASE_URL`` …), exactly as for ``emanet worker``.
"""

from __future__ import annotations

import asyncio
import sys

import tests.worker.process_jobs  # noqa: F401 - registers the test job kinds
from emanet.core.settings import Settings
from emanet.core.worker import run_worker

if __name__ == "__main__":
    asyncio.run(run_worker(Settings(), concurrency=int(sys.argv[1])))
