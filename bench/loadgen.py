"""The HTTP load generator: closed-loop virtual clients on one event loop, in their own process.

Why this one: the machine has two cores shared by PostgreSQL, Emanet's server processes and the load, so
the load must cost as little CPU as possible. Each virtual client keeps one HTTP/1.1 keep-alive connection
and speaks the protocol directly over asyncio streams on uvloop (no client library between the socket and
the request), which costs a few tens of microseconds per request; the run reports the generator's own CPU
time so that cost is visible. ``wrk`` costs less still but its Lua scripts cannot chain the lifecycle
(each step needs the ids returned by the previous one) without becoming a second implementation of it.

Run: ``python -m bench.loadgen CONFIG.json RESULT.json``.
"""

from __future__ import annotations

import asyncio
import math
import random
import resource
import sys
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from standardwebhooks import Webhook

LIFECYCLE_STEPS = ("create", "pay", "webhook", "release")


class Connection:
    """One keep-alive HTTP/1.1 connection; requests on it are sequential (one virtual client)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.reader = self.writer = None

    async def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
    ) -> tuple[int, bytes]:
        if self.writer is None:
            await self._open()
        assert self.reader is not None and self.writer is not None
        lines = [
            f"{method} {path} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            f"Content-Length: {len(body)}",
        ]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        try:
            status, payload, close = await self._response()
        except (asyncio.IncompleteReadError, ConnectionError):
            await self.close()
            raise
        if close:
            await self.close()
        return status, payload

    async def _response(self) -> tuple[int, bytes, bool]:
        assert self.reader is not None
        status = int((await self.reader.readuntil(b"\r\n"))[9:12])
        length, chunked, close = 0, False, False
        while (line := await self.reader.readuntil(b"\r\n")) != b"\r\n":
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                close = b"close" in value.lower()
        if not chunked:
            return status, await self.reader.readexactly(length), close
        parts = []
        while size := int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16):
            parts.append(await self.reader.readexactly(size))
            await self.reader.readexactly(2)
        await self.reader.readuntil(b"\r\n")
        return status, b"".join(parts), close


@dataclass
class Recorder:
    """Latencies of the requests that finished inside the measured window, per step."""

    measure_from: float
    measure_to: float
    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, dict[str, int]] = field(default_factory=dict)
    samples: list[str] = field(default_factory=list)
    cycles: int = 0

    def ok(self, step: str, started: float, finished: float) -> None:
        if self.measure_from <= finished <= self.measure_to:
            self.latencies.setdefault(step, []).append(finished - started)

    def failed(self, step: str, status: int, body: bytes) -> None:
        by_status = self.errors.setdefault(step, {})
        by_status[str(status)] = by_status.get(str(status), 0) + 1
        if len(self.samples) < 5:
            self.samples.append(f"{step} {status} {body[:300]!r}")

    def cycle_done(self, finished: float) -> None:
        if self.measure_from <= finished <= self.measure_to:
            self.cycles += 1


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def summarize(recorder: Recorder, steps: tuple[str, ...]) -> dict[str, Any]:
    window = recorder.measure_to - recorder.measure_from
    per_step = {}
    for step in steps:
        values = recorder.latencies.get(step, [])
        per_step[step] = {
            "count": len(values),
            "per_second": round(len(values) / window, 1),
            "p50_ms": round(percentile(values, 50) * 1000, 2),
            "p95_ms": round(percentile(values, 95) * 1000, 2),
            "p99_ms": round(percentile(values, 99) * 1000, 2),
            "max_ms": round(max(values) * 1000, 2) if values else math.nan,
            "errors": recorder.errors.get(step, {}),
        }
    return {
        "window_s": round(window, 2),
        "steps": per_step,
        "steps_per_second": round(sum(s["count"] for s in per_step.values()) / window, 1),
        "cycles_per_second": round(recorder.cycles / window, 1),
        "error_samples": recorder.samples,
    }


# ------------------------------------------------------------------------------------------ scenarios
@dataclass
class Client:
    token: str
    buyer_id: str
    seller_id: str


def sandbox_event(reference: str, payment_id: str, amount: int, currency: str) -> tuple[str, bytes]:
    """A ``payment.succeeded`` event exactly as emanet/providers/sandbox.py builds it for a card payment."""
    data = {
        "object": "charge",
        "reference": reference,
        "payment_id": payment_id,
        "amount": amount,
        "currency": currency,
        "status": "succeeded",
        "failure_code": None,
        "failure_message": None,
        "fee": amount * 290 // 10_000,
        "refunded_amount": 0,
        "card": {"brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2030, "token": None},
    }
    body = orjson.dumps(
        {"type": "payment.succeeded", "timestamp": datetime.now(UTC).isoformat(), "data": data}
    )
    return f"msg_{reference}_succeeded", body


def signed_headers(webhook: Webhook, msg_id: str, body: bytes) -> dict[str, str]:
    """Standard Webhooks, signed with the library the sandbox uses."""
    now = datetime.now(UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(math.floor(now.timestamp())),
        "webhook-signature": webhook.sign(msg_id, now, body.decode()),
        "Content-Type": "application/json",
    }


async def lifecycle_client(
    connection: Connection, client: Client, webhook: Webhook, recorder: Recorder, deadline: float, amount: int
) -> None:
    """create escrow -> create sandbox payment -> signed provider webhook -> release, until the deadline."""
    auth = {"Authorization": f"Bearer {client.token}", "Content-Type": "application/json"}
    clock = time.perf_counter

    async def step(
        name: str, method: str, path: str, headers: dict[str, str], body: bytes, expect: tuple[int, ...]
    ) -> dict[str, Any] | None:
        started = clock()
        try:
            status, payload = await connection.request(method, path, headers, body)
        except (OSError, asyncio.IncompleteReadError) as exc:
            status, payload = 0, repr(exc).encode()
            await asyncio.sleep(0.05)  # the server went away: do not spin until the deadline
        if status not in expect:
            recorder.failed(name, status, payload)
            return None
        recorder.ok(name, started, clock())
        return orjson.loads(payload) if payload else {}

    while clock() < deadline:
        escrow = await step(
            "create",
            "POST",
            "/api/v1/escrows",
            auth,
            orjson.dumps(
                {
                    "buyer_id": client.buyer_id,
                    "seller_id": client.seller_id,
                    "amount": {"amount": amount, "currency": "TRY"},
                    "title": "Benchmark order",
                    "category": "general",
                }
            ),
            (201,),
        )
        if escrow is None or clock() >= deadline:
            continue
        payment = await step(
            "pay",
            "POST",
            "/api/v1/payments",
            auth,
            orjson.dumps(
                {
                    "escrow_id": escrow["id"],
                    "provider": "sandbox",
                    "method": "card",
                    "return_url": "https://shop.example/return",
                }
            ),
            (200, 201, 202),
        )
        if payment is None or clock() >= deadline:
            continue
        msg_id, event = sandbox_event(
            payment_reference(payment), payment["id"], escrow["fees"]["total_due"]["amount"], "TRY"
        )
        if (
            await step(
                "webhook",
                "POST",
                "/api/v1/webhooks/sandbox",
                signed_headers(webhook, msg_id, event),
                event,
                (200, 202, 204),
            )
            is None
            or clock() >= deadline
        ):
            continue
        released = await step("release", "POST", f"/api/v1/escrows/{escrow['id']}/release", auth, b"", (200,))
        if released is not None:
            recorder.cycle_done(clock())


def payment_reference(payment: dict[str, Any]) -> str:
    """The sandbox charge id the payment answered with (the provider's reference)."""
    for key in ("provider_reference", "reference"):
        if payment.get(key):
            return str(payment[key])
    raise KeyError(f"no provider reference in the payment response: {sorted(payment)}")


async def read_client(
    connection: Connection,
    paths: list[tuple[str, str]],
    step_name: str,
    recorder: Recorder,
    deadline: float,
    seed: int,
) -> None:
    """GET one of ``paths`` (path, token) after another until the deadline."""
    order = random.Random(seed)
    clock = time.perf_counter
    while clock() < deadline:
        path, token = paths[order.randrange(len(paths))]
        started = clock()
        try:
            status, payload = await connection.request("GET", path, {"Authorization": f"Bearer {token}"})
        except (OSError, asyncio.IncompleteReadError) as exc:
            status, payload = 0, repr(exc).encode()
            await asyncio.sleep(0.05)
        if status == 200:
            recorder.ok(step_name, started, clock())
        else:
            recorder.failed(step_name, status, payload)


async def run(config: dict[str, Any]) -> dict[str, Any]:
    host, port = config["host"], int(config["port"])
    clients = int(config["clients"])
    start = time.perf_counter()
    measure_from = start + float(config["warmup_seconds"])
    deadline = measure_from + float(config["seconds"])
    recorder = Recorder(measure_from=measure_from, measure_to=deadline)
    connections = [Connection(host, port) for _ in range(clients)]
    scenario = config["scenario"]
    tasks: list[Awaitable[None]] = []
    if scenario == "lifecycle":
        webhook = Webhook(config["webhook_secret"])
        people = [Client(**c) for c in config["people"]]
        tasks = [
            lifecycle_client(
                connections[i],
                people[i % len(people)],
                webhook,
                recorder,
                deadline,
                int(config.get("amount", 100_000)),
            )
            for i in range(clients)
        ]
        steps: tuple[str, ...] = LIFECYCLE_STEPS
    else:
        paths = [(p["path"], p["token"]) for p in config["paths"]]
        tasks = [
            read_client(connections[i], paths, scenario, recorder, deadline, seed=i) for i in range(clients)
        ]
        steps = (scenario,)
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    for connection in connections:
        await connection.close()
    summary = summarize(recorder, steps)
    summary["client_failures"] = [repr(o) for o in outcomes if isinstance(o, BaseException)][:5]
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    requests = sum(len(v) for v in recorder.latencies.values())
    summary["loadgen_cpu_s"] = round(cpu, 2)
    summary["loadgen_cpu_us_per_request"] = round(cpu / requests * 1e6, 1) if requests else None
    summary["clients"] = clients
    summary["scenario"] = scenario
    return summary


def main() -> None:
    config_path, result_path = Path(sys.argv[1]), Path(sys.argv[2])
    config = orjson.loads(config_path.read_bytes())
    import uvloop

    result = uvloop.run(run(config))
    result_path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
