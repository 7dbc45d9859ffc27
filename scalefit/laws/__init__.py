"""Scaling-law forms: each formula is a plain vectorised function, each law a frozen value.

Published and fitted laws are the same types, so comparison code cannot tell them apart.
Units: ``params`` and ``tokens`` are plain counts, ``flops`` training FLOPs, loss in nats.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, fields
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..errors import AllocationUnavailableError, UnknownLawError

FloatArray = NDArray[np.float64]

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


@dataclass(frozen=True, slots=True)
class Allocation:
    """A compute-optimal split of a compute budget into parameters and tokens."""

    flops: FloatArray | float
    params: FloatArray | float
    tokens: FloatArray | float

    @property
    def tokens_per_param(self) -> FloatArray | float:
        """``D_opt / N_opt``."""
        return np.asarray(self.tokens) / np.asarray(self.params)


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
    flops: ArrayLike, A: float, B: float, alpha: float, beta: float
) -> tuple[FloatArray, FloatArray]:
    """Compute-optimal ``(N_opt, D_opt)`` of the Chinchilla law under ``C = 6 N D``.

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


def _no_allocation(law: Any, why: str) -> AllocationUnavailableError:
    return AllocationUnavailableError(
        f"this `{law.form}` law cannot size a compute budget: {why}. Allocating compute needs "
        "a loss law in N and D (`chinchilla`, `kaplan_nd`), a `tokens_per_param` rule, or an "
        "`allocation` law that states a coefficient (e.g. `llama3_2024`)"
    )


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
        raise _no_allocation(self, "it depends on parameters only")

    def parameters(self) -> dict[str, float]:
        """The law's parameters by name, as stored in the ``laws`` table."""
        return {"N_c": self.N_c, "alpha_N": self.alpha_N, "E": self.E}


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
        raise _no_allocation(self, "it depends on tokens only")

    def parameters(self) -> dict[str, float]:
        """The law's parameters by name, as stored in the ``laws`` table."""
        return {"D_c": self.D_c, "alpha_D": self.alpha_D, "E": self.E}


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
        raise _no_allocation(self, "it depends on compute only")

    def parameters(self) -> dict[str, float]:
        """The law's parameters by name, as stored in the ``laws`` table."""
        return {"C_c": self.C_c, "alpha_C": self.alpha_C, "E": self.E}


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
        if self.alpha_C is None or (self.C_c_flops is None and self.C_c is None):
            raise UnknownLawError("this Kaplan law has no `alpha_C` and `C_c_flops`")
        c_c = self.C_c_flops if self.C_c_flops is not None else self.C_c * FLOPS_PER_PF_DAY
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
        raise _no_allocation(
            self,
            f"the paper publishes N_opt ~ C^{self.params_exp} without a coefficient "
            "(see `.exponents`, or `.joint_law.allocation(flops)` for the joint law's optimum)",
        )

    def parameters(self) -> dict[str, float]:
        """The law's parameters by name (unset ones omitted)."""
        return {
            f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None
        }


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
        n = d = None
        if self.params_coef is not None and self.params_exp is not None:
            n = self.params_coef * c**self.params_exp
        elif self.flops_per_token_coef is not None and self.flops_per_token_exp is not None:
            m = self.flops_per_token_coef * c**self.flops_per_token_exp
            n, d = m / 6.0, c / m
        if self.tokens_coef is not None and self.tokens_exp is not None:
            d = self.tokens_coef * c**self.tokens_exp
        if n is None and d is None:
            raise _no_allocation(
                self,
                "it states only the exponents of the optimum (N_opt ~ C^a, D_opt ~ C^b), "
                "no coefficient",
            )
        if n is None:
            n = c / (6.0 * d)
        if d is None:
            d = c / (6.0 * n)
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


# --------------------------------------------------------------------------- beyond Chinchilla
#
# Two reasons practitioners train far past the compute-optimal point: running out of unique
# data (Muennighoff et al. 2023) and inference cost (Sardana et al. 2023).


class UnreachableLossError(AllocationUnavailableError):
    """A target loss is at or below the lowest loss a law can reach (its irreducible term, or
    the plateau that a finite number of unique tokens imposes)."""


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


