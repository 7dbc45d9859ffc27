"""Reproductions: each study's paper claims, recomputed from its runs in the store.

One function per study (:data:`REPRODUCTIONS`) reads the study's runs, refits what the paper
fitted, and returns :class:`Claim` rows; ``scalefit reproduce NAME`` prints them and the refresh
writes them all to ``reports/reproductions.parquet`` (columns: ``schemas/studies.py``), with
one plot per study (observed against predicted, the held-out runs marked).

- ``gadre2024`` (Gadre et al. 2024, arXiv:2403.08540, Section 3 and their code,
  ``scaling/shared.py:fit_ds`` at the pinned commit): for each corpus, the over-training law
  fitted to the paper's default configuration (the four small models at M = 20 plus the 11M
  model at M = 320; C4-eval loss) predicts the held-out 1.4B and 6.9B runs (nine); the
  downstream law fitted on (loss, 17-task average top-1 error) of those five runs plus the 1.4B
  run at M = 20 turns each predicted loss into a predicted error (six held-out runs). ``M`` is
  tokens per parameter (the paper's "token multiplier"; M = 20 is ``chinchilla_multiplier`` 1).
- ``besiroglu2024`` (arXiv:2404.10102): the Chinchilla refit on the 240 points the authors keep
  (the 5 highest losses dropped) against their published estimates, and the summed Huber
  objective at Hoffmann et al.'s published estimates against the refit's.
- Beyond the papers, on each study: every registered loss form (:data:`scalefit.fit.FORMS`)
  fitted on one training split, predicting the same held-out runs, with bootstrap intervals.
  Gadre: the split is every run of the four small models (all M), the held-out runs the nine
  above. Besiroglu: the points below 1e21 FLOPs, held out the ones at or above.

Scalefit fits every form as Hoffmann et al. did (summed Huber loss of log residuals, delta 1e-3,
a grid of starts; :func:`scalefit.fit.fit_law`), whereas Gadre et al. fitted by least squares
on the losses themselves (``scipy.optimize.curve_fit``): on five points and four parameters the
two objectives give slightly different laws, so predictions differ from the paper's in the
third digit; the tests pin ours and compare with the figures the paper prints.

``relative_error`` is ``|predicted - observed| / observed`` for predictions (the paper's
definition) and ``|refit - paper| / |paper|`` for estimates; ``paper`` is the paper's printed
figure for the claim: the relative error it reports for a prediction, or the estimate itself.

The package holds one module per study (:mod:`.gadre`, :mod:`.besiroglu`) and what they
share (:mod:`.claims`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import polars as pl

from ..errors import FitError
from ..load.studies import Study
from .besiroglu import BESIROGLU_HOLDOUT_FLOPS, besiroglu_points, reproduce_besiroglu2024
from .claims import LOSS_FORMS, Claim, Reproduction, huber_objective
from .gadre import GADRE_HELD_OUT, GADRE_SMALL, GADRE_SUBSET, gadre_points, reproduce_gadre2024

REPRODUCTIONS: dict[str, Callable[..., Reproduction]] = {
    "gadre2024": reproduce_gadre2024,
    "besiroglu2024": reproduce_besiroglu2024,
}
"""The reproduction of each study, by study name (a study without one has no claims)."""


def reproduce(con: Any, study: Study, *, n_bootstrap: int = 100, seed: int = 0) -> Reproduction:
    """Recompute ``study``'s claims from its runs in the store (load it first).

    Raises
    ------
    FitError
        The study has no reproduction, or its runs are not loaded.
    """
    fn = REPRODUCTIONS.get(study.name)
    if fn is None:
        raise FitError(f"{study.name}: no reproduction is registered for this study")
    return fn(con, study, n_bootstrap=n_bootstrap, seed=seed)


def settings_sha256(n_bootstrap: int, seed: int) -> str:
    """What, besides the data, shapes a reproduction (for the report's input hash)."""
    import hashlib

    import scalefit

    blob = {"n_bootstrap": n_bootstrap, "seed": seed, "version": scalefit.__version__}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


def paper_table(frame: pl.DataFrame) -> pl.DataFrame:
    """The papers' claims, one per row, as the refresh and the README print them."""
    return frame.filter(pl.col("split") == "paper").select(
        "study",
        "dataset",
        pl.coalesce("run", pl.lit("")).alias("run"),
        "quantity",
        "method",
        "observed",
        "predicted",
        "relative_error",
        "paper",
    )


def beyond_table(frame: pl.DataFrame) -> pl.DataFrame:
    """Beyond the papers: per study, dataset and form, the mean and max relative error over
    the held-out runs and how many observed values fall inside the 95% bootstrap interval of
    the prediction; best form first."""
    inside = (pl.col("observed") >= pl.col("ci_low")) & (pl.col("observed") <= pl.col("ci_high"))
    return (
        frame.filter(pl.col("split") == "beyond")
        .group_by("study", "dataset", "form", maintain_order=True)
        .agg(
            pl.col("n_train").first(),
            pl.len().alias("held_out"),
            pl.col("relative_error").mean().alias("mean_rel_error"),
            pl.col("relative_error").max().alias("max_rel_error"),
            inside.sum().cast(pl.Int64).alias("in_95ci"),
        )
        .sort("study", "dataset", "mean_rel_error", nulls_last=True)
    )


__all__ = [
    "BESIROGLU_HOLDOUT_FLOPS",
    "GADRE_HELD_OUT",
    "GADRE_SMALL",
    "GADRE_SUBSET",
    "LOSS_FORMS",
    "REPRODUCTIONS",
    "Claim",
    "Reproduction",
    "besiroglu_points",
    "beyond_table",
    "gadre_points",
    "huber_objective",
    "paper_table",
    "reproduce",
    "reproduce_besiroglu2024",
    "reproduce_gadre2024",
]
