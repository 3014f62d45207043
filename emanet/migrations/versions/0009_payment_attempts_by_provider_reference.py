"""payments: attempts are found by the provider's reference alone in one index probe

Revision ID: 0009
Revises: 0006
Create Date: 2026-12-03 15:30:00

A provider's webhook and the browser's return (``GET /payments/verify/{reference}``) find the attempt by
the provider's reference or by our attempt key. The only index with the reference led with the provider, so
the lookup without a provider read every attempt (a sequential scan), and the webhook's, with the provider,
read every attempt of that provider from the index: 298 buffer reads per webhook after 560 payments in the
benchmark, growing with every payment. With the reference indexed on its own, each side of the OR is one
index probe.
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0006"
branch_labels = None
depends_on = None


INDEX = "ix_payment_attempts_provider_reference"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # CONCURRENTLY, outside the migration's transaction: a plain CREATE INDEX would hold back every new
        # payment attempt until a large table is indexed.
        with op.get_context().autocommit_block():
            op.create_index(INDEX, "payment_attempts", ["provider_reference"], postgresql_concurrently=True)
    else:
        op.create_index(INDEX, "payment_attempts", ["provider_reference"])


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        with op.get_context().autocommit_block():
            op.drop_index(INDEX, table_name="payment_attempts", postgresql_concurrently=True)
    else:
        op.drop_index(INDEX, table_name="payment_attempts")
