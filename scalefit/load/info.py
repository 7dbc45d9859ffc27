"""What every loader shares: the ``ingests`` row (:class:`LoadInfo`), the decision whether an
input is new, appended, replaced or unchanged (:func:`decide`, pure), and the ingest ids.

Every loader (curated data, upstream files, studies, user logs) records each load as one
``ingests`` row, written in the load's own transaction; :class:`LoadInfo` is that row, its
fields the columns of ``schemas/bookkeeping.py`` (plus what the load touched, which is not
stored). Before reading rows, a loader compares what it found (:class:`Scan`) with what the
store says of its last load (:class:`Previous`): :func:`decide` says what to do, so that
re-running a loader on the same input writes nothing.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import polars as pl

from ..schemas import TABLES

Mode = Literal["new", "appended", "replaced", "unchanged"]
"""What a load does with its input: read it all (``new``), read what was added to a grown
log (``appended``), replace what an earlier version wrote (``replaced``), or nothing."""

LOADERS = ("logs", "curated", "upstream", "study")
"""Loaders, as :func:`ingest_id` names them."""


def now() -> dt.datetime:
    """The current UTC time, naive (as ``ingests`` stores it)."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def ingest_id(loader: str, sha256: str | None = None, name: str | None = None) -> str:
    """The ``ingests`` key of a load: the one place ingest ids are made.

    - ``logs``: a fresh ``uuid4`` hex per attempt (a log is read again as it grows, and each
      attempt is a row of its own);
    - ``curated``: ``curated-<sha16>`` of the datasets' combined hash;
    - ``upstream``: ``upstream-<name>-<sha16>`` of the snapshot loaded;
    - ``study``: ``study-<name>-<sha16>`` of the declaration (a study finds its load by it).

    These are the ids stores already hold (in ``ingests``, ``quarantine``, ``runs`` and
    ``observations``), so an existing store stays valid without a migration.

    Raises
    ------
    ValueError
        An unknown loader, or a content-addressed id without its hash (or name).
    """
    if loader not in LOADERS:
        raise ValueError(f"unknown loader {loader!r}; one of {', '.join(LOADERS)}")
    if loader == "logs":
        return uuid.uuid4().hex
    if not sha256 or (loader != "curated" and not name):
        raise ValueError(
            f"a {loader} ingest id needs the sha256"
            + ("" if loader == "curated" else " and the name")
        )
    if loader == "curated":
        return f"curated-{sha256[:16]}"
    assert name is not None
    return ingest_id_prefix(loader, name) + sha256[:16]


def ingest_id_prefix(loader: str, name: str) -> str:
    """What every :func:`ingest_id` of ``loader`` for ``name`` starts with (e.g. to clear a
    study's earlier loads, whatever their declaration)."""
    if loader not in ("upstream", "study"):
        raise ValueError(f"no named ingest ids for loader {loader!r}")
    return f"{loader}-{name}-"


