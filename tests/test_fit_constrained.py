"""Fitting Muennighoff et al.'s data-constrained law (``scalefit.fit.constrained``)."""

from __future__ import annotations

import re
import warnings

import numpy as np
import polars as pl
import pytest
from scipy.optimize import check_grad

from scalefit.errors import FitError
from scalefit.fit import ConvergenceWarning, fit_data_constrained
from scalefit.fit.constrained import _predict_grad
from scalefit.laws import (
    DataConstrainedLaw,
    data_constrained_loss,
    law_from_parameters,
    unique_params,
)
from scalefit.plan import plan_budget

TRUE = {
    "E": 1.87,
    "A": 520.8,
    "B": 1487.7,
    "alpha": 0.35,
    "beta": 0.35,
    "R_D_star": 15.39,
    "R_N_star": 5.31,
}


def _grid() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n, d, u = np.meshgrid(
        np.geomspace(1e7, 2e9, 6), np.geomspace(1e9, 1e11, 5), np.geomspace(3e8, 1e11, 5)
    )
    return n.ravel(), d.ravel(), u.ravel()


def test_gradient_matches_finite_differences_on_both_branches() -> None:
    n, d, u = _grid()
    theta = np.array([6.2, 7.3, 0.62, 0.35, 0.33, np.log(15.0), np.log(5.0)])
    u_n = unique_params(np.minimum(u, d), np.exp(6.2), np.exp(7.3), 0.35, 0.33)
    assert (n > u_n).any() and (n < u_n).any()  # excess-parameter branch and the other
    assert (u < d).any() and (u >= d).any()  # repeated and single-epoch runs
    # the model is the law
    pred, _ = _predict_grad(theta[None], n, d, u)
    law = DataConstrainedLaw(np.exp(0.62), np.exp(6.2), np.exp(7.3), 0.35, 0.33, 15.0, 5.0)
    np.testing.assert_allclose(np.exp(pred[0]), law.loss(n, d, u), rtol=1e-13)
    for k in range(0, n.size, 7):

        def f(t: np.ndarray, k: int = k) -> float:
            return float(_predict_grad(t[None], n, d, u)[0][0, k])

        def g(t: np.ndarray, k: int = k) -> np.ndarray:
            return _predict_grad(t[None], n, d, u)[1][0, k]

        assert check_grad(f, g, theta) < 1e-5 * (1 + np.linalg.norm(g(theta)))


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(1)
    n, d, u = _grid()
    loss = data_constrained_loss(n, d, u, **TRUE) * np.exp(rng.normal(0, 0.002, n.size))
    frame = pl.DataFrame({"params": n, "tokens": d, "unique_tokens": u, "loss": loss})
    return fit_data_constrained(frame, n_bootstrap=20)


def test_recovers_known_decay_constants_from_noisy_synthetic_runs(fitted) -> None:
    assert fitted.converged and fitted.form == "data_constrained"
    assert fitted.estimates["R_D_star"] == pytest.approx(TRUE["R_D_star"], rel=0.05)
    assert fitted.estimates["R_N_star"] == pytest.approx(TRUE["R_N_star"], rel=0.05)
    assert fitted.estimates["alpha"] == pytest.approx(TRUE["alpha"], rel=0.02)
    lo, hi = fitted.ci["R_D_star"]
    assert lo <= fitted.estimates["R_D_star"] <= hi
    assert law_from_parameters("data_constrained", fitted.law.parameters()) == fitted.law


def test_fitted_law_plans_with_intervals(fitted) -> None:
    p = plan_budget(fitted, 1e21, unique_tokens=1e10)
    assert p.n_samples == 20
    lo, hi = p.data_constrained.ci["epochs"]
    assert lo <= p.data_constrained.epochs <= hi


def test_without_repetition_or_columns_the_fit_refuses() -> None:
    n, d, _ = _grid()
    loss = data_constrained_loss(n, d, d, **TRUE)
    with pytest.raises(FitError, match="not identifiable"):
        fit_data_constrained({"params": n, "tokens": d, "unique_tokens": d, "loss": loss})
    with pytest.raises(FitError, match="unique_tokens"):
        fit_data_constrained({"params": n, "tokens": d, "loss": loss})


