"""ledger: the balance trigger's query never JIT-compiles

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 11:40:00

The trigger's query reads one entry and its postings by index, well under a millisecond. But PL/pgSQL plans
it with the table statistics of the moment, and once ``ledger_postings`` had grown by a large batch before
autovacuum analysed it, the planner guessed thousands of postings per entry: the plan's cost passed
``jit_above_cost`` and every posting statement compiled it with LLVM first, 12-40 ms each. Single
transfers fell from about 2,000/s to 140/s (benchmark, after 530,000 batched entries). JIT never pays off
for a query this small, so the function runs with ``jit = off`` whatever the server's setting.
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER FUNCTION ledger_check_entries_balanced() SET jit = off")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER FUNCTION ledger_check_entries_balanced() RESET jit")
