"""The refresh with the shared mirror: both studies loaded, reproduced, reports written; a
second refresh changes nothing. And the over-training report (item 5 of issue 14)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from scalefit import store
from scalefit.laws import OvertrainingLaw
from scalefit.overtraining import fit_testbed, loss_penalty, overtraining_costs
from scalefit.report import parquet_metadata

pytestmark = pytest.mark.slow


def test_loss_penalty_by_hand() -> None:
    """Llama 3 8B-like: N = 8e9, D = 15e12 (M = 1875 tokens/param, 93.75x). At the same
    compute, 20 tokens per parameter is N20 = sqrt(C / 120), D20 = 20 N20."""
    law = OvertrainingLaw(E=1.9, A=300.0, B=900.0, eta=0.3)
    n, d = 8e9, 15e12
    c = 6 * n * d
    n20 = (c / 120) ** 0.5
    d20 = 20 * n20
    at_m = 1.9 + 300 * n**-0.3 + 900 * d**-0.3
    at_20 = 1.9 + 300 * n20**-0.3 + 900 * d20**-0.3
    pen, rel = loss_penalty(law, n, d)
    assert float(pen) == pytest.approx(at_m - at_20, rel=1e-10)
    assert float(rel) == pytest.approx(at_m / at_20 - 1, rel=1e-10)
    same, _ = loss_penalty(law, 1e9, 2e10)  # at 20 tokens per parameter: no penalty
    assert abs(float(same)) < 1e-14


@pytest.fixture(scope="module")
def testbed(tmp_path_factory, published_runs: Path):
    from scalefit.load.studies import get_study, load_study
    from scalefit.reproduce import gadre_points

    db = tmp_path_factory.mktemp("ot") / "sf.duckdb"
    with store.connect(db) as con:
        load_study(con, get_study("gadre2024"), mirror=published_runs, offline=True)
        points = gadre_points(con)
    return fit_testbed(points, n_bootstrap=40, seed=0)


def test_overtraining_costs_on_the_testbed(testbed) -> None:
    models = pl.DataFrame(
        {
            "model_id": ["llama3-8b-like", "chinchilla-rule", "far-out"],
            "params": [8e9, 1e9, 1e8],
            "tokens": [15e12, 2e10, 1e12],
        }
    )
    out = overtraining_costs(models, testbed)
    assert out.height == 9 and set(out["dataset"]) == {"c4_original", "rpj", "rw_original"}
    llama = out.filter(pl.col("model_id") == "llama3-8b-like")
    assert llama["multiplier"].to_list() == [93.75] * 3
    assert (llama["loss_penalty"] > 0).all()
    assert (llama["loss_penalty_low"] <= llama["loss_penalty"]).all()
    assert (llama["loss_penalty"] <= llama["loss_penalty_high"]).all()
    assert llama["extrapolated"].to_list() == [True] * 3  # 1875 tokens/param > 640 measured
    rule = out.filter(pl.col("model_id") == "chinchilla-rule")
    assert np.allclose(rule["loss_penalty"].to_numpy(), 0.0, atol=1e-12)
    assert not rule["extrapolated"].any()
    rpj = llama.filter(pl.col("dataset") == "rpj").row(0, named=True)
    law = testbed["rpj"].law
    pen, rel = loss_penalty(law, 8e9, 15e12)
    assert rpj["loss_penalty"] == pytest.approx(float(pen)) and rpj["law_fit_id"].startswith("fit_")
    assert rpj["relative_penalty"] == pytest.approx(float(rel))


def _snapshot(db: Path) -> dict[str, list]:
    with store.connect(db, read_only=True) as con:
        return {
            t: sorted(map(repr, store.run(con, f"SELECT * FROM {t}")))
            for t in ("runs", "observations", "ingests", "fits", "laws", "quarantine")
        }


def test_refresh_loads_and_reproduces_the_studies(
    prefect_harness, tmp_path: Path, mirror: Path
) -> None:
    from scalefit.flows.refresh import refresh

    config = tmp_path / "scalefit.toml"
    config.write_text(
        '[store]\ndb = "sf.duckdb"\nreports = "out"\n[fit]\nbootstrap = 4\n'
        f'[upstream]\ncache = "{tmp_path / "cache"}"\n'
    )
    first = refresh(config_path=config)
    assert first.ok, first.errors
    assert {s.study: s.status for s in first.steps["studies"]} == {
        "besiroglu2024": "ok",
        "gadre2024": "ok",
    }
    out = tmp_path / "out"
    path = out / "reproductions.parquet"
    frame = pl.read_parquet(path)
    assert set(frame["study"]) == {"besiroglu2024", "gadre2024"}
    meta = parquet_metadata(path)
    assert meta["scalefit.table"] == "reproductions" and int(meta["scalefit.rows"]) == frame.height
    loss = frame.filter(
        (pl.col("study") == "gadre2024")
        & (pl.col("split") == "paper")
        & (pl.col("quantity") == "loss")
    )
    assert loss.height == 18  # nine held-out runs, two methods
    for name in ("reproduction_gadre2024.png", "reproduction_besiroglu2024.png"):
        png = out / name
        assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 20_000, name
    over = pl.read_parquet(out / "overtraining.parquet")
    with store.connect(tmp_path / "sf.duckdb", read_only=True) as con:
        n_models = store.run(
            con, "SELECT count(*) FROM models WHERE params IS NOT NULL AND tokens IS NOT NULL"
        )[0][0]
    assert over.height == 3 * n_models and parquet_metadata(out / "overtraining.parquet")
    from test_reports import assert_self_described

    reports = sorted(out.glob("*.parquet"))  # the studies' reports and the others
    assert {"reproductions.parquet", "overtraining.parquet"} <= {p.name for p in reports}
    for report in reports:
        assert_self_described(report)

    before = _snapshot(tmp_path / "sf.duckdb")
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if "reproduction" in p.name}
    stamps["overtraining.parquet"] = (out / "overtraining.parquet").stat().st_mtime_ns
    second = refresh(config_path=config)
    assert second.ok, second.errors
    assert [s.load.status for s in second.steps["studies"]] == ["unchanged", "unchanged"]
    assert second.steps["reproductions"].unchanged
    assert _snapshot(tmp_path / "sf.duckdb") == before
    assert {n: (out / n).stat().st_mtime_ns for n in stamps} == stamps
