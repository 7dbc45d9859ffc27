"""What every table declares beside its schema: its key and its write policy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pandera.polars as pa
import polars as pl

WritePolicy = Literal["replace", "upsert", "append"]
"""How a table is written.

- ``replace``: the whole table is rewritten from its source on every load (curated tables).
- ``upsert``: rows are inserted or, when their key exists, replaced (idempotent re-runs).
- ``append``: rows are only ever added (logs such as ``quarantine``).
"""


@dataclass(frozen=True, slots=True)
class TableSpec:
    """A table of the SQL interface: its name, schema, key and write policy.

    ``key`` is the table's logical key: no two rows share it. ``enforce_key_in_db`` says who
    keeps it unique. True (the default): DuckDB, through a ``PRIMARY KEY`` in the generated
    DDL, which also rejects a duplicate written outside scalefit. False: scalefit's write
    paths (:func:`scalefit.store.write` deletes the incoming keys before it inserts, and the
    ingest proves each file free of duplicates), for a big table where DuckDB's key index
    (ART) would cost as much as reading the data; plain SQL inserts are then unchecked.
    """

    name: str
    schema: type[pa.DataFrameModel]
    key: tuple[str, ...]
    policy: WritePolicy
    description: str
    enforce_key_in_db: bool = True

    @property
    def columns(self) -> list[str]:
        """Column names in schema order."""
        return list(self.schema.to_schema().columns)


def is_finite(data: pa.PolarsData) -> pl.LazyFrame:
    """Column check body: fails NaN and infinities (polars orders NaN above every number, so
    ``ge=0`` alone lets NaN through). Use with ``@pa.check(..., name="finite")``."""
    return data.lazyframe.select(pl.col(data.key).is_finite())


def is_json_object(data: pa.PolarsData) -> pl.LazyFrame:
    """Column check body: the text holds a JSON object."""
    return data.lazyframe.select(pl.col(data.key).str.strip_chars().str.starts_with("{"))
