"""Test-only routes mounted on the app under ``/_test``: they exercise the foundation's machinery
(problem documents, Money validation, idempotency, rate-limit tiers, scopes, error logging) through HTTP."""

from __future__ import annotations

import asyncio
from collections import Counter

import structlog
from fastapi import APIRouter
from pydantic import BaseModel

from emanet.core.auth import CurrentPrincipal, require_scope
from emanet.core.errors import ServiceUnavailable
from emanet.core.schemas import Money, StrictModel

router = APIRouter(prefix="/_test", tags=["test"])
log = structlog.get_logger("emanet.test")
# How many times each handler really ran, by the ``value`` it was sent.
executions: Counter[str] = Counter()


class Order(StrictModel):
    price: Money
    note: str | None = None


class Work(StrictModel):
    value: str
    delay: float = 0
    fail: str | None = None  # "raise" or "503": fail on the first execution only


class Done(BaseModel):
    value: str
    execution: int


class Ok(BaseModel):
    ok: bool = True


@router.post("/orders", response_model=Order, status_code=201)
async def create_order(body: Order) -> Order:
    return body


@router.post("/work", response_model=Done, status_code=201)
async def do_work(body: Work) -> Done:
    executions[body.value] += 1
    execution = executions[body.value]
    await asyncio.sleep(body.delay)
    if body.fail == "raise" and execution == 1:
        raise RuntimeError("the first attempt crashed")
    if body.fail == "503" and execution == 1:
        raise ServiceUnavailable("the first attempt found a dependency down")
    return Done(value=body.value, execution=execution)


@router.get("/ping", response_model=Ok)
async def ping() -> Ok:
    return Ok()


@router.post("/tiered", response_model=Ok)
async def tiered() -> Ok:
    return Ok()


@router.get("/scoped", response_model=Ok, dependencies=[require_scope("escrows:write")])
async def scoped(_principal: CurrentPrincipal) -> Ok:
    return Ok()


class Secrets(StrictModel):
    card_number: str
    otp: str
    password: str


@router.post("/crash", response_model=Ok)
async def crash(body: Secrets) -> Ok:
    raise RuntimeError(
        f"charge failed for card {body.card_number}, code {body.otp}, password={body.password}"
    )


@router.post("/log-secrets", response_model=Ok)
async def log_secrets(body: Secrets, principal: CurrentPrincipal) -> Ok:
    log.info(
        "sensitive_fields",
        card_number=body.card_number,
        otp=body.otp,
        password=body.password,
        note=f"user typed {body.card_number} and OTP {body.otp}",
    )
    return Ok()
