"""Report schemas: the Parquet files under ``reports/`` that are not plain tables of the store.

Each report file's columns are documented (description and unit) by the schemas listed for it
in :data:`REPORTS`, looked up in order: the first schema that has a column defines it. The
reports of the published studies (``reproductions``, ``overtraining``) have their schemas in
``schemas/studies.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandera.polars as pa
import polars as pl

from ._base import (
    DIMENSIONLESS,
    FLOPS,
    NATS,
    NO_UNIT,
    PARAMS,
    TOKENS,
    VARIES,
    column_unit,
    unit,
)
from .bookkeeping import FitSchema
from .comparisons import ComparisonSchema
from .laws import LawSchema
from .models import ModelSchema
from .studies import OvertrainingSchema, ReproductionSchema


class LawCaveatSchema(pa.DataFrameModel):
    """The law's caveat, carried on every report row that uses a law."""

    law_caveat: str = pa.Field(
        nullable=True,
        metadata=unit(NO_UNIT),
        description=(
            "`laws.caveat` of the row's law: why the law should not be read at face value "
            "(e.g. published constants that are not the optimum of their own fit); null when "
            "it has none. Print it wherever the row is shown."
        ),
    )


class FrontierSchema(pa.DataFrameModel):
    """One law at one compute budget (``reports/frontier.parquet``): the law's
    compute-optimal allocation over a grid of C (1e18 to 1e27 FLOPs, four points a decade)."""

    law_id: str = pa.Field(metadata=unit(NO_UNIT), description="Law (key into `laws`).")
    law_form: str = pa.Field(metadata=unit(NO_UNIT), description="Form of the law.")
    flops: float = pa.Field(gt=0, metadata=unit(FLOPS), description="Compute budget C.")
    optimal_params: float = pa.Field(
        gt=0, metadata=unit(PARAMS), description="N_opt(C): the law's compute-optimal parameters."
    )
    optimal_tokens: float = pa.Field(
        gt=0, metadata=unit(TOKENS), description="D_opt(C): the law's compute-optimal tokens."
    )
    tokens_per_param: float = pa.Field(
        gt=0, metadata=unit(DIMENSIONLESS), description="D_opt / N_opt at C."
    )
    loss: float = pa.Field(
        nullable=True,
        metadata=unit(NATS),
        description="The law's loss L(N_opt, D_opt) at C; null for laws without a loss "
        "(allocation laws and rules of thumb).",
    )
    law_caveat: str = pa.Field(
        nullable=True, metadata=unit(NO_UNIT), description="`laws.caveat` of the row's law."
    )

    class Config:
        strict = True
        coerce = True


class FitReportSchema(pa.DataFrameModel):
    """Columns ``fits.parquet`` adds to the ``fits`` table's (whose JSON estimates and
    intervals it leaves to ``fit_parameters.parquet``)."""

    law_id: str = pa.Field(
        nullable=True,
        metadata=unit(NO_UNIT),
        description="Law the fit was saved as (key into `laws`); null for a fit without one.",
    )


class FitParameterSchema(pa.DataFrameModel):
    """One parameter of one fit, typed (``reports/fit_parameters.parquet``): the ``fits``
    table's estimates and intervals, one row each instead of JSON objects."""

    fit_id: str = pa.Field(metadata=unit(NO_UNIT), description="Fit (key into `fits`).")
    law_id: str = pa.Field(
        nullable=True,
        metadata=unit(NO_UNIT),
        description="Law the fit was saved as (key into `laws`); null for a fit without one.",
    )
    procedure: str = pa.Field(
        metadata=unit(NO_UNIT), description="How the law was fitted (`fits.procedure`)."
    )
    form: str = pa.Field(
        metadata=unit(NO_UNIT), description="Law form the fit produced (`fits.form`)."
    )
    parameter: str = pa.Field(
        metadata=unit(NO_UNIT),
        description="Parameter or derived quantity, e.g. `alpha`, or `a` (N_opt ~ C^a).",
    )
    estimate: float = pa.Field(
        metadata=unit(VARIES),
        description="Point estimate. Units by parameter: `E` and the other loss terms in nats, "
        "exponents dimensionless, `N_c` in parameters, `D_c` in tokens, `C_c` in FLOPs.",
    )
    ci_low: float = pa.Field(
        nullable=True,
        metadata=unit(VARIES),
        description="Lower bound of the bootstrap interval (level `confidence_level`); null "
        "without a bootstrap.",
    )
    ci_high: float = pa.Field(
        nullable=True, metadata=unit(VARIES), description="Upper bound of the interval."
    )
    confidence_level: float = pa.Field(
        nullable=True, gt=0, lt=1, metadata=unit(DIMENSIONLESS), description="Interval level."
    )

    class Config:
        strict = True
        coerce = True
        unique = ("fit_id", "parameter")


