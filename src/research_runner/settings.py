"""The one settings object, read from `RESEARCH_*` variables (and the API key's own variables)."""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from research_runner.constants import DEFAULT_AGENT
from research_runner.exceptions import InvalidInput
from research_runner.pricing import DEFAULT_PRICES, AgentPrice
from research_runner.validation import agent_problem

GOOGLE_API_URL = "https://generativelanguage.googleapis.com"  # google-genai's default base URL
EMULATOR_KEY = "local-emulator"  # an emulator accepts any key; this one is never Google's


class Settings(BaseSettings):
    """Everything the runner reads from its environment; built once, then passed in."""

    model_config = SettingsConfigDict(env_prefix="RESEARCH_", extra="ignore", frozen=True)

    # Absolute by default, so every command finds the same jobs and reports from any folder it runs in.
    data_dir: Path = Field(default_factory=lambda: default_home() / "data")
    database_url: str = ""
    broker_url: str = ""
    reports_dir: Path = Field(default_factory=lambda: default_home() / "reports")
    gemini_base_url: str | None = None
    # The key is read from Google's own variable names and from nowhere else.
    api_key: SecretStr | None = Field(default=None, validation_alias=AliasChoices("GEMINI_API_KEY", "GOOGLE_API_KEY"))
    agent: str = DEFAULT_AGENT
    # Sent as agent_config on every create. Google's default for thought summaries is "none", which leaves
    # `watch` and the latest thought empty; charts ("visualization") are on by default there too.
    thinking_summaries: Literal["auto", "none"] = "auto"
    visualization: Literal["auto", "off"] = "auto"
    # Dollars per agent (JSON: {"agent": {"input_per_million", "output_per_million", "per_search"}}); agents left
    # out keep pricing.DEFAULT_PRICES. Estimates only: the API reports usage, not cost.
    prices: dict[str, AgentPrice] = Field(default_factory=lambda: dict(DEFAULT_PRICES))
    # No new interaction is created once this month's estimated spend reaches it; running ones go on.
    monthly_budget_usd: float | None = Field(default=None, ge=0)
    poll_initial: float = Field(default=10.0, gt=0)
    poll_multiplier: float = Field(default=1.5, ge=1)
    poll_max: float = Field(default=60.0, gt=0)
    poll_jitter: float = Field(default=0.1, ge=0, lt=1)
    dispatch_interval: float = Field(default=1.0, gt=0)
    lease_seconds: float = Field(default=60.0, gt=0)
    request_timeout: float = Field(default=30.0, gt=0)
    get_attempts: int = Field(default=3, ge=1)
    worker_concurrency: int = Field(default=4, ge=1)
    # Threads: one process holds every job in flight (10,000 in ~260 MB, against ~950 MB for prefork x4, issue 16).
    worker_pool: Literal["threads", "prefork", "solo"] = "threads"
    max_research_minutes: float = Field(default=70.0, gt=0)
    # Task events cost the worker about a third of its CPU at scale; Flower switches them on when it connects.
    task_events: bool = False
    # Shared by all workers through the database; 0 means no limit of our own (429s are still honoured).
    api_requests_per_minute: int = Field(default=0, ge=0)
    # `user:password` (several separated by commas) for `research flower`; never put on a command line.
    flower_basic_auth: SecretStr | None = None
    # Webhooks: the receiver's public URL. Set, every create asks the API to push the interaction's end there,
    # and polling becomes a safety net every `webhook_poll_interval` seconds.
    webhook_url: str | None = None
    # Send `uris` in each create's webhook_config (per-request webhooks, RS256 JWTs); off, only the job id
    # travels in `user_metadata` and the project's registered webhooks (HMAC) deliver.
    webhook_dynamic: bool = True
    webhook_poll_interval: float = Field(default=600.0, gt=0)
    # Where the public keys of per-request (JWT) deliveries are published; unset, JWT deliveries are refused.
    webhook_jwks_url: str | None = None
    webhook_tolerance: float = Field(default=300.0, gt=0)  # seconds a delivery's timestamp may be off
    webhook_max_body: int = Field(default=262_144, gt=0)  # bytes; larger deliveries get 413 unread
    # Deliveries the receiver records in one transaction at most (group commit); 1: a commit per delivery.
    webhook_batch: int = Field(default=100, ge=1, le=1000)
    webhook_host: str = "127.0.0.1"  # where `research webhooks serve` listens
    webhook_port: int = Field(default=8780, ge=0, le=65535)
    # `research web`: its login (same form as Flower's), the address users reach it at (put in every Flower task
    # result and in exported reports), and Flower's address for the links from a job's page to its tasks.
    web_basic_auth: SecretStr | None = None
    web_url: str | None = None
    web_flower_url: str | None = None
    # Creates handed out per dispatch tick at most, claimed apart from the polls (which have DISPATCH_BATCH): the
    # whole budget while the workers keep up, less (down to an eighth) while steps wait in the broker, so that a
    # burst of creates fills what the polls leave and never makes them late, and the polls never starve it.
    dispatch_creates: int = Field(default=400, ge=1)

    @field_validator("api_key")
    @classmethod
    def _blank_key_is_no_key(cls, value: SecretStr | None) -> SecretStr | None:
        return value if value is not None and value.get_secret_value().strip() else None

    @field_validator("flower_basic_auth")
    @classmethod
    def _user_colon_password(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        for pair in value.get_secret_value().split(","):
            user, _, password = pair.partition(":")
            if not user.strip() or not password:
                raise ValueError("must be user:password (several separated by commas)")
        return value

    @field_validator("webhook_url", "webhook_jwks_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        value = (value or "").strip() or None
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("web_basic_auth")
    @classmethod
    def _web_login(cls, value: SecretStr | None) -> SecretStr | None:
        return cls._user_colon_password(value)

    @field_validator("web_url", "web_flower_url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        url = (value or "").strip().rstrip("/")
        if url and not url.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return url or None

    @field_validator("gemini_base_url")
    @classmethod
    def _blank_url_is_default(cls, value: str | None) -> str | None:
        # compose passes an unset variable as "", which means Google's own URL.
        return (value or "").strip() or None

    @field_validator("prices")
    @classmethod
    def _known_agents_priced(cls, value: dict[str, AgentPrice]) -> dict[str, AgentPrice]:
        for agent in value:
            problem = agent_problem(agent)
            if problem:
                raise ValueError(problem)
        return {**DEFAULT_PRICES, **value}

    @field_validator("agent")
    @classmethod
    def _known_agent(cls, value: str) -> str:
        problem = agent_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _fill_defaults(self) -> Settings:
        # Embedded default: SQLite for both database and broker, so one laptop needs no server.
        data = self.data_dir.resolve()
        if not self.database_url:
            object.__setattr__(self, "database_url", f"sqlite:///{data / 'research.db'}")
        if not self.broker_url:
            object.__setattr__(self, "broker_url", f"sqla+sqlite:///{data / 'broker.db'}")
        object.__setattr__(self, "database_url", normalize_database_url(self.database_url))
        return self

    def for_private_emulator(self, url: str) -> Settings:
        """These settings pointed at a private emulator: any key will do, and it finishes in seconds."""
        fast = {"poll_initial": 0.5, "poll_max": 2.0}
        return self.model_copy(update={"gemini_base_url": url, "api_key": SecretStr(EMULATOR_KEY), **fast})

    def agent_config(self, *, charts: bool | None = None, planning: bool = False) -> dict[str, Any]:
        """The agent_config of a new job (Google's `DeepResearchAgentConfig`)."""
        visualization = self.visualization if charts is None else ("auto" if charts else "off")
        config: dict[str, Any] = {"type": "deep-research", "thinking_summaries": self.thinking_summaries,
                                  "visualization": visualization}  # fmt: skip
        if planning:
            config["collaborative_planning"] = True
        return config

    @property
    def api_endpoint(self) -> str:
        """The API base URL in force; a job records it so it is only ever polled through the same one."""
        return (self.gemini_base_url or GOOGLE_API_URL).rstrip("/")

    @property
    def webhooks_on(self) -> bool:
        """Deliveries tell us when a research ends, so polls are only a safety net."""
        return self.webhook_url is not None

    @property
    def embedded(self) -> bool:
        return self.broker_url.startswith("sqla+")

    def ensure_dirs(self) -> None:
        """Create the embedded database's and broker's folders (an error if impossible) and the reports folder.

        An unwritable reports folder stops nothing: finished reports wait in the database until it can be
        written (`research doctor` says so).
        """
        folders = [
            Path(url.removeprefix("sqlite:///")).parent
            for url in (self.database_url, self.broker_url.removeprefix("sqla+"))
            if url.startswith("sqlite:///")
        ]
        for folder in folders:
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise InvalidInput(
                    f"cannot create the folder {folder} ({exc.strerror}); check RESEARCH_DATA_DIR"
                ) from None
        with contextlib.suppress(OSError):
            self.reports_dir.mkdir(parents=True, exist_ok=True)


def default_home() -> Path:
    """Where the embedded database, broker and reports live unless set: $XDG_DATA_HOME/research-runner
    (~/.local/share/research-runner), the same folder from wherever a command runs."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "research-runner"


def normalize_database_url(url: str) -> str:
    """Send bare PostgreSQL URLs to psycopg 3, the driver we ship."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    return url


def redact_url(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url  # only on the way to an error message: SQLAlchemy is slow to import

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


def load_settings(**overrides: Any) -> Settings:
    """Build the settings, turning a validation failure into one readable line."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        name, *inner = (str(part) for part in first["loc"])
        where = f" ({'.'.join(inner)})" if inner else ""
        message = str(first["msg"]).removeprefix("Value error, ")
        raise InvalidInput(f"invalid setting RESEARCH_{name.upper()}{where}: {message}") from None
    except SettingsError as exc:  # a variable that must hold JSON does not
        field = re.search(r'field "(\w+)"', str(exc))
        name = f"RESEARCH_{field.group(1).upper()}" if field else "value"
        raise InvalidInput(f"invalid setting {name}: not valid JSON") from None
