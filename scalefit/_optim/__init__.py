"""Numerics of the fitting engine: Huber loss in log space, its derivatives, and a batched
Levenberg-Marquardt driver that minimises many starts (or many bootstrap resamples) at once.

Every model here predicts ``log L_hat`` for each data point; the objective of one parameter
vector ``theta`` with point weights ``w`` (bootstrap multiplicities, 1 for a plain fit) is::

    f(theta) = sum_i w_i huber_delta(log L_hat_i(theta) - log L_i)

    huber_delta(r) = r^2 / 2                 if |r| <= delta
                   = delta (|r| - delta / 2) otherwise

(Hoffmann et al. 2022, Section 3.3, with the sum instead of the mean as Besiroglu et al. 2024
recommend). Arrays carry a leading "batch" axis ``S`` (starts or resamples): ``theta`` is
``(S, P)``, weights ``(S, n)`` or ``(n,)``.

Why Levenberg-Marquardt and not L-BFGS: with ``delta = 1e-3`` most residuals sit in the linear
part of the Huber loss, the objective near the optimum is ~1e-3 and its gradient far smaller,
so quasi-Newton methods with default tolerances stop early. Newton steps on the exact Hessian
(cheap: at most 5 parameters) converge quadratically, damping keeps them safe far from the
optimum, and convergence is certified by the Newton decrement relative to the objective,
which is scale-free.

Modules: ``_blocks`` (memory budget, blocks, Huber loss), ``lse`` (the log-sum-exp-affine
model and its fused derivatives), ``generic`` (models given as a function; the objective),
``driver`` (the batched damped Newton), ``resample`` (bootstrap weights in bounded blocks).
"""

from __future__ import annotations

from ._blocks import DEFAULT_BUDGET, Array, first_of_equal_rows, huber
from .driver import BatchResult, BatchRun, driver_chunk, minimize_batch, minimize_chunked
from .generic import GenericModel, HuberObjective, _huber_loss_and_grad
from .lse import LSEAffineModel
from .resample import bootstrap_weight_blocks, weight_block_rows

MEMORY_BUDGET: int = DEFAULT_BUDGET
"""Bytes of work memory one evaluation of the objective may hold (default 256 MB): scratch
arrays of the derivatives, per-point constants, copies of per-row weights. The rows
(starts or bootstrap resamples) and the points of every evaluation are processed in blocks
chosen from it, so that memory does not grow with the number of points or of starts; the
data themselves (``O(n)`` design arrays, weights) come on top. Override package-wide
(``scalefit._optim.MEMORY_BUDGET = ...``, read at every call), or per call with ``budget=``
(:func:`minimize_batch`, :func:`minimize_chunked`)."""

__all__ = [
    "MEMORY_BUDGET",
    "Array",
    "BatchResult",
    "BatchRun",
    "GenericModel",
    "HuberObjective",
    "LSEAffineModel",
    "_huber_loss_and_grad",
    "bootstrap_weight_blocks",
    "driver_chunk",
    "first_of_equal_rows",
    "huber",
    "minimize_batch",
    "minimize_chunked",
    "weight_block_rows",
]
