"""Headless Chromium driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`: commands on fd 3,
replies on fd 4, each JSON message ended by a NUL byte), so a test can load a page, let its scripts run, and read
the DOM as it is at any later moment. Needs no package beyond Debian's chromium."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

from emulator_support import poll_until

CHROMIUM = "/usr/bin/chromium"


class Browser:
    def __init__(self, profile: Path) -> None:
        assert shutil.which(CHROMIUM), "Debian's chromium package is needed (.ci/run installs it)"
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def wire_pipes() -> None:  # the browser expects its pipe ends at exactly fds 3 and 4 (kept by pass_fds)
            os.dup2(to_browser_r, 3)
            os.dup2(from_browser_w, 4)

        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--window-size=1280,900",
                 f"--user-data-dir={profile}", "--remote-debugging-pipe"]  # fmt: skip
        self.process = subprocess.Popen(
            [CHROMIUM, *flags], preexec_fn=wire_pipes, pass_fds=(3, 4),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._next_id = 0
        self._replies: dict[int, dict[str, Any]] = {}
        self._arrived = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

    def _read(self) -> None:
        buffer = b""
        while chunk := os.read(self._from_browser, 65536):
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            for raw in messages:
                message = json.loads(raw)
                if "id" in message:
                    with self._arrived:
                        self._replies[message["id"]] = message
                        self._arrived.notify_all()

    def send(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        number = self._next_id
        message: dict[str, Any] = {"id": number, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        with self._arrived:
            assert self._arrived.wait_for(lambda: number in self._replies, timeout=30), f"no reply to {method}"
            reply = self._replies.pop(number)
        assert "error" not in reply, reply["error"]
        return dict(reply.get("result", {}))

    def page(self, method: str, **params: Any) -> dict[str, Any]:
        return self.send(method, self.session, **params)

    def open(self, url: str, login: tuple[str, str] | None = None) -> None:
        """Load `url` (with a basic-auth header on every request it makes) and wait until it has loaded."""
        if login:
            token = base64.b64encode(":".join(login).encode()).decode()
            self.page("Network.enable")
            self.page("Network.setExtraHTTPHeaders", headers={"Authorization": f"Basic {token}"})
        self.page("Page.navigate", url=url)
        poll_until(lambda: self.evaluate("document.readyState") == "complete", timeout=20, message="the page to load")

    def evaluate(self, expression: str) -> Any:
        result = self.page("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result.get("result", {}).get("value")

    def dom(self) -> str:
        return str(self.evaluate("document.documentElement.outerHTML"))

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self.page("Page.captureScreenshot")["data"]))

    def close(self) -> None:
        with contextlib.suppress(AssertionError, OSError):
            self.send("Browser.close")
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        os.close(self._to_browser)
