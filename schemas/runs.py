"""``runs`` and ``observations``: training runs and their loss measurements."""

from __future__ import annotations

import pandera.polars as pa
import polars as pl

from ._base import TableSpec, is_finite
from .vocabulary import SCHEDULES


class RunSchema(pa.DataFrameModel):
    """A training run: a user's, or a published loss point such as a paper's sweep."""

    run_id: str = pa.Field(unique=True, str_length={"min_value": 1}, description="Key.")
    project: str = pa.Field(
        description="Project the run belongs to (`--project`, default `default`)."
    )
    params: float = pa.Field(gt=0, description="Parameters (count).")
    params_method: str = pa.Field(
        isin=["given", "config_12ld2"],
        description="How `params` was obtained: given, or 12 n_layer d_model^2 from a config.",
    )
    tokens: float = pa.Field(
        nullable=True, ge=0, description="Tokens seen at the last observation."
    )
    flops: float = pa.Field(
        nullable=True, gt=0, description="Training FLOPs at the last observation."
    )
    unique_tokens: float = pa.Field(
        nullable=True, gt=0, description="Unique tokens in the data (if known)."
    )
    tokens_per_step: float = pa.Field(nullable=True, gt=0, description="Tokens per optimizer step.")
    config: str = pa.Field(nullable=True, description="Run configuration, a JSON object.")
    source_id: str = pa.Field(nullable=True, description="Source (key into `sources`).")
    ingest_id: str = pa.Field(nullable=True, description="Ingest that last wrote the run.")
    # Last: a store made before it gains it by ADD COLUMN, which appends.
    schedule: str = pa.Field(
        nullable=True,
        isin=list(SCHEDULES),
        description=(
            "Learning-rate schedule, if declared: `constant`, `wsd` or `cosine` (run.json or "
            "`ingest --schedule`; null: unknown). It says which checkpoints of the curve stand "
            "for a shorter run: an intermediate checkpoint of a cosine-decay run is a biased "
            "(too high) estimate of the final loss of a run trained to that step, whose rate "
            "would have decayed by then (Hoffmann et al. 2022); checkpoints of a constant or "
            "WSD schedule approximate it (Hägele et al. 2024)."
        ),
    )

    class Config:
        strict = True
        coerce = True

    @pa.check("params", name="finite", error="must be a finite number (not NaN or infinity)")
    def _finite(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return is_finite(data)


RUNS = TableSpec(
    name="runs",
    schema=RunSchema,
    key=("run_id",),
    policy="upsert",
    description="Training runs (user logs and published sweeps).",
)


class ObservationSchema(pa.DataFrameModel):
    """One loss measurement of a run, in nats."""

    run_id: str = pa.Field(description="Run (key into `runs`).")
    step: int = pa.Field(ge=0, description="Optimizer step.")
    # >= 0, not > 0: a trainer logs step 0 with tokens = 0 (and flops = 0); only the loss,
    # whose log is fitted, has to be positive.
    tokens: float = pa.Field(nullable=True, ge=0, description="Tokens seen at this step.")
    flops: float = pa.Field(nullable=True, ge=0, description="Training FLOPs spent at this step.")
    metric: str = pa.Field(
        str_length={"min_value": 1}, description="e.g. `train_loss`, `eval_loss`."
    )
    value: float = pa.Field(
        description=(
            "Measured value: a loss in nats (> 0, since laws are fitted to its log), or an "
            "accuracy in [0, 1] for a metric named `accuracy:<task>` (a study's downstream "
            "evaluations)."
        ),
    )
    ingest_id: str = pa.Field(nullable=True, description="Ingest that wrote the row.")

    class Config:
        strict = True
        coerce = True
        unique = ("run_id", "metric", "step")

    @pa.check(
        "tokens", "value", name="finite", error="must be a finite number (not NaN or infinity)"
    )
    def _finite(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return is_finite(data)

    @pa.check(
        "value",
        name="value_range",
        error="must be > 0 (a loss) or in [0, 1] (an `accuracy:` metric)",
    )
    def _value_range(cls, data: pa.PolarsData) -> pl.LazyFrame:
        value = pl.col("value")
        accuracy = pl.col("metric").str.starts_with("accuracy:")
        return data.lazyframe.select(
            pl.when(accuracy).then((value >= 0) & (value <= 1)).otherwise(value > 0)
        )


OBSERVATIONS = TableSpec(
    name="observations",
    schema=ObservationSchema,
    key=("run_id", "metric", "step"),
    policy="upsert",
    description="Loss measurements of runs.",
    # Millions of rows per ingest: a PRIMARY KEY index cost as much as reading the file
    # (benchmarks/RESULTS.md, "Ingest speed"); scalefit's write paths keep the key unique.
    enforce_key_in_db=False,
)
