"""The immutable result of a fit (:class:`LawFit`), and of an extrapolation check."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

import scalefit

from .._json import finite
from ..errors import FitError
from ..laws import Allocation, Law, LossLaw
from ..schemas.vocabulary import PROCEDURES
from .settings import check_confidence_level

if TYPE_CHECKING:
    import polars as pl

__all__ = [
    "ConvergenceWarning",
    "ExtrapolationScore",
    "LawFit",
    "envelope_budgets_text",
    "json_text",
    "make_fit",
]


def _loss_law(law: Law) -> LossLaw:
    """``law`` as a :class:`~scalefit.laws.LossLaw`, or a :class:`FitError` naming the law
    form that predicts no loss (an allocation law, a downstream-error law)."""
    if not isinstance(law, LossLaw):
        raise FitError(f"a {law.form} law has no loss")
    return law


class ConvergenceWarning(UserWarning):
    """A fit (or some bootstrap refits) did not reach certified convergence."""


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
    law: Law
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
        return np.asarray(_loss_law(self.law).loss(params, tokens))

    def sample_laws(self) -> list[Law]:
        """One law per bootstrap resample (those that converged)."""
        from ..laws import law_from_parameters  # it imports every law module

        names = [n for n in self.estimates if n in self.sample_names]
        cols = [self.sample_names.index(n) for n in names]
        return [
            law_from_parameters(self.law.form, dict(zip(names, row[cols], strict=True)))
            for row in self.samples
            if np.isfinite(row[cols]).all()
        ]

    def _interval(self, values: list[Any], level: float | None) -> tuple[np.ndarray, np.ndarray]:
        level = check_confidence_level(level or self.confidence_level)
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
        preds = [_loss_law(law).loss(params, tokens) for law in self.sample_laws()]
        return self._interval(preds, confidence_level)

    def allocation_interval(
        self, flops: Any, *, confidence_level: float | None = None
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Percentile bootstrap intervals of the compute-optimal ``params`` and ``tokens``
        at ``flops``."""
        allocs: list[Allocation] = [law.allocation(flops) for law in self.sample_laws()]
        return {
            "params": self._interval([a.params for a in allocs], confidence_level),
            "tokens": self._interval([a.tokens for a in allocs], confidence_level),
        }

    def law_parameters_json(self) -> str:
        """The fitted law's parameters as JSON text (``laws.parameters``)."""
        return json_text(self.law.parameters())

    def to_frame(self) -> pl.DataFrame:
        """One row per parameter and derived quantity: name, kind, estimate, ci_low, ci_high."""
        import polars as pl

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

    @property
    def procedure(self) -> str:
        """How the law was fitted (``fits.procedure``): ``isoflop``, ``envelope`` or
        ``parametric``; :attr:`form` stays the name the fit id hashes (``kaplan_n_e`` ...)."""
        return self.form if self.form in PROCEDURES else "parametric"

    def to_row(
        self, *, selection: str = "", input: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """A dict shaped like the ``fits`` table (``schemas/bookkeeping.py``); ``input`` is
        the record of what was fitted (:func:`store_input`, :func:`file_input`)."""
        has_ci = bool(self.ci)
        return {
            "fit_id": self.fit_id,
            "procedure": self.procedure,
            "form": self.law.form,
            "selection": selection,
            "n_points": self.n_points,
            "estimates": json_text({**self.estimates, **self.derived}),
            "ci_low": json_text({k: v[0] for k, v in self.ci.items()}) if has_ci else None,
            "ci_high": json_text({k: v[1] for k, v in self.ci.items()}) if has_ci else None,
            "confidence_level": self.confidence_level if has_ci else None,
            "objective": self.objective,
            "converged": self.converged,
            "n_bootstrap": self.n_bootstrap,
            "settings": json_text(dict(self.settings)),
            "diagnostics": json_text(dict(self.diagnostics)),
            "created_at": dt.datetime.now(dt.UTC).replace(tzinfo=None),
            "input_sha256": self.input_sha256,
            "package_version": scalefit.__version__,
            "input": None if input is None else json_text(dict(input)),
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
            "diagnostics": json.loads(json_text(dict(self.diagnostics))),
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
                f"  starts: {d['n_starts']}{_screened(d)}, {d['n_best_basin']} reached the best "
                "basin; "
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


def json_text(obj: Any) -> str:
    """``obj`` as strict, sorted JSON (numpy values as numbers, NaN and inf as null)."""

    def default(o: Any) -> Any:
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
        return str(o)

    return json.dumps(finite(json.loads(json.dumps(obj, default=default))), sort_keys=True)


def make_fit(
    *,
    form: str,
    law: Law,
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
    ci: dict[str, tuple[float, float]] = {}
    if samples.shape[0]:
        from .bootstrap import percentile_ci  # not imported by a fit without a bootstrap

        ci = percentile_ci(samples, names, confidence_level)
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


def _screened(d: Mapping[str, Any]) -> str:
    """`` (900 run)`` when the search screened its starts by objective."""
    if not d.get("n_screened_starts"):
        return ""
    return f" ({d['n_run_starts']} run)"
