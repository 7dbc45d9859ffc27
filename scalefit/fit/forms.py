"""The registry of fitted law forms: ONE record per form.

A :class:`Form` holds everything the fitting package knows of a form: how its points are read
and checked, the optimizer's model, parameter names and bounds, the starting grid (or how
starts are made from the data), the estimates, the derived quantities, the law it produces
and the name it is stored under. Adding a form is adding one record here (its formulas go to
:mod:`.models`) plus its recovery test.

:data:`REGISTRY` holds every record; :data:`FORMS` those fitted from the usual point columns
(``params``, ``tokens``, ``flops``, ``loss``; ``error`` for the downstream law), i.e. all but
the data-constrained form, which also needs ``unique_tokens``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from .. import laws
from ..errors import FitError
from ..laws import Law
from . import constrained, models
from .models import Estimates, Model
from .points import PointsLike, _Points, as_constrained_points, as_points
from .settings import GRID_ITERATIONS

__all__ = ["FORMS", "REGISTRY", "Form", "check_form", "hoffmann_grid"]

hoffmann_grid = models.hoffmann_grid


def _no_check(pts: _Points) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class Form:
    """One fitted law form: how it maps to the optimizer and back to a law."""

    name: str
    theta_names: tuple[str, ...]
    names: tuple[str, ...]  # estimate names, in order
    lower: np.ndarray
    upper: np.ndarray
    needs: tuple[str, ...]  # point columns that must be positive and take 2+ values
    grid: np.ndarray  # default starts (rows of theta)
    build_model: Callable[[_Points], Model]
    to_estimates: Callable[[np.ndarray], Estimates]
    to_law: Callable[[Mapping[str, float]], Law]
    target: str = "loss"  # the column fitted (in log space); ``error`` for downstream_error
    derive: Callable[[Mapping[str, np.ndarray], float], Estimates] = models.no_derived
    grid_iterations: int = GRID_ITERATIONS
    read: Callable[[PointsLike], _Points] | None = None  # None: the usual point columns
    check: Callable[[_Points], dict[str, Any]] = _no_check  # own refusals; diagnostics
    data_starts: Callable[[_Points], np.ndarray] | None = None  # starts made from the data
    conventions: Mapping[str, str] = field(default_factory=dict)  # recorded in settings
    derived_at_reference: bool = True  # whether settings record ``reference_flops``

    @property
    def fit_form(self) -> str:
        """The name a fit of this form is stored under (``fits.form``, ``LawFit.form``):
        the ``_e`` variants of the Kaplan forms are stored as their base form."""
        return self.name.removesuffix("_e")

    def points(self, data: PointsLike) -> _Points:
        """The checked points of ``data`` for this form."""
        if self.read is not None:
            return self.read(data)
        return as_points(data, need=self.needs, target=self.target)

    def starts(self, pts: _Points) -> np.ndarray:
        """The default starts for ``pts``."""
        return self.grid if self.data_starts is None else self.data_starts(pts)

    def model(self, pts: _Points) -> Model:
        return self.build_model(pts)

    def estimates(self, theta: np.ndarray) -> Estimates:
        """Estimates (vectorised over rows of ``theta``)."""
        return self.to_estimates(np.atleast_2d(theta))

    def derived(self, est: Mapping[str, Any], reference_flops: float) -> Estimates:
        """Quantities derived from the estimates (vectorised): allocation exponents and
        tokens per parameter at ``reference_flops``."""
        return self.derive(est, reference_flops)

    def law(self, est: Mapping[str, float]) -> Law:
        return self.to_law(est)


def _law_of(name: str, est: Mapping[str, float]) -> Law:
    """The law class ``name`` of :mod:`scalefit.laws` with ``est``: the class (and its
    module) is looked up when a fit of the form ends, so that the registry's records do not
    import every law module."""
    cls: Callable[..., Law] = getattr(laws, name)
    return cls(**est)


def _chinchilla_law(est: Mapping[str, float]) -> Law:
    from ..laws import ChinchillaLaw

    return ChinchillaLaw(**{k: est[k] for k in ("E", "A", "B", "alpha", "beta")})


_BIG = 1e3
_LOSS_BOX = ([-50.0, -50.0, -20.0], [200.0, 200.0, 20.0])  # a, b, e of LSE forms


def _kaplan_single() -> list[Form]:
    out = []
    for suffix, column, xc, alpha, law in (
        ("n", "params", "N_c", "alpha_N", "KaplanParamsLaw"),
        ("d", "tokens", "D_c", "alpha_D", "KaplanTokensLaw"),
        ("c", "flops", "C_c", "alpha_C", "KaplanComputeLaw"),
    ):
        for irr in (False, True):
            n = 3 if irr else 2
            out.append(
                Form(
                    f"kaplan_{suffix}" + ("_e" if irr else ""),
                    ("alpha_log_x_c", alpha, "e")[:n],
                    (xc, alpha, "E")[:n],
                    np.array([-_BIG, 1e-4, -20.0][:n]),
                    np.array([_BIG, 5.0, 20.0][:n]),
                    (column,),
                    models.grid_single(irr),
                    models.single_model(column, irr),
                    models.single_estimates(xc, alpha, irr),
                    functools.partial(_law_of, law),
                )
            )
    return out


_LO, _HI = _LOSS_BOX

CHINCHILLA = Form(
    "chinchilla",
    ("a", "b", "e", "alpha", "beta"),
    ("E", "A", "B", "alpha", "beta"),
    np.array([*_LO, 0.0, 0.0]),
    np.array([*_HI, 5.0, 5.0]),
    ("params", "tokens"),
    models.hoffmann_grid(),
    models.chinchilla_model,
    models.chinchilla_estimates,
    _chinchilla_law,
    derive=models.chinchilla_derived,
)

KAPLAN_ND = Form(
    "kaplan_nd",
    ("log_N_c", "log_D_c", "alpha_N", "alpha_D"),
    ("N_c", "alpha_N", "D_c", "alpha_D"),
    np.array([-_BIG, -_BIG, 1e-4, 1e-3]),
    np.array([_BIG, _BIG, 5.0, 5.0]),
    ("params", "tokens"),
    models.grid_joint(),
    models.joint_model,
    models.joint_estimates,
    functools.partial(_law_of, "KaplanJointLaw"),
    derive=models.joint_derived,
)

OVERTRAINING = Form(
    "overtraining",
    ("a", "b", "e", "eta"),
    ("E", "A", "B", "eta"),
    np.array([*_LO, 0.0]),
    np.array([*_HI, 5.0]),
    ("params", "tokens"),
    models.grid_overtraining(),
    models.overtraining_model,
    models.overtraining_estimates,
    functools.partial(_law_of, "OvertrainingLaw"),
    derive=models.overtraining_derived,
)

DOWNSTREAM_ERROR = Form(
    "downstream_error",
    ("log_epsilon", "log_k", "gamma"),
    ("epsilon", "k", "gamma"),
    np.array([-20.0, -50.0, 1e-4]),
    np.array([5.0, 50.0, 20.0]),
    ("x",),
    models.grid_downstream(),
    models.downstream_model,
    models.downstream_estimates,
    functools.partial(_law_of, "DownstreamErrorLaw"),
    target="error",
)

DATA_CONSTRAINED = Form(
    "data_constrained",
    ("a", "b", "e", "alpha", "beta", "log_R_D_star", "log_R_N_star"),
    ("E", "A", "B", "alpha", "beta", "R_D_star", "R_N_star"),
    np.array([*_LO, 1e-3, 1e-3, math.log(1e-2), math.log(1e-2)]),
    np.array([*_HI, 5.0, 5.0, math.log(1e4), math.log(1e4)]),
    ("params", "tokens"),
    np.empty((0, 7)),  # starts are made from the data (data_starts)
    constrained.constrained_model,
    constrained.constrained_estimates,
    functools.partial(_law_of, "DataConstrainedLaw"),
    grid_iterations=60,
    read=as_constrained_points,
    check=constrained.check_repeats,
    data_starts=functools.partial(constrained.constrained_starts, base=CHINCHILLA),
    conventions=MappingProxyType(
        {"param_convention": "as given (params column)", "flops_convention": "6ND"}
    ),
    derived_at_reference=False,
)


def _records() -> list[Form]:
    return [
        CHINCHILLA,
        KAPLAN_ND,
        *_kaplan_single(),
        OVERTRAINING,
        DOWNSTREAM_ERROR,
        DATA_CONSTRAINED,
    ]


REGISTRY: Mapping[str, Form] = MappingProxyType({f.name: f for f in _records()})
"""Every fitted law form, by name."""

FORMS: Mapping[str, Form] = MappingProxyType(
    {name: f for name, f in REGISTRY.items() if f.read is None}
)
"""The forms fitted from the usual point columns (all but ``data_constrained``)."""


def check_form(name: str) -> Form:
    """The record of ``name``, else a :class:`FitError` listing the forms."""
    if name not in REGISTRY:
        raise FitError(f"`law` must be one of {', '.join(REGISTRY)}; got {name!r}")
    return REGISTRY[name]
