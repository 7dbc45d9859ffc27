"""Where every published model sits against compute-optimal training, under every law.

Definitions (ARCHITECTURE.md; written here once):

- Tokens per parameter: ``D / N``; for a MoE model both against total and against active
  parameters.
- Compute ``C``: the model's published training FLOPs where its source gives them, else
  ``6 N D`` (``flops_source`` says which; ``flops_6nd`` is always there).
- Over-training of a model trained on ``D`` tokens with ``N`` parameters, under a law, with
  ``(N_opt, D_opt)`` the law's compute-optimal allocation at the model's compute ``C``, as four
  separately named measures (their one definition is the ``comparisons`` schema,
  ``schemas/comparisons.py``): ``token_excess = D / D_opt``, ``size_ratio = N / N_opt``,
  ``tokens_per_param_ratio = (D / N) / (D_opt / N_opt)`` (= token_excess squared when
  ``C = 6 N D``; Gadre et al.'s multiplier against 20 is this reading under the 20-tokens rule)
  and ``loss_cost = L(N, D) - L(N_opt, D_opt)`` with the optimum for ``6 N D`` (the law's
  own compute accounting, so that both points spend the same compute; laws with a loss only).

The "20 tokens per parameter" rule of thumb is one such law (``rule_20_tokens_per_param``)
and is reported alongside the fitted laws, never instead of them.

Beyond the compute-optimal view, each row carries:

- the break-even inference demand (:func:`scalefit.laws.break_even_inference_tokens`): the
  lifetime inference tokens at which the model's size is the inference-aware optimum (Sardana
  et al. 2023) for the loss the law predicts for it;
- where a model's paper states its unique tokens (``unique_tokens`` in the models frame; no
  curated model does yet), its epochs, effective data and data-constrained loss (Muennighoff
  et al. 2023, with their published decay constants);
- the counting conventions used (``param_convention = "total"``, ``flops_source``), and the
  ratio of ratios under non-embedding parameters, and the token excess at ``6 N D``, where the
  curated data have those figures.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np
import polars as pl

from . import store
from .errors import AllocationUnavailableError
from .laws import (
    MUENNIGHOFF_R_D_STAR,
    Law,
    LossLaw,
    break_even_inference_tokens,
    data_constrained_form,
    effective_tokens,
    law_from_parameters,
    training_flops,
)
from .load.validate import empty_frame
from .schemas import TABLES, ComparisonSchema

log = logging.getLogger(__name__)

VIEW_SQL = """
CREATE OR REPLACE VIEW comparisons AS
SELECT m.family, m.model, m.architecture, m.params, m.active_params, m.tokens,
       m.training_flops, m.flops_is_estimate, c.*, l.caveat AS law_caveat
FROM comparison_results AS c
JOIN models AS m USING (model_id)
LEFT JOIN laws AS l USING (law_id)
"""
"""The public ``comparisons`` view: models x laws, with the models' names and counts and the
law's caveat (``laws.caveat``: print it wherever the row is shown)."""


def allocating_laws(laws: pl.DataFrame) -> Iterator[tuple[dict[str, Any], Law]]:
    """``(row, law)`` for every ``laws`` row whose law can allocate compute.

    Every law that gives ``N_opt(C)`` and ``D_opt(C)`` is included, with or without a loss
    (allocation laws and rules of thumb have null loss columns). Laws published with
    exponents only (Kaplan's ``N_opt ~ C^0.73``, Hoffmann's approach exponents) have no
    allocation to compare against and are skipped; :func:`not_compared` says why.
    """
    for row in laws.iter_rows(named=True):
        law = law_from_parameters(row["form"], json.loads(row["parameters"]))
        try:
            law.allocation(1e21)
        except AllocationUnavailableError:
            log.debug("law %s (%s) has no allocation; skipped", row["law_id"], row["form"])
            continue
        yield row, law


def not_compared(laws: pl.DataFrame) -> dict[str, str]:
    """Law id -> why the law has no rows in the comparisons and the frontier (it cannot
    allocate compute: e.g. it publishes the exponents of its optimum without a
    coefficient), for every ``laws`` row :func:`allocating_laws` skips."""
    out: dict[str, str] = {}
    for row in laws.iter_rows(named=True):
        law = law_from_parameters(row["form"], json.loads(row["parameters"]))
        try:
            law.allocation(1e21)
        except AllocationUnavailableError as exc:
            out[row["law_id"]] = str(exc)
    return out


MOE_NOTE = (
    "MoE: ratios against total (tokens_per_param, token_excess, size_ratio, "
    "tokens_per_param_ratio) and active (*_active) parameters; these laws were fitted on dense "
    "models"
)


