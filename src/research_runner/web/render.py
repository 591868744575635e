"""Report Markdown to safe HTML: markdown-it with raw HTML off, then nh3's allow-list, images mapped to charts.

Two layers, so a mistake in one is caught by the other: markdown-it escapes any HTML the text holds and refuses
`javascript:` links; nh3 keeps only the tags, attributes and URL schemes listed here. The pages also send a
Content-Security-Policy that runs no inline script at all.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import PurePath

import nh3
from markdown_it import MarkdownIt
from markdown_it.token import Token
from markupsafe import Markup

TAGS = {
    "a", "abbr", "b", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i",
    "img", "li", "ol", "p", "pre", "s", "strong", "sub", "sup", "table", "tbody", "td", "th", "thead", "tr", "ul",
}  # fmt: skip
ATTRIBUTES = {"a": {"href", "title"}, "img": {"src", "alt", "title"}, "ol": {"start"}, "code": {"class"}}
URL_SCHEMES = {"http", "https", "mailto"}

ImageSource = Callable[[str], "str | None"]


@cache
def _parser() -> MarkdownIt:
    return MarkdownIt("commonmark", {"html": False, "linkify": False}).enable(["table", "strikethrough"])


def split_front_matter(markdown: str) -> tuple[str, str]:
    """(front matter without its fences, the rest) of a report; ("", markdown) when it has none."""
    if not markdown.startswith("---\n"):
        return "", markdown
    end = markdown.find("\n---", 3)
    if end < 0:
        return "", markdown
    after = markdown.find("\n", end + 4)
    return markdown[4:end], "" if after < 0 else markdown[after + 1 :]


def sanitize(html: str) -> str:
    return nh3.clean(html, tags=TAGS, attributes=ATTRIBUTES, url_schemes=URL_SCHEMES, link_rel="noopener noreferrer")


def to_html(markdown: str, image_source: ImageSource | None = None) -> Markup:
    """Markdown (front matter left out) as sanitised HTML; `image_source` maps an image's src to ours (or None:
    the image is shown as its alt text only, so a report never makes the browser fetch a URL it chose)."""
    _, body = split_front_matter(markdown)
    parser = _parser()
    tokens = parser.parse(body)
    _map_images(tokens, image_source or (lambda _src: None))
    return Markup(sanitize(parser.renderer.render(tokens, parser.options, {})))


def _map_images(tokens: list[Token], image_source: ImageSource) -> None:
    for token in tokens:
        for child in token.children or []:
            if child.type != "image":
                continue
            src = image_source(str(child.attrGet("src") or ""))
            if src is None:
                child.type, child.tag, child.content = "text", "", child.content or "[image]"
                child.children = None
            else:
                child.attrSet("src", src)


def figure_key(path: str | None) -> str:
    """How a chart is recognised in a report's image links: its file name (reports link charts beside them)."""
    return PurePath((path or "").replace("\\", "/")).name.lower()
