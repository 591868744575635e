"""Emulator options, their validation, and the compact flag syntaxes shared by the CLI and config files."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

Outcome = Literal[
    "completed", "failed", "incomplete", "budget_exceeded", "requires_action", "stuck", "expired", "unknown_status"
]
OUTCOMES: tuple[str, ...] = get_args(Outcome)

Endpoint = Literal["create", "get", "stream", "cancel", "delete"]
ENDPOINTS: tuple[str, ...] = get_args(Endpoint)

# Fault kinds in the fixed order used when one uniform draw is mapped onto the cumulative rates.
FAULT_KINDS: tuple[str, ...] = (
    "429",
    "500",
    "503",
    "drop",
    "reset",
    "slow",
    "lost",
    "lost_reset",
    "lost_500",
    "cut",
)
# Kinds that only make sense on one endpoint.
ENDPOINT_ONLY_KINDS: dict[str, str] = {
    "lost": "create",
    "lost_reset": "create",
    "lost_500": "create",
    "cut": "stream",
}

# The one list of deep-research agents the emulator serves (SDK `interactions/agentoption.py`), in the
# runner's order: the newest preview first, the 12-2025 agent last.
AGENTS: tuple[str, ...] = (
    "deep-research-preview-04-2026",
    "deep-research-max-preview-04-2026",
    "deep-research-pro-preview-12-2025",
)


class SettingsError(ValueError):
    """A bad option, flag or config file; the message is one line meant for the user."""


FaultMap = dict[str, dict[str, float]]


def _check_rate(rate: float, what: str) -> float:
    if not (0.0 <= rate <= 1.0) or math.isnan(rate):
        raise SettingsError(f"{what}: rate must be between 0 and 1, got {rate}")
    return rate


def validate_faults(raw: Any) -> FaultMap:
    """Normalise a fault configuration: a mapping endpoint -> kind -> rate, or a list of flag strings.

    The endpoint "all" (or "*") applies its kinds to every endpoint that supports them.
    """
    if raw is None:
        return {}
    if isinstance(raw, str):
        raw = [raw]
    if isinstance(raw, list):
        merged: FaultMap = {}
        for item in raw:
            if not isinstance(item, str):
                raise SettingsError(f"fault entries must be strings like 'get:429=0.2', got {item!r}")
            for endpoint, kinds in parse_fault_flag(item).items():
                merged.setdefault(endpoint, {}).update(kinds)
        return merged
    if not isinstance(raw, dict):
        raise SettingsError("faults must be a mapping like {get: {'429': 0.2}} or a list of 'get:429=0.2'")
    result: FaultMap = {}
    for endpoint_key, kinds in raw.items():
        targets = _fault_targets(str(endpoint_key))
        if not isinstance(kinds, dict):
            raise SettingsError(f"faults.{endpoint_key} must map fault kinds to rates")
        for kind_key, rate in kinds.items():
            kind = str(kind_key)
            if kind not in FAULT_KINDS:
                raise SettingsError(f"unknown fault kind {kind!r}; use one of {', '.join(FAULT_KINDS)}")
            if isinstance(rate, bool) or not isinstance(rate, int | float):
                raise SettingsError(f"fault {endpoint_key}:{kind} rate must be a number")
            _check_rate(float(rate), f"fault {endpoint_key}:{kind}")
            only = ENDPOINT_ONLY_KINDS.get(kind)
            for endpoint in targets:
                if only is not None and endpoint != only:
                    if len(targets) == 1:
                        raise SettingsError(f"fault kind {kind!r} only applies to the {only!r} endpoint")
                    continue
                result.setdefault(endpoint, {})[kind] = float(rate)
    for endpoint, kinds in result.items():
        if sum(kinds.values()) > 1.0 + 1e-9:
            raise SettingsError(f"fault rates for {endpoint!r} add up to more than 1")
    return result


def _fault_targets(endpoint: str) -> tuple[str, ...]:
    if endpoint in ("all", "*"):
        return ENDPOINTS
    if endpoint not in ENDPOINTS:
        raise SettingsError(f"unknown endpoint {endpoint!r} in fault; use one of {', '.join(ENDPOINTS)} or all")
    return (endpoint,)


def parse_fault_flag(text: str) -> FaultMap:
    """Parse one `--fault ENDPOINT:KIND=RATE` flag, e.g. `get:429=0.2` or `all:503=1`."""
    endpoint, sep, rest = text.strip().partition(":")
    kind, eq, rate_text = rest.partition("=")
    if not sep or not eq or not endpoint or not kind:
        raise SettingsError(f"bad --fault {text!r}; expected ENDPOINT:KIND=RATE, e.g. get:429=0.2")
    try:
        rate = float(rate_text)
    except ValueError:
        raise SettingsError(f"bad --fault {text!r}: rate {rate_text!r} is not a number") from None
    return validate_faults({endpoint.strip(): {kind.strip(): rate}})


def parse_outcome_rates(items: list[str] | str | dict[str, Any] | None) -> dict[str, float]:
    """Parse `failed=0.1,stuck=0.05` (or a mapping); whatever is left up to 1 becomes `completed`."""
    if items is None:
        return {}
    pairs: list[tuple[str, Any]] = []
    if isinstance(items, dict):
        pairs = list(items.items())
    else:
        for chunk in [items] if isinstance(items, str) else items:
            for part in str(chunk).split(","):
                if not part.strip():
                    continue
                name, eq, value = part.partition("=")
                if not eq:
                    raise SettingsError(f"bad outcome rate {part!r}; expected OUTCOME=RATE, e.g. failed=0.1")
                pairs.append((name.strip(), value.strip()))
    rates: dict[str, float] = {}
    for name, value in pairs:
        if name not in OUTCOMES:
            raise SettingsError(f"unknown outcome {name!r}; use one of {', '.join(OUTCOMES)}")
        try:
            rates[name] = _check_rate(float(value), f"outcome {name}")
        except (TypeError, ValueError) as exc:
            if isinstance(exc, SettingsError):
                raise
            raise SettingsError(f"outcome {name}: rate {value!r} is not a number") from None
    if sum(rates.values()) > 1.0 + 1e-9:
        raise SettingsError("outcome rates add up to more than 1")
    return rates


def parse_duration(value: Any) -> tuple[float, float]:
    """`3` -> (3, 3); `2:6` -> (2, 6); a two-item list -> (min, max)."""
    if isinstance(value, list | tuple) and len(value) == 2:
        low, high = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        low = high = value
    else:
        low_text, _, high_text = str(value).partition(":")
        low, high = low_text, high_text or low_text
    try:
        pair = (float(low), float(high))
    except (TypeError, ValueError):
        raise SettingsError(f"bad duration {value!r}; expected SECONDS or MIN:MAX, e.g. 2:6") from None
    if not all(math.isfinite(x) and x >= 0 for x in pair) or pair[0] > pair[1]:
        raise SettingsError(f"bad duration {value!r}; need 0 <= MIN <= MAX")
    return pair


class EmulatorSettings(BaseModel):
    """Every emulator option. Times are seconds."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=0, le=65535)
    seed: int = 0
    duration_min: float = Field(default=2.0, ge=0)
    duration_max: float = Field(default=6.0, ge=0)
    # How long an `expired` interaction stays readable after it ended.
    retention: float = Field(default=5.0, ge=0)
    # Outcome -> probability for interactions without a directive; the remainder is `completed`.
    outcome_rates: dict[str, float] = Field(default_factory=dict)
    # Endpoint -> fault kind -> probability (see docs/emulator.md).
    faults: FaultMap = Field(default_factory=dict)
    retry_after: float = Field(default=1.0, ge=0)
    slow_delay: float = Field(default=1.0, ge=0)
    # SecretStr keeps the key out of reprs and logs.
    api_key: SecretStr | None = None
    thought_steps: int = Field(default=4, ge=1, le=50)
    # How often an open stream re-checks the clock for newly due events.
    poll_interval: float = Field(default=0.05, gt=0)
    log_level: Literal["critical", "error", "warning", "info", "debug", "trace"] = "warning"

    @field_validator("outcome_rates", mode="before")
    @classmethod
    def _outcomes(cls, value: Any) -> dict[str, float]:
        return parse_outcome_rates(value)

    @field_validator("faults", mode="before")
    @classmethod
    def _faults(cls, value: Any) -> FaultMap:
        return validate_faults(value)

    @model_validator(mode="after")
    def _durations(self) -> EmulatorSettings:
        if self.duration_min > self.duration_max:
            raise ValueError("duration_min must not exceed duration_max")
        return self


