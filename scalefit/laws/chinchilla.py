"""Hoffmann et al. (2022), "Training Compute-Optimal Large Language Models": the parametric
law ``L(N, D) = E + A / N^alpha + B / D^beta`` (their approach 3)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from .base import Allocation, FloatArray, register
from .formulas import chinchilla_allocation, chinchilla_loss


@register(allocates="always")
@dataclass(frozen=True, slots=True)
class ChinchillaLaw:
    """The Chinchilla parametric law ``L(N, D) = E + A / N^alpha + B / D^beta``.

    See :func:`chinchilla_loss` and :func:`chinchilla_allocation` for the formulas.
    """

    E: float
    A: float
    B: float
    alpha: float
    beta: float

    form = "chinchilla"

    def loss(self, params: ArrayLike, tokens: ArrayLike) -> FloatArray:
        """Predicted loss (nats) of a model with ``params`` parameters on ``tokens`` tokens."""
        return chinchilla_loss(params, tokens, self.E, self.A, self.B, self.alpha, self.beta)

    def allocation(self, flops: ArrayLike) -> Allocation:
        """Compute-optimal parameters and tokens for a training budget of ``flops``."""
        n, d = chinchilla_allocation(flops, self.A, self.B, self.alpha, self.beta)
        return Allocation(flops=np.asarray(flops, dtype=float), params=n, tokens=d)

    @property
    def exponents(self) -> tuple[float, float]:
        """Allocation exponents ``(a, b)`` with ``N_opt ~ C^a`` and ``D_opt ~ C^b``."""
        s = self.alpha + self.beta
        return self.beta / s, self.alpha / s

    def parameters(self) -> dict[str, float]:
        """The law's parameters by name, as stored in the ``laws`` table."""
        return {"E": self.E, "A": self.A, "B": self.B, "alpha": self.alpha, "beta": self.beta}
