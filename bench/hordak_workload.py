"""The same transfer workload through django-hordak, run by the interpreter of bench/.hordak-venv.

This file imports nothing from Emanet: it runs in hordak's own virtualenv against its own database.
Each transfer is ``Account.transfer_to`` (one hordak Transaction with a credit and a debit Leg, checked by
hordak's PostgreSQL triggers). ``single``: one transfer per commit; ``batch``: ``batch_size`` transfers in
one ``transaction.atomic()``. Threads give the connections (Django opens one per thread); each thread moves
money among its own slice of the accounts, as in the Emanet ledger run.

    python bench/hordak_workload.py setup DSN ACCOUNTS
    python bench/hordak_workload.py run DSN CONFIG.json RESULT.json
"""

from __future__ import annotations

import json
import random
import resource
import sys
import threading
import time
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit


def configure(dsn: str, connections: int) -> None:
    import django
    from django.conf import settings

    parts = urlsplit(dsn)
    settings.configure(
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "mptt", "hordak"],
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": parts.path.lstrip("/"),
                "USER": parts.username or "postgres",
                "PASSWORD": parts.password or "",
                "HOST": parts.hostname or "127.0.0.1",
                "PORT": str(parts.port or 5432),
                "CONN_MAX_AGE": None,
            }
        },
        USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        DEFAULT_CURRENCY="TRY",
        HORDAK_CURRENCIES=["TRY"],
        CURRENCIES=["TRY"],
        LOGGING_CONFIG=None,
    )
    django.setup()


def setup(dsn: str, count: int) -> None:
    configure(dsn, 1)
    from django.core.management import call_command
    from hordak.models import Account

    call_command("migrate", verbosity=0, interactive=False)
    for i in range(count):
        Account.objects.create(name=f"Wallet {i}", code=f"{i:05d}", type="LI", currencies=["TRY"])


def run(dsn: str, config: dict[str, Any]) -> dict[str, Any]:
    threads_count = int(config["connections"])
    configure(dsn, threads_count)
    from django.db import connection, transaction
    from hordak.models import Account
    from moneyed import Money

    ids = list(Account.objects.order_by("id").values_list("id", flat=True))
    connection.close()
    per_commit = int(config["batch_size"]) if config["mode"] == "batch" else 1
    start = time.perf_counter()
    measure_from = start + float(config["warmup_seconds"])
    deadline = measure_from + float(config["seconds"])
    done = [0]
    lock = threading.Lock()
    errors: list[str] = []

    def loop(slot: int) -> None:
        slice_ids = [ids[i] for i in config["wallet_slices"][slot]]
        accounts = {a.id: a for a in Account.objects.filter(id__in=slice_ids)}
        order = random.Random(f"{config['process']}:{slot}")
        sequence = 0
        try:
            while time.perf_counter() < deadline:
                with transaction.atomic():
                    for _ in range(per_commit):
                        payer, payee = order.sample(slice_ids, 2)
                        sequence += 1
                        accounts[payer].transfer_to(
                            accounts[payee],
                            Money(Decimal(100 + sequence % 900) / 100, "TRY"),
                            description="bench transfer",
                        )
                finished = time.perf_counter()
                if measure_from <= finished <= deadline:
                    with lock:
                        done[0] += per_commit
        except Exception as exc:  # reported in the result: a failed run must not pass for a slow one
            errors.append(repr(exc))
        finally:
            connection.close()

    before = resource.getrusage(resource.RUSAGE_SELF)
    threads = [threading.Thread(target=loop, args=(slot,)) for slot in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "entries": done[0],
        "window_s": float(config["seconds"]),
        "errors": errors[:3],
        "cpu_s": round(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, 2),
    }


def main() -> None:
    command, dsn = sys.argv[1], sys.argv[2]
    if command == "setup":
        setup(dsn, int(sys.argv[3]))
    elif command == "run":
        with open(sys.argv[3]) as config_file:
            config = json.load(config_file)
        result = run(dsn, config)
        with open(sys.argv[4], "w") as result_file:
            json.dump(result, result_file)
    else:
        raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    main()
