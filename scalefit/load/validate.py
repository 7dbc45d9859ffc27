"""Validate a frame against a table's schema, splitting it into good rows and rejected rows
with reasons a person understands. Used for curated datasets and user logs alike, so that
both say the same thing about the same fault."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import pandera.polars as pa
import polars as pl

from ..errors import ValidationError

log = logging.getLogger(__name__)

ROW = "__row_number"
"""Name of the 1-based row-number column carried through validation."""

_TRUE = ["true", "t", "yes", "y", "1"]
_FALSE = ["false", "f", "no", "n", "0"]


@dataclass(frozen=True, slots=True)
class Validated:
    """The outcome of :func:`validate_frame`.

    Attributes
    ----------
    valid
        Rows that passed, typed and in schema column order.
    rejected
        One row per rejected input row: ``row_number`` (1-based, as given), ``raw`` (the row as
        read, a JSON object) and ``reason`` (every failure of the row, ``; ``-separated).
    failures
        One row per failed cell or row-level check: ``row_number``, ``column``, ``value``,
        ``reason``. The evidence behind ``rejected``.
    """

    valid: pl.DataFrame
    rejected: pl.DataFrame
    failures: pl.DataFrame

    @property
    def ok(self) -> bool:
        """True when no row was rejected."""
        return self.rejected.height == 0


def _schema_dtypes(schema: type[pa.DataFrameModel]) -> dict[str, pl.DataType]:
    return {name: col.dtype.type for name, col in schema.to_schema().columns.items()}


def empty_frame(schema: type[pa.DataFrameModel]) -> pl.DataFrame:
    """A frame with no rows and ``schema``'s columns and types."""
    return pl.DataFrame(schema=_schema_dtypes(schema))


def _cast_expr(name: str, source: pl.DataType, target: pl.DataType) -> pl.Expr:
    """``name`` cast to ``target``; text must be stripped of surrounding blanks already (done
    once per column: an expression that strips, used twice, strips twice)."""
    col = pl.col(name)
    if source == pl.String:
        col = pl.when(col == "").then(None).otherwise(col)
        if target == pl.Boolean:
            low = col.str.to_lowercase()
            return (
                pl.when(low.is_in(_TRUE))
                .then(True)
                .when(low.is_in(_FALSE))
                .then(False)
                .otherwise(None)
            )
        if target == pl.Date:
            return col.str.to_date(strict=False)
        if target == pl.Datetime or isinstance(target, pl.Datetime):
            return col.str.to_datetime(strict=False)
        if target.is_integer():
            # "12.0" is a fine integer; "12.5" is not.
            as_float = col.cast(pl.Float64, strict=False)
            return pl.when(as_float == as_float.round(0)).then(as_float).cast(target, strict=False)
    return col.cast(target, strict=False)


_CHECK_WORDS = [
    (re.compile(r"^greater_than_or_equal_to\((.*)\)$"), r"must be >= \1"),
    (re.compile(r"^greater_than\((.*)\)$"), r"must be > \1"),
    (re.compile(r"^less_than_or_equal_to\((.*)\)$"), r"must be <= \1"),
    (re.compile(r"^less_than\((.*)\)$"), r"must be < \1"),
    (re.compile(r"^in_range\((.*)\)$"), r"must be in range \1"),
    (re.compile(r"^isin\((.*)\)$"), r"must be one of \1"),
    (re.compile(r"^str_matches\((.*)\)$"), r"must match \1"),
    (re.compile(r"^str_length\((.*)\)$"), r"has the wrong length \1"),
    (re.compile(r"^not_nullable$"), "is missing"),
    (re.compile(r"^field_uniqueness$"), "is duplicated (must be unique)"),
]


def _type_words(dtype: pl.DataType) -> str:
    if dtype.is_integer():
        return "a whole number"
    if dtype.is_float():
        return "a number"
    if dtype == pl.Boolean:
        return "true or false"
    if dtype == pl.Date:
        return "a date (YYYY-MM-DD)"
    if dtype == pl.Datetime or isinstance(dtype, pl.Datetime):
        return "a timestamp (ISO 8601)"
    return f"of type {dtype}"


def _describe(check: str) -> str:
    for pattern, words in _CHECK_WORDS:
        if pattern.match(check):
            return pattern.sub(words, check)
    return check


