"""Escrow export (CSV or XLSX) in flat memory, however many rows match.

Rows come from a server-side cursor in batches (``Connection.stream`` + ``partitions``), never as one list.
CSV is written and sent batch by batch. XLSX is a zip whose directory is written last, so it is built by
``xlsxwriter`` in ``constant_memory`` mode (each row goes to a temporary file as it is written) and the
finished file is then sent in chunks and deleted.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from typing import Any

import anyio

from emanet.core.db import Database
from emanet.escrow.models import Escrow
from emanet.escrow.service import EscrowFilters, filtered_escrows

BATCH_ROWS = 2_000
FILE_CHUNK_BYTES = 256 * 1024
XLSX_MAX_ROWS = 1_048_576  # per worksheet, header included; more rows continue on the next sheet
# Cells starting with one of these are read as formulas by spreadsheets (OWASP "CSV injection").
_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")

COLUMNS = [
    ("id", Escrow.id),
    ("number", Escrow.number),
    ("status", Escrow.status),
    ("buyer_id", Escrow.buyer_id),
    ("seller_id", Escrow.seller_id),
    ("title", Escrow.title),
    ("category", Escrow.category),
    ("market_type", Escrow.market_type),
    ("currency", Escrow.currency),
    ("amount", Escrow.amount),
    ("platform_fee", Escrow.platform_fee),
    ("total_due", Escrow.total_due),
    ("funded", Escrow.funded_amount),
    ("released", Escrow.released_amount),
    ("refunded", Escrow.refunded_amount),
    ("created_at", Escrow.created_at),
    ("funded_at", Escrow.funded_at),
    ("delivered_at", Escrow.delivered_at),
    ("closed_at", Escrow.closed_at),
]
HEADER = [name for name, _ in COLUMNS]
Batch = Sequence[Sequence[Any]]  # rows of the COLUMNS values


async def escrow_batches(database: Database, filters: EscrowFilters) -> AsyncIterator[Batch]:
    """The matching escrows, oldest first, ``BATCH_ROWS`` at a time from a server-side cursor."""
    query = (
        filtered_escrows(filters, None)
        .with_only_columns(*(column for _, column in COLUMNS))
        .order_by(Escrow.created_at, Escrow.id)
        .execution_options(yield_per=BATCH_ROWS)
    )
    async with database.engine.connect() as connection:
        result = await connection.stream(query)
        async for batch in result.partitions(BATCH_ROWS):
            yield batch


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, str) and value.startswith(_FORMULA_PREFIXES):
        return "'" + value
    return value


async def csv_stream(batches: AsyncIterator[Batch]) -> AsyncIterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(HEADER)
    yield buffer.getvalue().encode()
    async for batch in batches:
        buffer.seek(0)
        buffer.truncate()
        writer.writerows([_csv_cell(value) for value in row] for row in batch)
        yield buffer.getvalue().encode()


class _XlsxWriter:
    """One workbook on disk; rows are appended in constant memory, a new sheet every ``XLSX_MAX_ROWS``."""

    def __init__(self, path: str) -> None:
        import xlsxwriter  # lazy: only XLSX exports need it

        self.workbook = xlsxwriter.Workbook(
            path,
            {
                "constant_memory": True,
                "strings_to_formulas": False,
                "strings_to_urls": False,
                "strings_to_numbers": False,
                "remove_timezone": True,
            },
        )
        self.date_format = self.workbook.add_format({"num_format": "yyyy-mm-dd hh:mm:ss"})
        self.sheet: Any = None
        self.next_row = XLSX_MAX_ROWS

    def _new_sheet(self) -> None:
        self.sheet = self.workbook.add_worksheet(f"Escrows {len(self.workbook.worksheets()) + 1}")
        for column, name in enumerate(HEADER):
            self.sheet.write_string(0, column, name)
        self.next_row = 1

    def write(self, batch: Batch) -> None:
        for row in batch:
            if self.next_row >= XLSX_MAX_ROWS:
                self._new_sheet()
            for column, value in enumerate(row):
                if value is None:
                    continue
                if isinstance(value, datetime):
                    self.sheet.write_datetime(self.next_row, column, value, self.date_format)
                elif isinstance(value, str):
                    self.sheet.write_string(self.next_row, column, value)
                else:
                    self.sheet.write_number(self.next_row, column, value)
            self.next_row += 1

    def close(self) -> None:
        if self.sheet is None:
            self._new_sheet()  # an empty export still opens, with its header
        self.workbook.close()


async def xlsx_stream(batches: AsyncIterator[Batch]) -> AsyncIterator[bytes]:
    descriptor, path = tempfile.mkstemp(prefix="emanet-export-", suffix=".xlsx")
    os.close(descriptor)
    try:
        writer = _XlsxWriter(path)
        async for batch in batches:
            await anyio.to_thread.run_sync(writer.write, batch)
        await anyio.to_thread.run_sync(writer.close)
        async with await anyio.open_file(path, "rb") as finished:
            while chunk := await finished.read(FILE_CHUNK_BYTES):
                yield chunk
    finally:
        os.unlink(path)


EXPORTERS: dict[str, tuple[str, Callable[[AsyncIterator[Batch]], AsyncIterator[bytes]]]] = {
    "csv": ("text/csv; charset=utf-8", csv_stream),
    "xlsx": ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", xlsx_stream),
}
