"""Idempotency keys on jobs; the shared API request budget.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("idempotency_key", sa.String(200), nullable=True))
        batch.create_index("ix_jobs_idempotency_key", ["idempotency_key"], unique=True)
    budget = op.create_table(
        "api_budget",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used", sa.Integer(), nullable=False),
        sa.Column("blocked_until", sa.DateTime(timezone=True), nullable=True),
    )
    op.bulk_insert(budget, [{"name": "gemini", "window_start": datetime(1970, 1, 1, tzinfo=UTC), "used": 0}])


def downgrade() -> None:
    op.drop_table("api_budget")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_idempotency_key")
        batch.drop_column("idempotency_key")
