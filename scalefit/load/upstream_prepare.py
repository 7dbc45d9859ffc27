"""Reading an upstream file and preparing its rows: ``runs`` + ``observations`` (kind
``runs``) or ``upstream_models`` + ``upstream_changes`` (kind ``models``), each row validated
with its schema and every rejected row kept with its reason. Touches no store but to read
the previous snapshot's models."""

from __future__ import annotations

import json
import logging
import os
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from .. import store
from ..errors import (
    UpstreamFormatError,
)
from ..schemas import (
    ObservationSchema,
    RunSchema,
    UpstreamModelSchema,
)
from ..schemas.upstream import CHANGE_KINDS
from .info import now as _now
from .upstream_sources import Upstream
from .validate import ROW, validate_frame

log = logging.getLogger(__name__)


def _sql(text: str) -> str:
    """A SQL string literal (for ``replace_where`` predicates, which take no parameters)."""
    return "'" + text.replace("'", "''") + "'"


_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff"))


_VALUE_COLUMNS = ("params", "tokens", "flops")


_OBS_COLUMNS = frozenset(ObservationSchema.to_schema().columns)


def normalize_name(name: str | None) -> str | None:
    """A model name as compared across snapshots.

    NFKC (full-width and compatibility characters, non-breaking spaces), zero-width
    characters removed, stripped, and every run of whitespace made one space. Case is kept.

    Examples
    --------
    >>> normalize_name("  Chinchilla \\t 70B\\u00a0")
    'Chinchilla 70B'
    >>> normalize_name("   ") is None
    True
    """
    if name is None:
        return None
    text = unicodedata.normalize("NFKC", name).translate(_ZERO_WIDTH)
    text = " ".join(text.split())
    return text or None


def _clean_header(name: str) -> str:
    return name.translate(_ZERO_WIDTH).strip()


def read_upstream_file(upstream: Upstream, path: str | os.PathLike[str]) -> pl.DataFrame:
    """Read a snapshot as text columns, headers stripped (and of a byte-order mark).

    Raises
    ------
    UpstreamFormatError
        The file cannot be read in its format, or two headers are the same once stripped.
    """
    path = Path(path)
    try:
        if upstream.format == "csv":
            frame = pl.read_csv(path, infer_schema=False, encoding="utf8")
        elif upstream.format == "jsonl":
            frame = pl.read_ndjson(path)
        else:
            frame = pl.read_parquet(path)
        frame = frame.with_columns(pl.all().cast(pl.String))
    except Exception as exc:  # polars raises several error types for a bad file
        raise UpstreamFormatError(
            f"{upstream.name}: {path} is not readable as {upstream.format}: {exc}. "
            f"Check `format` in [upstreams.{upstream.name}]."
        ) from exc
    cleaned = [_clean_header(c) for c in frame.columns]
    if len(set(cleaned)) != len(cleaned):
        raise UpstreamFormatError(f"{upstream.name}: {path} has duplicated column names")
    return frame.rename(dict(zip(frame.columns, cleaned, strict=True)))


def _mapped(upstream: Upstream, frame: pl.DataFrame) -> dict[str, str]:
    mapping = {t: _clean_header(c) for t, c in upstream.columns}
    missing = {t: c for t, c in mapping.items() if c not in frame.columns}
    if missing:
        listed = ", ".join(f"`{t}` = {c!r}" for t, c in missing.items())
        raise UpstreamFormatError(
            f"{upstream.name}: {upstream.url} lacks the column(s) its entry maps ({listed}); "
            f"its columns are {frame.columns}. Fix [upstreams.{upstream.name}.columns] "
            "in sources.toml."
        )
    return mapping


def _raw_rows(frame: pl.DataFrame) -> pl.Series:
    return frame.select(pl.struct(pl.all()).struct.json_encode().alias("raw"))["raw"]


def _rejected(parts: list[pl.DataFrame]) -> pl.DataFrame:
    """Merge rejected rows of several checks: one row per row number, reasons joined."""
    parts = [p.select("row_number", "reason") for p in parts if p.height]
    if not parts:
        return pl.DataFrame(schema={"row_number": pl.Int64, "reason": pl.String})
    return (
        pl.concat(parts)
        .group_by("row_number", maintain_order=True)
        .agg(pl.col("reason").unique(maintain_order=True).str.join("; "))
        .sort("row_number")
    )


@dataclass(frozen=True, slots=True)
class _Prepared:
    writes: list[tuple[str, pl.DataFrame, str | None]]
    rejected: pl.DataFrame
    rows_in: int
    rows_ok: int
    changes: int


