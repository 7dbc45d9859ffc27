"""What a fit's optimum says about the data: identifiability from the scaled Hessian."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["IDENTIFIABILITY_LIMIT", "identifiability"]

IDENTIFIABILITY_LIMIT = 1e8
"""Condition number of the scaled Hessian above which a fit warns that the data barely
constrain a combination of parameters."""


def identifiability(
    theta_names: Sequence[str], hess: np.ndarray, free: np.ndarray
) -> tuple[float, list[str]]:
    """Condition number of the scaled Hessian on the free parameters, and a warning naming
    the parameters the data cannot separate when it is huge."""
    idx = np.flatnonzero(free)
    if idx.size < 2:
        return 1.0, []
    H = hess[np.ix_(idx, idx)]
    d = np.sqrt(np.clip(np.abs(np.diag(H)), 1e-300, None))
    Hs = H / d[:, None] / d[None, :]
    ev, vec = np.linalg.eigh(Hs)
    cond = float(ev[-1] / ev[0]) if ev[0] > 0 else math.inf
    msgs = []
    if not cond < IDENTIFIABILITY_LIMIT:
        v = np.abs(vec[:, 0])
        top = [theta_names[idx[j]] for j in np.argsort(v)[::-1][:2]]
        msgs.append(
            f"the data barely constrain a combination of {top[0]} and {top[1]} "
            f"(scaled Hessian condition number {cond:.3g}): widen the range of model sizes "
            "and token counts, or fix one exponent"
        )
    return cond, msgs
