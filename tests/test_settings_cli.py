"""Every command reads the one settings object through the real CLI: bad values are one line
and exit status 1; option > environment > scalefit.toml > default, per command; --help shows
every option's default."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main
from test_config import BAD_FILES
from typer.testing import CliRunner, Result

from scalefit.cli import app

runner = CliRunner()

# A minimal invocation of each command that reads the settings (`models` has no setting).
COMMANDS = {
    "sql": ["sql", "select 1"],
    "ingest": ["ingest", "logs"],
    "fit": ["fit"],
    "plan": ["plan", "--flops", "1e21", "--law", "no-such-law"],
    "report": ["report"],
    "refresh": ["refresh"],
    "serve": ["serve", "--max-runs", "1"],
}


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory with no SCALEFIT_* setting in the environment."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):  # SCALEFIT_OFFLINE too: no command here gets to download
        if name.startswith("SCALEFIT_"):
            monkeypatch.delenv(name)
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "run.csv").write_text("run_id,step,tokens,loss,params\nr1,1,1e9,3.1,1e8\n")
    return tmp_path


def _one_error_line(result: Result, message: str) -> None:
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and message in lines[0], lines[0]
    assert "Traceback" not in result.output


@pytest.mark.parametrize(("text", "message"), BAD_FILES)
def test_bad_file_values_through_the_cli(workdir: Path, text: str, message: str) -> None:
    (workdir / "scalefit.toml").write_text(text)
    _one_error_line(runner.invoke(app, ["sql", "select 1"]), message)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_refuses_a_bad_setting(workdir: Path, command: str) -> None:
    (workdir / "scalefit.toml").write_text("[store]\ndb = 5\n")
    _one_error_line(runner.invoke(app, COMMANDS[command]), "[store] db = 5 is not valid")
    assert not (workdir / "scalefit.duckdb").exists()


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["serve", "--timezone", "Mars/Base"], {}, "option --timezone: [schedule] timezone"),
        (["serve", "--cron", "99 99 * * *"], {}, "option --cron: [schedule] cron = '99 99 * * *'"),
        (["fit", "--jobs", "5000"], {}, "option --jobs: [scale] jobs = 5000 is not valid"),
        (["fit", "--seed", "-1"], {}, "option --seed: [fit] seed = -1 is not valid"),
        (["fit", "--points", "last"], {}, "option --points: [fit] points = 'last' is not valid"),
        (["sql", "select 1"], {"SCALEFIT_STORAGE_VERSION": "2"}, "SCALEFIT_STORAGE_VERSION"),
        (["report"], {"SCALEFIT_SCALE_WORKERS": "1e9"}, "[scale] workers = '1e9' is not valid"),
        (["sql", "select 1"], {"SCALEFIT_CONFIG": "missing.toml"}, "no config file at missing"),
    ],
)
def test_bad_options_and_variables(
    workdir: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    _one_error_line(runner.invoke(app, args, env=env), message)


def test_a_real_process_gets_one_line_and_status_1(workdir: Path) -> None:
    (workdir / "scalefit.toml").write_text('[ingest]\nfolders = "logs/"\n')
    done = subprocess.run(
        [sys.executable, "-m", "scalefit", "refresh"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip() == (
        f"error: scalefit.toml: [ingest] folders = 'logs/' is not valid: allowed: a list of "
        f'folder paths, e.g. ["logs/"] (environment: separated by "{os.pathsep}")'
    )


def test_a_real_process_says_every_bad_value(workdir: Path) -> None:
    (workdir / "scalefit.toml").write_text("[store]\ndb = 5\n[fit]\nbootstrap = -1\n")
    done = subprocess.run(
        [sys.executable, "-m", "scalefit", "fit", "--seed", "-1", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "error: scalefit.toml: [store] db = 5 is not valid: allowed: a path to a DuckDB file",
        "error: scalefit.toml: [fit] bootstrap = -1 is not valid: allowed: a whole number from 0 "
        "to 1_000_000",
        "error: option --seed: [fit] seed = -1 is not valid: allowed: a whole number >= 0",
    ]
    assert json.loads(done.stdout)["error"].count("\n") == 2  # --json: the same three lines


# --------------------------------------------------------------------- precedence per command

# The setting each command is probed with, its option, a valid and an invalid value.
PROBES = {name: ("db", "--db", "SCALEFIT_DB", "[store] db") for name in COMMANDS}
PROBES["serve"] = ("timezone", "--timezone", "SCALEFIT_TIMEZONE", "[schedule] timezone")
GOOD = {"db": "{layer}.duckdb", "timezone": "Europe/Paris"}
BAD_FILE = {"db": '""', "timezone": '"Mars/Base"'}
BAD = {"db": ".", "timezone": "Mars/Base"}


@pytest.mark.parametrize("command", COMMANDS)
def test_each_layer_beats_the_ones_below(workdir: Path, command: str) -> None:
    """The value of the highest layer given is the one checked (and used): a bad value there
    is reported with its origin although every layer below holds a good one."""
    field, flag, env, key = PROBES[command]
    args = COMMANDS[command]
    good = GOOD[field]
    file_line = f"{'store' if field == 'db' else 'schedule'}"
    config = workdir / "scalefit.toml"

    config.write_text(f"[{file_line}]\n{field} = {BAD_FILE[field]}\n")
    _one_error_line(runner.invoke(app, args), f"scalefit.toml: {key} = ")

    config.write_text(f'[{file_line}]\n{field} = "{good.format(layer="file")}"\n')
    result = runner.invoke(app, args, env={env: BAD[field]})
    _one_error_line(result, f"environment variable {env}: {key} = '{BAD[field]}'")

    result = runner.invoke(app, [*args, flag, BAD[field]], env={env: good.format(layer="env")})
    _one_error_line(result, f"option {flag}: {key} = '{BAD[field]}'")


@pytest.mark.parametrize("command", ["sql", "fit", "report", "plan"])
def test_the_winning_database_is_the_one_read(workdir: Path, command: str) -> None:
    args = COMMANDS[command]
    (workdir / "scalefit.toml").write_text('[store]\ndb = "data/file.duckdb"\n')
    cases = [
        ([*args, "--db", "opt.duckdb"], {"SCALEFIT_DB": "env.duckdb"}, "opt.duckdb"),
        (args, {"SCALEFIT_DB": "env.duckdb"}, "env.duckdb"),
        (args, {}, str(workdir / "data" / "file.duckdb")),
    ]
    for argv, env, used in cases:
        result = runner.invoke(app, argv, env=env)
        assert result.exit_code == 1 and f"no database at {used}" in result.stderr, result.output
    (workdir / "scalefit.toml").unlink()
    result = runner.invoke(app, args)
    assert "no database at scalefit.duckdb" in result.stderr, result.output


def test_ingest_writes_to_the_winning_database(workdir: Path) -> None:
    (workdir / "scalefit.toml").write_text('[store]\ndb = "data/file.duckdb"\n')
    for argv, env, used in [
        (["--db", "opt.duckdb"], {"SCALEFIT_DB": "env.duckdb"}, "opt.duckdb"),
        ([], {"SCALEFIT_DB": "env.duckdb"}, "env.duckdb"),
        ([], {}, "data/file.duckdb"),
    ]:
        result = runner.invoke(app, ["ingest", "logs", *argv], env=env)
        assert result.exit_code == 0, result.output
        assert (workdir / used).is_file()
    assert not (workdir / "scalefit.duckdb").exists()


# --------------------------------------------------------------------- --help


@pytest.mark.parametrize("command", [*COMMANDS, "models"])
def test_help_shows_every_default(command: str) -> None:
    click_command = typer.main.get_command(app).commands[command]
    result = runner.invoke(app, [command, "--help"], env={"TERMINAL_WIDTH": "300"})
    assert result.exit_code == 0
    # One block per option: from a line starting with its flag to the next option's line.
    blocks = re.split(r"\n│ +(?=-)", result.stdout)
    checked = 0
    for param in click_command.params:
        flag = param.opts[0]
        if not flag.startswith("-") or param.required or param.name == "help":
            continue
        block = [b for b in blocks if re.match(re.escape(flag) + r"[\s,]", b)]
        assert len(block) == 1, (flag, result.stdout)
        assert "[default: " in block[0], (command, flag, block[0])
        checked += 1
    assert checked >= 1