def _number(column: str) -> pl.Expr:
    return pl.col(column).str.strip_chars().cast(pl.Float64, strict=False)


def _runs_source(upstream: Upstream, frame: pl.DataFrame) -> tuple[pl.DataFrame, str | None]:
    """The mapped columns as text, a missing ``tokens`` or ``flops`` derived (``C = 6 N D``),
    and run ids ``<name>:<run_id or row>``; and which quantity was derived, if one was."""
    cols = _mapped(upstream, frame)
    rows = pl.Series(ROW, range(1, frame.height + 1), dtype=pl.Int64)
    src = frame.select(
        pl.col(cols[t]).alias(t)
        for t in ("params", "loss", "tokens", "flops", "run_id")
        if t in cols
    ).with_columns(rows)
    derived = None
    if "tokens" not in cols:
        if "flops" in cols:
            derived = "tokens = flops / (6 params)"
            tokens = (_number("flops") / (6.0 * _number("params"))).cast(pl.String)
        else:
            tokens = pl.lit(None, pl.String)
        src = src.with_columns(tokens.alias("tokens"))
    if "flops" not in cols:
        if "tokens" in cols:
            derived = "flops = 6 params tokens"
            flops = (6.0 * _number("params") * _number("tokens")).cast(pl.String)
        else:
            flops = pl.lit(None, pl.String)
        src = src.with_columns(flops.alias("flops"))
    if "run_id" in cols:
        run_id = pl.lit(f"{upstream.name}:") + pl.col("run_id").str.strip_chars()
    else:
        run_id = pl.lit(f"{upstream.name}:") + pl.col(ROW).cast(pl.String)
    return src.with_columns(run_id.alias("run_id")), derived