def _column(models: pl.DataFrame, name: str) -> np.ndarray:
    """A float column of ``models``, all NaN when absent (optional inputs)."""
    if name not in models.columns:
        return np.full(models.height, np.nan)
    return models[name].cast(pl.Float64).fill_null(np.nan).to_numpy().astype(float)


def _positive_or_nan(x: Any) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    return np.where(np.isfinite(x) & (x > 0), x, np.nan)


def _tokens_per_param_ratio(
    law: Law, params: np.ndarray, tokens: np.ndarray, flops: np.ndarray
) -> np.ndarray:
    """``(D/N) / (D_opt/N_opt)`` with the optimum taken at ``flops`` (NaN where missing)."""
    ok = np.isfinite(flops) & np.isfinite(params)
    out = np.full(params.size, np.nan)
    if ok.any():
        opt = law.allocation(flops[ok])
        out[ok] = (tokens[ok] / params[ok]) / np.asarray(opt.tokens_per_param, dtype=float)
    return out


def compare_models(models: pl.DataFrame, laws: pl.DataFrame) -> pl.DataFrame:
    """Every model against every law that has a compute-optimal allocation.

    Parameters
    ----------
    models
        Rows of the ``models`` table (``model_id``, ``params``, ``active_params``, ``tokens``;
        optional ``non_embedding_params``, ``training_flops``, ``flops_is_estimate``,
        ``architecture`` and ``unique_tokens``, whose absence leaves their columns null).
    laws
        Rows of the ``laws`` table (``law_id``, ``form``, ``parameters`` as JSON).

    Returns
    -------
    polars.DataFrame
        Rows shaped like ``comparison_results`` (see ``schemas/comparisons.py``).
    """
    inputs = _Models.of(models)
    frames = [
        _law_frame(inputs, row["law_id"], row["form"], law) for row, law in allocating_laws(laws)
    ]
    if not frames:
        return empty_frame(ComparisonSchema)
    return pl.concat(frames)


@dataclass(frozen=True)
class _Models:
    """The models' counts as float arrays (NaN where unknown), and what follows from them
    under no law: compute, epochs and effective data."""

    ids: pl.Series
    n: np.ndarray
    n_active: np.ndarray
    d: np.ndarray
    n_ne: np.ndarray
    """Non-embedding parameters."""
    unique: np.ndarray
    """Unique tokens (a repeated corpus)."""
    published: np.ndarray
    """Training FLOPs the model's source gives (not an estimate)."""
    notes: list[str | None]
    flops_6nd: np.ndarray
    flops: np.ndarray
    """Published where known, else ``6 N D``."""
    flops_source: np.ndarray
    epochs: np.ndarray
    effective_tokens: np.ndarray

    @classmethod
    def of(cls, models: pl.DataFrame) -> _Models:
        n = models["params"].to_numpy().astype(float)
        d = models["tokens"].to_numpy().astype(float)
        unique = _column(models, "unique_tokens")
        published = _column(models, "training_flops")
        if "flops_is_estimate" in models.columns:
            estimate = models["flops_is_estimate"].fill_null(True).to_numpy().astype(bool)
            published = np.where(estimate, np.nan, published)
        else:
            published = np.full(n.size, np.nan)
        if "architecture" in models.columns:
            notes = [MOE_NOTE if a == "moe" else None for a in models["architecture"].to_list()]
        else:
            notes = [None] * n.size
        has_unique = np.isfinite(unique)
        d_eff = np.full(n.size, np.nan)
        if has_unique.any():
            d_eff[has_unique] = effective_tokens(
                d[has_unique], unique[has_unique], MUENNIGHOFF_R_D_STAR
            )
        flops_6nd = training_flops(n, d)
        has_published = np.isfinite(published)
        return cls(
            ids=models["model_id"],
            n=n,
            n_active=models["active_params"].to_numpy().astype(float),
            d=d,
            n_ne=_column(models, "non_embedding_params"),
            unique=unique,
            published=published,
            notes=notes,
            flops_6nd=flops_6nd,
            flops=np.where(has_published, published, flops_6nd),
            flops_source=np.where(has_published, "published", "6ND"),
            epochs=np.where(has_unique, d / unique, np.nan),
            effective_tokens=d_eff,
        )


