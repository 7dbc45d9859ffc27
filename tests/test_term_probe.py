"""The search's last resort when its best point is not certified: the law refitted without
each of its terms in turn (``multistart._drop_terms``), on two hard data sets of
``benchmarks/fit_robustness.py`` where damped Newton alone cannot certify: set 16 crawls
along a curved valley towards ``E -> 0``, set 21 has ``beta`` on its bound, which makes the
``B`` term a constant beside ``E`` (a singular Hessian)."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from scalefit import _optim
from scalefit.fit import ConvergenceWarning, LawFit, fit_law, multistart
from scalefit.fit.forms import REGISTRY

CHIN = REGISTRY["chinchilla"]
BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "fit_robustness.py"


@pytest.fixture(scope="module")
def hard_sets() -> list[pl.DataFrame]:
    spec = importlib.util.spec_from_file_location("fit_robustness", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.data_sets()


def fit(data: pl.DataFrame) -> LawFit:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return fit_law(data, law="chinchilla")


def kkt(data: pl.DataFrame, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Independently of the driver's certificate: at ``theta``, the gradient over the
    objective, the smallest eigenvalue of the Hessian on the variables off the box's
    bounds (relative to the largest), and the objective."""
    pts = CHIN.points(data)
    obj = _optim.HuberObjective(CHIN.model(pts), np.log(pts.loss), 1e-3)
    f, g, H, _ = obj._derivatives(theta[None], np.ones(obj.y.size))
    inside = (theta > CHIN.lower) & (theta < CHIN.upper)
    eig = np.linalg.eigvalsh(H[0][np.ix_(inside, inside)])
    return g[0] / f[0], eig[0] / eig[-1], float(f[0])


def refitted(data: pl.DataFrame, term: str) -> LawFit:
    """The default fit of ``data``, certified after a refit without ``term``, at a point
    that no start of the grid reached."""
    got = fit(data)
    assert got.converged
    assert got.diagnostics["refit_without_term"] == term
    assert got.diagnostics["n_best_basin"] == 0
    return got


def no_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(multistart, "_drop_terms", lambda space, obj, best, w: (best, None))


def test_term_coefficients_are_the_terms_log_coefficients() -> None:
    rng = np.random.default_rng(0)
    data = pl.DataFrame(
        {
            "params": 10 ** rng.uniform(7, 10, 20),
            "tokens": 10 ** rng.uniform(8, 11, 20),
            "loss": rng.uniform(2, 3, 20),
        }
    )
    got = {}
    for law in ("chinchilla", "kaplan_n_e", "kaplan_n", "overtraining"):
        form = REGISTRY[law]
        model = form.model(form.points(data))
        assert isinstance(model, _optim.LSEAffineModel)
        got[law] = [form.theta_names[j] for j in model.term_coefficients]
    assert got == {
        "chinchilla": ["a", "b", "e"],
        "kaplan_n_e": ["alpha_log_x_c", "e"],
        "kaplan_n": ["alpha_log_x_c"],
        "overtraining": ["a", "b", "e"],
    }


def test_a_crawl_towards_E_zero_ends_certified_on_the_bound(
    hard_sets: list[pl.DataFrame], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = hard_sets[16]
    got = refitted(data, "e")
    assert got.diagnostics["on_bound"] == ["e"]
    assert got.diagnostics["refit_gain"] > 1e-6
    # The next basin is a certified end point of the search.
    assert got.diagnostics["second_best_objective"] > got.objective * (1 + 1e-6)
    assert any(
        "refitting without the term of e" in w and "lower (relative objective)" in w
        for w in got.warnings
    )
    theta = np.array(list(got.diagnostics["theta"].values()))
    assert theta[2] == CHIN.lower[2]
    g, ratio, f = kkt(data, theta)
    assert g[2] > 0  # shrinking E further would lower the objective: the bound holds it
    assert np.abs(g[[0, 1, 3, 4]]).max() < 1e-6  # stationary in the other four
    assert ratio > 0  # ... and a minimum there
    assert f == pytest.approx(got.objective, rel=1e-14)
    no_probe(monkeypatch)
    plain = fit(data)
    assert not plain.converged  # damped Newton alone is still crawling after 2000 iterations
    assert plain.diagnostics["theta"]["e"] > -2
    assert got.objective < plain.objective * (1 - 1e-6)


def test_two_terms_become_one_certified_without_one_of_them(
    hard_sets: list[pl.DataFrame], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = hard_sets[21]
    got = refitted(data, "b")
    assert sorted(got.diagnostics["on_bound"]) == ["b", "beta"]
    assert abs(got.diagnostics["refit_gain"]) <= 1e-9
    assert abs(got.diagnostics["second_best_relative_gap"]) <= 1e-9  # the same objective
    assert any("the data do not determine the term of b" in w for w in got.warnings)
    no_probe(monkeypatch)
    plain = fit(data)
    assert plain.diagnostics["theta"]["beta"] == 0.0
    assert not plain.converged  # E and the constant B term: a singular Hessian
    # The same objective (E takes the constant B had), now certified.
    assert got.objective == pytest.approx(plain.objective, rel=1e-12)
    assert got.estimates["E"] == pytest.approx(plain.estimates["E"] + plain.estimates["B"])


def test_a_certified_fit_is_left_as_it_is(hard_sets: list[pl.DataFrame]) -> None:
    got = fit(hard_sets[0])
    assert got.converged
    assert got.diagnostics["refit_without_term"] is None
