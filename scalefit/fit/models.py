"""The optimizer's view of each loss form: model builders (log-sum-exp designs or analytic
prediction-and-gradient functions), starting grids, estimates and derived quantities.

Everything here is vectorised over rows of ``theta`` (the optimizer's parameters) and
picklable (module-level functions and partials, no closures over data), so that objectives
can be sent to other processes for the bootstrap. :mod:`scalefit.fit.forms` ties these
pieces into one record per form.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping

import numpy as np

from .. import _optim
from ..laws import chinchilla_allocation
from .points import _Points

Model = _optim.LSEAffineModel | _optim.GenericModel
Estimates = dict[str, np.ndarray]


def hoffmann_grid() -> np.ndarray:
    """Hoffmann et al. (2022, D.2)'s 4500 starts as rows ``(a, b, e, alpha, beta)``:
    ``alpha, beta in {0, 0.5, ..., 2}``, ``e in {-1, -0.5, ..., 1}``, ``a, b in {0, 5, ..., 25}``.
    """
    return _product(
        np.arange(0, 30, 5.0),
        np.arange(0, 30, 5.0),
        np.arange(-1, 1.5, 0.5),
        np.arange(0, 2.5, 0.5),
        np.arange(0, 2.5, 0.5),
    )


def _product(*axes: Iterable[float]) -> np.ndarray:
    """Every combination of the axes' values as rows, the last axis varying fastest
    (``itertools.product``'s order; built by numpy, ~15x faster at start-up)."""
    mesh = np.meshgrid(*(np.asarray(list(a), dtype=float) for a in axes), indexing="ij")
    return np.stack(mesh, axis=-1).reshape(-1, len(axes))


def _lse_design(*terms: tuple[tuple[int, ...], tuple[np.ndarray, ...]], p: int) -> np.ndarray:
    """Design array ``J (n, K, P)`` from per-term coefficient rows."""
    n = np.asarray(terms[0][1][0]).size
    J = np.zeros((n, len(terms), p))
    for k, (cols, vals) in enumerate(terms):
        for j, v in zip(cols, vals, strict=True):
            J[:, k, j] = v
    return J


def chinchilla_model(pts: _Points) -> _optim.LSEAffineModel:
    """``log L = LSE(a - alpha log N, b - beta log D, e)``."""
    x, y = np.log(pts.params), np.log(pts.tokens)
    one = np.ones_like(x)
    J = _lse_design(((0, 3), (one, -x)), ((1, 4), (one, -y)), ((2,), (one,)), p=5)
    return _optim.LSEAffineModel(J)


def single_model(column: str, irreducible: bool) -> Callable[[_Points], _optim.LSEAffineModel]:
    """``log L = LSE(alpha log x_c - alpha log x[, e])`` for ``x`` the points' ``column``."""

    def build(pts: _Points) -> _optim.LSEAffineModel:
        x = np.log(getattr(pts, column))
        one = np.ones_like(x)
        if irreducible:
            J = _lse_design(((0, 1), (one, -x)), ((2,), (one,)), p=3)
        else:
            J = _lse_design(((0, 1), (one, -x)), p=2)
        return _optim.LSEAffineModel(J)

    return build


def _joint_predict_grad(
    theta: np.ndarray, x: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    # theta = (u = log N_c, v = log D_c, alpha_N, alpha_D);
    # log L = alpha_D * LSE((alpha_N/alpha_D)(u - x), v - y)
    u, v, an, ad = (theta[:, j, None] for j in range(4))
    z1 = (an / ad) * (u - x)
    z2 = v - y
    S = np.logaddexp(z1, z2)
    w1 = np.exp(z1 - S)
    w2 = 1.0 - w1
    G = np.stack([an * w1, ad * w2, w1 * (u - x), S - w1 * z1], axis=2)
    return ad * S, G


def joint_model(pts: _Points) -> _optim.GenericModel:
    """Kaplan et al.'s ``L(N, D)``."""
    # A partial of a module-level function (not a closure), so that the model pickles.
    x, y = np.log(pts.params), np.log(pts.tokens)
    return _optim.GenericModel(4, functools.partial(_joint_predict_grad, x=x, y=y))


def overtraining_model(pts: _Points) -> _optim.LSEAffineModel:
    """``log L = LSE(a - eta log N, b - eta log D, e)``: Chinchilla with one shared exponent."""
    x, y = np.log(pts.params), np.log(pts.tokens)
    one = np.ones_like(x)
    J = _lse_design(((0, 3), (one, -x)), ((1, 3), (one, -y)), ((2,), (one,)), p=4)
    return _optim.LSEAffineModel(J)


_DOWNSTREAM_KINK = -1e-3
"""Where ``log(1 - e^u)`` is continued linearly (``u >= -1e-3`` means ``k e^(-gamma L)`` is
within 0.1% of ``epsilon``): starts and Newton steps that would make an error non-positive
see a steep, finite slope back instead of a NaN."""


def _downstream_predict_grad(theta: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # theta = (e = log epsilon, c = log k, gamma); log Err = e + f(u), u = c - e - gamma L,
    # f(u) = log(1 - e^u) for u < kink, continued linearly (C1) beyond.
    e, c, g = (theta[:, j, None] for j in range(3))
    u = c - e - g * x
    uc = np.minimum(u, _DOWNSTREAM_KINK)
    f = np.log(-np.expm1(uc))
    df = -1.0 / np.expm1(-uc)  # f'(u) = -e^u / (1 - e^u)
    f = f + df * (u - uc)
    G = np.stack([1.0 - df, df, -x * df], axis=2)
    return e + f, G


def downstream_model(pts: _Points) -> _optim.GenericModel:
    """Gadre et al.'s ``log Err(L)``."""
    assert pts.x is not None  # read with target="error"
    return _optim.GenericModel(3, functools.partial(_downstream_predict_grad, x=pts.x))


# --------------------------------------------------------------------------- estimates


def chinchilla_estimates(t: np.ndarray) -> Estimates:
    return {
        "E": np.exp(t[:, 2]),
        "A": np.exp(t[:, 0]),
        "B": np.exp(t[:, 1]),
        "alpha": t[:, 3],
        "beta": t[:, 4],
    }


def single_estimates(xc: str, alpha: str, irreducible: bool) -> Callable[[np.ndarray], Estimates]:
    def est(t: np.ndarray) -> Estimates:
        with np.errstate(divide="ignore", invalid="ignore"):
            out = {xc: np.exp(t[:, 0] / t[:, 1]), alpha: t[:, 1]}
        if irreducible:
            out["E"] = np.exp(t[:, 2])
        return out

    return est


def joint_estimates(t: np.ndarray) -> Estimates:
    return {"N_c": np.exp(t[:, 0]), "alpha_N": t[:, 2], "D_c": np.exp(t[:, 1]), "alpha_D": t[:, 3]}


def overtraining_estimates(t: np.ndarray) -> Estimates:
    return {"E": np.exp(t[:, 2]), "A": np.exp(t[:, 0]), "B": np.exp(t[:, 1]), "eta": t[:, 3]}


def downstream_estimates(t: np.ndarray) -> Estimates:
    return {"epsilon": np.exp(t[:, 0]), "k": np.exp(t[:, 1]), "gamma": t[:, 2]}


# --------------------------------------------------------------------------- grids


def grid_single(irreducible: bool) -> np.ndarray:
    rows: list[tuple[float, ...]] = []
    for alpha in (0.05, 0.1, 0.2, 0.4, 0.8):
        for log_xc in (10.0, 20.0, 30.0, 40.0, 50.0, 60.0):
            if irreducible:
                rows += [(alpha * log_xc, alpha, e) for e in (-1.0, 0.0, 0.5, 1.0)]
            else:
                rows.append((alpha * log_xc, alpha))
    return np.array(rows)


def grid_joint() -> np.ndarray:
    vals = (20.0, 25.0, 30.0, 35.0)
    exps = (0.05, 0.1, 0.2, 0.4)
    return _product(vals, vals, exps, exps)


def grid_overtraining() -> np.ndarray:
    """Hoffmann et al.'s grid for ``(a, b, e)`` with shared exponents ``eta``."""
    return _product(
        np.arange(0, 30, 5.0),
        np.arange(0, 30, 5.0),
        np.arange(-1, 1.5, 0.5),
        (0.1, 0.25, 0.5, 1.0, 1.5),
    )


def grid_downstream() -> np.ndarray:
    return _product(
        (-1.0, -0.5, -0.2, 0.0),
        (-2.0, 0.0, 2.0, 4.0, 8.0),
        (0.25, 0.5, 1.0, 2.0, 4.0),
    )


# --------------------------------------------------------------------------- derived


def no_derived(est: Mapping[str, np.ndarray], reference_flops: float) -> Estimates:
    return {}


def chinchilla_derived(est: Mapping[str, np.ndarray], reference_flops: float) -> Estimates:
    """Allocation exponents ``a = beta/(alpha+beta)``, ``b`` and tokens per parameter at
    ``reference_flops``."""
    alpha, beta = np.asarray(est["alpha"]), np.asarray(est["beta"])
    with np.errstate(all="ignore"):
        s = alpha + beta
        n, d = chinchilla_allocation(reference_flops, est["A"], est["B"], alpha, beta)
        return {"a": beta / s, "b": alpha / s, "tokens_per_param": d / n}


def overtraining_derived(est: Mapping[str, np.ndarray], reference_flops: float) -> Estimates:
    eta = np.asarray(est["eta"])
    with np.errstate(all="ignore"):
        n, d = chinchilla_allocation(reference_flops, est["A"], est["B"], eta, eta)
        half = np.full_like(eta, 0.5, dtype=float)
        return {"a": half, "b": half, "tokens_per_param": d / n}


def joint_derived(est: Mapping[str, np.ndarray], reference_flops: float) -> Estimates:
    r = np.asarray(est["alpha_N"]) / np.asarray(est["alpha_D"])
    return {"a": 1.0 / (1.0 + r), "b": r / (1.0 + r)}
