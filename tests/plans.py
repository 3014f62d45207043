"""What PostgreSQL does for a statement the application sent: for tests that a lookup stays an index probe
however many rows the table holds."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
from sqlalchemy import event

from emanet.core.db import Database


@contextmanager
def statements_sent(database: Database, starting_with: str) -> Iterator[list[tuple[str, Any]]]:
    """The statements (with their parameters) sent while the block runs whose text starts with
    ``starting_with``."""
    sent: list[tuple[str, Any]] = []

    def remember(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().startswith(starting_with):
            sent.append((statement, parameters))

    event.listen(database.engine.sync_engine, "before_cursor_execute", remember)
    try:
        yield sent
    finally:
        event.remove(database.engine.sync_engine, "before_cursor_execute", remember)


async def explain(database: Database, statement: str, parameters: Any) -> dict[str, Any]:
    """The plan of ``statement`` run with ``parameters`` (EXPLAIN ANALYZE, in a transaction rolled back)."""
    async with database.engine.connect() as connection:
        explained = (
            await connection.exec_driver_sql(
                f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {statement}", parameters
            )
        ).scalar_one()
        await connection.rollback()
    plan: dict[str, Any] = (orjson.loads(explained) if isinstance(explained, str) else explained)[0]["Plan"]
    return plan


def nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return [plan, *(node for child in plan.get("Plans", []) for node in nodes(child))]


def rows_read_from(plan: dict[str, Any], table: str) -> int:
    """Rows the plan's scans of ``table`` produced, plus those its filters threw away."""
    return sum(
        int(node.get("Actual Rows", 0) * node.get("Actual Loops", 1))
        + int(node.get("Rows Removed by Filter", 0))
        for node in nodes(plan)
        if node.get("Relation Name") == table
    )
