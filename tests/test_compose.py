"""compose.yaml sets only variables the settings read, sets the required ones, and .env.example lists them all."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import AliasChoices

from research_runner.settings import Settings

ROOT = Path(__file__).parent.parent
COMPOSE_TEXT = (ROOT / "compose.yaml").read_text()
COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_TEXT)
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
# Variables a service cannot work without, by service.
REQUIRED = {
    "migrate": {"RESEARCH_DATABASE_URL"},
    "worker": {"RESEARCH_BROKER_URL", "RESEARCH_DATABASE_URL", "GEMINI_API_KEY"},
    "scheduler": {"RESEARCH_BROKER_URL", "RESEARCH_DATABASE_URL"},
    "flower": {"RESEARCH_BROKER_URL", "RESEARCH_FLOWER_BASIC_AUTH"},
}
# Secrets without a default: compose must refuse to start without them (`${VAR:?message}`).
MUST_BE_GIVEN = {"GEMINI_API_KEY", "RESEARCH_FLOWER_BASIC_AUTH", "POSTGRES_PASSWORD"}
# The services that run research-runner itself (the emulator shares the image but is another program).
RUNNER_SERVICES = {"migrate", "worker", "scheduler", "flower", "webhooks", "web"}
ENV_EXAMPLE = (ROOT / ".env.example").read_text()
# `NAME=value` lines, and `# NAME=value` ones (documented defaults, commented out).
EXAMPLE_VALUES = dict(re.findall(r"^(?:# )?([A-Z][A-Z0-9_]*)=(.*)$", ENV_EXAMPLE, re.MULTILINE))


def settings_variables() -> set[str]:
    """Every environment variable Settings reads."""
    names = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names |= {str(choice) for choice in alias.choices}
        else:
            names.add(f"{Settings.model_config.get('env_prefix', '')}{name}".upper())
    return names


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the `- KEY=value` form
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(key): str(value) for key, value in env.items()}


def test_settings_variables_include_the_key_aliases() -> None:
    assert {"GEMINI_API_KEY", "GOOGLE_API_KEY", "RESEARCH_BROKER_URL", "RESEARCH_FLOWER_BASIC_AUTH"} <= (
        settings_variables()
    )


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_runner_variable_a_service_sets_is_a_setting(name: str) -> None:
    ours = {key for key in environment(SERVICES[name]) if key.startswith(("RESEARCH_", "GEMINI_", "GOOGLE_"))}
    assert ours - settings_variables() == set()


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_services_get_the_variables_they_need(name: str) -> None:
    env = environment(SERVICES[name])
    assert REQUIRED[name] <= {key for key, value in env.items() if value}
    assert "redis://redis:" in env.get("RESEARCH_BROKER_URL", "redis://redis:")
    assert "@postgres:5432/" in env.get("RESEARCH_DATABASE_URL", "@postgres:5432/")


def test_secrets_have_no_default_and_are_required() -> None:
    for variable in MUST_BE_GIVEN:
        uses = re.findall(r"\$\{" + variable + r"(:?[?-]?)", COMPOSE_TEXT)
        assert uses and set(uses) == {":?"}, variable


def test_env_example_lists_every_variable_compose_uses() -> None:
    used = set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)", COMPOSE_TEXT))
    listed = set(re.findall(r"^([A-Za-z_][A-Za-z0-9_]*)=", (ROOT / ".env.example").read_text(), re.MULTILINE))
    assert used and used - listed == set()
    assert listed - used - settings_variables() == set(), "every variable of .env.example is used or a setting"


def test_the_stack_has_its_services_and_shapes() -> None:
    assert set(SERVICES) >= {"redis", "postgres", "worker", "scheduler", "flower", "emulator"}
    assert "pg_isready" in str(SERVICES["postgres"]["healthcheck"]["test"])
    worker = SERVICES["worker"]
    assert "container_name" not in worker and "ports" not in worker, "workers scale with --scale"
    assert "--no-beat" in worker["command"], "the dispatch tick runs only in the scheduler"
    assert SERVICES["scheduler"]["command"] == ["scheduler"] and SERVICES["scheduler"]["deploy"]["replicas"] == 1
    assert SERVICES["emulator"]["profiles"] == ["offline"]
    assert "reports" in COMPOSE["volumes"]
    assert any(volume.startswith("reports:/data/reports") for volume in worker["volumes"])
    assert environment(worker)["RESEARCH_REPORTS_DIR"] == "/data/reports"
    assert all(
        service.get("image") == "research-runner:local"
        for name, service in SERVICES.items()
        if name not in ("redis", "postgres")
    )


def test_the_image_runs_research() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.startswith("#") and "FROM python:3.11-slim" in dockerfile
    assert "uv sync --frozen --no-dev" in dockerfile and 'ENTRYPOINT ["research"]' in dockerfile


def settings_from_example(monkeypatch: pytest.MonkeyPatch, values: dict[str, str]) -> Settings:
    for name in settings_variables():
        monkeypatch.delenv(name, raising=False)
    for name, value in values.items():
        if name in settings_variables():
            monkeypatch.setenv(name, value)
    return Settings()


def test_env_example_documents_every_setting() -> None:
    mentioned = set(re.findall(r"\b[A-Z][A-Z0-9_]+\b", ENV_EXAMPLE))
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        names = {str(c) for c in alias.choices} if isinstance(alias, AliasChoices) else {f"RESEARCH_{name.upper()}"}
        assert names & mentioned, f"{name} is not in .env.example"


def test_env_example_values_pass_the_settings_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    example = settings_from_example(monkeypatch, EXAMPLE_VALUES)
    assert example.flower_basic_auth is not None, "user:password, as the validator requires"
    assert re.fullmatch(r"[A-Za-z0-9]+", EXAMPLE_VALUES["POSTGRES_PASSWORD"]), "letters and digits, as it says"
    assert 1 <= int(EXAMPLE_VALUES["FLOWER_PORT"]) <= 65535


def test_env_example_shows_the_true_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    commented = dict(re.findall(r"^# ([A-Z][A-Z0-9_]*)=(.*)$", ENV_EXAMPLE, re.MULTILINE))
    assert commented
    example, default = settings_from_example(monkeypatch, commented), settings_from_example(monkeypatch, {})
    assert example == default


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_only_the_runner_services_read_env_file_and_without_needing_it(name: str) -> None:
    expected = [{"path": ".env", "required": False}] if name in RUNNER_SERVICES else None
    assert SERVICES[name].get("env_file") == expected


@pytest.mark.parametrize("name", sorted(RUNNER_SERVICES - {"worker"}))
def test_services_that_never_call_the_api_do_not_get_the_key(name: str) -> None:
    env = environment(SERVICES[name])
    assert (env["GEMINI_API_KEY"], env["GOOGLE_API_KEY"]) == ("", "")


@pytest.mark.parametrize("name", sorted(n for n, s in SERVICES.items() if s.get("restart") != "no"))
def test_every_long_running_service_has_a_healthcheck(name: str) -> None:
    test = SERVICES[name]["healthcheck"]["test"]
    assert test[0] in ("CMD", "CMD-SHELL") and len(test) > 1
    if test[1:3] == ["python", "-c"]:
        compile(test[3], f"{name} healthcheck", "exec")  # the image has Python but no curl


def test_the_healthchecks_ask_the_right_thing() -> None:
    assert SERVICES["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert "control.ping" in SERVICES["worker"]["healthcheck"]["test"][3]
    assert "ensure_connection" in SERVICES["scheduler"]["healthcheck"]["test"][3]
    assert "http://127.0.0.1:5555/healthcheck" in SERVICES["flower"]["healthcheck"]["test"][3]
    assert "http://127.0.0.1:8765/_emulator/health" in SERVICES["emulator"]["healthcheck"]["test"][3]
    assert "http://127.0.0.1:8780/health" in SERVICES["webhooks"]["healthcheck"]["test"][3]