def test_data_constrained_law_through_the_store_and_the_cli(tmp_path, db_path) -> None:
    """Runs ingested with their unique-token counts are fitted by `scalefit fit --law
    data-constrained --where ...`, which reads `runs.unique_tokens`."""
    import json

    from typer.testing import CliRunner

    from scalefit.cli import app
    from scalefit.load import logs as ingest

    n, d, u = _grid()
    rng = np.random.default_rng(3)
    loss = data_constrained_loss(n, d, u, **TRUE) * np.exp(rng.normal(0, 0.005, n.size))
    frame = pl.DataFrame(
        {
            "run_id": [f"r{i}" for i in range(n.size)],
            "step": 1,
            "tokens": d,
            "loss": loss,
            "params": n,
            "unique_tokens": u,
        }
    )
    frame.write_csv(tmp_path / "repeats.csv")
    report = ingest.ingest_paths(db_path, [tmp_path / "repeats.csv"], project="repeats")
    assert report.exit_code == 0, str(report)
    result = CliRunner().invoke(
        app,
        [
            "fit",
            "--law",
            "data-constrained",
            "--where",
            "project = 'repeats'",
            "--db",
            str(db_path),
            "--bootstrap",
            "0",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    est = out["estimates"]
    assert est["R_D_star"] == pytest.approx(TRUE["R_D_star"], rel=0.1)
    assert est["R_N_star"] == pytest.approx(TRUE["R_N_star"], rel=0.1)
    assert est["alpha"] == pytest.approx(TRUE["alpha"], rel=0.05)


def test_the_fit_has_the_drivers_diagnostics_like_every_form(fitted) -> None:
    """The data-constrained fit runs on the one multi-start driver: it reports the basin
    spread, bound hits and the scaled Hessian's condition (as fit_law's forms do)."""
    d = fitted.diagnostics
    for key in ("n_basins", "second_best_objective", "other_basin_objectives", "on_bound"):
        assert key in d
    assert d["n_starts"] == 5 * 36  # the base fit's optimum and 4 fixed bases x 6 x 6
    assert 1 <= d["n_best_basin"] <= d["n_starts"]
    assert d["n_converged_starts"] + d["n_unfinished_starts"] == d["n_starts"]
    assert 1.0 <= d["hessian_condition"] < 1e8 and d["on_bound"] == []
    assert d["n_repeated_runs"] > 0
    assert set(d["theta"]) == {
        "a", "b", "e", "alpha", "beta", "log_R_D_star", "log_R_N_star"
    }  # fmt: skip


def test_an_unidentifiable_decay_constant_is_named_in_a_warning() -> None:
    """No run has more parameters than its unique data can use (``N < U_N`` everywhere), so
    ``R_N*`` does not enter the loss: the identifiability warning names it."""
    n, d, u = (
        g.ravel()
        for g in np.meshgrid(
            np.geomspace(1e7, 1e8, 5), np.geomspace(1e10, 1e12, 4), np.geomspace(1e10, 1e12, 4)
        )
    )
    u_n = unique_params(np.minimum(u, d), TRUE["A"], TRUE["B"], TRUE["alpha"], TRUE["beta"])
    assert (n < u_n).all() and (u < d).any()
    loss = data_constrained_loss(n, d, u, **TRUE)
    data = {"params": n, "tokens": d, "unique_tokens": u, "loss": loss}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        fit = fit_data_constrained(data, starts=[[6, 7, 0.5, 0.4, 0.4, 2.0, 2.0]])
    assert any(
        w.category is ConvergenceWarning
        and re.search("barely constrain .*log_R_N_star", str(w.message))
        for w in caught
    )
    assert not fit.diagnostics["hessian_condition"] < 1e8
    assert any("log_R_N_star" in w for w in fit.warnings)
    # R_D* still comes out: the repeated data constrain it
    assert fit.estimates["R_D_star"] == pytest.approx(TRUE["R_D_star"], rel=1e-3)
