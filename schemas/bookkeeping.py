"""``fits``, ``ingests`` and ``quarantine``: the records that every run leaves behind."""

from __future__ import annotations

import datetime as dt

import pandera.polars as pa
import polars as pl

from ._base import DIMENSIONLESS, NO_UNIT, TableSpec, is_json_object, unit
from .vocabulary import LAW_FORMS, PROCEDURES

INGEST_STATUSES = ["ok", "rejected_rows", "failed", "unchanged"]


class FitSchema(pa.DataFrameModel):
    """One fit of a law to a selection of data."""

    fit_id: str = pa.Field(
        metadata=unit(NO_UNIT),
        unique=True,
        description="Key, derived from the input hash and settings.",
    )
    procedure: str = pa.Field(
        metadata=unit(NO_UNIT),
        isin=list(PROCEDURES),
        description=f"How the law was fitted: one of {', '.join(PROCEDURES)} (`parametric`: "
        "the law's formula fitted to the points; `isoflop`, `envelope`: Hoffmann et al.'s "
        "approaches 2 and 1, which fit an `allocation` law).",
    )

    form: str = pa.Field(
        metadata=unit(NO_UNIT),
        isin=LAW_FORMS,
        description="Law form the fit produced (`laws.form` of its law): `chinchilla`, "
        "`kaplan_nd`, ..., `allocation` for the `isoflop` and `envelope` procedures.",
    )
    selection: str = pa.Field(
        metadata=unit(NO_UNIT),
        description="What was fitted, in words (for reading only: never run as SQL; the "
        "record is `input`).",
    )
    n_points: int = pa.Field(metadata=unit("points"), gt=0, description="Data points used.")
    estimates: str = pa.Field(metadata=unit(NO_UNIT), description="Point estimates, a JSON object.")
    ci_low: str = pa.Field(
        metadata=unit(NO_UNIT), nullable=True, description="Lower interval bounds, a JSON object."
    )
    ci_high: str = pa.Field(
        metadata=unit(NO_UNIT), nullable=True, description="Upper interval bounds, a JSON object."
    )
    confidence_level: float = pa.Field(
        metadata=unit(DIMENSIONLESS), nullable=True, gt=0, lt=1, description="Interval level."
    )
    objective: float = pa.Field(
        metadata=unit(DIMENSIONLESS), description="Best objective value (summed Huber loss)."
    )
    converged: bool = pa.Field(
        metadata=unit(NO_UNIT), description="Whether the best start converged."
    )
    n_bootstrap: int = pa.Field(
        metadata=unit("resamples"), ge=0, description="Bootstrap resamples (0: no intervals)."
    )
    settings: str = pa.Field(metadata=unit(NO_UNIT), description="Fit settings, a JSON object.")
    diagnostics: str = pa.Field(
        metadata=unit(NO_UNIT), nullable=True, description="Convergence and identifiability, JSON."
    )
    created_at: dt.datetime = pa.Field(
        metadata=unit("UTC timestamp"), description="When the fit ran (UTC)."
    )
    input_sha256: str = pa.Field(metadata=unit(NO_UNIT), description="sha256 of the fitted data.")
    package_version: str = pa.Field(
        metadata=unit(NO_UNIT), description="scalefit version that ran the fit."
    )
    input: str = pa.Field(
        metadata=unit(NO_UNIT),
        nullable=True,
        description="What was fitted, a JSON object: `source` `store` (with `predicate`, "
        "`project`, `metric`, `n_points`; the points' ids are in `fit_points`) or `file` "
        "(with `path`, `sha256`, `rows`). Null for fits saved before scalefit recorded it: "
        "their points cannot be re-read (their old SQL text is never run).",
    )

    class Config:
        strict = True
        coerce = True

    @pa.check("estimates", "settings", name="json_object", error="must be a JSON object")
    def _json_object(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return is_json_object(data)

    @pa.check("input", name="json_object", error="must be a JSON object")
    def _input_json_object(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return is_json_object(data)


FITS = TableSpec(
    name="fits",
    schema=FitSchema,
    key=("fit_id",),
    policy="upsert",
    description="Fits of laws to data, with estimates, intervals and settings.",
)


class IngestSchema(pa.DataFrameModel):
    """One ingest attempt of one file (or of the curated datasets as a whole)."""

    ingest_id: str = pa.Field(unique=True, description="Key.")
    path: str = pa.Field(description="File ingested.")
    sha256: str = pa.Field(nullable=True, description="sha256 of the file's bytes.")
    format: str = pa.Field(nullable=True, description="Detected or forced format.")
    started_at: dt.datetime = pa.Field(description="Start (UTC).")
    finished_at: dt.datetime = pa.Field(nullable=True, description="End (UTC).")
    rows_in: int = pa.Field(ge=0, description="Rows read.")
    rows_ok: int = pa.Field(ge=0, description="Rows written.")
    rows_rejected: int = pa.Field(ge=0, description="Rows sent to `quarantine`.")
    status: str = pa.Field(
        isin=INGEST_STATUSES, description=f"One of {', '.join(INGEST_STATUSES)}."
    )
    message: str = pa.Field(nullable=True, description="Why it failed, or what was done.")
    size_bytes: int = pa.Field(nullable=True, ge=0, description="File size when read (bytes).")
    checkpoint_bytes: int = pa.Field(
        nullable=True,
        ge=0,
        description="Bytes of complete lines consumed; a grown log is read on from here.",
    )
    checkpoint_sha256: str = pa.Field(
        nullable=True, description="sha256 of the first `checkpoint_bytes` bytes."
    )
    settings_sha256: str = pa.Field(
        nullable=True,
        description="sha256 of what else shaped the rows: options, sidecar metadata, version.",
    )

    class Config:
        strict = True
        coerce = True

    @pa.dataframe_check(error="`rows_in` must equal `rows_ok` + `rows_rejected`")
    def rows_add_up(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(
            pl.col("rows_in") == pl.col("rows_ok") + pl.col("rows_rejected")
        )


INGESTS = TableSpec(
    name="ingests",
    schema=IngestSchema,
    key=("ingest_id",),
    policy="upsert",
    description="Every ingest attempt, its counts and status.",
)


class QuarantineSchema(pa.DataFrameModel):
    """An input row that failed validation, kept with the reason."""

    ingest_id: str = pa.Field(description="Ingest attempt (key into `ingests`).")
    path: str = pa.Field(description="File the row came from.")
    row_number: int = pa.Field(
        nullable=True, ge=1, description="1-based data row (header excluded)."
    )
    raw: str = pa.Field(description="The row as read, a JSON object.")
    reason: str = pa.Field(str_length={"min_value": 1}, description="Why it was rejected.")

    class Config:
        strict = True
        coerce = True


QUARANTINE = TableSpec(
    name="quarantine",
    schema=QuarantineSchema,
    key=(),
    policy="append",
    description="Rejected input rows with the reason; nothing is dropped silently.",
)


class FitSampleSchema(pa.DataFrameModel):
    """One bootstrap resample's value of one fitted quantity (for intervals and plots)."""

    fit_id: str = pa.Field(description="Fit (key into `fits`).")
    sample: int = pa.Field(ge=0, description="Resample number.")
    parameter: str = pa.Field(description="Parameter or derived quantity, e.g. `alpha`, `a`.")
    value: float = pa.Field(description="Its value in that resample.")

    class Config:
        strict = True
        coerce = True


FIT_SAMPLES = TableSpec(
    name="fit_samples",
    schema=FitSampleSchema,
    key=("fit_id", "sample", "parameter"),
    policy="upsert",
    description="Bootstrap samples of every fit, long format.",
)


class FitPointSchema(pa.DataFrameModel):
    """One point a fit from the store was made from: the observation's ids, never a query."""

    fit_id: str = pa.Field(description="Fit (key into `fits`).")
    run_id: str = pa.Field(description="Run (key into `runs`).")
    step: int = pa.Field(
        ge=0,
        description="Step of the observation fitted: the run's last, or one of its checkpoints "
        "(`fits.input` says which: its `points`).",
    )
    metric: str = pa.Field(description="Metric of the observation fitted, e.g. `eval_loss`.")

    class Config:
        strict = True
        coerce = True


FIT_POINTS = TableSpec(
    name="fit_points",
    schema=FitPointSchema,
    key=("fit_id", "run_id", "metric", "step"),
    policy="upsert",
    description="The observations each fit from the store was made from, by id.",
)
