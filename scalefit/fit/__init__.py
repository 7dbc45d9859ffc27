"""Fit scaling laws to loss measurements: Huber loss in log space, a grid of starts, bootstrap.

One function per procedure, each returning an immutable :class:`LawFit`:

- :func:`fit_chinchilla` — Hoffmann et al. (2022) approach 3, ``L = E + A/N^alpha + B/D^beta``.
- :func:`fit_kaplan` — Kaplan et al. (2020) ``L(N)``, ``L(D)``, ``L(C)`` (optionally with an
  irreducible term ``E``) and the joint ``L(N, D)``.
- :func:`fit_isoflop` — Hoffmann et al. approach 2 (IsoFLOP profiles).
- :func:`fit_envelope` — Hoffmann et al. approach 1 (minimum over training curves).
- :func:`fit_data_constrained` — Muennighoff et al. (2023), with unique tokens.

Every function takes one :class:`FitSettings` (frozen, validated once; the same defaults
everywhere) and/or its fields as keyword arguments.

Layout: :mod:`.settings` (FitSettings), :mod:`.points` (checked input arrays), :mod:`.forms`
(the registry: one record per law form) with :mod:`.models` and :mod:`.constrained` (the
formulas), :mod:`.multistart` (the one driver) with :mod:`.diagnostics`, :mod:`.bootstrap`,
:mod:`.parametric` (approach 3 and every nonlinear form), :mod:`.allocation` (approaches 1
and 2), :mod:`.result` (LawFit), :mod:`.extrapolation`, :mod:`.named` (CLI law names). The
package imports nothing of the store: selecting points and saving fits live in
:mod:`scalefit.fit_store`. Every public name is importable from here; its module is
imported on first use, so that a fit loads its own procedure's modules only.

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

import importlib
from typing import TYPE_CHECKING, Any

from .._lazy import names, serve
from .._names import LAW_NAMES

if TYPE_CHECKING:
    from .allocation import (
        ENVELOPE_MIN_SIZES,
        ENVELOPE_SMOOTH_DEGREE,
        ENVELOPE_TRIM,
        fit_envelope,
        fit_isoflop,
    )
    from .bootstrap import BootstrapJob, BootstrapMap, BootstrapRefits, run_bootstrap_job
    from .extrapolation import extrapolation_score
    from .forms import FORMS, REGISTRY, Form, hoffmann_grid
    from .named import fit_named, named_form
    from .parametric import fit_chinchilla, fit_data_constrained, fit_kaplan, fit_law
    from .result import ConvergenceWarning, ExtrapolationScore, LawFit, envelope_budgets_text
    from .settings import GRID_ITERATIONS, REFERENCE_FLOPS, RESAMPLE, FitOptions, FitSettings

_LAZY = {
    **dict.fromkeys(
        (
            "ENVELOPE_MIN_SIZES",
            "ENVELOPE_SMOOTH_DEGREE",
            "ENVELOPE_TRIM",
            "fit_envelope",
            "fit_isoflop",
        ),
        "allocation",
    ),
    **dict.fromkeys(
        ("BootstrapJob", "BootstrapMap", "BootstrapRefits", "run_bootstrap_job"), "bootstrap"
    ),
    "extrapolation_score": "extrapolation",
    **dict.fromkeys(("FORMS", "REGISTRY", "Form", "hoffmann_grid"), "forms"),
    **dict.fromkeys(("fit_named", "named_form"), "named"),
    **dict.fromkeys(
        ("fit_chinchilla", "fit_data_constrained", "fit_kaplan", "fit_law"), "parametric"
    ),
    **dict.fromkeys(
        ("ConvergenceWarning", "ExtrapolationScore", "LawFit", "envelope_budgets_text"), "result"
    ),
    **dict.fromkeys(
        ("GRID_ITERATIONS", "REFERENCE_FLOPS", "RESAMPLE", "FitOptions", "FitSettings"),
        "settings",
    ),
}
"""Each public name and its module, imported on first use (PEP 562): a fit imports the
modules of its own procedure only (not the IsoFLOP and envelope procedures, the extrapolation
check, or the bootstrap without resamples)."""

_SUBMODULES = (
    *("allocation", "bootstrap", "constrained", "diagnostics", "extrapolation", "forms"),
    *("models", "multistart", "named", "parametric", "points", "result", "settings"),
)


def __getattr__(name: str) -> Any:
    # A public name (then kept here), or a submodule by its name (`scalefit.fit.forms`).
    if name in _LAZY:
        return serve(globals(), _LAZY[name], name)
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return names(globals(), __all__)


__all__ = [
    "ENVELOPE_MIN_SIZES",
    "ENVELOPE_SMOOTH_DEGREE",
    "ENVELOPE_TRIM",
    "FORMS",
    "GRID_ITERATIONS",
    "LAW_NAMES",
    "REFERENCE_FLOPS",
    "REGISTRY",
    "RESAMPLE",
    "BootstrapJob",
    "BootstrapMap",
    "BootstrapRefits",
    "ConvergenceWarning",
    "ExtrapolationScore",
    "FitOptions",
    "FitSettings",
    "Form",
    "LawFit",
    "envelope_budgets_text",
    "extrapolation_score",
    "fit_chinchilla",
    "fit_data_constrained",
    "fit_envelope",
    "fit_isoflop",
    "fit_kaplan",
    "fit_law",
    "fit_named",
    "hoffmann_grid",
    "named_form",
    "run_bootstrap_job",
]
