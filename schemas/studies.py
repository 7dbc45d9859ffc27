"""Reports of the published studies: ``reproductions`` and ``overtraining``.

Report schemas (Parquet files under ``reports/``), not tables of the store: the columns and
their docs live here, as for the tables.
"""

from __future__ import annotations

import pandera.polars as pa

from ._base import DIMENSIONLESS, NATS, NO_UNIT, PARAMS, TOKENS, VARIES, unit


class ReproductionSchema(pa.DataFrameModel):
    """One claim of a study's paper, recomputed (``reports/reproductions.parquet``)."""

    study: str = pa.Field(
        metadata=unit(NO_UNIT), description="Study name (`datasets/studies/<name>.toml`)."
    )
    claim: str = pa.Field(metadata=unit(NO_UNIT), description="What is recomputed, in words.")
    dataset: str = pa.Field(
        metadata=unit(NO_UNIT),
        nullable=True,
        description="Training corpus (Gadre: c4_original, rpj, rw_original).",
    )
    run: str = pa.Field(
        metadata=unit(NO_UNIT),
        nullable=True,
        description="The study's own run name (e.g. `rpj-open_lm_1b-32.0`).",
    )
    quantity: str = pa.Field(
        metadata=unit(NO_UNIT),
        description="`loss` (nats), `downstream_error` (average top-1 error), a law parameter "
        "(`E`, `A`, ...), or `objective_at_hoffmann2022` / `objective_at_refit` "
        "(summed Huber loss).",
    )
    observed: float = pa.Field(
        metadata=unit(VARIES), nullable=True, description="Measured value of the held-out run."
    )
    predicted: float = pa.Field(
        metadata=unit(VARIES), nullable=True, description="scalefit's prediction (or refit value)."
    )
    relative_error: float = pa.Field(
        metadata=unit(DIMENSIONLESS),
        nullable=True,
        ge=0,
        description="|predicted - observed| / observed; for estimates |refit - paper| / |paper|.",
    )
    paper: float = pa.Field(
        metadata=unit(VARIES),
        nullable=True,
        description="The paper's printed figure: its relative error for a prediction, or the "
        "estimate itself.",
    )
    form: str = pa.Field(
        metadata=unit(NO_UNIT), nullable=True, description="Law form fitted (`scalefit.fit.FORMS`)."
    )
    method: str = pa.Field(
        metadata=unit(NO_UNIT),
        isin=["huber_log", "least_squares"],
        description="`huber_log`: scalefit's driver (summed Huber of log residuals, delta 1e-3); "
        "`least_squares`: the paper's own code (scipy curve_fit on the values), for comparison.",
    )
    split: str = pa.Field(
        metadata=unit(NO_UNIT),
        isin=["paper", "beyond"],
        description="`paper`: the paper's claim; `beyond`: every form on one training split.",
    )
    n_train: int = pa.Field(
        metadata=unit("points"), nullable=True, ge=1, description="Points the law was fitted to."
    )
    ci_low: float = pa.Field(
        metadata=unit(VARIES),
        nullable=True,
        description="95% bootstrap interval of `predicted`: low.",
    )
    ci_high: float = pa.Field(
        metadata=unit(VARIES),
        nullable=True,
        description="95% bootstrap interval of `predicted`: high.",
    )
    held_out: bool = pa.Field(
        metadata=unit(NO_UNIT), description="The run was not among the fitted points."
    )

    class Config:
        strict = True
        coerce = True


class OvertrainingSchema(pa.DataFrameModel):
    """A curated model's token multiplier and what the over-training testbed says it costs
    (``reports/overtraining.parquet``): Gadre et al.'s law fitted to every run of one corpus
    of their testbed (C4-eval loss), read at the model's compute ``C = 6 N D``."""

    model_id: str = pa.Field(metadata=unit(NO_UNIT), description="Model (key into `models`).")
    params: float = pa.Field(metadata=unit(PARAMS), gt=0, description="Parameters (total).")
    tokens: float = pa.Field(metadata=unit(TOKENS), gt=0, description="Training tokens.")
    tokens_per_param: float = pa.Field(metadata=unit(DIMENSIONLESS), gt=0, description="D / N.")
    multiplier: float = pa.Field(
        metadata=unit(DIMENSIONLESS),
        gt=0,
        description="M / 20 with M = D / N: multiples of the 20 tokens-per-parameter rule.",
    )
    dataset: str = pa.Field(
        metadata=unit(NO_UNIT), description="Testbed corpus the law was fitted on."
    )
    law_fit_id: str = pa.Field(
        metadata=unit(NO_UNIT), description="Fit of the over-training law (key into `fits` ids)."
    )
    loss_penalty: float = pa.Field(
        metadata=unit(NATS),
        description="L(C, M) - L(C, 20) in nats under the fitted law: the loss given up at the "
        "model's compute by training at its multiplier instead of 20 tokens per parameter.",
    )
    loss_penalty_low: float = pa.Field(
        metadata=unit(NATS), nullable=True, description="95% bootstrap interval: low."
    )
    loss_penalty_high: float = pa.Field(
        metadata=unit(NATS), nullable=True, description="95% bootstrap interval: high."
    )
    relative_penalty: float = pa.Field(
        metadata=unit(DIMENSIONLESS),
        description="L(C, M) / L(C, 20) - 1: the penalty as a fraction of the loss.",
    )
    relative_penalty_low: float = pa.Field(
        metadata=unit(DIMENSIONLESS), nullable=True, description="95% interval: low."
    )
    relative_penalty_high: float = pa.Field(
        metadata=unit(DIMENSIONLESS), nullable=True, description="95% interval: high."
    )
    extrapolated: bool = pa.Field(
        metadata=unit(NO_UNIT),
        description="The model's M lies outside the testbed's measured range (0.25-32 x 20).",
    )

    class Config:
        strict = True
        coerce = True
