"""Kaplan et al. (2020), "Scaling Laws for Neural Language Models": the single-variable laws
``L(N)``, ``L(D)``, ``L(C)``, the joint ``L(N, D)`` and the paper's published law as a whole."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
from numpy.typing import ArrayLike

from ..errors import UnknownLawError
from .base import Allocation, FloatArray, no_allocation, register
from .formulas import (
    FLOPS_PER_PF_DAY,
    kaplan_joint_allocation,
    kaplan_joint_loss,
    power_law_loss,
    training_flops,
)


@register(allocates="never")
@dataclass(frozen=True, slots=True)
class KaplanParamsLaw:
    """``L(N) = E + (N_c / N)^alpha_N`` (Kaplan et al. 2020, Eq. 1.1; the paper has ``E = 0``).

    The loss of models trained to convergence; ``tokens`` is ignored by :meth:`loss`.
    """

    N_c: float
    alpha_N: float
    E: float = 0.0

    form = "kaplan_n"

    def loss(self, params: ArrayLike, tokens: ArrayLike | None = None) -> FloatArray:
        """Predicted loss (nats) of a model with ``params`` parameters (``tokens`` unused)."""
        return power_law_loss(params, self.N_c, self.alpha_N, self.E)

    def allocation(self, flops: ArrayLike) -> Allocation:
        """Always raises: a law of parameters alone cannot split a budget."""
        raise no_allocation(self, "it depends on parameters only")

    def parameters(self) -> dict[str, float]:
        """The law's parameters by name, as stored in the ``laws`` table."""
        return {"N_c": self.N_c, "alpha_N": self.alpha_N, "E": self.E}


@register(allocates="never")
@dataclass(frozen=True, slots=True)
class KaplanTokensLaw:
    """``L(D) = E + (D_c / D)^alpha_D`` (Kaplan et al. 2020, Eq. 1.2; the paper has ``E = 0``).

    The loss of large models trained with early stopping; ``params`` is ignored by :meth:`loss`.
    """

    D_c: float
    alpha_D: float
    E: float = 0.0

    form = "kaplan_d"

    def loss(self, params: ArrayLike | None, tokens: ArrayLike) -> FloatArray:
        """Predicted loss (nats) after ``tokens`` tokens (``params`` unused)."""
        return power_law_loss(tokens, self.D_c, self.alpha_D, self.E)

    def allocation(self, flops: ArrayLike) -> Allocation:
        """Always raises: a law of tokens alone cannot split a budget."""
        raise no_allocation(self, "it depends on tokens only")

    def parameters(self) -> dict[str, float]:
        """The law's parameters by name, as stored in the ``laws`` table."""
        return {"D_c": self.D_c, "alpha_D": self.alpha_D, "E": self.E}


@register(allocates="never")
@dataclass(frozen=True, slots=True)
class KaplanComputeLaw:
    """``L(C) = E + (C_c / C)^alpha_C`` with ``C`` in FLOPs (Kaplan et al. 2020, Eq. 1.3).

    ``C_c`` is in FLOPs here (the paper prints ``C_c`` in PF-days: multiply by
    :data:`FLOPS_PER_PF_DAY`). :meth:`loss` uses ``C = 6 N D``.
    """

    C_c: float
    alpha_C: float
    E: float = 0.0

    form = "kaplan_c"

    def loss(self, params: ArrayLike, tokens: ArrayLike) -> FloatArray:
        """Predicted loss (nats) at compute ``C = 6 N D``."""
        return self.loss_at_flops(training_flops(params, tokens))

    def loss_at_flops(self, flops: ArrayLike) -> FloatArray:
        """Predicted loss (nats) at ``flops`` training FLOPs."""
        return power_law_loss(flops, self.C_c, self.alpha_C, self.E)

    def allocation(self, flops: ArrayLike) -> Allocation:
        """Always raises: a law of compute alone does not say how to split it."""
        raise no_allocation(self, "it depends on compute only")

    def parameters(self) -> dict[str, float]:
        """The law's parameters by name, as stored in the ``laws`` table."""
        return {"C_c": self.C_c, "alpha_C": self.alpha_C, "E": self.E}


