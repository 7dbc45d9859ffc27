"""The engine's convergence certificate (``BatchRun.certify``): a point on a slope is not a
minimum, a term already dead with nothing to gain is left out."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from scalefit import _optim
from scalefit._optim.driver import _free_mask
from scalefit.fit import ConvergenceWarning, fit_law
from scalefit.fit.forms import REGISTRY
from scalefit.fit.multistart import RTOL
from scalefit.laws import chinchilla_loss

# Chinchilla's law without the irreducible term: a fit of it wants E -> 0.
NO_E = {"E": 0.0, "A": 480.0, "B": 2100.0, "alpha": 0.35, "beta": 0.37}
STARTS = [[5.0, 5.0, 0.0, 0.5, 0.5], [8.0, 8.0, 0.5, 0.3, 0.3], [2.0, 10.0, -0.5, 0.2, 0.6]]
CHIN = REGISTRY["chinchilla"]


def no_e_data(seed: int, n: int = 150, noise: float = 0.01) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    params = np.exp(rng.uniform(np.log(1e7), np.log(1e10), n))
    tokens = np.exp(rng.uniform(np.log(1e8), np.log(1e11), n))
    loss = chinchilla_loss(params, tokens, **NO_E) * np.exp(noise * rng.standard_normal(n))
    return pl.DataFrame({"params": params, "tokens": tokens, "loss": loss})


def objective(data: pl.DataFrame, law: str = "chinchilla") -> _optim.HuberObjective:
    form = REGISTRY[law]
    pts = form.points(data)
    return _optim.HuberObjective(form.model(pts), np.log(pts.loss), 1e-3)


def one_dimensional_gains(obj: _optim.HuberObjective, theta: np.ndarray, law: str) -> np.ndarray:
    """Each free variable's own Newton decrement ``g_j^2 / (2 H_jj)`` over the objective."""
    form = REGISTRY[law]
    f, g, H, _ = obj._derivatives(theta[None], np.ones(obj.y.size))
    free = _free_mask(theta[None], g, form.lower, form.upper)[0]
    h = np.diagonal(H[0])
    return np.where(free, g[0] ** 2 / (2 * np.where(free, h, 1.0)), 0.0) / f[0]


def test_own_gain_is_the_one_dimensional_models_decrease_within_the_box() -> None:
    lo, hi = np.zeros(6), np.full(6, 10.0)
    theta = np.array([[5.0, 5.0, 5.0, 9.0, 1.0, 5.0]])
    g = np.array([[2.0, 2.0, 0.0, -3.0, 3.0, -1e-300]])
    h = np.array([[1.0, 0.0, 0.0, 1.0, 1.0, 0.0]])
    gain = _optim.BatchRun.own_gain(theta, g, h, lo, hi)[0]
    # g^2 / (2h) = 2 (the Newton step -2 stays inside); no curvature: |g| * room = 2 * 5;
    # nothing at all; Newton step +3 leaves the box at room 1: 3 - 1/2; downhill towards the
    # lower bound, room 1: 3 - 1/2; a gradient of 1e-300 over 5 units, no curvature.
    assert gain == pytest.approx([2.0, 10.0, 0.0, 2.5, 2.5, 5e-300], rel=1e-15)


@pytest.mark.parametrize("e0", [-10.0, -14.0])
def test_a_point_on_the_slope_to_E_zero_is_not_certified(e0: float) -> None:
    """Every other variable converged with ``e`` held at ``e0``: along ``e`` the gradient and
    the curvature both shrink like ``E`` (so ``H_ee`` is a tiny fraction of the stiffest
    curvature), but their ratio does not, and the decrease left along ``e`` is far above the
    tolerance. The rule that left such a direction out of the decrement certified these
    points; the row must run on to the bound of the box instead."""
    obj = objective(no_e_data(0))
    w = np.ones(obj.y.size)
    lo, hi = CHIN.lower.copy(), CHIN.upper.copy()
    lo[2] = hi[2] = e0
    held = _optim.minimize_batch(obj, np.array([[6.2, 7.6, e0, 0.35, 0.37]]), w, lo, hi)
    assert held.converged[0]
    run = _optim.BatchRun(obj, held.theta.copy(), w, CHIN.lower, CHIN.upper, RTOL, None)
    f, g, H = run.f[0], run.g[0], run.H[0]
    assert H[2, 2] < 1e-10 * np.abs(np.diagonal(H)).max()  # the old rule's "no curvature"
    assert g[2] ** 2 / (2 * H[2, 2]) > 1e-8 * f  # ... yet a million times the tolerance left
    assert not run.converged[0]
    assert run.dec[0] >= g[2] ** 2 / (2 * H[2, 2])
    run.advance(60)
    assert run.converged[0]
    assert run.theta[0, 2] == CHIN.lower[2]
    assert run.result().at_bound[0, 2]
    assert run.f[0] < f
    assert run.n_iter[0] <= 30  # a Newton step moves e by about 1 on an exponential slope


