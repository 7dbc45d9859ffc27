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


UNIT_KEY = "unit"
"""Key of a column's unit in its ``pa.Field(metadata=...)``: ``metadata=unit(FLOPS)``."""

PARAMS = "parameters"
"""A count of model parameters (plain count, not millions)."""
TOKENS = "tokens"
"""A count of tokens (plain count)."""
FLOPS = "FLOPs"
"""Floating-point operations (training compute; not per second)."""
NATS = "nats"
"""Cross-entropy loss in nats per token (natural logarithm)."""
DIMENSIONLESS = "1"
"""A pure number: a ratio, fraction, exponent or probability (UCUM's unit one)."""
NO_UNIT = ""
"""Not a quantity: identifiers, text, flags, dates and JSON carry this empty unit."""
VARIES = "varies by row (see the row's parameter or quantity)"
"""A value whose unit depends on another column of its row (e.g. a law parameter's estimate:
``E`` in nats, ``alpha`` dimensionless)."""


def unit(name: str) -> dict[str, str]:
    """``pa.Field`` metadata declaring a column's unit (one of the constants above or another
    plain name such as ``bytes``, ``rows``, ``points``), e.g.
    ``pa.Field(gt=0, description="...", metadata=unit(FLOPS))``.

    Units are declared with the column, beside its description, so the Parquet reports'
    metadata (``scalefit.columns`` and each Arrow field's ``description`` and ``unit``) come
    from the same one place. ``"1"`` (:data:`DIMENSIONLESS`) and ``""`` (:data:`NO_UNIT`) are
    declared explicitly: a column without a declared unit is an error in a report."""
    return {UNIT_KEY: name}


def column_unit(column: object) -> str | None:
    """The unit declared on a pandera column (None when it declares none)."""
    metadata = getattr(column, "metadata", None) or {}
    value = metadata.get(UNIT_KEY)
    return None if value is None else str(value)


def is_finite(data: pa.PolarsData) -> pl.LazyFrame:
    """Column check body: fails NaN and infinities (polars orders NaN above every number, so
    ``ge=0`` alone lets NaN through). Use with ``@pa.check(..., name="finite")``."""
    return data.lazyframe.select(pl.col(data.key).is_finite())


def is_json_object(data: pa.PolarsData) -> pl.LazyFrame:
    """Column check body: the text holds a JSON object."""
    return data.lazyframe.select(pl.col(data.key).str.strip_chars().str.starts_with("{"))
