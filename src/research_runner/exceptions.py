"""Every error research-runner raises on purpose.

Hierarchy::

    ResearchError                 base; `exit_code` is what the CLI exits with
    ├── InvalidInput              bad question, agent, option value (exit 2)
    ├── JobNotFound               no job matches the id given
    ├── InvalidJobState           the job cannot do that now (e.g. cancel a finished job)
    ├── ServiceUnavailable        broker or database cannot be reached
    ├── SchemaOutdated            the database needs `research db upgrade`
    └── GatewayError              the Interactions API refused or failed
        ├── RetryableError        429, 5xx, connection trouble on a safe call: try again later
        ├── PermanentError        400, 401, 403, 404: trying again will not help
        └── CreateOutcomeUnknown  a create may or may not have started an interaction
"""

from __future__ import annotations


class ResearchError(Exception):
    exit_code = 1


class InvalidInput(ResearchError):
    exit_code = 2


class JobNotFound(ResearchError):
    pass


class InvalidJobState(ResearchError):
    pass


class ServiceUnavailable(ResearchError):
    pass


class SchemaOutdated(ResearchError):
    pass


class GatewayError(ResearchError):
    pass


class RetryableError(GatewayError):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(GatewayError):
    pass


class CreateOutcomeUnknown(GatewayError):
    pass
