"""Scheduled fits without Prefect: one per project and law, saved once, replaced in place."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from scalefit import pipeline, store
from scalefit.load import logs as ingest

TRUTH = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}


def _sweep(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    rows = []
    for i, n in enumerate(np.logspace(7.5, 9.5, 6)):
        for j, d in enumerate(np.logspace(8.5, 10.5, 5)):
            clean = TRUTH["E"] + TRUTH["A"] / n ** TRUTH["alpha"] + TRUTH["B"] / d ** TRUTH["beta"]
            loss = clean * np.exp(rng.normal(0, 0.01))
            rows.append({"run_id": f"r{i}_{j}", "step": 1, "tokens": d, "loss": loss, "params": n})
    pl.DataFrame(rows).write_csv(path)
    return path


def test_fit_project_saves_once_and_replaces_in_place(tmp_path: Path, db_path: Path) -> None:
    ingest.ingest_paths(db_path, [_sweep(tmp_path / "sweep.csv", 0)], project="sweep")
    assert pipeline.fit_projects(db_path) == ["sweep"]

    first = pipeline.fit_project(db_path, "sweep", "chinchilla", n_bootstrap=30, seed=1)
    assert first.status == "fitted" and first.law_id == "fitted_sweep_chinchilla"
    again = pipeline.fit_project(db_path, "sweep", "chinchilla", n_bootstrap=30, seed=1)
    assert again.status == "unchanged" and again.fit_id == first.fit_id

    with store.connect(db_path, read_only=True) as con:
        law = store.query(con, "SELECT * FROM laws WHERE origin = 'fitted'")
        n_samples = store.query(
            con,
            "SELECT count(DISTINCT sample) AS n FROM fit_samples WHERE fit_id = ?",
            [first.fit_id],
        )["n"][0]
        est = store.query(con, "SELECT estimates FROM fits")["estimates"].str.json_decode()[0]
    assert law["law_id"].to_list() == ["fitted_sweep_chinchilla"]
    assert law["fit_id"].to_list() == [first.fit_id]
    assert n_samples == 30
    assert abs(est["alpha"] - TRUTH["alpha"]) < 0.08 and abs(est["beta"] - TRUTH["beta"]) < 0.08

    # New data: a new fit, and the same law row now points to it (no second law).
    _sweep(tmp_path / "sweep.csv", 1)
    ingest.ingest_paths(db_path, [tmp_path / "sweep.csv"], project="sweep")
    third = pipeline.fit_project(db_path, "sweep", "chinchilla", n_bootstrap=30, seed=1)
    assert third.status == "fitted" and third.fit_id != first.fit_id
    with store.connect(db_path, read_only=True) as con:
        laws = store.query(con, "SELECT law_id, fit_id FROM laws WHERE origin = 'fitted'")
    assert laws.rows() == [("fitted_sweep_chinchilla", third.fit_id)]


def test_too_little_data_is_skipped_with_the_reason(tmp_path: Path, db_path: Path) -> None:
    (tmp_path / "one.csv").write_text("run_id,step,tokens,loss,params\nx,1,1e9,3.0,1e8\n")
    ingest.ingest_paths(db_path, [tmp_path / "one.csv"], project="one")
    info = pipeline.fit_project(db_path, "one", "chinchilla", n_bootstrap=0)
    assert info.status == "skipped" and "more points than parameters" in info.message
    with store.connect(db_path, read_only=True) as con:
        assert store.table_counts(con)["fits"] == 0


def test_fitted_law_id_is_a_clean_slug() -> None:
    assert pipeline.fitted_law_id("My Sweep/v2", "kaplan-n") == "fitted_my_sweep_v2_kaplan_n"
