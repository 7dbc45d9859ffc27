"""Inference-aware allocation (Sardana et al. 2023, "Beyond Chinchilla-Optimal: Accounting
for Inference in Language Model Scaling Laws"): the tokens a model needs to reach a loss, the
size that reaches it at the least training plus inference compute, and the inference demand
that justifies a model's over-training."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from ..errors import AllocationUnavailableError
from .base import FloatArray, Law, LossLaw
from .chinchilla import ChinchillaLaw
from .data_constrained import DataConstrainedLaw
from .formulas import argmin_log, training_flops


class UnreachableLossError(AllocationUnavailableError):
    """A target loss is at or below the lowest loss a law can reach (its irreducible term, or
    the plateau that a finite number of unique tokens imposes)."""


LossFn = Callable[[ArrayLike, ArrayLike], FloatArray]
"""A loss ``L(params, tokens)`` in nats."""


def _loss_fn(law: Law, unique_tokens: ArrayLike | None) -> LossFn:
    """The law's ``L(N, D)``; with ``unique_tokens``, its data-constrained loss at ``U``."""
    if not isinstance(law, LossLaw):
        raise AllocationUnavailableError(
            f"law form `{law.form}` predicts no loss: the inference-aware optimum needs a law "
            "with a parametric loss L(N, D) (e.g. `chinchilla`, `data_constrained`, `kaplan_nd`)"
        )
    if unique_tokens is None:
        return law.loss
    if isinstance(law, DataConstrainedLaw):
        u = unique_tokens
        return lambda n, d: law.loss(n, d, u)
    raise AllocationUnavailableError(
        f"law form `{law.form}` has no notion of unique tokens; use a `data_constrained` law"
    )


_LOG_HUGE = 92.0  # log(1e40): a count no budget reaches, standing in for infinity


def tokens_for_loss(
    law: Law, params: ArrayLike, target_loss: float, *, unique_tokens: float | None = None
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
        """``6 N D`` (:func:`~scalefit.laws.formulas.training_flops`)."""
        return float(training_flops(self.params, self.tokens))

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


def lowest_loss(law: Law, *, unique_tokens: float | None = None) -> float:
    """The infimum of the law's loss over all ``N, D``: ``E`` for the Chinchilla law; with
    ``unique_tokens`` the plateau ``E + A / (U_N (1 + R_N*))^alpha + B / (U (1 + R_D*))^beta``."""
    loss = _loss_fn(law, unique_tokens)
    huge = math.exp(_LOG_HUGE)
    return float(loss(huge, huge))


def inference_optimal_allocation(
    law: Law,
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
    _check_target(law, target_loss, inference_tokens, unique_tokens)
    lo = _smallest_log_params(_loss_fn(law, unique_tokens), target_loss)

    def log_cost(x: FloatArray) -> FloatArray:
        n = np.exp(x)
        d = tokens_for_loss(law, n, target_loss, unique_tokens=unique_tokens)
        return np.log(n) + np.log(6.0 * d + 2.0 * inference_tokens)

    n = math.exp(argmin_log(log_cost, lo + 1e-9, min(lo + 40.0, _LOG_HUGE)))
    d = float(tokens_for_loss(law, n, target_loss, unique_tokens=unique_tokens))
    return InferenceOptimum(
        params=n, tokens=d, loss=float(target_loss), inference_tokens=inference_tokens
    )


def _check_target(
    law: Law, target_loss: float, inference_tokens: float, unique_tokens: float | None
) -> None:
    """``ValueError`` for a negative or infinite ``inference_tokens``;
    :class:`UnreachableLossError` unless ``target_loss`` is above the law's floor."""
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


def _smallest_log_params(loss: LossFn, target_loss: float) -> float:
    """The smallest ``log N`` that reaches ``target_loss`` with unlimited tokens (bisection)."""
    huge = math.exp(_LOG_HUGE)
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
    return hi


def break_even_inference_tokens(
    law: Law, params: ArrayLike, tokens: ArrayLike, *, unique_tokens: ArrayLike | None = None
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
    loss = _loss_fn(law, None if unique_tokens is None else np.asarray(unique_tokens, float))
    h = 1e-5
    dl_dn = (loss(n * math.exp(h), d) - loss(n * math.exp(-h), d)) / (2 * h)
    dl_dd = (loss(n, d * math.exp(h)) - loss(n, d * math.exp(-h))) / (2 * h)
    with np.errstate(all="ignore"):
        slope = -np.asarray(dl_dn) / np.asarray(dl_dd)
    return -3.0 * d * (1.0 + slope)
