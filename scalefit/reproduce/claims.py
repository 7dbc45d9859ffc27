"""What every study's reproduction shares: the :class:`Claim` rows and the
:class:`Reproduction` they make, the Huber objective, and every loss form fitted "beyond the
paper" on one split of a study's runs."""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import polars as pl

from .. import fit as fitting
from ..errors import FitError
from ..laws import LossLaw

log = logging.getLogger(__name__)

LOSS_FORMS = tuple(name for name, form in fitting.FORMS.items() if form.target == "loss")
"""Every registered form that predicts a loss from parameters and tokens."""


@dataclass(frozen=True, slots=True)
class Claim:
    """One recomputed claim; :meth:`to_json` is the shape ``scalefit reproduce --json`` prints."""

    study: str
    claim: str
    dataset: str | None
    run: str | None
    quantity: str
    observed: float | None
    predicted: float | None
    relative_error: float | None
    paper: float | None
    form: str | None = None
    method: str = "huber_log"
    """``huber_log`` (scalefit's driver) or ``least_squares`` (the paper's own code)."""
    split: str = "paper"
    """``paper`` (the paper's own claim) or ``beyond`` (every form on one split)."""
    n_train: int | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    held_out: bool = True

    def to_json(self) -> dict[str, Any]:
        """``{"claim", "dataset", "run", "quantity", "observed", "predicted",
        "relative_error", "paper"}`` (NaN as null)."""
        keys = ("claim", "dataset", "run", "quantity", "observed", "predicted")
        out = {k: _clean(getattr(self, k)) for k in keys}
        out["relative_error"] = _clean(self.relative_error)
        out["paper"] = _clean(self.paper)
        return out


def _clean(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        value = float(value)
        return value if math.isfinite(value) else None
    return value


@dataclass(frozen=True, slots=True)
class Reproduction:
    """A study's claims and the points of its observed-vs-predicted plot."""

    study: str
    claims: list[Claim]
    plot: pl.DataFrame
    """``dataset, run, quantity, observed, predicted, held_out`` (a run the claims predict),
    ``fitted`` (a run the plotted law was fitted to) of the plotted fit."""

    def to_json(self) -> dict[str, Any]:
        """``{"study": NAME, "claims": [...]}``."""
        return {"study": self.study, "claims": [c.to_json() for c in self.claims]}

    def frame(self) -> pl.DataFrame:
        """The claims as rows of ``reproductions.parquet`` (``schemas/studies.py``)."""
        from ..schemas.studies import ReproductionSchema

        rows = [asdict(c) for c in self.claims]
        for r in rows:
            for k, v in r.items():
                r[k] = _clean(v)
        cols = list(ReproductionSchema.to_schema().columns)
        schema = {
            c: (
                pl.Float64
                if c in ("observed", "predicted", "relative_error", "paper", "ci_low", "ci_high")
                else pl.Int64
                if c == "n_train"
                else pl.Boolean
                if c == "held_out"
                else pl.String
            )
            for c in cols
        }
        return pl.DataFrame(rows, schema=schema).select(cols)


def rel_error(predicted: float | None, observed: float | None) -> float | None:
    """``|predicted - observed| / |observed|``; None without both, or for ``observed`` 0."""
    if predicted is None or observed is None or not observed:
        return None
    return abs(predicted - observed) / abs(observed)


def huber_objective(law: LossLaw, data: pl.DataFrame, delta: float = 1e-3) -> float:
    """The summed Huber loss (threshold ``delta``) of ``log law.loss(N, D) - log L`` over
    ``data`` (``params``, ``tokens``, ``loss``): the objective of Hoffmann et al.'s approach 3,
    at any law's parameters (e.g. published ones)."""
    pred = np.asarray(law.loss(data["params"].to_numpy(), data["tokens"].to_numpy()))
    r = np.abs(np.log(pred) - np.log(data["loss"].to_numpy()))
    return float(np.where(r <= delta, 0.5 * r * r, delta * (r - 0.5 * delta)).sum())


def fit_quietly(data: pl.DataFrame, form: str, **kw: Any) -> fitting.LawFit:
    """:func:`scalefit.fit.fit_law` of ``form`` on ``data``, its convergence warnings left
    out (a reproduction reports its numbers, not the search)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fitting.ConvergenceWarning)
        return fitting.fit_law(data, law=form, **kw)


def loss_law(fitted: fitting.LawFit) -> LossLaw:
    """The law of ``fitted``, which predicts a loss (every form a reproduction fits for a
    loss does), or a :class:`FitError` naming a form that predicts none."""
    law = fitted.law
    if not isinstance(law, LossLaw):
        raise FitError(f"a {law.form} law predicts no loss")
    return law


def beyond_the_paper(
    study: str,
    train: pl.DataFrame,
    test: pl.DataFrame,
    *,
    split: str,
    n_bootstrap: int,
    seed: int,
    forms: Sequence[str] = LOSS_FORMS,
    dataset: str | None = None,
) -> list[Claim]:
    """Every form fitted on ``train``; a claim per held-out run of ``test``."""
    out: list[Claim] = []
    n, d = test["params"].to_numpy(), test["tokens"].to_numpy()
    for form in forms:
        try:
            fitted = fit_quietly(train, form, n_bootstrap=n_bootstrap, seed=seed)
        except FitError as exc:
            log.warning("%s: %s not fitted on %s: %s", study, form, split, exc)
            continue
        pred = np.asarray(loss_law(fitted).loss(n, d), dtype=float)
        low = high = np.full(pred.shape, np.nan)
        if n_bootstrap:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                try:
                    low, high = fitted.predict_interval(n, d)
                except FitError:
                    pass
        for i, row in enumerate(test.iter_rows(named=True)):
            p = float(pred[i])
            out.append(
                Claim(
                    study=study,
                    claim=f"beyond the paper: {form} fitted to {split}",
                    dataset=dataset,
                    run=row["run"],
                    quantity="loss",
                    observed=row["loss"],
                    predicted=p,
                    relative_error=rel_error(p, row["loss"]),
                    paper=None,
                    form=form,
                    split="beyond",
                    n_train=train.height,
                    ci_low=float(low[i]),
                    ci_high=float(high[i]),
                )
            )
    return out
