"""Ingest edges that printed tracebacks or lost valid rows (issue 11): an empty `step` cell, a
table without a step column, JSON nested past the recursion limit, a sidecar whose width
overflows, and a loss of 0 (rejected at ingest: laws are fitted to the log of the loss).

Real files in ``tmp_path`` and a real DuckDB file.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import polars as pl
import pytest
from ingest_files import rows
from typer.testing import CliRunner

from scalefit.cli import app
from scalefit.load.logs import ingest_paths, params_from_config
from scalefit.load.validate import validate_frame
from scalefit.schemas import ObservationSchema

DEEP = "[" * 100_000 + "]" * 100_000  # past Python's recursion limit for json.loads


def _quarantine(db: Path) -> list[tuple[int, str]]:
    return rows(db, "SELECT row_number, reason FROM quarantine ORDER BY row_number")


def _no_traceback_logged(caplog: pytest.LogCaptureFixture) -> None:
    assert not [r for r in caplog.records if r.exc_info], "an unexpected error was logged"


def test_a_missing_value_in_a_non_nullable_column_is_rejected_not_passed():
    frame = pl.DataFrame(
        {
            "run_id": ["r", "r"],
            "step": ["1", None],
            "tokens": ["10", "20"],
            "flops": [None, None],
            "metric": ["loss", "loss"],
            "value": ["3.0", "2.9"],
            "ingest_id": [None, None],
        },
        schema_overrides={"flops": pl.String, "ingest_id": pl.String},
    )
    checked = validate_frame(frame, ObservationSchema)
    assert checked.valid["step"].to_list() == [1]
    assert checked.rejected.select("row_number", "reason").rows() == [(2, "`step` is missing")]


def test_an_empty_step_cell_quarantines_its_row_and_keeps_the_others(
    tmp_path: Path, db_path: Path, caplog: pytest.LogCaptureFixture
):
    log = tmp_path / "log.csv"
    log.write_text("run_id,step,tokens,loss\nr1,1,1000,3.0\nr1,,2000,2.9\nr1,3,3000,2.8\n")
    with caplog.at_level(logging.ERROR):
        (info,) = ingest_paths(db_path, [log], params=1e8)
    _no_traceback_logged(caplog)
    assert (info.status, info.rows_in, info.rows_ok, info.rows_rejected) == (
        "rejected_rows",
        3,
        2,
        1,
    )
    assert _quarantine(db_path) == [(2, "`step` is missing")]
    assert rows(db_path, "SELECT step, value FROM observations ORDER BY step") == [
        (1, 3.0),
        (3, 2.8),
    ]


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_a_table_without_a_step_column_fails_with_a_clear_message(
    suffix: str, tmp_path: Path, db_path: Path, caplog: pytest.LogCaptureFixture
):
    log = tmp_path / f"log.{suffix}"
    frame = pl.DataFrame({"run_id": ["r1", "r1"], "tokens": [1e3, 2e3], "loss": [3.0, 2.9]})
    frame.write_csv(log) if suffix == "csv" else frame.write_parquet(log)
    with caplog.at_level(logging.ERROR):
        (info,) = ingest_paths(db_path, [log], params=1e8)
    _no_traceback_logged(caplog)
    assert info.status == "failed"
    assert "no step column" in info.message and "columns are: run_id, tokens, loss" in info.message
    assert "Constraint" not in info.message


def test_deeply_nested_jsonl_line_is_quarantined(
    tmp_path: Path, db_path: Path, caplog: pytest.LogCaptureFixture
):
    log = tmp_path / "log.jsonl"
    good = json.dumps({"run_id": "a", "step": 1, "tokens": 10, "loss": 3.0})
    log.write_text(good + "\n" + '{"run_id": "a", "step": 2, "loss": 2.9, "x": ' + DEEP + "}\n")
    with caplog.at_level(logging.ERROR):
        (info,) = ingest_paths(db_path, [log], params=1e8)
    _no_traceback_logged(caplog)
    assert (info.rows_ok, info.rows_rejected) == (1, 1)
    assert _quarantine(db_path) == [(2, "line is nested too deeply to read as JSON")]


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("trainer_state.json", '{"log_history": ' + DEEP + "}", "nested too deeply"),
        ("run.json", '{"params": ' + DEEP + "}", "nested too deeply"),
        ("run.json", '{"n_layer": 12, "d_model": 1e200}', "no finite parameter count"),
        ("run.yaml", "n_layer: 12\nd_model: 1.0e+200\n", "no finite parameter count"),
    ],
)
def test_unreadable_json_or_overflowing_sidecar_is_one_clear_failure(
    name: str,
    text: str,
    expected: str,
    tmp_path: Path,
    db_path: Path,
    caplog: pytest.LogCaptureFixture,
):
    (tmp_path / name).write_text(text)
    log = tmp_path / name if name == "trainer_state.json" else tmp_path / "log.csv"
    if name != "trainer_state.json":
        log.write_text("run_id,step,tokens,loss\nr1,1,1000,3.0\n")
    with caplog.at_level(logging.ERROR):
        (info,) = ingest_paths(db_path, [log])
    _no_traceback_logged(caplog)
    assert info.status == "failed"
    assert expected in info.message
    assert rows(db_path, "SELECT count(*) FROM observations") == [(0,)]


def test_params_from_config_refuses_an_overflowing_width():
    from scalefit.errors import IngestError

    assert params_from_config({"n_layer": 2, "d_model": 10}) == 2400.0
    with pytest.raises(IngestError, match="no finite parameter count"):
        params_from_config({"n_layer": 12, "d_model": 1e200})


def test_a_loss_of_zero_is_rejected_at_ingest_with_a_reason(tmp_path: Path, db_path: Path):
    log = tmp_path / "log.csv"
    log.write_text("run_id,step,tokens,loss\nr1,1,1000,3.0\nr1,2,2000,0\nr1,3,3000,2.8\n")
    (info,) = ingest_paths(db_path, [log], params=1e8)
    assert (info.rows_ok, info.rows_rejected) == (2, 1)
    assert _quarantine(db_path) == [
        (2, "`loss` = 0.0: must be > 0 (a loss) or in [0, 1] (an `accuracy:` metric)")
    ]
    assert rows(db_path, "SELECT count(*) FROM observations WHERE value <= 0") == [(0,)]


def test_fit_refuses_a_non_positive_loss_in_an_input_file(tmp_path: Path):
    points = tmp_path / "points.csv"
    points.write_text("params,tokens,loss\n1e8,2e9,3.0\n2e8,4e9,0\n4e8,8e9,2.6\n")
    result = CliRunner().invoke(app, ["fit", "--input", str(points), "--json"])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    message = json.loads(result.stdout)["error"]
    assert "`loss` are not positive finite numbers" in message and "row 2" in message
