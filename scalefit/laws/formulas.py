"""The formulas of the laws, each a plain vectorised function whose docstring holds it, once.

Units: ``params`` and ``tokens`` are plain counts, ``flops`` training FLOPs, loss in nats.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike

from .base import FloatArray

FLOPS_PER_PF_DAY = 8.64e19
"""One petaflop/s-day, ``1e15 * 24 * 3600`` FLOPs (Kaplan et al. 2020, Section 1.3)."""


def training_flops(params: ArrayLike, tokens: ArrayLike) -> FloatArray:
    """Training compute by the usual approximation ``C = 6 N D``.

    Parameters
    ----------
    params
        Parameters ``N`` (count).
    tokens
        Training tokens ``D`` (count).

    Examples
    --------
    >>> float(training_flops(70e9, 1.4e12))
    5.88e+23
    """
    return 6.0 * np.asarray(params, dtype=float) * np.asarray(tokens, dtype=float)


def chinchilla_loss(
    params: ArrayLike, tokens: ArrayLike, E: float, A: float, B: float, alpha: float, beta: float
) -> FloatArray:
    """Chinchilla parametric loss ``L(N, D) = E + A / N^alpha + B / D^beta``.

    Hoffmann et al. (2022), "Training Compute-Optimal Large Language Models", Eq. 2.

    Examples
    --------
    >>> round(float(chinchilla_loss(70e9, 1.4e12, 1.69, 406.4, 410.7, 0.34, 0.28)), 4)
    1.9366
    """
    n = np.asarray(params, dtype=float)
    d = np.asarray(tokens, dtype=float)
    return E + A * n**-alpha + B * d**-beta


def chinchilla_allocation(
    flops: ArrayLike,
    A: FloatArray | float,
    B: FloatArray | float,
    alpha: FloatArray | float,
    beta: FloatArray | float,
) -> tuple[FloatArray, FloatArray]:
    """Compute-optimal ``(N_opt, D_opt)`` of the Chinchilla law under ``C = 6 N D``
    (vectorised: the coefficients may be arrays, one value per bootstrap resample).

    Minimising ``L`` subject to ``C = 6 N D`` gives (Hoffmann et al. 2022, Eq. 4 and D.2)::

        N_opt(C) = G (C/6)^(beta/(alpha+beta)),   D_opt(C) = G^-1 (C/6)^(alpha/(alpha+beta)),
        G = (alpha A / (beta B))^(1/(alpha+beta)).

    The exponents ``a = beta/(alpha+beta)`` and ``b = alpha/(alpha+beta)`` add up to 1.

    Examples
    --------
    >>> n, d = chinchilla_allocation(6e20, 406.4, 410.7, 0.34, 0.28)
    >>> f"{float(n):.4g} {float(d):.4g}"
    '1.448e+09 6.904e+10'
    """
    c = np.asarray(flops, dtype=float) / 6.0
    G = (alpha * A / (beta * B)) ** (1.0 / (alpha + beta))
    a = beta / (alpha + beta)
    b = alpha / (alpha + beta)
    return G * c**a, c**b / G


def power_law_loss(x: ArrayLike, x_c: float, alpha: float, E: float = 0.0) -> FloatArray:
    """Kaplan et al. (2020) single-variable law ``L(x) = E + (x_c / x)^alpha``.

    ``x`` is parameters (Eq. 1.1, ``L(N)``), tokens (Eq. 1.2, ``L(D)``) or compute (Eq. 1.3,
    ``L(C_min)``); the paper has ``E = 0``. Evaluated as ``exp(alpha (log x_c - log x))`` so
    that counts up to 1e30 neither overflow nor lose precision.

    Examples
    --------
    >>> round(float(power_law_loss(1e9, 8.8e13, 0.076)), 4)
    2.3756
    """
    x = np.asarray(x, dtype=float)
    return E + np.exp(alpha * (math.log(x_c) - np.log(x)))


def kaplan_joint_loss(
    params: ArrayLike,
    tokens: ArrayLike,
    N_c: float,
    alpha_N: float,
    D_c: float,
    alpha_D: float,
    E: float = 0.0,
) -> FloatArray:
    """Kaplan et al. (2020) joint law ``L(N, D) = ((N_c/N)^(alpha_N/alpha_D) + D_c/D)^alpha_D``.

    Eq. (1.5) of the paper, which has no irreducible term (``E = 0``); with ``E`` it becomes
    ``E + (...)^alpha_D``.

    Examples
    --------
    >>> round(float(kaplan_joint_loss(1e9, 1e10, 8.8e13, 0.076, 5.4e13, 0.095)), 4)
    2.4838
    """
    n = np.asarray(params, dtype=float)
    d = np.asarray(tokens, dtype=float)
    z1 = (alpha_N / alpha_D) * (math.log(N_c) - np.log(n))
    z2 = math.log(D_c) - np.log(d)
    return E + np.exp(alpha_D * np.logaddexp(z1, z2))


def kaplan_joint_allocation(
    flops: ArrayLike, N_c: float, alpha_N: float, D_c: float, alpha_D: float
) -> tuple[FloatArray, FloatArray]:
    """Compute-optimal ``(N_opt, D_opt)`` of the joint Kaplan law under ``C = 6 N D``.

    With ``r = alpha_N / alpha_D``, minimising ``(N_c/N)^r + 6 D_c N / C`` over ``N`` gives
    ``N_opt = (r N_c^r C / (6 D_c))^(1/(1+r))`` and ``D_opt = C / (6 N_opt)``. This is the law's
    own optimum, not the paper's early-stopping allocation ``N ~ C^0.73`` (its Section 6).

    Examples
    --------
    >>> n, d = kaplan_joint_allocation(1e21, 8.8e13, 0.076, 5.4e13, 0.095)
    >>> f"{float(n):.4g} {float(d):.4g}"
    '5.61e+09 2.971e+10'
    """
    c = np.asarray(flops, dtype=float)
    r = alpha_N / alpha_D
    log_n = (math.log(r) + r * math.log(N_c) + np.log(c) - math.log(6.0 * D_c)) / (1.0 + r)
    n = np.exp(log_n)
    return n, c / (6.0 * n)


def argmin_log(
    objective: Callable[[FloatArray], ArrayLike], lo: float, hi: float, n_grid: int = 801
) -> float:
    """Minimiser over ``x in [lo, hi]`` of a vectorised ``objective(x)``: the best point of a
    grid, refined by bounded Brent between its neighbours (robust to flat or infinite ends)."""
    from scipy.optimize import minimize_scalar

    x = np.linspace(lo, hi, n_grid)
    with np.errstate(all="ignore"):
        f = np.asarray(objective(x), dtype=float)
    f = np.where(np.isfinite(f), f, np.inf)
    i = int(np.argmin(f))
    a, b = x[max(i - 1, 0)], x[min(i + 1, n_grid - 1)]

    def scalar(t: float) -> float:
        with np.errstate(all="ignore"):
            v = float(np.asarray(objective(np.array([t])))[0])
        return v if math.isfinite(v) else math.inf

    res = minimize_scalar(scalar, bounds=(a, b), method="bounded", options={"xatol": 1e-12})
    return float(res.x) if res.fun <= f[i] else float(x[i])
