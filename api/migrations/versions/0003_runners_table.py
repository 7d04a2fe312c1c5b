"""The runners table: each runner and when it was last seen (``/readyz``).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "regtune_runners",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(), nullable=False),
        sa.Column("job_id", sa.String(32), nullable=True),
    )
    op.create_index("ix_regtune_runners_last_seen", "regtune_runners", ["last_seen_at"])


def downgrade() -> None:
    op.drop_index("ix_regtune_runners_last_seen", table_name="regtune_runners")
    op.drop_table("regtune_runners")