def _law_frame(m: _Models, law_id: str, form: str, law: Law) -> pl.DataFrame:
    """The rows of ``comparison_results`` of every model under one law."""
    n, n_active, d = m.n, m.n_active, m.d
    flops_active = training_flops(n_active, d)
    opt = law.allocation(m.flops)
    opt_active = law.allocation(flops_active)
    opt_n = np.asarray(opt.params, dtype=float)
    opt_d = np.asarray(opt.tokens, dtype=float)
    opt_tpp = opt_d / opt_n
    opt_active_d = np.asarray(opt_active.tokens, dtype=float)
    with np.errstate(all="ignore"):
        beyond = _beyond_allocation(m, law, opt_n, opt_d)
    return pl.DataFrame(
        {
            "model_id": m.ids,
            "law_id": law_id,
            "law_form": form,
            "flops": m.flops,
            "flops_source": m.flops_source,
            "flops_6nd": m.flops_6nd,
            "tokens_per_param": d / n,
            "tokens_per_active_param": d / n_active,
            "optimal_params": opt_n,
            "optimal_tokens": opt_d,
            "optimal_tokens_per_param": opt_tpp,
            "token_excess": d / opt_d,
            "size_ratio": n / opt_n,
            "tokens_per_param_ratio": (d / n) / opt_tpp,
            "loss_cost": beyond["loss_cost"],
            "flops_active": flops_active,
            "optimal_params_active": opt_active.params,
            "optimal_tokens_active": opt_active_d,
            "token_excess_active": d / opt_active_d,
            "size_ratio_active": n_active / np.asarray(opt_active.params, dtype=float),
            "tokens_per_param_ratio_active": (d / n_active)
            / np.asarray(opt_active.tokens_per_param),
            "predicted_loss": beyond["predicted_loss"],
            "optimal_loss": beyond["optimal_loss"],
            "param_convention": "total",
            "break_even_inference_tokens": beyond["break_even_inference_tokens"],
            "break_even_inference_tokens_active": beyond["break_even_inference_tokens_active"],
            "tokens_per_non_embedding_param": d / m.n_ne,
            "tokens_per_param_ratio_non_embedding": beyond["tokens_per_param_ratio_non_embedding"],
            "published_flops_over_6nd": m.published / flops_active,
            "token_excess_6nd": beyond["token_excess_6nd"],
            "unique_tokens": m.unique,
            "epochs": m.epochs,
            "effective_tokens": m.effective_tokens,
            "data_constrained_loss": beyond["data_constrained_loss"],
            "notes": pl.Series(m.notes, dtype=pl.String),
        },
    ).fill_nan(None)


def _beyond_allocation(
    m: _Models, law: Law, opt_n: np.ndarray, opt_d: np.ndarray
) -> dict[str, np.ndarray]:
    """The measures that need more of ``law`` than its allocation at the models' compute
    (``opt_n``, ``opt_d``): losses (NaN for a law without one), break-even inference
    demand, data-constrained loss, and the readings at non-embedding parameters and at
    ``6 N D``; by their ``comparison_results`` column names."""
    n, n_active, d, nan = m.n, m.n_active, m.d, np.full(m.n.size, np.nan)
    out = dict.fromkeys(
        (
            "break_even_inference_tokens",
            "break_even_inference_tokens_active",
            "predicted_loss",
            "optimal_loss",
            "loss_cost",
        ),
        nan,
    )
    opt_6nd = law.allocation(m.flops_6nd)
    if isinstance(law, LossLaw):
        predicted = np.asarray(law.loss(n, d), dtype=float)
        out = {
            "break_even_inference_tokens": _positive_or_nan(break_even_inference_tokens(law, n, d)),
            "break_even_inference_tokens_active": _positive_or_nan(
                break_even_inference_tokens(law, n_active, d)
            ),
            "predicted_loss": predicted,
            "optimal_loss": np.asarray(law.loss(opt_n, opt_d), dtype=float),
            # the loss cost compares (N, D) with the optimum on its own iso-compute curve
            # N D = C / 6, in the law's accounting: never negative
            "loss_cost": predicted
            - np.asarray(law.loss(opt_6nd.params, opt_6nd.tokens), dtype=float),
        }
    dc_loss = np.full(n.size, np.nan)
    dc_law = data_constrained_form(law)
    has_unique = np.isfinite(m.unique)
    if dc_law is not None and has_unique.any():
        dc_loss[has_unique] = dc_law.loss(n[has_unique], d[has_unique], m.unique[has_unique])
    ratio_ne = _tokens_per_param_ratio(law, m.n_ne, d, training_flops(m.n_ne, d))
    return {
        **out,
        "data_constrained_loss": dc_loss,
        "tokens_per_param_ratio_non_embedding": ratio_ne,
        "token_excess_6nd": d / np.asarray(opt_6nd.tokens, dtype=float),
    }


VIEW_MODEL_COLUMNS = (
    "family",
    "model",
    "architecture",
    "params",
    "active_params",
    "tokens",
    "training_flops",
    "flops_is_estimate",
)
"""Columns of ``models`` the ``comparisons`` view puts first (:data:`VIEW_SQL`)."""

