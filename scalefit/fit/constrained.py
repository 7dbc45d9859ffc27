"""Muennighoff et al. (2023)'s data-constrained law as an optimizer model.

``log L_hat = LSE(a - alpha log N', b - beta log D', e)`` with ``N'``, ``D'`` from
:func:`scalefit.laws.effective_params` and :func:`~scalefit.laws.effective_tokens`: the
parameters are ``theta = (a, b, e, alpha, beta, log R_D*, log R_N*)``; the gradient of
``log L_hat`` is analytic (:func:`_predict_grad`, checked with ``scipy.optimize.check_grad``
in the tests). The form's record (:mod:`scalefit.fit.forms`) fits it with the same driver,
diagnostics and bootstrap as every other form.

Starts: approach 3's fit to the single-epoch runs (``U >= D``), crossed with the paper's grid
``R_D*, R_N* in {0.5, 4, 8, ..., 20}`` (Appendix A; 0 is replaced by 0.5 in log space);
without single-epoch runs, a small grid of base parameters.
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import Protocol

import numpy as np

from .. import _optim
from ..errors import FitError
from .models import chinchilla_estimates
from .multistart import SearchSpace, solve_grid
from .points import _Points, check_fittable


class BaseForm(SearchSpace, Protocol):
    """The base form whose fit to the single-epoch runs gives starts (approach 3's)."""

    @property
    def grid(self) -> np.ndarray: ...

    @property
    def needs(self) -> tuple[str, ...]: ...

    def model(self, pts: _Points) -> _optim.LSEAffineModel | _optim.GenericModel: ...


__all__ = [
    "BASE_GRID_ITERATIONS",
    "check_repeats",
    "constrained_estimates",
    "constrained_model",
    "constrained_starts",
]

BASE_GRID_ITERATIONS = 20
"""Newton iterations per start of the base (approach 3) fit to the single-epoch runs."""


def _predict_grad(
    theta: np.ndarray, params: np.ndarray, tokens: np.ndarray, unique: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``log L_hat`` ``(S, n)`` and its gradient ``(S, n, 7)`` for rows of ``theta``."""
    with np.errstate(all="ignore"):  # extreme starts overflow; the engine discards them
        return _predict_grad_raw(theta, params, tokens, unique)


def _effective_data(
    rd: np.ndarray, tokens: np.ndarray, u_d: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Effective data ``D' = U_D (1 + R* (1 - e^-x))``, ``x = R_D / R*``, and
    ``d log D' / d log R_D*``."""
    r_d = tokens[None, :] / u_d - 1.0
    rds = np.exp(rd)
    x = r_d / rds
    ex = np.exp(-x)
    d_eff = u_d * (1.0 + rds * -np.expm1(-x))
    return d_eff, rds * u_d * (-np.expm1(-x) - x * ex) / d_eff


def _unique_params(
    a: np.ndarray, b: np.ndarray, al: np.ndarray, be: np.ndarray, u_d: np.ndarray
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``log U_N`` with ``U_N = G (U_D G)^(beta/alpha)``, ``log G = (log al + a - log be -
    b)/(al+be)``, and its derivatives by ``a``, ``b``, ``alpha``, ``beta``."""
    s = al + be
    log_g = (np.log(al) + a - np.log(be) - b) / s
    log_ud = np.log(u_d)
    log_un = (1.0 + be / al) * log_g + (be / al) * log_ud
    dlg = {
        "a": 1.0 / s,
        "b": -1.0 / s,
        "al": (1.0 / al - log_g) / s,
        "be": (-1.0 / be - log_g) / s,
    }
    dlun = {k: (1.0 + be / al) * v for k, v in dlg.items()}
    dlun["al"] = dlun["al"] - (be / al**2) * (log_g + log_ud)
    dlun["be"] = dlun["be"] + (log_g + log_ud) / al
    return log_un, dlun


def _effective_params(
    log_un: np.ndarray, rn: np.ndarray, n: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Effective parameters ``N'``, ``d log N' / d log U_N`` and ``d log N' / d log R_N*``."""
    u_n = np.exp(log_un)
    excess = n > u_n
    un = np.where(excess, u_n, n)
    rns = np.exp(rn)
    y = np.maximum(n / un - 1.0, 0.0) / rns
    ey = np.exp(-y)
    n_eff = un * (1.0 + rns * -np.expm1(-y))
    # dN'/dU_N = 1 + R*(1 - e^-y) - (N/U_N) e^-y on the excess branch, 0 otherwise
    dn_dun = np.where(excess, 1.0 + rns * -np.expm1(-y) - (n / un) * ey, 0.0)
    return n_eff, dn_dun * un / n_eff, rns * un * (-np.expm1(-y) - y * ey) / n_eff


def _predict_grad_raw(
    theta: np.ndarray, params: np.ndarray, tokens: np.ndarray, unique: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    a, b, e, al, be, rd, rn = (theta[:, j, None] for j in range(7))
    u_d = np.minimum(unique, tokens)[None, :]
    d_eff, dlogd_drd = _effective_data(rd, tokens, u_d)
    log_un, dlun = _unique_params(a, b, al, be, u_d)
    n_eff, dlogn_dlun, dlogn_drn = _effective_params(log_un, rn, params[None, :])
    log_n, log_d = np.log(n_eff), np.log(d_eff)
    z1 = a - al * log_n
    z2 = b - be * log_d
    z3 = np.broadcast_to(e, z1.shape)
    S = np.logaddexp(np.logaddexp(z1, z2), z3)
    w1, w2, w3 = np.exp(z1 - S), np.exp(z2 - S), np.exp(z3 - S)
    G = np.empty((*S.shape, 7))
    G[..., 0] = w1 * (1.0 - al * dlogn_dlun * dlun["a"])
    G[..., 1] = w1 * (-al * dlogn_dlun * dlun["b"]) + w2
    G[..., 2] = w3
    G[..., 3] = w1 * (-log_n - al * dlogn_dlun * dlun["al"])
    G[..., 4] = w1 * (-al * dlogn_dlun * dlun["be"]) + w2 * (-log_d)
    G[..., 5] = w2 * (-be * dlogd_drd)
    G[..., 6] = w1 * (-al * dlogn_drn)
    return S, G


def constrained_model(pts: _Points) -> _optim.GenericModel:
    """The data-constrained ``log L_hat`` of ``pts`` (which carry ``unique`` tokens)."""
    assert pts.unique is not None  # read by as_constrained_points
    # A partial (not a lambda), so that the objective pickles for parallel bootstrap jobs.
    return _optim.GenericModel(
        7,
        functools.partial(_predict_grad, params=pts.params, tokens=pts.tokens, unique=pts.unique),
    )


def constrained_estimates(t: np.ndarray) -> dict[str, np.ndarray]:
    """Chinchilla's five estimates (the first five parameters are its own) and the decay
    constants ``R_D*``, ``R_N*`` (fitted in log space)."""
    return {
        **chinchilla_estimates(t),
        "R_D_star": np.exp(t[:, 5]),
        "R_N_star": np.exp(t[:, 6]),
    }


def check_repeats(pts: _Points) -> dict[str, int]:
    """Refuse data without repetition: ``R_D*`` and ``R_N*`` cannot be told apart from
    infinity unless some run repeats its data. Returns the count of repeating runs (a
    diagnostic)."""
    assert pts.unique is not None
    if not (pts.unique < pts.tokens).any():
        raise FitError(
            "no run repeats its data (unique_tokens >= tokens everywhere): R_D* and R_N* are "
            "not identifiable; add multi-epoch runs, or fit `chinchilla` instead"
        )
    return {"n_repeated_runs": int((pts.unique < pts.tokens).sum())}


def constrained_starts(pts: _Points, base: BaseForm) -> np.ndarray:
    """Starts of the data-constrained fit: the ``base`` (approach 3) optimum on the
    single-epoch runs, and a few fixed base points, each crossed with the paper's grid of
    ``log R_D*``, ``log R_N*``."""
    assert pts.unique is not None
    single = pts.unique >= pts.tokens
    bases = []
    if single.sum() >= 6 and np.unique(pts.params[single]).size >= 2:
        sub = pts.take(np.flatnonzero(single))
        sub = _Points(sub.params, sub.tokens, sub.loss, sub.flops, None)
        check_fittable(sub, "chinchilla", base.theta_names, base.needs)
        obj = _optim.HuberObjective(base.model(sub), np.log(sub.loss), 1e-3)
        best, _ = solve_grid(base, obj, base.grid, max_iter=BASE_GRID_ITERATIONS)
        bases.append(list(best.theta[0]))
    for a, alpha in itertools.product((5.0, 10.0), (0.3, 0.5)):
        bases.append([a, a, 0.5, alpha, alpha])
    grid = [math.log(v) for v in (0.5, 4.0, 8.0, 12.0, 16.0, 20.0)]
    return np.array([[*bb, rd, rn] for bb in bases for rd in grid for rn in grid])
