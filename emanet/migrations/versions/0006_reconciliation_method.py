"""payments: how a reconciliation report was made (provider listing or per-record lookups) and how many of
our records the provider could not be asked about

Revision ID: 0006
Revises: 0004
Create Date: 2026-11-22 01:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Every report stored before this revision came from a settlement listing and had nothing unverified;
    # the server defaults fill those rows in and are dropped again (the model sets both on insert).
    with op.batch_alter_table("reconciliation_reports", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("method", sa.String(length=16), nullable=False, server_default="listing")
        )
        batch_op.add_column(sa.Column("unverified", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("reconciliation_reports", schema=None) as batch_op:
        batch_op.alter_column("method", server_default=None)
        batch_op.alter_column("unverified", server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("reconciliation_reports", schema=None) as batch_op:
        batch_op.drop_column("unverified")
        batch_op.drop_column("method")
