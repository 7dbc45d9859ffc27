"""Laws by the names of the CLI and ``scalefit.toml``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Unpack

from .._names import LAW_NAMES  # defined there so that the CLI lists them without numpy
from ..errors import FitError
from .forms import FORMS, check_form
from .parametric import fit_form
from .points import PointsLike
from .result import LawFit
from .settings import FitOptions, FitSettings

if TYPE_CHECKING:
    from .bootstrap import BootstrapMap

__all__ = ["fit_named", "named_form"]


def fit_named(
    data: PointsLike,
    law: str,
    *,
    irreducible: bool = False,
    settings: FitSettings | None = None,
    bootstrap_map: BootstrapMap = map,
    **options: Unpack[FitOptions],
) -> LawFit:
    """Fit the law called ``law`` (a key of :data:`LAW_NAMES`) with the procedure it needs:
    :func:`~scalefit.fit.fit_isoflop` (approach 2), :func:`~scalefit.fit.fit_envelope`
    (approach 1), else the registry's form (:func:`~scalefit.fit.fit_law`; the
    data-constrained form needs ``unique_tokens``).

    ``irreducible`` adds a term ``E`` to the single-variable Kaplan forms. ``settings`` and
    ``options`` go to the procedure whole: an IsoFLOP or envelope fit refuses a Huber
    ``delta`` or a ``resample`` unit it does not use (it never drops them silently).
    ``bootstrap_jobs`` and ``bootstrap_map`` spread the bootstrap refits of the nonlinear
    forms; the IsoFLOP and envelope bootstraps are cheap and run here.

    Raises
    ------
    FitError
        Unknown ``law`` (the message lists the allowed names), or the fit's own errors.
    """
    form = named_form(law, irreducible=irreducible)
    s = FitSettings.of(settings, **options)
    if form == "isoflop":
        from .allocation import fit_isoflop  # approaches 1 and 2: not for the other forms

        return fit_isoflop(data, settings=s)
    if form == "envelope":
        from .allocation import fit_envelope

        return fit_envelope(data, settings=s)
    return fit_form(data, check_form(form), s, bootstrap_map=bootstrap_map)


def named_form(law: str, *, irreducible: bool = False) -> str:
    """The form :func:`fit_named` fits for the law called ``law``: a key of
    :data:`~scalefit.fit.forms.REGISTRY` (``irreducible`` adds ``_e`` where the form has an
    ``E`` variant), or the procedure ``isoflop`` or ``envelope``.

    Raises
    ------
    FitError
        Unknown ``law`` (the message lists the allowed names).
    """
    if law not in LAW_NAMES:
        raise FitError(f"unknown law `{law}`; allowed: {', '.join(LAW_NAMES)}")
    form = LAW_NAMES[law]
    return f"{form}_e" if irreducible and f"{form}_e" in FORMS else form