def validate_frame(
    frame: pl.DataFrame,
    schema: type[pa.DataFrameModel],
    *,
    row_numbers: pl.Series | None = None,
    fill_missing: bool = False,
) -> Validated:
    """Cast ``frame`` to ``schema``'s types and check it, keeping every failure.

    Parameters
    ----------
    frame
        Input rows; text columns are parsed (numbers, booleans ``true/false/yes/no/1/0``, ISO
        dates). Empty or blank text is null.
    schema
        The pandera ``DataFrameModel`` of the target table.
    row_numbers
        1-based row numbers to report (e.g. line numbers in a file); default ``1..height``.
    fill_missing
        Add schema columns absent from ``frame`` as nulls (their nullability is still checked).
        Default False: a missing column is a :class:`ValidationError`.

    Returns
    -------
    Validated
        Good rows, rejected rows with reasons, and the failures behind them.

    Raises
    ------
    ValidationError
        When columns are missing (and not filled) or ``frame`` has columns the schema lacks.
    """
    dtypes = _schema_dtypes(schema)
    frame = _with_columns(frame, dtypes, fill_missing)
    if row_numbers is None:
        row_numbers = pl.Series(ROW, range(1, frame.height + 1), dtype=pl.Int64)
    rows = row_numbers.alias(ROW).cast(pl.Int64)

    texts = [c for c in dtypes if frame.schema[c] == pl.String]
    stripped = frame.with_columns(pl.col(c).str.strip_chars() for c in texts)
    typed = stripped.select(_cast_expr(c, frame.schema[c], t).alias(c) for c, t in dtypes.items())
    failures = _cast_failures(frame, stripped, typed, dtypes, texts)
    cast_failed = pl.concat(failures).select("index", "column") if failures else None
    checked = _schema_failures(schema, typed, cast_failed)
    if checked is not None:
        failures.append(checked)
    fails = _all_failures(failures)
    fails = fails.with_columns(rows.gather(fails["index"]).alias("row_number"))
    keep = ~pl.Series(range(frame.height)).is_in(fails["index"].unique().implode())
    rejected = _rejected_rows(frame, fails, rows)
    if rejected.height:
        log.debug("%s: %d of %d rows rejected", schema.__name__, rejected.height, frame.height)
    return Validated(
        valid=typed.filter(keep),
        rejected=rejected,
        failures=fails.select("row_number", "column", "value", "reason").sort("row_number"),
    )


def _with_columns(
    frame: pl.DataFrame, dtypes: dict[str, pl.DataType], fill_missing: bool
) -> pl.DataFrame:
    """``frame`` with the schema's columns (missing ones as nulls when ``fill_missing``).

    Raises
    ------
    ValidationError
        A column is missing (and not filled), or the schema lacks one of ``frame``'s.
    """
    missing = [c for c in dtypes if c not in frame.columns]
    extra = [c for c in frame.columns if c not in dtypes]
    if extra or (missing and not fill_missing):
        parts = []
        if missing:
            parts.append(f"missing column(s) {', '.join(f'`{c}`' for c in missing)}")
        if extra:
            parts.append(f"unexpected column(s) {', '.join(f'`{c}`' for c in extra)}")
        raise ValidationError(
            "; ".join(parts) + f"; expected columns: {', '.join(dtypes)}",
            missing=missing,
            extra=extra,
        )
    if missing:
        frame = frame.with_columns(pl.lit(None).alias(c) for c in missing)
    return frame


def _cast_failures(
    frame: pl.DataFrame,
    stripped: pl.DataFrame,
    typed: pl.DataFrame,
    dtypes: dict[str, pl.DataType],
    texts: list[str],
) -> list[pl.DataFrame]:
    """One frame per column with cells that did not parse as the schema's type."""
    failures: list[pl.DataFrame] = []
    for c, target in dtypes.items():
        if frame.schema[c] == target or (target == pl.String and c in texts):
            continue  # nothing to parse: a null after the cast was null or blank before
        bad = frame[c].is_not_null() & typed[c].is_null()
        if c in texts:
            bad = bad & (stripped[c] != "")
        if bad.any():
            failures.append(
                pl.DataFrame(
                    {
                        "index": pl.Series(range(frame.height)).filter(bad).cast(pl.Int64),
                        "column": c,
                        "value": frame[c].filter(bad).cast(pl.String),
                        "reason": f"`{c}` = {{value}} is not {_type_words(dtypes[c])}",
                    }
                )
            )
    return failures