# Config-file keys (flag spellings) -> how they map onto settings fields.
_CONFIG_KEYS = {
    "host",
    "port",
    "seed",
    "duration",
    "duration_min",
    "duration_max",
    "retention",
    "outcomes",
    "outcome_rate",
    "outcome_rates",
    "fault",
    "faults",
    "retry_after",
    "slow_delay",
    "api_key",
    "thought_steps",
    "poll_interval",
    "log_level",
}


def config_to_fields(data: dict[str, Any]) -> dict[str, Any]:
    """Translate config-file keys (flag names, `-` or `_`) into EmulatorSettings field values."""
    fields: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = str(raw_key).replace("-", "_")
        if key not in _CONFIG_KEYS:
            raise SettingsError(f"unknown key {raw_key!r}; allowed: {', '.join(sorted(_CONFIG_KEYS))}")
        if key == "duration":
            fields["duration_min"], fields["duration_max"] = parse_duration(value)
        elif key in ("outcomes", "outcome_rate", "outcome_rates"):
            fields["outcome_rates"] = value
        elif key in ("fault", "faults"):
            fields["faults"] = value
        else:
            fields[key] = value
    return fields


def load_config_file(path: Path) -> dict[str, Any]:
    """Read a YAML or JSON config file (JSON is valid YAML) into settings fields."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SettingsError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise SettingsError(f"config file {path} is not valid YAML/JSON{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsError(f"config file {path} must hold a mapping of option names to values")
    return config_to_fields(data)


def build_settings(fields: dict[str, Any]) -> EmulatorSettings:
    """Validate fields into settings, turning pydantic errors into one-line SettingsErrors."""
    try:
        return EmulatorSettings(**fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "settings"
        message = str(first["msg"]).removeprefix("Value error, ")
        raise SettingsError(f"invalid {where}: {message}") from None
