"""an index of the conversations with unread texts

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 13:00:00.000000

A partial index: counting the conversations with unread texts (the panel's tab title) reads only
those, however many conversations there are.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the index."""
    op.create_index(
        "ix_contacts_unread",
        "contacts",
        ["unread_count"],
        sqlite_where=sa.text("unread_count > 0"),
        postgresql_where=sa.text("unread_count > 0"),
    )


def downgrade() -> None:
    """Drop the index."""
    op.drop_index("ix_contacts_unread", table_name="contacts")
