"""Ingested runs can be fitted: a synthetic sweep, ingested from files, recovers its law."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from scalefit import store, user_sql
from scalefit.cli import app
from scalefit.laws import chinchilla_loss

TRUE = {"E": 1.7, "A": 400.0, "B": 1200.0, "alpha": 0.34, "beta": 0.36}
TOKENS_PER_STEP = 2**16


def _sweep(folder: Path) -> int:
    """A Chinchilla approach-3 sweep: 5 sizes x 4 token budgets, one run each, one folder per
    run with ``log.csv`` (step, loss) and ``run.json`` (params, tokens per step, project)."""
    n, rng = 0, np.random.default_rng(0)
    for params in np.geomspace(2e7, 2e9, 5):
        for tokens_per_param in (5, 10, 20, 40):
            run = folder / f"run-{params:.0e}-{tokens_per_param}x"
            run.mkdir(parents=True)
            (run / "run.json").write_text(
                json.dumps(
                    {"params": params, "tokens_per_step": TOKENS_PER_STEP, "project": "sweep"}
                )
            )
            last = int(params * tokens_per_param / TOKENS_PER_STEP)
            steps = np.unique(np.geomspace(10, last, 8).astype(int))
            loss = chinchilla_loss(params, steps * TOKENS_PER_STEP, **TRUE)
            loss = loss * np.exp(rng.normal(0.0, 0.003, steps.size))
            pl.DataFrame({"step": steps, "loss": loss}).write_csv(run / "log.csv")
            n += steps.size
    return n


def test_an_ingested_sweep_recovers_its_law(tmp_path: Path, db_path: Path) -> None:
    from scalefit.fit import fit_chinchilla

    n = _sweep(tmp_path / "logs")
    result = CliRunner().invoke(app, ["ingest", str(tmp_path / "logs"), "--db", str(db_path)])
    assert result.exit_code == 0, result.output
    with store.connect(db_path) as con:
        data = store.query(
            con,
            "SELECT r.params, o.tokens, o.value AS loss FROM observations o "
            "JOIN runs r USING (run_id) WHERE r.project = 'sweep'",
        )
    assert data.height == n
    fit = fit_chinchilla(data, starts=[[5.0, 5.0, 0.0, 0.5, 0.5]])
    assert fit.estimates["alpha"] == pytest.approx(TRUE["alpha"], abs=0.03)
    assert fit.estimates["beta"] == pytest.approx(TRUE["beta"], abs=0.03)


def test_fit_approach_3_through_the_cli(tmp_path: Path, db_path: Path) -> None:
    _sweep(tmp_path / "logs")
    runner = CliRunner()
    result = runner.invoke(app, ["ingest", str(tmp_path / "logs"), "--db", str(db_path)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        app,
        ["fit", "--where", "project = 'sweep'", "--bootstrap", "0", "--db", str(db_path)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    with store.connect(db_path) as con:
        fits = store.query(con, "SELECT form, n_points, estimates FROM fits")
    assert fits.height == 1
    assert fits["n_points"][0] == 20  # the last observation of each run
    estimates = json.loads(fits["estimates"][0])
    assert estimates["alpha"] == pytest.approx(TRUE["alpha"], abs=0.03)


def test_a_run_logged_only_before_training_is_no_point(tmp_path: Path, db_path: Path) -> None:
    """A step-0 eval (tokens = 0, accepted at ingest) is not a point on a law: a run that has
    only that one is left out of the fit's points instead of failing the fit."""
    from scalefit.fit_store import select_points

    _sweep(tmp_path / "logs")
    early = tmp_path / "logs" / "run-early"
    early.mkdir()
    (early / "run.json").write_text(json.dumps({"params": 5e8, "project": "sweep"}))
    (early / "log.csv").write_text("step,tokens,loss\n0,0,10.9\n")
    runner = CliRunner()
    result = runner.invoke(app, ["ingest", str(tmp_path / "logs"), "--db", str(db_path)])
    assert result.exit_code == 0, result.output
    with user_sql.connect_locked(db_path) as con:
        points = select_points(con, where="project = 'sweep'")
    assert points.height == 20 and (points["tokens"] > 0).all()
    assert "run-early" not in " ".join(points["run_id"].to_list())
