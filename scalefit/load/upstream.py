"""Upstream files: remote data named in ``datasets/sources.toml``, downloaded into a cache,
verified, and loaded into the store with a record of every snapshot and of what changed.

An entry looks like this (every key but ``sha256``, ``pin``, ``format``, ``metric`` and
``notes`` is required)::

    [upstreams.chinchilla_points]
    url = "https://raw.githubusercontent.com/.../data/svg_extracted_data.csv"
    sha256 = "193478df..."      # pinned: other bytes are an error; omit for a living database
    kind = "runs"               # runs -> runs + observations; models -> upstream_models
    format = "csv"              # csv | jsonl | parquet (default: from the URL's suffix)
    source_id = "besiroglu2024" # a [sources.<id>] of the same file
    [upstreams.chinchilla_points.columns]  # target column = column name in the file
    params = "Model Size"
    flops = "Training FLOP"
    loss = "loss"

Column targets: for ``runs``, ``params`` and ``loss`` (required), ``tokens``, ``flops``,
``run_id``; a missing ``tokens`` is ``flops / (6 params)`` and a missing ``flops`` is
``6 params tokens`` (``C = 6 N D``, ARCHITECTURE.md). For ``models``, ``name`` (required),
``params``, ``tokens``, ``flops``; the file's other columns are kept as JSON in ``extra``.

The cache (``$SCALEFIT_CACHE``, default the platform cache, ``~/.cache/scalefit/upstream``)
holds one folder per upstream: every verified snapshot as ``<sha256>.<ext>`` (content-addressed,
never overwritten), a ``current.json`` pointer (written atomically), and ``rejected/`` for
downloads that failed their pin, kept for review. Without network, or with
``SCALEFIT_OFFLINE=1``, the cached copy is used with a warning.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import duckdb
import polars as pl

from .. import store
from ..errors import (
    DatabaseBusyError,
    ScalefitError,
    UpstreamError,
)
from .info import LoadInfo, Previous, Scan, decide, started
from .upstream_fetch import (
    FetchInfo,
    FetchStatus,
    _mtime,
    default_cache_dir,
    fetch_upstream,
    offline_default,
)
from .upstream_prepare import (
    _prepare_models,
    _prepare_runs,
    _Prepared,
    _raw_rows,
    _sql,
    model_changes,
    normalize_name,
    read_upstream_file,
)
from .upstream_sources import FORMATS, KINDS, Upstream, load_upstreams

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class UpstreamLoadInfo:
    """What :func:`load_upstream` did; mirrors the ``ingests`` and snapshot rows it wrote.

    Attributes
    ----------
    upstream, kind
        The entry loaded.
    sha256
        Snapshot loaded (or already in the store); None when there was none to load.
    status
        ``loaded`` (the store was written), ``unchanged`` (this snapshot, with these
        settings, is already loaded: nothing written) or ``skipped`` (no copy to load).
    ingest_id
        The ``ingests`` row of the load.
    rows_in, rows_ok, rows_rejected
        Data rows read, written and sent to ``quarantine``.
    changes
        Rows added to ``upstream_changes``.
    message
        A sentence for logs.
    """

    upstream: str
    kind: str
    sha256: str | None
    status: Literal["loaded", "unchanged", "skipped"]
    ingest_id: str | None
    rows_in: int
    rows_ok: int
    rows_rejected: int
    changes: int
    message: str

    @property
    def changed(self) -> bool:
        """True when the store was written."""
        return self.status == "loaded"


def _current_snapshot(con: duckdb.DuckDBPyConnection, name: str) -> dict[str, Any] | None:
    rows = store.query(
        con,
        "SELECT sha256, settings_sha256, rows FROM upstream_snapshots "
        "WHERE upstream = ? AND status = 'current' ORDER BY loaded_at DESC LIMIT 1",
        [name],
    )
    return rows.row(0, named=True) if rows.height else None


def _rows_in_store(con: duckdb.DuckDBPyConnection, upstream: Upstream) -> int:
    if upstream.kind == "runs":
        sql = "SELECT count(*) FROM runs WHERE project = ? AND starts_with(run_id, ?)"
        return store.run(con, sql, [upstream.name, f"{upstream.name}:"])[0][0]
    sql = "SELECT count(*) FROM upstream_models WHERE upstream = ?"
    return store.run(con, sql, [upstream.name])[0][0]


def _snapshot_row(
    upstream: Upstream,
    sha: str,
    path: Path,
    *,
    status: str,
    loaded_at: dt.datetime | None = None,
    rows: int | None = None,
    rows_rejected: int | None = None,
    message: str | None = None,
) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "upstream": [upstream.name],
            "sha256": [sha],
            "url": [upstream.url],
            "kind": [upstream.kind],
            "format": [upstream.format],
            "fetched_at": [_mtime(path)],
            "loaded_at": [loaded_at],
            "path": [str(path)],
            "size_bytes": [path.stat().st_size],
            "rows": [rows],
            "rows_rejected": [rows_rejected],
            "settings_sha256": [upstream.settings_sha256() if status != "rejected" else None],
            "status": [status],
            "message": [message],
        },
        schema_overrides={"loaded_at": pl.Datetime("us"), "rows": pl.Int64},
    )


def load_upstream(
    con: duckdb.DuckDBPyConnection, upstream: Upstream, fetch_info: FetchInfo
) -> UpstreamLoadInfo:
    """Load the copy :func:`fetch_upstream` chose into the store, in one transaction.

    ``runs``: each row is a run (``run_id`` ``<name>:<row>``, ``project`` ``<name>``) with one
    observation at step 0; ``models``: each row goes to ``upstream_models`` and, when the
    snapshot replaces an earlier one, every difference to ``upstream_changes`` (see
    :func:`model_changes`). Rows of the upstream's previous snapshot are replaced. Invalid rows
    go to ``quarantine`` with the reason; the load is recorded in ``ingests`` and
    ``upstream_snapshots``. Loading a snapshot already loaded (with the same entry settings)
    writes nothing; a download that failed its pin is recorded as a ``rejected`` snapshot.

    Parameters
    ----------
    con
        An open store.
    upstream
        The entry.
    fetch_info
        The result of :func:`fetch_upstream` for it.

    Returns
    -------
    UpstreamLoadInfo

    Raises
    ------
    UpstreamFormatError
        The file cannot be read or lacks a mapped column; nothing is written.
    """
    name = upstream.name
    early = _rejected_snapshot(upstream, fetch_info)
    if fetch_info.path is None or fetch_info.sha256 is None:
        message = f"{name}: no copy to load ({fetch_info.status})"
        return _not_loaded(con, upstream, fetch_info, early, "skipped", message)
    sha, path = fetch_info.sha256, fetch_info.path
    current = _current_snapshot(con, name)
    intact = current is not None and _rows_in_store(con, upstream) == current["rows"]
    previous = Previous.from_row(current, intact=intact)
    decision = decide(previous, Scan(sha), upstream.settings_sha256())
    if decision.mode == "unchanged":
        message = f"{name}: snapshot {sha[:12]} already loaded"
        return _not_loaded(con, upstream, fetch_info, early, "unchanged", message)
    previous_sha = current["sha256"] if current else None
    info, prepared, raw = _prepare(con, upstream, path, sha, previous_sha, decision.mode)
    _write_snapshot(con, upstream, info, prepared, raw, early, path)
    log.info(info.message)
    return UpstreamLoadInfo(
        name, upstream.kind, sha, "loaded", info.ingest_id, info.rows_in, info.rows_ok,
        info.rows_rejected, prepared.changes, info.message or "",
    )  # fmt: skip


def _prepare(
    con: duckdb.DuckDBPyConnection,
    upstream: Upstream,
    path: Path,
    sha: str,
    previous_sha: str | None,
    mode: str,
) -> tuple[LoadInfo, _Prepared, pl.Series]:
    """Read and prepare a snapshot: its ``ingests`` row, its rows, and the file's rows as
    read (for ``quarantine``)."""
    info = started(
        "upstream",
        upstream.url,
        name=upstream.name,
        sha256=sha,
        format=upstream.format,
        size_bytes=path.stat().st_size,
        settings_sha256=upstream.settings_sha256(),
    )
    frame = read_upstream_file(upstream, path)
    if upstream.kind == "runs":
        prepared = _prepare_runs(upstream, frame, sha, info.ingest_id)
    else:
        prepared = _prepare_models(con, upstream, frame, sha, previous_sha)
    n_bad = prepared.rejected.height
    message = (
        f"{upstream.name}: snapshot {sha[:12]}: {prepared.rows_ok} of {prepared.rows_in} rows "
        "loaded"
        + (f", {n_bad} quarantined" if n_bad else "")
        + (f", {prepared.changes} changes logged" if prepared.changes else "")
    )
    info = info.finished(prepared.rows_ok, n_bad, message, mode=mode)
    return info, prepared, _raw_rows(frame)


def _rejected_snapshot(upstream: Upstream, fetch_info: FetchInfo) -> list[pl.DataFrame]:
    """The ``rejected`` snapshot row of a download that failed its pin, if there was one."""
    if not fetch_info.downloaded_sha256 or fetch_info.rejected_path is None:
        return []
    row = _snapshot_row(
        upstream,
        fetch_info.downloaded_sha256,
        fetch_info.rejected_path,
        status="rejected",
        message=fetch_info.message,
    )
    return [row]


def _not_loaded(
    con: duckdb.DuckDBPyConnection,
    upstream: Upstream,
    fetch_info: FetchInfo,
    early: list[pl.DataFrame],
    status: Literal["unchanged", "skipped"],
    message: str,
) -> UpstreamLoadInfo:
    """Nothing to load: record only a rejected download's snapshot row."""
    if early:
        with store.transaction(con):
            for row in early:
                store.write(con, "upstream_snapshots", row)
    log.info(message)
    return UpstreamLoadInfo(
        upstream.name, upstream.kind, fetch_info.sha256, status, None, 0, 0, 0, 0, message
    )


