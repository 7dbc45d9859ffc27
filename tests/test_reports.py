"""`scalefit report`: reports that agree with each other and describe their own columns."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from scalefit import pipeline, store
from scalefit.cli import app
from scalefit.laws import chinchilla_loss

TRUE = {"E": 1.8, "A": 480.0, "B": 2100.0, "alpha": 0.35, "beta": 0.37}
NOT_ALLOCATING = {
    "kaplan2020",
    "hoffmann2022_approach1",
    "hoffmann2022_approach2",
    "hoffmann2022_approach3_allocation",
}
"""Curated laws published with allocation exponents but no coefficient (datasets/laws.csv)."""


def _store_sweep(db: Path, n: int = 40) -> None:
    """A sweep of runs on a Chinchilla law (1% noise), one final eval loss each."""
    rng = np.random.default_rng(3)
    params = np.exp(rng.uniform(np.log(1e7), np.log(1e10), n))
    tokens = np.exp(rng.uniform(np.log(1e8), np.log(1e11), n))
    loss = chinchilla_loss(params, tokens, **TRUE) * np.exp(0.01 * rng.standard_normal(n))
    ids = [f"s{i}" for i in range(n)]
    runs = pl.DataFrame(
        {
            "run_id": ids,
            "params": params,
            "tokens": tokens,
            "project": "sweep",
            "params_method": "given",
        }
    )
    observations = pl.DataFrame(
        {"run_id": ids, "step": 100, "tokens": tokens, "metric": "eval_loss", "value": loss}
    )
    with store.connect(db) as con, store.transaction(con):
        store.write(con, "runs", runs)
        store.write(con, "observations", observations)


@pytest.fixture(scope="module")
def reported(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A store with the curated data as a first refresh leaves it, a sweep fitted with
    `scalefit fit` (saved), then `scalefit report`: all through the real CLI."""
    tmp = tmp_path_factory.mktemp("reports")
    db, out = tmp / "scalefit.duckdb", tmp / "reports"
    pipeline.load_curated(db)
    pipeline.refresh_comparisons(db)
    _store_sweep(db)
    runner = CliRunner()
    fit = runner.invoke(
        app,
        ["fit", "--where", "project = 'sweep'", "--db", str(db), "--bootstrap", "10", "--json"],
    )
    assert fit.exit_code == 0, fit.output
    assert json.loads(fit.stdout)["saved"] is True
    with store.connect(db) as con:
        fitted = store.query(con, "SELECT law_id, fit_id FROM laws WHERE origin = 'fitted'")
        law = [fitted[0, 0]]
        compared = store.run(con, "SELECT count(*) FROM comparisons WHERE law_id = ?", law)
        n_models = store.run(con, "SELECT count(*) FROM models")[0][0]
        # `fit --save` compares the saved law at once; the store is then made stale on
        # purpose, so that the report below must recompute, not copy, the comparisons.
        store.run(con, "DELETE FROM comparison_results WHERE law_id = ?", law)
    assert fitted.height == 1
    assert compared[0][0] == n_models
    report = runner.invoke(app, ["report", "--db", str(db), "--out", str(out)])
    assert report.exit_code == 0, report.output
    return {
        "db": db,
        "out": out,
        "law_id": fitted["law_id"][0],
        "fit_id": fitted["fit_id"][0],
        "output": report.output,
    }


def test_report_after_fit_save_has_the_fitted_law_in_comparisons_and_frontier(
    reported: dict,
) -> None:
    out, law_id = reported["out"], reported["law_id"]
    comparisons = pl.read_parquet(out / "comparisons.parquet")
    frontier = pl.read_parquet(out / "frontier.parquet")
    laws = pl.read_parquet(out / "laws.parquet")
    assert law_id in comparisons["law_id"].to_list()
    assert law_id in frontier["law_id"].to_list()
    compared = set(laws.filter("in_comparisons")["law_id"])
    assert set(comparisons["law_id"]) == set(frontier["law_id"]) == compared
    # every curated model under the fitted law
    n_models = pl.read_parquet(out / "models.parquet").height
    assert comparisons.filter(pl.col("law_id") == law_id).height == n_models
    # The report was computed from the store's laws, not its stale comparisons (which
    # `scalefit report` only reads: it never writes the store).
    with store.connect(reported["db"], read_only=True) as con:
        stale = store.run(con, "SELECT count(*) FROM comparisons WHERE law_id = ?", [law_id])
    assert stale[0][0] == 0


