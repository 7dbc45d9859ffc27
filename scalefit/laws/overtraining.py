"""Gadre et al. (2024), "Language models scale reliably with over-training and on downstream
tasks" (arXiv:2403.08540): the over-training law and the downstream-error law."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from .base import Allocation, FloatArray, no_allocation, register
from .formulas import chinchilla_allocation, chinchilla_loss


@register(allocates="always")
@dataclass(frozen=True, slots=True)
class OvertrainingLaw:
    """Gadre et al. (2024)'s over-training law ``L(N, D) = E + A N^-eta + B D^-eta``.

    The Chinchilla form with one exponent shared by both terms. The paper writes it in compute
    ``C = 6 N D`` and the token multiplier ``M = D / N``: ``L(C, M) = E + (a M^eta' +
    b M^-eta') C^-eta'`` with ``eta' = eta / 2``, ``a = A 6^(eta/2)``, ``b = B 6^(eta/2)``
    (Gadre et al. 2024, arXiv:2403.08540, Eq. 4); at fixed ``M`` the loss is a power law
    in compute with the same exponent for every ``M`` (their "reliable scaling").
    """

    E: float
    A: float
    B: float
    eta: float

    form = "overtraining"

    def loss(self, params: ArrayLike, tokens: ArrayLike) -> FloatArray:
        """Predicted loss (nats) of ``params`` parameters trained on ``tokens`` tokens."""
        return chinchilla_loss(params, tokens, self.E, self.A, self.B, self.eta, self.eta)

    def loss_at_multiplier(self, flops: ArrayLike, multiplier: ArrayLike) -> FloatArray:
        """Loss at compute ``flops`` and tokens per parameter ``multiplier`` (``M = D/N``):
        ``N = sqrt(C / (6 M))``, ``D = M N``."""
        c = np.asarray(flops, dtype=float)
        m = np.asarray(multiplier, dtype=float)
        n = np.sqrt(c / (6.0 * m))
        return self.loss(n, m * n)

    def allocation(self, flops: ArrayLike) -> Allocation:
        """Compute-optimal split (:func:`chinchilla_allocation` with ``alpha = beta = eta``):
        the optimal tokens per parameter ``(B / A)^(1/eta)`` is the same at every budget."""
        n, d = chinchilla_allocation(flops, self.A, self.B, self.eta, self.eta)
        return Allocation(flops=np.asarray(flops, dtype=float), params=n, tokens=d)

    def parameters(self) -> dict[str, float]:
        """The law's parameters by name, as stored in the ``laws`` table."""
        return {"E": self.E, "A": self.A, "B": self.B, "eta": self.eta}


@register(allocates="never")
@dataclass(frozen=True, slots=True)
class DownstreamErrorLaw:
    """Gadre et al. (2024)'s downstream law: average top-1 error as a function of loss,
    ``Err(L) = epsilon - k exp(-gamma L)`` (arXiv:2403.08540, Eq. 5).

    ``epsilon`` is the error as the loss grows without bound (near chance); a predicted loss
    gives a predicted error. It predicts no loss from parameters and tokens.
    """

    epsilon: float
    k: float
    gamma: float

    form = "downstream_error"

    def error(self, loss: ArrayLike) -> FloatArray:
        """Predicted average top-1 error at ``loss`` (nats).

        Examples
        --------
        >>> round(float(DownstreamErrorLaw(0.9, 20.0, 1.2).error(3.0)), 6)
        0.353526
        """
        return self.epsilon - self.k * np.exp(-self.gamma * np.asarray(loss, dtype=float))

    def allocation(self, flops: ArrayLike) -> Allocation:
        """Always raises: a law of error against loss says nothing of parameters and tokens."""
        raise no_allocation(self, "it maps a loss to a downstream error")

    def parameters(self) -> dict[str, float]:
        """The law's parameters by name, as stored in the ``laws`` table."""
        return {"epsilon": self.epsilon, "k": self.k, "gamma": self.gamma}
