"""Ingest users' training logs into ``runs`` and ``observations``.

One call per file (:func:`ingest_file`) or per folder (:func:`ingest_paths`); each file is one
transaction that also writes its ``ingests`` row and its rejected rows to ``quarantine``, so a
process killed mid-ingest leaves nothing of that file behind.

Formats (detected from the name and first line; see :data:`scalefit.load.readers.FORMATS`):

- ``csv``, ``jsonl``, ``parquet``: a long table with ``run_id``, ``step``, optional ``tokens``
  and ``flops``, one or more loss columns (``loss``, ``train_loss``, ``eval_loss``, any name
  ending in ``loss``) and optional run-level columns ``project``, ``params``,
  ``unique_tokens``, ``tokens_per_step``, ``schedule`` (constant per run).
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
``project``/``params``/``tokens_per_step``/``schedule`` arguments, then what ``runs`` already
holds for the run. A row's ``tokens``: its own, else ``step * tokens_per_step`` (0 at step 0),
else Hugging Face's ``num_input_tokens_seen`` (:data:`scalefit.load.log_rows.TOKEN_SOURCES`).
Counts (``params``, ``unique_tokens``, ``tokens_per_step``) may be written as the command line
takes them (``"350M"``, ``"1.3B"``: :func:`scalefit._counts.parse_count`). A run left without any
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
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NotRequired, TypedDict

import duckdb
import polars as pl

from .. import store
from ..errors import DatabaseBusyError, IngestError, ScalefitError, UnknownFormatError
from ..schemas.vocabulary import SCHEDULES
from .info import LoadInfo, Previous, Scan, decide, failed_unchanged, now, started
from .log_meta import (
    DEFAULT_PROJECT,
    SIDECARS,
    _Metadata,
    _metadata,
    _run_id_default,
    _settings_sha,
    params_from_config,
)
from .log_report import IngestProgress, IngestReport, ProgressCallback
from .log_rows import _Counts
from .log_runs import _Restart, _Runs
from .log_scan import _PendingScan, _scan, _tail_copy, discover
from .log_sink import _forget_file, _write
from .readers import FORMATS, LINE_FORMATS, Source, detect_format, metric_name, open_source

log = logging.getLogger(__name__)


class RunOptions(TypedDict):
    """What the user said of every run of an ingest (see :func:`ingest_paths`)."""

    project: str | None
    params: float | None
    tokens_per_step: float | None
    schedule: NotRequired[str | None]


MEMORY_LIMIT = os.environ.get("SCALEFIT_INGEST_MEMORY", "256MB")
"""DuckDB's ``memory_limit`` on the connections the ingest opens (env
``SCALEFIT_INGEST_MEMORY``). Within a file's transaction DuckDB keeps the blocks it has
written cached, so without a limit of its own its memory grows with the file (by about
12 MB per million rows, up to 80% of the machine's RAM); those blocks are on disk already,
so the limit costs no speed (measured at 10M rows). A careful pass over a big file (see
:func:`_write`) spills its stage to DuckDB's temporary directory beyond it."""


def _check_options(
    fmt: str | None,
    params: float | None,
    tokens_per_step: float | None,
    schedule: str | None = None,
) -> None:
    if fmt is not None and fmt not in FORMATS:
        raise UnknownFormatError(f"`fmt` must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if schedule is not None and schedule not in SCHEDULES:
        raise ValueError(f"`schedule` must be one of {', '.join(SCHEDULES)}, not {schedule!r}")
    for name, value in (("params", params), ("tokens_per_step", tokens_per_step)):
        if value is not None and not (value > 0 and value != float("inf")):
            raise ValueError(f"`{name}` must be a positive finite number, not {value!r}")


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


def _message(
    mode: str,
    source: Source,
    run_ids: Sequence[str],
    meta: _Metadata,
    rejected_runs: dict[str, str],
    warnings: Sequence[str],
    rows_rejected: int = 0,
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
    elif rows_rejected and not rejected_runs:
        # Not "no data rows": every row was read and rejected, each with its reason.
        parts.append("every row rejected (reasons in `quarantine`)")
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
        # An unnamed column is pandas' index (`to_csv()` of a W&B `run.history()`).
        ignored = [c.strip() or "(unnamed)" for c in source.ignored[:10]]
        parts.append(f"ignored columns: {', '.join(ignored)}")
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


@dataclass(frozen=True)
class _Plan:
    """What :func:`_plan` decided for a file: the attempt so far, and how to read the file."""

    info: LoadInfo
    mode: str
    offset: int = 0
    row_offset: int = 0
    scan: Scan | None = None
    pending: _PendingScan | None = None
    """The hash of a file never seen, computed while its rows are read."""

    def complete(self, info: LoadInfo) -> LoadInfo:
        """``info`` with what the ``ingests`` row still lacks (a new file's hash)."""
        return info if self.pending is None else _scanned(info, self.pending.result())


def _scanned(info: LoadInfo, scan: Scan) -> LoadInfo:
    line = info.format in LINE_FORMATS
    return dataclasses.replace(
        info,
        sha256=scan.sha256,
        size_bytes=scan.size,
        checkpoint_bytes=scan.checkpoint_bytes if line else scan.size,
        checkpoint_sha256=scan.checkpoint_sha256 if line else scan.sha256,
    )


def _plan(con: duckdb.DuckDBPyConnection, path: Path, info: LoadInfo) -> _Plan | LoadInfo:
    """How to read ``path`` (:func:`~scalefit.load.info.decide`), or the attempt's result
    when the file is not to be read: unchanged, or unchanged since it failed."""
    prev = _previous(con, info.path, "AND status IN ('ok', 'rejected_rows')")
    last = _previous(con, info.path)
    if prev is None and last is None:  # never seen: nothing but the row needs the hash
        return _Plan(info, "new", pending=_PendingScan(path))
    try:
        scan = _scan(path, (prev or {}).get("checkpoint_bytes") or 0)
    except OSError as exc:
        return _record_failure(con, info, exc)
    info, fmt = _scanned(info, scan), info.format
    probe = dataclasses.replace(
        scan,
        format=fmt,
        appendable=fmt in LINE_FORMATS,
        header_bytes=0 if fmt == "jsonl" else scan.header_bytes,
    )
    decision = decide(Previous.from_row(prev), probe, info.settings_sha256)
    if decision.mode == "unchanged":
        assert prev is not None
        return dataclasses.replace(
            info,
            status="unchanged",
            mode="unchanged",
            finished_at=now(),
            message="unchanged since ingest " + prev["ingest_id"][:12],
            format=prev["format"],
        )
    if failed_unchanged(last, scan, info.settings_sha256):
        assert last is not None
        return dataclasses.replace(
            info,
            status="failed",
            mode="failed",
            finished_at=now(),
            message=f"{last['message']} (unchanged since that attempt; not retried)",
        )
    if decision.mode != "appended":
        return _Plan(info, decision.mode, scan=scan)
    row_offset = scan.prefix_lines - (0 if fmt == "jsonl" else 1)
    return _Plan(info, "appended", decision.offset, row_offset, scan)


def _one_pass(
    con: duckdb.DuckDBPyConnection,
    plan: _Plan,
    source: Source,
    meta: _Metadata,
    progress: Callable[[int], None] | None,
    careful: bool,
    run_options: RunOptions,
) -> LoadInfo:
    """One pass over the file, inside its transaction (see :func:`_ingest_rows`)."""
    info, counts = plan.info, _Counts()
    base = {"ingest_id": info.ingest_id, "path": info.path}
    if plan.mode == "replaced":
        _forget_file(con, info.path)
    runs = _Runs(con, source, meta, ingest_id=info.ingest_id, careful=careful, **run_options)
    rows_ok, run_ids = _write(con, source, runs, counts, base, progress, careful=careful)
    if counts.records and not counts.metrics:
        raise IngestError(
            f"{info.path}: no loss column found in any row (a key named like "
            "`loss`, `train_loss`, `eval_loss`)"
        )
    warnings = _tokenless_warnings(con, run_ids)
    done = dataclasses.replace(
        plan.complete(info),
        finished_at=now(),
        rows_in=counts.rows_in,
        rows_ok=rows_ok,
        rows_rejected=counts.rows_rejected,
        status="rejected_rows" if counts.rows_rejected else "ok",
        message=_message(
            plan.mode, source, run_ids, meta, runs.bad, warnings, counts.rows_rejected
        ),
        mode=plan.mode,
        runs=run_ids,
        warnings=warnings,
    )
    if done.rows_in != done.rows_ok + done.rows_rejected:  # pragma: no cover
        raise AssertionError(f"row accounting is off: {done}")
    store.write(con, "ingests", done.to_frame())
    return done


def _ingest_rows(
    con: duckdb.DuckDBPyConnection,
    plan: _Plan,
    source: Source,
    meta: _Metadata,
    progress: Callable[[int], None] | None,
    run_options: RunOptions,
) -> LoadInfo:
    """The file's one transaction: its rows, runs, quarantine and ``ingests`` row.

    A single pass first; if it meets what only a careful pass handles (:class:`_Restart`),
    everything it did is rolled back and the file is read again, carefully.
    """
    for careful in (False, True):
        try:
            with store.transaction(con):
                return _one_pass(con, plan, source, meta, progress, careful, run_options)
        except _Restart as why:
            if careful:  # pragma: no cover - the careful pass never restarts
                raise AssertionError(
                    f"{plan.info.path}: the careful pass restarted: {why}"
                ) from None
            log.info("%s: reading again with a stage (%s)", plan.info.path, why)
    raise AssertionError("unreachable")  # pragma: no cover


def _read_file(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    plan: _Plan,
    meta: _Metadata,
    progress: Callable[[int], None] | None,
    run_options: RunOptions,
) -> LoadInfo:
    """Read the file as planned, in one transaction; a failure is recorded, not raised."""
    fmt = plan.info.format
    assert fmt is not None
    try:
        with tempfile.TemporaryDirectory(prefix="scalefit-ingest-") as tmp:
            read_path = path
            if plan.mode == "appended" and fmt != "jsonl":
                assert plan.scan is not None
                read_path = _tail_copy(path, plan.scan, plan.offset, Path(tmp))
            source = open_source(
                read_path,
                fmt,
                run_id=_run_id_default(path, fmt, meta),
                offset=plan.offset if fmt == "jsonl" else 0,
                row_offset=plan.row_offset,
            )
            done = _ingest_rows(con, plan, source, meta, progress, run_options)
    except DatabaseBusyError:
        raise
    except Exception as exc:
        if not isinstance(exc, ScalefitError | pl.exceptions.PolarsError | OSError | ValueError):
            log.exception("unexpected error while ingesting %s", path)
        info = plan.info
        with contextlib.suppress(OSError):
            info = plan.complete(info)
        return _record_failure(con, info, exc)
    log.info("%s", done)
    return done


def ingest_file(
    db: duckdb.DuckDBPyConnection | str | os.PathLike[str],
    path: str | os.PathLike[str],
    *,
    project: str | None = None,
    params: float | None = None,
    tokens_per_step: float | None = None,
    fmt: str | None = None,
    progress: Callable[[int], None] | None = None,
    schedule: str | None = None,
) -> LoadInfo:
    """Ingest one log file in one transaction; return what was done.

    Parameters
    ----------
    db
        An open store connection, or the DuckDB file to open (for this file only).
    path
        The log file.
    project, params, tokens_per_step, schedule
        Defaults for runs whose file and sidecar do not say (see the module docstring).
        Default None: ``project`` is then ``default``, a run without a parameter count
        is rejected to ``quarantine``, and a run's ``schedule`` stays unknown (null).
    fmt
        Force a format (one of :data:`scalefit.load.readers.FORMATS`); default None: detect.
    progress
        Called with the number of measurements read so far, after each chunk.

    Returns
    -------
    LoadInfo
        The attempt; failures to parse are returned (status ``failed``), not raised.

    Raises
    ------
    DatabaseBusyError
        Another process held the database for longer than the bounded wait.
    ValueError
        An argument is invalid.
    """
    _check_options(fmt, params, tokens_per_step, schedule)
    path = Path(path).resolve()
    info = started("logs", str(path), format=fmt)
    try:
        detected = fmt or detect_format(path)
        info = dataclasses.replace(info, format=detected)
        meta = _metadata(path, detected)
    except (ScalefitError, OSError) as exc:
        return _record_failure(db, info, exc)
    options: RunOptions = {"project": project, "params": params, "tokens_per_step": tokens_per_step}
    if schedule is not None:  # so that files ingested before `schedule` existed stay unchanged
        options["schedule"] = schedule
    info = dataclasses.replace(info, settings_sha256=_settings_sha(fmt, meta, **options))
    with _connection(db) as con:
        # DuckDB draws its own progress bar on stdout for long statements; ours is enough.
        store.run(con, "SET enable_progress_bar = false")
        plan = _plan(con, path, info)
        if isinstance(plan, LoadInfo):
            return plan
        return _read_file(con, path, plan, meta, progress, options)


def _failure_message(exc: BaseException) -> str:
    if isinstance(exc, ScalefitError):
        return str(exc)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "utf-8" in text.lower() or isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 text ({text}); re-save the file as UTF-8"
    return f"cannot parse: {text}"


def _record_failure(
    db: duckdb.DuckDBPyConnection | str | os.PathLike[str], info: LoadInfo, exc: BaseException
) -> LoadInfo:
    failed = dataclasses.replace(
        info,
        status="failed",
        mode="failed",
        finished_at=now(),
        rows_in=0,
        rows_ok=0,
        rows_rejected=0,
        checkpoint_bytes=None,
        checkpoint_sha256=None,
        message=_failure_message(exc),
        runs=(),
    )
    with _connection(db) as con, store.transaction(con):
        store.write(con, "ingests", failed.to_frame())
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
    schedule: str | None = None,
) -> IngestReport:
    """Ingest files and folders of logs, one file (and one short connection) at a time.

    Parameters
    ----------
    db
        The DuckDB file (opened once per file, so concurrent ingests interleave), or an open
        connection.
    paths
        Files and folders; folders are walked (see :func:`discover`).
    project, params, tokens_per_step, fmt, schedule
        As for :func:`ingest_file`, applied to every file.
    progress
        Called with an :class:`IngestProgress` after each chunk and each file.

    Returns
    -------
    IngestReport
        One :class:`LoadInfo` per file, the skipped files, and a summary.

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
    _check_options(fmt, params, tokens_per_step, schedule)
    files, skipped = discover(paths)
    options: RunOptions = {
        "project": project,
        "params": params,
        "tokens_per_step": tokens_per_step,
        "schedule": schedule,
    }
    infos = [
        _ingest_one(db, path, i, len(files), progress, fmt=fmt, **options)
        for i, path in enumerate(files)
    ]
    return IngestReport(tuple(infos), tuple(skipped))


def _ingest_one(
    db: duckdb.DuckDBPyConnection | str | os.PathLike[str],
    path: Path,
    i: int,
    n_files: int,
    progress: ProgressCallback | None,
    **options: Any,
) -> LoadInfo:
    """:func:`ingest_file` of the ``i``-th of ``n_files``, reporting its progress."""
    size = path.stat().st_size if path.exists() else 0

    def tick(rows: int) -> None:
        if progress:
            progress(IngestProgress(path, i, n_files, rows, size))

    info = ingest_file(db, path, progress=tick, **options)
    if progress:
        progress(IngestProgress(path, i, n_files, info.rows_in, size, info))
    return info


__all__ = [
    "DEFAULT_PROJECT",
    "FORMATS",
    "SIDECARS",
    "IngestProgress",
    "IngestReport",
    "LoadInfo",
    "discover",
    "ingest_file",
    "ingest_paths",
    "metric_name",
    "params_from_config",
]
