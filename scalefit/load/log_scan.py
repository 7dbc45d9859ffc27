"""Finding and hashing user logs: the files a folder walk takes (:func:`discover`), and one
pass over a file that hashes it whole, up to its last complete line, and up to where an
earlier ingest stopped (:func:`_scan`), so that :func:`scalefit.load.info.decide` can tell a
grown log from a changed one."""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
from collections.abc import Iterable
from pathlib import Path

from ..errors import IngestError
from .info import Scan
from .log_meta import SIDECARS

LOG_SUFFIXES = (".csv", ".jsonl", ".ndjson", ".parquet", ".pq")
"""Suffixes a folder walk picks up (plus files named ``trainer_state.json``)."""


def _scan(path: Path, prefix: int) -> Scan:
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
    return Scan(
        sha256=h.hexdigest(),
        size=pos,
        checkpoint_bytes=cp,
        checkpoint_sha256=cp_hash.hexdigest(),
        prefix_sha256=prefix_sha,
        prefix_lines=lines,
        header_bytes=header_end or 0,
    )


class _PendingScan:
    """:func:`_scan` of a whole file in a thread of its own (``hashlib`` releases the GIL).

    For a file never ingested before, nothing but its ``ingests`` row depends on its hash:
    the rows are read meanwhile, instead of after a pass that hashes the file.
    """

    def __init__(self, path: Path) -> None:
        self._scan: Scan | None = None
        self._error: OSError | None = None
        self._thread = threading.Thread(target=self._work, args=(path,), name="scalefit-scan")
        self._thread.daemon = True
        self._thread.start()

    def _work(self, path: Path) -> None:
        try:
            self._scan = _scan(path, 0)
        except OSError as exc:
            self._error = exc

    def result(self) -> Scan:
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


def _tail_copy(path: Path, scan: Scan, offset: int, tmp: Path) -> Path:
    """A CSV of the header line plus the bytes from ``offset`` on."""
    out = tmp / path.name
    with path.open("rb") as src, out.open("wb") as dst:
        dst.write(src.read(scan.header_bytes))
        src.seek(offset)
        shutil.copyfileobj(src, dst, 1 << 20)
    return out