MODELS_SQL = (
    "SELECT model_id, family, model, params, active_params, tokens, non_embedding_params, "
    "training_flops, flops_is_estimate, architecture FROM models ORDER BY model_id"
)
"""The models' columns the comparisons need (inputs and the view's names and counts)."""

LAWS_SQL = "SELECT law_id, form, parameters, caveat FROM laws ORDER BY law_id"
"""The laws' columns the comparisons and the frontier need."""


def comparisons_view(models: pl.DataFrame, laws: pl.DataFrame) -> pl.DataFrame:
    """The rows of the ``comparisons`` view computed in memory from ``models`` and ``laws``
    (:data:`MODELS_SQL`, :data:`LAWS_SQL`): the same columns as :data:`VIEW_SQL`, without
    reading ``comparison_results``, so a report written from it always agrees with the laws
    it was given (e.g. a law saved by ``scalefit fit --save`` since the last refresh)."""
    result = compare_models(models, laws).with_columns(
        pl.col("model_id", "law_id").cast(pl.String)  # typed even when empty
    )
    caveats = laws.select("law_id", pl.col("caveat").cast(pl.String).alias("law_caveat"))
    return (
        result.join(models.select("model_id", *VIEW_MODEL_COLUMNS), on="model_id", how="left")
        .join(caveats, on="law_id", how="left")
        .select(*VIEW_MODEL_COLUMNS, *result.columns, "law_caveat")
    )


FRONTIER_FLOPS = np.logspace(18, 27, 37)
"""Default compute grid of the frontier report: 1e18 to 1e27 FLOPs, four points a decade."""


def frontier(laws: pl.DataFrame, flops: np.ndarray = FRONTIER_FLOPS) -> pl.DataFrame:
    """Each law's compute-optimal parameters, tokens, tokens per parameter and loss over a
    grid of compute budgets, with the law's caveat (``caveat`` of ``laws``, when given).

    Parameters
    ----------
    laws
        Rows of the ``laws`` table (``law_id``, ``form``, ``parameters``; optional
        ``caveat``).
    flops
        Compute budgets (FLOPs); default :data:`FRONTIER_FLOPS`.
    """
    flops = np.asarray(flops, dtype=float)
    frames = []
    for row, law in allocating_laws(laws):
        opt = law.allocation(flops)
        frames.append(
            pl.DataFrame(
                {
                    "law_id": row["law_id"],
                    "law_form": row["form"],
                    "flops": flops,
                    "optimal_params": np.asarray(opt.params, dtype=float),
                    "optimal_tokens": np.asarray(opt.tokens, dtype=float),
                    "tokens_per_param": np.asarray(opt.tokens_per_param, dtype=float),
                    "loss": law.loss(opt.params, opt.tokens) if isinstance(law, LossLaw) else None,
                    "law_caveat": row.get("caveat"),
                },
                schema_overrides={"loss": pl.Float64, "law_caveat": pl.String},
            )
        )
    if not frames:
        return pl.DataFrame(
            schema={
                "law_id": pl.String,
                "law_form": pl.String,
                "flops": pl.Float64,
                "optimal_params": pl.Float64,
                "optimal_tokens": pl.Float64,
                "tokens_per_param": pl.Float64,
                "loss": pl.Float64,
                "law_caveat": pl.String,
            }
        )
    return pl.concat(frames)


def refresh_comparisons(con: duckdb.DuckDBPyConnection) -> int:
    """Recompute ``comparison_results`` from the store's models and laws, in one transaction,
    and (re)create the ``comparisons`` view. Returns the number of rows."""
    models = store.query(con, MODELS_SQL)
    laws = store.query(con, LAWS_SQL)
    result = compare_models(models, laws)
    with store.transaction(con):
        _recreate_if_columns_changed(con)
        store.write(con, "comparison_results", result)
        store.run(con, VIEW_SQL)
    return result.height


def _recreate_if_columns_changed(con: duckdb.DuckDBPyConnection) -> None:
    """Drop and recreate ``comparison_results`` when a store made by an older scalefit has
    other columns (e.g. the former ``overtraining_factor``, NOT NULL): the table is derived,
    recomputed in full on every refresh, so nothing is lost."""
    spec = TABLES["comparison_results"]
    have = {
        c
        for (c,) in store.run(
            con,
            "SELECT column_name FROM duckdb_columns() WHERE schema_name = 'main' "
            "AND table_name = 'comparison_results'",
        )
    }
    if have and have != set(spec.columns):
        log.info("recreating comparison_results: its columns changed")
        store.run(con, "DROP VIEW IF EXISTS comparisons")
        store.run(con, "DROP TABLE comparison_results")
        for stmt in store.ddl(spec):
            store.run(con, stmt)
