"""Muennighoff et al. (2023), "Scaling Data-Constrained Language Models": the value of
repeated data and of parameters beyond what the unique data can use, and the law built on them.

One reason practitioners train far past the compute-optimal point is running out of unique
data; the other, inference cost, is :mod:`scalefit.laws.inference`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
from numpy.typing import ArrayLike

from .base import Allocation, FloatArray, Law, register
from .chinchilla import ChinchillaLaw
from .formulas import argmin_log, chinchilla_loss

MUENNIGHOFF_R_D_STAR = 15.387756
"""Fitted decay constant of repeated data ``R_D*`` (Muennighoff et al. 2023, Appendix A, the
fit of Eq. (6); also in ``datasets/beyond.csv``, law ``muennighoff2023``)."""

MUENNIGHOFF_R_N_STAR = 5.309743
"""Fitted decay constant of excess parameters ``R_N*`` (Muennighoff et al. 2023, Appendix A)."""


def _decayed(unique: FloatArray, repeats: FloatArray, r_star: float) -> FloatArray:
    """``U + U R* (1 - exp(-R/R*))``; ``R* = inf`` (no decay) gives ``U (1 + R)``."""
    if math.isinf(r_star):
        return unique * (1.0 + repeats)
    return unique + unique * r_star * -np.expm1(-repeats / r_star)


def effective_tokens(tokens: ArrayLike, unique_tokens: ArrayLike, R_D_star: float) -> FloatArray:
    """Effective data ``D'`` of ``D`` training tokens drawn from ``U`` unique tokens.

    Muennighoff et al. (2023), "Scaling Data-Constrained Language Models", Section 3.1,
    Eq. (5); derived in their Appendix A as the continuous form of a geometric series::

        U_D = min(U, D),   R_D = D / U_D - 1   (repetitions; 0 for one epoch),
        D'  = U_D + U_D R_D* (1 - exp(-R_D / R_D*)).

    ``D' = D`` without repetition and ``D' -> U_D (1 + R_D*)`` as ``R_D -> inf``.

    Examples
    --------
    The paper's own worked case (Appendix A): one unique unit seen five times (``R_D = 4``)
    with ``R_D* = 3`` is worth ``1 + 3 (1 - e^(-4/3)) = 3.21`` units.

    >>> round(float(effective_tokens(5.0, 1.0, 3.0)), 2)
    3.21
    """
    d = np.asarray(tokens, dtype=float)
    u_d = np.minimum(np.asarray(unique_tokens, dtype=float), d)
    return _decayed(u_d, d / u_d - 1.0, R_D_star)


def unique_params(
    unique_tokens: ArrayLike, A: float, B: float, alpha: float, beta: float
) -> FloatArray:
    """Compute-optimal parameters for ``U_D`` tokens, ``N_opt`` with ``D_opt = U_D``.

    Muennighoff et al. (2023), Appendix A (the equation defining ``U_N``), from inverting
    :func:`chinchilla_allocation`: ``U_N = G (U_D G)^(beta/alpha)``,
    ``G = (alpha A / (beta B))^(1/(alpha+beta))``.

    Examples
    --------
    With the paper's C4 fit (``alpha = beta``) this is ``G^2 U_D = 0.051 U_D`` (their Eq. (17)).

    >>> round(float(unique_params(1.0, 520.8249517, 1487.716094, 0.3526596, 0.3526596)), 3)
    0.051
    """
    G = (alpha * A / (beta * B)) ** (1.0 / (alpha + beta))
    return G * (np.asarray(unique_tokens, dtype=float) * G) ** (beta / alpha)


def effective_params(params: ArrayLike, unique_params: ArrayLike, R_N_star: float) -> FloatArray:
    """Effective parameters ``N'`` of ``N`` parameters when ``U_N`` would suffice.

    Muennighoff et al. (2023), Section 3.1, Eq. (6)::

        U_N = min(U_N_opt, N),   R_N = max(N / U_N - 1, 0),
        N'  = U_N + U_N R_N* (1 - exp(-R_N / R_N*)),

    with ``U_N_opt`` from :func:`unique_params`: parameters beyond those the unique data can
    use decay in value like repeated tokens.

    Examples
    --------
    >>> float(effective_params(5.0, 10.0, 5.3))  # fewer parameters than U_N: no decay
    5.0
    """
    n = np.asarray(params, dtype=float)
    u_n = np.minimum(np.asarray(unique_params, dtype=float), n)
    return _decayed(u_n, np.maximum(n / u_n - 1.0, 0.0), R_N_star)


def data_constrained_loss(
    params: ArrayLike,
    tokens: ArrayLike,
    unique_tokens: ArrayLike,
    E: float,
    A: float,
    B: float,
    alpha: float,
    beta: float,
    R_D_star: float,
    R_N_star: float,
) -> FloatArray:
    """Data-constrained loss ``L = E + A / N'^alpha + B / D'^beta``.

    Muennighoff et al. (2023), Eq. (6) (Appendix A): the Chinchilla law
    (:func:`chinchilla_loss`) at effective parameters ``N'`` (:func:`effective_params`) and
    effective data ``D'`` (:func:`effective_tokens`), ``U_N`` computed from
    ``U_D = min(U, D)`` by :func:`unique_params`. With ``R_D* = R_N* = inf``, or without
    repetition (``U >= D`` and ``N <= U_N``), it is the Chinchilla law itself.

    Examples
    --------
    The authors' own example (huggingface/datablations README, the two models of their
    Figure 1, right), with their C4 coefficients: 6.34B parameters on 242B tokens drawn from
    25B unique tokens.

    >>> c4 = dict(E=1.869143678, A=520.8249517, B=1487.716094, alpha=0.3526596,
    ...           beta=0.3526596, R_D_star=15.387756, R_N_star=5.309743)
    >>> round(float(data_constrained_loss(6.34e9, 242e9, 25e9, **c4)), 6)
    2.225644
    """
    d = np.asarray(tokens, dtype=float)
    u_d = np.minimum(np.asarray(unique_tokens, dtype=float), d)
    n_eff = effective_params(params, unique_params(u_d, A, B, alpha, beta), R_N_star)
    d_eff = effective_tokens(d, u_d, R_D_star)
    return chinchilla_loss(n_eff, d_eff, E, A, B, alpha, beta)


@register(allocates="always")
@dataclass(frozen=True, slots=True)
class DataConstrainedLaw:
    """Muennighoff et al. (2023)'s data-constrained law (form ``data_constrained``).

    ``L(N, D, U) = E + A / N'^alpha + B / D'^beta`` (:func:`data_constrained_loss`): the
    Chinchilla law at effective parameters and data. With unlimited unique data
    (``unique_tokens=None``) it is the Chinchilla law, and :meth:`allocation` is the
    Chinchilla allocation (the paper, Appendix A: "it provides the same estimates for optimal
    model and data size in the single epoch case"); :meth:`constrained_allocation` is the
    optimum when only ``U`` unique tokens exist.

    Examples
    --------
    >>> law = DataConstrainedLaw(1.69, 406.4, 410.7, 0.34, 0.28, 15.387756, 5.309743)
    >>> opt = law.constrained_allocation(1e23, unique_tokens=1e11)
    >>> f"{opt.params:.3g} params, {opt.tokens / 1e11:.2g} epochs"
    '1.21e+10 params, 14 epochs'
    """

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    R_D_star: float
    R_N_star: float

    form = "data_constrained"

    @property
    def base(self) -> ChinchillaLaw:
        """The single-epoch Chinchilla law with the same ``E, A, B, alpha, beta``."""
        return ChinchillaLaw(self.E, self.A, self.B, self.alpha, self.beta)

    def loss(
        self, params: ArrayLike, tokens: ArrayLike, unique_tokens: ArrayLike | None = None
    ) -> FloatArray:
        """Predicted loss (nats); ``unique_tokens=None`` means every token is unique."""
        if unique_tokens is None:
            return self.base.loss(params, tokens)
        return data_constrained_loss(
            params,
            tokens,
            unique_tokens,
            self.E,
            self.A,
            self.B,
            self.alpha,
            self.beta,
            self.R_D_star,
            self.R_N_star,
        )

    def allocation(self, flops: ArrayLike) -> Allocation:
        """Compute-optimal allocation with unlimited unique data (the Chinchilla one)."""
        return self.base.allocation(flops)

    def constrained_allocation(self, flops: float, unique_tokens: float) -> Allocation:
        """The ``(N, D)`` minimising :meth:`loss` at ``C = 6 N D`` with ``unique_tokens``
        unique tokens (any number of epochs ``D / U``), found numerically over ``log N``.

        Parameters
        ----------
        flops
            Training compute ``C`` (FLOPs), a scalar.
        unique_tokens
            Unique tokens available ``U``, a scalar.
        """
        c, u = float(flops), float(unique_tokens)
        n_opt = float(self.base.allocation(c).params)

        def loss_at(x: np.ndarray) -> np.ndarray:
            n = np.exp(x)
            return self.loss(n, c / (6.0 * n), u)

        x = argmin_log(loss_at, math.log(n_opt) - 12.0, math.log(n_opt) + 6.0)
        n = math.exp(x)
        return Allocation(flops=c, params=n, tokens=c / (6.0 * n))

    def parameters(self) -> dict[str, float]:
        """The law's parameters by name, as stored in the ``laws`` table."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def data_constrained_form(law: Law) -> DataConstrainedLaw | None:
    """``law`` as a data-constrained law: itself if it is one; a Chinchilla law extended with
    Muennighoff et al. (2023)'s decay constants :data:`MUENNIGHOFF_R_D_STAR` and
    :data:`MUENNIGHOFF_R_N_STAR` (fitted on C4); else ``None`` (no such form).

    Examples
    --------
    >>> law = data_constrained_form(ChinchillaLaw(1.69, 406.4, 410.7, 0.34, 0.28))
    >>> law.R_D_star == MUENNIGHOFF_R_D_STAR and law.base.alpha == 0.34
    True
    """
    if isinstance(law, DataConstrainedLaw):
        return law
    if isinstance(law, ChinchillaLaw):
        return DataConstrainedLaw(
            law.E, law.A, law.B, law.alpha, law.beta, MUENNIGHOFF_R_D_STAR, MUENNIGHOFF_R_N_STAR
        )
    return None
