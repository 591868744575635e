"""Search and list latency of `research web` over 10,000 synthetic reports (issue 15).

    uv run python benchmarks/web_search.py                      # embedded SQLite in a temporary folder
    uv run python benchmarks/web_search.py --postgres postgresql://127.0.0.1:5432/test   # also a throw-away PG db

Fills the database through the real migrations (so the FTS5 triggers / generated tsvector index every row as it
is inserted), then times, in this process: the search module for rare, medium and common words; a LIKE scan as
the baseline; and the list, job and search pages through the Starlette app (in-process ASGI client, no network).
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import sqlalchemy as sa
from starlette.testclient import TestClient

from research_runner import db
from research_runner.settings import Settings, load_settings
from research_runner.web.app import create_app
from research_runner.web.search import search

AGENT = "deep-research-preview-04-2026"
STATUSES = ["completed"] * 8 + ["failed", "running"]


def vocabulary(rng: random.Random, size: int) -> list[str]:
    syllables = ["ka", "lo", "mi", "ne", "ru", "ta", "vo", "shi", "pe", "dra", "gon", "li", "qu", "zen", "bor"]
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))))
    return sorted(words)


def report(rng: random.Random, words: list[str], weights: list[float], number: int) -> tuple[str, str]:
    question = " ".join(rng.choices(words, weights, k=12)).capitalize() + "?"
    paragraphs = [" ".join(rng.choices(words, weights, k=90)) + "." for _ in range(7)]
    paragraphs[3] += f" marker{number:05d}"  # one word only this report's body holds
    sources = "\n".join(f"{i}. [Source {i}](<https://example.org/{number}/{i}>)" for i in range(1, 6))
    body = "\n\n".join(paragraphs)
    front = f"---\ntitle: Report {number}\nquestion: {question}\nstatus: completed\n---\n\n"
    return question, f"{front}# Report {number}\n\n{body}\n\n## Sources\n\n{sources}\n"


def fill(settings: Settings, count: int, seed: int = 15) -> float:
    rng = random.Random(seed)
    words = vocabulary(rng, 6000)
    weights = [1 / (rank + 1) for rank in range(len(words))]  # Zipf: a few very common words, many rare ones
    start, base = time.perf_counter(), datetime(2026, 1, 1, tzinfo=UTC)
    insert = sa.text(
        "INSERT INTO jobs (id, question, agent, status, created_at, poll_count, report_title, report_markdown) "
        "VALUES (:id, :question, :agent, :status, :created_at, 0, :title, :report)"
    )
    engine = db.get_engine(settings.database_url)
    for at in range(0, count, 1000):
        rows = []
        for number in range(at, min(at + 1000, count)):
            question, text = report(rng, words, weights, number)
            created = base + timedelta(minutes=number)
            rows.append({"id": uuid.uuid4().hex, "question": question, "agent": AGENT, "title": f"Report {number}",
                         "status": rng.choice(STATUSES), "created_at": created, "report": text})  # fmt: skip
        with engine.begin() as conn:
            conn.execute(insert, rows)
    return time.perf_counter() - start


def timed(action: Callable[[], object], repeat: int) -> tuple[float, float]:
    action()  # warm caches once
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return statistics.median(samples), samples[max(0, int(len(samples) * 0.95) - 1)]


def measure(settings: Settings, label: str, repeat: int) -> list[tuple[str, float, float]]:
    engine = db.get_engine(settings.database_url)
    like = sa.text(
        "SELECT id FROM jobs WHERE question LIKE :w OR report_markdown LIKE :w ORDER BY created_at DESC LIMIT 20"
    )
    with engine.connect() as conn:
        common = conn.execute(sa.text("SELECT question FROM jobs LIMIT 1")).scalar_one().split()[0].lower()
    rare_numbers = iter(range(10**9))
    rows = [
        (f"{label} search rare word (1 hit)", lambda: search(settings, f"marker{next(rare_numbers) % 10000:05d}")),
        (f"{label} search common word", lambda: search(settings, common)),
        (f"{label} search two common words", lambda: search(settings, f"{common} kaka")),
        (f"{label} baseline LIKE rare word", lambda: _run(engine, like, {"w": "%marker04242%"})),
    ]
    client = TestClient(create_app(settings, no_auth=True))
    rows += [
        (f"{label} GET /jobs (page 1)", lambda: _ok(client.get("/jobs"))),
        (f"{label} GET /jobs?status=completed&page=100", lambda: _ok(client.get("/jobs?status=completed&page=100"))),
        (f"{label} GET /search?q=marker04242", lambda: _ok(client.get("/search?q=marker04242"))),
    ]
    return [(name, *timed(action, repeat)) for name, action in rows]


def _run(engine: sa.Engine, statement: sa.TextClause, params: dict[str, str]) -> None:
    with engine.connect() as conn:
        conn.execute(statement, params).all()


def _ok(response: object) -> None:
    assert getattr(response, "status_code", 0) == 200


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reports", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=100)
    parser.add_argument("--postgres", help="admin URL of a PostgreSQL server; a throw-away database is made there")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as folder:
        sqlite = load_settings(data_dir=folder, reports_dir=str(Path(folder) / "reports"))
        db.upgrade(sqlite)
        print(f"SQLite: {args.reports} reports stored and indexed in {fill(sqlite, args.reports):.1f} s")
        results += measure(sqlite, "SQLite", args.repeat)
        if args.postgres:
            results += _postgres(args.postgres, args.reports, args.repeat, folder)
    print(f"\n{'what':<52} {'p50 ms':>8} {'p95 ms':>8}")
    for name, p50, p95 in results:
        print(f"{name:<52} {p50:>8.2f} {p95:>8.2f}")


def _postgres(admin_url: str, count: int, repeat: int, folder: str) -> list[tuple[str, float, float]]:
    name = f"rr_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        settings = load_settings(database_url=f"{admin_url.rsplit('/', 1)[0]}/{name}", data_dir=folder)
        db.upgrade(settings)
        print(f"PostgreSQL: {count} reports stored and indexed in {fill(settings, count):.1f} s")
        with db.get_engine(settings.database_url).begin() as conn:
            conn.execute(sa.text("ANALYZE jobs"))
        return measure(settings, "PostgreSQL", repeat)
    finally:
        db.dispose_engines()
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