def test_comparisons_agree_with_the_frontier(reported: dict) -> None:
    # Every compared law's N_opt(C) is a power law in C, so log-log interpolation of the
    # frontier's grid is exact: a comparison row's optimum must lie on its law's frontier.
    out = reported["out"]
    comparisons = pl.read_parquet(out / "comparisons.parquet")
    frontier = pl.read_parquet(out / "frontier.parquet")
    checked = 0
    for law_id, rows in comparisons.group_by("law_id"):
        grid = frontier.filter(pl.col("law_id") == law_id[0]).sort("flops")
        rows = rows.filter(pl.col("flops").is_between(grid["flops"].min(), grid["flops"].max()))
        log_c = np.log(grid["flops"].to_numpy())
        for column in ("optimal_params", "optimal_tokens"):
            expected = np.exp(
                np.interp(np.log(rows["flops"].to_numpy()), log_c, np.log(grid[column].to_numpy()))
            )
            np.testing.assert_allclose(rows[column].to_numpy(), expected, rtol=1e-9)
        checked += rows.height
    assert checked > 100


def test_laws_that_cannot_allocate_say_why(reported: dict) -> None:
    out = reported["out"]
    laws = pl.read_parquet(out / "laws.parquet")
    excluded = laws.filter(~pl.col("in_comparisons"))
    assert set(excluded["law_id"]) == NOT_ALLOCATING
    for row in excluded.iter_rows(named=True):
        assert "cannot size a compute budget" in row["not_compared_reason"]
        assert "coefficient" in row["not_compared_reason"]
    assert (
        laws.filter("in_comparisons")["not_compared_reason"].null_count()
        == laws.filter("in_comparisons").height
    )
    # the same reasons in the comparisons' and frontier's metadata, and printed by the command
    for name in ("comparisons.parquet", "frontier.parquet"):
        meta = json.loads(pq.read_schema(out / name).metadata[b"scalefit.not_compared"])
        assert meta == dict(excluded.select("law_id", "not_compared_reason").rows())
    for law_id in NOT_ALLOCATING:
        assert f"not in comparisons: {law_id}:" in reported["output"]
    # allocation laws with a coefficient are compared with null loss columns
    llama = pl.read_parquet(out / "comparisons.parquet").filter(pl.col("law_id") == "llama3_2024")
    assert llama.height > 0
    assert llama["loss_cost"].null_count() == llama.height
    assert llama["token_excess"].null_count() == 0
    assert llama["tokens_per_param_ratio"].null_count() == 0


