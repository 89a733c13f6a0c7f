"""the sandbox leaves the app's schema: its tables are dropped

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 10:00:00.000000

The built-in sandbox imitates another company's service (Twilio); it keeps its state in a store
of its own (sandbox.db beside the app's data, see twilio_chat.sandbox.store), so a production
database holds no sandbox tables. What the old tables held was the emulator's record of sends in
sandbox mode, not the app's data: it is dropped, not copied.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Drop the sandbox's tables."""
    with op.batch_alter_table("sandbox_messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sandbox_messages_to_number"))
        batch_op.drop_index("ix_sandbox_messages_created")
    op.drop_table("sandbox_messages")
    op.drop_table("sandbox_opt_outs")
    op.drop_table("sandbox_faults")


def downgrade() -> None:
    """Create the sandbox's tables again, empty."""
    when = sa.DateTime(timezone=True)
    op.create_table(
        "sandbox_faults",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("remaining", sa.Integer(), nullable=False),
        sa.Column("error_code", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sandbox_faults")),
    )
    op.create_table(
        "sandbox_messages",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("sid", sa.String(length=34), nullable=False),
        sa.Column("account_sid", sa.String(length=34), nullable=False),
        sa.Column("messaging_service_sid", sa.String(length=34), nullable=True),
        sa.Column("from_number", sa.String(length=34), nullable=True),
        sa.Column("to_number", sa.String(length=34), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("media_urls", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("direction", sa.String(length=16), nullable=False),
        sa.Column("num_segments", sa.Integer(), nullable=False),
        sa.Column("error_code", sa.Integer(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("status_callback", sa.Text(), nullable=True),
        sa.Column("content_sid", sa.String(length=34), nullable=True),
        sa.Column("date_created", when, nullable=False),
        sa.Column("date_updated", when, nullable=False),
        sa.Column("date_sent", when, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sandbox_messages")),
        sa.UniqueConstraint("sid", name=op.f("uq_sandbox_messages_sid")),
    )
    with op.batch_alter_table("sandbox_messages", schema=None) as batch_op:
        batch_op.create_index("ix_sandbox_messages_created", ["date_created"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_sandbox_messages_to_number"), ["to_number"], unique=False
        )
    op.create_table(
        "sandbox_opt_outs",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("sender", sa.String(length=34), nullable=False),
        sa.Column("number", sa.String(length=34), nullable=False),
        sa.Column("created_at", when, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sandbox_opt_outs")),
        sa.UniqueConstraint("sender", "number", name="uq_sandbox_opt_outs_pair"),
    )
