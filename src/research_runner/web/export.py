"""A job's report as one self-contained file: Markdown as stored, or HTML with its charts embedded."""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Literal

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from research_runner.exceptions import InvalidJobState
from research_runner.models import Job
from research_runner.settings import Settings
from research_runner.status import utcnow
from research_runner.web import views

Format = Literal["html", "md"]


@cache
def environment() -> Environment:
    """Templates escape every value unless it is Markup (which only the sanitiser and highlighter make)."""
    env = Environment(
        loader=PackageLoader("research_runner.web", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = when
    return env


def when(value: object) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if hasattr(value, "strftime") else ""


def require_report(job: Job) -> str:
    if not job.report_markdown:
        raise InvalidJobState(f"job {job.short_id} has no report (status {job.status}); only finished jobs do")
    return job.report_markdown


def export(settings: Settings, job: Job, fmt: Format, web_url: str | None = None) -> str:
    markdown = require_report(job)
    if fmt == "md":
        return markdown
    return html_document(settings, job, web_url)


def html_document(settings: Settings, job: Job, web_url: str | None = None) -> str:
    """The report page on its own: inline style, charts as data: URIs, no script, nothing fetched from anywhere."""
    require_report(job)
    view = views.job_view(settings, job)
    embedded = {}
    for chart in view.charts:
        found = views.chart_bytes(settings, job, chart.number) if chart.shown else None
        if found is not None:
            embedded[chart.number] = views.data_uri(*found)
    report = str(view.report or "")
    for number, uri in embedded.items():  # the sanitised HTML points at our figure URLs; swap in the bytes
        report = report.replace(f'src="{views.figure_url(job.id, number)}"', f'src="{uri}"')
    gallery = [(chart, embedded[chart.number]) for chart in view.gallery if chart.number in embedded]
    page = environment().get_template("export.html")
    context = {"view": view, "job": job, "gallery": gallery, "exported": utcnow(), "web_url": web_url}
    return page.render(**context, report=Markup(report), css=Markup(_stylesheet()))  # the report was sanitised above


@cache
def _stylesheet() -> str:
    return (resources.files("research_runner.web") / "static" / "style.css").read_text()
