"""Fit scaling laws to loss measurements: Huber loss in log space, a grid of starts, bootstrap.

One function per procedure, each returning an immutable :class:`LawFit`:

- :func:`fit_chinchilla` — Hoffmann et al. (2022) approach 3, ``L = E + A/N^alpha + B/D^beta``.
- :func:`fit_kaplan` — Kaplan et al. (2020) ``L(N)``, ``L(D)``, ``L(C)`` (optionally with an
  irreducible term ``E``) and the joint ``L(N, D)``.
- :func:`fit_isoflop` — Hoffmann et al. approach 2 (IsoFLOP profiles).
- :func:`fit_envelope` — Hoffmann et al. approach 1 (minimum over training curves).

Method (approach 3 and every nonlinear form)
--------------------------------------------
Minimise, SUMMED over points (Besiroglu et al. 2024: the original's mean let the optimizer
stop early), the Huber loss (``delta`` default 1e-3) of ``log L_hat - log L``, with the model
in log-sum-exp form, ``log L_hat = LSE(a - alpha log N, b - beta log D, e)``,
``A = e^a, B = e^b, E = e^e``, so that counts up to 1e13 and beyond neither overflow nor lose
precision. Every start of a grid (default: Hoffmann et al.'s 4500 starts) is run at once as a
numpy batch by a damped Newton method (exact Hessian, at most five parameters); the best
distinct end points are then run to certified convergence (Newton decrement below ``1e-14``
times the objective — scale-free, unlike an optimizer's default ``gtol``). Non-convergence is a
:class:`ConvergenceWarning`, recorded on the result.

Uncertainty
-----------
The bootstrap resamples (``resample=``):

- ``"points"``: single points with replacement. Right when points are independent.
- ``"runs"``: whole runs (``run_id``) — use it when several points come from one run (e.g. a
  loss curve sampled at several steps): their errors are correlated and resampling points
  would understate the uncertainty.
- ``"params"``: whole model sizes — use it when each model size is one training recipe whose
  quirks affect all its points (the Chinchilla sweeps), or to ask how much the fit rests on a
  few sizes.

Each resample is refit from the full-data optimum alone (a warm start; no other basin is
tried) to certified convergence; percentile intervals are given for every parameter and derived
quantity, and the samples are kept so that intervals of predictions can be computed
(:meth:`LawFit.predict_interval`).

References
----------
Hoffmann et al. (2022), "Training Compute-Optimal Large Language Models", Section 3 and D.2.
Besiroglu et al. (2024), "Chinchilla Scaling: A replication attempt", arXiv:2404.10102.
Kaplan et al. (2020), "Scaling Laws for Neural Language Models", Section 1.2.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import itertools
import json
import logging
import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple

import numpy as np
import polars as pl

import scalefit

from . import _optim
from ._names import LAW_NAMES  # defined there so that the CLI lists them without numpy
from .errors import FitError
from .laws import (
    AllocationLaw,
    ChinchillaLaw,
    DownstreamErrorLaw,
    KaplanComputeLaw,
    KaplanJointLaw,
    KaplanParamsLaw,
    KaplanTokensLaw,
    OvertrainingLaw,
    chinchilla_allocation,
    law_from_parameters,
)

log = logging.getLogger(__name__)

__all__ = [
    "FORMS",
    "RESAMPLE",
    "BootstrapJob",
    "BootstrapMap",
    "BootstrapRefits",
    "ConvergenceWarning",
    "ExtrapolationScore",
    "LawFit",
    "describe_input",
    "extrapolation_score",
    "file_input",
    "fit_chinchilla",
    "fit_envelope",
    "fit_isoflop",
    "fit_kaplan",
    "fit_law",
    "fit_named",
    "hoffmann_grid",
    "named_form",
    "read_points",
    "run_bootstrap_job",
    "save_fit",
    "select_points",
    "store_input",
]

RESAMPLE = ("points", "runs", "params")
"""Allowed ``resample`` settings of the bootstrap."""

REFERENCE_FLOPS = 5.76e23
"""Compute at which derived tokens-per-parameter are reported: Chinchilla's budget (Hoffmann
et al. 2022, Section 4)."""

GRID_ITERATIONS = 3
"""Newton iterations every start of the grid gets before the promising ones are selected.
``benchmarks/fit_robustness.py`` (120 fits on hard data) finds the same certified optimum with
3 as with 40; with 2 it certified a wrong basin (see ``benchmarks/RESULTS.md``)."""

_RTOL = 1e-14  # Newton decrement / objective at which a fit counts as converged
_BASIN_RTOL = 1e-7  # relative objective gap within which two end points are one basin
_N_CONTINUED = 16  # unfinished starts beyond the near-best ones run on to convergence
_MAX_ROUNDS = 50  # rounds of 10 iterations a continued start gets before it is abandoned


class ConvergenceWarning(UserWarning):
    """A fit (or some bootstrap refits) did not reach certified convergence."""


# --------------------------------------------------------------------------- settings checks


def _check_delta(delta: float) -> float:
    if not (isinstance(delta, int | float) and math.isfinite(delta) and delta > 0):
        raise FitError(f"`delta` must be a positive finite number (e.g. 1e-3), got {delta!r}")
    return float(delta)


def _check_n_bootstrap(n_bootstrap: int) -> int:
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, int | np.integer):
        raise FitError(f"`n_bootstrap` must be an integer >= 0, got {n_bootstrap!r}")
    if n_bootstrap < 0:
        raise FitError(f"`n_bootstrap` must be an integer >= 0, got {n_bootstrap!r}")
    return int(n_bootstrap)


def _check_resample(resample: str) -> str:
    if resample not in RESAMPLE:
        raise FitError(f"`resample` must be one of {', '.join(RESAMPLE)}; got {resample!r}")
    return resample


def _check_confidence_level(level: float) -> float:
    if not (isinstance(level, int | float) and 0 < level < 1):
        raise FitError(f"`confidence_level` must be in (0, 1), e.g. 0.95; got {level!r}")
    return float(level)


def _check_seed(seed: int | np.random.Generator | None) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None or (
        isinstance(seed, int | np.integer) and not isinstance(seed, bool) and seed >= 0
    ):
        return np.random.default_rng(seed)
    raise FitError(f"`seed` must be an int >= 0, a numpy Generator or None; got {seed!r}")


def _check_form(form: str) -> str:
    if form not in FORMS:
        raise FitError(f"`law` must be one of {', '.join(FORMS)}; got {form!r}")
    return form


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class _Points:
    params: np.ndarray
    tokens: np.ndarray
    loss: np.ndarray
    flops: np.ndarray
    run_id: np.ndarray | None
    x: np.ndarray | None = None  # the input of a form whose target is not the loss

    @property
    def n(self) -> int:
        return self.loss.size

    def take(self, idx: np.ndarray) -> _Points:
        return _Points(
            self.params[idx],
            self.tokens[idx],
            self.loss[idx],
            self.flops[idx],
            None if self.run_id is None else self.run_id[idx],
            None if self.x is None else self.x[idx],
        )

    def sha256(self) -> str:
        """Hash of the points, independent of row order."""
        cols = [self.params, self.tokens, self.loss, self.flops]
        if self.x is not None:
            cols.append(self.x)
        order = np.lexsort(cols[::-1])
        h = hashlib.sha256()
        for c in cols:
            h.update(np.ascontiguousarray(c[order], dtype="<f8").tobytes())
        if self.run_id is not None:
            h.update("\x1f".join(map(str, self.run_id[order])).encode())
        return h.hexdigest()


def _column(frame: pl.DataFrame, name: str, *, required: bool) -> np.ndarray | None:
    if name not in frame.columns:
        if required:
            raise FitError(
                f"the data have no `{name}` column (columns: {', '.join(frame.columns)}); "
                "rename your columns to params, tokens, loss (optional flops, run_id)"
            )
        return None
    values = frame[name]
    if name == "run_id":
        return values.cast(pl.String).to_numpy()
    try:
        return values.cast(pl.Float64).to_numpy().astype(float)
    except Exception as exc:  # polars raises several types for a bad cast
        raise FitError(f"column `{name}` is not numeric: {exc}") from exc


def _as_points(data: Any, *, need: Sequence[str], target: str = "loss") -> _Points:
    """Checked arrays from a polars frame (or anything ``pl.DataFrame`` accepts).

    ``target`` other than ``loss`` (the downstream law's ``error``): that column is fitted,
    as a function of the ``loss`` column (``_Points.x``).
    """
    frame = data if isinstance(data, pl.DataFrame) else pl.DataFrame(data)
    if target != "loss":
        y = _column(frame, target, required=True)
        x = _column(frame, "loss", required=True)
        for name, col in ((target, y), ("loss", x)):
            bad = ~np.isfinite(col) | (col <= 0)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise FitError(
                    f"{int(bad.sum())} value(s) of `{name}` are not positive finite numbers "
                    f"(first: row {i + 1}, value {col[i]!r}); drop or fix those rows"
                )
        nan = np.full(y.size, np.nan)
        return _Points(nan, nan, y, nan, _column(frame, "run_id", required=False), x=x)
    loss = _column(frame, "loss", required=True)
    params = _column(frame, "params", required="params" in need)
    tokens = _column(frame, "tokens", required="tokens" in need)
    flops = _column(frame, "flops", required=False)
    run_id = _column(frame, "run_id", required=False)
    n = loss.size
    if flops is None or np.isnan(flops).all():
        if params is None or tokens is None:
            if "flops" in need:
                raise FitError("the data need a `flops` column, or `params` and `tokens`")
            flops = np.full(n, np.nan)
        else:
            flops = 6.0 * params * tokens
    elif params is not None and tokens is not None:
        flops = np.where(np.isnan(flops), 6.0 * params * tokens, flops)
    params = np.full(n, np.nan) if params is None else params
    tokens = np.full(n, np.nan) if tokens is None else tokens
    checked = {"loss": loss, "params": params, "tokens": tokens, "flops": flops}
    for name in ["loss", *need]:
        col = checked[name]
        bad = ~np.isfinite(col) | (col <= 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise FitError(
                f"{int(bad.sum())} value(s) of `{name}` are not positive finite numbers "
                f"(first: row {i + 1}, value {col[i]!r}); drop or fix those rows before fitting"
            )
    return _Points(params, tokens, loss, flops, run_id)


# --------------------------------------------------------------------------- law forms


@dataclass(frozen=True)
class _Form:
    """How one law form maps to the optimizer: parameters, bounds, starts, model."""

    name: str
    theta_names: tuple[str, ...]
    names: tuple[str, ...]  # estimate names, in order
    lower: np.ndarray
    upper: np.ndarray
    needs: tuple[str, ...]
    grid: np.ndarray
    target: str = "loss"  # the column fitted (in log space); ``error`` for downstream_error

    def model(self, pts: _Points) -> _optim.LSEAffineModel | _optim.GenericModel:
        return _MODELS[self.name](pts)

    def estimates(self, theta: np.ndarray) -> dict[str, np.ndarray]:
        """Estimates (vectorised over rows of ``theta``)."""
        return _ESTIMATES[self.name](np.atleast_2d(theta))

    def law(self, est: Mapping[str, float]) -> Any:
        return _LAWS[self.name](est)


def hoffmann_grid() -> np.ndarray:
    """Hoffmann et al. (2022, D.2)'s 4500 starts as rows ``(a, b, e, alpha, beta)``:
    ``alpha, beta in {0, 0.5, ..., 2}``, ``e in {-1, -0.5, ..., 1}``, ``a, b in {0, 5, ..., 25}``.
    """
    rows = itertools.product(
        np.arange(0, 30, 5.0),
        np.arange(0, 30, 5.0),
        np.arange(-1, 1.5, 0.5),
        np.arange(0, 2.5, 0.5),
        np.arange(0, 2.5, 0.5),
    )
    return np.array(list(rows), dtype=float)


def _lse_design(*terms: tuple[np.ndarray, np.ndarray], p: int) -> np.ndarray:
    """Design array ``J (n, K, P)`` from per-term coefficient rows."""
    n = np.asarray(terms[0][1][0]).size
    J = np.zeros((n, len(terms), p))
    for k, (cols, vals) in enumerate(terms):
        for j, v in zip(cols, vals, strict=True):
            J[:, k, j] = v
    return J


def _chinchilla_model(pts: _Points) -> _optim.LSEAffineModel:
    x, y = np.log(pts.params), np.log(pts.tokens)
    one = np.ones_like(x)
    J = _lse_design(((0, 3), (one, -x)), ((1, 4), (one, -y)), ((2,), (one,)), p=5)
    return _optim.LSEAffineModel(J)


def _single_model(column: str, irreducible: bool):
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


def _joint_model(pts: _Points) -> _optim.GenericModel:
    # A partial of a module-level function (not a closure), so that the model pickles.
    x, y = np.log(pts.params), np.log(pts.tokens)
    return _optim.GenericModel(4, functools.partial(_joint_predict_grad, x=x, y=y))


def _overtraining_model(pts: _Points) -> _optim.LSEAffineModel:
    # log L = LSE(a - eta log N, b - eta log D, e): Chinchilla with one shared exponent.
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


def _downstream_model(pts: _Points) -> _optim.GenericModel:
    return _optim.GenericModel(3, functools.partial(_downstream_predict_grad, x=pts.x))


def _overtraining_estimates(t: np.ndarray) -> dict[str, np.ndarray]:
    return {"E": np.exp(t[:, 2]), "A": np.exp(t[:, 0]), "B": np.exp(t[:, 1]), "eta": t[:, 3]}


def _downstream_estimates(t: np.ndarray) -> dict[str, np.ndarray]:
    return {"epsilon": np.exp(t[:, 0]), "k": np.exp(t[:, 1]), "gamma": t[:, 2]}


def _grid_overtraining() -> np.ndarray:
    """Hoffmann et al.'s grid for ``(a, b, e)`` with shared exponents ``eta``."""
    rows = itertools.product(
        np.arange(0, 30, 5.0),
        np.arange(0, 30, 5.0),
        np.arange(-1, 1.5, 0.5),
        (0.1, 0.25, 0.5, 1.0, 1.5),
    )
    return np.array(list(rows), dtype=float)


def _grid_downstream() -> np.ndarray:
    rows = itertools.product(
        (-1.0, -0.5, -0.2, 0.0),
        (-2.0, 0.0, 2.0, 4.0, 8.0),
        (0.25, 0.5, 1.0, 2.0, 4.0),
    )
    return np.array(list(rows), dtype=float)


def _chinchilla_estimates(t: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "E": np.exp(t[:, 2]),
        "A": np.exp(t[:, 0]),
        "B": np.exp(t[:, 1]),
        "alpha": t[:, 3],
        "beta": t[:, 4],
    }


def _single_estimates(xc: str, alpha: str, irreducible: bool):
    def est(t: np.ndarray) -> dict[str, np.ndarray]:
        with np.errstate(divide="ignore", invalid="ignore"):
            out = {xc: np.exp(t[:, 0] / t[:, 1]), alpha: t[:, 1]}
        if irreducible:
            out["E"] = np.exp(t[:, 2])
        return out

    return est


def _joint_estimates(t: np.ndarray) -> dict[str, np.ndarray]:
    return {"N_c": np.exp(t[:, 0]), "alpha_N": t[:, 2], "D_c": np.exp(t[:, 1]), "alpha_D": t[:, 3]}


def _grid_single(irreducible: bool) -> np.ndarray:
    rows = []
    for alpha in (0.05, 0.1, 0.2, 0.4, 0.8):
        for log_xc in (10.0, 20.0, 30.0, 40.0, 50.0, 60.0):
            if irreducible:
                rows += [(alpha * log_xc, alpha, e) for e in (-1.0, 0.0, 0.5, 1.0)]
            else:
                rows.append((alpha * log_xc, alpha))
    return np.array(rows)


def _grid_joint() -> np.ndarray:
    vals = (20.0, 25.0, 30.0, 35.0)
    exps = (0.05, 0.1, 0.2, 0.4)
    return np.array(list(itertools.product(vals, vals, exps, exps)))


_BIG = 1e3
FORMS: dict[str, _Form] = {}
_MODELS: dict[str, Any] = {"chinchilla": _chinchilla_model, "kaplan_nd": _joint_model}
_ESTIMATES: dict[str, Any] = {"chinchilla": _chinchilla_estimates, "kaplan_nd": _joint_estimates}
_LAWS: dict[str, Any] = {
    "chinchilla": lambda e: ChinchillaLaw(**{k: e[k] for k in ("E", "A", "B", "alpha", "beta")}),
    "kaplan_nd": lambda e: KaplanJointLaw(**e),
}
FORMS["chinchilla"] = _Form(
    "chinchilla",
    ("a", "b", "e", "alpha", "beta"),
    ("E", "A", "B", "alpha", "beta"),
    np.array([-50.0, -50.0, -20.0, 0.0, 0.0]),
    np.array([200.0, 200.0, 20.0, 5.0, 5.0]),
    ("params", "tokens"),
    hoffmann_grid(),
)
FORMS["kaplan_nd"] = _Form(
    "kaplan_nd",
    ("log_N_c", "log_D_c", "alpha_N", "alpha_D"),
    ("N_c", "alpha_N", "D_c", "alpha_D"),
    np.array([-_BIG, -_BIG, 1e-4, 1e-3]),
    np.array([_BIG, _BIG, 5.0, 5.0]),
    ("params", "tokens"),
    _grid_joint(),
)
for _suffix, _column_name, _xc, _alpha, _law in (
    ("n", "params", "N_c", "alpha_N", KaplanParamsLaw),
    ("d", "tokens", "D_c", "alpha_D", KaplanTokensLaw),
    ("c", "flops", "C_c", "alpha_C", KaplanComputeLaw),
):
    for _irr in (False, True):
        _name = f"kaplan_{_suffix}" + ("_e" if _irr else "")
        _n = 3 if _irr else 2
        FORMS[_name] = _Form(
            _name,
            ("alpha_log_x_c", _alpha, "e")[:_n],
            (_xc, _alpha, "E")[:_n],
            np.array([-_BIG, 1e-4, -20.0][:_n]),
            np.array([_BIG, 5.0, 20.0][:_n]),
            (_column_name,),
            _grid_single(_irr),
        )
        _MODELS[_name] = _single_model(_column_name, _irr)
        _ESTIMATES[_name] = _single_estimates(_xc, _alpha, _irr)
        _LAWS[_name] = lambda e, _cls=_law: _cls(**e)
FORMS["overtraining"] = _Form(
    "overtraining",
    ("a", "b", "e", "eta"),
    ("E", "A", "B", "eta"),
    np.array([-50.0, -50.0, -20.0, 0.0]),
    np.array([200.0, 200.0, 20.0, 5.0]),
    ("params", "tokens"),
    _grid_overtraining(),
)
_MODELS["overtraining"] = _overtraining_model
_ESTIMATES["overtraining"] = _overtraining_estimates
_LAWS["overtraining"] = lambda e: OvertrainingLaw(**e)
FORMS["downstream_error"] = _Form(
    "downstream_error",
    ("log_epsilon", "log_k", "gamma"),
    ("epsilon", "k", "gamma"),
    np.array([-20.0, -50.0, 1e-4]),
    np.array([5.0, 50.0, 20.0]),
    ("x",),
    _grid_downstream(),
    target="error",
)
_MODELS["downstream_error"] = _downstream_model
_ESTIMATES["downstream_error"] = _downstream_estimates
_LAWS["downstream_error"] = lambda e: DownstreamErrorLaw(**e)


def _derived(form: str, est: Mapping[str, np.ndarray], reference_flops: float) -> dict:
    """Quantities derived from the estimates (vectorised): allocation exponents and
    tokens per parameter at ``reference_flops``."""
    if form == "chinchilla":
        alpha, beta = np.asarray(est["alpha"]), np.asarray(est["beta"])
        with np.errstate(all="ignore"):
            s = alpha + beta
            n, d = chinchilla_allocation(reference_flops, est["A"], est["B"], alpha, beta)
            return {"a": beta / s, "b": alpha / s, "tokens_per_param": d / n}
    if form == "overtraining":
        eta = np.asarray(est["eta"])
        with np.errstate(all="ignore"):
            n, d = chinchilla_allocation(reference_flops, est["A"], est["B"], eta, eta)
            half = np.full_like(eta, 0.5, dtype=float)
            return {"a": half, "b": half, "tokens_per_param": d / n}
    if form == "kaplan_nd":
        r = np.asarray(est["alpha_N"]) / np.asarray(est["alpha_D"])
        return {"a": 1.0 / (1.0 + r), "b": r / (1.0 + r)}
    return {}


# --------------------------------------------------------------------------- result


@dataclass(frozen=True)
class ExtrapolationScore:
    """How well a law fitted without the largest compute budgets predicts them."""

    n_train: int
    n_test: int
    holdout_flops: tuple[float, ...]
    rmse_log: float
    mean_abs_rel_error: float
    max_abs_rel_error: float
    fit: LawFit

    def to_json(self) -> dict[str, Any]:
        """The score as plain JSON values (without the refit)."""
        return {
            "n_train": self.n_train,
            "n_test": self.n_test,
            "holdout_flops": list(self.holdout_flops),
            "rmse_log": self.rmse_log,
            "mean_abs_rel_error": self.mean_abs_rel_error,
            "max_abs_rel_error": self.max_abs_rel_error,
        }

    def __str__(self) -> str:
        return (
            f"extrapolation to {self.n_test} held-out point(s) at the largest "
            f"{len(self.holdout_flops)} budget(s): log-residual RMSE {self.rmse_log:.4g}, "
            f"mean |relative error| {self.mean_abs_rel_error:.3%}, "
            f"max {self.max_abs_rel_error:.3%} (trained on {self.n_train} points)"
        )


@dataclass(frozen=True)
class LawFit:
    """The immutable result of a fit.

    Attributes
    ----------
    form
        Law form fitted (``chinchilla``, ``kaplan_n``, …, ``allocation`` for IsoFLOP and
        envelope fits).
    law
        The fitted law (same type as published laws: ``loss(params, tokens)``,
        ``allocation(flops)`` where the form has one).
    estimates
        Point estimates of the law's parameters by name.
    derived
        Derived quantities (allocation exponents ``a``, ``b``; tokens per parameter at
        :data:`REFERENCE_FLOPS`).
    ci
        ``ci[name] -> (low, high)``: percentile bootstrap intervals at ``confidence_level``
        for every estimate and derived quantity (empty without a bootstrap).
    objective
        Best objective (summed Huber loss; residual sum of squares for IsoFLOP/envelope).
    n_points
        Points fitted.
    converged
        Whether the best fit reached certified convergence.
    diagnostics
        Starts, basins, bounds, identifiability, bootstrap failures.
    warnings
        Every warning raised during the fit, as text.
    samples
        Bootstrap samples, one row per resample, columns ``sample_names``.
    """

    form: str
    law: Any
    estimates: Mapping[str, float]
    derived: Mapping[str, float]
    ci: Mapping[str, tuple[float, float]]
    confidence_level: float
    objective: float
    n_points: int
    converged: bool
    settings: Mapping[str, Any]
    diagnostics: Mapping[str, Any]
    warnings: tuple[str, ...]
    input_sha256: str
    samples: np.ndarray = field(repr=False)
    sample_names: tuple[str, ...] = ()

    @property
    def fit_id(self) -> str:
        """Deterministic key: the same data and settings give the same id."""
        blob = json.dumps(
            {"input": self.input_sha256, "form": self.form, "settings": dict(self.settings)},
            sort_keys=True,
            default=str,
        )
        return "fit_" + hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def n_bootstrap(self) -> int:
        return int(self.samples.shape[0])

    @property
    def n_bootstrap_failed(self) -> int:
        """Bootstrap resamples that could not be fitted (left out of the intervals)."""
        return int(self.diagnostics.get("bootstrap_failed", 0))

    def predict(self, params: Any, tokens: Any) -> np.ndarray:
        """Predicted loss of the fitted law."""
        return self.law.loss(params, tokens)

    def sample_laws(self) -> list[Any]:
        """One law per bootstrap resample (those that converged)."""
        names = [n for n in self.estimates if n in self.sample_names]
        cols = [self.sample_names.index(n) for n in names]
        return [
            law_from_parameters(self.law.form, dict(zip(names, row[cols], strict=True)))
            for row in self.samples
            if np.isfinite(row[cols]).all()
        ]

    def _interval(self, values: list[Any], level: float | None) -> tuple[np.ndarray, np.ndarray]:
        level = _check_confidence_level(level or self.confidence_level)
        if not values:
            raise FitError("this fit has no bootstrap samples: refit with n_bootstrap > 0")
        arr = np.array(values, dtype=float)
        q = (1 - level) / 2
        return np.nanquantile(arr, q, axis=0), np.nanquantile(arr, 1 - q, axis=0)

    def predict_interval(
        self, params: Any, tokens: Any, *, confidence_level: float | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Percentile bootstrap interval of the predicted loss at ``(params, tokens)``.

        Raises
        ------
        FitError
            The fit has no bootstrap samples.
        """
        preds = [law.loss(params, tokens) for law in self.sample_laws()]
        return self._interval(preds, confidence_level)

    def allocation_interval(
        self, flops: Any, *, confidence_level: float | None = None
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Percentile bootstrap intervals of the compute-optimal ``params`` and ``tokens``
        at ``flops``."""
        allocs = [law.allocation(flops) for law in self.sample_laws()]
        return {
            "params": self._interval([a.params for a in allocs], confidence_level),
            "tokens": self._interval([a.tokens for a in allocs], confidence_level),
        }

    def to_frame(self) -> pl.DataFrame:
        """One row per parameter and derived quantity: name, kind, estimate, ci_low, ci_high."""
        rows = []
        for kind, values in (("parameter", self.estimates), ("derived", self.derived)):
            for name, value in values.items():
                low, high = self.ci.get(name, (None, None))
                rows.append(
                    {"name": name, "kind": kind, "estimate": value, "ci_low": low, "ci_high": high}
                )
        return pl.DataFrame(
            rows,
            schema={
                "name": pl.String,
                "kind": pl.String,
                "estimate": pl.Float64,
                "ci_low": pl.Float64,
                "ci_high": pl.Float64,
            },
        )

    def to_row(
        self, *, selection: str = "", input: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """A dict shaped like the ``fits`` table (``schemas/bookkeeping.py``); ``input`` is
        the record of what was fitted (:func:`store_input`, :func:`file_input`)."""
        has_ci = bool(self.ci)
        return {
            "fit_id": self.fit_id,
            "form": self.form,
            "selection": selection,
            "n_points": self.n_points,
            "estimates": _json({**self.estimates, **self.derived}),
            "ci_low": _json({k: v[0] for k, v in self.ci.items()}) if has_ci else None,
            "ci_high": _json({k: v[1] for k, v in self.ci.items()}) if has_ci else None,
            "confidence_level": self.confidence_level if has_ci else None,
            "objective": self.objective,
            "converged": self.converged,
            "n_bootstrap": self.n_bootstrap,
            "settings": _json(dict(self.settings)),
            "diagnostics": _json(dict(self.diagnostics)),
            "created_at": dt.datetime.now(dt.UTC).replace(tzinfo=None),
            "input_sha256": self.input_sha256,
            "package_version": scalefit.__version__,
            "input": None if input is None else _json(dict(input)),
        }

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary (what ``scalefit fit --json`` prints)."""
        return {
            "law": self.form,
            "fit_id": self.fit_id,
            "estimates": dict(self.estimates),
            "derived": dict(self.derived),
            "ci": {k: [v[0], v[1]] for k, v in self.ci.items()},
            "confidence_level": self.confidence_level,
            "objective": self.objective,
            "n_points": self.n_points,
            "converged": self.converged,
            "n_bootstrap": self.n_bootstrap,
            "n_bootstrap_failed": self.n_bootstrap_failed,
            "settings": dict(self.settings),
            "diagnostics": json.loads(_json(dict(self.diagnostics))),
            "warnings": list(self.warnings),
        }

    def __str__(self) -> str:
        pct = f"{self.confidence_level:.0%}"
        lines = [
            f"{self.form} fit to {self.n_points} points: objective {self.objective:.6g}, "
            f"{'converged' if self.converged else 'NOT converged'}"
            + (f", {self.n_bootstrap} bootstrap resamples" if self.n_bootstrap else "")
            + (
                f" ({self.n_bootstrap_failed} could not be fitted)"
                if self.n_bootstrap_failed
                else ""
            ),
        ]
        for kind, values in (("", self.estimates), ("derived ", self.derived)):
            for name, value in values.items():
                ci = self.ci.get(name)
                tail = f"   {pct} CI [{ci[0]:.5g}, {ci[1]:.5g}]" if ci else ""
                lines.append(f"  {kind}{name:>18} = {value:.5g}{tail}")
        d = self.diagnostics
        if "n_starts" in d:
            lines.append(
                f"  starts: {d['n_starts']}, {d['n_best_basin']} reached the best basin; "
                f"next basin objective {d.get('second_best_objective')}"
            )
        if "envelope_budgets" in d:
            lines.append(f"  budgets: {envelope_budgets_text(d['envelope_budgets'])}")
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def envelope_budgets_text(counts: Mapping[str, int]) -> str:
    """One line on which FLOP budgets an envelope fit kept, and why it dropped the others."""
    return (
        f"{counts['kept']} of {counts['grid']} kept (interior minimum, {counts['sizes']} model "
        f"sizes); dropped "
        f"{counts['at_smallest']} whose lowest loss is the smallest run reaching them, "
        f"{counts['at_largest']} the largest, {counts['grid'] - counts['covered']} reached by "
        "no run's smoothed (trimmed) curve"
    )


def _json(obj: Any) -> str:
    def default(o: Any) -> Any:
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
        return str(o)

    from ._json import finite

    return json.dumps(finite(json.loads(json.dumps(obj, default=default))), sort_keys=True)


# --------------------------------------------------------------------------- the driver


def _basins(objective: np.ndarray, theta: np.ndarray) -> list[np.ndarray]:
    """Group end points into basins (same objective within a relative tolerance and the same
    parameters within 1e-4), best first; each basin is an index array."""
    order = np.argsort(objective, kind="stable")
    order = order[np.isfinite(objective[order])]
    basins: list[np.ndarray] = []
    while order.size:
        lead = order[0]
        same = (
            np.abs(objective[order] - objective[lead]) <= _BASIN_RTOL * abs(objective[lead])
        ) & (
            np.abs(theta[order] - theta[lead]).max(axis=1) <= 1e-4 * (1 + np.abs(theta[lead]).max())
        )
        basins.append(order[same])
        order = order[~same]
    return basins


def _merge(theta: np.ndarray, f: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Indices of representatives after merging rows whose iterates coincide (every
    parameter within 1e-6 of the other's scale, objective within 1e-9 relative): from the
    same point a deterministic optimizer takes the same path, so one row stands for all and
    carries their count (added into ``count`` in place)."""
    scale = 1e-6 * (1.0 + np.abs(theta))
    key = np.concatenate(
        [np.round(theta / scale).astype(np.int64), np.round(np.log(f) / 1e-9)[:, None]], axis=1
    ).astype(np.int64)
    _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    sums = np.bincount(inverse.ravel(), weights=count, minlength=first.size)
    count[first] = sums
    return np.sort(first)


def _solve_grid(
    form: _Form, obj: _optim.HuberObjective, starts: np.ndarray, *, max_iter: int
) -> tuple[_optim.BatchResult, dict[str, Any]]:
    """Run every start as one batch for ``max_iter`` iterations; merge rows whose iterates
    coincide; run the promising unfinished ones (objective within 10% of the best so far, and
    the best 16 others) to certified convergence in rounds of 10 iterations, merging again
    after each round; abandon the rest; group the converged end points into basins.

    Counts are kept per representative, so the diagnostics count starts, not rows:
    ``n_best_basin`` is the number of starts whose path ended in the best basin."""
    w = np.ones(obj.y.size)
    # Phase 1 certifies at a looser 1e-10 (the basin is found); the best end point is then
    # polished to _RTOL below.
    first = _optim.minimize_chunked(
        obj, starts, w, form.lower, form.upper, max_iter=max_iter, rtol=1e-10
    )
    theta, f, conv = first.theta.copy(), first.objective.copy(), first.converged.copy()
    count = np.ones(f.size)
    finite = np.isfinite(f) & (f > 0)
    rows = np.flatnonzero(finite)
    c = count[rows]
    sel = _merge(theta[rows], f[rows], c)
    count[rows] = c
    rep = rows[sel]
    n_merged = rows.size - rep.size
    keep = np.zeros(f.size, dtype=bool)
    keep[rep] = True
    keep |= ~finite
    open_rows = np.flatnonzero(keep & ~conv)
    abandoned = np.zeros(f.size, dtype=bool)
    n_merged_later = 0
    if open_rows.size:
        fmin = np.nanmin(f[keep])
        near = open_rows[f[open_rows] <= fmin + 0.1 * abs(fmin)]
        rest = np.setdiff1d(open_rows, near)
        cont = np.concatenate([near, rest[np.argsort(f[rest])[:_N_CONTINUED]]])
        abandoned[np.setdiff1d(open_rows, cont)] = True
        for round_ in range(_MAX_ROUNDS):
            if cont.size == 0:
                break
            f_before = f[cont]
            more = _optim.minimize_chunked(
                obj, theta[cont], w, form.lower, form.upper, max_iter=10, rtol=_RTOL
            )
            theta[cont], f[cont], conv[cont] = more.theta, more.objective, more.converged
            going = ~more.converged & (more.n_iter >= 10)
            certified = conv & keep & np.isfinite(f)
            if certified.any():
                # A start still above the best certified objective that, descending at the
                # rate of its last round, could not get below it within the rounds left would
                # only be abandoned at the end: abandon it now.
                gap = more.objective - f[certified].min()
                gain = f_before - more.objective
                hopeless = (gap > 0) & (gap > gain * (_MAX_ROUNDS - 1 - round_))
                abandoned[cont[going & hopeless]] = True
                going &= ~hopeless
            cont = cont[going]
            if cont.size > 1:
                c = count[cont]
                sel = _merge(theta[cont], f[cont], c)
                gone = np.setdiff1d(np.arange(cont.size), sel)
                count[cont] = c
                keep[cont[gone]] = False
                n_merged_later += gone.size
                cont = cont[sel]
        abandoned[cont] = True
    # The best point wins whether or not its start finished: a certified but worse basin
    # must never be preferred to a lower objective. The winner is then run on until it is
    # certified (or reported as not converged).
    ok = conv & keep
    pool = np.flatnonzero(ok)
    if pool.size:
        # Unfinished points count only where they beat every certified one (to 1e-9).
        better = keep & ~conv & np.isfinite(f) & (f < f[pool].min() * (1 - 1e-9))
        pool = np.concatenate([pool, np.flatnonzero(better)])
    else:
        pool = np.flatnonzero(keep & np.isfinite(f))
    basins = [pool[b] for b in _basins(f[pool], theta[pool])]
    i = int(basins[0][0])
    res = _optim.minimize_batch(
        obj, theta[i : i + 1], w, form.lower, form.upper, max_iter=2000, rtol=_RTOL
    )
    second = basins[1][0] if len(basins) > 1 else None
    n_conv = int(count[conv & keep].sum())
    n_abandoned = int(count[abandoned & keep].sum())
    diag: dict[str, Any] = {
        "n_starts": int(starts.shape[0]),
        "n_converged_starts": n_conv,
        "n_unfinished_starts": int(starts.shape[0]) - n_conv,
        "n_abandoned_starts": n_abandoned,
        "n_merged_starts": n_merged + n_merged_later,
        "n_best_basin": int(count[basins[0]].sum()),
        "n_basins": len(basins),
        "second_best_objective": None if second is None else float(f[second]),
        "second_best_relative_gap": (
            None if second is None else float((f[second] - f[i]) / max(abs(f[i]), 1e-300))
        ),
        "second_best_estimates": (
            None
            if second is None
            else {k: float(v[0]) for k, v in form.estimates(theta[second]).items()}
        ),
        "other_basin_objectives": [float(f[b[0]]) for b in basins[1:6]],
        "grid_iterations_cap": max_iter,
    }
    return res, diag


def _identifiability(form: _Form, hess: np.ndarray, free: np.ndarray) -> tuple[float, list[str]]:
    """Condition number of the scaled Hessian on the free parameters, and a warning naming
    the parameters the data cannot separate when it is huge."""
    idx = np.flatnonzero(free)
    if idx.size < 2:
        return 1.0, []
    H = hess[np.ix_(idx, idx)]
    d = np.sqrt(np.clip(np.abs(np.diag(H)), 1e-300, None))
    Hs = H / d[:, None] / d[None, :]
    ev, vec = np.linalg.eigh(Hs)
    cond = float(ev[-1] / ev[0]) if ev[0] > 0 else math.inf
    msgs = []
    if not cond < 1e8:
        v = np.abs(vec[:, 0])
        top = [form.theta_names[idx[j]] for j in np.argsort(v)[::-1][:2]]
        msgs.append(
            f"the data barely constrain a combination of {top[0]} and {top[1]} "
            f"(scaled Hessian condition number {cond:.3g}): widen the range of model sizes "
            "and token counts, or fix one exponent"
        )
    return cond, msgs


def _bootstrap_weights(
    pts: _Points, resample: str, n_bootstrap: int, rng: np.random.Generator
) -> np.ndarray:
    if resample == "points":
        groups = np.arange(pts.n)
    elif resample == "runs":
        if pts.run_id is None:
            raise FitError("`resample='runs'` needs a `run_id` column; use 'points' or 'params'")
        groups = np.unique(pts.run_id, return_inverse=True)[1]
    else:
        groups = np.unique(pts.params, return_inverse=True)[1]
    n_groups = int(groups.max()) + 1
    draws = rng.integers(0, n_groups, size=(n_bootstrap, n_groups))
    counts = np.zeros((n_bootstrap, n_groups))
    np.add.at(counts, (np.arange(n_bootstrap)[:, None], draws), 1.0)
    return counts[:, groups]


class BootstrapRefits(NamedTuple):
    """Where the refits of a :class:`BootstrapJob` ended: one row per resample."""

    theta: np.ndarray
    converged: np.ndarray


@dataclass(frozen=True)
class BootstrapJob:
    """Refits of a slice of a fit's bootstrap resamples, warm-started at the full-data optimum.

    Self-contained and picklable, so that it can run in another thread, process or Dask
    worker (:func:`run_bootstrap_job`). A resample's refit depends only on its own weights,
    so the samples are the same however the resamples are split into jobs and wherever the
    jobs run.
    """

    objective: _optim.HuberObjective
    theta: np.ndarray
    weights: np.ndarray  # (resamples, points): how often each point is drawn
    lower: np.ndarray
    upper: np.ndarray

    @property
    def size(self) -> int:
        """Resamples in this job."""
        return int(self.weights.shape[0])


BootstrapMap = Callable[
    [Callable[[BootstrapJob], BootstrapRefits], Sequence[BootstrapJob]],
    Iterable[BootstrapRefits],
]
"""Runs bootstrap jobs, in order, like the builtin ``map`` (the default), an executor's
``map``, or Prefect tasks (the refresh flow's ``bootstrap_map``)."""


def run_bootstrap_job(job: BootstrapJob) -> BootstrapRefits:
    """Refit every resample of ``job`` to certified convergence (NaN-free; check
    ``converged``)."""
    th0 = np.repeat(job.theta[None, :], job.size, axis=0)
    res = _optim.minimize_chunked(
        job.objective, th0, job.weights, job.lower, job.upper, max_iter=1000, rtol=_RTOL
    )
    return BootstrapRefits(res.theta, res.converged)


def _check_jobs(jobs: int) -> int:
    if isinstance(jobs, bool) or not isinstance(jobs, int | np.integer) or jobs < 1:
        raise ValueError(f"`bootstrap_jobs` must be a whole number >= 1, not {jobs!r}")
    return int(jobs)


def _bootstrap(
    obj: _optim.HuberObjective,
    theta: np.ndarray,
    pts: Any,
    resample: str,
    n_bootstrap: int,
    rng: np.random.Generator,
    bounds: tuple[np.ndarray, np.ndarray],
    to_samples: Callable[[np.ndarray], np.ndarray],
    diag: dict[str, Any],
    warns: list[str],
    *,
    jobs: int = 1,
    map_jobs: BootstrapMap = map,
) -> np.ndarray:
    """Refit ``n_bootstrap`` resamples warm-started from ``theta`` to certified convergence,
    split into ``jobs`` :class:`BootstrapJob` run by ``map_jobs``.

    The resamples are drawn here, all at once, so the result does not depend on ``jobs``.
    Returns one row of ``to_samples(theta_b)`` per resample, NaN where a refit did not
    converge; records the count in ``diag`` and warns when over 1% failed.
    """
    W = _bootstrap_weights(pts, resample, n_bootstrap, rng)
    parts = [
        BootstrapJob(obj, theta, w, *bounds)
        for w in np.array_split(W, min(_check_jobs(jobs), n_bootstrap))
    ]
    done = list(map_jobs(run_bootstrap_job, parts))
    if len(done) != len(parts):
        raise RuntimeError(f"bootstrap_map returned {len(done)} results for {len(parts)} jobs")
    thetas = np.concatenate([d.theta for d in done])
    converged = np.concatenate([d.converged for d in done])
    n_bad = int((~converged).sum())
    diag["bootstrap_not_converged"] = n_bad
    if n_bad > 0.01 * n_bootstrap:
        warns.append(f"{n_bad} of {n_bootstrap} bootstrap refits did not converge")
    samples = to_samples(thetas)
    samples[~converged] = np.nan
    return samples


def _percentile_ci(samples: np.ndarray, names: Sequence[str], level: float) -> dict:
    q = (1 - level) / 2
    out = {}
    for j, name in enumerate(names):
        col = samples[:, j]
        col = col[np.isfinite(col)]
        if col.size:
            out[name] = (float(np.quantile(col, q)), float(np.quantile(col, 1 - q)))
    return out


def fit_law(
    data: Any,
    *,
    law: str = "chinchilla",
    delta: float = 1e-3,
    n_bootstrap: int = 0,
    seed: int | np.random.Generator | None = 0,
    resample: str = "points",
    confidence_level: float = 0.95,
    starts: np.ndarray | None = None,
    max_grid_iter: int = GRID_ITERATIONS,
    reference_flops: float = REFERENCE_FLOPS,
    bootstrap_jobs: int = 1,
    bootstrap_map: BootstrapMap = map,
) -> LawFit:
    """Fit a nonlinear law form by Huber loss in log space (see the module docstring).

    Parameters
    ----------
    data
        A polars frame (or a mapping of columns) with ``loss`` and the columns the form needs:
        ``params`` and/or ``tokens`` (``flops`` optional, else ``6 N D``; ``run_id`` for
        ``resample="runs"``).
    law
        One of :data:`FORMS`: ``chinchilla``; ``kaplan_n``, ``kaplan_d``, ``kaplan_c`` (add
        ``_e`` for an irreducible term ``E``); ``kaplan_nd``; ``overtraining`` (Gadre et al.
        2024, ``E + A N^-eta + B D^-eta``); ``downstream_error`` (Gadre et al.'s
        ``Err(L) = epsilon - k exp(-gamma L)``: fits the ``error`` column against ``loss``).
    delta
        Huber threshold on log residuals; default 1e-3 (Hoffmann et al. 2022).
    n_bootstrap
        Bootstrap resamples; default 0 (no intervals).
    seed
        Seed or generator of the bootstrap; default 0.
    resample
        ``"points"`` (default), ``"runs"`` or ``"params"``: what the bootstrap resamples.
    confidence_level
        Level of the percentile intervals; default 0.95.
    starts
        Starting points, rows of the optimizer's parameters (for ``chinchilla``:
        ``(a, b, e, alpha, beta)``); default the form's grid (:func:`hoffmann_grid`).
    max_grid_iter
        Newton iterations given to every start before the promising distinct end points are
        run to convergence and the rest abandoned (counted in the diagnostics); default
        :data:`GRID_ITERATIONS` (3).
    reference_flops
        Compute at which derived tokens-per-parameter are reported; default 5.76e23.
    bootstrap_jobs, bootstrap_map
        Split the bootstrap refits into this many :class:`BootstrapJob` (default 1) and run
        them with ``bootstrap_map`` (default the builtin ``map``; e.g. a
        ``ProcessPoolExecutor``'s ``map`` to use several cores). Neither changes the result.

    Raises
    ------
    FitError
        Too few points, non-positive or non-finite values, or a single distinct value of a
        variable the form needs.
    ValueError
        A setting out of range.
    """
    form = FORMS[_check_form(law)]
    delta = _check_delta(delta)
    n_bootstrap = _check_n_bootstrap(n_bootstrap)
    resample = _check_resample(resample)
    confidence_level = _check_confidence_level(confidence_level)
    seed_setting = None if isinstance(seed, np.random.Generator) else seed
    rng = _check_seed(seed)
    pts = _as_points(data, need=form.needs, target=form.target)
    n_par = len(form.theta_names)
    if pts.n <= n_par:
        raise FitError(
            f"{pts.n} point(s) for {n_par} parameters of `{form.name}`: "
            f"a fit needs more points than parameters (at least {n_par + 1})"
        )
    for col in form.needs:
        if np.unique(getattr(pts, col)).size < 2:
            raise FitError(
                f"all points have the same `{col}`: `{form.name}` cannot separate the "
                f"{col} term from the others; add points at other {col} values"
            )
    if resample == "runs" and n_bootstrap and pts.run_id is None:
        raise FitError("`resample='runs'` needs a `run_id` column; use 'points' or 'params'")
    grid = form.grid if starts is None else np.atleast_2d(np.asarray(starts, dtype=float))
    if grid.shape[1] != n_par:
        raise ValueError(f"`starts` must have {n_par} columns ({', '.join(form.theta_names)})")
    obj = _optim.HuberObjective(form.model(pts), np.log(pts.loss), delta)
    best, diag = _solve_grid(form, obj, grid, max_iter=max_grid_iter)
    theta = best.theta[0]
    warns: list[str] = []
    converged = bool(best.converged[0])
    if not converged:
        warns.append(
            f"the best fit did not reach certified convergence (Newton decrement "
            f"{best.decrement[0]:.3g} vs objective {best.objective[0]:.3g})"
        )
    on_bound = [form.theta_names[j] for j in np.flatnonzero(best.at_bound[0])]
    if on_bound:
        warns.append(f"parameter(s) {', '.join(on_bound)} ended on a bound of the search box")
    free = ~best.at_bound[0]
    cond, ident = _identifiability(form, best.hess[0], free)
    warns += ident
    diag.update(
        {
            "on_bound": on_bound,
            "hessian_condition": cond,
            "newton_decrement": float(best.decrement[0]),
            "gradient": best.grad[0].tolist(),
            "theta": dict(zip(form.theta_names, theta.tolist(), strict=True)),
        }
    )
    est = {k: float(v[0]) for k, v in form.estimates(theta).items()}
    derived = {
        k: float(np.asarray(v)) for k, v in _derived(form.name, est, reference_flops).items()
    }
    samples = np.empty((0, len(est) + len(derived)))
    if n_bootstrap:

        def to_samples(thetas: np.ndarray) -> np.ndarray:
            est_b = form.estimates(thetas)
            der_b = _derived(form.name, est_b, reference_flops)
            return np.column_stack([est_b[k] for k in est] + [der_b[k] for k in derived])

        samples = _bootstrap(
            obj,
            theta,
            pts,
            resample,
            n_bootstrap,
            rng,
            (form.lower, form.upper),
            to_samples,
            diag,
            warns,
            jobs=bootstrap_jobs,
            map_jobs=bootstrap_map,
        )
    settings = {
        "law": form.name,
        "delta": delta,
        "n_bootstrap": n_bootstrap,
        "seed": seed_setting,
        "resample": resample,
        "confidence_level": confidence_level,
        "starts": "default" if starts is None else hashlib.sha256(grid.tobytes()).hexdigest()[:12],
        "max_grid_iter": max_grid_iter,
        "reference_flops": reference_flops,
    }
    return _law_fit(
        form=form.name.removesuffix("_e"),
        law=form.law(est),
        est=est,
        derived=derived,
        samples=samples,
        confidence_level=confidence_level,
        objective=float(best.objective[0]),
        n_points=pts.n,
        converged=converged,
        settings=settings,
        diag=diag,
        warns=warns,
        input_sha256=pts.sha256(),
    )


def fit_chinchilla(
    data: Any,
    *,
    delta: float = 1e-3,
    n_bootstrap: int = 0,
    seed: int | np.random.Generator | None = 0,
    resample: str = "points",
    confidence_level: float = 0.95,
    starts: np.ndarray | None = None,
    max_grid_iter: int = GRID_ITERATIONS,
    reference_flops: float = REFERENCE_FLOPS,
) -> LawFit:
    """Fit ``L(N, D) = E + A/N^alpha + B/D^beta`` as Hoffmann et al. (2022) approach 3.

    See :func:`fit_law` for the parameters; the result's ``law`` is a
    :class:`~scalefit.laws.ChinchillaLaw` and ``derived`` holds the allocation exponents
    ``a = beta/(alpha+beta)``, ``b = alpha/(alpha+beta)`` and the tokens per parameter at
    ``reference_flops``.

    Examples
    --------
    >>> import numpy as np, polars as pl
    >>> from scalefit.laws import chinchilla_loss
    >>> n, d = np.meshgrid(np.geomspace(1e7, 1e10, 6), np.geomspace(1e8, 1e11, 6))
    >>> loss = chinchilla_loss(n, d, 1.7, 400.0, 1200.0, 0.34, 0.36)
    >>> data = pl.DataFrame({"params": n.ravel(), "tokens": d.ravel(), "loss": loss.ravel()})
    >>> fit = fit_chinchilla(data, starts=[[5, 5, 0, 0.5, 0.5]])
    >>> round(fit.estimates["alpha"], 4), round(fit.estimates["E"], 4)
    (0.34, 1.7)
    """
    return fit_law(
        data,
        law="chinchilla",
        delta=delta,
        n_bootstrap=n_bootstrap,
        seed=seed,
        resample=resample,
        confidence_level=confidence_level,
        starts=starts,
        max_grid_iter=max_grid_iter,
        reference_flops=reference_flops,
    )


def fit_kaplan(
    data: Any,
    *,
    form: str = "kaplan_n",
    irreducible: bool = False,
    delta: float = 1e-3,
    n_bootstrap: int = 0,
    seed: int | np.random.Generator | None = 0,
    resample: str = "points",
    confidence_level: float = 0.95,
) -> LawFit:
    """Fit a Kaplan et al. (2020) form: ``kaplan_n`` (``L(N) = (N_c/N)^alpha_N``),
    ``kaplan_d``, ``kaplan_c`` (``C`` from ``flops`` or ``6 N D``) or ``kaplan_nd``
    (``((N_c/N)^(alpha_N/alpha_D) + D_c/D)^alpha_D``).

    ``irreducible=True`` adds an irreducible term ``E`` to the single-variable forms. The
    objective is the same Huber loss in log space as :func:`fit_chinchilla`.
    """
    allowed = ("kaplan_n", "kaplan_d", "kaplan_c", "kaplan_nd")
    if form not in allowed:
        raise ValueError(f"`form` must be one of {', '.join(allowed)}; got {form!r}")
    if irreducible and form == "kaplan_nd":
        raise ValueError("`irreducible` is only available for kaplan_n, kaplan_d and kaplan_c")
    name = form + ("_e" if irreducible else "")
    return fit_law(
        data,
        law=name,
        delta=delta,
        n_bootstrap=n_bootstrap,
        seed=seed,
        resample=resample,
        confidence_level=confidence_level,
    )


# --------------------------------------------------------------------------- IsoFLOP, envelope


def _budget_groups(flops: np.ndarray, rtol: float) -> np.ndarray:
    """Group index of each point: points whose FLOPs are within ``rtol`` of the smallest of
    their group share a compute budget."""
    order = np.argsort(flops)
    groups = np.empty(flops.size, dtype=int)
    g, lead = -1, -np.inf
    for i in order:
        if flops[i] > lead * (1 + rtol):
            g, lead = g + 1, flops[i]
        groups[i] = g
    return groups


def _exp(x: float) -> float:
    """``exp(x)``, or ``inf`` where that overflows (the minimum of a nearly flat profile)."""
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


def _isoflop_minima(
    log_n: np.ndarray, loss: np.ndarray, groups: np.ndarray, log_c: np.ndarray, w: np.ndarray
) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Per budget: weighted parabola of loss against log N and its minimum.

    A nearly flat profile puts its minimum astronomically far away (``params_opt`` is then
    ``inf``): no overflow warning or error here; the allocation fit judges the result."""
    xs, ys, rows = [], [], []
    for g in np.unique(groups):
        m = (groups == g) & (w > 0)
        if np.unique(log_n[m]).size < 3:
            continue
        with np.errstate(all="ignore"):
            c2, c1, c0 = (float(c) for c in np.polyfit(log_n[m], loss[m], 2, w=np.sqrt(w[m])))
        if not c2 > 0:
            continue
        x_opt = -c1 / (2 * c2)
        c = float(np.mean(log_c[groups == g]))
        xs.append(c)
        ys.append(x_opt)
        rows.append(
            {
                "flops": math.exp(c),
                "n_points": int(m.sum()),
                "params_opt": _exp(x_opt),
                "loss_min": c0 - c1 * c1 / (4 * c2),
                "curvature": float(c2),
                "inside_range": bool(log_n[m].min() <= x_opt <= log_n[m].max()),
            }
        )
    return np.array(xs), np.array(ys), rows


def _allocation_estimates(log_c: np.ndarray, log_n: np.ndarray) -> tuple[dict, float]:
    """``log N_opt = log k + a log C`` by least squares, and the implied ``D_opt``.

    A minimum far outside the sizes tried (a nearly flat profile) can make ``k`` overflow:
    the estimates are then not finite (``inf``, ``0``), never an exception; callers check."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", np.exceptions.RankWarning)
        a, log_k = np.polyfit(log_c, log_n, 1)
        rss = float(np.sum((log_n - (log_k + a * log_c)) ** 2))
    k = _exp(float(log_k))
    return {
        "params_exp": float(a),
        "params_coef": k,
        "tokens_exp": float(1 - a),
        "tokens_coef": 1.0 / (6.0 * k) if 0.0 < k < math.inf else math.nan,
    }, rss


def _usable(est: Mapping[str, float]) -> bool:
    """Whether every estimate of an allocation fit is a finite, usable number."""
    return all(math.isfinite(v) for v in est.values()) and est["params_coef"] > 0


def _law_fit(
    *,
    form: str,
    law: Any,
    est: dict[str, float],
    derived: dict[str, float],
    samples: np.ndarray,
    confidence_level: float,
    objective: float,
    n_points: int,
    converged: bool,
    settings: dict[str, Any],
    diag: dict[str, Any],
    warns: list[str],
    input_sha256: str,
    stacklevel: int = 3,
) -> LawFit:
    """The :class:`LawFit` of a finished fit, for every procedure.

    ``samples`` has one column per estimate, then per derived quantity; intervals come from
    its rows (none without a bootstrap). Warnings are issued at the caller of the public fit
    function (``stacklevel`` frames up: 3 when that function calls this one directly).
    """
    names = tuple(est) + tuple(derived)
    ci = _percentile_ci(samples, names, confidence_level) if samples.shape[0] else {}
    if samples.shape[0]:
        # A resample that could not be fitted is a row of NaN: counted and reported (the
        # intervals come from the others), never fatal.
        failed = int((~np.isfinite(samples[:, : len(est)])).any(axis=1).sum())
        diag = {**diag, "bootstrap_failed": failed}
        if failed and "bootstrap_not_converged" not in diag:
            warns = [
                *warns,
                f"{failed} of {samples.shape[0]} bootstrap resamples could not be fitted "
                "(left out of the intervals)",
            ]
    for w in warns:
        warnings.warn(w, ConvergenceWarning, stacklevel=stacklevel)
    samples.setflags(write=False)
    return LawFit(
        form=form,
        law=law,
        estimates=MappingProxyType(est),
        derived=MappingProxyType(derived),
        ci=MappingProxyType(ci),
        confidence_level=confidence_level,
        objective=objective,
        n_points=n_points,
        converged=converged,
        settings=MappingProxyType(settings),
        diagnostics=MappingProxyType(diag),
        warnings=tuple(warns),
        input_sha256=input_sha256,
        samples=samples,
        sample_names=names,
    )


def _allocation_fit(
    procedure: str,
    est: dict[str, float],
    rss: float,
    samples: np.ndarray,
    pts: _Points,
    level: float,
    settings: dict[str, Any],
    diag: dict[str, Any],
    warns: list[str],
) -> LawFit:
    """The :class:`LawFit` of an allocation fit (approach 1 or 2): a least-squares line,
    always solved exactly."""
    return _law_fit(
        form=procedure,
        law=AllocationLaw(**est),
        est=est,
        derived={},
        samples=samples,
        confidence_level=level,
        objective=rss,
        n_points=pts.n,
        converged=True,
        settings=settings,
        diag=diag,
        warns=warns,
        input_sha256=pts.sha256(),
        stacklevel=4,
    )


def fit_isoflop(
    data: Any,
    *,
    n_bootstrap: int = 0,
    seed: int | np.random.Generator | None = 0,
    confidence_level: float = 0.95,
    budget_rtol: float = 0.05,
) -> LawFit:
    """Hoffmann et al. (2022) approach 2: IsoFLOP profiles.

    Points are grouped into compute budgets (``flops``, else ``6 N D``; points within
    ``budget_rtol`` share a budget). For each budget with at least three model sizes, a
    parabola of loss against ``log N`` is fitted and its minimum taken as ``N_opt(C)``; then
    ``log N_opt = log k + a log C`` by least squares, and ``D_opt = C / (6 N_opt)`` (so
    ``b = 1 - a``). The bootstrap resamples points within each budget.

    Returns
    -------
    LawFit
        ``form="isoflop"``; ``law`` is an :class:`~scalefit.laws.AllocationLaw` with
        ``params_exp`` (a), ``params_coef`` (k), ``tokens_exp``, ``tokens_coef``;
        ``objective`` is the residual sum of squares of the line in log space;
        ``diagnostics["budgets"]`` has each budget's minimum.

    Raises
    ------
    FitError
        Fewer than two budgets with three or more model sizes and a convex profile.
    """
    n_bootstrap = _check_n_bootstrap(n_bootstrap)
    confidence_level = _check_confidence_level(confidence_level)
    seed_setting = None if isinstance(seed, np.random.Generator) else seed
    rng = _check_seed(seed)
    pts = _as_points(data, need=("params", "flops"))
    log_n, log_c = np.log(pts.params), np.log(pts.flops)
    groups = _budget_groups(pts.flops, budget_rtol)
    xs, ys, rows = _isoflop_minima(log_n, pts.loss, groups, log_c, np.ones(pts.n))
    if xs.size < 2:
        raise FitError(
            f"{xs.size} compute budget(s) with three or more model sizes and a convex loss "
            "profile: an IsoFLOP fit needs at least two; add model sizes at each budget"
        )
    est, rss = _allocation_estimates(xs, ys)
    if not _usable(est):
        raise FitError(
            "the IsoFLOP minima give no finite allocation line (a budget's loss profile is "
            "nearly flat, so its minimum lies far outside the model sizes tried): add model "
            "sizes on both sides of each budget's minimum"
        )
    warns = [
        f"the loss minimum at {r['flops']:.3g} FLOPs lies outside the model sizes tried"
        for r in rows
        if not r["inside_range"]
    ]
    samples = np.empty((0, len(est)))
    if n_bootstrap:
        out = np.full((n_bootstrap, len(est)), np.nan)
        for b in range(n_bootstrap):
            w = np.zeros(pts.n)
            for g in np.unique(groups):
                idx = np.flatnonzero(groups == g)
                np.add.at(w, rng.choice(idx, idx.size), 1.0)
            # A resample that cannot be fitted (fewer than two usable budgets, or a nearly
            # flat profile whose minimum overflows) stays NaN: counted, never fatal.
            try:
                bx, by, _ = _isoflop_minima(log_n, pts.loss, groups, log_c, w)
                got = _allocation_estimates(bx, by)[0] if bx.size >= 2 else None
            except (np.linalg.LinAlgError, ValueError, FloatingPointError):
                got = None
            if got is not None and _usable(got):
                out[b] = list(got.values())
        samples = out
    settings = {
        "law": "isoflop",
        "n_bootstrap": n_bootstrap,
        "seed": seed_setting,
        "resample": "points within budgets",
        "confidence_level": confidence_level,
        "budget_rtol": budget_rtol,
    }
    diag = {"budgets": rows, "n_budgets": len(rows)}
    return _allocation_fit(
        "isoflop", est, rss, samples, pts, confidence_level, settings, diag, warns
    )


ENVELOPE_MIN_SIZES = 5
"""Fewest model sizes among an envelope fit's interior minima without a warning: ``N_opt``
is a staircase over the sizes tried, and a least-squares line through ``K`` equal steps
shrinks the exponent by about ``1/K^2`` (measured: -0.012 with 7 steps, -0.0009 with 23)."""


ENVELOPE_SMOOTH_DEGREE = 3
"""Degree of the polynomial in log FLOPs fitted to each run's log loss before the envelope.

Hoffmann et al. (2022, Section 3.1) smooth and then interpolate each run's loss curve before
taking, at each FLOP count, the run of lowest loss; they do not say how. Without smoothing,
the minimum over runs selects favourable noise: with 0.1% noise per logged point the exponent
came out 0.006 low and its intervals covered the truth in 26 of 30 datasets. Measured on curves
of a known law (60 points over 3.5 decades of tokens per run): degree 2 bends the curves enough
to bias the exponent by +0.006 noise-free; 3 gives +0.0005; 4 and 5 are as close noise-free
but noisier."""

ENVELOPE_TRIM = 0.2
"""Fraction of each run's log-FLOP span dropped at either end after smoothing.

A fitted polynomial is least certain at the ends of its data (leverage), and the envelope's
minimum favours the least certain curves (their errors reach lower). At a small budget the
competing runs are all near the starts of their curves, the larger ones nearest, so larger
runs win too often; at a large budget all are near the ends, the smaller ones nearest, so
smaller runs win too often: the exponent comes out low. Using every run's whole smoothed
curve biased the exponent by -0.006, -0.019 and -0.036 at 0.5%, 1% and 2% noise per point;
keeping each run's middle 60% gives +0.001, -0.0005 and -0.004 (means over 30 seeded datasets;
see tests/test_fit.py). The result depends on this choice: keeping the middle 70% gave -0.003,
-0.007, -0.015, the middle 50% +0.009, +0.011, +0.014. On three other designs (other laws,
12-20 sizes, 40-100 points per curve) the middle 60% kept 30/30 coverage at each noise level,
where untrimmed smoothed curves fell to 17/30 at 2% on one of them; the mean error there stayed
within 0.01 except with 15 sizes over 3 decades of tokens (+0.012, +0.03, +0.08 at 0.5%, 1%,
2%, with intervals wide enough to cover)."""


def _envelope_curves(
    pts: _Points, runs: np.ndarray, uniq: np.ndarray, log_g: np.ndarray
) -> tuple[np.ndarray, np.ndarray, int]:
    """Each run's smoothed log loss at each log FLOP count of ``log_g``, one row per run of
    ``uniq`` (``inf`` where the run's trimmed curve does not reach), each run's parameters,
    and how many runs were too short to smooth.

    Smoothing: least squares of log loss on a polynomial of degree
    :data:`ENVELOPE_SMOOTH_DEGREE` in log FLOPs, per run, evaluated only on the middle of the
    run's FLOP span (:data:`ENVELOPE_TRIM` of it dropped at either end). A run with fewer than
    ``ENVELOPE_SMOOTH_DEGREE + 2`` distinct FLOP counts is left out (its row stays ``inf``).
    """
    curves = np.full((uniq.size, log_g.size), np.inf)
    sizes = np.empty(uniq.size)
    too_short = 0
    for i, r in enumerate(uniq):
        m = runs == r
        sizes[i] = pts.params[m][0]
        lc, log_loss = np.log(pts.flops[m]), np.log(pts.loss[m])
        if np.unique(lc).size < ENVELOPE_SMOOTH_DEGREE + 2:
            too_short += 1
            continue
        lo, hi = lc.min(), lc.max()
        mid, half = (lo + hi) / 2, (hi - lo) / 2
        coef = np.polynomial.polynomial.polyfit((lc - mid) / half, log_loss, ENVELOPE_SMOOTH_DEGREE)
        cut = ENVELOPE_TRIM * (hi - lo)
        inside = (log_g >= lo + cut) & (log_g <= hi - cut)
        curves[i, inside] = np.polynomial.polynomial.polyval((log_g[inside] - mid) / half, coef)
    return curves, sizes, too_short


def _envelope_minima(
    curves: np.ndarray, sizes: np.ndarray, log_g: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, int]]:
    """For each FLOP count, the run of lowest loss, kept only where that run is interior.

    ``curves`` and ``sizes`` are rows of :func:`_envelope_curves` (a bootstrap passes a
    resample of them). A budget is interior when runs smaller and larger than the best run
    also reach it (their curves span that FLOP count). At the ends of the FLOP range only the
    smallest (or only the largest) runs reach a budget, so "the best run" there is whichever
    run exists, not the loss minimum: keeping those budgets biases the allocation exponent.

    Returns ``(log C, log N_opt, log D_opt, counts)`` over the kept budgets; ``counts`` says
    how many budgets were ``covered`` by any run and why the others were dropped
    (``at_smallest``, ``at_largest``: the best run there is the smallest, or the largest, of
    the runs reaching it).
    """
    reach = np.isfinite(curves)
    covered = reach.any(axis=0)
    best_n = np.where(covered, sizes[np.argmin(curves, axis=0)], np.nan)
    with np.errstate(invalid="ignore"):
        smaller = (reach & (sizes[:, None] < best_n[None, :])).any(axis=0)
        larger = (reach & (sizes[:, None] > best_n[None, :])).any(axis=0)
    at_smallest = covered & ~smaller
    at_largest = covered & smaller & ~larger
    ok = covered & smaller & larger
    counts = {
        "grid": int(log_g.size),
        "covered": int(covered.sum()),
        "at_smallest": int(at_smallest.sum()),
        "at_largest": int(at_largest.sum()),
        "kept": int(ok.sum()),
        "sizes": int(np.unique(best_n[ok]).size),
    }
    log_n = np.log(best_n[ok])
    return log_g[ok], log_n, log_g[ok] - np.log(6.0) - log_n, counts


def fit_envelope(
    curves: Any,
    *,
    n_grid: int = 250,
    n_bootstrap: int = 0,
    seed: int | np.random.Generator | None = 0,
    confidence_level: float = 0.95,
) -> LawFit:
    """Hoffmann et al. (2022) approach 1: the envelope of training curves.

    ``curves`` holds many observations per run (``run_id``, ``params``, ``loss`` and
    ``flops`` or ``tokens``). As Hoffmann et al. do, each run's curve is first smoothed (they
    do not say how; here a cubic in log FLOPs fitted to log loss, :data:`ENVELOPE_SMOOTH_DEGREE`)
    and kept only over the middle of its FLOP span (:data:`ENVELOPE_TRIM` dropped at either
    end, where a fitted curve is least certain). Then at ``n_grid`` log-spaced FLOP counts, the
    run with the lowest smoothed loss gives ``N_opt(C)`` and ``D_opt(C) = C / (6 N_opt)``; and
    ``N_opt ~ C^a`` and ``D_opt ~ C^b`` by least squares in log space. The bootstrap resamples
    whole runs (each with its own smoothed curve, so the intervals carry the smoothing's
    errors).

    Smoothing matters: the minimum over runs of noisy values selects favourable noise. With
    raw curves, 0.1% noise per logged point biased ``a`` by -0.006 and 0.2% left the 95%
    intervals covering the truth in 16 of 30 datasets. Smoothed and trimmed, 0.5%, 1% and 2%
    noise per point (real eval losses carry 0.5-2%) gave mean errors of +0.001, -0.0005 and
    -0.004 and coverage of 30, 30 and 29 of 30 datasets (tests/test_fit.py); noise-free,
    +0.0011. Runs with fewer than ``ENVELOPE_SMOOTH_DEGREE + 2`` points are left out, with a
    warning.

    Only interior budgets are kept: those where a run smaller and a run larger than the best
    one also reach that FLOP count. Elsewhere the minimum is censored by the model sizes
    tried (at the low end of the range only the smallest runs exist, at the high end only
    the largest), and keeping those budgets biases ``a`` (on noise-free curves of a known
    law, from 0.514 to 0.454). How many were dropped, and why, is in
    ``diagnostics["envelope_budgets"]`` (and the fit's printed summary); a warning says so
    when the kept minima are made by fewer than :data:`ENVELOPE_MIN_SIZES` model sizes.

    Raises
    ------
    FitError
        No ``run_id``, or the interior budgets' minima are made by fewer than two model sizes
        (runs of more sizes, overlapping in FLOPs, are needed).
    """
    n_bootstrap = _check_n_bootstrap(n_bootstrap)
    confidence_level = _check_confidence_level(confidence_level)
    seed_setting = None if isinstance(seed, np.random.Generator) else seed
    rng = _check_seed(seed)
    pts = _as_points(curves, need=("params", "flops"))
    if pts.run_id is None:
        raise FitError("an envelope fit needs a `run_id` column (one loss curve per run)")
    runs = pts.run_id
    uniq = np.unique(runs)
    log_g = np.log(np.geomspace(pts.flops.min(), pts.flops.max(), n_grid))
    curves, sizes, too_short = _envelope_curves(pts, runs, uniq, log_g)

    def estimate(take: np.ndarray) -> tuple[dict, float, dict[str, int]]:
        lc, ln, ld, counts = _envelope_minima(curves[take], sizes[take], log_g)
        if np.unique(ln).size < 2:
            return {}, math.nan, counts
        a, log_k = np.polyfit(lc, ln, 1)
        b, log_kd = np.polyfit(lc, ld, 1)
        rss = float(np.sum((ln - (log_k + a * lc)) ** 2) + np.sum((ld - (log_kd + b * lc)) ** 2))
        est = {
            "params_exp": float(a),
            "params_coef": math.exp(log_k),
            "tokens_exp": float(b),
            "tokens_coef": math.exp(log_kd),
        }
        return est, rss, counts

    est, rss, counts = estimate(np.arange(uniq.size))
    if not est:
        raise FitError(
            f"the loss envelope has {counts['kept']} interior budget(s) of {counts['grid']} "
            f"({counts['at_smallest']} have the smallest run covering them as the minimum, "
            f"{counts['at_largest']} the largest, {counts['grid'] - counts['covered']} no run): "
            "an envelope fit needs interior minima at two or more model sizes; add runs "
            "smaller and larger than the best ones, with curves overlapping in FLOPs"
        )
    warns = []
    if too_short:
        warns.append(
            f"{too_short} of {uniq.size} runs have fewer than {ENVELOPE_SMOOTH_DEGREE + 2} "
            "points on their loss curve, too few to smooth: left out of the envelope"
        )
    if counts["sizes"] < ENVELOPE_MIN_SIZES:
        warns.append(
            f"the envelope's interior minima are made by only {counts['sizes']} model sizes: "
            f"N_opt is a staircase of {counts['sizes']} steps, which biases the exponent "
            "towards zero; add runs of more sizes"
        )
    samples = np.empty((0, len(est)))
    if n_bootstrap:
        samples = np.full((n_bootstrap, len(est)), np.nan)
        for b in range(n_bootstrap):
            got = estimate(rng.choice(uniq.size, uniq.size))[0]
            if got:
                samples[b] = list(got.values())
    settings = {
        "law": "envelope",
        "n_grid": n_grid,
        "n_bootstrap": n_bootstrap,
        "seed": seed_setting,
        "resample": "runs",
        "confidence_level": confidence_level,
        "smooth_degree": ENVELOPE_SMOOTH_DEGREE,
        "trim": ENVELOPE_TRIM,
    }
    diag = {"n_runs": int(uniq.size), "runs_too_short": too_short, "envelope_budgets": counts}
    return _allocation_fit(
        "envelope", est, rss, samples, pts, confidence_level, settings, diag, warns
    )


# --------------------------------------------------------------------------- extrapolation


def extrapolation_score(
    data: Any,
    *,
    law: str = "chinchilla",
    holdout: int = 1,
    budget_rtol: float = 0.05,
    **settings: Any,
) -> ExtrapolationScore:
    """Refit without the ``holdout`` largest compute budgets and score the predictions there.

    Budgets are groups of points whose FLOPs (``flops`` or ``6 N D``) are within
    ``budget_rtol``. Other keyword arguments go to :func:`fit_law`.

    Returns
    -------
    ExtrapolationScore
        Log-residual RMSE and mean/max absolute relative error of the held-out losses.
    """
    if not isinstance(holdout, int) or holdout < 1:
        raise ValueError(f"`holdout` must be an integer >= 1, got {holdout!r}")
    pts = _as_points(data, need=FORMS[_check_form(law)].needs)
    groups = _budget_groups(pts.flops, budget_rtol)
    n_groups = int(groups.max()) + 1
    if n_groups <= holdout:
        raise FitError(f"{n_groups} compute budget(s): cannot hold out {holdout} and still fit")
    test = groups >= n_groups - holdout
    frame = pl.DataFrame(
        {
            "params": pts.params[~test],
            "tokens": pts.tokens[~test],
            "flops": pts.flops[~test],
            "loss": pts.loss[~test],
        }
    )
    fitted = fit_law(frame, law=law, **settings)
    pred = np.asarray(fitted.law.loss(pts.params[test], pts.tokens[test]), dtype=float)
    if law.startswith("kaplan_c"):
        pred = np.asarray(fitted.law.loss_at_flops(pts.flops[test]), dtype=float)
    rel = pred / pts.loss[test] - 1.0
    return ExtrapolationScore(
        n_train=int((~test).sum()),
        n_test=int(test.sum()),
        holdout_flops=tuple(sorted({float(f) for f in pts.flops[test]})),
        rmse_log=float(np.sqrt(np.mean(np.log(pred / pts.loss[test]) ** 2))),
        mean_abs_rel_error=float(np.mean(np.abs(rel))),
        max_abs_rel_error=float(np.max(np.abs(rel))),
        fit=fitted,
    )


# --------------------------------------------------------------------------- I/O


def fit_named(
    data: Any,
    law: str,
    *,
    delta: float = 1e-3,
    n_bootstrap: int = 0,
    seed: int | np.random.Generator | None = 0,
    resample: str = "points",
    irreducible: bool = False,
    bootstrap_jobs: int = 1,
    bootstrap_map: BootstrapMap = map,
) -> LawFit:
    """Fit the law called ``law`` (a key of :data:`LAW_NAMES`) with the procedure it needs:
    :func:`fit_isoflop` (approach 2), :func:`fit_envelope` (approach 1),
    :func:`scalefit.fit_constrained.fit_data_constrained` (Muennighoff et al. 2023; needs
    ``unique_tokens``), else :func:`fit_law`.

    ``irreducible`` adds a term ``E`` to the single-variable Kaplan forms.
    ``bootstrap_jobs`` and ``bootstrap_map`` spread the bootstrap refits of the nonlinear
    forms (as :func:`fit_law`); the IsoFLOP and envelope bootstraps are cheap and run here.

    Raises
    ------
    FitError
        Unknown ``law`` (the message lists the allowed names), or the fit's own errors.
    """
    form = named_form(law, irreducible=irreducible)
    if form == "isoflop":
        return fit_isoflop(data, n_bootstrap=n_bootstrap, seed=seed)
    if form == "envelope":
        return fit_envelope(data, n_bootstrap=n_bootstrap, seed=seed)
    common = {
        "delta": delta,
        "n_bootstrap": n_bootstrap,
        "seed": seed,
        "resample": resample,
        "bootstrap_jobs": bootstrap_jobs,
        "bootstrap_map": bootstrap_map,
    }
    if form == "data_constrained":
        from .fit_constrained import fit_data_constrained

        return fit_data_constrained(data, **common)
    return fit_law(data, law=form, **common)


def named_form(law: str, *, irreducible: bool = False) -> str:
    """The form :func:`fit_named` fits for the law called ``law``: a key of :data:`FORMS`
    for the forms :func:`fit_law` fits (``irreducible`` adds ``_e`` where the form has an
    ``E`` variant), else ``isoflop``, ``envelope`` or ``data_constrained``.

    Raises
    ------
    FitError
        Unknown ``law`` (the message lists the allowed names).
    """
    if law not in LAW_NAMES:
        raise FitError(f"unknown law `{law}`; allowed: {', '.join(LAW_NAMES)}")
    form = LAW_NAMES[law]
    return f"{form}_e" if irreducible and f"{form}_e" in FORMS else form


def read_points(path: str | Any) -> pl.DataFrame:
    """Read a CSV or Parquet file of points (columns ``params``, ``tokens``, ``loss``;
    optional ``flops``, ``run_id``, and ``unique_tokens`` for the data-constrained law).

    Raises
    ------
    FitError
        The file is missing or not ``.csv``/``.parquet``.
    """
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        raise FitError(f"no file at {p}: check the path given to --input")
    suffix = p.suffix.lower()
    if suffix == ".csv":
        return pl.read_csv(p)
    if suffix in (".parquet", ".pq"):
        return pl.read_parquet(p)
    raise FitError(f"cannot read {p}: use a .csv or .parquet file")


_METRICS = ("eval_loss", "loss", "train_loss")


def select_points(
    con: Any,
    *,
    where: str | None = None,
    metric: str | None = None,
    project: str | None = None,
    run_ids: Sequence[str] | None = None,
) -> pl.DataFrame:
    """The final observation of each run in the store, as points to fit.

    Parameters
    ----------
    con
        An open store connection; with ``where``, one from
        :func:`scalefit.user_sql.connect_locked` (the predicate is a user's SQL).
    where
        Predicate on the ``runs`` columns (e.g. ``"project = 'sweep'"``); default all. It is
        checked and evaluated on ``con`` (:func:`scalefit.user_sql.run_ids_where`) and only
        the matching run ids are used from then on.
    metric
        Observation metric to use; default ``eval_loss`` if any selected run has it, else
        ``loss``, else ``train_loss``.
    project, run_ids
        Only runs of this project / with these ids (bound as parameters).

    Returns
    -------
    polars.DataFrame
        ``run_id, step, metric, params, tokens, flops, unique_tokens, loss``: the
        observation's ids, tokens and FLOPs from the observation, else from the run;
        ``unique_tokens`` from the run (for the data-constrained law).
    """
    from . import store, user_sql

    ids = user_sql.run_ids_where(con, where) if where and where.strip() else None
    if run_ids is not None:
        wanted = set(run_ids)
        ids = [i for i in (ids if ids is not None else run_ids) if i in wanted]
    conds, params = [], []
    if ids is not None:
        conds.append("run_id IN (SELECT unnest(?::VARCHAR[]))")
        params.append(list(ids))
    if project is not None:
        conds.append("project = ?")
        params.append(project)
    runs = "SELECT * FROM runs" + (" WHERE " + " AND ".join(conds) if conds else "")
    if metric is None:
        have = store.query(
            con,
            f"SELECT DISTINCT o.metric FROM observations o JOIN ({runs}) r USING (run_id)",
            params,
        )["metric"].to_list()
        metric = next((m for m in _METRICS if m in have), None)
        if metric is None:
            raise FitError(
                f"no observations with metric {', '.join(_METRICS)} for the selected runs "
                f"(found: {', '.join(map(str, have)) or 'none'}); pass --metric"
            )
    sql = f"""
        WITH r AS ({runs}),
        -- a step logged before any training (tokens or FLOPs of 0) is no point on a law
        o AS (SELECT o.* FROM observations o JOIN r USING (run_id)
              WHERE o.metric = ? AND coalesce(o.tokens, 1) > 0 AND coalesce(o.flops, 1) > 0),
        last AS (SELECT run_id, max(step) AS step FROM o GROUP BY run_id)
        SELECT r.run_id, o.step, o.metric, r.params, coalesce(o.tokens, r.tokens) AS tokens,
               coalesce(o.flops, r.flops) AS flops, r.unique_tokens, o.value AS loss
        FROM o JOIN last USING (run_id, step) JOIN r USING (run_id)
        ORDER BY r.run_id
    """
    return store.query(con, sql, [*params, metric])


def store_input(
    points: pl.DataFrame, *, predicate: str | None = None, project: str | None = None
) -> dict[str, Any]:
    """The record of a fit to points from :func:`select_points`: what selected them (as
    data: the predicate's text, the project, the metric) and how many; their ids go to
    ``fit_points`` (:func:`save_fit`)."""
    metrics = points["metric"].unique().to_list() if "metric" in points.columns else []
    return {
        "source": "store",
        "predicate": (predicate or "").strip(),
        "project": project,
        "metric": metrics[0] if len(metrics) == 1 else None,
        "n_points": points.height,
    }


def file_input(path: Any) -> dict[str, Any]:
    """The record of a fit to a file of points: its path, sha256 and row count."""
    from pathlib import Path

    p = Path(path)
    digest = hashlib.sha256()
    with p.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return {"source": "file", "path": str(p), "sha256": digest.hexdigest()}


def describe_input(input: Mapping[str, Any]) -> str:
    """A fit's record in words, for ``fits.selection`` (read, never run)."""
    if input.get("source") == "file":
        return f"file {input.get('path')} (sha256 {str(input.get('sha256'))[:12]})"
    parts = []
    if input.get("project") is not None:
        parts.append(f"project {input['project']!r}")
    if input.get("predicate"):
        parts.append(f"runs matching {input['predicate']!r}")
    what = ", ".join(parts) or "all runs"
    return f"store: {what}; metric {input.get('metric')}; {input.get('n_points')} points"


def save_fit(
    con: Any,
    result: LawFit,
    *,
    selection: str | None = None,
    law_id: str | None = None,
    input: Mapping[str, Any] | None = None,
    points: pl.DataFrame | None = None,
) -> str:
    """Write ``result`` to ``fits`` and its law to ``laws`` (origin ``fitted``) in one
    transaction; idempotent (both are upserts keyed by the deterministic fit id).

    Parameters
    ----------
    selection
        The data in words (``fits.selection``); default :func:`describe_input` of ``input``.
    input
        What was fitted, as data (:func:`store_input`, :func:`file_input`): ``fits.input``.
    points
        The points fitted, from :func:`select_points`: their ``run_id``, ``step`` and
        ``metric`` go to ``fit_points``, so that reports can read them again by id.
    law_id
        Key of the law's row in ``laws``; default the fit id. A stable name (e.g.
        ``fitted_<project>_chinchilla``) makes a scheduled refit replace its law in place
        (its ``fit_id`` then points to the newest fit) instead of adding a law per fit.
    The bootstrap samples go to ``fit_samples`` (one row per resample and quantity) in the
    same transaction.

    Returns
    -------
    str
        The fit id.
    """
    from . import store

    if selection is None:
        selection = describe_input(input) if input is not None else ""
    fit_row = pl.DataFrame([result.to_row(selection=selection, input=input)])
    ids = ("run_id", "step", "metric")
    fit_points = (
        points.select(pl.lit(result.fit_id).alias("fit_id"), *ids)
        if points is not None and all(c in points.columns for c in ids)
        else None
    )
    law_row = pl.DataFrame(
        [
            {
                "law_id": law_id or result.fit_id,
                "form": result.law.form,
                "origin": "fitted",
                "parameters": _json(result.law.parameters()),
                "source_id": None,
                "fit_id": result.fit_id,
                "locator": None,
                "notes": f"{result.form} fit by scalefit {scalefit.__version__} to {selection}",
            }
        ],
        schema_overrides={"source_id": pl.String, "locator": pl.String},
    )
    samples = pl.DataFrame(
        {
            "fit_id": result.fit_id,
            "sample": np.repeat(np.arange(result.samples.shape[0]), len(result.sample_names)),
            "parameter": np.tile(
                np.asarray(result.sample_names, dtype=object), result.samples.shape[0]
            ),
            "value": result.samples.reshape(-1),
        },
        schema={
            "fit_id": pl.String,
            "sample": pl.Int64,
            "parameter": pl.String,
            "value": pl.Float64,
        },
    ).filter(pl.col("value").is_finite())
    with store.transaction(con):
        store.write(con, "fits", fit_row)
        store.write(con, "laws", law_row)
        store.write(con, "fit_samples", samples, replace_where=f"fit_id = '{result.fit_id}'")
        if fit_points is not None:
            store.write(con, "fit_points", fit_points, replace_where=f"fit_id = '{result.fit_id}'")
    return result.fit_id
