"""What an ingest of user logs reports: progress while it works, and per file what it did."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from .info import LoadInfo

ProgressCallback = Callable[["IngestProgress"], None]


@dataclass(frozen=True, slots=True)
class IngestProgress:
    """What :func:`ingest_paths` reports while it works."""

    path: Path
    file_index: int
    n_files: int
    rows_read: int
    bytes_total: int
    info: LoadInfo | None = None
    """Set once the file is done."""


@dataclass(frozen=True, slots=True)
class IngestReport:
    """What :func:`ingest_paths` did: one :class:`LoadInfo` per file, and what it skipped.

    Iterating or indexing it goes over the infos. :attr:`exit_code` is the CLI's exit status.
    """

    infos: tuple[LoadInfo, ...]
    skipped: tuple[tuple[str, str], ...] = ()
    """``(path, reason)`` of files a folder walk did not read."""

    def __iter__(self) -> Iterator[LoadInfo]:
        return iter(self.infos)

    def __len__(self) -> int:
        return len(self.infos)

    def __getitem__(self, i: int) -> LoadInfo:
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
