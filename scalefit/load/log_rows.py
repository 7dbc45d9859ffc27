"""A user log's measurements, chunk by chunk: one row per loss cell, validated with the
``observations`` schema, rejected rows sent to ``quarantine`` with their reason, and a cheap
proof that no ``(run_id, metric, step)`` repeats (:class:`_UniqueKeys`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pandera.polars as pa
import polars as pl

from ..schemas import TABLES, ObservationSchema
from .log_runs import _Runs
from .readers import Chunk
from .validate import ROW, validate_frame


class _ObservationRows(ObservationSchema):
    """``observations`` as read from a file: with the file's ``row_number``, and without the
    per-frame key check, since within a file the last duplicate wins (checked file-wide
    after all chunks) where the frame check would reject both copies and could not see
    across chunks. The table's key still holds: the file is made free of duplicates before
    its rows are written."""

    row_number: int = pa.Field(ge=1, description="1-based data row of the file.")

    class Config:
        unique = None


STAGE_COLUMNS = (*(c for c in TABLES["observations"].columns if c != "ingest_id"), "row_number")
"""A measurement as read: the columns of ``observations`` but its ingest id, and the file row."""

TOKEN_SOURCES = ("tokens", "step x tokens_per_step", "num_input_tokens_seen")
"""Where a measurement's ``tokens`` come from, first found wins: the file's ``tokens``
column; else its step times the run's ``tokens_per_step`` (a column, run.json or
``--tokens-per-step``; 0 at step 0); else Hugging Face's ``num_input_tokens_seen`` (a Trainer
state's entries, W&B's ``train/num_input_tokens_seen``), which counts every input id, padding
included, so a declared tokens per step is preferred to it."""

_NUMERIC = {"step": pl.Int64, "tokens": pl.Float64, "flops": pl.Float64, "value": pl.Float64}


def _long(chunk: Chunk) -> pl.DataFrame:
    """One row per non-empty metric cell: the measurements of a chunk."""
    frame = chunk.frame
    metrics = [m for m in chunk.metrics if m in frame.columns]
    if not metrics or not frame.height:
        return pl.DataFrame(
            schema={
                "row_number": pl.Int64,
                "run_id": pl.String,
                "step": pl.String,
                "tokens": pl.String,
                "flops": pl.String,
                "metric": pl.String,
                "value": pl.String,
            }
        )
    target = pl.Float64 if all(frame.schema[m].is_numeric() for m in metrics) else pl.String
    index = [
        c for c in (ROW, "run_id", "step", "tokens", "flops", "tokens_seen") if c in frame.columns
    ]
    long = frame.select(*index, *(pl.col(m).cast(target) for m in metrics)).unpivot(
        on=metrics, index=index, variable_name="metric", value_name="value"
    )
    empty = pl.col("value").is_null()
    if target == pl.String:
        empty = empty | (pl.col("value").str.strip_chars() == "")
    long = long.filter(~empty).rename({ROW: "row_number"})
    for c in ("step", "tokens", "flops"):
        if c not in long.columns:
            long = long.with_columns(pl.lit(None, pl.String).alias(c))
    return long.with_columns(pl.col("run_id").cast(pl.String))


def _validate_long(long: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame, bool]:
    """Validate measurements with the schema; clean text cells take a typed fast path.

    Returns the valid rows, the rejected rows, and whether the valid rows are in file order.
    """
    typed: dict[str, str] = {}  # column -> name of its typed copy
    casts, suspect = [], pl.lit(False)
    for c, dtype in _NUMERIC.items():
        src = long.schema[c]
        if src == pl.String:
            typed[c] = f"__typed_{c}"
            suspect = suspect | (pl.col(c).is_not_null() & pl.col(typed[c]).is_null())
        elif src.is_float() and dtype.is_integer():
            # validate_frame casts floats to integers by truncation: let text say "12.5".
            typed[c] = f"__typed_{c}"
            suspect = suspect | (pl.col(c) != pl.col(c).round(0))
        else:
            continue
        casts.append(pl.col(c).cast(dtype, strict=False).alias(typed[c]))
    # Each cell is cast once: the casts both find suspect rows and type the clean ones.
    marked = long.with_columns(casts).with_columns(suspect.alias("_suspect"))
    is_suspect = marked["_suspect"]
    clean = marked.filter(~is_suspect) if is_suspect.any() else marked
    parts = [
        clean.select(pl.col(typed[c]).alias(c) if c in typed else c for c in long.columns),
        long.filter(is_suspect).with_columns(pl.all().cast(pl.String)),
    ]
    valid, rejected = [], []
    for part in parts:
        if not part.height:
            continue
        checked = validate_frame(
            part, _ObservationRows, row_numbers=part["row_number"], fill_missing=True
        )
        valid.append(checked.valid)
        rejected.append(checked.rejected)
    empty_rej = pl.DataFrame(schema={"row_number": pl.Int64, "raw": pl.String, "reason": pl.String})
    return (
        pl.concat(valid) if valid else pl.DataFrame(),
        pl.concat(rejected) if rejected else empty_rej,
        len(valid) <= 1,
    )


def _raw_rows(frame: pl.DataFrame, row_numbers: pl.Series) -> pl.DataFrame:
    """The file's rows (as read, a JSON object each) for ``row_numbers``."""
    cols = [c for c in frame.columns if c != ROW]
    return frame.filter(pl.col(ROW).is_in(row_numbers.unique().implode())).select(
        pl.col(ROW).alias("row_number"),
        pl.struct(cols).struct.json_encode().alias("file_raw"),
    )


