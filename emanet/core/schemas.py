"""Shared API shapes: strict request models, Money, and cursor-paginated lists."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Generic, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator
from sqlalchemy import ColumnElement, Select, and_, literal, or_, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from emanet.core.errors import Unprocessable
from emanet.core.money import check_currency

T = TypeVar("T")


class StrictModel(BaseModel):
    """Request bodies refuse unknown fields and never coerce a float or string into an amount."""

    model_config = ConfigDict(extra="forbid")


class Money(StrictModel):
    amount: StrictInt = Field(gt=0, description="Integer minor units (TRY 125.50 is 12550)", examples=[12550])
    currency: str = Field(min_length=3, max_length=3, examples=["TRY"])

    @field_validator("currency")
    @classmethod
    def _iso_currency(cls, value: str) -> str:
        try:
            return check_currency(value)
        except Unprocessable as exc:
            raise ValueError(exc.detail) from exc


class MoneyOut(BaseModel):
    amount: int
    currency: str


class Page(BaseModel, Generic[T]):
    data: list[T]
    next_cursor: str | None = None


def encode_cursor(values: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(values)).decode().rstrip("=")


def decode_cursor(cursor: str) -> dict[str, Any]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        decoded = orjson.loads(base64.urlsafe_b64decode(padded))
    except (ValueError, orjson.JSONDecodeError) as exc:
        raise Unprocessable("Malformed cursor", code="invalid_cursor") from exc
    if not isinstance(decoded, dict):
        raise Unprocessable("Malformed cursor", code="invalid_cursor")
    return decoded


def after_cursor(keys: Sequence[tuple[Any, bool]], values: Sequence[Any]) -> ColumnElement[bool]:
    """The rows that come after ``values`` in the order ``keys`` ((column, descending) pairs, the last of
    them unique), written so that PostgreSQL starts its index scan at the cursor and a deep page costs
    what the first one does. When every key runs the same way it is one row comparison, ``(created_at,
    id) < (:t, :id)``: spelled out term by term instead, the index was read from its first row and every
    row before the cursor skipped one by one (363 ms and 40,704 buffers for a page 500,000 escrows deep,
    against 0.06 ms and 5 buffers). Mixed directions must be spelled out, with a bound on the first key."""
    columns = [column for column, _ in keys]
    directions = {descending for _, descending in keys}
    if len(directions) == 1:
        row, cursor = (
            tuple_(*columns),
            tuple_(*[literal(v, c.type) for c, v in zip(columns, values, strict=True)]),
        )
        return row < cursor if directions.pop() else row > cursor
    alternatives = []
    for index, (column, descending) in enumerate(keys):
        same = [c == v for c, v in zip(columns[:index], values[:index], strict=True)]
        beyond = column < values[index] if descending else column > values[index]
        alternatives.append(and_(*same, beyond))
    # Implied by the alternatives, and what lets an index on the first key start at the cursor (a page
    # 500,000 escrows deep sorted by -amount,created_at: 1,133 ms and 506,306 buffers without it, 0.24 ms).
    first, first_descending = keys[0]
    bound = first <= values[0] if first_descending else first >= values[0]
    return and_(bound, or_(*alternatives))


async def newest_first_page(
    session: AsyncSession, query: Select[Any], model: Any, *, limit: int, cursor: str | None
) -> tuple[list[Any], str | None]:
    """One page of ``query`` ordered newest first by (``created_at``, ``id``), with the next page's cursor."""
    if cursor:
        after = decode_cursor(cursor)
        try:
            moment, last_id = datetime.fromisoformat(str(after.get("t"))), str(after.get("id"))
        except ValueError as exc:
            raise Unprocessable("Malformed cursor", code="invalid_cursor") from exc
        query = query.where(after_cursor([(model.created_at, True), (model.id, True)], [moment, last_id]))
    ordered = query.order_by(model.created_at.desc(), model.id.desc()).limit(limit + 1)
    rows = list((await session.execute(ordered)).scalars().all())
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, encode_cursor({"t": rows[-1].created_at.isoformat(), "id": rows[-1].id})
