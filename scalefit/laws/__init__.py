"""Scaling-law forms: each formula is a plain vectorised function, each law a frozen value.

Published and fitted laws are the same types, so comparison code cannot tell them apart.
Units: ``params`` and ``tokens`` are plain counts, ``flops`` training FLOPs, loss in nats.

- :mod:`.base`: the :class:`Law` protocol and the registry (one :class:`LawForm` per form);
- :mod:`.formulas`: ``C = 6 N D`` and the loss and allocation formulas;
- :mod:`.chinchilla`, :mod:`.kaplan`, :mod:`.allocation`, :mod:`.data_constrained`,
  :mod:`.overtraining`: the law values;
- :mod:`.inference`: inference-aware allocation, tokens for a loss, break-even demand.

Every public name is importable from here; the law modules load on first use of one of their
names (``from scalefit.laws import KaplanLaw`` imports :mod:`.kaplan`), so that a command
fitting one law does not define every law class. :data:`REGISTRY`, :data:`LAW_FORMS` (the
forms :func:`law_from_parameters` understands, in alphabetical order) and
:func:`law_from_parameters` load every law module first, so they always see every form.
"""

from __future__ import annotations

import _thread
import importlib
from typing import TYPE_CHECKING, Any

from .._lazy import names, serve
from . import base
from .base import Allocation, FittedLaw, FloatArray, Law, LawForm, LossLaw
from .formulas import (
    FLOPS_PER_PF_DAY,
    chinchilla_allocation,
    chinchilla_loss,
    kaplan_joint_allocation,
    kaplan_joint_loss,
    power_law_loss,
    training_flops,
)

if TYPE_CHECKING:
    from .allocation import AllocationLaw, TokensPerParamLaw
    from .base import REGISTRY, law_from_parameters
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

    LAW_FORMS: tuple[str, ...]

_LAW_MODULES = ("allocation", "chinchilla", "data_constrained", "kaplan", "overtraining")
"""The modules whose law classes join the registry (:func:`base.register`), in the order
they register."""

_LAZY = {
    **dict.fromkeys(("AllocationLaw", "TokensPerParamLaw"), "allocation"),
    "ChinchillaLaw": "chinchilla",
    **dict.fromkeys(
        (
            "MUENNIGHOFF_R_D_STAR",
            "MUENNIGHOFF_R_N_STAR",
            "DataConstrainedLaw",
            "data_constrained_form",
            "data_constrained_loss",
            "effective_params",
            "effective_tokens",
            "unique_params",
        ),
        "data_constrained",
    ),
    **dict.fromkeys(
        (
            "InferenceOptimum",
            "UnreachableLossError",
            "break_even_inference_tokens",
            "inference_optimal_allocation",
            "lowest_loss",
            "tokens_for_loss",
        ),
        "inference",
    ),
    **dict.fromkeys(
        ("KaplanComputeLaw", "KaplanJointLaw", "KaplanLaw", "KaplanParamsLaw", "KaplanTokensLaw"),
        "kaplan",
    ),
    **dict.fromkeys(("DownstreamErrorLaw", "OvertrainingLaw"), "overtraining"),
}
"""Names imported from their module on first use (PEP 562): a command that uses one law
does not pay for defining every other law class (~10 ms)."""

_WHOLE_REGISTRY = ("LAW_FORMS", "REGISTRY", "law_from_parameters")
"""Names that need every law form registered: their first use imports every law module."""

_REGISTERING = _thread.allocate_lock()


def _register_all() -> None:
    """Import every law module (each registers its forms), put :data:`REGISTRY` in the
    order the forms register in when the modules are imported in :data:`_LAW_MODULES`'
    order (whichever was imported first), then serve the :data:`_WHOLE_REGISTRY` names.
    Once, under a lock: no caller sees the registry while it is put in order."""
    with _REGISTERING:
        if "REGISTRY" in globals():
            return
        for module in _LAW_MODULES:
            importlib.import_module(f"{__name__}.{module}")
        rank = {f"{__name__}.{module}": i for i, module in enumerate(_LAW_MODULES)}
        ordered = sorted(base.REGISTRY.items(), key=lambda item: rank[item[1].cls.__module__])
        base.REGISTRY.clear()
        base.REGISTRY.update(ordered)
        globals()["LAW_FORMS"] = tuple(sorted(base.REGISTRY))
        globals()["law_from_parameters"] = base.law_from_parameters
        globals()["REGISTRY"] = base.REGISTRY


def __getattr__(name: str) -> Any:
    # Public names served on first use (then kept here): a law module's names (`_LAZY`),
    # the whole registry (`_WHOLE_REGISTRY`), or a submodule by its name.
    if name in _LAZY:
        return serve(globals(), _LAZY[name], name)
    if name in _WHOLE_REGISTRY:
        _register_all()
        return globals()[name]
    if name in {*_LAW_MODULES, "inference"}:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return names(globals(), __all__)


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
