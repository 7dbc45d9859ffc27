"""Plan a training run for a compute budget: compute-optimal, data-constrained and
inference-aware choices side by side, under any law with an allocation (published or fitted).

- Compute-optimal: the law's own allocation at ``C = 6 N D`` (for the Chinchilla law,
  :func:`scalefit.laws.chinchilla_allocation`).
- Data-constrained (with ``unique_tokens``): the ``(N, D)`` minimising Muennighoff et al.
  (2023)'s loss at the same ``C`` when only ``U`` unique tokens exist
  (:meth:`scalefit.laws.DataConstrainedLaw.constrained_allocation`); ``epochs = D / U``. A
  Chinchilla law is extended with the paper's published decay constants ``R_D*``, ``R_N*``
  (:data:`scalefit.laws.MUENNIGHOFF_R_D_STAR`, :data:`~scalefit.laws.MUENNIGHOFF_R_N_STAR`),
  which were fitted on C4; a ``data_constrained`` law (e.g. a fit) uses its own.
- Inference-aware (with ``inference_tokens``): the ``(N, D)`` reaching a target loss at the
  least ``6 N D + 2 N D_inference`` (Sardana et al. 2023;
  :func:`scalefit.laws.inference_optimal_allocation`). The target is ``target_loss``, else the
  loss of the compute-optimal choice (of the data-constrained one when ``unique_tokens`` is
  given, whose loss law is then used too). The saving is against the compute-optimal (or
  data-constrained) choice for the same target loss serving the same inference tokens.

Intervals: when planning from a :class:`~scalefit.fit.LawFit` with bootstrap samples (or given
``sample_laws``), every quantity gets a percentile interval over the resampled laws.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, overload

import numpy as np

from .errors import AllocationUnavailableError, PlanError
from .laws import (
    MUENNIGHOFF_R_D_STAR,
    MUENNIGHOFF_R_N_STAR,
    DataConstrainedLaw,
    FittedLaw,
    Law,
    LossLaw,
    data_constrained_form,
    inference_optimal_allocation,
)

__all__ = ["Plan", "PlanPoint", "plan_budget"]


@dataclass(frozen=True)
class PlanPoint:
    """One recommended ``(N, D)`` and what it implies.

    ``epochs`` is set for the data-constrained choice; ``total_flops`` (training plus
    inference), ``compute_optimal_total_flops`` (the same for the compute-optimal choice at
    the same loss) and ``saving_flops`` for the inference-aware one. ``ci`` maps a quantity
    to its percentile interval (empty without bootstrap samples).
    """

    params: float
    tokens: float
    loss: float | None
    epochs: float | None = None
    unique_tokens: float | None = None
    inference_tokens: float | None = None
    total_flops: float | None = None
    compute_optimal_total_flops: float | None = None
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def tokens_per_param(self) -> float:
        """``D / N``."""
        return self.tokens / self.params

    @property
    def training_flops(self) -> float:
        """``6 N D``."""
        return 6.0 * self.params * self.tokens

    @property
    def saving_flops(self) -> float | None:
        """``compute_optimal_total_flops - total_flops`` (inference-aware choice only)."""
        if self.total_flops is None or self.compute_optimal_total_flops is None:
            return None
        return self.compute_optimal_total_flops - self.total_flops

    @property
    def saving_fraction(self) -> float | None:
        """``saving_flops / compute_optimal_total_flops``."""
        s, reference = self.saving_flops, self.compute_optimal_total_flops
        return None if s is None or reference is None else s / reference

    def quantities(self) -> dict[str, float | None]:
        """The point's quantities by name (what ``--json`` prints, without ``ci``)."""
        out: dict[str, float | None] = {
            "params": self.params,
            "tokens": self.tokens,
            "tokens_per_param": self.tokens_per_param,
            "loss": self.loss,
        }
        if self.epochs is not None:
            out.update(epochs=self.epochs, unique_tokens=self.unique_tokens)
        if self.total_flops is not None:
            out.update(
                inference_tokens=self.inference_tokens,
                training_flops=self.training_flops,
                inference_flops=None
                if self.inference_tokens is None
                else 2.0 * self.params * self.inference_tokens,
                total_flops=self.total_flops,
                compute_optimal_total_flops=self.compute_optimal_total_flops,
                saving_flops=self.saving_flops,
                saving_fraction=self.saving_fraction,
            )
        return out


@dataclass(frozen=True)
class Plan:
    """What :func:`plan_budget` recommends for one compute budget under one law."""

    flops: float
    law_form: str
    law_id: str | None
    compute_optimal: PlanPoint
    data_constrained: PlanPoint | None = None
    inference_aware: PlanPoint | None = None
    confidence_level: float | None = None
    n_samples: int = 0
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """One JSON-ready object (what ``scalefit plan --json`` prints)."""
        out: dict[str, Any] = {
            "flops": self.flops,
            "law": {"law_id": self.law_id, "form": self.law_form},
        }
        for name in ("compute_optimal", "data_constrained", "inference_aware"):
            point = getattr(self, name)
            if point is not None:
                body: dict[str, Any] = point.quantities()
                if point.ci:
                    body["ci"] = {k: [lo, hi] for k, (lo, hi) in point.ci.items()}
                out[name] = body
        if self.n_samples:
            out["confidence_level"] = self.confidence_level
            out["n_samples"] = self.n_samples
        out["notes"] = list(self.notes)
        return out


