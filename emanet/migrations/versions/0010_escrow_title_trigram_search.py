"""escrows: the title search is served by a trigram index

Revision ID: 0010
Revises: 0008
Create Date: 2026-12-03 19:30:00

The escrow lists' ``q`` matches a substring of the title (``lower(title) LIKE '%term%'``), which the B-tree
on ``lower(title)`` cannot serve: the admin's search read every escrow (80,038 buffers, 1.2 s on 1,000,000
escrows) and a marketplace store's search of its own 200,000 escrows read all of them (84,488 buffers,
0.6 s; docs/plans.md). A GIN trigram index (``pg_trgm``, a trusted extension any database owner may
create) finds the titles holding the term. The B-tree served nothing else, so it goes: no other query
compares ``lower(title)``. SQLite has no trigram index; its B-tree goes too.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        # CONCURRENTLY, outside the migration's transaction: escrows keep being created while it builds.
        with op.get_context().autocommit_block():
            op.create_index(
                "ix_escrows_title_trgm",
                "escrows",
                [sa.text("lower(title) gin_trgm_ops")],
                postgresql_using="gin",
                postgresql_concurrently=True,
            )
            op.drop_index("ix_escrows_title_lower", table_name="escrows", postgresql_concurrently=True)
    else:
        op.drop_index("ix_escrows_title_lower", table_name="escrows")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        with op.get_context().autocommit_block():
            op.create_index(
                "ix_escrows_title_lower", "escrows", [sa.text("lower(title)")], postgresql_concurrently=True
            )
            op.drop_index("ix_escrows_title_trgm", table_name="escrows", postgresql_concurrently=True)
    else:
        op.create_index("ix_escrows_title_lower", "escrows", [sa.text("lower(title)")])
