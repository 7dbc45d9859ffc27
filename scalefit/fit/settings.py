"""The settings of a fit: one frozen :class:`FitSettings`, validated once, with one set of
defaults for every procedure.

Every public fit function takes ``settings=`` (a :class:`FitSettings`) and/or the same names as
keyword arguments (:class:`FitOptions`), which replace the fields of ``settings`` (default
``FitSettings()``). A bad value is a :class:`~scalefit.errors.FitError` (a ``ValueError``)
naming the setting, raised before any work is done.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias, TypedDict, TypeGuard, Unpack

import numpy as np

from ..errors import FitError

__all__ = [
    "GRID_ITERATIONS",
    "REFERENCE_FLOPS",
    "RESAMPLE",
    "FitOptions",
    "FitSettings",
]

RESAMPLE = ("points", "runs", "params")
"""Allowed ``resample`` settings of the bootstrap."""

REFERENCE_FLOPS = 5.76e23
"""Compute at which derived tokens-per-parameter are reported: Chinchilla's budget (Hoffmann
et al. 2022, Section 4)."""

GRID_ITERATIONS = 3
"""Newton iterations every start of the grid gets before the promising ones are selected.
``benchmarks/fit_robustness.py`` (120 fits on hard data) finds the same certified optimum with
3 as with 40; with 2 it certified a wrong basin (see ``benchmarks/RESULTS.md``). A form may
set its own (:attr:`scalefit.fit.forms.Form.grid_iterations`)."""

if TYPE_CHECKING:
    Seed: TypeAlias = int | np.random.Generator | None


def __getattr__(name: str) -> Any:
    # `Seed`, the type of the `seed` setting, made on first use: it names
    # numpy.random.Generator, and numpy.random (~10 ms) is imported only by a bootstrap.
    # The public classes spell it out, so that `typing.get_type_hints` resolves their
    # annotations from the module's globals (it does not call this function).
    if name == "Seed":
        return int | np.random.Generator | None
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _is_generator(seed: object) -> TypeGuard[np.random.Generator]:
    """Whether ``seed`` is a :class:`numpy.random.Generator`, without importing
    numpy.random (~10 ms) when nothing has: no generator exists before it is imported."""
    random = sys.modules.get("numpy.random")
    return random is not None and isinstance(seed, random.Generator)


def _check_delta(delta: object) -> float:
    if not (isinstance(delta, int | float) and math.isfinite(delta) and delta > 0):
        raise FitError(f"`delta` must be a positive finite number (e.g. 1e-3), got {delta!r}")
    return float(delta)


def _check_count(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise FitError(f"`{name}` must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_resample(resample: object) -> str:
    if resample not in RESAMPLE:
        raise FitError(f"`resample` must be one of {', '.join(RESAMPLE)}; got {resample!r}")
    return str(resample)


def check_confidence_level(level: object) -> float:
    """``level`` as a float in (0, 1), else a :class:`FitError`."""
    if not (isinstance(level, int | float) and 0 < level < 1):
        raise FitError(f"`confidence_level` must be in (0, 1), e.g. 0.95; got {level!r}")
    return float(level)


def _check_seed(seed: Seed) -> Seed:
    if seed is None or _is_generator(seed):
        return seed
    if isinstance(seed, int | np.integer) and not isinstance(seed, bool) and seed >= 0:
        return seed  # as given: it is recorded in the settings (and so in the fit id)
    raise FitError(f"`seed` must be an int >= 0, a numpy Generator or None; got {seed!r}")


def _check_positive(name: str, value: float) -> float:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise FitError(f"`{name}` must be a positive finite number, got {value!r}")
    return value  # as given: it is recorded in the settings (and so in the fit id)


class FitOptions(TypedDict, total=False):
    """The fields of :class:`FitSettings`, as keyword arguments of the fit functions."""

    delta: float
    n_bootstrap: int
    seed: int | np.random.Generator | None  # spelled out (not `Seed`): see __getattr__
    resample: str
    confidence_level: float
    bootstrap_jobs: int
    max_grid_iter: int | None
    reference_flops: float
    budget_rtol: float
    n_grid: int


@dataclass(frozen=True)
class FitSettings:
    """How a fit is made; every field is checked (and normalised) once, on construction.

    Attributes
    ----------
    delta
        Huber threshold on log residuals (Hoffmann et al. 2022); nonlinear forms only.
    n_bootstrap
        Bootstrap resamples (0: no intervals).
    seed
        Seed (or numpy generator) of the bootstrap.
    resample
        What the bootstrap resamples: ``points``, ``runs`` (``run_id``) or ``params`` (whole
        model sizes); see :mod:`scalefit.fit`.
    confidence_level
        Level of the percentile intervals.
    bootstrap_jobs
        Jobs the bootstrap refits are split into (the result does not depend on it).
    max_grid_iter
        Newton iterations every start gets before the promising ones are selected; None: the
        form's own (:data:`GRID_ITERATIONS` for most).
    reference_flops
        Compute at which derived tokens-per-parameter are reported.
    budget_rtol
        Relative FLOP difference within which points share a compute budget (IsoFLOP fits,
        extrapolation scores).
    n_grid
        FLOP counts of an envelope fit's grid.
    """

    delta: float = 1e-3
    n_bootstrap: int = 0
    seed: int | np.random.Generator | None = 0  # spelled out: see __getattr__
    resample: str = "points"
    confidence_level: float = 0.95
    bootstrap_jobs: int = 1
    max_grid_iter: int | None = None
    reference_flops: float = REFERENCE_FLOPS
    budget_rtol: float = 0.05
    n_grid: int = 250

    def __post_init__(self) -> None:
        checked = {
            "delta": _check_delta(self.delta),
            "n_bootstrap": _check_count("n_bootstrap", self.n_bootstrap, 0),
            "seed": _check_seed(self.seed),
            "resample": _check_resample(self.resample),
            "confidence_level": check_confidence_level(self.confidence_level),
            "bootstrap_jobs": _check_count("bootstrap_jobs", self.bootstrap_jobs, 1),
            "max_grid_iter": (
                None
                if self.max_grid_iter is None
                else _check_count("max_grid_iter", self.max_grid_iter, 1)
            ),
            "reference_flops": _check_positive("reference_flops", self.reference_flops),
            "budget_rtol": _check_positive("budget_rtol", self.budget_rtol),
            "n_grid": _check_count("n_grid", self.n_grid, 2),
        }
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    @classmethod
    def of(cls, settings: FitSettings | None = None, **options: Unpack[FitOptions]) -> FitSettings:
        """``settings`` (default ``FitSettings()``) with the fields named in ``options``
        replaced; an unknown name is a :class:`FitError` listing the known ones."""
        base = cls() if settings is None else settings
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise FitError(
                f"unknown fit setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        return dataclasses.replace(base, **options) if options else base

    def rng(self) -> np.random.Generator:
        """The bootstrap's generator: ``seed`` itself when it is one."""
        if _is_generator(self.seed):
            return self.seed
        return np.random.default_rng(self.seed)

    @property
    def seed_setting(self) -> int | None:
        """The seed as recorded in a fit's settings (None for a generator)."""
        return None if _is_generator(self.seed) else self.seed  # type: ignore[return-value]

    def is_default(self, name: str) -> bool:
        """Whether field ``name`` has its default value."""
        return bool(getattr(self, name) == getattr(_DEFAULT, name))


_DEFAULT = FitSettings()
