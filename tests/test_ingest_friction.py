"""Ingest friction met when fitting real logs (issue 15): human counts in files, step 0 with
``tokens = 0``, runs without tokens, the cause of "no data rows", and stale quarantine rows.

Real files in ``tmp_path`` and a real DuckDB file; nothing of the store is mocked.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ingest_files import rows
from test_ingest import _accounting_holds
from typer.testing import CliRunner

from scalefit._counts import parse_count
from scalefit.cli import app
from scalefit.cli.ingest import parse_count as cli_parse_count
from scalefit.load.logs import ingest_paths

# ------------------------------------------------------------------ 1. human counts


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("350M", 350e6),
        ("350m", 350e6),
        ("1.3B", 1.3e9),
        ("7b", 7e9),
        ("2K", 2e3),
        ("1t", 1e12),
        ("125000000", 125e6),
        ("1.25e8", 1.25e8),
        ("2_048", 2048.0),
        (" 350 M ", 350e6),
        (4096, 4096.0),
    ],
)
def test_parse_count_reads_human_counts(text: str, value: float) -> None:
    assert parse_count(text) == pytest.approx(value, rel=1e-12)


@pytest.mark.parametrize("text", ["lots", "M", "", "-5M", "0", "inf", "nan", True])
def test_parse_count_rejects_what_is_no_positive_count(text: object) -> None:
    with pytest.raises(ValueError):
        parse_count(text)  # type: ignore[arg-type]


def test_cli_and_files_share_one_parser() -> None:
    import typer

    assert cli_parse_count("1.3B") == parse_count("1.3B")
    with pytest.raises(typer.BadParameter, match="not a count"):
        cli_parse_count("lots")


def _letters(text: str) -> str:
    """``text`` without what a table's wrapping puts in it (blanks, borders, quotes)."""
    return "".join(c for c in text if c.isalnum())


