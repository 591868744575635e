"""research-runner: run Gemini Deep Research jobs in the background and keep their reports.

    from research_runner import Client

    client = Client()
    job = client.submit("How do heat pumps cope with very cold winters?").job

The public surface is what `__all__` lists. Names are loaded on first use, so that `import research_runner`
(and every `research` command) stays quick.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from research_runner.client import BatchSubmitted, Client, Submitted
    from research_runner.exceptions import (
        CreateOutcomeUnknown,
        GatewayError,
        InvalidInput,
        InvalidJobState,
        JobNotFound,
        PermanentError,
        ResearchError,
        RetryableError,
        SchemaOutdated,
        ServiceUnavailable,
    )
    from research_runner.models import Batch, Job, Schedule
    from research_runner.settings import Settings, load_settings
    from research_runner.status import JobStatus

_HOMES = {
    "client": ("BatchSubmitted", "Client", "Submitted"),
    "exceptions": (
        "CreateOutcomeUnknown", "GatewayError", "InvalidInput", "InvalidJobState", "JobNotFound", "PermanentError",
        "ResearchError", "RetryableError", "SchemaOutdated", "ServiceUnavailable",
    ),
    "models": ("Batch", "Job", "Schedule"),
    "settings": ("Settings", "load_settings"),
    "status": ("JobStatus",),
}  # fmt: skip
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}
__all__ = [
    "Batch",
    "BatchSubmitted",
    "Client",
    "CreateOutcomeUnknown",
    "GatewayError",
    "InvalidInput",
    "InvalidJobState",
    "Job",
    "JobNotFound",
    "JobStatus",
    "PermanentError",
    "ResearchError",
    "RetryableError",
    "Schedule",
    "SchemaOutdated",
    "ServiceUnavailable",
    "Settings",
    "Submitted",
    "load_settings",
]


def __getattr__(name: str) -> Any:
    if name not in _HOME_OF:
        raise AttributeError(f"module 'research_runner' has no attribute {name!r}")
    return getattr(importlib.import_module(f"research_runner.{_HOME_OF[name]}"), name)