@register(allocates="always")
@dataclass(frozen=True, slots=True)
class KaplanJointLaw:
    """``L(N, D) = E + ((N_c/N)^(alpha_N/alpha_D) + D_c/D)^alpha_D`` (Kaplan et al. 2020, Eq. 1.5).

    See :func:`kaplan_joint_loss` and :func:`kaplan_joint_allocation`.
    """

    N_c: float
    alpha_N: float
    D_c: float
    alpha_D: float
    E: float = 0.0

    form = "kaplan_nd"

    def loss(self, params: ArrayLike, tokens: ArrayLike) -> FloatArray:
        """Predicted loss (nats) of a model with ``params`` parameters on ``tokens`` tokens."""
        return kaplan_joint_loss(
            params, tokens, self.N_c, self.alpha_N, self.D_c, self.alpha_D, self.E
        )

    def allocation(self, flops: ArrayLike) -> Allocation:
        """The law's own compute-optimal allocation (:func:`kaplan_joint_allocation`)."""
        n, d = kaplan_joint_allocation(flops, self.N_c, self.alpha_N, self.D_c, self.alpha_D)
        return Allocation(flops=np.asarray(flops, dtype=float), params=n, tokens=d)

    @property
    def exponents(self) -> tuple[float, float]:
        """``(a, b)`` of :meth:`allocation`: ``1/(1+r)``, ``r/(1+r)``, ``r = alpha_N/alpha_D``."""
        r = self.alpha_N / self.alpha_D
        return 1.0 / (1.0 + r), r / (1.0 + r)

    def parameters(self) -> dict[str, float]:
        """The law's parameters by name, as stored in the ``laws`` table."""
        return {
            "N_c": self.N_c,
            "alpha_N": self.alpha_N,
            "D_c": self.D_c,
            "alpha_D": self.alpha_D,
            "E": self.E,
        }


@register(allocates="never")
@dataclass(frozen=True, slots=True)
class KaplanLaw:
    """Kaplan et al. (2020) as published (form ``kaplan`` of ``datasets/laws.csv``).

    :meth:`loss` is the joint ``L(N, D)`` (Eq. 1.5); :attr:`compute_law` is ``L(C_min)``
    (Eq. 1.3, ``C_c_flops`` in FLOPs). The paper's compute-optimal allocation is published
    as exponents only (``N_opt ~ C^params_exp``, ``D_opt ~ C^tokens_exp``, Section 6), so
    :meth:`allocation` raises :class:`~scalefit.errors.AllocationUnavailableError`; use
    :attr:`exponents`, or :attr:`joint_law` for the joint law's own optimum.
    """

    alpha_N: float
    N_c: float
    alpha_D: float
    D_c: float
    alpha_C: float | None = None
    C_c: float | None = None
    C_c_flops: float | None = None
    params_exp: float | None = None
    tokens_exp: float | None = None

    form = "kaplan"

    @property
    def joint_law(self) -> KaplanJointLaw:
        """The joint ``L(N, D)`` as a :class:`KaplanJointLaw`."""
        return KaplanJointLaw(
            N_c=self.N_c, alpha_N=self.alpha_N, D_c=self.D_c, alpha_D=self.alpha_D
        )

    @property
    def compute_law(self) -> KaplanComputeLaw:
        """``L(C_min)`` as a :class:`KaplanComputeLaw` (``C_c`` in FLOPs)."""
        c_c = self.C_c_flops
        if c_c is None and self.C_c is not None:
            c_c = self.C_c * FLOPS_PER_PF_DAY
        if self.alpha_C is None or c_c is None:
            raise UnknownLawError("this Kaplan law has no `alpha_C` and `C_c_flops`")
        return KaplanComputeLaw(C_c=c_c, alpha_C=self.alpha_C)

    def loss(self, params: ArrayLike, tokens: ArrayLike) -> FloatArray:
        """Predicted loss (nats) by the joint law (Eq. 1.5)."""
        return self.joint_law.loss(params, tokens)

    @property
    def exponents(self) -> tuple[float | None, float | None]:
        """Published allocation exponents ``(a, b)``: ``N_opt ~ C^a``, ``D_opt ~ C^b``."""
        return self.params_exp, self.tokens_exp

    def allocation(self, flops: ArrayLike) -> Allocation:
        """Always raises: the paper publishes ``N_opt ~ C^0.73`` without a coefficient."""
        raise no_allocation(
            self,
            f"the paper publishes N_opt ~ C^{self.params_exp} without a coefficient "
            "(see `.exponents`, or `.joint_law.allocation(flops)` for the joint law's optimum)",
        )

    def parameters(self) -> dict[str, float]:
        """The law's parameters by name (unset ones omitted)."""
        return {
            f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None
        }
