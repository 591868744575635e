"""Integrity: where each interaction lives, reports waiting to be written, failures of schedules and digests,
and a batch's order.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as jobs:
        jobs.add_column(sa.Column("api_endpoint", sa.String(255), nullable=True))
        jobs.add_column(sa.Column("report_error", sa.Text(), nullable=True))
        jobs.add_column(sa.Column("batch_position", sa.Integer(), nullable=True))
    with op.batch_alter_table("schedules") as schedules:
        schedules.add_column(sa.Column("last_error", sa.Text(), nullable=True))
        schedules.add_column(sa.Column("failures", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("batches") as batches:
        batches.add_column(sa.Column("digest_error", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("batches") as batches:
        batches.drop_column("digest_error")
    with op.batch_alter_table("schedules") as schedules:
        schedules.drop_column("failures")
        schedules.drop_column("last_error")
    with op.batch_alter_table("jobs") as jobs:
        jobs.drop_column("batch_position")
        jobs.drop_column("report_error")
        jobs.drop_column("api_endpoint")
