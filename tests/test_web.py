"""`research web` as a real server process on 127.0.0.1, read in headless Chromium: the list, a job with its
charts and sources, search by a word only its report body holds, live update of a running job, export, the login,
and a hostile report rendered inert. Jobs are stored directly (store.new_job/store.add and SQL updates)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from server_support import ServerProcess
from sqlalchemy import update
from sqlmodel import col

from research_emulator.charts import WIDTH as CHART_WIDTH
from research_emulator.charts import bar_chart
from research_runner import db, store
from research_runner.cli import cli
from research_runner.constants import DEFAULT_AGENT
from research_runner.models import Figure, Job
from research_runner.settings import Settings
from research_runner.status import utcnow

from chromium_support import Browser
from conftest import settings_from, wait_for

LOGIN = ("reader", "web-pass-42")
CHART = bar_chart([0.3, 0.9, 0.6])
SECOND_CHART = bar_chart([0.8, 0.2])
QUESTION = "How do heat pumps cope with very cold winters?"
REPORT = """---
title: Heat pumps in cold climates
question: How do heat pumps cope with very cold winters?
---

# Heat pumps in cold climates

Modern cold-climate units keep a useful coefficient of performance down to -25 °C; the defrost cycle is the
xylophonic detail that decides comfort [1].

![Figure 1](2026-11-26-heat-pumps-abcd1234-figure-1.png)

*Figure 1: coefficient of performance by outdoor temperature.*

## Sources

