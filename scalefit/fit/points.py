"""Points to fit: checked arrays from a polars frame (or anything ``pl.DataFrame`` accepts).

polars is imported when points are read, not with the module: ``import scalefit.fit`` stays
light for the commands that only fit (issue 16; ``tests/test_cli_startup.py``). Columns that
are already arrays (float64 arrays, and ``run_id`` as a list of text: what
:func:`scalefit._points_csv.read_points_fast` reads for ``scalefit fit --input``) are read
as they are, without polars, into the same arrays a frame of them gives; anything else goes
through a polars frame.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np

from .._budgets import budget_groups
from ..errors import FitError
from ..laws import training_flops

if TYPE_CHECKING:
    import polars as pl

__all__ = [
    "PointsLike",
    "as_constrained_points",
    "as_points",
    "budget_groups",
    "check_fittable",
]

PointsLike: TypeAlias = "pl.DataFrame | Mapping[str, Any]"
"""What the fit functions accept: a polars frame, or a mapping of columns."""


@dataclass(frozen=True)
class _Points:
    params: np.ndarray
    tokens: np.ndarray
    loss: np.ndarray
    flops: np.ndarray
    run_id: np.ndarray | None
    x: np.ndarray | None = None  # the input of a form whose target is not the loss
    unique: np.ndarray | None = None  # unique tokens (the data-constrained form)

    @property
    def n(self) -> int:
        return int(self.loss.size)

    def take(self, idx: np.ndarray) -> _Points:
        def sub(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[idx]

        return _Points(
            self.params[idx],
            self.tokens[idx],
            self.loss[idx],
            self.flops[idx],
            sub(self.run_id),
            sub(self.x),
            sub(self.unique),
        )

    def sha256(self) -> str:
        """Hash of the points, independent of row order."""
        h = hashlib.sha256()
        if self.unique is not None:  # the data-constrained form's points
            cols = [self.params, self.tokens, self.unique, self.loss]
            order = np.lexsort(cols[::-1])
            for c in cols:
                h.update(np.ascontiguousarray(c[order], dtype="<f8").tobytes())
            return h.hexdigest()
        cols = [self.params, self.tokens, self.loss, self.flops]
        if self.x is not None:
            cols.append(self.x)
        order = np.lexsort(cols[::-1])
        for c in cols:
            h.update(np.ascontiguousarray(c[order], dtype="<f8").tobytes())
        if self.run_id is not None:
            h.update("\x1f".join(map(str, self.run_id[order])).encode())
        return h.hexdigest()


class _Arrays:
    """Columns that need no polars to read: 1-D float64 arrays of one length, and a
    ``run_id`` given as a list (or tuple) of text. :meth:`floats` and :meth:`texts` return
    new arrays equal to what a polars frame of the same columns gives (``cast(Float64)``,
    ``cast(String)``, ``to_numpy()``)."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = data
        self.columns = list(data)

    @staticmethod
    def of(data: object) -> _Arrays | None:
        """``data`` as :class:`_Arrays`, or None when any column is something else."""
        if not isinstance(data, Mapping) or not data:
            return None
        lengths = set()
        for name, values in data.items():
            if name == "run_id":
                if not isinstance(values, list | tuple) or any(type(v) is not str for v in values):
                    return None
            elif not (
                isinstance(name, str)
                and type(values) is np.ndarray  # not a subclass (a masked array: polars')
                and values.ndim == 1
                and values.dtype == np.float64
            ):
                return None
            lengths.add(len(values))
        return _Arrays(data) if len(lengths) == 1 else None

    def floats(self, name: str) -> np.ndarray:
        return np.array(self._data[name], dtype=float)

    def texts(self, name: str) -> np.ndarray:
        values = self._data[name]
        out = np.empty(len(values), dtype=object)
        out[:] = values
        return out


_Frame: TypeAlias = "pl.DataFrame | _Arrays"


def _frame(data: PointsLike) -> _Frame:
    arrays = _Arrays.of(data)
    if arrays is not None:
        return arrays
    import polars as pl

    return data if isinstance(data, pl.DataFrame) else pl.DataFrame(data)


def _floats(frame: _Frame, name: str) -> np.ndarray:
    """The column ``name`` as float64 (polars' cast errors raise as they are)."""
    if isinstance(frame, _Arrays):
        return frame.floats(name)
    import polars as pl

    return frame[name].cast(pl.Float64).to_numpy().astype(float)


def _texts(frame: _Frame, name: str) -> np.ndarray:
    """The column ``name`` as an array of text (objects)."""
    if isinstance(frame, _Arrays):
        return frame.texts(name)
    import polars as pl

    return frame[name].cast(pl.String).to_numpy()


def _column(frame: _Frame, name: str, *, required: bool) -> np.ndarray | None:
    if name not in frame.columns:
        if required:
            raise FitError(
                f"the data have no `{name}` column (columns: {', '.join(frame.columns)}); "
                "rename your columns to params, tokens, loss (optional flops, run_id)"
            )
        return None
    if name == "run_id":
        return _texts(frame, name)
    try:
        return _floats(frame, name)
    except Exception as exc:  # polars raises several types for a bad cast
        raise FitError(f"column `{name}` is not numeric: {exc}") from exc


