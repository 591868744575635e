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
    assert listed - used == set(), "every variable of .env.example is used"


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
