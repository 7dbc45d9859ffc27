"""``upstream_snapshots``, ``upstream_models`` and ``upstream_changes``: remote files named in
``datasets/sources.toml`` (``[upstreams.<name>]``), every snapshot of them seen, the rows of a
published model database, and what changed between two snapshots of it."""

from __future__ import annotations

import datetime as dt

import pandera.polars as pa
import polars as pl

from ._base import TableSpec, is_finite, is_json_object
from .vocabulary import UPSTREAM_FORMATS, UPSTREAM_KINDS

SNAPSHOT_STATUSES = ["current", "superseded", "rejected"]
CHANGE_KINDS = ["added", "removed", "changed", "renamed", "column_added", "column_removed"]

_SHA256 = r"^[0-9a-f]{64}$"


class UpstreamSnapshotSchema(pa.DataFrameModel):
    """One distinct content (sha256) of an upstream file, as downloaded."""

    upstream: str = pa.Field(
        str_length={"min_value": 1}, description="Upstream name (`[upstreams.<name>]`)."
    )
    sha256: str = pa.Field(str_matches=_SHA256, description="sha256 of the snapshot's bytes.")
    url: str = pa.Field(description="Where it was downloaded from.")
    kind: str = pa.Field(isin=UPSTREAM_KINDS, description="`runs` or `models`.")
    format: str = pa.Field(isin=UPSTREAM_FORMATS, description="File format: csv, jsonl or parquet.")
    fetched_at: dt.datetime = pa.Field(
        description="When these bytes were first downloaded (UTC); stable across refreshes."
    )
    loaded_at: dt.datetime = pa.Field(
        nullable=True, description="When the snapshot was loaded into the store (UTC)."
    )
    path: str = pa.Field(description="The snapshot's file in the download cache.")
    size_bytes: int = pa.Field(ge=0, description="Size of the snapshot (bytes).")
    rows: int = pa.Field(nullable=True, ge=0, description="Rows loaded from it.")
    rows_rejected: int = pa.Field(
        nullable=True, ge=0, description="Rows sent to `quarantine` (see `ingests`)."
    )
    settings_sha256: str = pa.Field(
        nullable=True,
        description="sha256 of the entry's settings (kind, columns, ...) it was loaded with.",
    )
    status: str = pa.Field(
        isin=SNAPSHOT_STATUSES,
        description="`current` (its rows are in the store), `superseded` (a later snapshot "
        "replaced it) or `rejected` (its sha256 differs from the pinned one; never loaded).",
    )
    message: str = pa.Field(nullable=True, description="Why it was rejected, or a note.")

    class Config:
        strict = True
        coerce = True
        unique = ("upstream", "sha256")


UPSTREAM_SNAPSHOTS = TableSpec(
    name="upstream_snapshots",
    schema=UpstreamSnapshotSchema,
    key=("upstream", "sha256"),
    policy="upsert",
    description="Every snapshot of every upstream file seen, with its status.",
)


class UpstreamModelSchema(pa.DataFrameModel):
    """A model of a published model database, as its current snapshot states it."""

    upstream: str = pa.Field(str_length={"min_value": 1}, description="Upstream name.")
    name: str = pa.Field(
        str_length={"min_value": 1},
        description="Model name, normalised: NFKC, zero-width characters removed, stripped, "
        "inner whitespace collapsed to one space.",
    )
    name_raw: str = pa.Field(description="Model name exactly as the file writes it.")
    snapshot_sha256: str = pa.Field(
        str_matches=_SHA256, description="Snapshot the row comes from (key into snapshots)."
    )
    row_number: int = pa.Field(ge=1, description="1-based data row in the snapshot.")
    params: float = pa.Field(nullable=True, gt=0, description="Parameters (count).")
    tokens: float = pa.Field(nullable=True, gt=0, description="Training tokens (count).")
    flops: float = pa.Field(nullable=True, gt=0, description="Training compute (FLOPs).")
    extra: str = pa.Field(
        description="The file's other columns, a JSON object (values as text, stripped)."
    )

    class Config:
        strict = True
        coerce = True
        unique = ("upstream", "name")

    @pa.check(
        "params",
        "tokens",
        "flops",
        name="finite",
        error="must be a finite number (not NaN or infinity)",
    )
    def _finite(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return is_finite(data)

    @pa.check("extra", name="json_object", error="must be a JSON object")
    def _json_object(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return is_json_object(data)


UPSTREAM_MODELS = TableSpec(
    name="upstream_models",
    schema=UpstreamModelSchema,
    key=("upstream", "name"),
    policy="upsert",
    description="Rows of published model databases, from each one's current snapshot.",
)


class UpstreamChangeSchema(pa.DataFrameModel):
    """One difference between two successive snapshots of a model database."""

    upstream: str = pa.Field(str_length={"min_value": 1}, description="Upstream name.")
    from_sha256: str = pa.Field(str_matches=_SHA256, description="Previous snapshot.")
    to_sha256: str = pa.Field(str_matches=_SHA256, description="New snapshot.")
    detected_at: dt.datetime = pa.Field(description="When the refresh found it (UTC).")
    name: str = pa.Field(
        nullable=True,
        description="Model (normalised name; the new one for a rename); null for a column.",
    )
    change: str = pa.Field(isin=CHANGE_KINDS, description=f"One of {', '.join(CHANGE_KINDS)}.")
    column_name: str = pa.Field(
        nullable=True,
        description="Column changed (`name` for a rename; the file's column for column_*).",
    )
    old_value: str = pa.Field(
        nullable=True, description="Value before (a removed row: the row as a JSON object)."
    )
    new_value: str = pa.Field(
        nullable=True, description="Value after (an added row: the row as a JSON object)."
    )

    class Config:
        strict = True
        coerce = True


UPSTREAM_CHANGES = TableSpec(
    name="upstream_changes",
    schema=UpstreamChangeSchema,
    key=(),
    policy="append",
    description="Change log of model databases: one row per change between snapshots.",
)
