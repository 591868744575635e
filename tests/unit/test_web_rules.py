"""Pure rules of the web app: search query building, snippet highlighting, report rendering, the login check."""

from __future__ import annotations

import base64

import pytest

from research_runner.web.guard import authorized, parse_logins
from research_runner.web.render import split_front_matter, to_html
from research_runner.web.search import CLOSE, OPEN, fts_query, highlight


@pytest.mark.parametrize(
    ("text", "query"),
    [
        ("heat pumps", '{question report} : ("heat" AND "pumps")'),
        ('"cold weather" defrost*', '{question report} : ("cold weather" AND "defrost"*)'),
        ('NEAR( " OR', '{question report} : ("NEAR" AND "OR")'),
        ("question:x", '{question report} : ("question" AND "x")'),
        ("'; DROP TABLE jobs; --", '{question report} : ("DROP" AND "TABLE" AND "jobs")'),
        ("", None),
        ('" * - ^', None),
    ],
)
def test_user_text_becomes_a_quoted_fts_query(text: str, query: str | None) -> None:
    assert fts_query(text) == query


@pytest.mark.parametrize(
    ("snippet", "html"),
    [
        (f"a {OPEN}pump{CLOSE} b", "a <mark>pump</mark> b"),
        (f"<b>{OPEN}x{CLOSE}</b>", "&lt;b&gt;<mark>x</mark>&lt;/b&gt;"),
        (f"{CLOSE}stray {OPEN}open", "stray <mark>open</mark>"),
        (f"{OPEN}{OPEN}twice{CLOSE}{CLOSE}", "<mark>twice</mark>"),
        ("line\n\nbreaks", "line breaks"),
    ],
)
def test_snippets_are_escaped_and_marks_balanced(snippet: str, html: str) -> None:
    assert str(highlight(snippet)) == html


@pytest.mark.parametrize(
    ("markdown", "expected"),
    [
        ("---\ntitle: x\n---\n# Body\n", ("title: x", "# Body\n")),
        ("# No front matter\n", ("", "# No front matter\n")),
        ("---\nunclosed\n", ("", "---\nunclosed\n")),
    ],
)
def test_front_matter_is_split_off(markdown: str, expected: tuple[str, str]) -> None:
    assert split_front_matter(markdown) == expected


@pytest.mark.parametrize(
    ("markdown", "html"),
    [
        ("<script>alert(1)</script>", "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>"),
        ("[x](javascript:alert(1))", "<p>[x](javascript:alert(1))</p>"),
        ("[x](data:text/html,hi)", "<p>[x](data:text/html,hi)</p>"),
        ('<img src=x onerror="alert(1)">', '<p>&lt;img src=x onerror="alert(1)"&gt;</p>'),
        ("![remote](https://tracker.example/p.png)", "<p>remote</p>"),
        ("[ok](https://example.org)", '<p><a href="https://example.org" rel="noopener noreferrer">ok</a></p>'),
        (
            "| a |\n|---|\n| 1 |",
            "<table>\n<thead>\n<tr>\n<th>a</th>\n</tr>\n</thead>\n<tbody>\n<tr>\n<td>1</td>\n</tr>\n</tbody>\n</table>",
        ),
    ],
)
def test_report_markdown_renders_inert(markdown: str, html: str) -> None:
    assert str(to_html(markdown)).strip() == html


def test_images_map_to_our_charts_by_file_name() -> None:
    html = str(
        to_html("![Figure 1](charts/Fig-1.PNG)", lambda src: "/jobs/j/figures/1" if "fig-1" in src.lower() else None)
    )
    assert html.strip() == '<p><img src="/jobs/j/figures/1" alt="Figure 1"></p>'


def _header(login: str) -> str:
    return "Basic " + base64.b64encode(login.encode()).decode()


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        (_header("reader:pw"), True),
        (_header("other:two:colons"), True),
        (_header("reader:wrong"), False),
        (_header("reader"), False),
        (_header(":pw"), False),
        ("Basic !!!", False),
        ("Bearer abc", False),
        (None, False),
    ],
)
def test_the_login_check(header: str | None, ok: bool) -> None:
    assert authorized(header, parse_logins("reader:pw, other:two:colons")) is ok
