"""Create the jobs table.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _when(name: str) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=True)


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("question", sa.Text(), nullable=False),
        sa.Column("agent", sa.String(100), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("remote_status", sa.String(64), nullable=True),
        sa.Column("interaction_id", sa.String(255), nullable=True),
        sa.Column("retry_of", sa.String(32), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        _when("submitted_at"),
        _when("finished_at"),
        _when("updated_at"),
        sa.Column("poll_count", sa.Integer(), nullable=False, server_default="0"),
        _when("next_poll_at"),
        _when("lease_until"),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("last_thought", sa.Text(), nullable=True),
        sa.Column("input_tokens", sa.Integer(), nullable=True),
        sa.Column("output_tokens", sa.Integer(), nullable=True),
        sa.Column("thought_tokens", sa.Integer(), nullable=True),
        sa.Column("total_tokens", sa.Integer(), nullable=True),
        sa.Column("report_title", sa.Text(), nullable=True),
        sa.Column("report_path", sa.Text(), nullable=True),
        sa.Column("report_markdown", sa.Text(), nullable=True),
    )
    op.create_index("ix_jobs_status", "jobs", ["status"])
    op.create_index("ix_jobs_interaction_id", "jobs", ["interaction_id"])
    op.create_index("ix_jobs_next_poll_at", "jobs", ["next_poll_at"])


def downgrade() -> None:
    op.drop_table("jobs")
