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

import contextlib
import datetime as dt
import hashlib
import http.client
import json
import logging
import os
import re
import sys
import tempfile
import tomllib
import unicodedata
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import duckdb
import polars as pl

import scalefit

from .. import store
from ..errors import (
    DatabaseBusyError,
    HashMismatchError,
    ScalefitError,
    UpstreamConfigError,
    UpstreamError,
    UpstreamFormatError,
    UpstreamUnavailableError,
)
from ..schemas import (
    ObservationSchema,
    RunSchema,
    UpstreamModelSchema,
)
from ..schemas.upstream import CHANGE_KINDS
from .validate import ROW, validate_frame

log = logging.getLogger(__name__)

KINDS = ("runs", "models")
"""Allowed ``kind`` values of an upstream entry."""

FORMATS = ("csv", "jsonl", "parquet")
"""Allowed ``format`` values of an upstream entry."""

FetchStatus = Literal["ok", "hash_mismatch", "cached", "offline", "unavailable", "failed"]
"""What :func:`fetch_upstream` did.

- ``ok``: downloaded and verified; the copy in use is what the server sent.
- ``hash_mismatch``: downloaded, but the bytes differ from the pinned sha256 (an error): they
  were set aside under ``rejected/`` and the last good copy, if any, stays in use.
- ``cached``: the download failed (network, HTTP error); the cached copy is used (a warning).
- ``offline``: no download was tried; the cached copy is used (a warning).
- ``unavailable``: offline (no download tried) and no usable cached copy (a warning: a
  fresh machine told to stay offline can still refresh everything else).
- ``failed``: the download failed and no usable copy is cached (an error: nothing of this
  source can be loaded, so ``scalefit refresh`` exits with status 1).
"""

_TARGETS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "runs": (("params", "loss"), ("tokens", "flops", "run_id")),
    "models": (("name",), ("params", "tokens", "flops")),
}
_ENTRY_KEYS = ("url", "sha256", "pin", "kind", "format", "source_id", "columns", "metric", "notes")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SCHEMES = ("http", "https", "file")
_LOADER_VERSION = 1
"""Bumped when the loading of a snapshot changes, so stored snapshots are loaded again."""
_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff"))
_VALUE_COLUMNS = ("params", "tokens", "flops")
_CHUNK = 1 << 16
_OBS_COLUMNS = frozenset(ObservationSchema.to_schema().columns)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _sql(text: str) -> str:
    """A SQL string literal (for ``replace_where`` predicates, which take no parameters)."""
    return "'" + text.replace("'", "''") + "'"


# --------------------------------------------------------------------------------------------
# Entries of sources.toml


