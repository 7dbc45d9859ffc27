"""The documentation: the README starts with the job and stays short, every command is
documented, the generated table reference and example outputs are current, and every link
resolves."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest
from typer.testing import CliRunner

from scalefit.cli import app
from scalefit.docs import (
    EXAMPLE,
    documentation_files,
    fresh_store,
    render,
    render_examples,
    run_example,
)

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
README_LIMIT = 20_000
"""Bytes: the README is an overview; the reference lives in docs/."""


def _commands() -> list[str]:
    CliRunner().invoke(app, ["--help"])
    names = [c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands]
    names += [g.name for g in app.registered_groups if g.name]
    assert names
    return names


def test_table_reference_is_current() -> None:
    text = (DOCS / "tables.md").read_text(encoding="utf-8")
    assert render(text) == text, "run `python -m scalefit.docs` to regenerate docs/tables.md"


def test_the_table_reference_is_generated_in_docs_only() -> None:
    # one home: the README links to it instead of holding a copy
    holders = [p.name for p in documentation_files() if "<!-- tables:start" in p.read_text()]
    assert holders == ["tables.md"]


def test_every_command_is_in_the_readme_and_has_a_section_in_docs() -> None:
    readme = README.read_text(encoding="utf-8")
    reference = (DOCS / "commands.md").read_text(encoding="utf-8")
    for name in _commands():
        assert f"scalefit {name}" in readme, f"`scalefit {name}` is not in the README"
        assert re.search(rf"^## `scalefit {name}`", reference, re.M), (
            f"docs/commands.md has no section `scalefit {name}`"
        )


def test_quick_start_has_exactly_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [line for line in section.strip().splitlines() if line.strip()]
    assert [c.split("#")[0].strip() for c in commands] == [
        "python3 dev.py refresh",
        "python3 dev.py test",
    ]


def test_readme_first_screen_is_the_job() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.encode("utf-8")) < README_LIMIT
    headings = re.findall(r"^## (.+)$", text, re.M)
    assert headings[:2] == ["Quick start", "A short session"]
    session = text.split("## A short session", 1)[1].split("\n## ", 1)[0]
    shown = re.findall(r"^\$ (?:\.venv/bin/)?scalefit (\w+)", session, re.M)
    assert shown == ["refresh", "sql", "ingest", "fit", "plan"]
    assert "<!-- tables:start" not in text


def test_the_readme_fit_example_recovers_the_sweeps_law() -> None:
    # the README says the example fit's intervals cover the exponents the sweep was made from
    law = _sweep_generator().LAW
    text = README.read_text(encoding="utf-8")
    block = text.split("scalefit fit --where", 1)[1].split("<!-- example:end -->", 1)[0]
    for name in ("alpha", "beta"):
        row = re.search(rf"│ {name} +│ parameter │ +(\S+) │ +(\S+) │ +(\S+) │", block)
        assert row, f"no {name} row in the README's fit example"
        low, high = float(row[2]), float(row[3])
        assert low <= law[name] <= high, (name, law[name], low, high)
        assert f"{name} {law[name]:.3f}" in text


def _sweep_generator() -> ModuleType:
    """docs/examples/make_sweep.py, the generator of the README's example sweep."""
    path = DOCS / "examples" / "make_sweep.py"
    spec = importlib.util.spec_from_file_location("make_sweep", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_example_sweep_is_what_its_generator_writes(tmp_path: Path) -> None:
    _sweep_generator().main(tmp_path)
    for name in ("sweep.csv", "run.json"):
        assert (tmp_path / name).read_text() == (DOCS / "examples" / name).read_text(), name


@pytest.mark.slow
@pytest.mark.parametrize(
    "path", [p for p in documentation_files() if EXAMPLE.search(p.read_text())], ids=str
)
def test_examples_are_what_the_commands_print(path: Path, tmp_path: Path) -> None:
    # every example block is rerun, in order, on a fresh store of the curated data
    text = path.read_text(encoding="utf-8")
    fresh_store(tmp_path)
    rendered = render_examples(text, lambda command: run_example(command, tmp_path))
    assert rendered == text, f"run `python -m scalefit.docs` to regenerate {path.name}"


def test_the_examples_cover_the_session_and_the_plan_reference() -> None:
    counts = {p.name: len(EXAMPLE.findall(p.read_text())) for p in documentation_files()}
    assert counts["README.md"] >= 4
    assert counts["commands.md"] >= 2


def test_an_example_block_is_replaced_by_the_commands_output() -> None:
    text = "a\n<!-- example: scalefit x -->\n```console\n$ old\nstale\n```\n<!-- example:end -->\nb"
    out = render_examples(text, lambda command: f"ran {command}")
    assert out == (
        "a\n<!-- example: scalefit x -->\n```console\n$ scalefit x\nran scalefit x\n```\n"
        "<!-- example:end -->\nb"
    )


# --- links ---------------------------------------------------------------------------------

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def _without_code(text: str) -> str:
    """``text`` with fenced blocks and inline code removed (links there are not links)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.M | re.S)
    for heading in re.findall(r"^#{1,6} (.+)$", text, re.M):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def links(path: Path) -> list[str]:
    return LINK.findall(_without_code(path.read_text(encoding="utf-8")))


def _external(target: str) -> bool:
    return bool(re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I)) or target.startswith("//")


@pytest.mark.parametrize("path", documentation_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(path: Path) -> None:
    broken = []
    for target in links(path):
        if _external(target):
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        if not resolved.exists():
            broken.append(f"{target}: no file {resolved}")
        elif not resolved.is_relative_to(ROOT):
            broken.append(f"{target}: outside the repository")
        elif anchor and (resolved.suffix != ".md" or anchor not in anchors(resolved)):
            broken.append(f"{target}: no heading #{anchor} in {resolved.name}")
    assert not broken, f"{path.name}: " + "; ".join(broken)


def test_the_readme_links_into_docs() -> None:
    targets = {t.partition("#")[0] for t in links(README)}
    for page in ("docs/commands.md", "docs/settings.md", "docs/tables.md", "CONTRIBUTING.md"):
        assert page in targets, f"the README does not link {page}"


def test_the_development_section_links_nothing_outside_the_repository() -> None:
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Development", 1)[1].split("\n## ", 1)[0]
    found = LINK.findall(_without_code(section))
    assert found, "the Development section links CONTRIBUTING.md and docs/development.md"
    outside = [t for t in found if _external(t) or t.startswith(("/", ".."))]
    assert not outside, outside


def test_the_link_checker_finds_a_broken_anchor(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n\n## A `code` heading: yes\n\n[ok](#a-code-heading-yes) [bad](#nope)\n"
    )
    assert anchors(page) == {"title", "a-code-heading-yes"}
    assert links(page) == ["#a-code-heading-yes", "#nope"]


# --- CONTRIBUTING.md names real places ------------------------------------------------------

PLACE = re.compile(r"`((?:scalefit|schemas|flows|tests|docs|benchmarks)/[\w./]*)(?:::(\w+))?`")


def _places() -> list[tuple[str, str | None]]:
    text = (ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8")
    return sorted({(m[1], m[2] or None) for m in PLACE.finditer(text)}, key=str)


@pytest.mark.parametrize(("place", "test"), _places(), ids=lambda v: v or "")
def test_contributing_names_files_and_tests_that_exist(place: str, test: str | None) -> None:
    # CONTRIBUTING.md is written for the layout of issue 13 (scalefit/laws/, scalefit/load/,
    # scalefit/cli/options.py ...): until that layout is merged, this names what is missing.
    path = ROOT / place
    assert path.exists(), f"CONTRIBUTING.md names {place}, which does not exist"
    if test:
        assert re.search(rf"^def {test}\(", path.read_text(encoding="utf-8"), re.M), (
            f"CONTRIBUTING.md names {place}::{test}, which is not a test there"
        )
