"""Approach 3 and every nonlinear form: Huber loss in log space, multi-start, bootstrap.

:func:`fit_form` fits any record of the registry (:mod:`.forms`) the same way: the points are
read and checked by the record, the one multi-start driver (:mod:`.multistart`) certifies the
optimum and analyses it (basin spread, bound hits, identifiability), the bootstrap
(:mod:`.bootstrap`) refits resamples warm-started there. :func:`fit_law`,
:func:`fit_chinchilla`, :func:`fit_kaplan` and :func:`fit_data_constrained` are its public
faces.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any, Unpack

import numpy as np

from .. import _optim
from ..errors import FitError
from .forms import Form, check_form
from .multistart import Optimum, search
from .points import PointsLike, _Points, check_fittable
from .result import LawFit, make_fit
from .settings import FitOptions, FitSettings

if TYPE_CHECKING:
    from .bootstrap import BootstrapMap

__all__ = ["fit_chinchilla", "fit_data_constrained", "fit_form", "fit_kaplan", "fit_law"]

Starts = np.ndarray | list[list[float]] | None


def _starts(form: Form, pts: _Points, starts: Starts) -> np.ndarray:
    grid = form.starts(pts) if starts is None else np.atleast_2d(np.asarray(starts, dtype=float))
    if grid.shape[1] != len(form.theta_names):
        raise ValueError(
            f"`starts` must have {len(form.theta_names)} columns ({', '.join(form.theta_names)})"
        )
    return grid


def _recorded(form: Form, s: FitSettings, starts: Starts, grid: np.ndarray) -> dict[str, Any]:
    """The settings a fit records (and its fit id is derived from)."""
    out: dict[str, Any] = {
        "law": form.name,
        "delta": s.delta,
        "n_bootstrap": s.n_bootstrap,
        "seed": s.seed_setting,
        "resample": s.resample,
        "confidence_level": s.confidence_level,
        "starts": "default" if starts is None else hashlib.sha256(grid.tobytes()).hexdigest()[:12],
        "max_grid_iter": s.max_grid_iter or form.grid_iterations,
    }
    if form.derived_at_reference:
        out["reference_flops"] = s.reference_flops
    return {**out, **form.conventions}


def _samples(
    form: Form,
    obj: _optim.HuberObjective,
    pts: _Points,
    opt: Optimum,
    s: FitSettings,
    bootstrap_map: BootstrapMap,
    columns: tuple[list[str], list[str]],
) -> np.ndarray:
    """One row of estimates then derived quantities per bootstrap resample (NaN where the
    refit did not converge)."""
    from .bootstrap import Resampling, refit_resamples  # only a fit with a bootstrap needs it

    how = Resampling(s.resample, s.n_bootstrap, s.rng(), s.bootstrap_jobs, bootstrap_map)
    thetas, converged = refit_resamples(
        obj, opt.theta, pts, (form.lower, form.upper), how, opt.diagnostics, opt.warnings
    )
    est_b = form.estimates(thetas)
    der_b = form.derived(est_b, s.reference_flops)
    est_names, der_names = columns
    samples = np.column_stack([est_b[k] for k in est_names] + [der_b[k] for k in der_names])
    samples[~converged] = np.nan
    return samples


def fit_form(
    data: PointsLike,
    form: Form,
    settings: FitSettings,
    *,
    starts: Starts = None,
    bootstrap_map: BootstrapMap = map,
) -> LawFit:
    """Fit the registry's ``form`` to ``data`` with ``settings`` (see :func:`fit_law`)."""
    s = settings
    pts = form.points(data)
    check_fittable(pts, form.name, form.theta_names, form.needs)
    own = form.check(pts)
    if s.resample == "runs" and s.n_bootstrap and pts.run_id is None:
        raise FitError("`resample='runs'` needs a `run_id` column; use 'points' or 'params'")
    grid = _starts(form, pts, starts)
    obj = _optim.HuberObjective(form.model(pts), np.log(pts.loss), s.delta)
    opt = search(form, obj, grid, max_iter=s.max_grid_iter or form.grid_iterations)
    opt.diagnostics.update(own)
    est = {k: float(v[0]) for k, v in form.estimates(opt.theta).items()}
    derived = {k: float(np.asarray(v)) for k, v in form.derived(est, s.reference_flops).items()}
    samples = np.empty((0, len(est) + len(derived)))
    if s.n_bootstrap:
        columns = (list(est), list(derived))
        samples = _samples(form, obj, pts, opt, s, bootstrap_map, columns)
    return make_fit(
        form=form.fit_form,
        law=form.law(est),
        est=est,
        derived=derived,
        samples=samples,
        confidence_level=s.confidence_level,
        objective=opt.objective,
        n_points=pts.n,
        converged=opt.converged,
        settings=_recorded(form, s, starts, grid),
        diag=opt.diagnostics,
        warns=opt.warnings,
        input_sha256=pts.sha256(),
        stacklevel=4,
    )