@dataclass(frozen=True, slots=True)
class Upstream:
    """One ``[upstreams.<name>]`` entry of ``sources.toml``.

    Attributes
    ----------
    name
        The entry's name: folder in the cache, ``project`` of its runs, ``upstream`` column.
    url
        Where to download it (``http``, ``https`` or ``file``).
    kind
        ``runs`` or ``models`` (see :data:`KINDS`).
    format
        ``csv``, ``jsonl`` or ``parquet``.
    source_id
        The ``[sources.<id>]`` every loaded row cites.
    columns
        ``(target, column in the file)`` pairs; see :attr:`column_map`.
    sha256
        Pinned sha256 (lowercase hex), or None for a living database whose content changes.
    metric
        ``observations.metric`` of a ``runs`` upstream's loss values (default ``loss``).
    notes
        Free text.
    """

    name: str
    url: str
    kind: str
    format: str
    source_id: str
    columns: tuple[tuple[str, str], ...]
    sha256: str | None = None
    metric: str = "loss"
    notes: str | None = None

    @property
    def pinned(self) -> bool:
        """True when a sha256 is pinned: other bytes are an error."""
        return self.sha256 is not None

    @property
    def column_map(self) -> dict[str, str]:
        """Target column -> column name in the file."""
        return dict(self.columns)

    @property
    def extension(self) -> str:
        """File extension of its snapshots in the cache (the format's name)."""
        return self.format

    def settings_sha256(self) -> str:
        """sha256 of everything besides the file's bytes that shapes the loaded rows."""
        settings = {
            "kind": self.kind,
            "format": self.format,
            "source_id": self.source_id,
            "columns": sorted(self.columns),
            "metric": self.metric,
            "loader": _LOADER_VERSION,
        }
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def _entry(path: Path, name: str, entry: Any, known_sources: set[str]) -> Upstream:
    def fail(message: str) -> UpstreamConfigError:
        return UpstreamConfigError(
            f"{path}: [upstreams.{name}] {message}", path=str(path), upstream=name
        )

    if not _NAME.match(name):
        raise fail("has a bad name: use letters, digits, `_`, `-` and `.`")
    if not isinstance(entry, dict):
        raise fail("must be a table")
    unknown = sorted(set(entry) - set(_ENTRY_KEYS))
    if unknown:
        raise fail(f"has unknown key(s) {unknown}; allowed: {', '.join(_ENTRY_KEYS)}")
    url = entry.get("url")
    if not isinstance(url, str) or not url.strip():
        raise fail('has no `url`: add `url = "https://..."`')
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in _SCHEMES:
        raise fail(f"`url` = {url!r} must start with one of {', '.join(_SCHEMES)}://")
    kind = entry.get("kind")
    if kind not in KINDS:
        raise fail(f"`kind` = {kind!r} is not one of {', '.join(KINDS)}")
    fmt = entry.get("format")
    if fmt is None:
        suffix = Path(urllib.parse.urlsplit(url).path).suffix.lstrip(".").lower()
        fmt = {"ndjson": "jsonl"}.get(suffix, suffix)
        if fmt not in FORMATS:
            raise fail(f"needs `format` ({', '.join(FORMATS)}): the URL's suffix does not say")
    elif fmt not in FORMATS:
        raise fail(f"`format` = {fmt!r} is not one of {', '.join(FORMATS)}")
    source_id = entry.get("source_id")
    if not isinstance(source_id, str) or source_id not in known_sources:
        raise fail(
            f"`source_id` = {source_id!r} is not defined in [sources]: add a "
            f"[sources.{source_id or '<id>'}] table citing where the file comes from"
        )
    sha = entry.get("sha256")
    pin = entry.get("pin", sha is not None)
    if not isinstance(pin, bool):
        raise fail(f"`pin` must be true or false, not {pin!r}")
    if sha is not None:
        if not isinstance(sha, str) or not _SHA256.match(sha.strip().lower()):
            raise fail(f"`sha256` = {sha!r} is not 64 hex digits (run `sha256sum FILE`)")
        sha = sha.strip().lower()
        if not pin:
            raise fail("has `sha256` but `pin = false`: remove one of them")
    elif pin:
        raise fail("has `pin = true` but no `sha256`: add it, or set `pin = false`")
    columns = entry.get("columns")
    if not isinstance(columns, dict) or not all(
        isinstance(v, str) and v.strip() for v in columns.values()
    ):
        raise fail(
            f'needs a [upstreams.{name}.columns] table: target = "column in the file" (text)'
        )
    required, optional = _TARGETS[kind]
    bad = sorted(set(columns) - set(required) - set(optional))
    if bad:
        raise fail(
            f"maps unknown target column(s) {bad}; for kind {kind!r} allowed: "
            f"{', '.join(required + optional)}"
        )
    missing = [t for t in required if t not in columns]
    if missing:
        raise fail(f"must map {', '.join(f'`{t}`' for t in missing)} in its columns table")
    metric = entry.get("metric", "loss")
    if not isinstance(metric, str) or not metric:
        raise fail("`metric` must be a non-empty text")
    notes = entry.get("notes")
    return Upstream(
        name=name,
        url=url.strip(),
        kind=kind,
        format=fmt,
        source_id=source_id,
        columns=tuple((k, v.strip()) for k, v in columns.items()),
        sha256=sha,
        metric=metric,
        notes=None if notes is None else str(notes),
    )


def load_upstreams(path: str | os.PathLike[str] | None = None) -> list[Upstream]:
    """Read and check the ``[upstreams.<name>]`` entries of ``sources.toml``.

    Parameters
    ----------
    path
        ``sources.toml``, or the folder holding it; default the shipped datasets.

    Returns
    -------
    list[Upstream]
        In file order; empty when the file has no ``[upstreams]`` table.

    Raises
    ------
    UpstreamConfigError
        On the first bad entry (unknown kind or key, missing url, bad sha256, a
        ``source_id`` that ``[sources]`` lacks, ...), naming the entry and what to fix.
    """
    from .curated import datasets_dir

    path = Path(path) if path is not None else datasets_dir()
    if path.is_dir():
        path = path / "sources.toml"
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UpstreamConfigError(f"{path}: cannot read it: {exc}", path=str(path)) from exc
    entries = doc.get("upstreams", {})
    if not isinstance(entries, dict):
        raise UpstreamConfigError(
            f"{path}: `upstreams` must be tables [upstreams.<name>]", path=str(path)
        )
    sources = doc.get("sources", {})
    known = set(sources) if isinstance(sources, dict) else set()
    return [_entry(path, name, entry, known) for name, entry in entries.items()]