def test_laws_report_has_typed_parameters(reported: dict) -> None:
    laws = pl.read_parquet(reported["out"] / "laws.parquet")
    assert laws.schema["parameters"] == pl.List(pl.Struct({"name": pl.String, "value": pl.Float64}))
    by_id = {r["law_id"]: r for r in laws.iter_rows(named=True)}
    a3 = {p["name"]: p["value"] for p in by_id["hoffmann2022_approach3"]["parameters"]}
    assert a3 == {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
    assert by_id["hoffmann2022_approach3"]["source_id"] == "hoffmann2022"
    fitted = by_id[reported["law_id"]]
    assert fitted["origin"] == "fitted" and fitted["fit_id"] == reported["fit_id"]
    assert {p["name"] for p in fitted["parameters"]} >= {"E", "A", "B", "alpha", "beta"}


def test_fits_report_has_typed_estimates_and_intervals(reported: dict) -> None:
    out = reported["out"]
    fits = pl.read_parquet(out / "fits.parquet")
    assert not {"estimates", "ci_low", "ci_high"} & set(fits.columns)
    assert fits["law_id"].to_list() == [reported["law_id"]]
    params = pl.read_parquet(out / "fit_parameters.parquet")
    assert params.schema["estimate"] == pl.Float64 and params.schema["ci_low"] == pl.Float64
    mine = params.filter(pl.col("fit_id") == reported["fit_id"])
    assert set(mine["parameter"]) >= set(TRUE)
    assert (mine["law_id"] == reported["law_id"]).all()
    assert (mine["ci_low"] <= mine["estimate"]).all() and (
        mine["estimate"] <= mine["ci_high"]
    ).all()
    # the values are the fits table's JSON, typed
    with store.connect(reported["db"], read_only=True) as con:
        estimates = json.loads(store.run(con, "SELECT estimates FROM fits")[0][0])
    for row in mine.iter_rows(named=True):
        assert row["estimate"] == pytest.approx(estimates[row["parameter"]], rel=1e-12)
    alpha = mine.filter(pl.col("parameter") == "alpha")
    assert alpha["ci_low"][0] <= TRUE["alpha"] <= alpha["ci_high"][0] or alpha["estimate"][
        0
    ] == pytest.approx(TRUE["alpha"], rel=0.1)


def assert_self_described(path: Path) -> None:
    """Every column of the report at ``path`` has its schema's description and unit, in
    ``scalefit.columns`` and in its Arrow field's metadata ("" and "1" only where the schema
    declares them so)."""
    from scalefit.schemas.reports import REPORTS

    schema = pq.read_schema(path)
    declared = REPORTS[path.stem].columns()
    columns = json.loads(schema.metadata[b"scalefit.columns"])
    assert list(columns) == schema.names, path.name
    for field in schema:
        meta = field.metadata or {}
        description = meta.get(b"description", b"").decode()
        assert description, f"{path.name}: {field.name} has no description"
        assert b"unit" in meta, f"{path.name}: {field.name} has no unit"
        unit = meta[b"unit"].decode()
        assert (description, unit) == declared[field.name], (path.name, field.name)
        assert columns[field.name] == {"description": description, "unit": unit}


def test_every_report_column_has_a_description_and_a_unit(reported: dict) -> None:
    out = reported["out"]
    files = sorted(out.glob("*.parquet"))
    assert {f.stem for f in files} >= {
        "models",
        "comparisons",
        "fits",
        "fit_parameters",
        "frontier",
        "laws",
    }
    for path in files:
        assert_self_described(path)
    comparisons = pq.read_schema(out / "comparisons.parquet")
    unit = {f.name: f.metadata[b"unit"].decode() for f in comparisons}
    assert unit["optimal_params"] == "parameters" and unit["optimal_tokens"] == "tokens"
    assert unit["flops"] == "FLOPs" and unit["loss_cost"] == "nats"
    assert unit["token_excess"] == "1" and unit["model_id"] == ""


def test_every_report_schema_column_declares_a_description_and_a_unit() -> None:
    # including the studies' reports, which need published data to be written
    from scalefit.schemas.reports import REPORTS

    assert {"reproductions", "overtraining"} <= set(REPORTS)
    for spec in REPORTS.values():
        for name, (description, unit) in spec.columns().items():
            assert description and unit is not None, (spec.name, name)


def test_reports_carry_each_laws_caveat(reported: dict) -> None:
    out = reported["out"]
    laws = pl.read_parquet(out / "laws.parquet")
    caveat = laws.filter(pl.col("law_id") == "hoffmann2022_approach3")["caveat"][0]
    assert "not the optimum" in caveat
    for name in ("comparisons.parquet", "frontier.parquet"):
        rows = pl.read_parquet(out / name).filter(pl.col("law_id") == "hoffmann2022_approach3")
        assert rows.height and (rows["law_caveat"] == caveat).all(), name
        other = pl.read_parquet(out / name).filter(pl.col("law_id") == "besiroglu2024")
        assert other["law_caveat"].null_count() == other.height


def test_comparisons_view_in_memory_matches_the_store_view(tmp_path: Path) -> None:
    from scalefit import compare

    db = tmp_path / "s.duckdb"
    pipeline.load_curated(db)
    pipeline.refresh_comparisons(db)
    with store.connect(db, read_only=True) as con:
        view = store.query(con, "SELECT * FROM comparisons ORDER BY law_id, model_id")
        memory = compare.comparisons_view(
            store.query(con, compare.MODELS_SQL), store.query(con, compare.LAWS_SQL)
        ).sort("law_id", "model_id")
    assert memory.columns == view.columns
    assert memory.schema == view.schema
    assert memory.equals(view)


def test_reports_into_a_file_are_one_clear_error(tmp_path: Path) -> None:
    """`--out` naming an existing file (found by the generated-options test) is one line,
    exit 1, and the file is left as it was."""
    db = tmp_path / "scalefit.duckdb"
    pipeline.load_curated(db)
    target = tmp_path / "points.csv"
    target.write_text("params,tokens,loss\n")
    result = CliRunner().invoke(app, ["report", "--db", str(db), "--out", str(target)])
    assert result.exit_code == 1
    assert result.stderr.strip().startswith("error: cannot write reports into")
    assert "internal error" not in result.stderr
    assert target.read_text() == "params,tokens,loss\n"