def _check_positive(name: str, col: np.ndarray, tail: str) -> None:
    bad = ~np.isfinite(col) | (col <= 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise FitError(
            f"{int(bad.sum())} value(s) of `{name}` are not positive finite numbers "
            f"(first: row {i + 1}, value {col[i]!r}); {tail}"
        )


def _target_points(frame: _Frame, target: str) -> _Points:
    """Points of a form that fits ``target`` as a function of the ``loss`` column."""
    y = _column(frame, target, required=True)
    x = _column(frame, "loss", required=True)
    assert y is not None and x is not None
    for name, col in ((target, y), ("loss", x)):
        _check_positive(name, col, "drop or fix those rows")
    nan = np.full(y.size, np.nan)
    return _Points(nan, nan, y, nan, _column(frame, "run_id", required=False), x=x)


def as_points(data: PointsLike, *, need: Sequence[str], target: str = "loss") -> _Points:
    """Checked arrays from a polars frame (or anything ``pl.DataFrame`` accepts).

    ``target`` other than ``loss`` (the downstream law's ``error``): that column is fitted,
    as a function of the ``loss`` column (``_Points.x``). ``flops`` missing (or null) is
    :func:`scalefit.laws.training_flops` of ``params`` and ``tokens``.
    """
    frame = _frame(data)
    if target != "loss":
        return _target_points(frame, target)
    loss = _column(frame, "loss", required=True)
    assert loss is not None
    params = _column(frame, "params", required="params" in need)
    tokens = _column(frame, "tokens", required="tokens" in need)
    flops = _column(frame, "flops", required=False)
    n = loss.size
    if flops is None or np.isnan(flops).all():
        if params is None or tokens is None:
            if "flops" in need:
                raise FitError("the data need a `flops` column, or `params` and `tokens`")
            flops = np.full(n, np.nan)
        else:
            flops = training_flops(params, tokens)
    elif params is not None and tokens is not None:
        flops = np.where(np.isnan(flops), training_flops(params, tokens), flops)
    params = np.full(n, np.nan) if params is None else params
    tokens = np.full(n, np.nan) if tokens is None else tokens
    checked = {"loss": loss, "params": params, "tokens": tokens, "flops": flops}
    for name in ["loss", *need]:
        _check_positive(name, checked[name], "drop or fix those rows before fitting")
    return _Points(params, tokens, loss, flops, _column(frame, "run_id", required=False))


def _constrained_column(frame: _Frame, name: str) -> np.ndarray:
    if name not in frame.columns:
        raise FitError(
            f"the data have no `{name}` column (columns: {', '.join(frame.columns)}); a "
            "data-constrained fit needs params, tokens, unique_tokens and loss"
        )
    values = _floats(frame, name)
    bad = ~np.isfinite(values) | (values <= 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise FitError(
            f"{int(bad.sum())} value(s) of `{name}` are not positive finite numbers (first: "
            f"row {i + 1}); drop or fix those rows before fitting"
        )
    return values


def as_constrained_points(data: PointsLike) -> _Points:
    """Points of the data-constrained form: ``params``, ``tokens``, ``unique_tokens`` and
    ``loss`` (optional ``run_id``), all checked."""
    frame = _frame(data)
    params, tokens = _constrained_column(frame, "params"), _constrained_column(frame, "tokens")
    unique = _constrained_column(frame, "unique_tokens")
    loss = _constrained_column(frame, "loss")
    run_id = _texts(frame, "run_id") if "run_id" in frame.columns else None
    return _Points(params, tokens, loss, training_flops(params, tokens), run_id, unique=unique)


def check_fittable(
    pts: _Points, name: str, theta_names: Sequence[str], needs: Sequence[str]
) -> None:
    """Refuse points that cannot determine the form ``name``: no more points than
    parameters, or a single distinct value of a variable the form needs."""
    n_par = len(theta_names)
    if pts.n <= n_par:
        raise FitError(
            f"{pts.n} point(s) for {n_par} parameters of `{name}`: "
            f"a fit needs more points than parameters (at least {n_par + 1})"
        )
    for col in needs:
        if _one_value(getattr(pts, col)):
            raise FitError(
                f"all points have the same `{col}`: `{name}` cannot separate the "
                f"{col} term from the others; add points at other {col} values"
            )


def _one_value(values: np.ndarray) -> bool:
    """Whether ``values`` hold fewer than two distinct values (NaNs counting as one value),
    as ``np.unique(values).size < 2`` says, without ``np.unique``: numpy 2 imports
    ``numpy.ma`` there (~10 ms of ``scalefit fit``'s start-up)."""
    if values.size == 0:
        return True
    first = values.flat[0]
    same = np.isnan(values) if first != first else values == first
    return bool(np.all(same))
