"""Ingest of users' logs: every format as its tool writes it, malformed files, and re-ingests.

Real files in ``tmp_path`` and a real DuckDB file; nothing of the store is mocked.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from ingest_files import (
    curve_rows,
    rows,
    snapshot,
    write_long_csv,
    write_trainer_state,
    write_wandb_history,
    write_wandb_wide,
)
from typer.testing import CliRunner

from scalefit.cli import app
from scalefit.load.logs import discover, ingest_file, ingest_paths, params_from_config


def _accounting_holds(db: Path) -> None:
    bad = rows(db, "SELECT ingest_id FROM ingests WHERE rows_in <> rows_ok + rows_rejected")
    assert bad == []
    # Every rejected row is in `quarantine`, until a new version of the file replaces the
    # ingest (its rows go with it: `quarantine` shows current problems only).
    per_ingest = rows(
        db,
        """SELECT i.rows_rejected, (SELECT count(*) FROM quarantine q
                                    WHERE q.ingest_id = i.ingest_id),
                  EXISTS (SELECT 1 FROM ingests j WHERE j.path = i.path
                          AND j.started_at > i.started_at AND j.status <> 'failed')
           FROM ingests i""",
    )
    assert all(a == b or (b == 0 and later) for a, b, later in per_ingest)


def _reasons(db: Path) -> list[str]:
    return [r[0] for r in rows(db, "SELECT reason FROM quarantine ORDER BY row_number")]


# ------------------------------------------------------------------ formats


def test_long_csv_with_run_columns(tmp_path: Path, db_path: Path) -> None:
    log = write_long_csv(
        tmp_path / "sweep.csv",
        curve_rows("a", range(1, 101), params=1e7, eval_every=10)
        + curve_rows("b", range(1, 51), params=2e7),
    )
    (info,) = ingest_paths(db_path, [log], project="sweep1")
    assert (info.status, info.mode, info.format) == ("ok", "new", "csv")
    assert info.rows_in == 100 + 10 + 50 == info.rows_ok
    assert info.runs == ("a", "b")
    assert rows(
        db_path, "SELECT run_id, project, params, params_method, tokens FROM runs ORDER BY 1"
    ) == [
        ("a", "sweep1", 1e7, "given", 100 * 4096.0),
        ("b", "sweep1", 2e7, "given", 50 * 4096.0),
    ]
    assert rows(db_path, "SELECT metric, count(*) FROM observations GROUP BY 1 ORDER BY 1") == [
        ("eval_loss", 10),
        ("loss", 150),
    ]
    _accounting_holds(db_path)


def test_tokens_from_tokens_per_step_and_step_zero(tmp_path: Path, db_path: Path) -> None:
    log = tmp_path / "log.csv"
    log.write_text("run_id,step,loss\nr,0,9.5\nr,10,4.0\nr,20,3.5\n")
    (info,) = ingest_paths(db_path, [log], params=1e6, tokens_per_step=1024)
    assert info.status == "ok"
    assert rows(db_path, "SELECT step, tokens FROM observations ORDER BY step") == [
        (0, 0.0),  # 0 x 1024: nothing trained before the first step, as a logged 0 says
        (10, 10240.0),
        (20, 20480.0),
    ]
    assert rows(db_path, "SELECT tokens, tokens_per_step FROM runs") == [(20480.0, 1024.0)]


def test_jsonl_with_bad_lines_and_a_half_written_last_line(tmp_path: Path, db_path: Path) -> None:
    log = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"run_id": "j", "step": s, "train_loss": 4.0 - s / 100}) for s in (1, 2)]
    lines.append('{"run_id": "j", "step": 3, "train_loss": ')  # truncated in the middle
    lines.append(json.dumps({"run_id": "j", "step": 4, "train_loss": 3.9, "eval_loss": 4.1}))
    log.write_text("\n".join(lines) + '\n{"run_id": "j", "st')  # still being written
    (info,) = ingest_paths(db_path, [log], params=1e6)
    assert (info.status, info.rows_in, info.rows_ok, info.rows_rejected) == (
        "rejected_rows",
        5,
        4,
        1,
    )
    q = rows(db_path, "SELECT row_number, raw, reason FROM quarantine")
    assert q[0][0] == 3
    assert "not valid JSON" in q[0][2]
    assert json.loads(q[0][1])["line"].startswith('{"run_id": "j", "step": 3')
    # The half-written line is not consumed: the checkpoint stops before it.
    text = log.read_bytes()
    assert info.checkpoint_bytes == text.rindex(b"\n") + 1


def test_jsonl_run_level_keys_are_read_like_columns(tmp_path: Path, db_path: Path) -> None:
    log = tmp_path / "metrics.jsonl"
    lines = [
        {"run_id": "small", "step": 1, "tokens": 1e9, "loss": 3.2, "params": 5e7},
        {"run_id": "small", "step": 2, "tokens": 2e9, "loss": 3.1, "params": 5e7},
        # The key may be on some lines only; a line without it is the same run.
        {"run_id": "big", "step": 1, "tokens": 1e9, "loss": 3.0, "project": "sweep"},
        {"run_id": "big", "step": 2, "tokens": 2e9, "loss": 2.9, "params": "1.2e8"},
    ]
    log.write_text("".join(json.dumps(line) + "\n" for line in lines))
    (info,) = ingest_paths(db_path, [log])
    assert (info.status, info.rows_ok, info.rows_rejected) == ("ok", 4, 0)
    assert rows(db_path, "SELECT run_id, project, params, params_method FROM runs ORDER BY 1") == [
        ("big", "sweep", 1.2e8, "given"),
        ("small", "default", 5e7, "given"),
    ]
    # A grown log: the new line re-logs a step (the later value wins), params stay read.
    with log.open("a") as fh:
        fh.write(json.dumps({**lines[0], "loss": 3.25}) + "\n")
    (again,) = ingest_paths(db_path, [log])
    assert (again.status, again.rows_in, again.rows_ok) == ("ok", 1, 1)
    assert rows(db_path, "SELECT value FROM observations WHERE run_id = 'small' AND step = 1") == [
        (3.25,)
    ]
    # A file that repeats a key within itself (its earlier copy quarantined) and whose params
    # appear only on a later line is read the same way.
    other = tmp_path / "other.jsonl"
    dup = [
        {"run_id": "mid", "step": 1, "loss": 3.5, "tokens": 1e9},
        {"run_id": "mid", "step": 1, "loss": 3.4, "tokens": 1e9, "params": 8e7},
    ]
    other.write_text("".join(json.dumps(line) + "\n" for line in dup))
    (third,) = ingest_paths(db_path, [other])
    assert (third.status, third.rows_ok, third.rows_rejected) == ("rejected_rows", 1, 1)
    assert rows(db_path, "SELECT params FROM runs WHERE run_id = 'mid'") == [(8e7,)]
    _accounting_holds(db_path)


def test_parquet_typed_columns(tmp_path: Path, db_path: Path) -> None:
    log = tmp_path / "runs.parquet"
    pl.DataFrame(
        {
            "run_id": ["p", "p", "p", "p"],
            "step": [1.0, 2.0, 2.5, 4.0],
            "tokens": [1e3, 2e3, 2.5e3, 4e3],
            "loss": [4.0, float("nan"), 3.0, -0.5],
            "params": [5e6] * 4,
            "learning_rate": [1e-4] * 4,
        }
    ).write_parquet(log)
    (info,) = ingest_paths(db_path, [log])
    assert (info.format, info.rows_in, info.rows_ok, info.rows_rejected) == ("parquet", 4, 1, 3)
    assert "ignored columns: learning_rate" in info.message
    reasons = _reasons(db_path)
    assert reasons == [
        "`loss` = NaN: must be a finite number (not NaN or infinity)",
        "`step` = 2.5 is not a whole number",
        "`loss` = -0.5: must be > 0 (a loss) or in [0, 1] (an `accuracy:` metric)",
    ]


def test_trainer_state_with_sidecar_json(tmp_path: Path, db_path: Path) -> None:
    out = tmp_path / "gpt2-small"
    state = write_trainer_state(out / "checkpoint-100")
    (out / "checkpoint-100" / "run.json").write_text(
        json.dumps({"params": 1.24e8, "tokens_per_step": 8192, "project": "hf", "lr": 5e-5})
    )
    (info,) = ingest_paths(db_path, [state])
    assert (info.format, info.status) == ("trainer_state", "ok")
    # 10 training logs + 2 evaluations; the closing summary (train_runtime) is not a step.
    assert info.rows_in == 12
    run = rows(db_path, "SELECT run_id, project, params, flops, tokens, config FROM runs")[0]
    assert run[:5] == ("gpt2-small", "hf", 1.24e8, 1234567890123456.0, 100 * 8192.0)
    config = json.loads(run[5])
    assert config["lr"] == 5e-5 and config["train_batch_size"] == 8
    assert rows(
        db_path,
        "SELECT metric, min(step), max(step), count(*) FROM observations GROUP BY 1 ORDER BY 1",
    ) == [("eval_loss", 50, 100, 2), ("train_loss", 10, 100, 10)]


def test_params_from_config_in_run_yaml(tmp_path: Path, db_path: Path) -> None:
    folder = tmp_path / "run-7"
    folder.mkdir()
    (folder / "run.yaml").write_text(
        "run_id: tiny-7\ntokens_per_step: 4096\nconfig:\n  n_layer: 4\n  d_model: 256\n"
        "  vocab_size: 50257\n"
    )
    log = folder / "log.csv"
    log.write_text("step,loss\n10,5.0\n20,4.5\n")
    (info,) = ingest_paths(db_path, [folder])
    assert info.status == "ok"
    assert rows(db_path, "SELECT run_id, params, params_method, tokens FROM runs") == [
        ("tiny-7", 12 * 4 * 256**2, "config_12ld2", 20 * 4096.0)
    ]
    assert params_from_config({"num_hidden_layers": 2, "hidden_size": 10}) == 2400.0


def test_wandb_history_export(tmp_path: Path, db_path: Path) -> None:
    log = write_wandb_history(tmp_path / "wandb_export.csv", range(10, 210, 10))
    (tmp_path / "run.json").write_text('{"run_id": "lucky-sun-3", "params": 3e7}')
    (info,) = ingest_paths(db_path, [log], tokens_per_step=2048)
    assert (info.format, info.status) == ("wandb", "ok")
    assert info.rows_in == 20 + 4
    # W&B's `_step` counts log calls; the trainer's global step is the step.
    assert rows(
        db_path,
        "SELECT metric, min(step), max(step), max(tokens) FROM observations GROUP BY 1 ORDER BY 1",
    ) == [("eval_loss", 50, 200, 200 * 2048.0), ("train_loss", 10, 200, 200 * 2048.0)]
    assert "_runtime" in info.message


def test_wandb_chart_export(tmp_path: Path, db_path: Path) -> None:
    log = write_wandb_wide(
        tmp_path / "chart.csv", {"run-a": [10, 20, 30], "run-b": [10, 30, 40, 50]}
    )
    (info,) = ingest_paths(db_path, [log], params=1e7)
    assert (info.format, info.status, info.rows_in) == ("wandb", "ok", 7)
    assert rows(
        db_path, "SELECT run_id, metric, count(*) FROM observations GROUP BY 1, 2 ORDER BY 1"
    ) == [("run-a", "train_loss", 3), ("run-b", "train_loss", 4)]


# ------------------------------------------------------------------ malformed input


def test_truncated_trainer_state_fails_and_the_rest_goes_on(tmp_path: Path, db_path: Path) -> None:
    bad = write_trainer_state(tmp_path / "bad")
    bad.write_text(bad.read_text()[:500])
    good = write_long_csv(tmp_path / "good" / "log.csv", curve_rows("g", range(1, 6), params=1e6))
    report = ingest_paths(db_path, [bad, good])
    assert [i.status for i in report] == ["failed", "ok"]
    assert "not valid JSON" in report[0].message and "truncated" in report[0].message
    assert report.exit_code == 1
    assert rows(db_path, "SELECT status, rows_in FROM ingests ORDER BY status") == [
        ("failed", 0),
        ("ok", 5),
    ]
    # An unchanged failed file is reported again but not recorded again.
    again = ingest_paths(db_path, [bad])
    assert again[0].status == "failed"
    assert rows(db_path, "SELECT count(*) FROM ingests WHERE status = 'failed'") == [(1,)]


def test_text_negative_and_nan_values_are_quarantined(tmp_path: Path, db_path: Path) -> None:
    log = tmp_path / "log.csv"
    log.write_text(
        "run_id,step,tokens,loss\n"
        "r,1,1000,4.0\n"
        "r,2,2000,four\n"
        "r,3,3000,-1.5\n"
        "r,4,4000,NaN\n"
        "r,x,5000,3.0\n"
        "r,6,-6000,3.0\n"
    )
    (info,) = ingest_paths(db_path, [log], params=1e6)
    assert (info.status, info.rows_ok, info.rows_rejected) == ("rejected_rows", 1, 5)
    assert _reasons(db_path) == [
        "`loss` = four is not a number",
        "`loss` = -1.5: must be > 0 (a loss) or in [0, 1] (an `accuracy:` metric)",
        "`loss` = NaN: must be a finite number (not NaN or infinity)",
        "`step` = x is not a whole number",
        "`tokens` = -6000.0: must be >= 0",
    ]
    raw = json.loads(rows(db_path, "SELECT raw FROM quarantine WHERE row_number = 2")[0][0])
    assert raw == {"run_id": "r", "step": "2", "tokens": "2000", "loss": "four"}
    _accounting_holds(db_path)


def test_missing_params_rejects_the_run_with_how_to_fix(tmp_path: Path, db_path: Path) -> None:
    log = write_long_csv(tmp_path / "log.csv", curve_rows("np", range(1, 4)))
    (info,) = ingest_paths(db_path, [log])
    assert (info.status, info.rows_ok, info.rows_rejected) == ("rejected_rows", 0, 3)
    reason = _reasons(db_path)[0]
    assert "run `np` has no parameter count" in reason
    assert "--params" in reason and "run.json" in reason
    assert rows(db_path, "SELECT count(*) FROM runs") == [(0,)]
    # Passing --params changes the settings: the same bytes are read again, now accepted.
    (again,) = ingest_paths(db_path, [log], params=1e6)
    assert (again.status, again.mode, again.rows_ok) == ("ok", "replaced", 3)


def test_a_lone_row_of_a_rejected_run_is_quarantined_not_a_failed_file(
    tmp_path: Path, db_path: Path
) -> None:
    # The reason names the metric of a bad value; a row without one (its run was rejected)
    # made that rewrite fail the whole file when no row of the chunk had a metric.
    log = tmp_path / "log.csv"
    log.write_text("run_id,step,loss\nnp,1,4.0\n")
    (info,) = ingest_paths(db_path, [log])
    assert (info.status, info.rows_in, info.rows_rejected) == ("rejected_rows", 1, 1)
    assert "run `np` has no parameter count" in _reasons(db_path)[0]


def test_params_that_differ_within_a_run_reject_it(tmp_path: Path, db_path: Path) -> None:
    log = tmp_path / "log.csv"
    log.write_text("run_id,step,loss,params\nr,1,4.0,1e6\nr,2,3.9,2e6\ns,1,4.0,1e6\n")
    (info,) = ingest_paths(db_path, [log])
    assert (info.rows_ok, info.rows_rejected) == (1, 2)
    assert "`params` differs between its rows" in _reasons(db_path)[0]


def test_duplicated_steps_keep_the_last(tmp_path: Path, db_path: Path) -> None:
    log = tmp_path / "log.csv"
    # A run resumed from step 2 re-logs steps 2 and 3.
    log.write_text("run_id,step,loss\nr,1,4.0\nr,2,3.9\nr,3,3.8\nr,2,3.85\nr,3,3.75\nr,4,3.7\n")
    (info,) = ingest_paths(db_path, [log], params=1e6)
    assert (info.rows_in, info.rows_ok, info.rows_rejected) == (6, 4, 2)
    assert rows(db_path, "SELECT step, value FROM observations ORDER BY step") == [
        (1, 4.0),
        (2, 3.85),
        (3, 3.75),
        (4, 3.7),
    ]
    assert _reasons(db_path) == [
        "step 2 of run `r` (`loss`) is logged again at row 4; the last value is kept "
        "(a resumed run re-logs its steps)",
        "step 3 of run `r` (`loss`) is logged again at row 5; the last value is kept "
        "(a resumed run re-logs its steps)",
    ]


def test_duplicates_across_chunks(tmp_path: Path, db_path: Path, monkeypatch) -> None:
    from scalefit.load import readers as _readers

    monkeypatch.setattr(_readers, "CHUNK_ROWS", 3)
    log = tmp_path / "log.csv"
    log.write_text("run_id,step,loss\nr,1,4.0\nr,2,3.9\nr,3,3.8\nr,1,3.5\nr,5,3.4\n")
    (info,) = ingest_paths(db_path, [log], params=1e6)
    assert (info.rows_ok, info.rows_rejected) == (4, 1)
    assert rows(db_path, "SELECT value FROM observations WHERE step = 1") == [(3.5,)]


def test_empty_and_header_only_files(tmp_path: Path, db_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    header = tmp_path / "header.csv"
    header.write_text("run_id,step,tokens,loss\n")
    empty_jsonl = tmp_path / "empty.jsonl"
    empty_jsonl.write_text("")
    report = ingest_paths(db_path, [empty, header, empty_jsonl], params=1e6)
    assert [(i.status, i.rows_in) for i in report] == [("ok", 0)] * 3
    assert all("no data rows" in i.message for i in report)
    assert report.exit_code == 0
    # The header-only log then grows: only the new rows are read.
    with header.open("a") as fh:
        fh.write("r,1,100,4.0\n")
    (grown,) = ingest_paths(db_path, [header], params=1e6)
    assert (grown.mode, grown.rows_ok) == ("appended", 1)


def test_a_csv_without_a_loss_column_fails(tmp_path: Path, db_path: Path) -> None:
    log = tmp_path / "log.csv"
    log.write_text("run_id,step,accuracy\nr,1,0.5\n")
    (info,) = ingest_paths(db_path, [log], params=1e6)
    assert info.status == "failed"
    assert "no loss column" in info.message and "accuracy" in info.message


def test_non_utf8_file_fails_with_how_to_fix(tmp_path: Path, db_path: Path) -> None:
    log = tmp_path / "latin1.csv"
    log.write_bytes("run_id,step,loss\ncafé,1,4.0\n".encode("latin-1"))
    (info,) = ingest_paths(db_path, [log], params=1e6)
    assert info.status == "failed"
    assert "UTF-8" in info.message
    assert rows(db_path, "SELECT count(*) FROM observations") == [(0,)]


def test_unknown_format_named_explicitly_fails_and_says_what_to_do(
    tmp_path: Path, db_path: Path
) -> None:
    log = tmp_path / "log.txt"
    log.write_text("step loss\n1 4.0\n")
    (info,) = ingest_paths(db_path, [log])
    assert info.status == "failed"
    assert "--format" in info.message


# ------------------------------------------------------------------ re-ingest


def test_unchanged_file_changes_no_table(tmp_path: Path, db_path: Path) -> None:
    log = write_long_csv(tmp_path / "log.csv", curve_rows("u", range(1, 50), params=1e6))
    bad = tmp_path / "bad.csv"
    bad.write_text("run_id,step,loss\nu2,1,oops\n")
    ingest_paths(db_path, [log, bad], params=1e6)
    before = snapshot(db_path)
    report = ingest_paths(db_path, [log, bad], params=1e6)
    assert [i.status for i in report] == ["unchanged", "unchanged"]
    assert report.exit_code == 0
    assert snapshot(db_path) == before


def test_grown_log_adds_only_new_rows(tmp_path: Path, db_path: Path) -> None:
    log = write_long_csv(tmp_path / "log.csv", curve_rows("g", range(1, 101), params=1e6))
    (first,) = ingest_paths(db_path, [log])
    with log.open("a") as fh:
        for r in curve_rows("g", range(101, 151), params=1e6):
            fh.write(f"{r['run_id']},{r['step']},{r['tokens']},{r['loss']},{r['params']}\n")
        fh.write("g,151,618496,-1,1000000.0\n")
    (second,) = ingest_paths(db_path, [log])
    assert (second.mode, second.rows_in, second.rows_ok) == ("appended", 51, 50)
    assert rows(db_path, "SELECT count(*), max(step) FROM observations") == [(150, 150)]
    # Row numbers go on from where the first ingest stopped.
    assert rows(db_path, "SELECT row_number FROM quarantine") == [(151,)]
    assert rows(db_path, "SELECT tokens FROM runs") == [(150 * 4096.0,)]
    assert second.checkpoint_bytes == log.stat().st_size > first.checkpoint_bytes
    _accounting_holds(db_path)


def test_grown_log_with_a_half_written_last_line(tmp_path: Path, db_path: Path) -> None:
    log = tmp_path / "log.csv"
    log.write_text("run_id,step,loss\nr,1,4.0\nr,2,3.9\nr,3,3.8")  # the trainer is mid-write
    (first,) = ingest_paths(db_path, [log], params=1e6)
    assert first.rows_ok == 3
    with log.open("a") as fh:
        fh.write("5\nr,4,3.7\n")  # the last value was 3.85, not 3.8
    (second,) = ingest_paths(db_path, [log], params=1e6)
    assert (second.mode, second.rows_in) == ("appended", 2)
    assert rows(db_path, "SELECT step, value FROM observations ORDER BY step") == [
        (1, 4.0),
        (2, 3.9),
        (3, 3.85),
        (4, 3.7),
    ]


def test_grown_jsonl(tmp_path: Path, db_path: Path) -> None:
    log = tmp_path / "m.jsonl"
    log.write_text("".join(json.dumps({"step": s, "loss": 4 - s / 10}) + "\n" for s in (1, 2)))
    ingest_paths(db_path, [log], params=1e6)
    with log.open("a") as fh:
        fh.write(json.dumps({"step": 3, "loss": "bad"}) + "\n")
    (info,) = ingest_paths(db_path, [log], params=1e6)
    assert (info.mode, info.rows_in, info.rows_rejected) == ("appended", 1, 1)
    assert rows(db_path, "SELECT row_number FROM quarantine") == [(3,)]
    assert rows(db_path, "SELECT DISTINCT run_id FROM observations") == [("m",)]


def test_changed_file_replaces_its_rows(tmp_path: Path, db_path: Path) -> None:
    log = write_long_csv(tmp_path / "log.csv", curve_rows("c", range(1, 101), params=1e6))
    other = write_long_csv(tmp_path / "other.csv", curve_rows("o", range(1, 11), params=1e6))
    ingest_paths(db_path, [log, other])
    # Rewritten: fewer rows, other values, and a new run.
    write_long_csv(
        log, curve_rows("c", range(1, 41), params=1e6) + curve_rows("c2", range(1, 3), params=1e6)
    )
    (info,) = ingest_paths(db_path, [log])
    assert (info.mode, info.rows_ok) == ("replaced", 42)
    assert rows(db_path, "SELECT run_id, count(*) FROM observations GROUP BY 1 ORDER BY 1") == [
        ("c", 40),
        ("c2", 2),
        ("o", 10),
    ]
    assert rows(db_path, "SELECT run_id, tokens FROM runs ORDER BY 1") == [
        ("c", 40 * 4096.0),
        ("c2", 2 * 4096.0),
        ("o", 10 * 4096.0),
    ]
    # Changed in its first rows and grown: not a grown log, since the prefix differs.
    text = log.read_text().replace("\nc,1,4096,", "\nc,1,4097,", 1)
    log.write_text(text + "c,41,167936,3.0\n")
    (again,) = ingest_paths(db_path, [log])
    assert (again.mode, again.rows_ok) == ("replaced", 43)
    assert rows(db_path, "SELECT tokens FROM observations WHERE run_id='c' AND step=1") == [
        (4097.0,)
    ]
    assert rows(db_path, "SELECT count(*) FROM observations") == [(53,)]


def test_a_folder_walk_says_what_it_skipped(tmp_path: Path, db_path: Path) -> None:
    write_long_csv(tmp_path / "a" / "log.csv", curve_rows("a", range(1, 3), params=1e6))
    write_trainer_state(tmp_path / "b")
    (tmp_path / "b" / "config.json").write_text('{"n_layer": 2, "n_embd": 64}')
    (tmp_path / "b" / "model.safetensors").write_bytes(b"\0" * 10)
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "x.csv").write_text("a\n")
    files, skipped = discover([tmp_path])
    assert [f.name for f in files] == ["log.csv", "trainer_state.json"]
    assert sorted(Path(p).name for p, _ in skipped) == ["config.json", "model.safetensors"]
    report = ingest_paths(db_path, [tmp_path], tokens_per_step=1000)
    assert [i.status for i in report] == ["ok", "ok"]
    assert rows(db_path, "SELECT run_id, params, params_method FROM runs ORDER BY 1") == [
        ("a", 1e6, "given"),
        ("b", 12 * 2 * 64**2, "config_12ld2"),
    ]


def test_ingest_file_on_an_open_connection(tmp_path: Path, db_path: Path) -> None:
    from scalefit import store

    log = write_long_csv(tmp_path / "log.csv", curve_rows("x", range(1, 4), params=1e6))
    with store.connect(db_path) as con:
        info = ingest_file(con, log)
        assert info.status == "ok"
        assert store.run(con, "SELECT count(*) FROM observations") == [(3,)]


# ------------------------------------------------------------------ CLI


def test_cli_exit_codes_and_summary(tmp_path: Path, db_path: Path) -> None:
    runner = CliRunner()
    good = write_long_csv(tmp_path / "good.csv", curve_rows("g", range(1, 4)))
    result = runner.invoke(app, ["ingest", str(good), "--params", "125M", "--db", str(db_path)])
    assert result.exit_code == 0, result.output
    assert "1 file(s)" in result.output
    assert rows(db_path, "SELECT params FROM runs") == [(125e6,)]

    rejected = tmp_path / "rej.csv"
    rejected.write_text("run_id,step,loss\nr,1,nan\n")
    result = runner.invoke(app, ["ingest", str(rejected), "--params", "1e6", "--db", str(db_path)])
    assert result.exit_code == 2, result.output

    broken = tmp_path / "trainer_state.json"
    broken.write_text('{"log_history": [')
    result = runner.invoke(
        app, ["ingest", str(broken), str(good), "--params", "1e6", "--db", str(db_path)]
    )
    assert result.exit_code == 1, result.output

    result = runner.invoke(app, ["ingest", str(tmp_path / "nope"), "--db", str(db_path)])
    assert result.exit_code == 1
    assert "no such file" in result.output

    result = runner.invoke(app, ["ingest", str(good), "--params", "lots"])
    assert result.exit_code == 2 and "not a count" in result.output


def test_bad_arguments_are_rejected(tmp_path: Path, db_path: Path) -> None:
    with pytest.raises(ValueError, match="`fmt` must be one of"):
        ingest_paths(db_path, [tmp_path], fmt="xlsx")
    with pytest.raises(ValueError, match="`params` must be a positive"):
        ingest_paths(db_path, [tmp_path], params=-1)


def test_row_order_does_not_matter(tmp_path: Path, db_path: Path) -> None:
    """Sorted rows take the in-order uniqueness proof, shuffled rows the SQL check: same
    observations either way, and duplicates are found in both."""
    base = curve_rows("s", range(1, 60), params=1e6, eval_every=7) + curve_rows(
        "t", range(1, 30), params=2e6
    )
    shuffled = [base[i] for i in np.random.default_rng(1).permutation(len(base))]
    results = []
    for name, data in (("sorted", base), ("shuffled", shuffled)):
        db = tmp_path / f"{name}.duckdb"
        (info,) = ingest_paths(db, [write_long_csv(tmp_path / name / "log.csv", data)])
        assert (info.rows_rejected, info.rows_ok) == (0, 59 + 8 + 29)
        results.append(
            rows(db, "SELECT run_id, metric, step, value FROM observations ORDER BY ALL")
        )
    assert results[0] == results[1]
    relogged = [*shuffled, dict(shuffled[0], loss=9.0)]
    db = tmp_path / "relogged.duckdb"
    (info,) = ingest_paths(db, [write_long_csv(tmp_path / "r" / "log.csv", relogged)])
    assert info.rows_rejected == 1
    key = (shuffled[0]["run_id"], shuffled[0]["step"])
    assert rows(
        db,
        "SELECT value FROM observations WHERE metric = 'loss' AND run_id = ? AND step = ?",
        list(key),
    ) == [(9.0,)]
