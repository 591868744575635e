"""What the API delivers and how a user talks to it: agent_config, usage and cost, charts, plan review and
follow-up threads, input files, and deletions.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JOB_COLUMNS = (
    ("agent_config", sa.Text()),
    ("next_input", sa.Text()),
    ("previous_interaction_id", sa.String(255)),
    ("parent_id", sa.String(32)),
    ("plan_markdown", sa.Text()),
    ("usage_json", sa.Text()),
    ("cost_usd", sa.Float()),
    ("figures", sa.Text()),
    ("files", sa.Text()),
    ("remote_deleted_at", sa.DateTime(timezone=True)),
    ("local_deleted_at", sa.DateTime(timezone=True)),
)


def upgrade() -> None:
    with op.batch_alter_table("jobs") as jobs:
        for name, kind in JOB_COLUMNS:
            jobs.add_column(sa.Column(name, kind, nullable=True))
        jobs.create_index("ix_jobs_parent_id", ["parent_id"])
    op.create_table(
        "job_turns",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(32), nullable=False, index=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("input", sa.Text(), nullable=True),
        sa.Column("interaction_id", sa.String(255), nullable=True),
        sa.Column("api_endpoint", sa.String(255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "job_files",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(32), nullable=False, index=True),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("mime_type", sa.String(100), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
    )
    op.create_table(
        "figures",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(32), nullable=False, index=True),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("mime_type", sa.String(100), nullable=True),
        sa.Column("data", sa.LargeBinary(), nullable=True),
        sa.Column("path", sa.Text(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("figures")
    op.drop_table("job_files")
    op.drop_table("job_turns")
    with op.batch_alter_table("jobs") as jobs:
        jobs.drop_index("ix_jobs_parent_id")
        for name, _ in reversed(JOB_COLUMNS):
            jobs.drop_column(name)