# --------------------------------------------------------------------------------------------
# Download cache


def default_cache_dir() -> Path:
    """``$SCALEFIT_CACHE``, else the platform's cache folder + ``scalefit/upstream``.

    Linux and others: ``$XDG_CACHE_HOME`` or ``~/.cache``; macOS: ``~/Library/Caches``;
    Windows: ``%LOCALAPPDATA%``.
    """
    env = os.environ.get("SCALEFIT_CACHE", "").strip()
    if env:
        return Path(env).expanduser()
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        base = Path(os.environ["LOCALAPPDATA"])
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "scalefit" / "upstream"


def offline_default() -> bool:
    """True when the environment says not to download (``SCALEFIT_OFFLINE=1``/``true``)."""
    return os.environ.get("SCALEFIT_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True, slots=True)
class FetchInfo:
    """What :func:`fetch_upstream` did, and which copy to load.

    Attributes
    ----------
    upstream, url
        The entry fetched.
    status
        See :data:`FetchStatus`.
    path
        The copy to load: the new snapshot, or the last good one; None when there is none.
    sha256
        sha256 of ``path``.
    fetched_at
        When ``path``'s bytes were first downloaded (UTC).
    changed
        True when this fetch made a new snapshot current.
    previous_sha256
        The current snapshot before this fetch, if any.
    downloaded_sha256
        sha256 of what the server sent this time (None when nothing was downloaded).
    pinned_sha256
        The sha256 ``sources.toml`` pins, if any.
    rejected_path
        Where bytes that failed the pin were set aside for review.
    message
        What happened and, for a problem, what to do.
    checked_at
        When the fetch ran (UTC).
    """

    upstream: str
    url: str
    status: FetchStatus
    path: Path | None
    sha256: str | None
    fetched_at: dt.datetime | None
    changed: bool
    previous_sha256: str | None
    downloaded_sha256: str | None
    pinned_sha256: str | None
    rejected_path: Path | None
    message: str
    checked_at: dt.datetime

    @property
    def usable(self) -> bool:
        """True when there is a copy to load."""
        return self.path is not None

    @property
    def level(self) -> Literal["ok", "warning", "error"]:
        """``error`` for a hash mismatch or a failed download with nothing cached,
        ``warning`` when no fresh copy was had otherwise, else ``ok``."""
        if self.status in ("hash_mismatch", "failed"):
            return "error"
        return "ok" if self.status == "ok" else "warning"

    def raise_for_status(self) -> None:
        """Raise for a hash mismatch or when no copy is available; do nothing otherwise.

        Raises
        ------
        HashMismatchError, UpstreamUnavailableError
        """
        if self.status == "hash_mismatch":
            raise HashMismatchError(
                self.message,
                upstream=self.upstream,
                expected=self.pinned_sha256,
                actual=self.downloaded_sha256,
            )
        if self.status in ("unavailable", "failed"):
            raise UpstreamUnavailableError(self.message)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _mtime(path: Path) -> dt.datetime:
    return dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC).replace(tzinfo=None)


