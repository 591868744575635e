"""Unit tests need no service: any attempt to open a network connection fails the test that made it.

tests/conftest.py still loads (pytest loads the conftest of every parent folder), but none of its fixtures is
autouse, so nothing there connects unless a test asks for it.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def refuse(sock: socket.socket, address: Any, *args: Any) -> Any:
        if sock.family == socket.AF_UNIX:
            return real_connect(sock, address)
        raise AssertionError(f"a unit test tried to connect to {address!r}; it belongs outside tests/unit")

    real_connect = socket.socket.connect
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    yield