def _write_snapshot(
    con: duckdb.DuckDBPyConnection,
    upstream: Upstream,
    info: LoadInfo,
    prepared: _Prepared,
    raw: pl.Series,
    early: list[pl.DataFrame],
    path: Path,
) -> None:
    """Write a snapshot's rows, quarantine, ``ingests`` row and snapshot row: one transaction."""
    rejected = prepared.rejected
    quarantine = rejected.select(
        pl.lit(info.ingest_id).alias("ingest_id"),
        pl.lit(upstream.url).alias("path"),
        "row_number",
        raw.gather(rejected["row_number"] - 1).alias("raw"),
        "reason",
    )
    assert info.sha256 is not None
    snapshot = _snapshot_row(
        upstream,
        info.sha256,
        path,
        status="current",
        loaded_at=info.finished_at,
        rows=info.rows_ok,
        rows_rejected=info.rows_rejected,
    )
    with store.transaction(con):
        for row in early:
            store.write(con, "upstream_snapshots", row)
        for table, data, where in prepared.writes:
            # Validating again would strip `name_raw`, which is kept as the file has it.
            again = table != "upstream_models"
            store.write(con, table, data, replace_where=where, validate=again)
        mine = f"ingest_id = {_sql(info.ingest_id)}"
        store.write(con, "quarantine", quarantine, replace_where=mine)
        store.write(con, "ingests", info.to_frame())
        store.run(
            con,
            "UPDATE upstream_snapshots SET status = 'superseded' "
            "WHERE upstream = ? AND status = 'current' AND sha256 <> ?",
            [upstream.name, info.sha256],
        )
        store.write(con, "upstream_snapshots", snapshot)


