"""``laws`` and ``law_parameters``: published and fitted scaling laws."""

from __future__ import annotations

import pandera.polars as pa
import polars as pl

from ._base import NO_UNIT, TableSpec, is_finite, is_json_object, unit

LAW_FORMS = [
    "chinchilla",
    "kaplan",
    "kaplan_n",
    "kaplan_d",
    "kaplan_c",
    "kaplan_nd",
    "allocation",
    "tokens_per_param",
    "data_constrained",
    "overtraining",
    "downstream_error",
]
LAW_ORIGINS = ["published", "fitted", "rule"]


class LawParameterSchema(pa.DataFrameModel):
    """One parameter value of a law, with its own citation (``datasets/laws.csv``)."""

    law_id: str = pa.Field(str_matches=r"^[a-z0-9][a-z0-9_.\-]*$", description="Law key.")
    form: str = pa.Field(isin=LAW_FORMS, description="Functional form of the law.")
    parameter: str = pa.Field(
        str_length={"min_value": 1}, description="Parameter name, e.g. `alpha`."
    )
    value: float = pa.Field(description="Parameter value as published.")
    source_id: str = pa.Field(description="Source (key into `sources`).")
    locator: str = pa.Field(str_length={"min_value": 1}, description="Equation, table or section.")
    notes: str = pa.Field(nullable=True, description="Units, conventions, rounding.")
    caveat: str = pa.Field(
        nullable=True,
        description=(
            "The law's caveat (see `laws.caveat`), written on one of its rows; a column files "
            "may leave out."
        ),
    )

    class Config:
        strict = True
        coerce = True
        unique = ("law_id", "parameter")

    @pa.check("value", name="finite", error="must be a finite number (not NaN or infinity)")
    def _finite(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return is_finite(data)

    @pa.dataframe_check(error="all rows of one `law_id` must share one `form`")
    def one_form_per_law(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("form").n_unique().over("law_id") == 1)

    @pa.dataframe_check(error="the rows of one `law_id` state at most one distinct `caveat`")
    def one_caveat_per_law(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("caveat").drop_nulls().n_unique().over("law_id") <= 1)


LAW_PARAMETERS = TableSpec(
    name="law_parameters",
    schema=LawParameterSchema,
    key=("law_id", "parameter"),
    policy="replace",
    description="Every parameter value of every law, one row each, with its citation.",
)


class LawSchema(pa.DataFrameModel):
    """A scaling law, published or fitted. Published and fitted laws share this table so that
    comparison code cannot tell them apart."""

    law_id: str = pa.Field(
        metadata=unit(NO_UNIT), unique=True, description="Key, e.g. `hoffmann2022_approach3`."
    )
    form: str = pa.Field(
        metadata=unit(NO_UNIT), isin=LAW_FORMS, description="Functional form (see `scalefit.laws`)."
    )
    origin: str = pa.Field(
        metadata=unit(NO_UNIT),
        isin=LAW_ORIGINS,
        description="`published`, `fitted` or `rule` (of thumb).",
    )
    parameters: str = pa.Field(
        metadata=unit(NO_UNIT), description="Parameter values, a JSON object."
    )
    source_id: str = pa.Field(
        metadata=unit(NO_UNIT), nullable=True, description="Source of a published law."
    )
    fit_id: str = pa.Field(
        metadata=unit(NO_UNIT),
        nullable=True,
        description="Fit that produced a fitted law (key into `fits`).",
    )
    locator: str = pa.Field(
        metadata=unit(NO_UNIT), nullable=True, description="Where in the source the law is stated."
    )
    notes: str = pa.Field(
        metadata=unit(NO_UNIT),
        nullable=True,
        description="Units and conventions (e.g. non-embedding counts).",
    )
    caveat: str = pa.Field(
        metadata=unit(NO_UNIT),
        nullable=True,
        description=(
            "Why this law should not be read at face value (e.g. published constants that are "
            "not the optimum of their own fit); every output using the law prints it. The one "
            "source of such caveats (curated in `datasets/laws.csv`)."
        ),
    )

    class Config:
        strict = True
        coerce = True

    @pa.check("parameters", name="json_object", error="must be a JSON object")
    def _json_object(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return is_json_object(data)

    @pa.dataframe_check(error="a law needs a `source_id` (published) or a `fit_id` (fitted)")
    def has_provenance(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(
            pl.col("source_id").is_not_null()
            | pl.col("fit_id").is_not_null()
            | (pl.col("origin") == "rule")
        )


LAWS = TableSpec(
    name="laws",
    schema=LawSchema,
    key=("law_id",),
    policy="upsert",
    description="Published and fitted scaling laws; `parameters` is a JSON object.",
)
