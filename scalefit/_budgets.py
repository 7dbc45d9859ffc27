"""Compute budgets shared by points: the one grouping that the IsoFLOP fit and its plot
both use, so that a plot draws exactly the budgets the fit found."""

from __future__ import annotations

import numpy as np


def budget_groups(values: np.ndarray, rtol: float = 0.05) -> np.ndarray:
    """Group index of each value: values within ``rtol`` of their group's smallest share it.

    Examples
    --------
    >>> budget_groups(np.array([1e18, 3e18, 1.02e18, 3.1e18])).tolist()
    [0, 1, 0, 1]
    """
    order = np.argsort(values)
    out = np.empty(values.size, dtype=int)
    g, lead = -1, -np.inf
    for i in order:
        if values[i] > lead * (1 + rtol):
            g, lead = g + 1, values[i]
        out[i] = g
    return out
