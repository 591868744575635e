"""A `research` server command (flower, web) run as a real child process on a free 127.0.0.1 port."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """`research <command> --port P ...` in its own session, its output in `log_path`; stop() ends it."""

    def __init__(self, command: str, env: dict[str, str], log_path: Path, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = log_path.open("wb")
        argv = [sys.executable, "-m", "research_runner", command, "--port", str(self.port), *extra]
        self.process = subprocess.Popen(
            argv, env={**os.environ, **env}, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def request(self, path: str, login: tuple[str, str] | None, method: str = "GET") -> tuple[int, Any, bytes]:
        """(status, headers, body) with HTTP Basic auth when `login` is given; status 0 while not listening."""
        request = urllib.request.Request(self.url + path, method=method)
        if login:
            request.add_header("Authorization", "Basic " + base64.b64encode(":".join(login).encode()).decode())
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers, exc.read()
        except OSError:
            return 0, None, b""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)
        self._log.close()