class _UniqueKeys:
    """A cheap proof that no ``(run_id, metric, step)`` repeats in a file.

    It holds when, for each metric, each run's rows form one block with strictly increasing
    steps, as in nearly every log; the rows can then go straight into ``observations``.
    Only when it fails are the rows staged and duplicates looked for in SQL (a hash
    aggregate over the whole file, which costs about as much as the load itself).
    """

    def __init__(self) -> None:
        self.holds = True
        self.last: dict[str, tuple[str, int]] = {}
        self.seen: set[tuple[str, str]] = set()

    def update(self, valid: pl.DataFrame, in_file_order: bool) -> None:
        if not self.holds or not valid.height:
            return
        if not in_file_order:
            self.holds = False
            return
        # The rows come metric by metric (the chunk unpivoted), each metric's in file order:
        # one slice per metric, no copy, and no hashing of the keys.
        blocks = valid["metric"].rle()
        metrics = blocks.struct.field("value").to_list()
        if len(set(metrics)) != len(metrics):  # pragma: no cover - not from one unpivot
            self.holds = False
            return
        run, step = pl.col("run_id"), pl.col("step")
        same = run == run.shift(1)
        offset = 0
        for metric, n in zip(metrics, blocks.struct.field("len").to_list(), strict=True):
            checks = (
                valid.slice(offset, n)
                .select(
                    (same & (step <= step.shift(1))).any().alias("backwards"),
                    run.filter(~same.fill_null(False)).implode().alias("starts"),
                    run.n_unique().alias("runs"),
                    step.first().alias("first_step"),
                    run.last().alias("last_run"),
                    step.last().alias("last_step"),
                )
                .row(0, named=True)
            )
            offset += n
            starts = checks["starts"]
            if checks["backwards"] or len(starts) != checks["runs"]:
                self.holds = False
                return
            prev = self.last.get(metric)
            for i, r in enumerate(starts):
                continues = i == 0 and prev is not None and prev[0] == r
                if continues and checks["first_step"] <= prev[1]:  # type: ignore[index]
                    self.holds = False
                    return
                if not continues and (metric, r) in self.seen:
                    self.holds = False
                    return
                self.seen.add((metric, r))
            self.last[metric] = (checks["last_run"], checks["last_step"])


@dataclass
class _Counts:
    rows_in: int = 0
    rows_rejected: int = 0
    records: int = 0
    metrics: set[str] = field(default_factory=set)
    run_ids: set[str] = field(default_factory=set)
    keys: _UniqueKeys = field(default_factory=_UniqueKeys)


