"""Ingest users' training logs into ``runs`` and ``observations``.

One call per file (:func:`ingest_file`) or per folder (:func:`ingest_paths`); each file is one
transaction that also writes its ``ingests`` row and its rejected rows to ``quarantine``, so a
process killed mid-ingest leaves nothing of that file behind.

Formats (detected from the name and first line; see :data:`scalefit._readers.FORMATS`):

- ``csv``, ``jsonl``, ``parquet``: a long table with ``run_id``, ``step``, optional ``tokens``
  and ``flops``, one or more loss columns (``loss``, ``train_loss``, ``eval_loss``, any name
  ending in ``loss``) and optional run-level columns ``project``, ``params``,
  ``unique_tokens``, ``tokens_per_step`` (constant per run).
- ``trainer_state``: a Hugging Face Trainer ``trainer_state.json``.
- ``wandb``: a W&B run-history CSV export (``_step``, ``train/loss``…) or a chart export
  (``Step``, ``<run> - <metric>``, ``… __MIN``, ``… __MAX``).

What a row of the result means
------------------------------
Counts are of *measurements*: one per non-empty loss cell (a row with ``train_loss`` and
``eval_loss`` is two). ``rows_in = rows_ok + rows_rejected`` for every ingest.

A file without a ``run_id`` column is one run: its id is ``run_id`` (or ``name``) in the
sidecar, else the folder's name when a sidecar describes it (``runs/gpt-125m/run.json``), or
the parent of ``checkpoint-N`` folders for a Trainer state, else the file's stem.

Run metadata (first found wins): the file's own columns, then a sidecar ``run.json`` /
``run.yaml`` beside the file (a ``runs: {run_id: {...}}`` section for per-run values), then
``params`` derived from ``n_layer``/``d_model`` in that sidecar or in a Trainer's
``config.json`` (``12 n_layer d_model^2``, ``params_method = 'config_12ld2'``), then the
``project``/``params``/``tokens_per_step`` arguments, then what ``runs`` already holds for the
run. ``tokens`` missing from a row is ``step * tokens_per_step`` (null at step 0). Counts
(``params``, ``unique_tokens``, ``tokens_per_step``) may be written as the command line takes
them (``"350M"``, ``"1.3B"``: :func:`scalefit._counts.parse_count`). A run left without any
token count is stored with a warning (:attr:`IngestInfo.warnings`): it cannot be fitted.

Re-ingesting
------------
- A file whose bytes and settings (arguments, sidecar, scalefit version) are unchanged is
  skipped and nothing is written (status ``unchanged`` in the returned info only).
- A line-oriented log (CSV, JSONL, W&B CSV) that grew (its previously read bytes are
  unchanged) is read on from its last complete line: only new rows are added. A last line
  without its newline is read, and read again once the file grows past it.
- Any other change replaces that file's observations in one transaction, and deletes the
  rows its earlier ingests quarantined (``quarantine`` holds current problems only).
- Duplicated ``(run_id, metric, step)`` in a file: the last row wins (a resumed run re-logs
  its steps); earlier ones go to ``quarantine`` saying which row superseded them. Across
  files, the later ingest wins: ``observations`` is upserted on its key, by deleting the
  stored rows with the file's keys before inserting. scalefit, not a DuckDB PRIMARY KEY,
  keeps that key unique (an index over millions of rows cost as much as the load itself).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import logging
import math
import os
import queue
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pandera.polars as pa
import polars as pl

from .. import __version__, store
from .._counts import parse_count
from ..errors import DatabaseBusyError, IngestError, ScalefitError, UnknownFormatError
from ..schemas import TABLES, ObservationSchema, RunSchema
from .readers import (
    FORMATS,
    LINE_FORMATS,
    RUN_COLUMNS,
    Chunk,
    Source,
    detect_format,
    metric_name,
    open_source,
)
from .validate import ROW, validate_frame

log = logging.getLogger(__name__)

SIDECARS = ("run.json", "run.yaml", "run.yml")
"""Run-metadata files read with every log in the same folder."""

LOG_SUFFIXES = (".csv", ".jsonl", ".ndjson", ".parquet", ".pq")
"""Suffixes a folder walk picks up (plus files named ``trainer_state.json``)."""

DEFAULT_PROJECT = "default"

MEMORY_LIMIT = os.environ.get("SCALEFIT_INGEST_MEMORY", "256MB")
"""DuckDB's ``memory_limit`` on the connections the ingest opens (env
``SCALEFIT_INGEST_MEMORY``). Within a file's transaction DuckDB keeps the blocks it has
written cached, so without a limit of its own its memory grows with the file (by about
12 MB per million rows, up to 80% of the machine's RAM); those blocks are on disk already,
so the limit costs no speed (measured at 10M rows). A careful pass over a big file (see
:func:`_write`) spills its stage to DuckDB's temporary directory beyond it."""

ProgressCallback = Callable[["IngestProgress"], None]


class _ObservationRows(ObservationSchema):
    """``observations`` as read from a file: with the file's ``row_number``, and without the
    per-frame key check, since within a file the last duplicate wins (checked file-wide
    after all chunks) where the frame check would reject both copies and could not see
    across chunks. The table's key still holds: the file is made free of duplicates before
    its rows are written."""

    row_number: int = pa.Field(ge=1, description="1-based data row of the file.")

    class Config:
        unique = None


@dataclass(frozen=True, slots=True)
class IngestProgress:
    """What :func:`ingest_paths` reports while it works."""

    path: Path
    file_index: int
    n_files: int
    rows_read: int
    bytes_total: int
    info: IngestInfo | None = None
    """Set once the file is done."""


@dataclass(frozen=True, slots=True)
class IngestInfo:
    """One ingest attempt of one file: the ``ingests`` row, plus what it touched.

    Attributes
    ----------
    status
        ``ok``, ``rejected_rows``, ``failed``, or ``unchanged`` (skipped by hash; not
        recorded in ``ingests``: a second run over the same files changes no table).
    mode
        ``new``, ``appended`` (a grown log, only new rows read), ``replaced`` (the file
        changed: its rows were replaced), ``unchanged`` or ``failed``.
    runs
        Run ids written.
    warnings
        Problems that reject no row but keep a run from being fitted (also in ``message``).
    """

    ingest_id: str
    path: str
    sha256: str | None
    format: str | None
    started_at: dt.datetime
    finished_at: dt.datetime | None
    rows_in: int
    rows_ok: int
    rows_rejected: int
    status: str
    message: str | None
    size_bytes: int | None = None
    checkpoint_bytes: int | None = None
    checkpoint_sha256: str | None = None
    settings_sha256: str | None = None
    mode: str = "new"
    runs: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    """What a user should know although nothing was rejected (e.g. a run that cannot be
    fitted for want of tokens); also in ``message``."""

    def to_row(self) -> dict:
        """The ``ingests`` row."""
        return {c: getattr(self, c) for c in TABLES["ingests"].columns}

    def __str__(self) -> str:
        counts = f"{self.rows_in} in, {self.rows_ok} ok, {self.rows_rejected} rejected"
        text = f"{self.path}: {self.status} ({self.mode}; {counts})"
        return f"{text}: {self.message}" if self.message else text


@dataclass(frozen=True, slots=True)
class IngestReport:
    """What :func:`ingest_paths` did: one :class:`IngestInfo` per file, and what it skipped.

    Iterating or indexing it goes over the infos. :attr:`exit_code` is the CLI's exit status.
    """

    infos: tuple[IngestInfo, ...]
    skipped: tuple[tuple[str, str], ...] = ()
    """``(path, reason)`` of files a folder walk did not read."""

    def __iter__(self) -> Iterator[IngestInfo]:
        return iter(self.infos)

    def __len__(self) -> int:
        return len(self.infos)

    def __getitem__(self, i: int) -> IngestInfo:
        return self.infos[i]

    def count(self, status: str) -> int:
        """Files with ``status``."""
        return sum(i.status == status for i in self.infos)

    @property
    def summary(self) -> dict[str, int]:
        """Files, rows in/ok/rejected, and files unchanged, failed, skipped."""
        return {
            "files": len(self.infos),
            "rows_in": sum(i.rows_in for i in self.infos),
            "rows_ok": sum(i.rows_ok for i in self.infos),
            "rows_rejected": sum(i.rows_rejected for i in self.infos),
            "unchanged": self.count("unchanged"),
            "failed": self.count("failed"),
            "skipped": len(self.skipped),
        }

    @property
    def exit_code(self) -> int:
        """0 when all is well, 1 when a file failed, 2 when rows were rejected (and none
        failed)."""
        if self.count("failed"):
            return 1
        if any(i.rows_rejected for i in self.infos):
            return 2
        return 0

    def to_frame(self) -> pl.DataFrame:
        """One row per file: path, format, mode, status, counts, message."""
        cols = ["path", "format", "mode", "status", "rows_in", "rows_ok", "rows_rejected"]
        schema = {c: pl.Int64 if c.startswith("rows") else pl.String for c in cols}
        schema["message"] = pl.String
        return pl.DataFrame([{c: getattr(i, c) for c in schema} for i in self.infos], schema=schema)

    def __str__(self) -> str:
        s = self.summary
        return (
            f"{s['files']} file(s): {s['rows_in']} rows in, {s['rows_ok']} ok, "
            f"{s['rows_rejected']} rejected; {s['unchanged']} unchanged, {s['failed']} failed, "
            f"{s['skipped']} skipped"
        )


# --------------------------------------------------------------------------- settings


def _check_options(fmt: str | None, params: float | None, tokens_per_step: float | None) -> None:
    if fmt is not None and fmt not in FORMATS:
        raise UnknownFormatError(f"`fmt` must be one of {', '.join(FORMATS)}, not {fmt!r}")
    for name, value in (("params", params), ("tokens_per_step", tokens_per_step)):
        if value is not None and not (value > 0 and value != float("inf")):
            raise ValueError(f"`{name}` must be a positive finite number, not {value!r}")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _read_mapping(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise IngestError(f"{path}: not valid JSON ({exc}); fix the run metadata") from None
        except RecursionError:
            raise IngestError(f"{path}: JSON nested too deeply; fix the run metadata") from None
    else:
        try:
            import yaml
        except ImportError:  # pragma: no cover - PyYAML comes with Prefect
            raise IngestError(
                f"{path}: reading YAML needs PyYAML (`pip install pyyaml`); or write run.json"
            ) from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise IngestError(f"{path}: not valid YAML ({exc}); fix the run metadata") from None
        except RecursionError:
            raise IngestError(f"{path}: YAML nested too deeply; fix the run metadata") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise IngestError(f"{path}: run metadata must be a mapping of keys to values")
    return data


@dataclass(frozen=True)
class _Metadata:
    sidecar: dict
    model_config: dict
    files: tuple[str, ...]
    digest: str


def _metadata(path: Path, fmt: str) -> _Metadata:
    """Sidecar run metadata beside ``path`` (and a Trainer's ``config.json``)."""
    sidecar: dict = {}
    files: list[str] = []
    h = hashlib.sha256()
    for name in SIDECARS:
        candidate = path.parent / name
        if candidate.is_file():
            sidecar = _read_mapping(candidate)
            files.append(name)
            h.update(candidate.read_bytes())
            break
    model_config: dict = {}
    config_json = path.parent / "config.json"
    if fmt == "trainer_state" and config_json.is_file():
        with contextlib.suppress(ValueError, OSError, IngestError):
            model_config = _read_mapping(config_json)
            files.append("config.json")
            h.update(config_json.read_bytes())
    return _Metadata(sidecar, model_config, tuple(files), h.hexdigest())


def _settings_sha(fmt: str | None, meta: _Metadata, **options: object) -> str:
    text = json.dumps(
        {"format": fmt, "metadata": meta.digest, "version": __version__, **options},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()


_LAYER_KEYS = ("n_layer", "n_layers", "num_layers", "num_hidden_layers")
_WIDTH_KEYS = ("d_model", "n_embd", "hidden_size")


def params_from_config(config: dict) -> float | None:
    """Non-embedding parameters ``12 n_layer d_model^2`` from a model config, or None.

    Accepts GPT-2 (``n_layer``, ``n_embd``), Llama-style (``num_hidden_layers``,
    ``hidden_size``) and plain (``n_layer``, ``d_model``) names. The count is the usual
    approximation of Kaplan et al. (2020), eq. 2.1 (attention ``4 d^2`` plus MLP ``8 d^2`` per
    layer); embeddings (``vocab_size * d_model``) are excluded.

    Raises
    ------
    IngestError
        The count overflows (e.g. ``d_model`` 1e200): not a model, a typo.

    Examples
    --------
    >>> params_from_config({"n_layer": 12, "d_model": 768, "vocab_size": 50257})
    84934656.0
    """
    layers = next((config[k] for k in _LAYER_KEYS if k in config), None)
    width = next((config[k] for k in _WIDTH_KEYS if k in config), None)
    try:
        layers, width = float(layers), float(width)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    if layers <= 0 or width <= 0:
        return None
    try:
        params = 12.0 * layers * width**2
    except OverflowError:
        params = math.inf
    if not math.isfinite(params):
        raise IngestError(
            f"the model config's layers ({layers:g}) and width ({width:g}) give no finite "
            "parameter count (12 n_layer d_model^2); fix them, or give `params` in run.json "
            "or with --params"
        )
    return params


# --------------------------------------------------------------------------- files


@dataclass(frozen=True)
class _Scan:
    size: int
    sha256: str
    checkpoint_bytes: int
    checkpoint_sha256: str
    prefix_sha256: str | None
    prefix_lines: int
    header_end: int | None


def _scan(path: Path, prefix: int) -> _Scan:
    """Hash ``path`` in one pass: the whole file, its complete lines, and its first
    ``prefix`` bytes (to tell a grown log from a changed one)."""
    h = hashlib.sha256()
    cp, cp_hash = 0, h.copy()
    pos, lines, header_end = 0, 0, None
    prefix_sha = hashlib.sha256().hexdigest() if prefix == 0 else None
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            segments = [block]
            if pos < prefix < pos + len(block):
                segments = [block[: prefix - pos], block[prefix - pos :]]
            for seg in segments:
                i = seg.rfind(b"\n")
                if i < 0:
                    h.update(seg)
                else:
                    h.update(seg[: i + 1])
                    cp, cp_hash = pos + i + 1, h.copy()
                    h.update(seg[i + 1 :])
                if header_end is None and (j := seg.find(b"\n")) >= 0:
                    header_end = pos + j + 1
                if pos < prefix:
                    lines += seg.count(b"\n")
                pos += len(seg)
                if pos == prefix:
                    prefix_sha = h.hexdigest()
    return _Scan(pos, h.hexdigest(), cp, cp_hash.hexdigest(), prefix_sha, lines, header_end)


class _PendingScan:
    """:func:`_scan` of a whole file in a thread of its own (``hashlib`` releases the GIL).

    For a file never ingested before, nothing but its ``ingests`` row depends on its hash:
    the rows are read meanwhile, instead of after a pass that hashes the file.
    """

    def __init__(self, path: Path) -> None:
        self._scan: _Scan | None = None
        self._error: OSError | None = None
        self._thread = threading.Thread(target=self._work, args=(path,), name="scalefit-scan")
        self._thread.daemon = True
        self._thread.start()

    def _work(self, path: Path) -> None:
        try:
            self._scan = _scan(path, 0)
        except OSError as exc:
            self._error = exc

    def result(self) -> _Scan:
        """Wait for the scan.

        Raises
        ------
        OSError
            The file could not be read.
        """
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._scan is not None
        return self._scan


def discover(paths: Iterable[str | os.PathLike[str]]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files to ingest under ``paths`` and files a folder walk skips, with the reason.

    A file named explicitly is always tried (an unknown format then fails visibly); in a
    folder, files with a log suffix (:data:`LOG_SUFFIXES`) and ``trainer_state.json`` are
    taken, hidden files and folders are ignored, and everything else is listed as skipped.

    Raises
    ------
    IngestError
        A path does not exist.
    """
    files: list[Path] = []
    skipped: list[tuple[str, str]] = []
    seen: set[Path] = set()

    def take(f: Path) -> None:
        if f.resolve() not in seen:
            seen.add(f.resolve())
            files.append(f)

    for raw in paths:
        path = Path(raw)
        if path.is_file():
            take(path)
        elif path.is_dir():
            for f in sorted(path.rglob("*")):
                rel = f.relative_to(path)
                if not f.is_file() or any(p.startswith(".") for p in rel.parts):
                    continue
                if f.name in SIDECARS:
                    skipped.append((str(f), "run metadata (read with the logs beside it)"))
                elif f.suffix.lower() in LOG_SUFFIXES or f.name == "trainer_state.json":
                    take(f)
                else:
                    skipped.append((str(f), "not a recognised log format"))
        else:
            raise IngestError(f"{path}: no such file or folder; check the path")
    return files, skipped


# --------------------------------------------------------------------------- runs


class _Restart(Exception):
    """The single pass over a file found what only a careful pass handles: start the file's
    transaction again with ``careful=True`` (see :func:`_write`)."""


class _Runs:
    """Resolves each run's metadata once, validating it with :class:`RunSchema`.

    A run's values in the file's run-level columns (``params``…) must be known when the run
    is resolved. ``careful=True`` reads them for the whole file first (one more pass over
    it) and validates the runs of each chunk as they come. Otherwise (the single pass) the
    values arrive with each chunk (:meth:`observe`) and all runs are validated once, at the
    end (:meth:`rows`: each validation costs tens of milliseconds however few the rows); a
    run that shows a new value after it was resolved, or fails its validation, raises
    :class:`_Restart`, so that the result never depends on which pass made it.
    """

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        source: Source,
        meta: _Metadata,
        *,
        project: str | None,
        params: float | None,
        tokens_per_step: float | None,
        ingest_id: str,
        careful: bool = True,
    ) -> None:
        self.meta = meta
        self.file_meta = source.meta
        self.flags = {"project": project, "params": params, "tokens_per_step": tokens_per_step}
        self.ingest_id = ingest_id
        self.good: dict[str, dict] = {}
        self.bad: dict[str, str] = {}
        self.columns: dict[str, dict[str, list]] = {}
        self.careful = careful
        self.unchecked: dict[str, dict] = {}  # single pass: candidate rows, validated in rows()
        self.streamed = source.has_run_columns and not careful
        # What `runs` holds, read once: the chunks' statements then run in the writer thread
        # (:class:`_Writer`), and this transaction writes `runs` only after the last chunk.
        names = ("project", "params", "params_method", "tokens_per_step", "unique_tokens")
        self.existing: dict[str, dict] = {
            row[0]: dict(zip(names, row[1:], strict=True))
            for row in store.run(con, f"SELECT run_id, {', '.join(names)} FROM runs")
        }
        cols = source.run_columns() if careful else None
        if cols is not None and cols.height:
            present = [c for c in RUN_COLUMNS if c in cols.columns]
            grouped = (
                cols.filter(pl.col("run_id").is_not_null())
                .group_by("run_id")
                .agg(pl.col(c).drop_nulls().unique().sort() for c in present)
            )
            for row in grouped.iter_rows(named=True):
                self.columns[str(row["run_id"])] = {c: row[c] for c in present}

    def observe(self, frame: pl.DataFrame) -> None:
        """Take in a chunk's run-level values (when they are not prescanned).

        Raises
        ------
        _Restart
            A run already resolved shows a value it was resolved without.
        """
        present = [c for c in RUN_COLUMNS if c in frame.columns]
        if not self.streamed or not present or not frame.height:
            return
        # Each (run, values) combination first appears where a row differs from the one
        # before it: in a log, one row per run or so, so only those rows are grouped.
        cols = ["run_id", *present]
        changed = pl.any_horizontal(pl.col(c).ne_missing(pl.col(c).shift(1)) for c in cols)
        grouped = (
            frame.select(cols)
            .filter(changed.fill_null(True) & pl.col("run_id").is_not_null())
            .group_by("run_id")
            .agg(pl.col(c).drop_nulls().unique() for c in present)
        )
        for row in grouped.iter_rows(named=True):
            run_id = str(row["run_id"])
            have = self.columns.setdefault(run_id, {c: [] for c in present})
            changed = False
            for c in present:
                seen = have.get(c, [])
                if set(row[c]) - set(seen):
                    have[c] = sorted(set(seen) | set(row[c]))
                    changed = True
            if changed and (run_id in self.good or run_id in self.bad):
                raise _Restart(f"run `{run_id}`: run-level values change after its first rows")

    def resolve(self, run_ids: Sequence[str]) -> None:
        new = [r for r in run_ids if r not in self.good and r not in self.bad]
        if not new:
            return
        rows, reasons = [], {}
        for run_id in new:
            row, reason = self._candidate(run_id, self.existing.get(run_id, {}))
            if reason:
                reasons[run_id] = reason
            else:
                rows.append(row)
        if rows and not self.careful:
            for row in rows:
                tps = row["tokens_per_step"]
                try:  # needed now, to derive tokens; the rest is checked in rows()
                    tps = None if tps is None else float(tps)
                except ValueError:
                    raise _Restart(f"run `{row['run_id']}`: tokens_per_step {tps!r}") from None
                self.unchecked[row["run_id"]] = row
                self.good[row["run_id"]] = {**row, "tokens_per_step": tps}
        elif rows:
            frame = pl.DataFrame(rows, schema=dict.fromkeys(rows[0], pl.String))
            checked = validate_frame(frame, RunSchema, fill_missing=True)
            for row in checked.valid.iter_rows(named=True):
                self.good[row["run_id"]] = row
            for row in checked.rejected.iter_rows(named=True):
                run_id = json.loads(row["raw"])["run_id"]
                reasons[run_id] = f"run `{run_id}`: {row['reason']}"
        self.bad.update(reasons)

    def rows(self, run_ids: Sequence[str]) -> pl.DataFrame:
        """The ``runs`` rows to write, validated.

        Raises
        ------
        _Restart
            In the single pass, a run fails its validation: the careful pass rejects its
            rows, with the reason, from the first one.
        """
        if self.careful:
            return pl.DataFrame([self.good[r] for r in run_ids])
        rows = [self.unchecked[r] for r in run_ids]
        checked = validate_frame(
            pl.DataFrame(rows, schema=dict.fromkeys(rows[0], pl.String)),
            RunSchema,
            fill_missing=True,
        )
        if not checked.ok:
            raise _Restart(f"{checked.rejected.height} run(s) fail their validation")
        return checked.valid

    def _candidate(self, run_id: str, existing: dict) -> tuple[dict, str | None]:
        side = dict(self.meta.sidecar)
        per_run = side.pop("runs", None)
        if isinstance(per_run, dict) and isinstance(per_run.get(run_id), dict):
            side.update(per_run[run_id])
        cols = self.columns.get(run_id, {})
        for name, values in cols.items():
            if len(values) > 1:
                shown = ", ".join(str(v) for v in values[:5])
                return {}, (
                    f"run `{run_id}`: `{name}` differs between its rows ({shown}); a run has "
                    f"one {name}: fix the file or split the run"
                )

        def pick(name: str) -> object:
            if cols.get(name):
                return _count(name, cols[name][0])
            for value in (side.get(name), self.flags.get(name), existing.get(name)):
                if value is not None:
                    return _count(name, value)
            return None

        config = side.get("config") if isinstance(side.get("config"), dict) else {}
        params, method = pick("params"), "given"
        if cols.get("params") or side.get("params") is not None:
            pass
        elif derived := params_from_config({**self.meta.model_config, **config, **side}):
            params, method = derived, "config_12ld2"
        elif self.flags["params"] is None and existing.get("params") is not None:
            method = existing.get("params_method") or "given"
        if params is None:
            where = (
                f"`params` in {self.meta.files[0]}"
                if self.meta.files
                else ("`params` to run.json beside the file")
            )
            return {}, (
                f"run `{run_id}` has no parameter count: pass `--params N`, add {where}, "
                "add a `params` column, or give `n_layer` and `d_model` in run.json"
            )
        settings = {
            k: v
            for k, v in {**self.file_meta, **side}.items()
            if k not in ("runs", "params", "project", "tokens_per_step", "unique_tokens")
        }
        if self.meta.model_config:
            settings["model_config"] = self.meta.model_config
        flops = side.get("flops", self.file_meta.get("flops"))
        row = {
            "run_id": run_id,
            "project": pick("project") or DEFAULT_PROJECT,
            "params": params,
            "params_method": method,
            "flops": flops,
            "unique_tokens": pick("unique_tokens"),
            "tokens_per_step": pick("tokens_per_step"),
            "config": json.dumps(settings, default=str, sort_keys=True),
            "ingest_id": self.ingest_id,
        }
        return {k: None if v is None else str(v) for k, v in row.items()}, None


_COUNTS = ("params", "unique_tokens", "tokens_per_step")


def _count(name: str, value: object) -> object:
    """A count given as text (``"350M"``, ``"1.3B"``) read as the command line reads it
    (:func:`scalefit._counts.parse_count`); text that is no count is left for the schema to
    reject with its reason."""
    if name in _COUNTS and isinstance(value, str):
        with contextlib.suppress(ValueError):
            return parse_count(value)
    return value


# --------------------------------------------------------------------------- rows

_STAGE = "_scalefit_stage"
_STAGE_COLUMNS = ("run_id", "step", "tokens", "flops", "metric", "value", "row_number")
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
    index = [c for c in (ROW, "run_id", "step", "tokens", "flops") if c in frame.columns]
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
    measurements (:data:`_STAGE_COLUMNS`), after updating ``counts`` and the uniqueness
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
        ids = long["run_id"].drop_nulls().unique().to_list()
        runs.resolve([r for r in ids if r.strip()])
        bad = long.clear()
        if any(r in runs.bad for r in ids):
            is_bad = pl.col("run_id").is_in(pl.Series(list(runs.bad), dtype=pl.String).implode())
            bad = long.filter(is_bad)
            long = long.filter(~is_bad)
        valid, rejected, in_order = _validate_long(long)
        if bad.height:
            rejected = pl.concat(
                [
                    rejected,
                    bad.select(
                        "row_number",
                        pl.lit("{}").alias("raw"),
                        pl.col("run_id")
                        .replace_strict(runs.bad, return_dtype=pl.String)
                        .alias("reason"),
                    ),
                ]
            )
        if rejected.height:
            # Say which metric a bad `value` is. A row without a metric (its run was
            # rejected) keeps `value`: a null replacement would fail the whole file.
            metric = pl.col("raw").str.json_path_match("$.metric").fill_null("value")
            rejected = (
                rejected.with_columns(
                    pl.col("reason").str.replace_all(
                        "`value`", pl.format("`{}`", metric), literal=True
                    )
                )
                .join(_raw_rows(chunk.frame, rejected["row_number"]), on="row_number", how="left")
                .select("row_number", pl.col("file_raw").alias("raw"), "reason")
            )
            quarantine.append(rejected)
        if valid.height:
            tps = {r: row["tokens_per_step"] for r, row in runs.good.items()}
            if valid["tokens"].null_count() and any(v is not None for v in tps.values()):
                derived = pl.col("step") * pl.col("run_id").replace_strict(
                    tps, default=None, return_dtype=pl.Float64
                )
                valid = valid.with_columns(
                    pl.coalesce("tokens", pl.when(pl.col("step") > 0).then(derived)).alias("tokens")
                )
            counts.keys.update(valid, in_order)
            counts.run_ids.update(valid["run_id"].unique().to_list())
            out = valid.select(_STAGE_COLUMNS)
    for q in quarantine:
        counts.rows_rejected += q.height
        quarantine_rows(q.with_columns(pl.lit(v).alias(k) for k, v in base.items()))
    return out


def _supersede_duplicates(con: duckdb.DuckDBPyConnection, base: dict) -> int:
    """Keep the last row of each duplicated (run_id, metric, step); quarantine the others."""
    store.run(
        con,
        f"""CREATE TEMP TABLE _scalefit_dups AS
        SELECT s.*, k.last_row FROM {_STAGE} s JOIN (
            SELECT run_id, metric, step, max(row_number) AS last_row FROM {_STAGE}
            GROUP BY ALL HAVING count(*) > 1
        ) k USING (run_id, metric, step) WHERE s.row_number < k.last_row""",
    )
    try:
        n = store.run(con, "SELECT count(*) FROM _scalefit_dups")[0][0]
        if n:
            store.run(
                con,
                """INSERT INTO quarantine (ingest_id, path, row_number, raw, reason)
                SELECT ?, ?, row_number,
                    to_json({run_id: run_id, step: step, tokens: tokens, flops: flops,
                             metric: metric, value: value})::VARCHAR,
                    'step ' || step || ' of run `' || run_id || '` (`' || metric
                        || '`) is logged again at row ' || last_row
                        || '; the last value is kept (a resumed run re-logs its steps)'
                FROM _scalefit_dups""",
                [base["ingest_id"], base["path"]],
            )
            store.run(
                con,
                f"""DELETE FROM {_STAGE} USING _scalefit_dups d
                WHERE {_STAGE}.run_id = d.run_id AND {_STAGE}.metric = d.metric
                  AND {_STAGE}.step = d.step AND {_STAGE}.row_number = d.row_number""",
            )
        return n
    finally:
        store.run(con, "DROP TABLE _scalefit_dups")


def _forget_file(con: duckdb.DuckDBPyConnection, path: str) -> None:
    """Delete the observations a file's earlier ingests wrote (and runs left empty), and
    the rows they quarantined: the new version's problems replace them, so ``quarantine``
    shows only current problems (``ingests`` still records every attempt and its counts)."""
    earlier = "SELECT ingest_id FROM ingests WHERE path = ?"
    store.run(
        con, f"DELETE FROM quarantine WHERE path = ? AND ingest_id IN ({earlier})", [path, path]
    )
    store.run(con, f"DELETE FROM observations WHERE ingest_id IN ({earlier})", [path])
    store.run(
        con,
        f"""DELETE FROM runs WHERE ingest_id IN ({earlier})
        AND run_id NOT IN (SELECT DISTINCT run_id FROM observations)""",
        [path],
    )


class _Writer:
    """Runs a file's statements in a thread of its own, in the order they are submitted, so
    that DuckDB writes one chunk while polars validates the next (DuckDB and polars both
    release the GIL; measured: a third less time for validating and writing 5M rows).

    The connection is used by one thread at a time: while a writer is open, the reading
    thread submits its statements instead of running them, and :meth:`drain` or
    :meth:`close` it before using the connection again. The queue holds one job: at most
    two chunks wait for DuckDB. After a job fails, the rest are skipped and the error is
    raised in the submitting thread.
    """

    def __init__(self) -> None:
        self._jobs: queue.Queue[Callable[[], None] | None] = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self._skip = False
        self._thread = threading.Thread(target=self._work, name="scalefit-ingest-writer")
        self._thread.daemon = True
        self._thread.start()

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                if job is None:
                    return
                if self._error is None and not self._skip:
                    job()
            except BaseException as exc:  # raised in the submitting thread
                self._error = exc
            finally:
                self._jobs.task_done()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def submit(self, job: Callable[[], None]) -> None:
        """Queue ``job`` (waiting while the queue is full)."""
        self._raise()
        self._jobs.put(job)

    def drain(self) -> None:
        """Wait for every queued job; raise the first error."""
        self._jobs.join()
        self._raise()

    def close(self) -> None:
        """Stop the thread: the job under way finishes, queued ones are skipped."""
        if self._thread.is_alive():
            self._skip = True
            self._jobs.put(None)
            self._thread.join()


class _Sink:
    """Where a file's valid measurements go: straight into ``observations``, chunk by chunk,
    or (``stage=True``) into a temporary stage first; written by a :class:`_Writer`.

    Writing straight is one copy fewer and keeps memory bounded by the chunk. It needs the
    file's keys proved unique as the chunks arrive (:class:`_UniqueKeys`): it then deletes
    stored rows with a chunk's keys (only for runs that had observations before this
    ingest) and inserts the chunk. When the proof fails before anything was written, the
    sink turns to the stage; after, it raises :class:`_Restart` (the rows written lack the
    row numbers that quarantining a superseded row needs). The stage holds the whole file,
    so that :func:`_supersede_duplicates` can keep the last of each key.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, ingest_id: str, *, stage: bool) -> None:
        if not ingest_id.isalnum():  # pragma: no cover - always uuid4().hex
            raise ValueError(f"unexpected ingest id {ingest_id!r}")
        self.con = con
        self.ingest_id = ingest_id
        self.staging = False
        self.submitted = 0
        self.checked: set[str] = set()  # written by the writer thread only
        self.clashing: set[str] = set()
        self.writer = _Writer()
        if stage:
            self._open_stage()

    def _open_stage(self) -> None:
        self.staging = True
        self.writer.submit(
            lambda: store.run(
                self.con,
                f"""CREATE TEMP TABLE {_STAGE} (run_id VARCHAR, step BIGINT, tokens DOUBLE,
                flops DOUBLE, metric VARCHAR, value DOUBLE, row_number BIGINT)""",
            )
        )

    def quarantine(self, rows: pl.DataFrame) -> None:
        """Queue rejected rows for ``quarantine``."""
        self.writer.submit(lambda: store.write(self.con, "quarantine", rows))

    def add(self, valid: pl.DataFrame, *, proven: bool) -> None:
        """Queue a chunk's valid rows (``proven``: the file's keys are unique so far)."""
        if not valid.height:
            return
        if not self.staging and not proven:
            if self.submitted:
                raise _Restart("a (run_id, metric, step) repeats after rows were written")
            self._open_stage()
        self.submitted += valid.height
        if self.staging:
            self.writer.submit(
                lambda: store.run_on_frame(
                    self.con, valid, "_chunk", f"INSERT INTO {_STAGE} SELECT * FROM _chunk"
                )
            )
        else:
            self.writer.submit(lambda: self._insert(valid))

    def _insert(self, valid: pl.DataFrame) -> None:
        """In the writer thread: replace stored rows with the chunk's keys, insert it."""
        runs = valid["run_id"].unique().to_list()
        new = [r for r in runs if r not in self.checked]
        if new:
            # Only rows of earlier ingests can be found: this one has written no row of a
            # run before it first checked it.
            self.clashing.update(
                r
                for (r,) in store.run(
                    self.con,
                    "SELECT DISTINCT run_id FROM observations WHERE run_id IN (SELECT unnest(?))",
                    [new],
                )
            )
            self.checked.update(new)
        if self.clashing.intersection(runs):
            store.run_on_frame(self.con, valid, "_chunk", _delete_keys_sql("_chunk"))
        store.run_on_frame(
            self.con,
            valid,
            "_chunk",
            # The ingest id is hex (uuid4): safe as a literal (a query takes no parameters).
            f"INSERT INTO observations ({_OBS_COLUMNS}, ingest_id) "
            f"SELECT {_OBS_COLUMNS}, '{self.ingest_id}' FROM _chunk",
        )

    def finish(self, counts: _Counts, base: dict) -> int:
        """Wait for the writer; write what the stage holds (its duplicates superseded
        first). Returns the rows written."""
        self.writer.drain()
        self.writer.close()
        if not self.staging:
            return self.submitted
        if not counts.keys.holds:
            counts.rows_rejected += _supersede_duplicates(self.con, base)
        run_ids = sorted(counts.run_ids)
        rows_ok = store.run(self.con, f"SELECT count(*) FROM {_STAGE}")[0][0]
        clash = store.run(
            self.con,
            "SELECT count(*) FROM (SELECT 1 FROM observations "
            "WHERE run_id IN (SELECT unnest(?)) LIMIT 1)",
            [run_ids],
        )[0][0]
        if clash:
            store.run(self.con, _delete_keys_sql(_STAGE))
        store.run(
            self.con,
            f"INSERT INTO observations ({_OBS_COLUMNS}, ingest_id) "
            f"SELECT {_OBS_COLUMNS}, ? FROM {_STAGE}",
            [self.ingest_id],
        )
        store.run(self.con, f"DROP TABLE {_STAGE}")
        self.staging = False
        return rows_ok

    def close(self) -> None:
        """Stop the writer (after an error: before the transaction is rolled back)."""
        self.writer.close()


_OBS_COLUMNS = ", ".join(c for c in _STAGE_COLUMNS if c != "row_number")


def _delete_keys_sql(incoming: str) -> str:
    """SQL deleting the stored observations whose key is in ``incoming``.

    ``observations`` is upserted on its key (its declared policy), which scalefit, not a
    PRIMARY KEY, keeps unique: deleting the stored rows with the incoming keys (themselves
    free of duplicates) before inserting the incoming rows keeps it so, and lets the later
    ingest win.
    """
    assert TABLES["observations"].policy == "upsert"
    return f"""DELETE FROM observations USING {incoming} s
        WHERE observations.run_id = s.run_id AND observations.metric = s.metric
          AND observations.step = s.step"""


def _write(
    con: duckdb.DuckDBPyConnection,
    source: Source,
    runs: _Runs,
    counts: _Counts,
    base: dict,
    progress: Callable[[int], None] | None,
    *,
    careful: bool = False,
) -> tuple[int, tuple[str, ...]]:
    """Read, validate and write a file's rows (inside the caller's transaction).

    One pass, writing each chunk straight into ``observations``, unless ``careful`` (after a
    :class:`_Restart`): run-level values are then read first and rows staged.
    """
    sink = _Sink(con, base["ingest_id"], stage=careful)
    try:
        for chunk in source.chunks():
            valid = _load_chunk(chunk, runs, counts, base, sink.quarantine)
            sink.add(valid, proven=counts.keys.holds)
            if progress:
                progress(counts.rows_in)
        rows_ok = sink.finish(counts, base)
    finally:
        sink.close()
    run_ids = tuple(sorted(counts.run_ids))
    if not run_ids:
        return 0, ()
    store.write(con, "runs", runs.rows(run_ids), validate=careful)
    store.run(
        con,
        """UPDATE runs SET tokens = o.tokens, flops = coalesce(o.flops, runs.flops)
        FROM (SELECT run_id, max(tokens) AS tokens, max(flops) AS flops
              FROM observations WHERE run_id IN (SELECT unnest(?)) GROUP BY run_id) o
        WHERE runs.run_id = o.run_id""",
        [list(run_ids)],
    )
    return rows_ok, run_ids


# --------------------------------------------------------------------------- driver


@contextlib.contextmanager
def _connection(
    db: duckdb.DuckDBPyConnection | str | os.PathLike[str],
) -> Iterator[duckdb.DuckDBPyConnection]:
    """``db`` if it is a connection (its settings are the caller's), else the store opened
    for this ingest, with DuckDB's memory bounded (:data:`MEMORY_LIMIT`)."""
    if isinstance(db, duckdb.DuckDBPyConnection):
        yield db
    else:
        with store.connect(db) as con:
            store.run(con, "SET memory_limit = '" + MEMORY_LIMIT.replace("'", "''") + "'")
            yield con


_PREVIOUS = """
SELECT ingest_id, sha256, format, status, message, size_bytes, checkpoint_bytes,
       checkpoint_sha256, settings_sha256
FROM ingests WHERE path = ? {where} ORDER BY started_at DESC LIMIT 1
"""
_PREV_COLS = (
    "ingest_id sha256 format status message size_bytes checkpoint_bytes checkpoint_sha256 "
    "settings_sha256"
).split()


def _previous(con: duckdb.DuckDBPyConnection, path: str, where: str = "") -> dict | None:
    rows = store.run(con, _PREVIOUS.format(where=where), [path])
    return dict(zip(_PREV_COLS, rows[0], strict=True)) if rows else None


def _run_id_default(path: Path, fmt: str, meta: _Metadata) -> str:
    side = meta.sidecar
    for key in ("run_id", "name"):
        if isinstance(side.get(key), str | int) and str(side[key]).strip():
            return str(side[key]).strip()
    folder = path.parent
    if fmt == "trainer_state":
        if folder.name.startswith("checkpoint-") and folder.parent.name:
            folder = folder.parent
        return folder.name or path.stem
    # A run.json describes the run of its folder: `runs/gpt-125m/{run.json,log.csv}`.
    return folder.name if meta.files and folder.name else path.stem


def _tail_copy(path: Path, scan: _Scan, offset: int, tmp: Path) -> Path:
    """A CSV of the header line plus the bytes from ``offset`` on."""
    out = tmp / path.name
    with path.open("rb") as src, out.open("wb") as dst:
        dst.write(src.read(scan.header_end or 0))
        src.seek(offset)
        shutil.copyfileobj(src, dst, 1 << 20)
    return out


def _message(
    mode: str,
    source: Source,
    run_ids: Sequence[str],
    meta: _Metadata,
    rejected_runs: dict[str, str],
    warnings: Sequence[str],
) -> str:
    words = {
        "new": "read",
        "appended": "grown: read the new rows",
        "replaced": "changed: replaced its rows",
    }[mode]
    parts = [words]
    if run_ids:
        shown = ", ".join(run_ids[:5]) + (
            f" and {len(run_ids) - 5} more" if len(run_ids) > 5 else ""
        )
        parts.append(f"runs: {shown}")
    elif not rejected_runs:
        parts.append("no data rows")
    if rejected_runs:
        # The cause, not "no data rows": e.g. a run without a parameter count.
        reasons = list(rejected_runs.values())
        parts.append(
            "; ".join(reasons[:3]) + (f" (and {len(reasons) - 3} more)" if len(reasons) > 3 else "")
        )
    parts.extend(warnings)
    if meta.files:
        parts.append(f"metadata from {', '.join(meta.files)}")
    if source.ignored:
        parts.append(f"ignored columns: {', '.join(source.ignored[:10])}")
    return "; ".join(parts)


def _tokenless_warnings(con: duckdb.DuckDBPyConnection, run_ids: Sequence[str]) -> tuple[str, ...]:
    """A warning per written run that has no token count at any step (in any file): such a
    run is stored, but no law can be fitted to it until its tokens are known."""
    if not run_ids:
        return ()
    missing = store.run(
        con,
        "SELECT run_id FROM runs WHERE run_id IN (SELECT unnest(?)) AND tokens IS NULL "
        "ORDER BY run_id",
        [list(run_ids)],
    )
    return tuple(
        f"run `{r}` has no token information (no `tokens`, no steps x `tokens_per_step` "
        "(a column, run.json or --tokens-per-step), no HF `num_input_tokens_seen`): it "
        "cannot be fitted until its tokens are known"
        for (r,) in missing
    )


def _ingest_rows(
    con: duckdb.DuckDBPyConnection,
    info: IngestInfo,
    source: Source,
    meta: _Metadata,
    mode: str,
    base: dict,
    progress: Callable[[int], None] | None,
    complete: Callable[[IngestInfo], IngestInfo],
    **run_options: float | str | None,
) -> IngestInfo:
    """The file's one transaction: its rows, runs, quarantine and ``ingests`` row.

    A single pass first; if it meets what only a careful pass handles (:class:`_Restart`),
    everything it did is rolled back and the file is read again, carefully. ``complete``
    adds what the ``ingests`` row still lacks (a new file's hash: :class:`_PendingScan`).
    """
    for careful in (False, True):
        counts = _Counts()
        try:
            with store.transaction(con):
                if mode == "replaced":
                    _forget_file(con, info.path)
                runs = _Runs(
                    con, source, meta, ingest_id=info.ingest_id, careful=careful, **run_options
                )
                rows_ok, run_ids = _write(
                    con, source, runs, counts, base, progress, careful=careful
                )
                if counts.records and not counts.metrics:
                    raise IngestError(
                        f"{info.path}: no loss column found in any row (a key named like "
                        "`loss`, `train_loss`, `eval_loss`)"
                    )
                warnings = _tokenless_warnings(con, run_ids)
                done = dataclasses.replace(
                    complete(info),
                    finished_at=_now(),
                    rows_in=counts.rows_in,
                    rows_ok=rows_ok,
                    rows_rejected=counts.rows_rejected,
                    status="rejected_rows" if counts.rows_rejected else "ok",
                    message=_message(mode, source, run_ids, meta, runs.bad, warnings),
                    mode=mode,
                    runs=run_ids,
                    warnings=warnings,
                )
                if done.rows_in != done.rows_ok + done.rows_rejected:  # pragma: no cover
                    raise AssertionError(f"row accounting is off: {done}")
                store.write(con, "ingests", pl.DataFrame([done.to_row()]))
                return done
        except _Restart as why:
            if careful:  # pragma: no cover - the careful pass never restarts
                raise AssertionError(f"{info.path}: the careful pass restarted: {why}") from None
            log.info("%s: reading again with a stage (%s)", info.path, why)
    raise AssertionError("unreachable")  # pragma: no cover


def ingest_file(
    db: duckdb.DuckDBPyConnection | str | os.PathLike[str],
    path: str | os.PathLike[str],
    *,
    project: str | None = None,
    params: float | None = None,
    tokens_per_step: float | None = None,
    fmt: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> IngestInfo:
    """Ingest one log file in one transaction; return what was done.

    Parameters
    ----------
    db
        An open store connection, or the DuckDB file to open (for this file only).
    path
        The log file.
    project, params, tokens_per_step
        Defaults for runs whose file and sidecar do not say (see the module docstring).
        Default None: ``project`` is then ``default``, and a run without a parameter count
        is rejected to ``quarantine``.
    fmt
        Force a format (one of :data:`scalefit._readers.FORMATS`); default None: detect.
    progress
        Called with the number of measurements read so far, after each chunk.

    Returns
    -------
    IngestInfo
        The attempt; failures to parse are returned (status ``failed``), not raised.

    Raises
    ------
    DatabaseBusyError
        Another process held the database for longer than the bounded wait.
    ValueError
        An argument is invalid.
    """
    _check_options(fmt, params, tokens_per_step)
    path = Path(path).resolve()
    key = str(path)
    ingest_id = uuid.uuid4().hex
    started = _now()
    base = {"ingest_id": ingest_id, "path": key}
    info = IngestInfo(ingest_id, key, None, fmt, started, None, 0, 0, 0, "failed", None)
    try:
        detected = fmt or detect_format(path)
        info = dataclasses.replace(info, format=detected)
        meta = _metadata(path, detected)
    except (ScalefitError, OSError) as exc:
        return _record_failure(db, info, exc)
    settings = _settings_sha(
        fmt, meta, project=project, params=params, tokens_per_step=tokens_per_step
    )
    with _connection(db) as con:
        # DuckDB draws its own progress bar on stdout for long statements; ours is enough.
        store.run(con, "SET enable_progress_bar = false")
        prev = _previous(con, key, "AND status IN ('ok', 'rejected_rows')")
        last = _previous(con, key)
        info = dataclasses.replace(info, settings_sha256=settings)

        def scanned(info: IngestInfo, scan: _Scan) -> IngestInfo:
            line = detected in LINE_FORMATS
            return dataclasses.replace(
                info,
                sha256=scan.sha256,
                size_bytes=scan.size,
                checkpoint_bytes=scan.checkpoint_bytes if line else scan.size,
                checkpoint_sha256=scan.checkpoint_sha256 if line else scan.sha256,
            )

        pending = _PendingScan(path) if prev is None and last is None else None

        def complete(info: IngestInfo) -> IngestInfo:
            return info if pending is None else scanned(info, pending.result())

        mode, offset, row_offset = "new" if prev is None else "replaced", 0, 0
        if pending is None:  # seen before: the hash says what to do
            try:
                scan = _scan(path, (prev or {}).get("checkpoint_bytes") or 0)
            except OSError as exc:
                return _record_failure(con, info, exc)
            info = scanned(info, scan)
            if prev and prev["sha256"] == scan.sha256 and prev["settings_sha256"] == settings:
                return dataclasses.replace(
                    info,
                    status="unchanged",
                    mode="unchanged",
                    finished_at=_now(),
                    message="unchanged since ingest " + prev["ingest_id"][:12],
                    format=prev["format"],
                )
            if (
                last
                and last["status"] == "failed"
                and last["sha256"] == scan.sha256
                and last["settings_sha256"] == settings
            ):
                return dataclasses.replace(
                    info,
                    status="failed",
                    mode="failed",
                    finished_at=_now(),
                    message=f"{last['message']} (unchanged since that attempt; not retried)",
                )
            if (
                prev
                and detected in LINE_FORMATS
                and prev["format"] == detected
                and prev["settings_sha256"] == settings
                and prev["checkpoint_bytes"]
                and scan.prefix_sha256 == prev["checkpoint_sha256"]
                and (detected == "jsonl" or prev["checkpoint_bytes"] >= (scan.header_end or 0))
            ):
                mode, offset = "appended", prev["checkpoint_bytes"]
                row_offset = scan.prefix_lines - (0 if detected == "jsonl" else 1)
        try:
            with tempfile.TemporaryDirectory(prefix="scalefit-ingest-") as tmp:
                read_path = path
                if mode == "appended" and detected != "jsonl":
                    read_path = _tail_copy(path, scan, offset, Path(tmp))
                source = open_source(
                    read_path,
                    detected,
                    run_id=_run_id_default(path, detected, meta),
                    offset=offset if detected == "jsonl" else 0,
                    row_offset=row_offset,
                )
                done = _ingest_rows(
                    con,
                    info,
                    source,
                    meta,
                    mode,
                    base,
                    progress,
                    complete,
                    project=project,
                    params=params,
                    tokens_per_step=tokens_per_step,
                )
        except DatabaseBusyError:
            raise
        except Exception as exc:
            if not isinstance(
                exc, ScalefitError | pl.exceptions.PolarsError | OSError | ValueError
            ):
                log.exception("unexpected error while ingesting %s", path)
            with contextlib.suppress(OSError):
                info = complete(info)
            return _record_failure(con, info, exc)
    log.info("%s", done)
    return done


def _failure_message(exc: BaseException) -> str:
    if isinstance(exc, ScalefitError):
        return str(exc)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "utf-8" in text.lower() or isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 text ({text}); re-save the file as UTF-8"
    return f"cannot parse: {text}"


def _record_failure(
    db: duckdb.DuckDBPyConnection | str | os.PathLike[str], info: IngestInfo, exc: BaseException
) -> IngestInfo:
    failed = dataclasses.replace(
        info,
        status="failed",
        mode="failed",
        finished_at=_now(),
        rows_in=0,
        rows_ok=0,
        rows_rejected=0,
        checkpoint_bytes=None,
        checkpoint_sha256=None,
        message=_failure_message(exc),
        runs=(),
    )
    with _connection(db) as con, store.transaction(con):
        store.write(con, "ingests", pl.DataFrame([failed.to_row()]))
    log.warning("%s", failed)
    return failed


def ingest_paths(
    db: duckdb.DuckDBPyConnection | str | os.PathLike[str],
    paths: Iterable[str | os.PathLike[str]],
    *,
    project: str | None = None,
    params: float | None = None,
    tokens_per_step: float | None = None,
    fmt: str | None = None,
    progress: ProgressCallback | None = None,
) -> IngestReport:
    """Ingest files and folders of logs, one file (and one short connection) at a time.

    Parameters
    ----------
    db
        The DuckDB file (opened once per file, so concurrent ingests interleave), or an open
        connection.
    paths
        Files and folders; folders are walked (see :func:`discover`).
    project, params, tokens_per_step, fmt
        As for :func:`ingest_file`, applied to every file.
    progress
        Called with an :class:`IngestProgress` after each chunk and each file.

    Returns
    -------
    IngestReport
        One :class:`IngestInfo` per file, the skipped files, and a summary.

    Raises
    ------
    IngestError
        A path does not exist (before anything is read).
    DatabaseBusyError
        Another process held the database for longer than the bounded wait.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (tmp / "log.csv").write_text("run_id,step,tokens,loss\\nr1,1,4096,3.5\\n")
    >>> report = ingest_paths(tmp / "db.duckdb", [tmp / "log.csv"], params=1e6)
    >>> report[0].status, report[0].rows_ok
    ('ok', 1)
    """
    _check_options(fmt, params, tokens_per_step)
    files, skipped = discover(paths)
    infos = []
    for i, path in enumerate(files):
        size = path.stat().st_size if path.exists() else 0

        def tick(rows: int, path: Path = path, i: int = i, size: int = size) -> None:
            if progress:
                progress(IngestProgress(path, i, len(files), rows, size))

        info = ingest_file(
            db,
            path,
            project=project,
            params=params,
            tokens_per_step=tokens_per_step,
            fmt=fmt,
            progress=tick,
        )
        infos.append(info)
        if progress:
            progress(IngestProgress(path, i, len(files), info.rows_in, size, info))
    return IngestReport(tuple(infos), tuple(skipped))


__all__ = [
    "DEFAULT_PROJECT",
    "FORMATS",
    "SIDECARS",
    "IngestInfo",
    "IngestProgress",
    "IngestReport",
    "discover",
    "ingest_file",
    "ingest_paths",
    "metric_name",
    "params_from_config",
]
