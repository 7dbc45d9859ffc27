"""``comparison_results``: every published model against every law with an allocation.

The public ``comparisons`` view joins it with ``models`` for names and families.
"""

from __future__ import annotations

import pandera.polars as pa

from ._base import DIMENSIONLESS, FLOPS, NATS, NO_UNIT, PARAMS, TOKENS, TableSpec, unit


class ComparisonSchema(pa.DataFrameModel):
    """One model under one law.

    ``flops`` is the model's compute, at which the law's optimum ``(N_opt, D_opt)`` is taken:
    the published training FLOPs where the model's source gives them, else ``6 N D`` with
    ``N`` the total parameters (`flops_source` says which; `flops_6nd` is always there). The
    over-training measures (`token_excess`, `size_ratio`, `tokens_per_param_ratio`,
    `loss_cost`) are defined here, once. The ``*_active`` columns repeat them with the
    parameters active per token, at ``6 N_active D`` (they equal the others for dense models
    without published FLOPs). Laws were fitted on dense models: read MoE rows with that in mind.
    """

    model_id: str = pa.Field(metadata=unit(NO_UNIT), description="Model (key into `models`).")
    law_id: str = pa.Field(metadata=unit(NO_UNIT), description="Law (key into `laws`).")
    law_form: str = pa.Field(metadata=unit(NO_UNIT), description="Form of the law.")
    flops: float = pa.Field(
        metadata=unit(FLOPS),
        gt=0,
        description=(
            "The model's training compute C (FLOPs), at which the law's optimum is taken: the "
            "published figure where there is one, else 6 * params * tokens (`flops_source`)."
        ),
    )
    flops_source: str = pa.Field(
        metadata=unit(NO_UNIT),
        isin=["published", "6ND"],
        description=(
            "Where `flops` comes from: `published` (the model's source states its training "
            "FLOPs) or `6ND` (6 * params * tokens, no attention FLOPs)."
        ),
    )
    flops_6nd: float = pa.Field(
        metadata=unit(FLOPS), gt=0, description="6 * params * tokens (FLOPs)."
    )
    tokens_per_param: float = pa.Field(
        metadata=unit(DIMENSIONLESS), gt=0, description="tokens / params (total parameters)."
    )
    tokens_per_active_param: float = pa.Field(
        metadata=unit(DIMENSIONLESS), gt=0, description="tokens / active_params."
    )
    optimal_params: float = pa.Field(
        metadata=unit(PARAMS),
        gt=0,
        description="N_opt: the law's compute-optimal parameters at `flops`.",
    )
    optimal_tokens: float = pa.Field(
        metadata=unit(TOKENS),
        gt=0,
        description="D_opt: the law's compute-optimal tokens at `flops`.",
    )
    optimal_tokens_per_param: float = pa.Field(
        metadata=unit(DIMENSIONLESS), gt=0, description="optimal_tokens / optimal_params."
    )
    token_excess: float = pa.Field(
        metadata=unit(DIMENSIONLESS),
        gt=0,
        description=(
            "Token excess D / D_opt at the model's compute: 10 means trained on 10x the "
            "compute-optimal tokens; below 1, fewer."
        ),
    )
    size_ratio: float = pa.Field(
        metadata=unit(DIMENSIONLESS),
        gt=0,
        description=(
            "Size ratio N / N_opt at the model's compute: below 1, smaller than compute-optimal."
        ),
    )
    tokens_per_param_ratio: float = pa.Field(
        metadata=unit(DIMENSIONLESS),
        gt=0,
        description=(
            "Ratio of ratios (D / N) / (D_opt / N_opt) at the model's compute: "
            "token_excess / size_ratio, which is token_excess squared when C = 6ND (Gadre et "
            "al.'s multiplier M = D/N against 20 is this reading under the 20-tokens rule)."
        ),
    )
    loss_cost: float = pa.Field(
        metadata=unit(NATS),
        nullable=True,
        description=(
            "Loss cost of the model's allocation, nats: L(N, D) - L(N_opt, D_opt) under the "
            "law, with the optimum for `flops_6nd` (the law's own accounting, C = 6ND, so both "
            "points spend the same compute): 0 at the optimum, never negative. Null where the "
            "law has no loss."
        ),
    )
    flops_active: float = pa.Field(
        metadata=unit(FLOPS), gt=0, description="6 * active_params * tokens (FLOPs)."
    )
    optimal_params_active: float = pa.Field(
        metadata=unit(PARAMS), gt=0, description="Optimal parameters at `flops_active`."
    )
    optimal_tokens_active: float = pa.Field(
        metadata=unit(TOKENS), gt=0, description="Optimal tokens at `flops_active`."
    )
    token_excess_active: float = pa.Field(
        metadata=unit(DIMENSIONLESS),
        gt=0,
        description="tokens / optimal_tokens_active (token excess at `flops_active`).",
    )
    size_ratio_active: float = pa.Field(
        metadata=unit(DIMENSIONLESS),
        gt=0,
        description="active_params / optimal_params_active (size ratio at `flops_active`).",
    )
    tokens_per_param_ratio_active: float = pa.Field(
        metadata=unit(DIMENSIONLESS),
        gt=0,
        description="tokens_per_active_param / optimal tokens per param at `flops_active`.",
    )
    predicted_loss: float = pa.Field(
        metadata=unit(NATS),
        nullable=True,
        gt=0,
        description="The law's loss L(N, D) at (params, tokens), nats.",
    )
    optimal_loss: float = pa.Field(
        metadata=unit(NATS),
        nullable=True,
        gt=0,
        description="The law's loss L(N_opt, D_opt) at its optimum for `flops`, nats.",
    )
    param_convention: str = pa.Field(
        metadata=unit(NO_UNIT),
        isin=["total"],
        description=(
            "Parameter count behind `params` and every ratio: `total` (all parameters, as "
            "Hoffmann et al.); Kaplan et al. count non-embedding parameters."
        ),
    )
    break_even_inference_tokens: float = pa.Field(
        metadata=unit(TOKENS),
        nullable=True,
        ge=0,
        description=(
            "Lifetime inference tokens at which `params` is the inference-aware optimum "
            "(Sardana et al. 2023) for `predicted_loss`: the demand that justifies the "
            "over-training. Null for laws without a loss, and for models larger than "
            "compute-optimal (no demand makes them optimal)."
        ),
    )
    break_even_inference_tokens_active: float = pa.Field(
        metadata=unit(TOKENS),
        nullable=True,
        ge=0,
        description="`break_even_inference_tokens` with the active parameters (MoE).",
    )
    tokens_per_non_embedding_param: float = pa.Field(
        metadata=unit(DIMENSIONLESS),
        nullable=True,
        gt=0,
        description="tokens / non_embedding_params, where the source publishes the count.",
    )
    tokens_per_param_ratio_non_embedding: float = pa.Field(
        metadata=unit(DIMENSIONLESS),
        nullable=True,
        gt=0,
        description=(
            "tokens_per_param_ratio with non-embedding parameters as N (and C = 6 N D), "
            "where the count is published."
        ),
    )
    published_flops_over_6nd: float = pa.Field(
        metadata=unit(DIMENSIONLESS),
        nullable=True,
        gt=0,
        description=(
            "Published training FLOPs / (6 * active_params * tokens); null where no figure "
            "is published (`flops_is_estimate`)."
        ),
    )
    token_excess_6nd: float = pa.Field(
        metadata=unit(DIMENSIONLESS),
        gt=0,
        description=(
            "token_excess with the optimum taken at `flops_6nd` (equals `token_excess` where "
            "`flops_source` is `6ND`)."
        ),
    )
    unique_tokens: float = pa.Field(
        metadata=unit(TOKENS),
        nullable=True,
        gt=0,
        description=(
            "Unique training tokens, where the model's paper states them (no curated model "
            "does yet, so this and the next columns are null)."
        ),
    )
    epochs: float = pa.Field(
        metadata=unit(DIMENSIONLESS), nullable=True, gt=0, description="tokens / unique_tokens."
    )
    effective_tokens: float = pa.Field(
        metadata=unit(TOKENS),
        nullable=True,
        gt=0,
        description="Effective data D' (Muennighoff et al. 2023, Eq. (5)) with R_D* = 15.39.",
    )
    data_constrained_loss: float = pa.Field(
        metadata=unit(NATS),
        nullable=True,
        gt=0,
        description=(
            "The law's loss with repetition discounted (Muennighoff et al.'s decay constants); "
            "chinchilla-form laws only."
        ),
    )
    notes: str = pa.Field(
        metadata=unit(NO_UNIT), nullable=True, description="Caveats of the row (e.g. MoE)."
    )

    class Config:
        strict = True
        coerce = True
        unique = ("model_id", "law_id")


COMPARISON_RESULTS = TableSpec(
    name="comparison_results",
    schema=ComparisonSchema,
    key=("model_id", "law_id"),
    policy="replace",
    description="Models against laws; read it through the `comparisons` view.",
)