def _load_chunk(
    chunk: Chunk,
    runs: _Runs,
    counts: _Counts,
    base: dict,
    quarantine_rows: Callable[[pl.DataFrame], None],
) -> pl.DataFrame:
    """Validate a chunk: pass its rejected rows to ``quarantine_rows`` and return the valid
    measurements (:data:`STAGE_COLUMNS`), after updating ``counts`` and the uniqueness
    proof. Touches no database (see :class:`_Writer`)."""
    runs.observe(chunk.frame)
    quarantine: list[pl.DataFrame] = []
    out = pl.DataFrame()
    if chunk.rejected is not None and chunk.rejected.height:
        quarantine.append(chunk.rejected)
        counts.rows_in += chunk.rejected.height
    long = _long(chunk)
    counts.records += chunk.frame.height
    counts.rows_in += long.height
    counts.metrics.update(chunk.metrics)
    if long.height:
        valid, rejected, in_order = _checked(long, runs)
        if rejected.height:
            quarantine.append(_explained(rejected, chunk.frame))
        if valid.height:
            valid = _with_tokens(valid, runs)
            counts.keys.update(valid, in_order)
            counts.run_ids.update(valid["run_id"].unique().to_list())
            out = valid.select(STAGE_COLUMNS)
    for q in quarantine:
        counts.rows_rejected += q.height
        quarantine_rows(q.with_columns(pl.lit(v).alias(k) for k, v in base.items()))
    return out


def _checked(long: pl.DataFrame, runs: _Runs) -> tuple[pl.DataFrame, pl.DataFrame, bool]:
    """Valid and rejected measurements (rows of a rejected run with that run's reason), and
    whether the valid ones are in file order."""
    ids = long["run_id"].drop_nulls().unique().to_list()
    runs.resolve([r for r in ids if r.strip()])
    long = _with_counter(long, runs)
    bad = long.clear()
    if any(r in runs.bad for r in ids):
        is_bad = pl.col("run_id").is_in(pl.Series(list(runs.bad), dtype=pl.String).implode())
        bad = long.filter(is_bad)
        long = long.filter(~is_bad)
    valid, rejected, in_order = _validate_long(long)
    if bad.height:
        reason = pl.col("run_id").replace_strict(runs.bad, return_dtype=pl.String)
        rejected = pl.concat(
            [rejected, bad.select("row_number", pl.lit("{}").alias("raw"), reason.alias("reason"))]
        )
    return valid, rejected, in_order


def _explained(rejected: pl.DataFrame, frame: pl.DataFrame) -> pl.DataFrame:
    """Rejected measurements as ``quarantine`` keeps them: the file's row, the reason naming
    the metric."""
    # Say which metric a bad `value` is. A row without a metric (its run was
    # rejected) keeps `value`: a null replacement would fail the whole file.
    metric = pl.col("raw").str.json_path_match("$.metric").fill_null("value")
    return (
        rejected.with_columns(
            pl.col("reason").str.replace_all("`value`", pl.format("`{}`", metric), literal=True)
        )
        .join(_raw_rows(frame, rejected["row_number"]), on="row_number", how="left")
        .select("row_number", pl.col("file_raw").alias("raw"), "reason")
    )


def _with_counter(long: pl.DataFrame, runs: _Runs) -> pl.DataFrame:
    """``tokens`` missing from a row taken from the file's ``tokens_seen`` (HF's
    ``num_input_tokens_seen``) for runs without a ``tokens_per_step``, whose derived count
    comes first (:data:`TOKEN_SOURCES`); the column is then dropped, as read (validated as
    ``tokens``)."""
    if "tokens_seen" not in long.columns:
        return long
    seen, tokens = long["tokens_seen"], long["tokens"]
    if seen.dtype != tokens.dtype:
        seen, tokens = seen.cast(pl.String), tokens.cast(pl.String)
    derived = [r for r, row in runs.good.items() if row["tokens_per_step"] is not None]
    use = ~pl.col("run_id").is_in(pl.Series(derived, dtype=pl.String).implode())
    return long.with_columns(pl.coalesce(tokens, pl.when(use).then(seen)).alias("tokens")).drop(
        "tokens_seen"
    )


def _with_tokens(valid: pl.DataFrame, runs: _Runs) -> pl.DataFrame:
    """Missing ``tokens`` as ``step * tokens_per_step`` of the run (0 at step 0: nothing
    was trained before the first step)."""
    tps = {r: row["tokens_per_step"] for r, row in runs.good.items()}
    if not (valid["tokens"].null_count() and any(v is not None for v in tps.values())):
        return valid
    derived = pl.col("step") * pl.col("run_id").replace_strict(
        tps, default=None, return_dtype=pl.Float64
    )
    return valid.with_columns(pl.coalesce("tokens", derived).alias("tokens"))
