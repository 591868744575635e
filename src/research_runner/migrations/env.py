"""Alembic environment: the connection is always handed in by research_runner.db."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import research_runner.models  # noqa: F401  (registers the tables on SQLModel.metadata)
from research_runner.web.search import include_object  # the full-text index is not part of the models

connection = context.config.attributes["connection"]
context.configure(
    connection=connection, target_metadata=SQLModel.metadata, render_as_batch=True, include_object=include_object
)
with context.begin_transaction():
    context.run_migrations()
