"""`scalefit fit`: from a file or from runs in the store, table or JSON, saved to fits/laws."""

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

TRUE = {"E": 1.8, "A": 480.0, "B": 2100.0, "alpha": 0.35, "beta": 0.37}


def _points(n: int = 80, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    params = np.exp(rng.uniform(np.log(1e7), np.log(1e10), n))
    tokens = np.exp(rng.uniform(np.log(1e8), np.log(1e11), n))
    loss = chinchilla_loss(params, tokens, **TRUE) * np.exp(0.01 * rng.standard_normal(n))
    return pl.DataFrame(
        {"run_id": [f"r{i}" for i in range(n)], "params": params, "tokens": tokens, "loss": loss}
    )


@pytest.fixture(scope="module")
def chinchilla_json(tmp_path_factory) -> dict:
    path = tmp_path_factory.mktemp("fit") / "points.csv"
    _points().write_csv(path)
    result = CliRunner().invoke(
        app, ["fit", "--input", str(path), "--bootstrap", "30", "--seed", "1", "--json"]
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_json_output_is_one_object_with_named_estimates(chinchilla_json):
    out = chinchilla_json
    assert out["law"] == "chinchilla"
    assert set(out["estimates"]) == {"E", "A", "B", "alpha", "beta"}
    assert out["n_points"] == 80
    assert out["objective"] > 0
    for name in ("E", "A", "B", "alpha", "beta"):
        low, high = out["ci"][name]
        assert low <= out["estimates"][name] <= high
    assert out["estimates"]["alpha"] == pytest.approx(TRUE["alpha"], abs=0.03)
    assert out["saved"] is False


def _sweep(seed: int = 0) -> pl.DataFrame:
    """Five model sizes, each trained at the same four budgets (C = 6 N D): points grouped by
    compute, as a real sweep is."""
    rng = np.random.default_rng(seed)
    flops = np.repeat(np.geomspace(1e18, 1e21, 4), 5)
    params = np.tile(np.geomspace(3e7, 3e9, 5), 4)
    tokens = flops / (6 * params)
    loss = chinchilla_loss(params, tokens, **TRUE) * np.exp(0.005 * rng.standard_normal(20))
    return pl.DataFrame({"params": params, "tokens": tokens, "flops": flops, "loss": loss})


def test_extrapolation_score_holds_out_the_largest_budgets(tmp_path: Path):
    from scalefit.fit import extrapolation_score

    path = tmp_path / "sweep.csv"
    _sweep().write_csv(path)
    args = ["fit", "--input", str(path), "--bootstrap", "0", "--extrapolate", "1"]
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    score = json.loads(result.stdout)["extrapolation"]
    assert (score["n_train"], score["n_test"]) == (15, 5)
    assert score["holdout_flops"] == [pytest.approx(1e21)]
    expected = extrapolation_score(_sweep(), law="chinchilla", holdout=1)
    assert score["rmse_log"] == pytest.approx(expected.rmse_log, rel=1e-9)
    # The law was fitted on the 15 smaller budgets and predicts the largest one well.
    assert 0 < score["max_abs_rel_error"] < 0.03
    table = CliRunner().invoke(app, args)
    assert table.exit_code == 0 and "extrapolation to 5 held-out point(s)" in table.output
    bad = CliRunner().invoke(app, [*args[:-1], "4"])
    assert bad.exit_code == 1 and "cannot hold out 4" in bad.output
    iso = CliRunner().invoke(app, [*args, "--law", "isoflop"])
    assert iso.exit_code == 1 and "--extrapolate needs" in iso.output


def test_bootstrap_over_processes_gives_the_same_intervals(tmp_path: Path, chinchilla_json):
    path = tmp_path / "points.csv"
    _points().write_csv(path)
    args = ["fit", "--input", str(path), "--bootstrap", "30", "--seed", "1", "--json"]
    result = CliRunner().invoke(app, [*args, "--jobs", "2"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["fit_id"] == chinchilla_json["fit_id"]
    for name, interval in chinchilla_json["ci"].items():
        assert out["ci"][name] == pytest.approx(interval, rel=1e-9), name


def test_table_output_and_parquet_input(tmp_path: Path):
    path = tmp_path / "points.parquet"
    _points(40).write_parquet(path)
    result = CliRunner().invoke(
        app,
        ["fit", "--input", str(path), "--law", "kaplan-n", "--irreducible", "--bootstrap", "20"],
    )
    assert result.exit_code == 0, result.output
    assert "alpha_N" in result.output and "kaplan_n fit to 40 points" in result.output


def test_isoflop_law(tmp_path: Path):
    rows = []
    for c in np.geomspace(1e18, 1e21, 5):
        for x in np.linspace(-1, 1, 7):
            n = 0.1 * c**0.5 * np.exp(x)
            rows.append({"params": n, "tokens": c / (6 * n), "loss": 2.0 + 0.05 * x * x})
    path = tmp_path / "iso.csv"
    pl.DataFrame(rows).write_csv(path)
    result = CliRunner().invoke(
        app, ["fit", "--input", str(path), "--law", "isoflop", "--bootstrap", "10", "--json"]
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["estimates"]["params_exp"] == pytest.approx(0.5, abs=1e-6)


def test_errors_are_one_line(tmp_path: Path):
    runner = CliRunner()
    result = runner.invoke(app, ["fit", "--input", str(tmp_path / "missing.csv")])
    assert result.exit_code == 1
    assert "no file at" in result.output
    path = tmp_path / "bad.csv"
    pl.DataFrame({"params": [1e9, 2e9], "tokens": [1e10, 2e10], "loss": [2.0, -1.0]}).write_csv(
        path
    )
    result = runner.invoke(app, ["fit", "--input", str(path), "--law", "kaplan-n"])
    assert result.exit_code == 1
    assert "`loss`" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["fit", "--input", str(path), "--law", "gpt"])
    assert result.exit_code == 1 and "unknown --law" in result.output
    # Messages are text, not rich markup: "[upstream]" is shown, not swallowed as a tag.
    result = runner.invoke(app, ["fit", "--input", str(tmp_path / "[upstream].csv")])
    assert result.exit_code == 1 and "[upstream].csv" in result.output


def _store_runs(db_path: Path) -> None:
    pts = _points(60)
    runs = pts.select(
        "run_id",
        "params",
        pl.lit("sweep").alias("project"),
        pl.lit("given").alias("params_method"),
        pl.col("tokens"),
    ).with_columns(
        pl.when(pl.col("run_id") == "r0")
        .then(pl.lit("other"))
        .otherwise("project")
        .alias("project")
    )
    # Two observations per run: an early one and the final one (the one to fit).
    early = pts.select(
        "run_id",
        pl.lit(1).alias("step"),
        (pl.col("tokens") / 10).alias("tokens"),
        pl.lit("eval_loss").alias("metric"),
        (pl.col("loss") + 1.0).alias("value"),
    )
    final = pts.select(
        "run_id",
        pl.lit(100).alias("step"),
        pl.col("tokens"),
        pl.lit("eval_loss").alias("metric"),
        pl.col("loss").alias("value"),
    )
    train = final.with_columns(pl.lit("train_loss").alias("metric"), pl.col("value") + 5.0)
    with store.connect(db_path) as con, store.transaction(con):
        store.write(con, "runs", runs)
        store.write(con, "observations", pl.concat([early, final, train]))


def test_fit_from_the_store_saves_to_fits_and_laws(db_path: Path):
    from scalefit.fit_store import select_points

    _store_runs(db_path)
    with user_sql.connect_locked(db_path) as con:
        pts = select_points(con, where="project = 'sweep'")
    assert pts.height == 59
    np.testing.assert_allclose(
        np.sort(pts["loss"].to_numpy()),
        np.sort(_points(60).filter(pl.col("run_id") != "r0")["loss"].to_numpy()),
    )
    args = ["fit", "--where", "project = 'sweep'", "--db", str(db_path), "--bootstrap", "10"]
    runner = CliRunner()
    for _ in range(2):  # idempotent: the same data and settings give one row
        result = runner.invoke(app, [*args, "--law", "kaplan-n", "--resample", "runs", "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["saved"] is True
    with store.connect(db_path, read_only=True) as con:
        fits = store.query(con, "SELECT * FROM fits")
        laws = store.query(con, "SELECT * FROM laws WHERE origin = 'fitted'")
        points = store.query(con, "SELECT * FROM fit_points ORDER BY run_id")
    assert fits.height == 1 and laws.height == 1
    # What was fitted is recorded as data: the predicate's text, the metric, the ids.
    assert json.loads(fits["input"][0]) == {
        "source": "store",
        "predicate": "project = 'sweep'",
        "project": None,
        "metric": "eval_loss",
        "n_points": 59,
        "points": "final",
        "metrics": ["eval_loss"],
        "runs_used": 59,
        "runs_left_out": 0,
    }
    assert "project = 'sweep'" in fits["selection"][0]
    assert points["fit_id"].unique().to_list() == fits["fit_id"].to_list()
    assert (
        points.select("run_id", "step", "metric").rows()
        == pts.select("run_id", "step", "metric").rows()
    )
    assert set(points["step"].to_list()) == {100}
    assert laws["fit_id"][0] == fits["fit_id"][0]
    assert set(json.loads(laws["parameters"][0])) == {"N_c", "alpha_N", "E"}


def test_store_without_matching_runs(db_path: Path):
    _store_runs(db_path)
    result = CliRunner().invoke(
        app, ["fit", "--where", "project = 'nope'", "--db", str(db_path), "--metric", "eval_loss"]
    )
    assert result.exit_code == 1
    assert "no runs" in result.output


def test_envelope_fit_says_which_budgets_it_kept_and_warns_on_few_sizes(tmp_path: Path):
    tokens = np.geomspace(1e8, 3e11, 40)

    def curves(sizes: np.ndarray) -> pl.DataFrame:
        return pl.concat(
            pl.DataFrame(
                {
                    "run_id": f"r{i}",
                    "params": n,
                    "tokens": tokens,
                    "loss": chinchilla_loss(n, tokens, **TRUE),
                }
            )
            for i, n in enumerate(sizes)
        )

    path = tmp_path / "curves.csv"
    curves(np.geomspace(3e7, 3e9, 12)).write_csv(path)
    result = CliRunner().invoke(app, ["fit", "--input", str(path), "--law", "envelope"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert (
        "budgets: " in text and " of 250 kept (interior minimum, 10 model sizes); dropped " in text
    )
    assert "whose lowest loss is the smallest run reaching them" in text
    curves(np.array([1e8, 3e8, 1e9, 3e9])).write_csv(path)
    result = CliRunner().invoke(app, ["fit", "--input", str(path), "--law", "envelope"])
    assert result.exit_code == 0, result.output
    assert "warning: the envelope's interior minima are made by only 2 model sizes" in " ".join(
        result.output.split()
    )
