"""Fit Muennighoff et al. (2023)'s data-constrained law to runs with known unique tokens.

Objective and engine are approach 3's (:func:`scalefit.fit.fit_chinchilla`): the summed Huber
loss (``delta`` default 1e-3) of ``log L_hat - log L`` with the model in log-sum-exp form,
``log L_hat = LSE(a - alpha log N', b - beta log D', e)`` (``N'``, ``D'`` from
:func:`scalefit.laws.effective_params` and :func:`~scalefit.laws.effective_tokens`), minimised
by the batched damped-Newton engine of :mod:`scalefit._optim` from a grid of starts, with the
same bootstrap (points, runs or params, each resample warm-started from the optimum).

Why a separate module: the law's ``N'`` depends on each run's unique tokens, which
:mod:`scalefit.fit`'s point arrays do not carry, and the engine's internals are being
reworked; this module uses only the engine's stable entry points (``GenericModel``,
``HuberObjective``, ``minimize_chunked``) and the public :class:`~scalefit.fit.LawFit`.

Parameters are ``theta = (a, b, e, alpha, beta, log R_D*, log R_N*)``; the gradient of
``log L_hat`` is analytic (:func:`_predict_grad`, checked with ``scipy.optimize.check_grad``
in the tests). Starts: approach 3's fit to the single-epoch runs (``U >= D``), crossed with
the paper's grid ``R_D*, R_N* in {0.5, 4, 8, ..., 20}`` (Appendix A; 0 is replaced by 0.5 in
log space); without single-epoch runs, a small grid of base parameters.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import math
import warnings
from types import SimpleNamespace
from typing import Any

import numpy as np
import polars as pl

from .. import _optim
from ..errors import FitError
from . import (
    BootstrapMap,
    ConvergenceWarning,
    LawFit,
    _bootstrap,
    _check_confidence_level,
    _check_delta,
    _check_n_bootstrap,
    _check_resample,
    _check_seed,
    _law_fit,
    fit_chinchilla,
)
from ..laws import DataConstrainedLaw

__all__ = ["fit_data_constrained"]

_RTOL = 1e-14
NAMES = ("E", "A", "B", "alpha", "beta", "R_D_star", "R_N_star")
THETA_NAMES = ("a", "b", "e", "alpha", "beta", "log_R_D_star", "log_R_N_star")
_LOWER = np.array([-50.0, -50.0, -20.0, 1e-3, 1e-3, math.log(1e-2), math.log(1e-2)])
_UPPER = np.array([200.0, 200.0, 20.0, 5.0, 5.0, math.log(1e4), math.log(1e4)])


def _predict_grad(
    theta: np.ndarray, params: np.ndarray, tokens: np.ndarray, unique: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``log L_hat`` ``(S, n)`` and its gradient ``(S, n, 7)`` for rows of ``theta``."""
    with np.errstate(all="ignore"):  # extreme starts overflow; the engine discards them
        return _predict_grad_raw(theta, params, tokens, unique)