def fit_law(
    data: PointsLike,
    *,
    law: str = "chinchilla",
    settings: FitSettings | None = None,
    starts: Starts = None,
    bootstrap_map: BootstrapMap = map,
    **options: Unpack[FitOptions],
) -> LawFit:
    """Fit a nonlinear law form by Huber loss in log space (see :mod:`scalefit.fit`).

    Parameters
    ----------
    data
        A polars frame (or a mapping of columns) with ``loss`` and the columns the form needs:
        ``params`` and/or ``tokens`` (``flops`` optional, else ``6 N D``; ``run_id`` for
        ``resample="runs"``).
    law
        A form of the registry (:data:`~scalefit.fit.forms.REGISTRY`): ``chinchilla``;
        ``kaplan_n``, ``kaplan_d``, ``kaplan_c`` (add ``_e`` for an irreducible term ``E``);
        ``kaplan_nd``; ``overtraining`` (Gadre et al. 2024, ``E + A N^-eta + B D^-eta``);
        ``downstream_error`` (Gadre et al.'s ``Err(L) = epsilon - k exp(-gamma L)``: fits the
        ``error`` column against ``loss``); ``data_constrained`` (:func:`fit_data_constrained`).
    settings, options
        A :class:`~scalefit.fit.FitSettings` and/or its fields by name (``delta``,
        ``n_bootstrap``, ``seed``, ``resample``, ``confidence_level``, ``bootstrap_jobs``,
        ``max_grid_iter``, ``reference_flops``), which replace those of ``settings``.
    starts
        Starting points, rows of the optimizer's parameters (for ``chinchilla``:
        ``(a, b, e, alpha, beta)``); default the form's grid (:func:`hoffmann_grid`).
    bootstrap_map
        Runs the bootstrap's jobs (default the builtin ``map``; e.g. a
        ``ProcessPoolExecutor``'s ``map`` to use several cores). It does not change the result.

    Raises
    ------
    FitError
        A bad setting, too few points, non-positive or non-finite values, or a single
        distinct value of a variable the form needs.
    """
    form = check_form(law)
    s = FitSettings.of(settings, **options)
    return fit_form(data, form, s, starts=starts, bootstrap_map=bootstrap_map)


def fit_chinchilla(
    data: PointsLike,
    *,
    settings: FitSettings | None = None,
    starts: Starts = None,
    bootstrap_map: BootstrapMap = map,
    **options: Unpack[FitOptions],
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
    s = FitSettings.of(settings, **options)
    return fit_form(data, check_form("chinchilla"), s, starts=starts, bootstrap_map=bootstrap_map)


def fit_kaplan(
    data: PointsLike,
    *,
    form: str = "kaplan_n",
    irreducible: bool = False,
    settings: FitSettings | None = None,
    bootstrap_map: BootstrapMap = map,
    **options: Unpack[FitOptions],
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
    s = FitSettings.of(settings, **options)
    record = check_form(form + ("_e" if irreducible else ""))
    return fit_form(data, record, s, bootstrap_map=bootstrap_map)


def fit_data_constrained(
    data: PointsLike,
    *,
    settings: FitSettings | None = None,
    starts: Starts = None,
    bootstrap_map: BootstrapMap = map,
    **options: Unpack[FitOptions],
) -> LawFit:
    """Fit ``L = E + A/N'^alpha + B/D'^beta`` (Muennighoff et al. 2023, Eq. (6)) to runs with
    known unique tokens, by the same driver, diagnostics and bootstrap as every form.

    Parameters
    ----------
    data
        A polars frame (or mapping of columns) with ``params``, ``tokens``,
        ``unique_tokens`` (the ``runs.unique_tokens`` column) and ``loss``; ``run_id`` for
        ``resample="runs"``.
    settings, options, bootstrap_map
        As :func:`fit_law`; the grid iterations default to 60 for this form.
    starts
        Rows of ``(a, b, e, alpha, beta, log R_D*, log R_N*)``; default: approach 3's fit to
        the single-epoch runs and a few base points, crossed with the paper's grid of
        ``R_D*``, ``R_N*`` (:mod:`scalefit.fit.constrained`).

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
    s = FitSettings.of(settings, **options)
    form = check_form("data_constrained")
    return fit_form(data, form, s, starts=starts, bootstrap_map=bootstrap_map)
