"""The README documents every command and its table reference matches the schemas."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from scalefit.cli import app
from scalefit.docs import fresh_store, render, render_examples, run_example

README = Path(__file__).resolve().parent.parent / "README.md"


def test_table_reference_is_current() -> None:
    text = README.read_text(encoding="utf-8")
    assert render(text) == text, "run `python -m scalefit.docs` to regenerate the README"


def test_every_command_is_documented_in_the_readme() -> None:
    text = README.read_text(encoding="utf-8")
    result = CliRunner().invoke(app, ["--help"])
    commands = [c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands]
    assert commands, result.output
    for name in commands:
        assert f"scalefit {name}" in text, f"`scalefit {name}` is not in the README"


def test_quick_start_has_exactly_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [line for line in section.strip().splitlines() if line.strip()]
    assert [c.split("#")[0].strip() for c in commands] == [
        "python3 dev.py refresh",
        "python3 dev.py test",
    ]


def test_readme_examples_are_what_the_commands_print(tmp_path: Path) -> None:
    # every example block is rerun on a fresh store of the curated data (a few seconds)
    text = README.read_text(encoding="utf-8")
    assert text.count("<!-- example: ") >= 3
    fresh_store(tmp_path)
    rendered = render_examples(text, lambda command: run_example(command, tmp_path))
    assert rendered == text, "run `python -m scalefit.docs` to regenerate the README's examples"


def test_an_example_block_is_replaced_by_the_commands_output() -> None:
    text = "a\n<!-- example: scalefit x -->\n```console\n$ old\nstale\n```\n<!-- example:end -->\nb"
    out = render_examples(text, lambda command: f"ran {command}")
    assert out == (
        "a\n<!-- example: scalefit x -->\n```console\n$ scalefit x\nran scalefit x\n```\n"
        "<!-- example:end -->\nb"
    )