def _argmin_log(objective: Any, lo: float, hi: float, n_grid: int = 801) -> float:
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

        x = _argmin_log(loss_at, math.log(n_opt) - 12.0, math.log(n_opt) + 6.0)
        n = math.exp(x)
        return Allocation(flops=c, params=n, tokens=c / (6.0 * n))

    def parameters(self) -> dict[str, float]:
        """The law's parameters by name, as stored in the ``laws`` table."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _loss_fn(law: Any, unique_tokens: float | None) -> Any:
    if not hasattr(law, "loss"):
        raise AllocationUnavailableError(
            f"law form `{law.form}` predicts no loss: the inference-aware optimum needs a law "
            "with a parametric loss L(N, D) (e.g. `chinchilla`, `data_constrained`, `kaplan_nd`)"
        )
    if unique_tokens is None:
        return law.loss
    if isinstance(law, DataConstrainedLaw):
        return lambda n, d: law.loss(n, d, unique_tokens)
    raise AllocationUnavailableError(
        f"law form `{law.form}` has no notion of unique tokens; use a `data_constrained` law"
    )


_LOG_HUGE = 92.0  # log(1e40): a count no budget reaches, standing in for infinity


def tokens_for_loss(
    law: Any, params: ArrayLike, target_loss: float, *, unique_tokens: float | None = None
) -> FloatArray:
    """Training tokens ``D`` at which a model of ``params`` parameters reaches ``target_loss``:
    the root of ``L(N, D) = target`` in ``D`` (``nan`` where ``N`` alone cannot reach it).

    Closed form for the Chinchilla law, ``D = (B / (target - E - A N^-alpha))^(1/beta)``;
    otherwise bisection in ``log D`` (every law here decreases in ``D``).

    Examples
    --------
    >>> law = ChinchillaLaw(1.69, 406.4, 410.7, 0.34, 0.28)
    >>> d = tokens_for_loss(law, 70e9, float(law.loss(70e9, 1.4e12)))
    >>> f"{float(d):.6g}"
    '1.4e+12'
    """
    n = np.atleast_1d(np.asarray(params, dtype=float))
    if isinstance(law, ChinchillaLaw) and unique_tokens is None:
        rem = target_loss - law.E - law.A * n**-law.alpha
        with np.errstate(all="ignore"):
            d = np.where(rem > 0, (law.B / np.where(rem > 0, rem, 1.0)) ** (1.0 / law.beta), np.nan)
        return d if np.ndim(params) else d[0]
    loss = _loss_fn(law, unique_tokens)
    lo = np.full_like(n, -_LOG_HUGE)
    hi = np.full_like(n, _LOG_HUGE)
    with np.errstate(all="ignore"):
        ok = np.asarray(loss(n, np.exp(hi)), dtype=float) < target_loss
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            above = np.asarray(loss(n, np.exp(mid)), dtype=float) > target_loss
            lo = np.where(above, mid, lo)
            hi = np.where(above, hi, mid)
            if np.all(hi - lo < 1e-13):
                break
    d = np.where(ok, np.exp(0.5 * (lo + hi)), np.nan)
    return d if np.ndim(params) else d[0]


@dataclass(frozen=True, slots=True)
class InferenceOptimum:
    """The ``(N, D)`` reaching a target loss at the least training plus inference compute."""

    params: float
    tokens: float
    loss: float
    inference_tokens: float

    @property
    def training_flops(self) -> float:
        """``6 N D``."""
        return 6.0 * self.params * self.tokens

    @property
    def inference_flops(self) -> float:
        """``2 N D_inference``."""
        return 2.0 * self.params * self.inference_tokens

    @property
    def total_flops(self) -> float:
        """``6 N D + 2 N D_inference``."""
        return self.training_flops + self.inference_flops

    @property
    def tokens_per_param(self) -> float:
        """``D / N``."""
        return self.tokens / self.params


def lowest_loss(law: Any, *, unique_tokens: float | None = None) -> float:
    """The infimum of the law's loss over all ``N, D``: ``E`` for the Chinchilla law; with
    ``unique_tokens`` the plateau ``E + A / (U_N (1 + R_N*))^alpha + B / (U (1 + R_D*))^beta``."""
    loss = _loss_fn(law, unique_tokens)
    huge = math.exp(_LOG_HUGE)
    return float(loss(huge, huge))


def inference_optimal_allocation(
    law: Any,
    target_loss: float,
    inference_tokens: float,
    *,
    unique_tokens: float | None = None,
) -> InferenceOptimum:
    """Parameters and tokens reaching ``target_loss`` at the least total compute, training
    plus inference.

    Sardana et al. (2023), "Beyond Chinchilla-Optimal: Accounting for Inference in Language
    Model Scaling Laws", Section 2::

        N*, D* = argmin_{N, D : L(N, D) = target}  6 N D + 2 N D_inference

    Solved numerically for any law with a parametric loss: for each ``N``, ``D`` follows from
    :func:`tokens_for_loss`; the total cost is minimised over ``log N`` on a grid refined by
    bounded Brent. With ``D_inference = 0`` this is the compute-optimal allocation whose loss
    is ``target_loss``. With ``unique_tokens`` the loss is the data-constrained one
    (``law`` must be a :class:`DataConstrainedLaw`).

    Parameters
    ----------
    law
        A law with ``loss(params, tokens)``.
    target_loss
        Loss to reach (nats).
    inference_tokens
        Tokens the model will process at inference over its lifetime (``>= 0``).
    unique_tokens
        Unique training tokens available; default unlimited.

    Raises
    ------
    UnreachableLossError
        ``target_loss`` is at or below :func:`lowest_loss`.
    AllocationUnavailableError
        The law predicts no loss.

    Examples
    --------
    >>> law = ChinchillaLaw(1.69, 406.4, 410.7, 0.34, 0.28)
    >>> opt = inference_optimal_allocation(law, 2.0, 1e13)
    >>> f"{opt.params:.3g} params on {opt.tokens:.3g} tokens"
    '6.49e+09 params on 3.89e+12 tokens'
    """
    if not (math.isfinite(inference_tokens) and inference_tokens >= 0):
        raise ValueError(
            f"`inference_tokens` must be a finite number >= 0, got {inference_tokens!r}"
        )
    floor = lowest_loss(law, unique_tokens=unique_tokens)
    if not target_loss > floor * (1.0 + 1e-12):
        what = f" with {unique_tokens:.4g} unique tokens" if unique_tokens is not None else ""
        raise UnreachableLossError(
            f"target loss {target_loss:.6g} is unreachable: the law's lowest loss{what} is "
            f"{floor:.6g} nats; choose a target above it"
        )
    loss = _loss_fn(law, unique_tokens)
    huge = math.exp(_LOG_HUGE)
    # Smallest log N that can reach the target with unlimited tokens (bisection).
    lo, hi = -_LOG_HUGE, _LOG_HUGE
    if float(loss(1.0 / huge, huge)) < target_loss:
        hi = -_LOG_HUGE
    for _ in range(300):
        if hi - lo < 1e-12:
            break
        mid = 0.5 * (lo + hi)
        if float(loss(math.exp(mid), huge)) < target_loss:
            hi = mid
        else:
            lo = mid

    def log_cost(x: np.ndarray) -> np.ndarray:
        n = np.exp(x)
        d = tokens_for_loss(law, n, target_loss, unique_tokens=unique_tokens)
        return np.log(n) + np.log(6.0 * d + 2.0 * inference_tokens)

    x = _argmin_log(log_cost, hi + 1e-9, min(hi + 40.0, _LOG_HUGE))
    n = math.exp(x)
    d = float(tokens_for_loss(law, n, target_loss, unique_tokens=unique_tokens))
    return InferenceOptimum(
        params=n, tokens=d, loss=float(target_loss), inference_tokens=inference_tokens
    )


def break_even_inference_tokens(
    law: Any, params: ArrayLike, tokens: ArrayLike, *, unique_tokens: ArrayLike | None = None
) -> FloatArray:
    """Inference tokens at which ``params`` would be the inference-aware optimum for the loss
    the law predicts at ``(params, tokens)``: the demand that justifies its overtraining.

    Setting the derivative of Sardana et al.'s total cost ``6 N D(N) + 2 N T`` along the
    iso-loss curve to zero gives ``T = -3 D (1 + dlog D / dlog N)``, with
    ``dlog D / dlog N = -(dL/dlog N) / (dL/dlog D)``. For the Chinchilla law::

        T = 3 D (alpha A N^-alpha / (beta B D^-beta) - 1);

    other laws use central differences in log space. ``T = 0`` at the compute-optimal
    allocation; ``T < 0`` means the model is larger than compute-optimal for its loss, so no
    inference demand makes its size optimal.

    Examples
    --------
    LLaMA-3 8B on 15T tokens under Hoffmann et al.'s approach 3 (see ``tests``):

    >>> law = ChinchillaLaw(1.69, 406.4, 410.7, 0.34, 0.28)
    >>> f"{float(break_even_inference_tokens(law, 8e9, 15e12)):.4g}"
    '6.856e+13'
    """
    n = np.asarray(params, dtype=float)
    d = np.asarray(tokens, dtype=float)
    if isinstance(law, ChinchillaLaw | DataConstrainedLaw) and unique_tokens is None:
        ratio = (law.alpha * law.A * n**-law.alpha) / (law.beta * law.B * d**-law.beta)
        return 3.0 * d * (ratio - 1.0)
    loss = _loss_fn(law, None)
    if unique_tokens is not None:
        u = np.asarray(unique_tokens, dtype=float)
        loss = lambda nn, dd: law.loss(nn, dd, u)  # noqa: E731
    h = 1e-5
    dl_dn = (loss(n * math.exp(h), d) - loss(n * math.exp(-h), d)) / (2 * h)
    dl_dd = (loss(n, d * math.exp(h)) - loss(n, d * math.exp(-h))) / (2 * h)
    with np.errstate(all="ignore"):
        slope = -np.asarray(dl_dn) / np.asarray(dl_dd)
    return -3.0 * d * (1.0 + slope)


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

    def parameters(self) -> dict[str, float]:
        """The law's parameters by name, as stored in the ``laws`` table."""
        return {"epsilon": self.epsilon, "k": self.k, "gamma": self.gamma}


