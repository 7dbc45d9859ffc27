"""Human counts (``125M``, ``1.3B``, ``7b``): one parser for every place a count is read,
the command line (``--params``, ``--tokens-per-step``) and the files (sidecars, run-level
columns), so that both accept the same text."""

from __future__ import annotations

import math

_SUFFIXES = {"k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}


def parse_count(text: str | float | int) -> float:
    """A positive finite count from ``125000000``, ``1.25e8``, ``125M``, ``1.3B`` or ``7b``
    (suffixes K, M, B/G, T, any case; ``_`` and ``,`` separators allowed).

    Raises
    ------
    ValueError
        ``text`` is not a count, or not a positive finite one.

    Examples
    --------
    >>> parse_count("350M"), parse_count("1.3B"), parse_count("7b"), parse_count("2_048")
    (350000000.0, 1300000000.0, 7000000000.0, 2048.0)
    """
    if isinstance(text, bool):
        raise ValueError(f"{text!r} is not a count (e.g. 125000000, 1.25e8, 125M)")
    if isinstance(text, int | float):
        value = float(text)
    else:
        raw = str(text).strip().replace("_", "").replace(",", "")
        scale = _SUFFIXES.get(raw[-1:].lower(), 1.0)
        if scale != 1.0:
            raw = raw[:-1].strip()
        try:
            value = float(raw) * scale
        except ValueError:
            raise ValueError(f"{text!r} is not a count (e.g. 125000000, 1.25e8, 125M)") from None
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{text!r} must be a positive count")
    return value
