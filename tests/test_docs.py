"""README documents every command and every setting the code reads."""

from __future__ import annotations

from pathlib import Path

import click

from research_runner.cli import cli
from research_runner.settings import Settings

README = (Path(__file__).parent.parent / "README.md").read_text()


def command_paths(group: click.Group, prefix: str = "research") -> list[str]:
    paths = []
    context = click.Context(group)
    for name in group.list_commands(context):
        command = group.get_command(context, name)
        if isinstance(command, click.Group):
            paths += command_paths(command, f"{prefix} {name}")
        else:
            paths.append(f"{prefix} {name}")
    return paths


def test_readme_documents_every_command() -> None:
    paths = command_paths(cli)
    assert len(paths) >= 10
    missing = [path for path in paths if f"`{path}" not in README]
    assert missing == []


def test_every_command_has_help_with_an_example() -> None:
    for path in command_paths(cli):
        command = cli
        for name in path.split()[1:]:
            assert isinstance(command, click.Group)
            found = command.get_command(click.Context(command), name)
            assert found is not None
            command = found  # type: ignore[assignment]
        if path == "research emulator":
            continue  # documented in docs/emulator.md, with examples
        assert "Example:" in (command.help or ""), path


def test_readme_lists_every_setting() -> None:
    for name in Settings.model_fields:
        variable = "GEMINI_API_KEY" if name == "api_key" else f"RESEARCH_{name.upper()}"
        assert f"`{variable}`" in README, variable


def test_readme_first_screen_has_the_two_commands() -> None:
    first_screen = "\n".join(README.splitlines()[:25])
    assert 'uv run --frozen research run "' in first_screen
    assert "uv run --frozen pytest" in first_screen


def test_readme_code_map_names_every_module() -> None:
    package = Path(__file__).parent.parent / "src" / "research_runner"
    code_map = README[README.index("## Where things live") : README.index("## Development")]
    modules = [f"`{p.name}`" for p in package.glob("*.py") if p.name != "__main__.py"]
    modules += [f"`{p.name}/`" for p in package.iterdir() if (p / "__init__.py").exists()]
    assert len(modules) > 30
    assert [module for module in modules if module not in code_map] == []