LAW_PARAMETER_TYPE = pl.List(pl.Struct({"name": pl.String, "value": pl.Float64}))
"""Arrow/Polars type of ``laws.parquet``'s ``parameters``: a list of (name, value)."""


class LawReportSchema(pa.DataFrameModel):
    """Columns of ``reports/laws.parquet`` beyond the ``laws`` table's: one row per law with its
    parameters typed, and whether (or why not) it is in the comparisons."""

    parameters: pl.List = pa.Field(
        metadata=unit(VARIES),
        description="The law's parameters, typed: a list of {name, value} (Float64), in the "
        "units of the law's form (loss terms in nats, exponents dimensionless).",
    )
    in_comparisons: bool = pa.Field(
        metadata=unit(NO_UNIT),
        description="True when the law can allocate compute (N_opt(C), D_opt(C)), so it has "
        "rows in `comparisons.parquet` and `frontier.parquet`.",
    )
    not_compared_reason: str = pa.Field(
        nullable=True,
        metadata=unit(NO_UNIT),
        description="Why a law is not in the comparisons (e.g. it publishes the exponents of "
        "its allocation without a coefficient); null when it is.",
    )


@dataclass(frozen=True, slots=True)
class ReportSpec:
    """A Parquet report: its file stem, what a row is, and the schemas that define its
    columns (looked up in order)."""

    name: str
    description: str
    schemas: tuple[type[pa.DataFrameModel], ...]

    def columns(self) -> dict[str, tuple[str, str | None]]:
        """Column -> (description, unit) over the report's schemas, first schema first."""
        out: dict[str, tuple[str, str | None]] = {}
        for schema in self.schemas:
            for name, col in schema.to_schema().columns.items():
                if name not in out:
                    out[name] = (col.description or "", column_unit(col))
        return out


REPORTS: dict[str, ReportSpec] = {
    spec.name: spec
    for spec in (
        ReportSpec("models", "The `models` table.", (ModelSchema,)),
        ReportSpec(
            "comparisons",
            "Every model under every law that can allocate compute (the `comparisons` view, "
            "recomputed when the report is written).",
            (ComparisonSchema, ModelSchema, LawCaveatSchema),
        ),
        ReportSpec(
            "frontier",
            "Each law's compute-optimal allocation over a grid of compute.",
            (FrontierSchema,),
        ),
        ReportSpec(
            "fits",
            "The `fits` table, its estimates and intervals in `fit_parameters.parquet`.",
            (FitReportSchema, LawCaveatSchema, FitSchema),
        ),
        ReportSpec(
            "fit_parameters",
            "Every fit's parameters with their intervals, typed.",
            (FitParameterSchema,),
        ),
        ReportSpec(
            "laws",
            "Every law, published or fitted, its parameters typed.",
            (LawReportSchema, LawSchema),
        ),
        ReportSpec("reproductions", "Study claims, recomputed.", (ReproductionSchema,)),
        ReportSpec(
            "overtraining", "Curated models on the over-training testbed.", (OvertrainingSchema,)
        ),
    )
}
"""Every Parquet report, by file stem (``reports/<name>.parquet``)."""
