"""One pandera ``DataFrameModel`` per table: the single home of column names, types, checks
and docs. DuckDB DDL and the README's table reference are generated from here."""

from __future__ import annotations

from ._base import TableSpec, WritePolicy, is_finite, is_json_object
from .bookkeeping import (
    FIT_POINTS,
    FIT_SAMPLES,
    FITS,
    INGESTS,
    PROCEDURES,
    QUARANTINE,
    FitPointSchema,
    FitSampleSchema,
    FitSchema,
    IngestSchema,
    QuarantineSchema,
)
from .comparisons import COMPARISON_RESULTS, ComparisonSchema
from .laws import LAW_FORMS, LAW_PARAMETERS, LAWS, LawParameterSchema, LawSchema
from .models import (
    ARCHITECTURES,
    FAMILIES,
    MODELS,
    OPTIMAL_ALLOCATIONS,
    ModelSchema,
    OptimalAllocationSchema,
)
from .runs import OBSERVATIONS, RUNS, ObservationSchema, RunSchema
from .sources import SOURCE_KINDS, SOURCES, SourceSchema
from .upstream import (
    UPSTREAM_CHANGES,
    UPSTREAM_KINDS,
    UPSTREAM_MODELS,
    UPSTREAM_SNAPSHOTS,
    UpstreamChangeSchema,
    UpstreamModelSchema,
    UpstreamSnapshotSchema,
)

TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        SOURCES,
        MODELS,
        OPTIMAL_ALLOCATIONS,
        LAWS,
        LAW_PARAMETERS,
        RUNS,
        OBSERVATIONS,
        FITS,
        FIT_SAMPLES,
        FIT_POINTS,
        INGESTS,
        QUARANTINE,
        COMPARISON_RESULTS,
        UPSTREAM_SNAPSHOTS,
        UPSTREAM_MODELS,
        UPSTREAM_CHANGES,
    )
}
"""Every table of the SQL interface, in creation order."""

__all__ = [
    "ARCHITECTURES",
    "FAMILIES",
    "LAW_FORMS",
    "PROCEDURES",
    "SOURCE_KINDS",
    "TABLES",
    "UPSTREAM_KINDS",
    "ComparisonSchema",
    "FitPointSchema",
    "FitSampleSchema",
    "FitSchema",
    "IngestSchema",
    "LawParameterSchema",
    "LawSchema",
    "ModelSchema",
    "ObservationSchema",
    "OptimalAllocationSchema",
    "QuarantineSchema",
    "RunSchema",
    "SourceSchema",
    "TableSpec",
    "UpstreamChangeSchema",
    "UpstreamModelSchema",
    "UpstreamSnapshotSchema",
    "WritePolicy",
    "is_finite",
    "is_json_object",
]