def _write_json_atomic(path: Path, obj: Mapping[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(obj, fh, indent=2, sort_keys=True)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _install(tmp: Path, final: Path) -> None:
    """Move a verified download into place; an existing snapshot (same bytes) is kept as is,
    so its file time stays the time it was first downloaded."""
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        tmp.unlink()
    else:
        os.replace(tmp, final)


def _verified(path: Path, sha: str) -> bool:
    """The file exists and has the sha256 its name claims (a damaged cache is not used)."""
    if not path.is_file():
        return False
    if _sha256_file(path) != sha:
        log.warning("cached snapshot %s is damaged (sha256 differs); ignoring it", path)
        return False
    return True


def _current(folder: Path) -> tuple[str, Path] | None:
    """The snapshot ``current.json`` points at, if it is present and intact."""
    pointer = folder / "current.json"
    try:
        data = json.loads(pointer.read_text(encoding="utf-8"))
        sha, file = str(data["sha256"]), str(data["file"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring unreadable %s: %s", pointer, exc)
        return None
    path = folder / Path(file).name
    return (sha, path) if _SHA256.match(sha) and _verified(path, sha) else None


def _good_copy(upstream: Upstream, folder: Path) -> tuple[str, Path] | None:
    """The copy that may be loaded: for a pinned upstream, only the pinned snapshot."""
    if upstream.sha256 is not None:
        path = folder / f"{upstream.sha256}.{upstream.extension}"
        return (upstream.sha256, path) if _verified(path, upstream.sha256) else None
    return _current(folder)


def _download(url: str, folder: Path, timeout: float) -> tuple[Path, str, int]:
    """Stream ``url`` into a temp file in ``folder``; returns (temp path, sha256, size)."""
    request = urllib.request.Request(
        url, headers={"User-Agent": f"scalefit/{scalefit.__version__} (+upstream refresh)"}
    )
    fd, name = tempfile.mkstemp(dir=folder, prefix=".download-", suffix=".part")
    tmp = Path(name)
    digest = hashlib.sha256()
    size = 0
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=timeout) as resp:
            while chunk := resp.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp, digest.hexdigest(), size


def _describe_error(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return f"{type(exc).__name__}: {exc}"


def fetch_upstream(
    upstream: Upstream,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    offline: bool | None = None,
    timeout: float = 30.0,
) -> FetchInfo:
    """Download ``upstream`` into the cache and verify it, or fall back to the cached copy.

    Never raises for a network fault or a hash mismatch: the caller gets the copy to load
    (possibly the last good one) and a status saying what went wrong; call
    :meth:`FetchInfo.raise_for_status` to turn problems into exceptions.

    Parameters
    ----------
    upstream
        The entry to fetch.
    cache_dir
        Cache root; default :func:`default_cache_dir`. Snapshots go to
        ``<cache_dir>/<name>/<sha256>.<ext>``.
    offline
        True: do not download, use the cache. Default None: ``SCALEFIT_OFFLINE`` decides
        (unset means online), so a test suite that sets it can never reach the network by
        accident.
    timeout
        Seconds for the connection and each read (default 30).

    Returns
    -------
    FetchInfo

    Raises
    ------
    OSError
        The cache folder cannot be written.
    """
    offline = offline_default() if offline is None else offline
    folder = Path(cache_dir if cache_dir is not None else default_cache_dir()) / upstream.name
    folder.mkdir(parents=True, exist_ok=True)
    checked_at = _now()
    previous = _current(folder)
    good = _good_copy(upstream, folder)

    def info(status: FetchStatus, message: str, **kw: Any) -> FetchInfo:
        copy = kw.pop("copy", good)
        values: dict[str, Any] = {
            "upstream": upstream.name,
            "url": upstream.url,
            "status": status,
            "path": copy[1] if copy else None,
            "sha256": copy[0] if copy else None,
            "fetched_at": _mtime(copy[1]) if copy else None,
            "changed": False,
            "previous_sha256": previous[0] if previous else None,
            "downloaded_sha256": None,
            "pinned_sha256": upstream.sha256,
            "rejected_path": None,
            "message": message,
            "checked_at": checked_at,
        }
        return FetchInfo(**(values | kw))

    def fallback(status: FetchStatus, why: str) -> FetchInfo:
        if good is not None:
            message = (
                f"{upstream.name}: {why}; using the cached snapshot {good[0][:12]} "
                f"(downloaded {_mtime(good[1]):%Y-%m-%d %H:%M} UTC)"
            )
            log.warning(message)
            return info(status, message)
        hint = (
            "run the refresh with network access (unset SCALEFIT_OFFLINE, or set "
            "`[upstream] offline = false` in scalefit.toml)"
            if status == "offline"
            else f"check the network and that {upstream.url} is reachable, then refresh again"
        )
        pinned = f" or put the file at {folder / f'{upstream.sha256}.{upstream.extension}'}"
        message = (
            f"{upstream.name}: {why}, and no cached copy in {folder}: "
            f"{hint}{pinned if upstream.pinned else ''}"
        )
        if status == "offline":
            log.warning(message)
            return info("unavailable", message)
        log.error(message)
        return info("failed", message)

    if offline:
        return fallback("offline", "offline (not downloading)")
    try:
        tmp, sha, size = _download(upstream.url, folder, timeout)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        # URLError, HTTPError, timeouts and refused connections are all OSErrors.
        return fallback("cached", f"could not download {upstream.url} ({_describe_error(exc)})")

    if upstream.sha256 is not None and sha != upstream.sha256:
        rejected = folder / "rejected" / f"{sha}.{upstream.extension}"
        _install(tmp, rejected)
        kept = (
            f"kept the last good copy ({good[0][:12]})"
            if good
            else "no good copy is cached, so nothing is loaded"
        )
        message = (
            f"{upstream.name}: {upstream.url} has sha256 {sha}, but sources.toml pins "
            f"{upstream.sha256}: the file changed upstream (or the pin is wrong); {kept}. "
            f"Review the new file at {rejected}; to accept it, set "
            f'sha256 = "{sha}" in [upstreams.{upstream.name}].'
        )
        log.error(message)
        return info("hash_mismatch", message, downloaded_sha256=sha, rejected_path=rejected)

    final = folder / f"{sha}.{upstream.extension}"
    _install(tmp, final)
    _write_json_atomic(
        folder / "current.json",
        {
            "sha256": sha,
            "file": final.name,
            "url": upstream.url,
            "size_bytes": size,
            "fetched_at": _mtime(final).isoformat(),
        },
    )
    changed = previous is None or previous[0] != sha
    what = "new snapshot" if changed else "unchanged"
    message = f"{upstream.name}: downloaded {size} bytes, sha256 {sha[:12]} ({what})"
    log.info(message)
    return info("ok", message, copy=(sha, final), changed=changed, downloaded_sha256=sha)


# --------------------------------------------------------------------------------------------
# Reading and normalising


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


# --------------------------------------------------------------------------------------------
# Loading into the store


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


def _prepare_runs(upstream: Upstream, frame: pl.DataFrame, sha: str, ingest_id: str) -> _Prepared:
    """``runs`` + ``observations`` rows of a snapshot of published loss points."""
    cols = _mapped(upstream, frame)
    name = upstream.name
    n = frame.height
    rows = pl.Series(ROW, range(1, n + 1), dtype=pl.Int64)
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
        run_id = pl.lit(f"{name}:") + pl.col("run_id").str.strip_chars()
    else:
        run_id = pl.lit(f"{name}:") + pl.col(ROW).cast(pl.String)
    src = src.with_columns(run_id.alias("run_id"))
    configs = [
        json.dumps(
            {"upstream": name, "snapshot_sha256": sha, "row_number": i}
            | ({"derived": derived} if derived else {})
        )
        for i in range(1, n + 1)
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
    runs_ok = (
        checked_runs.valid.join(row_of, on="run_id", how="left")
        .filter(~pl.col(ROW).is_in(bad))
        .drop(ROW)
    )
    obs_ok = (
        checked_obs.valid.join(row_of, on="run_id", how="left")
        .filter(~pl.col(ROW).is_in(bad))
        .drop(ROW)
    )
    mine = f"project = {_sql(name)} AND starts_with(run_id, {_sql(name + ':')})"
    return _Prepared(
        writes=[
            # Observations first: their predicate finds the old runs before those are replaced.
            ("observations", obs_ok, f"run_id IN (SELECT run_id FROM runs WHERE {mine})"),
            ("runs", runs_ok, mine),
        ],
        rejected=rejected,
        rows_in=n,
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
    old_cols = set().union(*old_rows.values()) if old_rows else set()
    new_cols = set().union(*new_rows.values()) if new_rows else set()
    compared = sorted(old_cols & new_cols) if old_rows and new_rows else []
    out: list[dict[str, Any]] = []

    def add(name: str | None, change: str, column: str | None, before: Any, after: Any) -> None:
        out.append(
            {
                "name": name,
                "change": change,
                "column_name": column,
                "old_value": before,
                "new_value": after,
            }
        )

    if old_rows and new_rows:
        for c in sorted(new_cols - old_cols):
            add(None, "column_added", c, None, None)
        for c in sorted(old_cols - new_cols):
            add(None, "column_removed", c, None, None)

    def diff(old_name: str, new_name: str) -> None:
        before, after = old_rows[old_name], new_rows[new_name]
        for c in compared:
            if before.get(c) != after.get(c):
                add(new_name, "changed", c, before.get(c), after.get(c))

    removed = [n for n in old_rows if n not in new_rows]
    added = [n for n in new_rows if n not in old_rows]
    pairs: list[tuple[str, str]] = []

    def match(key: Any) -> None:
        gone: dict[Any, list[str]] = {}
        came: dict[Any, list[str]] = {}
        for n in removed:
            if (k := key(n, old_rows)) is not None:
                gone.setdefault(k, []).append(n)
        for n in added:
            if (k := key(n, new_rows)) is not None:
                came.setdefault(k, []).append(n)
        for k, names in gone.items():
            if len(names) == 1 and len(came.get(k, [])) == 1:
                pairs.append((names[0], came[k][0]))
                removed.remove(names[0])
                added.remove(came[k][0])

    match(lambda n, _rows: n.casefold())

    def signature(n: str, rows: dict[str, dict[str, str | None]]) -> tuple | None:
        values = tuple(rows[n].get(c) for c in compared)
        return values if any(v is not None for v in values) else None

    match(signature)

    for old_name, new_name in pairs:
        add(new_name, "renamed", "name", old_name, new_name)
        diff(old_name, new_name)
    for n in sorted(set(old_rows) & set(new_rows)):
        diff(n, n)
    for n in removed:
        add(n, "removed", None, json.dumps(old_rows[n], sort_keys=True), None)
    for n in added:
        add(n, "added", None, None, json.dumps(new_rows[n], sort_keys=True))

    order = {c: i for i, c in enumerate(CHANGE_KINDS)}
    out.sort(key=lambda r: (order[r["change"]], r["name"] or "", r["column_name"] or ""))
    return pl.DataFrame(
        out,
        schema={
            "name": pl.String,
            "change": pl.String,
            "column_name": pl.String,
            "old_value": pl.String,
            "new_value": pl.String,
        },
    )


def _prepare_models(
    con: duckdb.DuckDBPyConnection,
    upstream: Upstream,
    frame: pl.DataFrame,
    sha: str,
    previous_sha: str | None,
) -> _Prepared:
    """``upstream_models`` rows of a snapshot and, when it replaces another, its changes."""
    cols = _mapped(upstream, frame)
    n = frame.height
    rows = pl.Series(ROW, range(1, n + 1), dtype=pl.Int64)
    mapped_cols = set(cols.values())
    others = [c for c in frame.columns if c not in mapped_cols]
    extras = [
        json.dumps({c: (None if v is None else v.strip()) for c, v in r.items()})
        for r in frame.select(others).iter_rows(named=True)
    ]
    raw_names = frame[cols["name"]]
    names = [normalize_name(v) for v in raw_names.to_list()]
    models = pl.DataFrame(
        {
            "upstream": [upstream.name] * n,
            "name": names,
            "name_raw": raw_names,
            "snapshot_sha256": [sha] * n,
            "row_number": rows,
            **{
                c: frame[cols[c]] if c in cols else pl.Series(c, [None] * n, dtype=pl.String)
                for c in _VALUE_COLUMNS
            },
            "extra": extras,
        },
        schema_overrides={"name": pl.String, "name_raw": pl.String},
    )
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
    dupe_rows = dupes["row_number"].implode()
    unique = models.filter(~pl.col("row_number").is_in(dupe_rows))
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
    changes = 0
    writes: list[tuple[str, pl.DataFrame, str | None]] = []
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
    return _Prepared(writes, rejected, n, valid.height, changes)


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
    early: list[pl.DataFrame] = []
    if fetch_info.downloaded_sha256 and fetch_info.rejected_path is not None:
        early.append(
            _snapshot_row(
                upstream,
                fetch_info.downloaded_sha256,
                fetch_info.rejected_path,
                status="rejected",
                message=fetch_info.message,
            )
        )

    def finish(status: Literal["unchanged", "skipped"], message: str) -> UpstreamLoadInfo:
        if early:
            with store.transaction(con):
                for row in early:
                    store.write(con, "upstream_snapshots", row)
        log.info(message)
        return UpstreamLoadInfo(
            name, upstream.kind, fetch_info.sha256, status, None, 0, 0, 0, 0, message
        )

    if fetch_info.path is None or fetch_info.sha256 is None:
        return finish("skipped", f"{name}: no copy to load ({fetch_info.status})")
    sha, path = fetch_info.sha256, fetch_info.path
    current = _current_snapshot(con, name)
    settings = upstream.settings_sha256()
    if (
        current is not None
        and current["sha256"] == sha
        and current["settings_sha256"] == settings
        and _rows_in_store(con, upstream) == current["rows"]
    ):
        return finish("unchanged", f"{name}: snapshot {sha[:12]} already loaded")

    started = _now()
    ingest_id = f"upstream-{name}-{sha[:16]}"
    frame = read_upstream_file(upstream, path)
    previous_sha = current["sha256"] if current else None
    if upstream.kind == "runs":
        prepared = _prepare_runs(upstream, frame, sha, ingest_id)
    else:
        prepared = _prepare_models(con, upstream, frame, sha, previous_sha)
    raw = _raw_rows(frame)
    rejected = prepared.rejected
    quarantine = rejected.select(
        pl.lit(ingest_id).alias("ingest_id"),
        pl.lit(upstream.url).alias("path"),
        "row_number",
        raw.gather(rejected["row_number"] - 1).alias("raw"),
        "reason",
    )
    n_bad = rejected.height
    message = (
        f"{name}: snapshot {sha[:12]}: {prepared.rows_ok} of {prepared.rows_in} rows loaded"
        + (f", {n_bad} quarantined" if n_bad else "")
        + (f", {prepared.changes} changes logged" if prepared.changes else "")
    )
    loaded_at = _now()
    ingest = pl.DataFrame(
        {
            "ingest_id": [ingest_id],
            "path": [upstream.url],
            "sha256": [sha],
            "format": [upstream.format],
            "started_at": [started],
            "finished_at": [loaded_at],
            "rows_in": [prepared.rows_ok + n_bad],
            "rows_ok": [prepared.rows_ok],
            "rows_rejected": [n_bad],
            "status": ["rejected_rows" if n_bad else "ok"],
            "message": [message],
            "size_bytes": [path.stat().st_size],
            "settings_sha256": [settings],
        }
    )
    snapshot = _snapshot_row(
        upstream,
        sha,
        path,
        status="current",
        loaded_at=loaded_at,
        rows=prepared.rows_ok,
        rows_rejected=n_bad,
    )
    with store.transaction(con):
        for row in early:
            store.write(con, "upstream_snapshots", row)
        for table, data, where in prepared.writes:
            # Validating again would strip `name_raw`, which is kept as the file has it.
            again = table != "upstream_models"
            store.write(con, table, data, replace_where=where, validate=again)
        store.write(con, "quarantine", quarantine, replace_where=f"ingest_id = {_sql(ingest_id)}")
        store.write(con, "ingests", ingest)
        store.run(
            con,
            "UPDATE upstream_snapshots SET status = 'superseded' "
            "WHERE upstream = ? AND status = 'current' AND sha256 <> ?",
            [name, sha],
        )
        store.write(con, "upstream_snapshots", snapshot)
    log.info(message)
    return UpstreamLoadInfo(
        upstream=name,
        kind=upstream.kind,
        sha256=sha,
        status="loaded",
        ingest_id=ingest_id,
        rows_in=prepared.rows_ok + n_bad,
        rows_ok=prepared.rows_ok,
        rows_rejected=n_bad,
        changes=prepared.changes,
        message=message,
    )


# --------------------------------------------------------------------------------------------
# The refresh step


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
    results: list[UpstreamInfo] = []
    for upstream in upstreams:
        try:
            fetched = fetch_upstream(upstream, cache, offline=offline, timeout=timeout)
        except (OSError, ScalefitError) as exc:
            message = f"{upstream.name}: cannot use the cache {cache}: {exc}"
            log.error(message)
            results.append(UpstreamInfo(upstream.name, "error", message))
            continue
        try:
            with store.connect(db_path) as con:
                loaded = load_upstream(con, upstream, fetched)
        except DatabaseBusyError:
            raise
        except (OSError, ScalefitError, pl.exceptions.PolarsError) as exc:
            message = f"{upstream.name}: load failed, the store keeps its previous rows: {exc}"
            log.error(message)
            results.append(UpstreamInfo(upstream.name, "error", message, fetched))
            continue
        status = fetched.level
        message = fetched.message if status != "ok" else loaded.message
        if status != "ok" and loaded.changed:
            message += f"; {loaded.message}"
        results.append(UpstreamInfo(upstream.name, status, message, fetched, loaded))
    return results


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
