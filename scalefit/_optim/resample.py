"""Bootstrap weights drawn in blocks of resamples within a memory budget.

A bootstrap resample of ``G`` groups (points, runs or model sizes) draws ``G`` groups with
replacement; each point's weight is how often its group was drawn. Drawn all at once, the
weights of ``B`` resamples of ``n`` points are a ``(B, n)`` matrix: 8 GB for 1,000 resamples
of a million points. :func:`bootstrap_weight_blocks` yields the same matrix a block of rows at
a time, each block within the budget, consuming the random stream in the same order, so the
rows are bit for bit those of the whole matrix drawn as::

    draws = rng.integers(0, G, size=(B, G))
    counts[b, g] = number of j with draws[b, j] == g
    weights = counts[:, groups]
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ._blocks import Array, _budget


def weight_block_rows(n_points: int, n_groups: int, budget: int | None = None) -> int:
    """Resamples per block within ``budget`` bytes (default ``MEMORY_BUDGET``): per resample
    its weights (``8 n``) and, while it is drawn, its draws and counts (``8 G`` each, and as
    much again for the counting). At least one resample per block."""
    per_row = 8 * n_points + 32 * n_groups
    return max(1, _budget(budget) // per_row)


def bootstrap_weight_blocks(
    groups: Array,
    n_bootstrap: int,
    rng: np.random.Generator,
    *,
    budget: int | None = None,
    max_rows: int | None = None,
) -> Iterator[tuple[int, int, Array]]:
    """``(first, stop, weights)`` for consecutive blocks of the ``n_bootstrap`` resamples:
    ``weights`` is ``(stop - first, n)`` float, the rows ``first:stop`` of the matrix the
    module docstring defines, for points in groups ``groups`` (``(n,)`` integers from 0 to
    ``G - 1``, every group present). Blocks hold at most ``max_rows`` resamples and fit in
    ``budget`` bytes (:func:`weight_block_rows`). A generator: draw a block, use it, draw
    the next; drawing every block in order consumes ``rng`` exactly as one draw would."""
    groups = np.asarray(groups)
    if groups.ndim != 1 or groups.size == 0:
        raise ValueError("groups must be a non-empty 1-D array of group indices")
    n_groups = int(groups.max()) + 1
    if n_bootstrap < 0:
        raise ValueError(f"n_bootstrap must be >= 0, not {n_bootstrap}")
    rows = weight_block_rows(groups.size, n_groups, budget)
    if max_rows is not None:
        rows = max(1, min(rows, int(max_rows)))
    for first in range(0, n_bootstrap, rows):
        stop = min(first + rows, n_bootstrap)
        draws = rng.integers(0, n_groups, size=(stop - first, n_groups))
        draws += (np.arange(stop - first) * n_groups)[:, None]
        counts = np.bincount(draws.ravel(), minlength=(stop - first) * n_groups)
        del draws
        weights = counts.reshape(stop - first, n_groups).astype(float)[:, groups]
        del counts
        yield first, stop, weights
