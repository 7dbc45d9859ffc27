"""One pandera ``DataFrameModel`` per table: the single home of column names, types, checks
and docs. DuckDB DDL and the README's table reference are generated from here.

The words of the vocabulary (:mod:`.vocabulary`: law forms, procedures, log formats, upstream
kinds) load with this package; the schemas (pandera, polars: most of a second) load on first
use of one of them, so that ``scalefit --help`` can read the vocabulary without them.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from .vocabulary import LAW_FORMS, LOG_FORMATS, PROCEDURES, SCHEDULES, UPSTREAM_KINDS

if TYPE_CHECKING:
    from ._tables import (
        ARCHITECTURES,
        FAMILIES,
        SOURCE_KINDS,
        TABLES,
        ComparisonSchema,
        FitPointSchema,
        FitSampleSchema,
        FitSchema,
        IngestSchema,
        LawParameterSchema,
        LawSchema,
        ModelSchema,
        ObservationSchema,
        OptimalAllocationSchema,
        QuarantineSchema,
        RunSchema,
        SourceSchema,
        TableSpec,
        UpstreamChangeSchema,
        UpstreamModelSchema,
        UpstreamSnapshotSchema,
        WritePolicy,
        is_finite,
        is_json_object,
    )

__all__ = [
    "ARCHITECTURES",
    "FAMILIES",
    "LAW_FORMS",
    "LOG_FORMATS",
    "PROCEDURES",
    "SCHEDULES",
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


def __getattr__(name: str) -> object:
    # PEP 562: the schemas are imported when one of them (any public name of ._tables, or a
    # submodule it imported) is first asked for.
    if name.startswith("_"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    tables = import_module(f"{__name__}._tables")
    if name in globals():  # a submodule, bound here by the import of ._tables
        return globals()[name]
    try:
        value = getattr(tables, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    globals()[name] = value
    return value
