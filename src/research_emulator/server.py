"""Serving the emulator with uvicorn: in the foreground (CLI) or in a daemon thread (tests, `--emulator`)."""

from __future__ import annotations

import errno
import socket
import threading
import time
from types import TracebackType

import uvicorn

from .app import create_app
from .settings import EmulatorSettings, SettingsError

STARTUP_TIMEOUT = 10.0


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind and listen before uvicorn starts, so a busy port is a clear error and port 0 is resolved."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror:
        raise SettingsError(f"cannot resolve host {host!r}") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise SettingsError(f"port {port} on {host} is already in use; pick another with --port") from None
        raise SettingsError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(512)
    sock.set_inheritable(True)
    return sock


def socket_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


# How long an idle client connection stays open. Google's docs say nothing of the Gemini API's own; Google's
# front ends keep one 610 s (Cloud Load Balancing, "Request distribution for external Application Load
# Balancers": "GFEs use a client HTTP keepalive timeout of 610 seconds"). uvicorn's default, 5 s, equals the
# SDK's httpx2 pool expiry: a pooled connection could close under a request just sent on it, which a create
# must then treat as possibly started (seen once in a 10,000-job run, issue 16).
IDLE_CONNECTION_SECONDS = 610


def make_server(settings: EmulatorSettings) -> uvicorn.Server:
    config = uvicorn.Config(
        create_app(settings),
        loop="asyncio",
        http="h11",
        lifespan="off",
        # Access logs would be slow and could carry query strings; the key is only ever in a header.
        access_log=False,
        log_level=settings.log_level,
        proxy_headers=False,
        server_header=False,
        # Open streams of stuck interactions never end on their own; do not let them block shutdown.
        timeout_graceful_shutdown=1,
        timeout_keep_alive=IDLE_CONNECTION_SECONDS,
    )
    return uvicorn.Server(config)


def serve(settings: EmulatorSettings, sock: socket.socket) -> None:
    """Run in the foreground until SIGINT/SIGTERM (uvicorn installs the handlers in the main thread)."""
    make_server(settings).run(sockets=[sock])


class RunningEmulator:
    """An emulator serving from a daemon thread; `stop()` shuts it down and joins the thread."""

    def __init__(self, settings: EmulatorSettings) -> None:
        self.settings = settings
        self._sock = bind_socket(settings.host, settings.port)
        self.url = socket_url(self._sock)
        self._server = make_server(settings)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, name="research-emulator", daemon=True
        )
        self._thread.start()
        self._wait_started()

    def _wait_started(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"emulator did not start on {self.url}")
            time.sleep(0.01)

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=STARTUP_TIMEOUT)
        self._sock.close()

    def __enter__(self) -> RunningEmulator:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def run_in_thread(settings: EmulatorSettings) -> RunningEmulator:
    """Start the emulator on settings.host/port (0 = a free port) and return once it accepts connections."""
    return RunningEmulator(settings)