1. [Cold climate heat pumps](<https://example.org/ccashp>)
2. [Defrost strategies](<https://example.org/defrost>)
"""
HOSTILE_QUESTION = "<script>document.body.dataset.pwned='question'</script> is this safe?"
HOSTILE_REPORT = """# Hostile <img src=x onerror="document.body.dataset.pwned='heading'">

<script>document.body.dataset.pwned='script'</script>

<iframe src="javascript:parent.document.body.dataset.pwned='iframe'"></iframe>

[click me](javascript:document.body.dataset.pwned='link') and [data](data:text/html,<script>alert(1)</script>)
<a href="javascript:void(0)" onclick="document.body.dataset.pwned='onclick'">raw anchor</a>

![pixel](https://tracker.example/p.png) <svg onload="document.body.dataset.pwned='svg'"></svg>
"""


class WebProcess(ServerProcess):
    """`research web` as a real child process on a free port, answering once this returns."""

    def __init__(self, env: dict[str, str], log_path: Path, *extra: str) -> None:
        super().__init__("web", env, log_path, *extra)
        wait_for(lambda: self.get("/jobs")[0] == 200, 30, "the web server to answer")

    def get(self, path: str, login: tuple[str, str] | None = LOGIN, method: str = "GET") -> tuple[int, Any, bytes]:
        return self.request(path, login, method)


@dataclass
class Site:
    settings: Settings
    env: dict[str, str]
    web: WebProcess
    browser: Browser
    report_job: Job
    hostile_job: Job
    tmp_path: Path


def stored(settings: Settings, question: str, **values: Any) -> Job:
    job = store.add(settings, store.new_job(settings, question, DEFAULT_AGENT, held=False))
    if values:
        with db.session(settings) as session:
            session.execute(update(Job).where(col(Job.id) == job.id).values(**values))
    loaded = store.load(settings, job.id)
    assert loaded is not None
    return loaded


def finished(markdown: str, title: str) -> dict[str, Any]:
    now = utcnow()
    return {"status": "completed", "report_markdown": markdown, "report_title": title, "submitted_at": now,
            "finished_at": now, "cost_usd": 1.25, "usage_json": '{"total_tokens": 4242}'}  # fmt: skip


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp_path = tmp_path_factory.mktemp("web")
    env = {
        "RESEARCH_DATA_DIR": str(tmp_path / "data"),
        "RESEARCH_REPORTS_DIR": str(tmp_path / "reports"),
        "RESEARCH_WEB_BASIC_AUTH": ":".join(LOGIN),
        "RESEARCH_WEB_URL": "http://research.example:8080",
    }
    with pytest.MonkeyPatch.context() as monkeypatch:
        settings = settings_from(env, monkeypatch)
    report_job = stored(settings, QUESTION, **finished(REPORT, "Heat pumps in cold climates"))
    with db.session(settings) as session:
        path = "2026-11-26-heat-pumps-abcd1234-figure-1.png"
        session.add(Figure(job_id=report_job.id, number=1, mime_type="image/png", data=CHART, path=path))
        session.add(Figure(job_id=report_job.id, number=2, mime_type="image/png", data=SECOND_CHART, path="f2.png"))
    hostile_job = stored(settings, HOSTILE_QUESTION, **finished(HOSTILE_REPORT, "<b>bold</b> <script>x</script>"))
    web = WebProcess(env, tmp_path / "web.log")
    browser = Browser(tmp_path / "chromium-profile")
    try:
        yield Site(settings, env, web, browser, report_job, hostile_job, tmp_path)
    finally:
        browser.close()
        web.stop()


def test_the_list_shows_every_job_newest_first(site: Site) -> None:
    site.browser.open(f"{site.web.url}/jobs", LOGIN)
    rows = site.browser.evaluate("[...document.querySelectorAll('table.jobs tbody tr')].map(r => r.innerText)")
    assert len(rows) >= 2
    assert "Heat pumps in cold climates" in rows[-1] and "completed" in rows[-1]  # stored first, listed last
    status = site.browser.evaluate("document.querySelector('select[name=status]').options.length")
    assert status > 10
    site.browser.screenshot(site.tmp_path / "jobs.png")
    filtered = site.web.get("/jobs?status=running")[2].decode()
    assert site.report_job.id not in filtered


def test_a_job_page_shows_its_report_charts_and_numbered_sources(site: Site) -> None:
    job = site.report_job
    site.browser.open(f"{site.web.url}/jobs/{job.id}", LOGIN)
    images = site.browser.evaluate(
        "[...document.querySelectorAll('main img')].map(i => [i.getAttribute('src'), i.naturalWidth])"
    )
    assert images == [[f"/jobs/{job.id}/figures/1", CHART_WIDTH], [f"/jobs/{job.id}/figures/2", CHART_WIDTH]]
    sources = site.browser.evaluate("[...document.querySelectorAll('article ol li a')].map(a => a.href)")
    assert sources == ["https://example.org/ccashp", "https://example.org/defrost"]
    text = site.browser.evaluate("document.body.innerText")
    for expected in (QUESTION, "xylophonic", "$1.2500", "4242", "Markdown file", "Export HTML"):
        assert expected in text, expected
    assert "title: Heat pumps" not in text, "the front matter is not shown as text"
    site.browser.screenshot(site.tmp_path / "job.png")
    status, headers, body = site.web.get(f"/jobs/{job.id}/figures/1")
    assert (status, headers["content-type"], body) == (200, "image/png", CHART)
    assert site.web.get(f"/jobs/{job.id}/report.md")[2].decode() == REPORT


def test_search_finds_a_report_by_a_word_only_in_its_body(site: Site) -> None:
    site.browser.open(f"{site.web.url}/search?q=xylophonic", LOGIN)
    hits = site.browser.evaluate("[...document.querySelectorAll('ol.hits li a.hit-title')].map(a => a.href)")
    assert hits == [f"{site.web.url}/jobs/{site.report_job.id}"]
    marks = site.browser.evaluate("[...document.querySelectorAll('.snippet mark')].map(m => m.textContent)")
    assert marks == ["xylophonic"]
    assert "1 report match" in site.browser.evaluate("document.body.innerText")


def test_a_running_job_updates_without_a_reload(site: Site) -> None:
    job = stored(site.settings, "What limits solid-state battery adoption?", status="running", submitted_at=utcnow())
    site.browser.open(f"{site.web.url}/jobs/{job.id}", LOGIN)
    assert site.browser.evaluate("document.querySelector('#job').dataset.active") == "1"
    site.browser.evaluate("window.sameDocument = 'yes'")
    with db.session(site.settings) as session:
        values = finished("# Solid-state batteries\n\nDendrites and cost, mostly.\n", "Solid-state batteries")
        session.execute(update(Job).where(col(Job.id) == job.id).values(**values))
    badge = "document.querySelector('#job .badge').textContent"
    wait_for(lambda: site.browser.evaluate(badge) == "completed", 20, "the page to show the job completed")
    assert "Dendrites and cost" in site.browser.evaluate("document.querySelector('#job').innerText")
    assert site.browser.evaluate("window.sameDocument") == "yes", "updated in place, not reloaded"
    assert site.browser.evaluate("document.querySelector('#job').dataset.active") == "0"
    assert f"GET /jobs/{job.id}/live" in site.web.log_path.read_text()


def test_export_writes_one_self_contained_html_file(site: Site) -> None:
    job = site.report_job
    target = site.tmp_path / "export" / "heat.html"
    result = CliRunner().invoke(cli, ["export", job.short_id, "--format", "html", "-o", str(target)], env=site.env)
    assert result.exit_code == 0, result.output
    html = target.read_text()
    assert f"data:image/png;base64,{base64.b64encode(CHART).decode()}" in html
    assert "<script" not in html.lower() and 'src="/' not in html and "http://research.example:8080/jobs/" in html
    site.browser.open(target.as_uri())
    widths = site.browser.evaluate("[...document.images].map(i => i.naturalWidth)")
    assert widths == [CHART_WIDTH, CHART_WIDTH], "both charts load from the file itself"
    assert "xylophonic" in site.browser.evaluate("document.body.innerText")
    markdown = CliRunner().invoke(cli, ["export", job.short_id, "--format", "md"], env=site.env)
    assert (markdown.exit_code, markdown.stdout) == (0, REPORT)
    status, headers, body = site.web.get(f"/jobs/{job.id}/export.html")
    assert status == 200 and headers["content-disposition"].startswith("attachment;")
    assert body.decode().count("data:image/png;base64,") == 2


def test_export_of_a_job_without_a_report_is_refused(site: Site) -> None:
    job = stored(site.settings, "Not finished yet?")
    result = CliRunner().invoke(cli, ["export", job.id, "-o", str(site.tmp_path / "none.html")], env=site.env)
    assert (result.exit_code, result.stderr) == (1, f"Error: job {job.short_id} has no report (status queued); "
                                                    "only finished jobs do\n")  # fmt: skip
    assert not (site.tmp_path / "none.html").exists()


def test_every_page_needs_the_login_and_nothing_changes_state(site: Site) -> None:
    job = site.report_job
    for path in ("/jobs", f"/jobs/{job.id}", f"/jobs/{job.id}/export.html", "/search?q=heat", "/static/app.js"):
        assert site.web.get(path, login=None)[0] == 401, path
        assert site.web.get(path, login=("reader", "wrong"))[0] == 401, path
    _, headers, _ = site.web.get("/jobs", login=None)
    assert headers["www-authenticate"].startswith("Basic")
    assert site.web.get("/jobs", method="POST")[0] == 405
    assert site.web.get(f"/jobs/{job.id}", method="DELETE")[0] == 405


def test_a_hostile_report_and_question_run_nothing(site: Site) -> None:
    job = site.hostile_job
    site.browser.open(f"{site.web.url}/jobs/{job.id}", LOGIN)
    browser = site.browser
    assert browser.evaluate("document.body.dataset.pwned") is None
    assert browser.evaluate("[...document.scripts].map(s => s.getAttribute('src'))") == ["/static/app.js"]
    handlers = "[...document.querySelectorAll('*')].flatMap(e => [...e.attributes].map(a => a.name))"
    assert [name for name in browser.evaluate(handlers) if name.startswith("on")] == []
    assert browser.evaluate("document.querySelectorAll('iframe, svg, object, embed').length") == 0
    links = browser.evaluate("[...document.links].map(a => a.href)")
    assert [href for href in links if href.startswith(("javascript:", "data:"))] == []
    article = browser.evaluate("document.querySelector('article').innerText")
    assert "<script>document.body.dataset.pwned='script'</script>" in article, "shown as text"
    assert "<script>" in browser.evaluate("document.querySelector('.question').innerText")
    for link in browser.evaluate("[...document.querySelectorAll('article a')].map(a => a.textContent)"):
        browser.evaluate(f"[...document.links].find(a => a.textContent === {link!r})?.click()")
    assert browser.evaluate("document.body.dataset.pwned") is None
    browser.open(f"{site.web.url}/search?q=pwned", LOGIN)
    assert browser.evaluate("document.body.dataset.pwned") is None
    assert browser.evaluate("document.querySelectorAll('ol.hits li').length") == 1


def test_web_refuses_to_start_open_or_without_loopback(tmp_path: Path) -> None:
    env = {"RESEARCH_DATA_DIR": str(tmp_path / "data"), "RESEARCH_WEB_BASIC_AUTH": ""}
    open_site = CliRunner().invoke(cli, ["web"], env=env)
    assert (open_site.exit_code, open_site.stdout) == (2, "")
    assert open_site.stderr.startswith("Error: the pages would be open to anyone who can reach them: set ")
    exposed = CliRunner().invoke(cli, ["web", "--no-auth", "--host", "0.0.0.0"], env=env)
    assert (exposed.exit_code, exposed.stderr) == (
        2,
        "Error: --no-auth only serves on a loopback address (127.0.0.1 or ::1), not 0.0.0.0\n",
    )


def test_the_flower_result_carries_the_jobs_web_address(site: Site) -> None:
    from research_runner.worker import _describe

    described = _describe(site.report_job.id, site.report_job, web_url=site.settings.web_url)
    assert described["web_url"] == f"http://research.example:8080/jobs/{site.report_job.id}"
    assert "web_url" not in _describe(site.report_job.id, site.report_job)
