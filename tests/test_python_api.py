"""README's "Use from Python" example runs as written, against the embedded default."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = (Path(__file__).parent.parent / "README.md").read_text()


def python_example() -> str:
    section = README.split("## Use from Python", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, "README's Use from Python section has a python block"
    return match.group(1)


def test_readme_python_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
                                    ) -> None:  # fmt: skip
    for key in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "RESEARCH_GEMINI_BASE_URL", "RESEARCH_BROKER_URL",
                "RESEARCH_DATABASE_URL"):  # fmt: skip
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("RESEARCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RESEARCH_REPORTS_DIR", str(tmp_path / "reports"))

    exec(compile(python_example(), "README.md", "exec"), {})

    printed = capsys.readouterr().out.splitlines()
    title, path, cost = printed[0].rsplit(" ", 2)[0], printed[0].split()[-2], printed[0].split()[-1]
    assert title.startswith("How do heat pumps cope with very cold winters")
    assert Path(path).is_file() and float(cost) > 0
    assert printed[1].startswith("queued [")
    assert "UsageRow(" in printed[2]


def test_the_public_surface_is_explicit() -> None:
    import research_runner

    assert "Client" in research_runner.__all__ and "ResearchError" in research_runner.__all__
    for name in research_runner.__all__:  # each from the module that defines it, not one that imports it
        assert getattr(research_runner, name).__module__ == f"research_runner.{research_runner._HOME_OF[name]}"
    with pytest.raises(AttributeError):
        research_runner.nothing_here  # noqa: B018
