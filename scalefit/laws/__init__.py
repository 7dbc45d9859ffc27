"""Scaling-law forms: each formula is a plain vectorised function, each law a frozen value.

Published and fitted laws are the same types, so comparison code cannot tell them apart.
Units: ``params`` and ``tokens`` are plain counts, ``flops`` training FLOPs, loss in nats.

- :mod:`.base`: the :class:`Law` protocol and the registry (one :class:`LawForm` per form);
- :mod:`.formulas`: ``C = 6 N D`` and the loss and allocation formulas;
- :mod:`.chinchilla`, :mod:`.kaplan`, :mod:`.allocation`, :mod:`.data_constrained`,
  :mod:`.overtraining`: the law values;
- :mod:`.inference`: inference-aware allocation, tokens for a loss, break-even demand.
"""

from __future__ import annotations

from .allocation import AllocationLaw, TokensPerParamLaw
from .base import (
    REGISTRY,
    Allocation,
    FittedLaw,
    FloatArray,
    Law,
    LawForm,
    LossLaw,
    law_from_parameters,
)
from .chinchilla import ChinchillaLaw
from .data_constrained import (
    MUENNIGHOFF_R_D_STAR,
    MUENNIGHOFF_R_N_STAR,
    DataConstrainedLaw,
    data_constrained_form,
    data_constrained_loss,
    effective_params,
    effective_tokens,
    unique_params,
)
from .formulas import (
    FLOPS_PER_PF_DAY,
    chinchilla_allocation,
    chinchilla_loss,
    kaplan_joint_allocation,
    kaplan_joint_loss,
    power_law_loss,
    training_flops,
)
from .inference import (
    InferenceOptimum,
    UnreachableLossError,
    break_even_inference_tokens,
    inference_optimal_allocation,
    lowest_loss,
    tokens_for_loss,
)
from .kaplan import (
    KaplanComputeLaw,
    KaplanJointLaw,
    KaplanLaw,
    KaplanParamsLaw,
    KaplanTokensLaw,
)
from .overtraining import DownstreamErrorLaw, OvertrainingLaw

LAW_FORMS: tuple[str, ...] = tuple(sorted(REGISTRY))
"""Forms :func:`law_from_parameters` understands: the registry's (every module above imported),
in alphabetical order."""

__all__ = [
    "FLOPS_PER_PF_DAY",
    "LAW_FORMS",
    "MUENNIGHOFF_R_D_STAR",
    "MUENNIGHOFF_R_N_STAR",
    "REGISTRY",
    "Allocation",
    "AllocationLaw",
    "ChinchillaLaw",
    "DataConstrainedLaw",
    "DownstreamErrorLaw",
    "FittedLaw",
    "FloatArray",
    "InferenceOptimum",
    "KaplanComputeLaw",
    "KaplanJointLaw",
    "KaplanLaw",
    "KaplanParamsLaw",
    "KaplanTokensLaw",
    "Law",
    "LawForm",
    "LossLaw",
    "OvertrainingLaw",
    "TokensPerParamLaw",
    "UnreachableLossError",
    "break_even_inference_tokens",
    "chinchilla_allocation",
    "chinchilla_loss",
    "data_constrained_form",
    "data_constrained_loss",
    "effective_params",
    "effective_tokens",
    "inference_optimal_allocation",
    "kaplan_joint_allocation",
    "kaplan_joint_loss",
    "law_from_parameters",
    "lowest_loss",
    "power_law_loss",
    "tokens_for_loss",
    "training_flops",
    "unique_params",
]
