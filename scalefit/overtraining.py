"""What over-training costs: each curated model's token multiplier against what Gadre et
al.'s over-training testbed measured.

For a model with ``N`` parameters trained on ``D`` tokens, ``M = D / N`` tokens per parameter
and ``multiplier = M / 20`` (multiples of the 20 tokens-per-parameter rule; Llama 3 8B on 15T
tokens is about 94x). The testbed's over-training law (:class:`scalefit.laws.OvertrainingLaw`,
fitted to every run of one corpus, C4-eval loss) gives the loss at compute ``C = 6 N D`` and any
``M``; the *loss penalty* is ``L(C, M) - L(C, 20)``: the loss given up, at the model's own
compute, by spending it on ``M`` tokens per parameter rather than 20. Its relative form
``L(C, M) / L(C, 20) - 1`` does not depend on the absolute loss scale of the testbed's corpus.
Intervals are percentile bootstrap intervals over the law's refits.

The testbed spans ``M`` from 5 to 640 (0.25x to 32x) and 11M to 6.9B parameters: a model far
outside is an extrapolation of the law (flagged ``extrapolated``), and the absolute penalty is
in the testbed's nats (its tokenizer, its corpora), not the model's.

This report is separate from ``comparisons`` on purpose (its columns are being renamed); it is
keyed by ``model_id`` so that it joins with them.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import polars as pl

from . import fit as fitting
from . import store
from .laws import OvertrainingLaw

RULE_TOKENS_PER_PARAM = 20.0
"""The reference: the "20 tokens per parameter" rule of thumb (Gadre et al.'s M = 20)."""

TESTBED_RANGE = (5.0, 640.0)
"""Tokens per parameter the testbed measured (0.25x to 32x of 20)."""


def fit_testbed(points: pl.DataFrame, *, n_bootstrap: int = 200, seed: int = 0) -> dict[str, Any]:
    """The over-training law fitted to every run of each corpus of the testbed.

    Parameters
    ----------
    points
        :func:`scalefit.reproduce.gadre_points`: ``dataset``, ``params``, ``tokens``, ``loss``.

    Returns
    -------
    dict
        Corpus -> :class:`scalefit.fit.LawFit`.
    """
    out = {}
    for dataset in sorted(points["dataset"].unique().to_list()):
        data = points.filter(pl.col("dataset") == dataset).select("run", "params", "tokens", "loss")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fitting.ConvergenceWarning)
            out[dataset] = fitting.fit_law(
                data.rename({"run": "run_id"}),
                law="overtraining",
                n_bootstrap=n_bootstrap,
                seed=seed,
            )
    return out


def loss_penalty(law: OvertrainingLaw, params: Any, tokens: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(L(C, M) - L(C, 20), L(C, M) / L(C, 20) - 1)`` at ``C = 6 N D``, ``M = D / N``."""
    n, d = np.asarray(params, float), np.asarray(tokens, float)
    c = 6.0 * n * d
    at_m = law.loss(n, d)
    at_rule = law.loss_at_multiplier(c, RULE_TOKENS_PER_PARAM)
    return at_m - at_rule, at_m / at_rule - 1.0


def overtraining_costs(
    models: pl.DataFrame, fits: dict[str, Any], *, confidence_level: float = 0.95
) -> pl.DataFrame:
    """One row per model and testbed corpus: multiplier and loss penalty with intervals
    (columns: ``schemas/studies.py``, ``OvertrainingSchema``).

    Parameters
    ----------
    models
        ``model_id``, ``params``, ``tokens`` (rows without tokens are skipped).
    fits
        :func:`fit_testbed`'s result.
    """
    from .schemas.studies import OvertrainingSchema

    models = models.filter(pl.col("tokens").is_not_null() & pl.col("params").is_not_null())
    n, d = models["params"].to_numpy(), models["tokens"].to_numpy()
    tpp = d / n
    q = (1.0 - confidence_level) / 2.0
    frames = []
    for dataset, fitted in fits.items():
        pen, rel = loss_penalty(fitted.law, n, d)
        low = {k: np.full(n.shape, np.nan) for k in ("pen", "rel")}
        high = {k: np.full(n.shape, np.nan) for k in ("pen", "rel")}
        samples = fitted.sample_laws()
        if samples:
            with np.errstate(all="ignore"):
                draws = [loss_penalty(law, n, d) for law in samples]
            for j, k in enumerate(("pen", "rel")):
                arr = np.array([dr[j] for dr in draws])
                low[k] = np.nanquantile(arr, q, axis=0)
                high[k] = np.nanquantile(arr, 1 - q, axis=0)
        frames.append(
            pl.DataFrame(
                {
                    "model_id": models["model_id"],
                    "params": n,
                    "tokens": d,
                    "tokens_per_param": tpp,
                    "multiplier": tpp / RULE_TOKENS_PER_PARAM,
                    "dataset": dataset,
                    "law_fit_id": fitted.fit_id,
                    "loss_penalty": pen,
                    "loss_penalty_low": low["pen"],
                    "loss_penalty_high": high["pen"],
                    "relative_penalty": rel,
                    "relative_penalty_low": low["rel"],
                    "relative_penalty_high": high["rel"],
                    "extrapolated": (tpp < TESTBED_RANGE[0]) | (tpp > TESTBED_RANGE[1]),
                }
            )
        )
    cols = list(OvertrainingSchema.to_schema().columns)
    if not frames:
        return pl.DataFrame(schema=dict.fromkeys(cols, pl.String)).select(cols)
    out = pl.concat(frames).select(cols).sort("model_id", "dataset")
    OvertrainingSchema.validate(out)
    return out


def curated_models(con: Any) -> pl.DataFrame:
    """``model_id``, ``params``, ``tokens`` of every curated model with both."""
    return store.query(
        con,
        "SELECT model_id, params, tokens FROM models "
        "WHERE params IS NOT NULL AND tokens IS NOT NULL ORDER BY model_id",
    )


__all__ = [
    "RULE_TOKENS_PER_PARAM",
    "TESTBED_RANGE",
    "curated_models",
    "fit_testbed",
    "loss_penalty",
    "overtraining_costs",
]
