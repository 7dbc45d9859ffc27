"""`scalefit refresh`, `sql` and `models` as a person runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from scalefit import store
from scalefit.cli import app
from scalefit.load import curated

runner = CliRunner()


@pytest.fixture
def loaded_db(db_path: Path) -> Path:
    with store.connect(db_path) as con:
        curated.load_curated(con, curated.read_curated())
    return db_path


def test_sql_json_is_one_array_of_objects(loaded_db: Path) -> None:
    result = runner.invoke(
        app,
        [
            "sql",
            "select family, count(*) as n from models group by 1 order by 1",
            "--db",
            str(loaded_db),
            "--format",
            "json",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert isinstance(rows, list) and len(rows) == 12
    assert {"family": "GPT-3", "n": 8} in rows


def test_sql_csv(loaded_db: Path) -> None:
    result = runner.invoke(
        app,
        [
            "sql",
            "select model_id from models where family = 'PaLM'",
            "--db",
            str(loaded_db),
            "-f",
            "csv",
        ],
    )
    assert result.exit_code == 0
    assert result.stdout.splitlines() == ["model_id", "palm-540b"]


def test_bad_query_is_one_line_and_nonzero(loaded_db: Path) -> None:
    result = runner.invoke(app, ["sql", "select * from nope", "--db", str(loaded_db)])
    assert result.exit_code == 1
    assert result.stderr.strip().count("\n") == 0
    assert "nope" in result.stderr and "Traceback" not in result.output


def test_missing_database_is_one_line_and_nonzero(tmp_path: Path) -> None:
    result = runner.invoke(app, ["sql", "select 1", "--db", str(tmp_path / "none.duckdb")])
    assert result.exit_code == 1
    assert "no database at" in result.stderr and "scalefit refresh" in result.stderr
    assert not (tmp_path / "none.duckdb").exists()


def test_models_lists_curated_models() -> None:
    result = runner.invoke(app, ["models", "--format", "json"])
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    assert len(rows) == curated.read_curated().models.height
    result = runner.invoke(app, ["models", "--family", "deepseek-v3", "-f", "json"])
    (v3,) = json.loads(result.stdout)
    assert v3["active_params"] == 37e9


def test_help_explains_each_command() -> None:
    for command in ("refresh", "sql", "models"):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0
        assert "--db" in result.stdout or command == "models"


@pytest.mark.slow
def test_refresh_command_twice_from_another_directory(tmp_path: Path) -> None:
    """The installed command, in a fresh process, from a directory that is not the clone."""
    env = dict(os.environ)
    exe = Path(sys.executable).with_name("scalefit")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "scalefit"]
    for _ in range(2):
        done = subprocess.run(
            [*cmd, "refresh"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr
    assert (tmp_path / "scalefit.duckdb").is_file()
    assert (tmp_path / "reports" / "comparisons.parquet").is_file()
    out = subprocess.run(
        [*cmd, "sql", "select count(*) as n from ingests", "-f", "json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert json.loads(out.stdout) == [{"n": 1}]