def _runs_rows(
    upstream: Upstream, src: pl.DataFrame, derived: str | None, sha: str, ingest_id: str
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The ``runs`` and ``observations`` rows (as text, not yet validated) of the source."""
    name = upstream.name
    configs = [
        json.dumps(
            {"upstream": name, "snapshot_sha256": sha, "row_number": i}
            | ({"derived": derived} if derived else {})
        )
        for i in range(1, src.height + 1)
    ]
    runs = src.select(
        "run_id",
        pl.lit(name).alias("project"),
        "params",
        pl.lit("given").alias("params_method"),
        "tokens",
        "flops",
        pl.Series("config", configs, dtype=pl.String),
        pl.lit(upstream.source_id).alias("source_id"),
        pl.lit(ingest_id).alias("ingest_id"),
    )
    obs = src.select(
        "run_id",
        pl.lit("0").alias("step"),
        "tokens",
        "flops",
        pl.lit(upstream.metric).alias("metric"),
        pl.col("loss").alias("value"),
        pl.lit(ingest_id).alias("ingest_id"),
        *([pl.col(ROW).alias("row_number")] if "row_number" in _OBS_COLUMNS else []),
    )
    return runs, obs


def _prepare_runs(upstream: Upstream, frame: pl.DataFrame, sha: str, ingest_id: str) -> _Prepared:
    """``runs`` + ``observations`` rows of a snapshot of published loss points."""
    cols = _mapped(upstream, frame)
    src, derived = _runs_source(upstream, frame)
    runs, obs = _runs_rows(upstream, src, derived, sha, ingest_id)
    rows = src[ROW]
    checked_runs = validate_frame(runs, RunSchema, row_numbers=rows, fill_missing=True)
    checked_obs = validate_frame(obs, ObservationSchema, row_numbers=rows, fill_missing=True)
    rejected = _rejected([checked_runs.rejected, checked_obs.rejected])
    # Reasons name the store's columns; say which column of the file each one came from.
    for target, column in (cols | {"value": cols["loss"]}).items():
        if target not in ("loss", "run_id"):
            rejected = rejected.with_columns(
                pl.col("reason").str.replace_all(
                    f"`{target}`", f"`{target}` (file column {column!r})", literal=True
                )
            )
    bad = rejected["row_number"].implode()
    row_of = pl.DataFrame({"run_id": src["run_id"], ROW: src[ROW]}).unique("run_id", keep="first")

    def good(valid: pl.DataFrame) -> pl.DataFrame:
        joined = valid.join(row_of, on="run_id", how="left")
        return joined.filter(~pl.col(ROW).is_in(bad)).drop(ROW)

    runs_ok, obs_ok = good(checked_runs.valid), good(checked_obs.valid)
    mine = f"project = {_sql(upstream.name)} AND starts_with(run_id, {_sql(upstream.name + ':')})"
    return _Prepared(
        writes=[
            # Observations first: their predicate finds the old runs before those are replaced.
            ("observations", obs_ok, f"run_id IN (SELECT run_id FROM runs WHERE {mine})"),
            ("runs", runs_ok, mine),
        ],
        rejected=rejected,
        rows_in=frame.height,
        rows_ok=runs_ok.height,
        changes=0,
    )


def _format_value(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e21:
            return str(int(value))
        return repr(value)
    return str(value)


def _values(row: Mapping[str, Any]) -> dict[str, str | None]:
    """A model row's compared values: params, tokens, flops and the extra columns, as text."""
    out = {c: _format_value(row.get(c)) for c in _VALUE_COLUMNS}
    out.update(json.loads(row["extra"]))
    return out


def model_changes(old: pl.DataFrame, new: pl.DataFrame) -> pl.DataFrame:
    """What changed from one snapshot of a model database to the next.

    Rows are matched on their normalised ``name``. A removed and an added row are one
    ``renamed`` change when their names are equal ignoring case, or else when all their other
    values are equal (and not all missing) and no other removed or added row has the same
    values. Columns new to (or gone from) the file are one ``column_added`` /
    ``column_removed`` change each, not one per row.

    Parameters
    ----------
    old, new
        Rows shaped like ``upstream_models`` (``name``, ``params``, ``tokens``, ``flops``,
        ``extra``) of the previous and the new snapshot.

    Returns
    -------
    pl.DataFrame
        ``name``, ``change``, ``column_name``, ``old_value``, ``new_value``: one row per change,
        sorted by change then name.

    Examples
    --------
    >>> row = {"params": [1e9], "tokens": [2e10], "flops": [None], "extra": ['{"org": "A"}']}
    >>> a = pl.DataFrame({"name": ["M"]} | row)
    >>> b = pl.DataFrame({"name": ["M-1"]} | row)
    >>> model_changes(a, b).row(0)
    ('M-1', 'renamed', 'name', 'M', 'M-1')
    """
    old_rows = {r["name"]: _values(r) for r in old.iter_rows(named=True)}
    new_rows = {r["name"]: _values(r) for r in new.iter_rows(named=True)}
    return _ModelDiff(old_rows, new_rows).changes()


_Values = dict[str, str | None]


class _ModelDiff:
    """:func:`model_changes` of two snapshots' rows (name -> compared values)."""

    def __init__(self, old_rows: dict[str, _Values], new_rows: dict[str, _Values]) -> None:
        self.old_rows, self.new_rows = old_rows, new_rows
        old_cols = set().union(*old_rows.values()) if old_rows else set()
        new_cols = set().union(*new_rows.values()) if new_rows else set()
        both = bool(old_rows and new_rows)
        self.compared = sorted(old_cols & new_cols) if both else []
        self.out: list[dict[str, Any]] = []
        if both:
            for c in sorted(new_cols - old_cols):
                self.add(None, "column_added", c, None, None)
            for c in sorted(old_cols - new_cols):
                self.add(None, "column_removed", c, None, None)
        self.removed = [n for n in old_rows if n not in new_rows]
        self.added = [n for n in new_rows if n not in old_rows]
        self.pairs: list[tuple[str, str]] = []

    def add(self, name: str | None, change: str, column: str | None, old: Any, new: Any) -> None:
        row = {"name": name, "change": change, "column_name": column}
        self.out.append(row | {"old_value": old, "new_value": new})

    def diff(self, old_name: str, new_name: str) -> None:
        before, after = self.old_rows[old_name], self.new_rows[new_name]
        for c in self.compared:
            if before.get(c) != after.get(c):
                self.add(new_name, "changed", c, before.get(c), after.get(c))

    def match(self, key: Callable[[str, dict[str, _Values]], Any]) -> None:
        """Pair a removed and an added row whose ``key`` is theirs alone."""
        gone: dict[Any, list[str]] = {}
        came: dict[Any, list[str]] = {}
        for n in self.removed:
            if (k := key(n, self.old_rows)) is not None:
                gone.setdefault(k, []).append(n)
        for n in self.added:
            if (k := key(n, self.new_rows)) is not None:
                came.setdefault(k, []).append(n)
        for k, names in gone.items():
            if len(names) == 1 and len(came.get(k, [])) == 1:
                self.pairs.append((names[0], came[k][0]))
                self.removed.remove(names[0])
                self.added.remove(came[k][0])

    def signature(self, n: str, rows: dict[str, _Values]) -> tuple | None:
        values = tuple(rows[n].get(c) for c in self.compared)
        return values if any(v is not None for v in values) else None

    def changes(self) -> pl.DataFrame:
        self.match(lambda n, _rows: n.casefold())
        self.match(self.signature)
        for old_name, new_name in self.pairs:
            self.add(new_name, "renamed", "name", old_name, new_name)
            self.diff(old_name, new_name)
        for n in sorted(set(self.old_rows) & set(self.new_rows)):
            self.diff(n, n)
        for n in self.removed:
            self.add(n, "removed", None, json.dumps(self.old_rows[n], sort_keys=True), None)
        for n in self.added:
            self.add(n, "added", None, None, json.dumps(self.new_rows[n], sort_keys=True))
        order = {c: i for i, c in enumerate(CHANGE_KINDS)}
        self.out.sort(key=lambda r: (order[r["change"]], r["name"] or "", r["column_name"] or ""))
        names = ("name", "change", "column_name", "old_value", "new_value")
        return pl.DataFrame(self.out, schema=dict.fromkeys(names, pl.String))


def _prepare_models(
    con: duckdb.DuckDBPyConnection,
    upstream: Upstream,
    frame: pl.DataFrame,
    sha: str,
    previous_sha: str | None,
) -> _Prepared:
    """``upstream_models`` rows of a snapshot and, when it replaces another, its changes."""
    models = _model_rows(upstream, frame, sha)
    # A normalised name seen before is a duplicate: keep the first, quarantine the others.
    dupes = (
        models.with_columns(pl.col("row_number").first().over("name").alias("_first"))
        .filter(pl.col("name").is_not_null() & (pl.col("row_number") != pl.col("_first")))
        .select(
            "row_number",
            pl.format(
                "duplicate `name` = {} once normalised (first at row {})", "name", "_first"
            ).alias("reason"),
        )
    )
    unique = models.filter(~pl.col("row_number").is_in(dupes["row_number"].implode()))
    checked = validate_frame(
        unique, UpstreamModelSchema, row_numbers=unique["row_number"], fill_missing=True
    )
    rejected = _rejected([dupes, checked.rejected])
    # Validation strips text; `name_raw` is kept exactly as the file has it.
    valid = (
        checked.valid.drop("name_raw")
        .join(models.select("row_number", "name_raw"), on="row_number", how="left")
        .select(checked.valid.columns)
    )
    writes: list[tuple[str, pl.DataFrame, str | None]] = []
    changes = 0
    if previous_sha is not None and previous_sha != sha:
        old = store.query(con, "SELECT * FROM upstream_models WHERE upstream = ?", [upstream.name])
        diff = model_changes(old, valid)
        if diff.height:
            log_rows = diff.with_columns(
                pl.lit(upstream.name).alias("upstream"),
                pl.lit(previous_sha).alias("from_sha256"),
                pl.lit(sha).alias("to_sha256"),
                pl.lit(_now()).alias("detected_at"),
            )
            writes.append(("upstream_changes", log_rows, None))
            changes = diff.height
    writes.append(("upstream_models", valid, f"upstream = {_sql(upstream.name)}"))
    return _Prepared(writes, rejected, frame.height, valid.height, changes)


def _model_rows(upstream: Upstream, frame: pl.DataFrame, sha: str) -> pl.DataFrame:
    """``upstream_models`` rows (as text) of a file: names normalised, the file's other
    columns kept as JSON in ``extra``."""
    cols = _mapped(upstream, frame)
    n = frame.height
    mapped_cols = set(cols.values())
    others = [c for c in frame.columns if c not in mapped_cols]
    extras = [
        json.dumps({c: (None if v is None else v.strip()) for c, v in r.items()})
        for r in frame.select(others).iter_rows(named=True)
    ]
    raw_names = frame[cols["name"]]
    names = [normalize_name(v) for v in raw_names.to_list()]
    return pl.DataFrame(
        {
            "upstream": [upstream.name] * n,
            "name": names,
            "name_raw": raw_names,
            "snapshot_sha256": [sha] * n,
            "row_number": pl.Series(ROW, range(1, n + 1), dtype=pl.Int64),
            **{
                c: frame[cols[c]] if c in cols else pl.Series(c, [None] * n, dtype=pl.String)
                for c in _VALUE_COLUMNS
            },
            "extra": extras,
        },
        schema_overrides={"name": pl.String, "name_raw": pl.String},
    )
