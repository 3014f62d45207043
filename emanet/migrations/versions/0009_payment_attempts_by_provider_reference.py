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


def upgrade() -> None:
    op.create_index("ix_payment_attempts_provider_reference", "payment_attempts", ["provider_reference"])


def downgrade() -> None:
    op.drop_index("ix_payment_attempts_provider_reference", table_name="payment_attempts")