@dataclass(frozen=True, slots=True)
class LoadInfo:
    """One load attempt: the ``ingests`` row, plus what it touched.

    The fields up to ``settings_sha256`` are the columns of ``ingests``
    (:class:`schemas.bookkeeping.IngestSchema`, in its order; a test holds them equal), so
    :meth:`to_row` is the row. The rest is reported, not stored.

    Attributes
    ----------
    status
        ``ok``, ``rejected_rows``, ``failed``, or ``unchanged`` (skipped by hash; not
        recorded in ``ingests``: a second run over the same input changes no table).
    mode
        ``new``, ``appended`` (a grown log, only new rows read), ``replaced`` (the input
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

    def to_row(self) -> dict[str, Any]:
        """The ``ingests`` row (its columns, named by the schema)."""
        return {c: getattr(self, c) for c in TABLES["ingests"].columns}

    def to_frame(self) -> pl.DataFrame:
        """The ``ingests`` row as a one-row frame, for :func:`scalefit.store.write`."""
        return pl.DataFrame([self.to_row()])

    def finished(self, rows_ok: int, rows_rejected: int, message: str, **more: Any) -> LoadInfo:
        """This attempt done: its counts (``rows_in`` is their sum), status and message."""
        return dataclasses.replace(
            self,
            finished_at=now(),
            rows_in=rows_ok + rows_rejected,
            rows_ok=rows_ok,
            rows_rejected=rows_rejected,
            status="rejected_rows" if rows_rejected else "ok",
            message=message,
            **more,
        )

    def __str__(self) -> str:
        counts = f"{self.rows_in} in, {self.rows_ok} ok, {self.rows_rejected} rejected"
        text = f"{self.path}: {self.status} ({self.mode}; {counts})"
        return f"{text}: {self.message}" if self.message else text


def started(loader: str, path: str, **fields: Any) -> LoadInfo:
    """A load attempt as it starts: its id (see :func:`ingest_id`), nothing read yet.

    ``fields`` sets other columns (``sha256``, ``format``, ``settings_sha256``…); ``name``
    is the upstream's or study's name, for its id.
    """
    name = fields.pop("name", None)
    key = fields.pop("ingest_id", None) or ingest_id(loader, fields.get("sha256"), name)
    base: dict[str, Any] = {"sha256": None, "format": None, "message": None}
    base.update(fields)
    return LoadInfo(
        ingest_id=key,
        path=path,
        started_at=now(),
        finished_at=None,
        rows_in=0,
        rows_ok=0,
        rows_rejected=0,
        status=base.pop("status", "failed"),
        **base,
    )


@dataclass(frozen=True, slots=True)
class Scan:
    """What a loader found in its input before reading any row.

    Only ``sha256`` is needed; the rest serves logs that grow (``appendable``): the sha256 of
    the input's first ``Previous.checkpoint_bytes`` bytes (``prefix_sha256``), and the bytes
    a reader needs before the first data row (``header_bytes``: a CSV's header line).
    """

    sha256: str
    size: int | None = None
    checkpoint_bytes: int | None = None
    """Bytes of complete lines (a line format), else the size."""
    checkpoint_sha256: str | None = None
    prefix_sha256: str | None = None
    prefix_lines: int = 0
    """Line ends within the prefix."""
    header_bytes: int = 0
    format: str | None = None
    appendable: bool = False


@dataclass(frozen=True, slots=True)
class Previous:
    """What the store says of the last successful load of the same input."""

    sha256: str | None
    settings_sha256: str | None
    format: str | None = None
    checkpoint_bytes: int | None = None
    checkpoint_sha256: str | None = None
    intact: bool = True
    """The rows that load wrote are all still in the store (else it is loaded again)."""

    @classmethod
    def from_row(cls, row: Mapping[str, Any] | None, *, intact: bool = True) -> Previous | None:
        """From an ``ingests`` (or snapshot) row with these column names; None for None."""
        if row is None:
            return None
        names = ("format", "checkpoint_bytes", "checkpoint_sha256")
        return cls(
            row.get("sha256"),
            row.get("settings_sha256"),
            **{n: row.get(n) for n in names},
            intact=intact,
        )


@dataclass(frozen=True, slots=True)
class Decision:
    """What :func:`decide` said: the mode, and for ``appended`` where to read on from."""

    mode: Mode
    offset: int = 0
    """Byte of the input to read on from (``appended``), else 0."""


def decide(previous: Previous | None, scan: Scan, settings: str | None) -> Decision:
    """New, appended, replaced or unchanged: what a loader does with its input. Pure.

    - no previous load: ``new``;
    - the same bytes with the same settings (``settings``: the sha256 of what else shapes
      the rows), and the previous load's rows intact: ``unchanged``;
    - an appendable input (a line-oriented log) whose previously read bytes are unchanged,
      read in the same format and settings, past its header: ``appended``, read on from the
      previous checkpoint;
    - anything else: ``replaced``.

    Examples
    --------
    >>> decide(None, Scan("ab"), None).mode
    'new'
    >>> decide(Previous("ab", "s"), Scan("ab"), "s").mode
    'unchanged'
    >>> decide(Previous("ab", "s"), Scan("ab"), "t").mode
    'replaced'
    """
    if previous is None:
        return Decision("new")
    same_settings = previous.settings_sha256 == settings
    if previous.intact and same_settings and previous.sha256 == scan.sha256:
        return Decision("unchanged")
    if (
        scan.appendable
        and same_settings
        and previous.format == scan.format
        and previous.checkpoint_bytes
        and previous.checkpoint_bytes >= scan.header_bytes
        and scan.prefix_sha256 == previous.checkpoint_sha256
    ):
        return Decision("appended", previous.checkpoint_bytes)
    return Decision("replaced")


def failed_unchanged(last: Mapping[str, Any] | None, scan: Scan, settings: str | None) -> bool:
    """True when the last attempt failed on these very bytes and settings: not retried
    (a failure is recorded once, not at every run over a folder). Pure."""
    return (
        last is not None
        and last["status"] == "failed"
        and last["sha256"] == scan.sha256
        and last["settings_sha256"] == settings
    )


__all__ = [
    "LOADERS",
    "Decision",
    "LoadInfo",
    "Mode",
    "Previous",
    "Scan",
    "decide",
    "failed_unchanged",
    "ingest_id",
    "ingest_id_prefix",
    "now",
    "started",
]
