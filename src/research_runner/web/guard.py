"""The web app's gate: basic auth (the same `user:password[,user:password]` rule as Flower), read-only methods,
and headers that keep a hostile report inert even if it slipped past the sanitiser."""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# No inline script or style attribute runs, nothing is framed, images come from us or are embedded.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]
READ_METHODS = {"GET", "HEAD"}
LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def parse_logins(secret: str) -> list[tuple[str, str]]:
    """`user:password` pairs separated by commas (the settings validator has checked the form)."""
    return [(user.strip(), password) for user, _, password in (pair.partition(":") for pair in secret.split(","))]


def authorized(header: str | None, logins: list[tuple[str, str]]) -> bool:
    """Whether an Authorization header carries one of the logins; every login is compared in constant time."""
    if not header or not header.lower().startswith("basic "):
        return False
    try:
        user, sep, password = base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    matches = [
        hmac.compare_digest(user.encode(), u.encode()) & hmac.compare_digest(password.encode(), p.encode())
        for u, p in logins
    ]
    return bool(sep) and any(matches)


class Guard:
    """ASGI middleware: 401 without a valid login (unless `logins` is None), 405 for anything but GET/HEAD."""

    def __init__(self, app: ASGIApp, logins: list[tuple[str, str]] | None) -> None:
        self.app, self.logins = app, logins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope)
        if refusal is not None:
            await _plain(send, *refusal)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)

    def _refusal(self, scope: Scope) -> tuple[int, str, list[tuple[bytes, bytes]]] | None:
        if self.logins is not None:
            header = dict(scope.get("headers", [])).get(b"authorization", b"").decode("latin-1")
            if not authorized(header, self.logins):
                return 401, "Login required.", [(b"www-authenticate", b'Basic realm="research", charset="UTF-8"')]
        if scope["method"] not in READ_METHODS:
            return 405, "This site only reads: nothing can be changed from it.", [(b"allow", b"GET, HEAD")]
        return None


async def _plain(send: Send, status: int, body: str, headers: list[tuple[bytes, bytes]]) -> None:
    data = body.encode()
    base = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": [*base, *headers, *HEADERS]})
    await send({"type": "http.response.body", "body": data})
