"""The ``[upstreams.<name>]`` entries of ``datasets/sources.toml``, read and checked: what to
download, how to read it, and which source every loaded row cites."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import (
    UpstreamConfigError,
)
from ..schemas.vocabulary import UPSTREAM_FORMATS, UPSTREAM_KINDS

log = logging.getLogger(__name__)


KINDS = UPSTREAM_KINDS
"""Allowed ``kind`` values of an upstream entry."""


FORMATS = UPSTREAM_FORMATS
"""Allowed ``format`` values of an upstream entry."""


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


class _Fail:
    """Makes the error of one bad entry, naming the file and the entry."""

    def __init__(self, path: Path, name: str) -> None:
        self.path, self.name = path, name

    def __call__(self, message: str) -> UpstreamConfigError:
        return UpstreamConfigError(
            f"{self.path}: [upstreams.{self.name}] {message}",
            path=str(self.path),
            upstream=self.name,
        )


def _entry(path: Path, name: str, entry: Any, known_sources: set[str]) -> Upstream:
    fail = _Fail(path, name)
    if not _NAME.match(name):
        raise fail("has a bad name: use letters, digits, `_`, `-` and `.`")
    if not isinstance(entry, dict):
        raise fail("must be a table")
    unknown = sorted(set(entry) - set(_ENTRY_KEYS))
    if unknown:
        raise fail(f"has unknown key(s) {unknown}; allowed: {', '.join(_ENTRY_KEYS)}")
    url, kind, fmt = _entry_what(entry, fail)
    source_id = entry.get("source_id")
    if not isinstance(source_id, str) or source_id not in known_sources:
        raise fail(
            f"`source_id` = {source_id!r} is not defined in [sources]: add a "
            f"[sources.{source_id or '<id>'}] table citing where the file comes from"
        )
    sha = _entry_pin(entry, fail)
    columns = _entry_columns(entry, kind, fail)
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
        columns=columns,
        sha256=sha,
        metric=metric,
        notes=None if notes is None else str(notes),
    )


def _entry_what(entry: dict, fail: _Fail) -> tuple[str, str, str]:
    """An entry's ``url``, ``kind`` and ``format`` (from the URL's suffix when not given)."""
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
    return url, kind, fmt


def _entry_pin(entry: dict, fail: _Fail) -> str | None:
    """An entry's pinned sha256 (lowercase), or None for a living database."""
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
    return sha


def _entry_columns(entry: dict, kind: str, fail: _Fail) -> tuple[tuple[str, str], ...]:
    """An entry's ``(target, column in the file)`` pairs, checked against its kind."""
    columns = entry.get("columns")
    if not isinstance(columns, dict) or not all(
        isinstance(v, str) and v.strip() for v in columns.values()
    ):
        raise fail(
            f'needs a [upstreams.{fail.name}.columns] table: target = "column in the file" (text)'
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
    return tuple((k, v.strip()) for k, v in columns.items())


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
