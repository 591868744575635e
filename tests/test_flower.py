"""Flower on real Redis with a real worker: research tasks show their job, question and result, behind a login,
and the API key shows up nowhere (worker log, database, reports, Flower's pages and API)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner
from server_support import ServerProcess
from sqlalchemy import inspect, text

from research_runner import db, store
from research_runner.cli import cli
from research_runner.models import Job
from research_runner.settings import Settings
from research_runner.worker import task_label

from conftest import FAST_POLICY, REDIS_URL, WorkerProcess, settings_from, wait_for
from emulator_support import EmulatorHandle

CANARY_KEY = "AIzaFAKE-secret-canary-1234567890"
FLOWER_LOGIN = ("watcher", "flower-pass-42")
CHROMIUM = "/usr/bin/chromium"
QUESTION = "How do heat pumps cope with very cold winters? [[emulator duration=0.5]]"


class FlowerProcess(ServerProcess):
    """`research flower` as a real child process on a free port."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        super().__init__("flower", env, log_path)

    def get(self, path: str, login: tuple[str, str] | None = FLOWER_LOGIN) -> tuple[int, str]:
        status, _, body = self.request(path, login)
        return status, body.decode()

    def tasks(self, name: str) -> dict[str, dict[str, Any]]:
        status, body = self.get(f"/api/tasks?taskname={name}")
        return json.loads(body) if status == 200 else {}


@dataclass
class Stack:
    settings: Settings
    env: dict[str, str]
    worker: WorkerProcess
    flower: FlowerProcess
    job: Job
    tmp_path: Path


def test_flower_refuses_to_start_open_or_on_the_embedded_broker(runner_env: dict[str, str], redis_url: str) -> None:
    embedded = CliRunner().invoke(cli, ["flower"], env={**runner_env, "RESEARCH_FLOWER_BASIC_AUTH": "a:b"})
    assert (embedded.exit_code, embedded.stdout) == (2, "")
    assert embedded.stderr == (
        "Error: Flower needs a broker with fanout (Redis or RabbitMQ) and the embedded SQLite "
        "broker has none; set RESEARCH_BROKER_URL, e.g. redis://127.0.0.1:6379/0\n"
    )
    open_flower = CliRunner().invoke(cli, ["flower"], env={**runner_env, "RESEARCH_BROKER_URL": redis_url})
    assert (open_flower.exit_code, open_flower.stdout) == (2, "")
    assert open_flower.stderr == (
        "Error: Flower would be open to anyone who can reach it: set "
        "RESEARCH_FLOWER_BASIC_AUTH=user:password, or pass --no-auth to run it without a "
        "login\n"
    )
    bad = CliRunner().invoke(cli, ["flower"], env={**runner_env, "RESEARCH_FLOWER_BASIC_AUTH": "no-colon-secret"})
    assert bad.exit_code == 2 and "no-colon-secret" not in bad.output
    assert bad.stderr == (
        "Error: invalid setting RESEARCH_FLOWER_BASIC_AUTH: must be user:password (several separated by commas)\n"
    )