def _log(path: Path, lines: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(lines)
    return path


def test_sidecar_human_counts_are_accepted(tmp_path: Path, db_path: Path) -> None:
    log = _log(tmp_path / "gpt-350m" / "log.csv", "step,tokens,loss\n1,4096,4.0\n2,8192,3.5\n")
    (tmp_path / "gpt-350m" / "run.json").write_text(
        json.dumps({"params": "350M", "unique_tokens": "1.3B", "tokens_per_step": "4k"})
    )
    (info,) = ingest_paths(db_path, [log])
    assert (info.status, info.rows_ok, info.rows_rejected) == ("ok", 2, 0), info
    assert rows(db_path, "SELECT run_id, params, unique_tokens, tokens_per_step FROM runs") == [
        ("gpt-350m", 350e6, 1.3e9, 4e3)
    ]
    assert rows(db_path, "SELECT count(*) FROM quarantine") == [(0,)]


def test_per_run_sidecar_counts_and_csv_and_jsonl_columns(tmp_path: Path, db_path: Path) -> None:
    csv = _log(
        tmp_path / "a" / "sweep.csv",
        "run_id,step,tokens,loss,params\nsmall,1,4096,4.0,7b\nsmall,2,8192,3.5,7b\n"
        "big,1,4096,3.9,\n",
    )
    (tmp_path / "a" / "run.json").write_text(json.dumps({"runs": {"big": {"params": "1.3B"}}}))
    jsonl = _log(
        tmp_path / "b" / "m.jsonl",
        "\n".join(
            json.dumps({"run_id": "j", "step": s, "tokens": s * 1e6, "loss": 3.0, "params": "125M"})
            for s in (1, 2)
        )
        + "\n",
    )
    report = ingest_paths(db_path, [csv, jsonl])
    assert [i.status for i in report] == ["ok", "ok"], [str(i) for i in report]
    assert rows(db_path, "SELECT run_id, params FROM runs ORDER BY 1") == [
        ("big", 1.3e9),
        ("j", 125e6),
        ("small", 7e9),
    ]


def test_a_count_that_is_no_count_is_still_rejected_with_its_value(
    tmp_path: Path, db_path: Path
) -> None:
    log = _log(tmp_path / "r" / "log.csv", "step,tokens,loss\n1,4096,4.0\n")
    (tmp_path / "r" / "run.json").write_text(json.dumps({"params": "big"}))
    (info,) = ingest_paths(db_path, [log])
    assert (info.status, info.rows_rejected) == ("rejected_rows", 1)
    (reason,) = rows(db_path, "SELECT reason FROM quarantine")[0]
    assert "`params` = big is not a number" in reason


# ------------------------------------------------------------------ 2. step 0 with tokens 0


def test_step_zero_with_zero_tokens_ingests_cleanly(tmp_path: Path, db_path: Path) -> None:
    log = _log(tmp_path / "log.csv", "run_id,step,tokens,loss\nr,0,0,10.9\nr,10,40960,4.0\n")
    result = CliRunner().invoke(app, ["ingest", str(log), "--params", "125M", "--db", str(db_path)])
    assert result.exit_code == 0, result.output
    assert rows(db_path, "SELECT count(*) FROM quarantine") == [(0,)]
    assert rows(db_path, "SELECT step, tokens FROM observations ORDER BY step") == [
        (0, 0.0),
        (10, 40960.0),
    ]
    assert rows(db_path, "SELECT tokens FROM runs") == [(40960.0,)]


def test_negative_tokens_and_zero_loss_are_still_rejected(tmp_path: Path, db_path: Path) -> None:
    log = _log(tmp_path / "log.csv", "run_id,step,tokens,loss\nr,1,-1,4.0\nr,2,8192,0\n")
    (info,) = ingest_paths(db_path, [log], params=1e6)
    assert info.rows_rejected == 2
    reasons = [r for (r,) in rows(db_path, "SELECT reason FROM quarantine ORDER BY row_number")]
    assert reasons == [
        "`tokens` = -1.0: must be >= 0",
        "`loss` = 0.0: must be > 0 (a loss) or in [0, 1] (an `accuracy:` metric)",
    ]


# ------------------------------------------------------------------ 3. no token information


def test_a_run_without_tokens_is_stored_with_a_warning(tmp_path: Path, db_path: Path) -> None:
    log = _log(tmp_path / "log.csv", "run_id,step,loss\nnotok,1,4.0\nnotok,2,3.5\n")
    tokens = _log(tmp_path / "t.csv", "run_id,step,tokens,loss\nhastok,1,4096,4.0\n")
    report = ingest_paths(db_path, [log, tokens], params=1e6)
    first, second = report
    assert first.status == "ok" and first.rows_ok == 2
    assert len(first.warnings) == 1
    assert "run `notok` has no token information" in first.warnings[0]
    assert "num_input_tokens_seen" in first.warnings[0]
    assert "tokens_per_step" in first.warnings[0]
    assert first.warnings[0] in (first.message or "")
    assert second.warnings == ()

    runner = CliRunner()
    log.write_text("run_id,step,loss\nnotok,1,4.0\nnotok,2,3.4\n")
    result = runner.invoke(app, ["ingest", str(log), "--params", "1e6", "--db", str(db_path)])
    assert result.exit_code == 0, result.output
    assert "warninglogcsvrunnotokhasnotokeninformation" in _letters(result.output)


def test_tokens_per_step_silences_the_warning(tmp_path: Path, db_path: Path) -> None:
    log = _log(tmp_path / "log.csv", "run_id,step,loss\nr,1,4.0\nr,2,3.5\n")
    (info,) = ingest_paths(db_path, [log], params=1e6, tokens_per_step=1024)
    assert info.warnings == ()
    assert "token information" not in (info.message or "")


# ------------------------------------------------------------------ 4. the cause


def test_missing_params_is_named_as_the_cause(tmp_path: Path, db_path: Path) -> None:
    log = _log(tmp_path / "log.csv", "run_id,step,tokens,loss\nrx,1,4096,4.0\n")
    (info,) = ingest_paths(db_path, [log])
    assert info.status == "rejected_rows"
    assert "no data rows" not in (info.message or "")
    assert "run `rx` has no parameter count" in (info.message or "")
    assert "--params" in (info.message or "")

    # The CLI's table shows it (in a fresh store: in this one the file is unchanged).
    result = CliRunner().invoke(app, ["ingest", str(log), "--db", str(tmp_path / "cli.duckdb")])
    assert result.exit_code == 2, result.output
    letters = _letters(result.output)
    assert "nodatarows" not in letters
    assert "runrxhasnoparametercount" in letters


# ------------------------------------------------------------------ 5. stale quarantine


def test_fixing_a_file_clears_its_quarantine(tmp_path: Path, db_path: Path) -> None:
    log = _log(tmp_path / "log.csv", "run_id,step,tokens,loss\nr,1,4096,4.0\nr,2,8192,nan\n")
    other = _log(tmp_path / "other.csv", "run_id,step,tokens,loss\no,1,4096,-1\n")
    first, _ = ingest_paths(db_path, [log, other], params=1e6)
    assert first.rows_rejected == 1
    assert rows(db_path, "SELECT count(*) FROM quarantine WHERE path = ?", [first.path]) == [(1,)]

    log.write_text("run_id,step,tokens,loss\nr,1,4096,4.0\nr,2,8192,3.5\n")
    (fixed,) = ingest_paths(db_path, [log], params=1e6)
    assert (fixed.status, fixed.mode, fixed.rows_rejected) == ("ok", "replaced", 0)
    assert rows(db_path, "SELECT count(*) FROM quarantine WHERE path = ?", [first.path]) == [(0,)]
    # Another file's problems stay; every attempt stays in `ingests`.
    assert rows(db_path, "SELECT count(*) FROM quarantine WHERE path <> ?", [first.path]) == [(1,)]
    assert rows(
        db_path, "SELECT status FROM ingests WHERE path = ? ORDER BY started_at", [first.path]
    ) == [("rejected_rows",), ("ok",)]
    _accounting_holds(db_path)


def test_a_new_version_with_other_problems_keeps_only_those(tmp_path: Path, db_path: Path) -> None:
    log = _log(tmp_path / "log.csv", "run_id,step,tokens,loss\nr,1,4096,nan\n")
    (first,) = ingest_paths(db_path, [log], params=1e6)
    log.write_text("run_id,step,tokens,loss\nr,1,4096,4.0\nr,2,-5,3.5\n")
    (second,) = ingest_paths(db_path, [log], params=1e6)
    assert second.mode == "replaced"
    assert rows(db_path, "SELECT ingest_id, row_number FROM quarantine") == [(second.ingest_id, 2)]
    assert first.ingest_id != second.ingest_id
