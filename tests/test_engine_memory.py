"""The memory-bounded engine: blocks of rows and points chosen from a byte budget give the
optimum of the unblocked evaluation, and stay within the budget."""

from __future__ import annotations

import functools
import pickle
import tracemalloc

import numpy as np
import pytest

from scalefit import _optim
from scalefit.fit import FORMS, fit_law, hoffmann_grid
from scalefit.fit.models import _joint_predict_grad
from scalefit.fit.points import as_points as _as_points
from scalefit.laws import chinchilla_loss

TRUE = {"E": 1.8, "A": 480.0, "B": 2100.0, "alpha": 0.35, "beta": 0.37}
TINY = 300_000  # bytes: a few points per block, a few dozen rows


def data(n: int = 90, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    params = np.exp(rng.uniform(np.log(1e7), np.log(1e10), n))
    tokens = np.exp(rng.uniform(np.log(1e8), np.log(1e11), n))
    loss = chinchilla_loss(params, tokens, **TRUE) * np.exp(0.02 * rng.standard_normal(n))
    return {"params": params, "tokens": tokens, "loss": loss}


def objective(form: str, n: int = 90, seed: int = 0) -> _optim.HuberObjective:
    pts = _as_points(data(n, seed), need=FORMS[form].needs)
    return _optim.HuberObjective(FORMS[form].model(pts), np.log(pts.loss), 1e-3)


def near(grid: np.ndarray, k: int) -> np.ndarray:
    """``k`` starts from the middle of a form's grid, perturbed (they converge in tens of
    iterations, unlike the grid's far corners)."""
    rng = np.random.default_rng(7)
    mid = 0.5 * (grid.min(axis=0) + grid.max(axis=0))
    return mid + 0.2 * (grid.max(axis=0) - grid.min(axis=0)) * rng.uniform(
        -1, 1, (k, grid.shape[1])
    )


def assert_same_optimum(got: _optim.BatchResult, want: _optim.BatchResult) -> None:
    assert want.converged.all()
    np.testing.assert_array_equal(got.converged, want.converged)
    np.testing.assert_allclose(got.objective, want.objective, rtol=1e-12, atol=0)
    np.testing.assert_allclose(got.theta, want.theta, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("form", ["chinchilla", "kaplan_n_e"])
def test_a_tiny_budget_splits_points_and_rows(form: str) -> None:
    obj = objective(form)
    n = obj.y.size
    nb, rows, _ = obj.model.plan(TINY)
    assert nb < n and 8 <= rows < 512
    assert obj.model.plan() == (n, obj.model.plan()[1], True)  # default: one block of points


@pytest.mark.parametrize("form", ["chinchilla", "kaplan_n_e", "kaplan_n"])
def test_blocked_derivatives_equal_the_unblocked_ones(form: str) -> None:
    obj = objective(form)
    rng = np.random.default_rng(1)
    grid = FORMS[form].grid
    theta = grid[rng.choice(len(grid), 50)] + 0.01 * rng.standard_normal((50, grid.shape[1]))
    W = rng.integers(0, 3, (80, obj.y.size)).astype(float)
    rows = rng.choice(80, 50, replace=False)
    for w, r in ((np.ones(obj.y.size), None), (W[rows], None), (W, rows)):
        whole = obj._derivatives(theta, w if r is None else w[r], full_scaling=True)
        blocked = obj._derivatives(theta, w, full_scaling=True, rows=r, budget=TINY)
        # Blocks change only the order of the sums over points (gradients cancel: compare
        # with the magnitude of each array, not of each entry).
        for a, b in zip(blocked, whole, strict=True):
            assert np.abs(a - b).max() <= 1e-12 * np.abs(b).max()
        wr = w if r is None else w[r]
        np.testing.assert_allclose(obj.value(theta, w, rows=r, budget=TINY), whole[0], rtol=1e-13)
        np.testing.assert_array_equal(obj.value(theta, wr), whole[0])


@pytest.mark.parametrize("form", ["chinchilla", "kaplan_n_e"])
def test_chunked_starts_and_points_reach_the_unchunked_optimum(form: str) -> None:
    """Chunks of starts and blocks of points change only rounding (the order of the sums
    over points; BLAS kernels for stacks of fewer than 8 rows), so the optimum is the same:
    objectives to 1e-12. Where the minimum is flat, the minimiser itself is defined only to
    ~1e-7 here (run to the floating-point floor, ``rtol`` 1e-20: two chunkings of starts end
    6e-8 apart in kaplan_n_e's E with objectives equal to 1e-15), so parameters are compared
    to 1e-6; on sharply identified data they agree to 1e-9 (the bootstrap test below)."""
    obj = objective(form)
    f = FORMS[form]
    starts = near(f.grid, 40)
    w = np.ones(obj.y.size)
    kw = {"max_iter": 500, "rtol": 1e-20}
    whole = _optim.minimize_batch(obj, starts, w, f.lower, f.upper, **kw)
    by_rows = _optim.minimize_chunked(obj, starts, w, f.lower, f.upper, chunk=7, **kw)
    np.testing.assert_allclose(by_rows.objective, whole.objective, rtol=1e-12, atol=0)
    np.testing.assert_allclose(by_rows.theta, whole.theta, rtol=1e-6, atol=1e-8)
    tiny = _optim.minimize_chunked(obj, starts, w, f.lower, f.upper, budget=TINY, **kw)
    # Rows at the floating-point floor in both: certified to 1e-20, or stopped because no
    # step changes f any more with a decrement below 1e-16 f (100x tighter than a fit's
    # certification); which of the two a row ends with is a matter of rounding.
    floor = [r.converged | (r.decrement <= 1e-16 * r.objective) for r in (whole, tiny)]
    both = floor[0] & floor[1]
    assert both.sum() >= 30
    np.testing.assert_allclose(tiny.objective[both], whole.objective[both], rtol=1e-12, atol=0)
    np.testing.assert_allclose(tiny.theta[both], whole.theta[both], rtol=1e-6, atol=1e-8)
    # Every start ends at the one optimum, whichever way it was evaluated.
    best = whole.objective[both].min()
    np.testing.assert_allclose(tiny.objective, best, rtol=1e-12)


def test_bootstrap_refits_with_a_tiny_budget_equal_the_default() -> None:
    obj = objective("chinchilla", n=70, seed=3)
    f = FORMS["chinchilla"]
    best = _optim.minimize_batch(
        obj, np.array([[6.0, 7.0, 0.5, 0.35, 0.37]]), np.ones(70), f.lower, f.upper, max_iter=500
    )
    rng = np.random.default_rng(5)
    W = np.zeros((24, 70))
    np.add.at(W, (np.arange(24)[:, None], rng.integers(0, 70, (24, 70))), 1.0)
    th0 = np.repeat(best.theta, 24, axis=0)
    default = _optim.minimize_chunked(obj, th0, W, f.lower, f.upper, max_iter=1000)
    tiny = _optim.minimize_chunked(obj, th0, W, f.lower, f.upper, max_iter=1000, budget=TINY)
    assert_same_optimum(tiny, default)


def test_generic_model_with_data_blocks_points_like_the_whole() -> None:
    pts = _as_points(data(80, 2), need=("params", "tokens"))
    x, y = np.log(pts.params), np.log(pts.tokens)
    whole = _optim.HuberObjective(
        _optim.GenericModel(4, functools.partial(_joint_predict_grad, x=x, y=y)),
        np.log(pts.loss),
        1e-3,
    )
    blocked_model = _optim.GenericModel(4, _joint_predict_grad, data={"x": x, "y": y})
    blocked = _optim.HuberObjective(blocked_model, np.log(pts.loss), 1e-3)
    nb, _ = blocked_model.plan(80, TINY)
    assert nb < 80
    f = FORMS["kaplan_nd"]
    starts = near(f.grid, 12)
    w = np.ones(80)
    a = _optim.minimize_batch(whole, starts, w, f.lower, f.upper, max_iter=1000)
    b = _optim.minimize_chunked(blocked, starts, w, f.lower, f.upper, max_iter=1000, budget=TINY)
    keep = a.converged
    assert keep.any()
    np.testing.assert_allclose(b.objective[keep], a.objective[keep], rtol=1e-12)
    np.testing.assert_allclose(b.theta[keep], a.theta[keep], rtol=1e-9, atol=1e-9)


def test_fit_law_with_a_tiny_module_budget_gives_the_same_fit(monkeypatch) -> None:
    """Blocks of a few points change the order of the sums, so the path by rounding; the
    optimum stays the same: both certified, objectives equal to 1e-12, and the two points
    no further apart than float64 can tell in the objective: ``dt' H dt / 2 <= 1e-15 f``
    (H the Hessian at the optimum). That is as strict as 1e-9 relative in any one
    parameter (a 1e-9 step in ``e``, the least curved, already gives 1.3e-15 f; in ``beta``
    1.7e-13 f), but it allows the two points to lie apart along this data's flattest
    direction (Hessian condition ~6e4), where the arithmetic itself leaves A and B
    undetermined at ~3e-8: the objective differs by 5e-16 across it."""
    d = data(60, 4)
    starts = hoffmann_grid()[::20]
    want = fit_law(d, starts=starts)
    monkeypatch.setattr(_optim, "MEMORY_BUDGET", TINY)
    got = fit_law(d, starts=starts)
    assert got.converged and want.converged
    assert got.objective == pytest.approx(want.objective, rel=1e-12)
    form = FORMS["chinchilla"]
    pts = _as_points(d, need=form.needs)
    obj = _optim.HuberObjective(form.model(pts), np.log(pts.loss), 1e-3)
    theta = {
        name: np.array([f.diagnostics["theta"][k] for k in form.theta_names])
        for name, f in (("want", want), ("got", got))
    }
    H = obj.value_grad_hess(theta["want"][None], np.ones(pts.n))[2][0]
    dt = theta["got"] - theta["want"]
    assert 0.5 * dt @ H @ dt <= 1e-15 * want.objective


@pytest.mark.parametrize("budget", [400_000, 2_000_000])
def test_minimisation_stays_within_the_budget(budget: int) -> None:
    """Traced allocations of whole minimisations (the model's scratch, block constants,
    weight blocks, the driver's rows) stay under the budget plus the result itself (a few
    arrays per row), on 4,000 points and 100 rows with their own weights or shared ones."""
    n, s = 4_000, 100
    obj = objective("chinchilla", n=n)
    f = FORMS["chinchilla"]
    rng = np.random.default_rng(0)
    theta = f.grid[rng.choice(len(f.grid), s)]
    W = rng.integers(0, 3, (s, n)).astype(float)
    nb, r, keep = obj.model.plan(budget)
    assert nb < n and not keep
    result_bytes = 2 * s * 8 * (3 * 5 + 5 * 5 + 4)  # the parts and their concatenation
    for w in (W, np.ones(n)):
        # (Overflow warnings of far starts off: pytest records every one, in traced memory.)
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            with np.errstate(all="ignore"):
                _optim.minimize_chunked(obj, theta, w, f.lower, f.upper, max_iter=1, budget=budget)
            peak = tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
        assert 0 < peak <= budget + result_bytes
    # The budget is what bounds it: twice the budget gives bigger blocks.
    assert obj.model.plan(2 * budget)[0] * obj.model.plan(2 * budget)[1] > nb * r


def test_budget_is_checked_and_models_pickle_without_scratch() -> None:
    obj = objective("chinchilla")
    f = FORMS["chinchilla"]
    with pytest.raises(ValueError, match="memory budget"):
        _optim.minimize_chunked(obj, f.grid[:3], np.ones(90), f.lower, f.upper, budget=0)
    obj._derivatives(f.grid[:3], np.ones(90))
    assert obj.model._consts_cache
    copy = pickle.loads(pickle.dumps(obj))
    assert not copy.model._consts_cache
    np.testing.assert_array_equal(
        copy.value(f.grid[:3], np.ones(90)), obj.value(f.grid[:3], np.ones(90))
    )


def test_a_bootstrap_drawn_in_budgeted_blocks_gives_the_same_samples(monkeypatch) -> None:
    """The fit draws its resamples block by block within the memory budget (1,000 resamples
    of 1M points would be an 8 GB matrix at once): when the budget allows only 5 resamples
    per block, the 12 resamples are drawn in 3 blocks and refit to the same samples."""
    d = data(60, 4)
    starts = hoffmann_grid()[::20]
    want = fit_law(d, starts=starts, n_bootstrap=12, seed=3)
    calls = []

    def five_rows(n_points: int, n_groups: int, budget: int | None = None) -> int:
        calls.append((n_points, n_groups))
        return 5

    monkeypatch.setattr(_optim, "weight_block_rows", five_rows)
    got = fit_law(d, starts=starts, n_bootstrap=12, seed=3)
    assert calls == [(60, 60)]
    np.testing.assert_allclose(got.samples, want.samples, rtol=1e-9)