@pytest.fixture(scope="module")
def stack(emulator_process: EmulatorHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Redis, a worker, Flower, and one research job run through them to its end, all with the canary key.

    Module-scoped, so both tests below look at the same run instead of starting the stack twice.
    """
    tmp_path = tmp_path_factory.mktemp("flower-stack")
    redis.Redis.from_url(REDIS_URL).flushdb()
    env = {
        "RESEARCH_DATA_DIR": str(tmp_path / "data"),
        "RESEARCH_REPORTS_DIR": str(tmp_path / "reports"),
        "RESEARCH_GEMINI_BASE_URL": emulator_process.url,
        **FAST_POLICY,
        "RESEARCH_BROKER_URL": REDIS_URL,
        "GEMINI_API_KEY": CANARY_KEY,
        "RESEARCH_FLOWER_BASIC_AUTH": ":".join(FLOWER_LOGIN),
    }
    with pytest.MonkeyPatch.context() as monkeypatch:  # the environment is restored at once: tests share it
        settings = settings_from(env, monkeypatch)
    flower = FlowerProcess(env, tmp_path / "flower.log")
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        # Flower only sees events sent while it listens, and switches the worker's task events on when it
        # connects: wait until the worker says so.
        wait_for(lambda: "enabled by remote" in worker.log(), 30, "Flower to switch the worker's task events on")
        submitted = CliRunner().invoke(cli, ["submit", "--json", QUESTION], env=env)
        assert submitted.exit_code == 0, submitted.output
        job_id = json.loads(submitted.stdout)["id"]
        job = wait_for(lambda: _ended(settings, job_id), 30, "the job to complete")
        assert job.status == "completed", job.error
        yield Stack(settings, env, worker, flower, job, tmp_path)
    finally:
        worker.stop()
        flower.stop()


def _ended(settings: Settings, job_id: str) -> Job | None:
    job = store.load(settings, job_id)
    return job if job is not None and job.finished_at is not None else None


def _finished_poll(flower: FlowerProcess, job: Job) -> tuple[str, dict[str, Any]] | None:
    for uuid, task in flower.tasks("research.poll").items():
        if task.get("state") == "SUCCESS" and job.id in (task.get("args") or "") and "completed" in task["result"]:
            return uuid, task
    return None


def test_flower_shows_each_research_task_with_its_job_and_result(stack: Stack) -> None:
    flower, job = stack.flower, stack.job
    uuid, task = wait_for(lambda: _finished_poll(flower, job), 15, "Flower to list the finishing poll")
    assert task["name"] == "research.poll"
    assert task["args"] == task_label([(job.id, QUESTION)]) == repr([(job.id, QUESTION[:59] + "…")])
    for field in ("'status': 'completed'", repr(job.report_title), repr(job.report_path)):
        assert field in task["result"], field
    submits = wait_for(lambda: flower.tasks("research.submit"), 10, "the submit task in Flower")
    assert [t["args"] for t in submits.values()] == [task["args"]]
    assert flower.tasks("research.dispatch") == {}, "dispatch ticks are not tasks: they never crowd the list"

    assert flower.get("/api/tasks", login=None)[0] == 401
    assert flower.get(f"/task/{uuid}", login=None)[0] == 401
    assert flower.get("/", login=("watcher", "wrong"))[0] == 401

    dom = _chromium(f"http://{':'.join(FLOWER_LOGIN)}@127.0.0.1:{flower.port}/task/{uuid}", stack.tmp_path)
    assert job.id in dom and "research.poll" in dom
    assert (stack.tmp_path / "flower.png").stat().st_size > 1000  # kept as the test's artefact


def _chromium(url: str, tmp_path: Path) -> str:
    """Load a page in headless Chromium: its DOM after scripts ran, and a screenshot kept in tmp_path."""
    assert shutil.which(CHROMIUM), "Debian's chromium package is needed (.ci/run installs it)"
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--window-size=1280,900",
    ]
    dom = subprocess.run(
        [CHROMIUM, *flags, f"--screenshot={tmp_path / 'flower.png'}", "--dump-dom", url],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert dom.returncode == 0, dom.stderr.decode(errors="replace")[-2000:]
    return dom.stdout.decode(errors="replace")


def test_the_api_key_appears_in_no_log_row_report_or_flower_page(stack: Stack) -> None:
    flower, job = stack.flower, stack.job
    uuid, _ = wait_for(lambda: _finished_poll(flower, job), 15, "Flower to list the finishing poll")
    workers = json.loads(flower.get("/api/workers")[1])
    pages = {
        path: flower.get(path)
        for path in [
            "/",
            "/tasks",
            "/api/tasks",
            "/api/workers",
            f"/task/{uuid}",
            f"/api/task/info/{uuid}",
            *(f"/worker/{name}" for name in workers),
        ]
    }
    assert all(status == 200 for status, _ in pages.values()), {p: s for p, (s, _) in pages.items()}
    sources = {
        "worker log": stack.worker.log(),
        "flower log": flower.log_path.read_text(errors="replace"),
        "database": _dump_database(stack.settings),
        "reports": "\n".join(
            p.read_text(errors="replace") for p in stack.settings.reports_dir.rglob("*") if p.is_file()
        ),
        **{f"flower {path}": body for path, (_, body) in pages.items()},
    }
    # The search means something only if each source holds the job.
    assert "finished: completed" in sources["worker log"] and "submitted: running" in sources["worker log"]
    for name in ("database", "reports", "flower /api/tasks", f"flower /task/{uuid}"):
        assert job.id in sources[name], name
    assert [name for name, content in sources.items() if CANARY_KEY in content] == []
    assert [name for name, content in sources.items() if CANARY_KEY[:12] in content] == []


def _dump_database(settings: Settings) -> str:
    engine = db.get_engine(settings.database_url)
    lines = []
    with engine.connect() as conn:
        for table in inspect(engine).get_table_names():
            lines += [f"{table}: {tuple(row)}" for row in conn.execute(text(f'SELECT * FROM "{table}"'))]
    return "\n".join(lines)


def test_flower_metrics_name_only_workers_however_many_commands_sent_tasks(stack: Stack) -> None:
    for n in range(3):  # every CLI call is its own process, with its own Celery hostname
        sent = CliRunner().invoke(cli, ["submit", f"Metrics {n} [[emulator duration=0.2]]"], env=stack.env)
        assert sent.exit_code == 0, sent.output
    wait_for(lambda: len(stack.flower.tasks("research.submit")) >= 4, 30, "Flower to see the submits run")
    status, metrics = stack.flower.get("/metrics")
    assert status == 200
    labels = set(re.findall(r'worker="([^"]+)"', metrics))
    assert labels and all(label.startswith("research-") for label in labels), labels
