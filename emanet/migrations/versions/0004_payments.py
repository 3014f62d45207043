"""payments: payments and their provider attempts, refunds, saved cards, payouts, provider events,
reconciliation reports

Revision ID: 0004
Revises: 0001
Depends on: 0002 (escrows)
Create Date: 2026-11-22 00:36:20
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import emanet.core.db

revision = "0004"
down_revision = "0001"
branch_labels = None
depends_on = ("0002",)


def upgrade() -> None:
    op.create_table(
        "provider_events",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("provider", sa.String(length=20), nullable=False),
        sa.Column("event_id", sa.String(length=200), nullable=False),
        sa.Column("type", sa.String(length=100), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=True),
        sa.Column("object_reference", sa.String(length=200), nullable=True),
        sa.Column("outcome", sa.String(length=24), nullable=False),
        sa.Column("detail", sa.String(length=300), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("received_at", emanet.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_provider_events")),
        sa.UniqueConstraint("provider", "event_id", name="uq_provider_events_provider_event"),
    )
    with op.batch_alter_table("provider_events", schema=None) as batch_op:
        batch_op.create_index("ix_provider_events_reference", ["provider", "object_reference"], unique=False)

    op.create_table(
        "reconciliation_reports",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("provider", sa.String(length=20), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("provider_records", sa.Integer(), nullable=False),
        sa.Column("our_records", sa.Integer(), nullable=False),
        sa.Column("matched", sa.Integer(), nullable=False),
        sa.Column("missing", sa.Integer(), nullable=False),
        sa.Column("extra", sa.Integer(), nullable=False),
        sa.Column("mismatched", sa.Integer(), nullable=False),
        sa.Column("items", sa.JSON(), nullable=False),
        sa.Column("requested_by", sa.String(length=40), nullable=True),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column("created_at", emanet.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reconciliation_reports")),
    )
    with op.batch_alter_table("reconciliation_reports", schema=None) as batch_op:
        batch_op.create_index(
            "ix_reconciliation_reports_provider_day", ["provider", "day", "created_at"], unique=False
        )

    op.create_table(
        "payouts",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("user_id", sa.String(length=40), nullable=False),
        sa.Column("provider", sa.String(length=20), nullable=False),
        sa.Column("amount", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("destination", sa.JSON(), nullable=False),
        sa.Column("provider_reference", sa.String(length=200), nullable=True),
        sa.Column("failure_message", sa.String(length=300), nullable=True),
        sa.Column("last_checked_at", emanet.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("settled_at", emanet.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", emanet.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", emanet.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_payouts_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payouts")),
        sa.UniqueConstraint("provider", "provider_reference", name="uq_payouts_provider_reference"),
    )
    with op.batch_alter_table("payouts", schema=None) as batch_op:
        batch_op.create_index("ix_payouts_status_checked", ["status", "last_checked_at"], unique=False)
        batch_op.create_index("ix_payouts_user_created", ["user_id", "created_at", "id"], unique=False)

    op.create_table(
        "saved_cards",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("user_id", sa.String(length=40), nullable=False),
        sa.Column("provider", sa.String(length=20), nullable=False),
        sa.Column("token", sa.String(length=200), nullable=False),
        sa.Column("brand", sa.String(length=20), nullable=False),
        sa.Column("last4", sa.String(length=4), nullable=False),
        sa.Column("exp_month", sa.Integer(), nullable=True),
        sa.Column("exp_year", sa.Integer(), nullable=True),
        sa.Column("created_at", emanet.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_saved_cards_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_saved_cards")),
        sa.UniqueConstraint("provider", "token", name="uq_saved_cards_provider_token"),
    )
    with op.batch_alter_table("saved_cards", schema=None) as batch_op:
        batch_op.create_index("ix_saved_cards_user", ["user_id", "created_at"], unique=False)

    op.create_table(
        "payments",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("escrow_id", sa.String(length=40), nullable=False),
        sa.Column("payer_id", sa.String(length=40), nullable=False),
        sa.Column("provider", sa.String(length=20), nullable=False),
        sa.Column("method", sa.String(length=20), nullable=False),
        sa.Column("amount", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("captured_amount", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("refunded_amount", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("fee", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("provider_reference", sa.String(length=200), nullable=True),
        sa.Column("next_action", sa.JSON(), nullable=True),
        sa.Column("return_url", sa.String(length=2000), nullable=False),
        sa.Column("save_card", sa.Boolean(), nullable=False),
        sa.Column("saved_card_id", sa.String(length=40), nullable=True),
        sa.Column("card_brand", sa.String(length=20), nullable=True),
        sa.Column("card_last4", sa.String(length=4), nullable=True),
        sa.Column("failure_code", sa.String(length=64), nullable=True),
        sa.Column("failure_message", sa.String(length=300), nullable=True),
        sa.Column("last_checked_at", emanet.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("succeeded_at", emanet.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", emanet.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", emanet.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["escrow_id"], ["escrows.id"], name=op.f("fk_payments_escrow_id_escrows")),
        sa.ForeignKeyConstraint(["payer_id"], ["users.id"], name=op.f("fk_payments_payer_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payments")),
    )
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.create_index("ix_payments_escrow", ["escrow_id", "created_at"], unique=False)
        batch_op.create_index("ix_payments_payer_created", ["payer_id", "created_at", "id"], unique=False)
        batch_op.create_index("ix_payments_status_checked", ["status", "last_checked_at"], unique=False)

    op.create_table(
        "payment_attempts",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("payment_id", sa.String(length=40), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(length=20), nullable=False),
        sa.Column("provider_reference", sa.String(length=200), nullable=True),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("failure_code", sa.String(length=64), nullable=True),
        sa.Column("failure_message", sa.String(length=300), nullable=True),
        sa.Column("created_at", emanet.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", emanet.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["payment_id"], ["payments.id"], name=op.f("fk_payment_attempts_payment_id_payments")
        ),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_payment_attempts")),
        sa.UniqueConstraint("payment_id", "number", name="uq_payment_attempts_payment_number"),
        sa.UniqueConstraint("provider", "provider_reference", name="uq_payment_attempts_provider_reference"),
    )
    op.create_table(
        "payment_refunds",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("payment_id", sa.String(length=40), nullable=False),
        sa.Column("escrow_id", sa.String(length=40), nullable=False),
        sa.Column("escrow_reference", sa.String(length=200), nullable=False),
        sa.Column("idempotency_key", sa.String(length=250), nullable=False),
        sa.Column("provider", sa.String(length=20), nullable=False),
        sa.Column("amount", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("provider_reference", sa.String(length=200), nullable=True),
        sa.Column("failure_message", sa.String(length=300), nullable=True),
        sa.Column("requested_by", sa.String(length=40), nullable=True),
        sa.Column("reason", sa.String(length=2000), nullable=True),
        sa.Column("succeeded_at", emanet.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", emanet.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", emanet.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["escrow_id"], ["escrows.id"], name=op.f("fk_payment_refunds_escrow_id_escrows")
        ),
        sa.ForeignKeyConstraint(
            ["payment_id"], ["payments.id"], name=op.f("fk_payment_refunds_payment_id_payments")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_refunds")),
        sa.UniqueConstraint("escrow_reference", "payment_id", name="uq_payment_refunds_reference_payment"),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_payment_refunds_idempotency_key")),
        sa.UniqueConstraint("provider", "provider_reference", name="uq_payment_refunds_provider_reference"),
    )
    with op.batch_alter_table("payment_refunds", schema=None) as batch_op:
        batch_op.create_index("ix_payment_refunds_payment", ["payment_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("payment_refunds", schema=None) as batch_op:
        batch_op.drop_index("ix_payment_refunds_payment")

    op.drop_table("payment_refunds")
    op.drop_table("payment_attempts")
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.drop_index("ix_payments_status_checked")
        batch_op.drop_index("ix_payments_payer_created")
        batch_op.drop_index("ix_payments_escrow")

    op.drop_table("payments")
    with op.batch_alter_table("saved_cards", schema=None) as batch_op:
        batch_op.drop_index("ix_saved_cards_user")

    op.drop_table("saved_cards")
    with op.batch_alter_table("payouts", schema=None) as batch_op:
        batch_op.drop_index("ix_payouts_user_created")
        batch_op.drop_index("ix_payouts_status_checked")

    op.drop_table("payouts")
    with op.batch_alter_table("reconciliation_reports", schema=None) as batch_op:
        batch_op.drop_index("ix_reconciliation_reports_provider_day")

    op.drop_table("reconciliation_reports")
    with op.batch_alter_table("provider_events", schema=None) as batch_op:
        batch_op.drop_index("ix_provider_events_reference")

    op.drop_table("provider_events")
