"""providers: the sandbox provider's own tables (its fake bank's ledger)

Revision ID: 0003
Revises: 0001
Create Date: 2026-11-22 00:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import emanet.core.db

revision = "0003"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sandbox_cards",
        sa.Column("token", sa.String(length=40), nullable=False),
        sa.Column("brand", sa.String(length=20), nullable=False),
        sa.Column("last4", sa.String(length=4), nullable=False),
        sa.Column("exp_month", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("exp_year", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("created_at", emanet.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("token", name=op.f("pk_sandbox_cards")),
    )
    op.create_table(
        "sandbox_payouts",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("payout_id", sa.String(length=64), nullable=False),
        sa.Column("amount", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("destination_type", sa.String(length=20), nullable=False),
        sa.Column("destination_last4", sa.String(length=4), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("failure_message", sa.String(length=300), nullable=True),
        sa.Column("settles_at", emanet.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("settled_at", emanet.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", emanet.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", emanet.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sandbox_payouts")),
        sa.UniqueConstraint("payout_id", name=op.f("uq_sandbox_payouts_payout_id")),
    )
    with op.batch_alter_table("sandbox_payouts", schema=None) as batch_op:
        batch_op.create_index("ix_sandbox_payouts_status_settles_at", ["status", "settles_at"], unique=False)

    op.create_table(
        "sandbox_charges",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("payment_id", sa.String(length=64), nullable=False),
        sa.Column("amount", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=False),
        sa.Column("return_url", sa.String(length=2000), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("three_d_secure_pending", sa.Boolean(), nullable=False),
        sa.Column("save_card", sa.Boolean(), nullable=False),
        sa.Column("failure_code", sa.String(length=64), nullable=True),
        sa.Column("failure_message", sa.String(length=300), nullable=True),
        sa.Column("card_brand", sa.String(length=20), nullable=True),
        sa.Column("card_last4", sa.String(length=4), nullable=True),
        sa.Column("card_exp_month", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("card_exp_year", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("card_token", sa.String(length=40), nullable=True),
        sa.Column("fee", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("refunded_amount", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("succeeded_at", emanet.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("created_at", emanet.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", emanet.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["card_token"], ["sandbox_cards.token"], name=op.f("fk_sandbox_charges_card_token_sandbox_cards")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sandbox_charges")),
        sa.UniqueConstraint("payment_id", name=op.f("uq_sandbox_charges_payment_id")),
    )
    op.create_table(
        "sandbox_refunds",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("charge_id", sa.String(length=40), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=False),
        sa.Column("amount", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", emanet.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["charge_id"], ["sandbox_charges.id"], name=op.f("fk_sandbox_refunds_charge_id_sandbox_charges")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sandbox_refunds")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_sandbox_refunds_idempotency_key")),
    )
    with op.batch_alter_table("sandbox_refunds", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sandbox_refunds_charge_id"), ["charge_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("sandbox_refunds", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sandbox_refunds_charge_id"))
    op.drop_table("sandbox_refunds")
    op.drop_table("sandbox_charges")
    with op.batch_alter_table("sandbox_payouts", schema=None) as batch_op:
        batch_op.drop_index("ix_sandbox_payouts_status_settles_at")
    op.drop_table("sandbox_payouts")
    op.drop_table("sandbox_cards")
