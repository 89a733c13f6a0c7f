"""automation: the mode an operator chose, and when the auto-reply may answer

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 12:00:00.000000

`reply_mode.chosen` tells a mode chosen in the panel or the API from one that only follows the
settings (nothing chosen yet). The auto-reply answers a conversation at most once per
`window_hours` (0: every text), and, with `outside_hours_only`, only outside `business_hours`
(a weekly schedule in a time zone).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the columns, with defaults that existing rows take."""
    with op.batch_alter_table("reply_mode", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("chosen", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("auto_reply_config", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("window_hours", sa.Integer(), nullable=False, server_default="12")
        )
        batch_op.add_column(
            sa.Column("outside_hours_only", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(sa.Column("business_hours", sa.JSON(), nullable=True))


def downgrade() -> None:
    """Drop the columns."""
    with op.batch_alter_table("auto_reply_config", schema=None) as batch_op:
        batch_op.drop_column("business_hours")
        batch_op.drop_column("outside_hours_only")
        batch_op.drop_column("window_hours")
    with op.batch_alter_table("reply_mode", schema=None) as batch_op:
        batch_op.drop_column("chosen")
