"""A store written by scalefit opens in DuckDB 1.4 (the CLI, DBeaver, R and Node clients most
people run), read by a real DuckDB 1.4 in its own environment.

``python3 dev.py test`` builds that environment once (``.venv-duckdb14``, ``duckdb>=1.4,<1.5``)
and passes its interpreter as ``SCALEFIT_DUCKDB14_PYTHON``; nothing is installed here.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from scalefit import compare, store
from scalefit.cli import app
from scalefit.load import curated

ROOT = Path(__file__).resolve().parent.parent
PYTHON = Path(
    os.environ.get("SCALEFIT_DUCKDB14_PYTHON") or ROOT / ".venv-duckdb14" / "bin" / "python"
)

pytestmark = pytest.mark.skipif(
    not PYTHON.is_file(),
    reason=f"no DuckDB 1.4 interpreter at {PYTHON}: `python3 dev.py test` builds "
    ".venv-duckdb14, or set SCALEFIT_DUCKDB14_PYTHON to a Python with duckdb 1.4",
)

# Runs under DuckDB 1.4: every table and view of the store, row counts.
READ_ALL = """
import duckdb, json, sys
con = duckdb.connect(sys.argv[1], read_only=True)
names = [r[0] for r in con.execute(
    "select table_name from information_schema.tables order by 1").fetchall()]
counts = {n: con.execute(f'select count(*) from "{n}"').fetchone()[0] for n in names}
print(json.dumps({"version": duckdb.__version__, "counts": counts}))
"""


@pytest.fixture(autouse=True)
def _restore_storage_version(monkeypatch: pytest.MonkeyPatch) -> None:
    """`scalefit ingest` sets the process's storage version from the settings; undo it."""
    monkeypatch.setattr(store, "_storage_version", store._storage_version)


def _read_with_duckdb14(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(PYTHON), "-c", READ_ALL, str(path)], capture_output=True, text=True, timeout=120
    )


def _write_store(tmp_path: Path, env: dict[str, str]) -> Path:
    """A store made the way a user makes one: `scalefit ingest` of a log, then the curated
    datasets and the comparisons view."""
    db = tmp_path / "sf.duckdb"
    log = tmp_path / "run.csv"
    log.write_text("run_id,step,tokens,loss,params\nr1,1,1e9,3.1,1e8\nr1,2,2e9,2.9,1e8\n")
    result = CliRunner().invoke(app, ["ingest", str(log), "--db", str(db)], env=env)
    assert result.exit_code == 0, result.output
    with store.connect(db) as con:
        curated.load_curated(con, curated.read_curated())
        compare.refresh_comparisons(con)
    return db


def test_a_new_store_opens_in_duckdb_1_4(tmp_path: Path) -> None:
    db = _write_store(tmp_path, {"SCALEFIT_STORAGE_VERSION": None})
    with store.connect(db, read_only=True) as con:
        ours = {
            n: con.execute(f'select count(*) from "{n}"').fetchone()[0]
            for (n,) in con.execute(
                "select table_name from information_schema.tables order by 1"
            ).fetchall()
        }
    done = _read_with_duckdb14(db)
    assert done.returncode == 0, done.stderr
    theirs = json.loads(done.stdout)
    assert theirs["version"].startswith("1.4.")
    assert theirs["counts"] == ours and ours["models"] == 34 and ours["observations"] == 2
    assert ours["comparisons"] > 0  # the view too


def test_the_newest_storage_version_is_what_1_4_refuses(tmp_path: Path) -> None:
    """The check above can fail: a store in the newest format is refused by DuckDB 1.4."""
    db = _write_store(tmp_path, {"SCALEFIT_STORAGE_VERSION": "latest"})
    done = _read_with_duckdb14(db)
    assert done.returncode != 0 and "version" in done.stderr