def _predict_grad_raw(
    theta: np.ndarray, params: np.ndarray, tokens: np.ndarray, unique: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    a, b, e, al, be, rd, rn = (theta[:, j, None] for j in range(7))
    n, d = params[None, :], tokens[None, :]
    u_d = np.minimum(unique, tokens)[None, :]
    # effective data D' = U_D (1 + R* (1 - e^-x)), x = R_D / R*
    r_d = d / u_d - 1.0
    rds = np.exp(rd)
    x = r_d / rds
    ex = np.exp(-x)
    d_eff = u_d * (1.0 + rds * -np.expm1(-x))
    dlogd_drd = rds * u_d * (-np.expm1(-x) - x * ex) / d_eff
    # unique parameters U_N = G (U_D G)^(beta/alpha), log G = (log al + a - log be - b)/(al+be)
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
    u_n = np.exp(log_un)
    excess = n > u_n
    un = np.where(excess, u_n, n)
    rns = np.exp(rn)
    y = np.maximum(n / un - 1.0, 0.0) / rns
    ey = np.exp(-y)
    n_eff = un * (1.0 + rns * -np.expm1(-y))
    # dN'/dU_N = 1 + R*(1 - e^-y) - (N/U_N) e^-y on the excess branch, 0 otherwise
    dn_dun = np.where(excess, 1.0 + rns * -np.expm1(-y) - (n / un) * ey, 0.0)
    dlogn_dlun = dn_dun * un / n_eff
    dlogn_drn = rns * un * (-np.expm1(-y) - y * ey) / n_eff
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


def _estimates(theta: np.ndarray) -> dict[str, np.ndarray]:
    t = np.atleast_2d(theta)
    return {
        "E": np.exp(t[:, 2]),
        "A": np.exp(t[:, 0]),
        "B": np.exp(t[:, 1]),
        "alpha": t[:, 3],
        "beta": t[:, 4],
        "R_D_star": np.exp(t[:, 5]),
        "R_N_star": np.exp(t[:, 6]),
    }


def _column(frame: pl.DataFrame, name: str) -> np.ndarray:
    if name not in frame.columns:
        raise FitError(
            f"the data have no `{name}` column (columns: {', '.join(frame.columns)}); a "
            "data-constrained fit needs params, tokens, unique_tokens and loss"
        )
    values = frame[name].cast(pl.Float64).to_numpy().astype(float)
    bad = ~np.isfinite(values) | (values <= 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise FitError(
            f"{int(bad.sum())} value(s) of `{name}` are not positive finite numbers (first: "
            f"row {i + 1}); drop or fix those rows before fitting"
        )
    return values


def _starts(params, tokens, unique, loss) -> np.ndarray:
    single = unique >= tokens
    bases = []
    if single.sum() >= 6 and np.unique(params[single]).size >= 2:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            base = fit_chinchilla(
                pl.DataFrame(
                    {"params": params[single], "tokens": tokens[single], "loss": loss[single]}
                ),
                max_grid_iter=20,
            )
        t = base.diagnostics["theta"]
        bases.append([t["a"], t["b"], t["e"], t["alpha"], t["beta"]])
    for a, alpha in itertools.product((5.0, 10.0), (0.3, 0.5)):
        bases.append([a, a, 0.5, alpha, alpha])
    grid = [math.log(v) for v in (0.5, 4.0, 8.0, 12.0, 16.0, 20.0)]
    return np.array([[*bb, rd, rn] for bb in bases for rd in grid for rn in grid])


def fit_data_constrained(
    data: Any,
    *,
    delta: float = 1e-3,
    n_bootstrap: int = 0,
    seed: int | np.random.Generator | None = 0,
    resample: str = "points",
    confidence_level: float = 0.95,
    starts: np.ndarray | None = None,
    max_grid_iter: int = 60,
    bootstrap_jobs: int = 1,
    bootstrap_map: BootstrapMap = map,
) -> LawFit:
    """Fit ``L = E + A/N'^alpha + B/D'^beta`` (Muennighoff et al. 2023, Eq. (6)) to runs with
    known unique tokens; see the module docstring for the method.

    Parameters
    ----------
    data
        A polars frame (or mapping of columns) with ``params``, ``tokens``,
        ``unique_tokens`` (the ``runs.unique_tokens`` column) and ``loss``; ``run_id`` for
        ``resample="runs"``.
    delta, n_bootstrap, seed, resample, confidence_level
        As :func:`scalefit.fit.fit_law` (defaults 1e-3, 0, 0, ``"points"``, 0.95).
    starts
        Rows of ``(a, b, e, alpha, beta, log R_D*, log R_N*)``; default see module docstring.
    max_grid_iter
        Newton iterations per start before the best is run to convergence; default 60.
    bootstrap_jobs, bootstrap_map
        How the bootstrap refits are split and run (as :func:`scalefit.fit.fit_law`).

    Returns
    -------
    LawFit
        ``form="data_constrained"``, ``law`` a :class:`~scalefit.laws.DataConstrainedLaw`.

    Raises
    ------
    FitError
        Missing columns, non-positive values, too few points, or no repeated data (``R_D*``
        and ``R_N*`` cannot be told apart from infinity without repetition).

    Examples
    --------
    >>> import numpy as np
    >>> from scalefit.laws import data_constrained_loss
    >>> n, d, u = (g.ravel() for g in np.meshgrid(
    ...     np.geomspace(1e7, 2e9, 5), np.geomspace(1e9, 1e11, 4), np.geomspace(3e8, 1e11, 4)))
    >>> loss = data_constrained_loss(n, d, u, 1.87, 520.8, 1487.7, 0.35, 0.35, 15.39, 5.31)
    >>> data = {"params": n, "tokens": d, "unique_tokens": u, "loss": loss}
    >>> fit = fit_data_constrained(data, starts=[[6, 7, 0.5, 0.4, 0.4, 2.0, 2.0]])
    >>> round(fit.estimates["R_D_star"], 2), round(fit.estimates["R_N_star"], 2)
    (15.39, 5.31)
    """
    delta = _check_delta(delta)
    n_bootstrap = _check_n_bootstrap(n_bootstrap)
    resample = _check_resample(resample)
    confidence_level = _check_confidence_level(confidence_level)
    seed_setting = None if isinstance(seed, np.random.Generator) else seed
    rng = _check_seed(seed)
    frame = data if isinstance(data, pl.DataFrame) else pl.DataFrame(data)
    params, tokens = _column(frame, "params"), _column(frame, "tokens")
    unique, loss = _column(frame, "unique_tokens"), _column(frame, "loss")
    run_id = frame["run_id"].cast(pl.String).to_numpy() if "run_id" in frame.columns else None
    if loss.size <= 7:
        raise FitError(f"{loss.size} point(s) for 7 parameters: a fit needs at least 8")
    if not (unique < tokens).any():
        raise FitError(
            "no run repeats its data (unique_tokens >= tokens everywhere): R_D* and R_N* are "
            "not identifiable; add multi-epoch runs, or fit `chinchilla` instead"
        )
    # A partial (not a lambda), so that the objective pickles for parallel bootstrap jobs.
    model = _optim.GenericModel(
        7, functools.partial(_predict_grad, params=params, tokens=tokens, unique=unique)
    )
    obj = _optim.HuberObjective(model, np.log(loss), delta)
    grid = (
        _starts(params, tokens, unique, loss)
        if starts is None
        else np.atleast_2d(np.asarray(starts, dtype=float))
    )
    w = np.ones(loss.size)
    first = _optim.minimize_chunked(
        obj, grid, w, _LOWER, _UPPER, max_iter=max_grid_iter, rtol=1e-10
    )
    order = np.argsort(np.where(np.isfinite(first.objective), first.objective, np.inf))
    best_rows = first.theta[order[: min(8, order.size)]]
    polish = _optim.minimize_chunked(obj, best_rows, w, _LOWER, _UPPER, max_iter=500, rtol=_RTOL)
    i = int(np.nanargmin(np.where(polish.converged, polish.objective, np.inf)))
    if not np.isfinite(polish.objective[i]) or not polish.converged.any():
        i = int(np.nanargmin(polish.objective))
    theta = polish.theta[i]
    converged = bool(polish.converged[i])
    warns: list[str] = []
    if not converged:
        warns.append("the best fit did not reach certified convergence")
    on_bound = [THETA_NAMES[j] for j in np.flatnonzero(polish.at_bound[i])]
    if on_bound:
        warns.append(f"parameter(s) {', '.join(on_bound)} ended on a bound of the search box")
    est = {k: float(v[0]) for k, v in _estimates(theta).items()}
    samples = np.empty((0, len(NAMES)))
    diag: dict[str, Any] = {
        "n_starts": int(grid.shape[0]),
        "theta": dict(zip(THETA_NAMES, theta.tolist(), strict=True)),
        "on_bound": on_bound,
        "n_repeated_runs": int((unique < tokens).sum()),
    }
    if n_bootstrap:
        pts = SimpleNamespace(n=loss.size, run_id=run_id, params=params)

        def to_samples(thetas: np.ndarray) -> np.ndarray:
            eb = _estimates(thetas)
            return np.column_stack([eb[k] for k in NAMES])

        samples = _bootstrap(
            obj,
            theta,
            pts,
            resample,
            n_bootstrap,
            rng,
            (_LOWER, _UPPER),
            to_samples,
            diag,
            warns,
            jobs=bootstrap_jobs,
            map_jobs=bootstrap_map,
        )
    settings = {
        "law": "data_constrained",
        "delta": delta,
        "n_bootstrap": n_bootstrap,
        "seed": seed_setting,
        "resample": resample,
        "confidence_level": confidence_level,
        "starts": "default" if starts is None else hashlib.sha256(grid.tobytes()).hexdigest()[:12],
        "max_grid_iter": max_grid_iter,
        "param_convention": "as given (params column)",
        "flops_convention": "6ND",
    }
    h = hashlib.sha256()
    order_rows = np.lexsort((loss, unique, tokens, params))
    for col in (params, tokens, unique, loss):
        h.update(np.ascontiguousarray(col[order_rows], dtype="<f8").tobytes())
    return _law_fit(
        form="data_constrained",
        law=DataConstrainedLaw(**est),
        est=est,
        derived={},
        samples=samples,
        confidence_level=confidence_level,
        objective=float(polish.objective[i]),
        n_points=int(loss.size),
        converged=converged,
        settings=settings,
        diag=diag,
        warns=warns,
        input_sha256=h.hexdigest(),
    )