@dataclass(frozen=True, slots=True)
class UpstreamInfo:
    """One upstream's outcome in :func:`refresh_upstreams`.

    Attributes
    ----------
    upstream
        The entry's name.
    status
        ``ok``; ``warning`` (offline, a cached copy, or none available); ``error`` (a hash
        mismatch, an unreadable file, a failed load). Other upstreams are refreshed anyway.
    message
        What happened and what to do, for logs and the CLI.
    fetch, load
        The step results, when the step ran.
    """

    upstream: str
    status: Literal["ok", "warning", "error"]
    message: str
    fetch: FetchInfo | None = None
    load: UpstreamLoadInfo | None = None


def refresh_upstreams(
    db_path: str | os.PathLike[str],
    datasets_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    offline: bool | None = None,
    timeout: float = 30.0,
) -> list[UpstreamInfo]:
    """Fetch every upstream of ``sources.toml`` and load it; one failure does not stop others.

    Downloads happen before the store is opened, so the DuckDB file is held only while
    loading.

    Parameters
    ----------
    db_path
        The DuckDB file (created if missing).
    datasets_dir
        Folder with ``sources.toml``; default the shipped datasets.
    cache_dir
        Download cache; default :func:`default_cache_dir`.
    offline
        Do not download; default None: ``SCALEFIT_OFFLINE``.
    timeout
        Seconds per connection and read (default 30).

    Returns
    -------
    list[UpstreamInfo]
        One per entry, in file order.

    Raises
    ------
    UpstreamConfigError
        ``sources.toml`` has a bad ``[upstreams]`` entry (nothing is fetched).
    DatabaseBusyError
        Another process held the store too long (a retry may succeed).
    """
    from .curated import datasets_dir as shipped

    directory = Path(datasets_dir) if datasets_dir is not None else shipped()
    upstreams = load_upstreams(directory)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    offline = offline_default() if offline is None else offline
    return [_refresh_one(db_path, u, cache, offline, timeout) for u in upstreams]


def _refresh_one(
    db_path: str | os.PathLike[str], upstream: Upstream, cache: Path, offline: bool, timeout: float
) -> UpstreamInfo:
    """Fetch and load one upstream (see :func:`refresh_upstreams`)."""
    try:
        fetched = fetch_upstream(upstream, cache, offline=offline, timeout=timeout)
    except (OSError, ScalefitError) as exc:
        message = f"{upstream.name}: cannot use the cache {cache}: {exc}"
        log.error(message)
        return UpstreamInfo(upstream.name, "error", message)
    try:
        with store.connect(db_path) as con:
            loaded = load_upstream(con, upstream, fetched)
    except DatabaseBusyError:
        raise
    except (OSError, ScalefitError, pl.exceptions.PolarsError) as exc:
        message = f"{upstream.name}: load failed, the store keeps its previous rows: {exc}"
        log.error(message)
        return UpstreamInfo(upstream.name, "error", message, fetched)
    status = fetched.level
    message = fetched.message if status != "ok" else loaded.message
    if status != "ok" and loaded.changed:
        message += f"; {loaded.message}"
    return UpstreamInfo(upstream.name, status, message, fetched, loaded)


__all__ = [
    "FORMATS",
    "KINDS",
    "FetchInfo",
    "FetchStatus",
    "Upstream",
    "UpstreamError",
    "UpstreamInfo",
    "UpstreamLoadInfo",
    "default_cache_dir",
    "fetch_upstream",
    "load_upstream",
    "load_upstreams",
    "model_changes",
    "normalize_name",
    "offline_default",
    "read_upstream_file",
    "refresh_upstreams",
]