_LAW_TYPES: dict[str, type] = {
    "chinchilla": ChinchillaLaw,
    "kaplan": KaplanLaw,
    "kaplan_n": KaplanParamsLaw,
    "kaplan_d": KaplanTokensLaw,
    "kaplan_c": KaplanComputeLaw,
    "kaplan_nd": KaplanJointLaw,
    "allocation": AllocationLaw,
    "isoflop": AllocationLaw,
    "envelope": AllocationLaw,
    "tokens_per_param": TokensPerParamLaw,
    "data_constrained": DataConstrainedLaw,
    "overtraining": OvertrainingLaw,
    "downstream_error": DownstreamErrorLaw,
}

LAW_FORMS: tuple[str, ...] = tuple(_LAW_TYPES)
"""Forms :func:`law_from_parameters` understands (``isoflop``/``envelope`` are allocations)."""


def law_from_parameters(form: str, parameters: dict[str, float]) -> Any:
    """The law value of ``form`` with ``parameters``: the inverse of ``law.parameters()``.

    Parameters
    ----------
    form
        One of :data:`LAW_FORMS` (the ``laws.form`` column).
    parameters
        Parameter values by name (the ``laws.parameters`` JSON object). For ``allocation``
        laws, names ending in ``_low``/``_high`` are kept as published interval bounds.

    Raises
    ------
    UnknownLawError
        Unknown form, a missing required parameter, or an unknown parameter name.

    Examples
    --------
    >>> law = law_from_parameters("chinchilla", {"E": 1.69, "A": 406.4, "B": 410.7,
    ...                                          "alpha": 0.34, "beta": 0.28})
    >>> law_from_parameters(law.form, law.parameters()) == law
    True
    """
    try:
        cls = _LAW_TYPES[form]
    except KeyError:
        raise UnknownLawError(
            f"unknown law form `{form}`; allowed: {', '.join(LAW_FORMS)}"
        ) from None
    params = {k: float(v) for k, v in parameters.items() if v is not None}
    names = {f.name for f in fields(cls)} - {"extra"}
    if cls is AllocationLaw:
        extra = {k: params.pop(k) for k in list(params) if k.endswith(("_low", "_high"))}
        if extra:
            params["extra"] = tuple(sorted(extra.items()))  # type: ignore[assignment]
        names = names | {"extra"}
    unknown = set(params) - names
    if unknown:
        raise UnknownLawError(
            f"unknown parameter(s) {', '.join(f'`{u}`' for u in sorted(unknown))} for law form "
            f"`{form}`; allowed: {', '.join(sorted(names - {'extra'}))}"
        )
    required = [
        f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING
    ]
    missing = [name for name in required if name not in params]
    if missing:
        raise UnknownLawError(
            f"law form `{form}` needs parameter(s) {', '.join(f'`{m}`' for m in missing)}"
        )
    return cls(**params)