def _check_positive(name: str, value: float | None, *, allow_zero: bool = False) -> None:
    if value is None:
        return
    ok = isinstance(value, int | float) and math.isfinite(value)
    ok = ok and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise PlanError(f"`{name}` must be a finite number {bound}, got {value!r}")


def _constrained_law(law: Law) -> DataConstrainedLaw:
    dc = data_constrained_form(law)
    if dc is not None:
        return dc
    raise AllocationUnavailableError(
        f"law form `{law.form}` has no data-constrained form: use a `chinchilla` or "
        "`data_constrained` law with --unique-tokens"
    )


def _point_estimates(
    law: Law,
    flops: float,
    unique_tokens: float | None,
    inference_tokens: float | None,
    target_loss: float | None,
) -> tuple[PlanPoint, PlanPoint | None, PlanPoint | None]:
    opt = law.allocation(flops)
    n, d = float(opt.params), float(opt.tokens)
    loss = float(law.loss(n, d)) if isinstance(law, LossLaw) else None
    compute = PlanPoint(params=n, tokens=d, loss=loss)
    constrained = None
    base_law, base_point, unique = law, compute, None
    if unique_tokens is not None:
        dc = _constrained_law(law)
        got = dc.constrained_allocation(flops, unique_tokens)
        n_c, d_c = float(got.params), float(got.tokens)
        constrained = PlanPoint(
            params=n_c,
            tokens=d_c,
            loss=float(dc.loss(n_c, d_c, unique_tokens)),
            epochs=d_c / unique_tokens,
            unique_tokens=unique_tokens,
        )
        base_law, base_point, unique = dc, constrained, unique_tokens
    aware = None
    if inference_tokens is not None:
        aware = _inference_aware(base_law, base_point, unique, inference_tokens, target_loss)
    return compute, constrained, aware


def _inference_aware(
    law: Law,
    base: PlanPoint,
    unique_tokens: float | None,
    inference_tokens: float,
    target_loss: float | None,
) -> PlanPoint:
    """The least-total-compute choice reaching ``target_loss`` (default the loss of
    ``base``, the compute-optimal or data-constrained choice under ``law``) while serving
    ``inference_tokens``, against ``base``'s total compute for the same target."""
    if base.loss is None:
        raise AllocationUnavailableError(
            f"law form `{law.form}` predicts no loss: the inference-aware optimum needs a "
            "law with a parametric loss (e.g. `chinchilla`)"
        )
    target = base.loss if target_loss is None else target_loss
    best = inference_optimal_allocation(law, target, inference_tokens, unique_tokens=unique_tokens)
    if target_loss is None:
        ref_n, ref_d = base.params, base.tokens
    else:
        ref = inference_optimal_allocation(law, target, 0.0, unique_tokens=unique_tokens)
        ref_n, ref_d = ref.params, ref.tokens
    return PlanPoint(
        params=best.params,
        tokens=best.tokens,
        loss=best.loss,
        epochs=None if unique_tokens is None else best.tokens / unique_tokens,
        unique_tokens=unique_tokens,
        inference_tokens=inference_tokens,
        total_flops=best.total_flops,
        compute_optimal_total_flops=6.0 * ref_n * ref_d + 2.0 * ref_n * inference_tokens,
    )


@overload
def _with_ci(point: PlanPoint, draws: list[PlanPoint | None], level: float) -> PlanPoint: ...
@overload
def _with_ci(point: None, draws: list[PlanPoint | None], level: float) -> None: ...
@overload
def _with_ci(
    point: PlanPoint | None, draws: list[PlanPoint | None], level: float
) -> PlanPoint | None: ...
def _with_ci(
    point: PlanPoint | None, draws: list[PlanPoint | None], level: float
) -> PlanPoint | None:
    """``point`` with percentile intervals at ``level`` over the resampled ``draws``."""
    if point is None:
        return None
    q = (1.0 - level) / 2.0
    ci = {}
    for name, value in point.quantities().items():
        if value is None or name in ("unique_tokens", "inference_tokens"):
            continue
        vals = np.array([d.quantities().get(name) for d in draws if d is not None], dtype=float)
        vals = vals[np.isfinite(vals)]
        if vals.size:
            ci[name] = (float(np.quantile(vals, q)), float(np.quantile(vals, 1.0 - q)))
    return PlanPoint(**{**point.__dict__, "ci": ci})


