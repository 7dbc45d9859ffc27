"""Laws that state the compute-optimal split itself: a power law in compute (Hoffmann et al.
2022's approaches 1 and 2, Llama 3, DeepSeek; fitted IsoFLOP and envelope results) and the
tokens-per-parameter rule of thumb."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
from numpy.typing import ArrayLike

from .base import Allocation, FloatArray, no_allocation, register


@register(allocates="always")
@dataclass(frozen=True, slots=True)
class TokensPerParamLaw:
    """A fixed tokens-per-parameter rule, e.g. the "20 tokens per parameter" rule of thumb.

    Under ``C = 6 N D`` with ``D = r N``: ``N_opt = sqrt(C / (6 r))``, ``D_opt = r N_opt``.
    It predicts no loss.
    """

    ratio: float = 20.0

    form = "tokens_per_param"

    def allocation(self, flops: ArrayLike) -> Allocation:
        """Parameters and tokens at ``ratio`` tokens per parameter for ``flops``."""
        c = np.asarray(flops, dtype=float)
        n = np.sqrt(c / (6.0 * self.ratio))
        return Allocation(flops=c, params=n, tokens=self.ratio * n)

    def parameters(self) -> dict[str, float]:
        """The law's parameters by name."""
        return {"ratio": self.ratio}


@register(allocates="with_coefficients", interval_suffixes=("_low", "_high"))
@dataclass(frozen=True, slots=True)
class AllocationLaw:
    """A power-law compute-optimal allocation: ``N_opt = params_coef C^params_exp`` and/or
    ``D_opt = tokens_coef C^tokens_exp``, with ``C`` in FLOPs.

    Published allocation laws (Hoffmann et al. 2022 approaches 1 and 2, Llama 3, DeepSeek)
    and fitted IsoFLOP or envelope results are this type. When only one side has a
    coefficient the other follows from ``C = 6 N D``. DeepSeek (2024, Eq. 4) publishes the
    optimal non-embedding FLOPs per token ``M_opt = flops_per_token_coef C^flops_per_token_exp``
    instead of parameters; then ``D_opt = C / M_opt`` and ``N_opt = M_opt / 6`` (``C = 6 N D``).
    Published interval bounds (``*_low``, ``*_high``) are kept in :attr:`extra`.

    Examples
    --------
    >>> law = AllocationLaw(params_exp=0.5, params_coef=0.1)
    >>> opt = law.allocation(1e22)
    >>> f"{opt.params:.3g} {opt.tokens:.3g}"
    '1e+10 1.67e+11'
    """

    params_exp: float | None = None
    params_coef: float | None = None
    tokens_exp: float | None = None
    tokens_coef: float | None = None
    flops_per_token_exp: float | None = None
    flops_per_token_coef: float | None = None
    extra: tuple[tuple[str, float], ...] = ()

    form = "allocation"

    @property
    def exponents(self) -> tuple[float | None, float | None]:
        """``(a, b)`` with ``N_opt ~ C^a``, ``D_opt ~ C^b``; one given implies ``b = 1 - a``."""
        a, b = self.params_exp, self.tokens_exp
        if a is None and self.flops_per_token_exp is not None:
            a = self.flops_per_token_exp
        if a is None and b is not None:
            a = 1.0 - b
        if b is None and a is not None:
            b = 1.0 - a
        return a, b

    def allocation(self, flops: ArrayLike) -> Allocation:
        """Compute-optimal parameters and tokens for ``flops``.

        Raises
        ------
        AllocationUnavailableError
            No side has both an exponent and a coefficient.
        """
        c = np.asarray(flops, dtype=float)
        n: FloatArray | None = None
        d: FloatArray | None = None
        if self.params_coef is not None and self.params_exp is not None:
            n = self.params_coef * c**self.params_exp
        elif self.flops_per_token_coef is not None and self.flops_per_token_exp is not None:
            m = self.flops_per_token_coef * c**self.flops_per_token_exp
            n, d = m / 6.0, c / m
        if self.tokens_coef is not None and self.tokens_exp is not None:
            d = self.tokens_coef * c**self.tokens_exp
        if n is not None and d is None:
            d = c / (6.0 * n)
        elif d is not None and n is None:
            n = c / (6.0 * d)
        if n is None or d is None:
            raise no_allocation(
                self,
                "it states only the exponents of the optimum (N_opt ~ C^a, D_opt ~ C^b), "
                "no coefficient",
            )
        return Allocation(flops=c, params=n, tokens=d)

    def parameters(self) -> dict[str, float]:
        """The law's parameters by name (unset ones omitted, interval bounds included)."""
        out = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name != "extra" and getattr(self, f.name) is not None
        }
        out.update(dict(self.extra))
        return out
