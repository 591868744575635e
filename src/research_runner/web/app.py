"""The Starlette app of `research web`: server-rendered pages over the same database as the CLI, read only.

Endpoints are plain functions: Starlette runs them in its thread pool, so the synchronous database calls never
block the event loop.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from research_runner.client import Client
from research_runner.constants import AGENTS
from research_runner.exceptions import InvalidInput, InvalidJobState, JobNotFound, ResearchError
from research_runner.settings import Settings
from research_runner.status import ACTIVE_STATUSES, JobStatus
from research_runner.web import export, queries, search, views
from research_runner.web.guard import Guard, parse_logins

REFRESH_MS = 2000  # how often a page showing a running job asks for its news


class Pages:
    """The routes, holding the Client they read through."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.settings: Settings = client.settings

    def render(self, template: str, request: Request, status: int = 200, **context: Any) -> HTMLResponse:
        page = export.environment().get_template(template)
        common = {"request": request, "refresh_ms": REFRESH_MS, "flower_url": self.settings.web_flower_url}
        return HTMLResponse(page.render(**common, **context), status_code=status)

    def home(self, request: Request) -> Response:
        return RedirectResponse("/jobs", status_code=303)

    def jobs(self, request: Request) -> Response:
        wanted = queries.JobFilter.from_params(request.query_params)
        batch_id = self.client.batch(wanted.batch).id if wanted.batch else None
        schedule_id = queries.schedule_named(self.client.db, wanted.schedule).id if wanted.schedule else None
        page = queries.list_jobs(self.client.db, wanted, batch_id, schedule_id)
        live = any(job.status in ACTIVE_STATUSES for job in page.jobs)
        context: dict[str, Any] = {
            "page": page,
            "wanted": wanted,
            "live": live,
            "live_url": f"/jobs?{wanted.query_string(page.page)}&fragment=1",
        }
        if request.query_params.get("fragment"):
            return self.render("_jobs_table.html", request, **context)
        names = [s.name for s in self.client.schedules()]
        statuses = [str(s) for s in JobStatus]
        agents = sorted(AGENTS)  # the agents a job can have, without scanning the jobs for them
        return self.render("jobs.html", request, **context, schedules=names, statuses=statuses, agents=agents)

    def job(self, request: Request) -> Response:
        view = views.job_view(self.settings, self.client.get(request.path_params["ref"]))
        return self.render("job.html", request, view=view, job=view.job)

    def job_live(self, request: Request) -> Response:
        view = views.job_view(self.settings, self.client.get(request.path_params["ref"]))
        return self.render("_job_live.html", request, view=view, job=view.job)

    def report_markdown(self, request: Request) -> Response:
        job = self.client.get(request.path_params["ref"])
        headers = {"content-disposition": f'inline; filename="{job.short_id}.md"'}
        return Response(export.require_report(job), media_type="text/markdown; charset=utf-8", headers=headers)

    def report_html(self, request: Request) -> Response:
        job = self.client.get(request.path_params["ref"])
        html = export.html_document(self.settings, job, self.settings.web_url)
        headers = {"content-disposition": f'attachment; filename="research-{job.short_id}.html"'}
        return HTMLResponse(html, headers=headers)

    def figure(self, request: Request) -> Response:
        job = self.client.get(request.path_params["ref"])
        found = views.chart_bytes(self.settings, job, int(request.path_params["number"]))
        if found is None:
            raise HTTPException(404, "no such chart")
        return Response(found[0], media_type=found[1], headers={"cache-control": "private, max-age=3600"})

    def search(self, request: Request) -> Response:
        text = request.query_params.get("q", "").strip()[:500]
        page = queries.page_number(request.query_params.get("page"))
        results = search.search(self.client.db, text, page) if text else search.Results([], 0)
        more = results.total > page * search.PER_PAGE
        return self.render("search.html", request, q=text, results=results, page=page, has_next=more)

    def batches(self, request: Request) -> Response:
        page = queries.page_number(request.query_params.get("page"))
        batches, has_next, names = queries.batch_page(self.client.db, page)
        return self.render("batches.html", request, batches=batches, page=page, has_next=has_next, names=names)

    def batch(self, request: Request) -> Response:
        batch = self.client.batch(request.path_params["ref"])
        jobs = self.client.batch_jobs(batch)
        digest = _digest(self.settings, batch.digest_path)
        return self.render("batch.html", request, batch=batch, jobs=jobs, digest=digest)

    def schedules(self, request: Request) -> Response:
        return self.render("schedules.html", request, schedules=self.client.schedules())

    def failed(self, request: Request, exc: Exception) -> Response:
        status = (
            404 if isinstance(exc, JobNotFound) else 400 if isinstance(exc, (InvalidInput, InvalidJobState)) else 503
        )
        if isinstance(exc, HTTPException):
            status = exc.status_code
        message = exc.detail if isinstance(exc, HTTPException) else str(exc)
        return self.render("error.html", request, status=status, message=message)


def _digest(settings: Settings, path: str | None) -> Any:
    from research_runner.web import render

    data = views._read_inside(settings.reports_dir, path) if path else None
    return render.to_html(data.decode("utf-8", errors="replace")) if data is not None else None


def create_app(settings: Settings, no_auth: bool = False) -> Guard:
    """The app, behind its login (`no_auth` only where the caller has checked it listens on loopback)."""
    pages = Pages(Client(settings))
    static = StaticFiles(directory=str(resources.files("research_runner.web") / "static"))
    routes = [
        Route("/", pages.home),
        Route("/jobs", pages.jobs),
        Route("/jobs/{ref}", pages.job),
        Route("/jobs/{ref}/live", pages.job_live),
        Route("/jobs/{ref}/report.md", pages.report_markdown),
        Route("/jobs/{ref}/export.html", pages.report_html),
        Route("/jobs/{ref}/figures/{number:int}", pages.figure),
        Route("/search", pages.search),
        Route("/batches", pages.batches),
        Route("/batches/{ref}", pages.batch),
        Route("/schedules", pages.schedules),
        Mount("/static", static, name="static"),
    ]
    handlers: dict[Any, Any] = {ResearchError: pages.failed, HTTPException: pages.failed}
    app = Starlette(routes=routes, exception_handlers=handlers)
    if no_auth:
        return Guard(app, None)
    if settings.web_basic_auth is None:
        raise InvalidInput("set RESEARCH_WEB_BASIC_AUTH=user:password, or serve without a login on loopback only")
    return Guard(app, parse_logins(settings.web_basic_auth.get_secret_value()))
