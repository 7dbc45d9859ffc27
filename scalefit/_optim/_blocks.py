"""Shared pieces of the engine: the memory budget, blocks of rows and points, the Huber
loss, and small batched products."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]
Mask = NDArray[np.bool_]
"""A boolean array: which rows or variables a condition holds for."""
Index = NDArray[np.intp]
"""Row numbers, e.g. from ``np.flatnonzero``."""

DEFAULT_BUDGET: int = 256 * 2**20

_ROW_CAP = 512  # rows per block at most (more gains nothing once Python overhead is amortised)
_ROW_TARGET = 64  # rows a block of points leaves room for, when the points must be split
# (row, point) cells per block, whatever the budget: a block's arrays then stay in the CPU's
# caches. Measured on 250 and 2,500 points: ~90-130 ns per cell up to 64k cells, 3-7x more
# from 128k cells (e.g. 512 rows x 250 points, or 64 rows x 2,500 points).
_BLOCK_CELLS = 65536


def huber(r: Array, delta: float) -> tuple[Array, Array, Array]:
    """Huber loss ``h(r)``, its derivative ``psi(r)`` and second derivative ``psi'(r)``."""
    a = np.abs(r)
    inside = a <= delta
    h = np.where(inside, 0.5 * r * r, delta * (a - 0.5 * delta))
    psi = np.clip(r, -delta, delta)
    return h, psi, inside.astype(float)


def _wsum(c: Array, G: Array) -> Array:
    """``sum_i c_si G_sip`` as a batched matrix product ``(S, P)``."""
    return (c[:, None, :] @ G)[:, 0, :]


def _gram(c: Array, G: Array) -> Array:
    """``sum_i c_si G_sip G_siq`` as a batched matrix product ``(S, P, P)``."""
    return (c[:, :, None] * G).transpose(0, 2, 1) @ G


# Multiply-adds below which one product is left whole: OpenBLAS runs products this small
# on the calling thread, and one call costs less than a stack of them.
_SMALL_PRODUCT = 65536


def _matmul(a: Array, b: Array, rows: int = 8) -> Array:
    """``a @ b`` as a stack of ``rows``-row products. One large product lets OpenBLAS
    spread it over threads, which on a shared machine waits on busy cores (measured 10-20x
    slower under load); products this small always run on the calling thread."""
    s = a.shape[0]
    head = s - s % rows
    if head == 0 or s * a.shape[1] * b.shape[1] <= _SMALL_PRODUCT:
        return a @ b
    out = np.empty((s, b.shape[1]))
    out[:head] = (a[:head].reshape(head // rows, rows, a.shape[1]) @ b).reshape(head, -1)
    if head < s:
        out[head:] = a[head:] @ b
    return out


def _round_rows(rows: int) -> int:
    """At least one row; a multiple of 8 from 8 up (:func:`_matmul` works in 8-row stacks)."""
    return int(max(1, rows - rows % 8 if rows >= 8 else rows))


def _budget(budget: int | None) -> int:
    """``budget``, or the package-wide ``scalefit._optim.MEMORY_BUDGET`` (read at call time,
    so that setting it on the package takes effect), checked."""
    b = sys.modules[__package__].MEMORY_BUDGET if budget is None else budget
    if isinstance(b, bool) or not isinstance(b, int | np.integer) or b < 1:
        raise ValueError(f"a memory budget must be a positive whole number of bytes, not {b!r}")
    return int(b)


def _blocks(n: int, size: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` of consecutive blocks of ``size`` (a generator: a list of a million
    one-point blocks would itself outgrow a small budget)."""
    return ((a, min(a + size, n)) for a in range(0, n, size))


_row_chunks = _blocks


def _weights_block(w: Array, rows: Index | None, r0: int, r1: int, a: int, b: int) -> Array:
    """Weights of rows ``r0:r1`` (of ``rows`` when given) and points ``a:b``; a shared
    ``(n,)`` or ``(1, n)`` vector stays shared (a view, broadcast)."""
    if w.ndim == 1:
        return w[a:b]
    if w.shape[0] == 1 and rows is None:
        return w[0, a:b]
    if rows is None:
        return w[r0:r1, a:b]
    return w[rows[r0:r1], a:b]


def huber_cells(r: Array, ab: Array, h: Array, c: Array, delta: float) -> Array:
    """Huber loss of residuals ``r`` into ``h`` (``ab`` receives ``|r|``, ``c`` the clipped
    ``min(|r|, delta)``), without branches: ``h = c (|r| - c / 2)`` is ``r^2 / 2`` inside
    and ``delta (|r| - delta / 2)`` outside, bit for bit what the two-branch formula gives
    (``|r| - |r| / 2`` is exact)."""
    np.abs(r, out=ab)
    np.minimum(ab, delta, out=c)
    np.multiply(c, 0.5, out=h)
    np.subtract(ab, h, out=h)
    np.multiply(h, c, out=h)
    return h


def first_of_equal_rows(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For the rows of a matrix: the index of each distinct row's first occurrence, and which
    of them every row equals (``np.unique(key, axis=0, return_index=True,
    return_inverse=True)``'s, in another order; without it, which imports ``numpy.ma``,
    ~10 ms of every ``scalefit fit``'s start-up). Rows are equal when every entry is."""
    order = np.lexsort(key.T[::-1])  # stable: equal rows keep their order
    ranked = key[order]
    new = np.ones(len(order), dtype=bool)
    new[1:] = np.any(ranked[1:] != ranked[:-1], axis=1)
    group = np.cumsum(new) - 1
    inverse = np.empty(len(order), dtype=np.intp)
    inverse[order] = group
    return order[new], inverse
