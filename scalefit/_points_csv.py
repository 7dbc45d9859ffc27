"""A file of points for ``scalefit fit --input``, read without polars when it is plain.

Importing polars costs ~110 ms, more than reading a few thousand points takes; most files
given to ``--input`` are a few numeric columns (``params,tokens,loss``, maybe ``flops`` and a
text ``run_id``). :func:`read_points_fast` reads such a file with the ``csv`` module into
numpy arrays, and returns None for anything else (Parquet, quoted or empty fields, a
non-numeric column, a ``run_id`` that polars would read as a number, huge integers): the
caller then reads it with polars (:func:`scalefit.fit.read_points`), so a file gives the same
columns and values, the same fit id and the same errors either way (tests/test_points_csv.py
compares the two readers on the same files).
"""

from __future__ import annotations

import csv
import hashlib
import re
from pathlib import Path
from typing import Any

import numpy as np

_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\Z")
"""A number as polars' CSV reader infers one (no spaces, no ``inf``/``nan``)."""
_LONG_INTEGER = re.compile(r"[+-]?\d{16,}\Z")
"""An integer that polars may read otherwise than as a float64 (Int64 overflow, exact)."""
_MAX_BYTES = 64 << 20
"""Larger files go to polars: its reader is the faster one once the import is paid."""


def read_points_fast(path: Path) -> dict[str, np.ndarray | list[str]] | None:
    """The columns of the CSV file ``path`` (floats, and ``run_id`` as text), or None when
    the file is not a plain numeric CSV (see the module docstring)."""
    path = Path(path)
    if path.suffix.lower() != ".csv" or not path.is_file() or path.stat().st_size > _MAX_BYTES:
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    if '"' in text or "\r" in text or text.startswith("\ufeff"):
        return None
    rows = list(csv.reader(text.splitlines()))
    if len(rows) < 2:
        return None
    header, body = rows[0], rows[1:]
    if len(set(header)) != len(header) or any(not name for name in header):
        return None
    if any(len(row) != len(header) or "" in row for row in body):
        return None  # a short row, or a missing value (polars reads it as null)
    columns = list(zip(*body, strict=True))
    out: dict[str, np.ndarray | list[str]] = {}
    for name, values in zip(header, columns, strict=True):
        if name == "run_id":
            # polars reads a column of numbers as numbers ("01" -> 1): leave those to it.
            if all(_NUMBER.match(v) for v in values):
                return None
            out[name] = list(values)
        elif all(_NUMBER.match(v) and not _LONG_INTEGER.match(v) for v in values):
            out[name] = np.array(values, dtype=float)
        else:
            return None
    return out


def file_input(path: str | Path) -> dict[str, Any]:
    """The record of a fit to a file of points: its path and sha256 (here, not in
    :mod:`scalefit.fit_store`, so that ``scalefit fit --input`` records it without polars)."""
    p = Path(path)
    digest = hashlib.sha256()
    with p.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return {"source": "file", "path": str(p), "sha256": digest.hexdigest()}
