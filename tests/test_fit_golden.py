"""Golden tests: reproduce published fits of published data (see tests/golden/README.md)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from scalefit.fit import fit_chinchilla

GOLDEN = Path(__file__).parent / "golden"
REF = json.loads((GOLDEN / "besiroglu2024_chinchilla.json").read_text())


def _chinchilla_csv() -> Path | None:
    """The pinned file: from the environment, the shared folder beside the repository (golden
    data or the published-runs mirror), or the download cache of the `besiroglu2024` study."""
    from scalefit.load.upstream import default_cache_dir

    shared = Path(__file__).resolve().parents[2] / "shared"
    sha = REF["provenance"]["data_sha256"]
    candidates = [
        os.environ.get("SCALEFIT_GOLDEN_CHINCHILLA_CSV"),
        shared / "golden" / "svg_extracted_data.csv",
        shared / "published-runs" / "besiroglu2024" / "data" / "svg_extracted_data.csv",
        default_cache_dir() / "studies" / "besiroglu2024" / sha,
    ]
    for c in candidates:
        if c and Path(c).is_file() and hashlib.sha256(Path(c).read_bytes()).hexdigest() == sha:
            return Path(c)
    return None


@pytest.fixture(scope="module")
def chinchilla_points() -> pl.DataFrame:
    path = _chinchilla_csv()
    if path is None:
        pytest.skip(
            "Besiroglu et al. data not found (or not the pinned sha256): set "
            "SCALEFIT_GOLDEN_CHINCHILLA_CSV to data/svg_extracted_data.csv of "
            "epoch-research/analyzing-chinchilla, or run `scalefit refresh` once online "
            f"(commit {REF['provenance']['commit']})"
        )
    raw = pl.read_csv(path)
    data = raw.select(
        params=pl.col("Model Size"),
        tokens=pl.col("Training FLOP") / (6.0 * pl.col("Model Size")),
        loss=pl.col("loss"),
    )
    assert data.height == REF["provenance"]["data_rows"]
    # As the notebook: keep loss < sorted(loss)[-5], dropping the five highest losses.
    cutoff = np.sort(data["loss"].to_numpy())[-5]
    return data.filter(pl.col("loss") < cutoff)


@pytest.fixture(scope="module")
def golden_fit(chinchilla_points):
    return fit_chinchilla(chinchilla_points, n_bootstrap=600, seed=0)


def test_reproduces_the_grid_fit_at_least_as_well(golden_fit):
    ref = REF["grid_fit"]
    assert golden_fit.n_points == 240
    assert golden_fit.converged
    assert golden_fit.objective <= ref["objective"] * (1 + 1e-9)
    assert golden_fit.objective == pytest.approx(
        ref["objective"], rel=ref["tolerance"]["objective_rel"]
    )
    for name, value in ref["estimates"].items():
        assert golden_fit.estimates[name] == pytest.approx(
            value, rel=ref["tolerance"]["estimates_rel"]
        ), name


def test_matches_the_published_estimates(golden_fit):
    ref = REF["published_estimates"]
    tol = ref["tolerance"]
    est = golden_fit.estimates
    assert est["E"] == pytest.approx(ref["estimates"]["E"], abs=tol["E_abs"])
    assert est["A"] == pytest.approx(ref["estimates"]["A"], rel=tol["A_rel"])
    assert est["B"] == pytest.approx(ref["estimates"]["B"], rel=tol["B_rel"])
    assert est["alpha"] == pytest.approx(ref["estimates"]["alpha"], abs=tol["alpha_abs"])
    assert est["beta"] == pytest.approx(ref["estimates"]["beta"], abs=tol["beta_abs"])


def test_matches_the_published_bootstrap_intervals(golden_fit):
    ref = REF["bootstrap_95"]
    tol = ref["tolerance"]
    for name, (low, high) in ref["ci"].items():
        ours = golden_fit.ci[name]
        if f"{name}_rel" in tol:
            assert ours[0] == pytest.approx(low, rel=tol[f"{name}_rel"]), name
            assert ours[1] == pytest.approx(high, rel=tol[f"{name}_rel"]), name
        else:
            assert ours[0] == pytest.approx(low, abs=tol[f"{name}_abs"]), name
            assert ours[1] == pytest.approx(high, abs=tol[f"{name}_abs"]), name
