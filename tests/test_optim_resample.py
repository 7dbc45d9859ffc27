"""Bootstrap weights drawn in budgeted blocks are the rows of the whole matrix, bit for bit,
and each block stays within its budget."""

from __future__ import annotations

import numpy as np
import pytest

from scalefit._optim.resample import bootstrap_weight_blocks, weight_block_rows


def whole(groups: np.ndarray, n_bootstrap: int, seed: int) -> np.ndarray:
    """The all-at-once draw the blocks must reproduce (the fit's original formula)."""
    rng = np.random.default_rng(seed)
    n_groups = int(groups.max()) + 1
    draws = rng.integers(0, n_groups, size=(n_bootstrap, n_groups))
    counts = np.zeros((n_bootstrap, n_groups))
    np.add.at(counts, (np.arange(n_bootstrap)[:, None], draws), 1.0)
    return counts[:, groups]


@pytest.mark.parametrize(
    ("n_points", "n_groups", "n_bootstrap", "budget"),
    [(37, 37, 23, 4_000), (250, 9, 40, 3_000), (1001, 1001, 7, 10**9), (64, 5, 1, 1)],
)
def test_blocks_are_the_rows_of_the_whole_matrix(n_points, n_groups, n_bootstrap, budget) -> None:
    rng = np.random.default_rng(1)
    groups = np.concatenate([np.arange(n_groups), rng.integers(0, n_groups, n_points - n_groups)])
    want = whole(groups, n_bootstrap, seed=5)
    gen = np.random.default_rng(5)
    blocks = list(bootstrap_weight_blocks(groups, n_bootstrap, gen, budget=budget))
    got = np.concatenate([w for _, _, w in blocks])
    np.testing.assert_array_equal(got, want)
    assert [b[0] for b in blocks] == list(range(0, n_bootstrap, blocks[0][1]))
    rows = weight_block_rows(n_points, n_groups, budget)
    assert all(w.shape[0] <= rows for _, _, w in blocks)
    assert all(w.nbytes <= max(budget, 8 * n_points) for _, _, w in blocks)
    # The stream is left where the whole draw leaves it.
    after = np.random.default_rng(5)
    after.integers(0, n_groups, size=(n_bootstrap, n_groups))
    assert gen.integers(0, 2**62) == after.integers(0, 2**62)


def test_max_rows_splits_further_and_bad_input_is_refused() -> None:
    groups = np.arange(10)
    blocks = list(bootstrap_weight_blocks(groups, 10, np.random.default_rng(0), max_rows=3))
    assert [(a, b) for a, b, _ in blocks] == [(0, 3), (3, 6), (6, 9), (9, 10)]
    assert all((w.sum(axis=1) == 10).all() for _, _, w in blocks)
    with pytest.raises(ValueError, match="groups"):
        next(bootstrap_weight_blocks(np.array([]), 3, np.random.default_rng(0)))
    with pytest.raises(ValueError, match="memory budget"):
        next(bootstrap_weight_blocks(groups, 3, np.random.default_rng(0), budget=0))


def test_drawing_every_block_stays_within_the_budget() -> None:
    """Traced allocations while 40 resamples of 100,000 points are drawn block by block (each
    block dropped before the next, as a consumer does) stay under the budget, a tenth of
    what the whole (40, 100,000) matrix alone would take."""
    import tracemalloc

    n, budget = 100_000, 4_000_000
    groups = np.arange(n)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        total = 0.0
        for _, _, w in bootstrap_weight_blocks(groups, 40, np.random.default_rng(0), budget=budget):
            total += w.sum()
            del w
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert total == 40 * n
    assert peak <= budget < 40 * n * 8
