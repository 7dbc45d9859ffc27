"""The curated datasets (``datasets/``): read, validate, cross-check and load them.

Every CSV in ``datasets/`` is one of three kinds, told by its first column: ``model_id``
(published models, one file per family), ``law_id`` (published law parameters, one row per
value) or ``allocation_id`` (published compute-optimal tables). ``sources.toml`` holds the
citations every row points to. A faulty file is a :class:`~scalefit.errors.DatasetError`
naming the file, the row (as a line number in the file) and the column.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import polars as pl

import scalefit

from .. import store
from ..errors import DatasetError, ValidationError
from ..schemas import (
    LawParameterSchema,
    ModelSchema,
    OptimalAllocationSchema,
    SourceSchema,
)
from .info import Previous, Scan, decide, started
from .validate import empty_frame, validate_frame

log = logging.getLogger(__name__)

CURATED_PATH = "datasets/"
"""The ``ingests.path`` under which curated loads are recorded."""

_KINDS = {"model_id": "models", "law_id": "law_parameters", "allocation_id": "optimal_allocations"}
_SCHEMAS = {
    "models": ModelSchema,
    "law_parameters": LawParameterSchema,
    "optimal_allocations": OptimalAllocationSchema,
}


def datasets_dir() -> Path:
    """The curated datasets shipped with scalefit (inside the wheel, or the clone's folder)."""
    here = Path(scalefit.__file__).resolve().parent
    candidate = here / "datasets"  # a folder in the wheel, a link to ../datasets in a clone
    if (candidate / "sources.toml").is_file():
        return candidate
    raise DatasetError(
        f"no curated datasets found next to {here}: reinstall scalefit (`pip install .`)",
        path=str(here / "datasets"),
    )


@dataclass(frozen=True, slots=True)
class CuratedData:
    """The curated tables, validated and cross-checked, ready to load."""

    sources: pl.DataFrame
    models: pl.DataFrame
    law_parameters: pl.DataFrame
    laws: pl.DataFrame
    optimal_allocations: pl.DataFrame
    sha256: str
    files: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Rows per table."""
        return {
            "sources": self.sources.height,
            "models": self.models.height,
            "laws": self.laws.height,
            "law_parameters": self.law_parameters.height,
            "optimal_allocations": self.optimal_allocations.height,
        }


def _raise_failures(path: Path, failures: pl.DataFrame, *, csv: bool = True) -> None:
    """Raise one DatasetError carrying every failure; the message names the first few.

    In a CSV, rows are reported as line numbers (the header is line 1); in ``sources.toml``,
    as the ``[sources.<id>]`` table, whose id the reason already names.
    """
    rows = failures.to_dicts()
    for r in rows:
        if csv and r["row_number"] is not None:
            r["row_number"] += 1
    parts = []
    for r in rows[:5]:
        where = [f"row {r['row_number']}"] if csv else []
        if r["column"]:
            where.append(f"column `{r['column']}`")
        parts.append(f"{', '.join(where)}: {r['reason']}" if where else r["reason"])
    more = f" (and {len(rows) - 5} more)" if len(rows) > 5 else ""
    hint = " Rows are line numbers; the header is row 1." if csv else ""
    raise DatasetError(
        f"{path}: {'; '.join(parts)}{more}.{hint}",
        path=str(path),
        row_number=rows[0]["row_number"] if csv else None,
        column=rows[0]["column"],
        failures=rows,
    )


def read_sources(path: Path) -> pl.DataFrame:
    """Read and validate ``sources.toml``: one ``[sources.<id>]`` table per cited source."""
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read it: {exc}", path=str(path)) from exc
    entries = doc.get("sources")
    if not isinstance(entries, dict) or not entries:
        raise DatasetError(f"{path}: no [sources.<id>] tables found", path=str(path))
    columns = list(SourceSchema.to_schema().columns)
    rows = []
    for source_id, entry in entries.items():
        unknown = set(entry) - set(columns)
        if unknown:
            raise DatasetError(
                f"{path}: [sources.{source_id}] has unknown key(s) {sorted(unknown)}; "
                f"allowed: {', '.join(c for c in columns if c != 'source_id')}",
                path=str(path),
                column=sorted(unknown)[0],
            )
        rows.append(
            {c: (None if entry.get(c) is None else str(entry.get(c))) for c in columns}
            | {"source_id": source_id}
        )
    frame = pl.DataFrame(rows, schema=dict.fromkeys(columns, pl.String))
    checked = validate_frame(frame, SourceSchema)
    if not checked.ok:
        ids = frame["source_id"].to_list()
        fails = checked.failures.with_columns(
            pl.col("row_number")
            .map_elements(lambda i: f"[sources.{ids[i - 1]}]", return_dtype=pl.String)
            .add(" ")
            .add(pl.col("reason"))
            .alias("reason")
        )
        _raise_failures(path, fails, csv=False)
    return checked.valid


def _read_csv(path: Path) -> tuple[str, pl.DataFrame]:
    try:
        frame = pl.read_csv(path, infer_schema=False, encoding="utf8")
    except Exception as exc:  # polars raises several error types for a bad CSV
        raise DatasetError(f"{path}: not a readable UTF-8 CSV: {exc}", path=str(path)) from exc
    if not frame.columns or frame.columns[0] not in _KINDS:
        raise DatasetError(
            f"{path}: unknown table: the first column must be one of {', '.join(_KINDS)}",
            path=str(path),
        )
    return _KINDS[frame.columns[0]], frame


def _prepare_models(frame: pl.DataFrame) -> pl.DataFrame:
    """Fill what the curated files leave to the code.

    A dense model's ``active_params`` is its ``params``. Where no training compute is
    published, ``C = 6 N D`` with ``N`` the parameters active per token (all of them for a
    dense model; the activated ones for a MoE, whose other experts cost no compute for a
    token), flagged as an estimate.
    """

    def number(name: str) -> pl.Expr:
        return pl.col(name).str.strip_chars().cast(pl.Float64, strict=False)

    def blank(name: str) -> pl.Expr:
        return pl.col(name).is_null() | (pl.col(name).str.strip_chars() == "")

    active = (
        pl.when(blank("active_params")).then(pl.col("params")).otherwise(pl.col("active_params"))
    )
    return frame.with_columns(active.alias("active_params")).with_columns(
        pl.when(blank("training_flops"))
        .then((6.0 * number("active_params") * number("tokens")).cast(pl.String))
        .otherwise(pl.col("training_flops"))
        .alias("training_flops"),
        blank("training_flops").cast(pl.String).alias("flops_is_estimate"),
    )


def _validate_file(path: Path, kind: str, frame: pl.DataFrame) -> pl.DataFrame:
    if kind == "models":
        frame = _prepare_models(frame)
    if kind == "law_parameters" and "caveat" not in frame.columns:
        frame = frame.with_columns(pl.lit(None, dtype=pl.String).alias("caveat"))
    try:
        checked = validate_frame(frame, _SCHEMAS[kind])
    except ValidationError as exc:
        names = exc.missing + exc.extra
        raise DatasetError(
            f"{path}: {exc}", path=str(path), column=names[0] if names else None
        ) from exc
    if not checked.ok:
        _raise_failures(path, checked.failures)
    return checked.valid


def _check_references(path: Path, frame: pl.DataFrame, known: set[str]) -> None:
    bad = frame.with_row_index("i").filter(~pl.col("source_id").is_in(sorted(known)))
    if bad.height:
        fails = bad.select(
            (pl.col("i") + 1).cast(pl.Int64).alias("row_number"),
            pl.lit("source_id").alias("column"),
            pl.format("`source_id` = {} is not defined in sources.toml", "source_id").alias(
                "reason"
            ),
        )
        _raise_failures(path, fails)


def _laws_from_parameters(params: pl.DataFrame) -> pl.DataFrame:
    """One ``laws`` row per law: its parameters gathered into a JSON object."""
    rows = []
    for (law_id,), group in params.group_by("law_id", maintain_order=True):
        form = group["form"][0]
        rows.append(
            {
                "law_id": law_id,
                "form": form,
                "origin": "rule" if form == "tokens_per_param" else "published",
                "parameters": json.dumps(
                    dict(zip(group["parameter"], group["value"], strict=True))
                ),
                "source_id": group["source_id"][0],
                "fit_id": None,
                "locator": "; ".join(dict.fromkeys(group["locator"].to_list())),
                "notes": "; ".join(dict.fromkeys(n for n in group["notes"].to_list() if n)) or None,
                "caveat": next((c for c in group["caveat"].to_list() if c), None),
            }
        )
    return pl.DataFrame(rows, schema={c: pl.String for c in rows[0]}) if rows else pl.DataFrame()


def read_curated(directory: Path | None = None) -> CuratedData:
    """Read, validate and cross-check every curated table in ``directory``.

    Raises
    ------
    DatasetError
        On the first faulty file, naming file, row and column (all of the file's failures are
        in ``failures``).
    """
    directory = directory or datasets_dir()
    sources_path = directory / "sources.toml"
    sources = read_sources(sources_path)
    known = set(sources["source_id"])
    digest = hashlib.sha256()
    digest.update(sources_path.read_bytes())
    parts: dict[str, list[pl.DataFrame]] = {k: [] for k in _SCHEMAS}
    files = [sources_path.name]
    for path in sorted(directory.glob("*.csv")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
        kind, raw = _read_csv(path)
        valid = _validate_file(path, kind, raw)
        _check_references(path, valid, known)
        parts[kind].append(valid)
        files.append(path.name)
    frames = {k: pl.concat(v) if v else empty_frame(_SCHEMAS[k]) for k, v in parts.items()}
    for kind, key in (("models", "model_id"), ("optimal_allocations", "allocation_id")):
        dupes = frames[kind].filter(pl.col(key).is_duplicated())[key].unique().to_list()
        if dupes:
            raise DatasetError(
                f"{directory}: duplicate `{key}` across files: {', '.join(sorted(dupes))}",
                path=str(directory),
                column=key,
            )
    dupe_parameters = frames["law_parameters"].filter(
        pl.struct("law_id", "parameter").is_duplicated()
    )
    if dupe_parameters.height:
        raise DatasetError(
            f"{directory}: duplicate law parameters across files", path=str(directory)
        )
    return CuratedData(
        sources=sources,
        models=frames["models"],
        law_parameters=frames["law_parameters"],
        laws=_laws_from_parameters(frames["law_parameters"]),
        optimal_allocations=frames["optimal_allocations"],
        sha256=digest.hexdigest(),
        files=files,
    )


@dataclass(frozen=True, slots=True)
class CuratedLoadInfo:
    """What a curated load did; mirrors its ``ingests`` row."""

    ingest_id: str
    sha256: str
    status: str
    counts: dict[str, int]

    @property
    def changed(self) -> bool:
        """True when the store was written."""
        return self.status == "ok"


def last_curated_sha(con: duckdb.DuckDBPyConnection) -> str | None:
    """sha256 of the last curated load that succeeded, if any."""
    rows = store.run(
        con,
        "SELECT sha256 FROM ingests WHERE path = ? AND status = 'ok' "
        "ORDER BY finished_at DESC LIMIT 1",
        [CURATED_PATH],
    )
    return rows[0][0] if rows else None


def load_curated(con: duckdb.DuckDBPyConnection, data: CuratedData) -> CuratedLoadInfo:
    """Load the curated tables in one transaction; skip when nothing changed since the last load.

    Curated rows replace the previous curated rows (sources of kind ``user_log`` and fitted
    laws are kept), so a second load of the same files changes nothing.
    """
    last = last_curated_sha(con)
    intact = bool(store.run(con, "SELECT count(*) FROM models")[0][0])
    previous = None if last is None else Previous(last, None, intact=intact)
    info = started("curated", CURATED_PATH, sha256=data.sha256, format="curated")
    if decide(previous, Scan(data.sha256), None).mode == "unchanged":
        log.info("curated datasets unchanged (sha256 %s); nothing to load", data.sha256[:12])
        return CuratedLoadInfo(info.ingest_id, data.sha256, "unchanged", data.counts())
    rows = sum(data.counts().values())
    message = f"{len(data.files)} files: {', '.join(data.files)}"
    with store.transaction(con):
        store.write(con, "sources", data.sources, replace_where="kind <> 'user_log'")
        store.write(con, "models", data.models)
        store.write(con, "optimal_allocations", data.optimal_allocations)
        store.write(con, "law_parameters", data.law_parameters)
        store.write(con, "laws", data.laws, replace_where="origin <> 'fitted'")
        store.write(con, "ingests", info.finished(rows, 0, message).to_frame())
    log.info("loaded curated datasets: %s", data.counts())
    return CuratedLoadInfo(info.ingest_id, data.sha256, "ok", data.counts())
