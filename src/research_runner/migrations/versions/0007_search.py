"""Full-text search over questions and report text: an FTS5 table kept in step by triggers on SQLite, a generated
`tsvector` column with a GIN index on PostgreSQL. Existing reports are indexed here (backfill).

The report's YAML front matter (ids, status, usage) is left out of the index: only the question and the text a
reader sees are searched. The SQL expressions are kept here, not imported, so this revision never changes.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The report minus a leading `---` front matter block, in each dialect's spelling of the same functions.
FUNCTIONS = {"sqlite": ("instr", "char"), "postgresql": ("strpos", "chr")}


def body(column: str, dialect: str) -> str:
    find, char = FUNCTIONS[dialect]
    end = f"{find}(substr({column}, 5), {char}(10) || '---')"
    starts = f"substr({column}, 1, 4) = '---' || {char}(10)"
    return (
        f"CASE WHEN {column} IS NULL THEN '' WHEN {starts} AND {end} > 0 "
        f"THEN substr({column}, {end} + 8) ELSE {column} END"
    )


# job_id is an indexed column so the triggers find a job's row through the index (a `job_id:"…"` match) instead
# of scanning the table; searches name the question and report columns only.
SQLITE_TABLE = (
    "CREATE VIRTUAL TABLE jobs_search USING fts5("
    "job_id, question, report, tokenize = 'porter unicode61 remove_diacritics 2')"
)
SQLITE_INSERT = "INSERT INTO jobs_search (job_id, question, report) SELECT {row}.id, {row}.question, {body}"
SQLITE_DELETE = "DELETE FROM jobs_search WHERE jobs_search MATCH 'job_id:\"' || old.id || '\"'"
NEW_ROW = SQLITE_INSERT.format(row="new", body=body("new.report_markdown", "sqlite"))
SQLITE_TRIGGERS = {
    "jobs_search_insert": f"AFTER INSERT ON jobs BEGIN {NEW_ROW}; END",
    "jobs_search_update": f"AFTER UPDATE OF question, report_markdown ON jobs BEGIN {SQLITE_DELETE}; {NEW_ROW}; END",
    "jobs_search_delete": f"AFTER DELETE ON jobs BEGIN {SQLITE_DELETE}; END",
}
SQLITE_BACKFILL = SQLITE_INSERT.format(row="jobs", body=body("jobs.report_markdown", "sqlite")) + " FROM jobs"

# Texts are cut before to_tsvector: a tsvector holds at most 1 MB, and a report past that must still be stored.
PG_VECTOR = (
    "setweight(to_tsvector('english'::regconfig, left(coalesce(question, ''), 20000)), 'A') || "
    f"setweight(to_tsvector('english'::regconfig, left({body('report_markdown', 'postgresql')}, 300000)), 'B')"
)


# The jobs page lists newest first: without this index every page sorts the whole table.
NEWEST_INDEX = "CREATE INDEX ix_jobs_search_newest ON jobs (created_at DESC, id DESC)"


def upgrade() -> None:
    op.execute(NEWEST_INDEX)
    if op.get_bind().dialect.name == "sqlite":
        op.execute(SQLITE_TABLE)
        for name, trigger in SQLITE_TRIGGERS.items():
            op.execute(f"CREATE TRIGGER {name} {trigger}")
        op.execute(SQLITE_BACKFILL)
        return
    # A stored generated column: filled for every existing row by this ALTER (the backfill), and by PostgreSQL
    # itself on every insert or update, so no code that stores a report needs to know about it.
    op.execute(f"ALTER TABLE jobs ADD COLUMN search_vector tsvector GENERATED ALWAYS AS ({PG_VECTOR}) STORED")
    op.execute("CREATE INDEX ix_jobs_search_vector ON jobs USING gin (search_vector)")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_jobs_search_newest")
    if op.get_bind().dialect.name == "sqlite":
        for name in SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        op.execute("DROP TABLE IF EXISTS jobs_search")
        return
    op.execute("DROP INDEX IF EXISTS ix_jobs_search_vector")
    op.execute("ALTER TABLE jobs DROP COLUMN IF EXISTS search_vector")
