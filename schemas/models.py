"""``models``: one row per published model, curated in ``datasets/*.csv``."""

from __future__ import annotations

import datetime as dt

import pandera.polars as pa
import polars as pl

from ._base import DIMENSIONLESS, FLOPS, NO_UNIT, PARAMS, TOKENS, TableSpec, is_finite, unit

ARCHITECTURES = ["dense", "moe"]
FAMILIES = [
    "GPT-3",
    "Gopher",
    "Chinchilla",
    "LLaMA",
    "Llama 2",
    "Llama 3",
    "Llama 3.1",
    "DeepSeek LLM",
    "DeepSeek-V2",
    "DeepSeek-V3",
    "MT-NLG",
    "PaLM",
]


class ModelSchema(pa.DataFrameModel):
    """A published model and its training run, as its paper or model card states it.

    Training compute follows ARCHITECTURE.md: ``C = 6 N D`` unless the source publishes a
    figure, in which case the published figure is kept and ``flops_is_estimate`` is false.
    Tokens >= params is *not* assumed: small models are often trained on fewer tokens.
    """

    model_id: str = pa.Field(
        metadata=unit(NO_UNIT),
        unique=True,
        str_matches=r"^[a-z0-9][a-z0-9.\-]*$",
        description="Key, a lowercase slug.",
    )
    family: str = pa.Field(
        metadata=unit(NO_UNIT),
        str_length={"min_value": 1},
        description="Model family, e.g. `GPT-3`, `Llama 3.1`.",
    )
    model: str = pa.Field(metadata=unit(NO_UNIT), description="Name as the source writes it.")
    params: float = pa.Field(metadata=unit(PARAMS), gt=0, description="Total parameters (count).")
    active_params: float = pa.Field(
        metadata=unit(PARAMS),
        gt=0,
        description="Parameters active per token (MoE); equal to `params` for dense models.",
    )
    non_embedding_params: float = pa.Field(
        metadata=unit(PARAMS),
        nullable=True,
        gt=0,
        description="Non-embedding parameters, where the source publishes them.",
    )
    tokens: float = pa.Field(metadata=unit(TOKENS), gt=0, description="Training tokens (count).")
    training_flops: float = pa.Field(
        metadata=unit(FLOPS), gt=0, description="Training compute (FLOPs)."
    )
    flops_is_estimate: bool = pa.Field(
        metadata=unit(NO_UNIT),
        description="True when `training_flops` is 6 * params * tokens, not a published figure.",
    )
    architecture: str = pa.Field(
        metadata=unit(NO_UNIT), isin=ARCHITECTURES, description="`dense` or `moe`."
    )
    release_date: dt.date = pa.Field(
        metadata=unit(NO_UNIT), nullable=True, description="Date of the paper or release."
    )
    n_layers: float = pa.Field(
        metadata=unit("layers"), nullable=True, gt=0, description="Transformer layers."
    )
    d_model: float = pa.Field(
        metadata=unit("dimensions"),
        nullable=True,
        gt=0,
        description="Model (residual stream) width.",
    )
    n_heads: float = pa.Field(
        metadata=unit("heads"), nullable=True, gt=0, description="Attention heads."
    )
    d_head: float = pa.Field(
        metadata=unit("dimensions"), nullable=True, gt=0, description="Width of one attention head."
    )
    batch_size_tokens: float = pa.Field(
        metadata=unit(TOKENS), nullable=True, gt=0, description="Batch size in tokens."
    )
    learning_rate: float = pa.Field(
        metadata=unit(DIMENSIONLESS), nullable=True, gt=0, description="(Peak) learning rate."
    )
    source_id: str = pa.Field(
        metadata=unit(NO_UNIT), description="Source of the row's figures (key into `sources`)."
    )
    locator: str = pa.Field(
        metadata=unit(NO_UNIT),
        str_length={"min_value": 1},
        description="Table, figure or section in the source.",
    )
    notes: str = pa.Field(
        metadata=unit(NO_UNIT),
        nullable=True,
        description="Rounding, disagreements between sources, conventions.",
    )

    class Config:
        strict = True
        coerce = True

    @pa.check(
        "params",
        "tokens",
        "training_flops",
        name="finite",
        error="must be a finite number (not NaN or infinity)",
    )
    def _finite(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return is_finite(data)

    @pa.dataframe_check(error="`active_params` must not exceed `params`")
    def active_le_total(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("active_params") <= pl.col("params"))

    @pa.dataframe_check(error="`non_embedding_params` must not exceed `params`")
    def non_embedding_le_total(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(
            pl.col("non_embedding_params").is_null()
            | (pl.col("non_embedding_params") <= pl.col("params"))
        )

    @pa.dataframe_check(error="a `dense` model must have `active_params` equal to `params`")
    def dense_is_fully_active(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(
            (pl.col("architecture") != "dense") | (pl.col("active_params") == pl.col("params"))
        )


MODELS = TableSpec(
    name="models",
    schema=ModelSchema,
    key=("model_id",),
    policy="replace",
    description="Published models and their training runs, curated from primary sources.",
)


class OptimalAllocationSchema(pa.DataFrameModel):
    """A published compute-optimal allocation, e.g. Hoffmann et al. (2022) Table 3."""

    allocation_id: str = pa.Field(unique=True, description="Key.")
    source_id: str = pa.Field(description="Source (key into `sources`).")
    locator: str = pa.Field(description="Table, figure or section in the source.")
    approach: str = pa.Field(description="Which estimation approach of the source produced it.")
    params: float = pa.Field(gt=0, description="Parameters (count).")
    flops: float = pa.Field(gt=0, description="Compute-optimal training FLOPs for `params`.")
    flops_gopher_units: float = pa.Field(
        nullable=True, gt=0, description="The same compute in units of Gopher's training FLOPs."
    )
    tokens: float = pa.Field(gt=0, description="Compute-optimal training tokens.")
    notes: str = pa.Field(nullable=True, description="Notes.")

    class Config:
        strict = True
        coerce = True


OPTIMAL_ALLOCATIONS = TableSpec(
    name="optimal_allocations",
    schema=OptimalAllocationSchema,
    key=("allocation_id",),
    policy="replace",
    description="Published compute-optimal (params, FLOPs, tokens) tables.",
)