@pytest.mark.parametrize(("law", "seed"), [("chinchilla", 0), ("kaplan_n_e", 4)])
def test_a_fit_that_wants_E_zero_ends_with_E_on_its_bound(law: str, seed: int) -> None:
    """The honest answer where the objective falls all the way as ``E -> 0``: ``e`` on the
    lower bound of the box, said by a warning, and no variable left with a one-dimensional
    decrement above the tolerance. (The old rule certified ``e = -19.5`` on the first.)"""
    data = no_e_data(seed)
    with pytest.warns(ConvergenceWarning, match="e ended on a bound"):
        fit = fit_law(data, law=law, starts=STARTS if law == "chinchilla" else None)
    assert fit.converged
    theta = np.array(list(fit.diagnostics["theta"].values()))
    e = REGISTRY[law].theta_names.index("e")
    assert theta[e] == REGISTRY[law].lower[e]
    assert fit.diagnostics["on_bound"] == ["e"]
    assert one_dimensional_gains(objective(data, law), theta, law).max() <= RTOL


def test_bootstrap_refits_of_data_that_want_E_zero_all_converge() -> None:
    with pytest.warns(ConvergenceWarning, match="e ended on a bound"):
        fit = fit_law(no_e_data(0), starts=STARTS, n_bootstrap=40, seed=1)
    assert fit.diagnostics["bootstrap_not_converged"] == 0
    assert np.isfinite(fit.samples).all()


def test_a_dead_term_with_nothing_to_gain_stays_certified() -> None:
    """Data with no dependence on model size, at the optimum of ``E + B / D^beta`` with
    Chinchilla's ``A`` term killed (``a`` on its lower bound, ``alpha`` on its upper one):
    the gradient and curvature along ``a`` and ``alpha`` are ~1e-60, the term has nothing to
    give, and the point is certified as it stands (no iteration)."""
    rng = np.random.default_rng(3)
    n = 120
    params = np.exp(rng.uniform(np.log(1e7), np.log(1e10), n))
    tokens = np.exp(rng.uniform(np.log(1e8), np.log(1e11), n))
    loss = (1.7 + 2100.0 / tokens**0.37) * np.exp(0.01 * rng.standard_normal(n))
    data = pl.DataFrame({"params": params, "tokens": tokens, "loss": loss})
    sub = fit_law(data, law="kaplan_d_e")
    assert sub.converged
    t = sub.diagnostics["theta"]
    theta = np.array([[CHIN.lower[0], t["alpha_log_x_c"], t["e"], CHIN.upper[3], t["alpha_D"]]])
    obj = objective(data)
    w = np.ones(n)
    run = _optim.BatchRun(obj, theta.copy(), w, CHIN.lower, CHIN.upper, RTOL, None)
    assert np.abs(run.g[0, [0, 3]]).max() < 1e-50
    assert run.converged[0]
    assert run.dec[0] <= RTOL * run.f[0]
    res = _optim.minimize_batch(obj, theta, w, CHIN.lower, CHIN.upper)
    assert res.converged[0] and res.n_iter[0] == 0
    np.testing.assert_array_equal(res.theta, theta)


def test_the_reported_decrement_is_exact_where_the_certificate_kept_a_bound() -> None:
    """Rows far from their optimum keep a lower bound of the decrement instead of a solve
    (each variable's own ``g_j^2 / (2 H_jj)``); what a run reports (``result()``) is still
    the exact ``g^T H^-1 g / 2`` (``inf`` where ``H`` is not positive definite)."""
    obj = objective(no_e_data(2))
    rng = np.random.default_rng(5)
    starts = np.column_stack(
        [
            rng.uniform(0, 10, 60),
            rng.uniform(0, 10, 60),
            rng.uniform(-1, 1.5, 60),
            rng.uniform(0, 1, 60),
            rng.uniform(0, 1, 60),
        ]
    )
    w = np.ones(obj.y.size)
    run = _optim.BatchRun(obj, starts, w, CHIN.lower, CHIN.upper, RTOL, None)
    run.advance(2)
    bounded = ~run.exact
    assert bounded.sum() >= 30  # most rows are far: the bound is what they keep
    kept = run.dec.copy()
    res = run.result()
    assert run.exact.all()
    checked = 0
    for i in range(starts.shape[0]):
        g, H = res.grad[i], res.hess[i]
        free = _free_mask(res.theta[i : i + 1], g[None], CHIN.lower, CHIN.upper)[0]
        h = np.abs(np.diagonal(H))
        if not free.all() or h.min() <= 1e-10 * h.max():
            continue  # pinned or nearly flat variables: other tests
        checked += 1
        if np.linalg.eigvalsh(H)[0] > 0:
            exact = 0.5 * g @ np.linalg.solve(H, g)
            assert res.decrement[i] == pytest.approx(exact, rel=1e-8)
        else:
            assert res.decrement[i] == np.inf
        assert kept[i] <= res.decrement[i] * (1 + 1e-12)  # a lower bound indeed
        assert not bounded[i] or kept[i] > 100 * RTOL * res.objective[i]
    assert checked >= 30