def plan_budget(
    law: Law | FittedLaw,
    flops: float,
    *,
    unique_tokens: float | None = None,
    inference_tokens: float | None = None,
    target_loss: float | None = None,
    law_id: str | None = None,
    sample_laws: Sequence[Law] | None = None,
    confidence_level: float = 0.95,
) -> Plan:
    """Compute-optimal, data-constrained and inference-aware choices for ``flops``.

    Parameters
    ----------
    law
        A law value (published or fitted, anything with ``allocation(flops)``), or a
        :class:`~scalefit.fit.LawFit`, whose bootstrap samples then give intervals.
    flops
        Training compute budget ``C`` (FLOPs).
    unique_tokens
        Unique training tokens available; adds the data-constrained optimum. Default none.
    inference_tokens
        Tokens the model will process at inference over its life; adds the inference-aware
        optimum. Default none.
    target_loss
        Loss the inference-aware choice must reach; default the loss of the compute-optimal
        (or, with ``unique_tokens``, data-constrained) choice at ``flops``.
    law_id
        Name of the law, carried into the result.
    sample_laws
        Resampled laws (e.g. a stored fit's bootstrap); default ``law.sample_laws()`` for a
        :class:`~scalefit.fit.LawFit`, else none.
    confidence_level
        Level of the percentile intervals; default 0.95.

    Raises
    ------
    ValueError
        A non-positive budget or token count, or ``confidence_level`` outside ``(0, 1)``.
    AllocationUnavailableError
        The law cannot allocate compute, or cannot give the choice asked for.
    UnreachableLossError
        ``target_loss`` is at or below what the law can reach.

    Examples
    --------
    >>> from scalefit.laws import ChinchillaLaw
    >>> law = ChinchillaLaw(1.69, 406.4, 410.7, 0.34, 0.28)
    >>> p = plan_budget(law, 5.76e23, inference_tokens=1e14)
    >>> f"{p.compute_optimal.params:.3g} -> {p.inference_aware.params:.3g} params"
    '3.22e+10 -> 9.59e+09 params'
    >>> f"saves {p.inference_aware.saving_fraction:.0%} of total compute"
    'saves 56% of total compute'
    """
    _check_inputs(flops, unique_tokens, inference_tokens, target_loss, confidence_level)
    value, samples = _law_and_samples(law, sample_laws)
    points = _point_estimates(value, flops, unique_tokens, inference_tokens, target_loss)
    if samples:
        draws: list[tuple[PlanPoint | None, ...]] = []
        for s in samples:
            try:
                draws.append(
                    _point_estimates(s, flops, unique_tokens, inference_tokens, target_loss)
                )
            except (AllocationUnavailableError, ValueError, FloatingPointError):
                draws.append((None, None, None))
        compute, constrained, aware = points
        points = (
            _with_ci(compute, [d[0] for d in draws], confidence_level),
            _with_ci(constrained, [d[1] for d in draws], confidence_level),
            _with_ci(aware, [d[2] for d in draws], confidence_level),
        )
    compute, constrained, aware = points
    return Plan(
        flops=float(flops),
        law_form=value.form,
        law_id=law_id,
        compute_optimal=compute,
        data_constrained=constrained,
        inference_aware=aware,
        confidence_level=confidence_level if samples else None,
        n_samples=len(samples),
        notes=_notes(value, unique_tokens, inference_tokens, confidence_level, len(samples)),
    )


def _check_inputs(
    flops: float,
    unique_tokens: float | None,
    inference_tokens: float | None,
    target_loss: float | None,
    confidence_level: float,
) -> None:
    _check_positive("flops", flops)
    _check_positive("unique_tokens", unique_tokens)
    _check_positive("inference_tokens", inference_tokens, allow_zero=True)
    _check_positive("target_loss", target_loss)
    if not (isinstance(confidence_level, int | float) and 0 < confidence_level < 1):
        raise PlanError(f"`confidence_level` must be in (0, 1), got {confidence_level!r}")


def _law_and_samples(
    law: Law | FittedLaw, sample_laws: Sequence[Law] | None
) -> tuple[Law, list[Law]]:
    """The law value to plan with and the resampled laws for intervals: a
    :class:`~scalefit.fit.LawFit` gives its law and, unless ``sample_laws`` are given, its
    bootstrap laws."""
    if not isinstance(law, FittedLaw):
        return law, list(sample_laws or [])
    if sample_laws is None:
        sample_laws = law.sample_laws() if law.n_bootstrap else []
    return law.law, list(sample_laws)


def _notes(
    law: Law,
    unique_tokens: float | None,
    inference_tokens: float | None,
    confidence_level: float,
    n_samples: int,
) -> tuple[str, ...]:
    """What a reader of the plan must know about how each choice was made."""
    notes = []
    if unique_tokens is not None and not isinstance(law, DataConstrainedLaw):
        notes.append(
            f"data-constrained: the law extended with Muennighoff et al. (2023)'s decay "
            f"constants R_D* = {MUENNIGHOFF_R_D_STAR}, R_N* = {MUENNIGHOFF_R_N_STAR} "
            "(fitted on C4)"
        )
    if inference_tokens is not None:
        notes.append(
            "inference-aware: minimises 6 N D + 2 N D_inference at the target loss "
            "(Sardana et al. 2023); inference_tokens is the lifetime total"
        )
    if n_samples:
        notes.append(
            f"intervals: {confidence_level:.0%} percentile intervals over {n_samples} "
            "bootstrap resamples of the fit"
        )
    return tuple(notes)