def _schema_cases(schema: type[pa.DataFrameModel], exc: pa.errors.SchemaErrors) -> pl.DataFrame:
    """pandera's failure cases, in words, one row per failed cell or row-level check.

    Raises
    ------
    ValidationError
        A fault of the frame as a whole (a dtype, a column) that no row explains.
    """
    cases = exc.failure_cases
    key = getattr(schema.Config, "unique", None) or ()
    key_words = "duplicate key (" + ", ".join(f"`{k}`" for k in key) + ")"
    cases = cases.with_columns(
        pl.col("check").replace({"multiple_fields_uniqueness": key_words}),
        # NaN fails both not-null and finite: say it once, as "not a finite number".
        # (A null `failure_case` compares as null, and a filter drops null: use eq_missing,
        # or every missing value in a non-nullable column would pass.)
    ).filter(~((pl.col("check") == "not_nullable") & pl.col("failure_case").eq_missing("NaN")))
    frame_level = cases.filter(pl.col("index").is_null())
    if frame_level.height:
        # Dtype or column-level faults that no single row explains.
        reasons = "; ".join(
            f"`{r['column']}`: {_describe(r['check'])}" for r in frame_level.iter_rows(named=True)
        )
        raise ValidationError(f"the data as a whole fails its schema: {reasons}") from exc
    is_column = pl.col("schema_context") == "Column"
    return cases.select(
        pl.col("index").cast(pl.Int64),
        pl.when(is_column).then(pl.col("column")).otherwise(None).alias("column"),
        pl.when(is_column).then(pl.col("failure_case")).otherwise(None).alias("value"),
        pl.col("check").map_elements(_describe, return_dtype=pl.String).alias("check"),
        is_column.alias("is_column"),
    )


def _schema_failures(
    schema: type[pa.DataFrameModel], typed: pl.DataFrame, cast_failed: pl.DataFrame | None
) -> pl.DataFrame | None:
    """The schema's checks of the typed rows (None when all pass), with reasons."""
    try:
        schema.validate(typed, lazy=True)
    except pa.errors.SchemaErrors as exc:
        cases = _schema_cases(schema, exc)
    else:
        return None
    if cast_failed is not None:
        # A cell that failed to parse is null after the cast: do not also call it missing.
        cases = cases.join(
            cast_failed.with_columns(pl.lit(True).alias("_cast")),
            on=["index", "column"],
            how="left",
        ).filter(pl.col("_cast").is_null() | (pl.col("check") != "is missing"))
    return cases.select(
        "index",
        "column",
        "value",
        pl.when(pl.col("is_column") & pl.col("value").is_null())
        .then(pl.format("`{}` {}", "column", "check"))  # e.g. "`step` is missing"
        .when(pl.col("is_column"))
        .then(pl.format("`{}` = {}: {}", "column", "value", "check"))
        .otherwise(pl.col("check"))
        .alias("reason"),
    )


def _all_failures(failures: list[pl.DataFrame]) -> pl.DataFrame:
    """The failures as one frame (``index``, ``column``, ``value``, ``reason``)."""
    if not failures:
        return pl.DataFrame(
            schema={"index": pl.Int64, "column": pl.String, "value": pl.String, "reason": pl.String}
        )
    return pl.concat(
        [
            f.with_columns(
                pl.col("reason").str.replace(
                    "{value}", pl.col("value").fill_null("null"), literal=True
                )
            )
            for f in failures
        ]
    ).unique(maintain_order=True)


def _rejected_rows(frame: pl.DataFrame, fails: pl.DataFrame, rows: pl.Series) -> pl.DataFrame:
    """One row per rejected input row: its number, the row as read (JSON), its reasons."""
    rejected = (
        fails.group_by("index", maintain_order=True)
        .agg(pl.col("reason").unique(maintain_order=True).str.join("; "))
        .sort("index")
    )
    return rejected.select(
        rows.gather(rejected["index"]).alias("row_number"),
        # Encoded only for rejected rows: JSON-encoding every row cost half the validation.
        frame.select(pl.struct(pl.all()).gather(rejected["index"]).struct.json_encode())
        .to_series()
        .alias("raw"),
        pl.col("reason"),
    )
