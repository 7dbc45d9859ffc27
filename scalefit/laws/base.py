"""What every law offers (the :class:`Law` protocol) and the registry of law forms.

A law form is one record (:class:`LawForm`) in one registry (:data:`REGISTRY`): its class, the
names of its parameters (as stored in the ``laws`` table's ``parameters`` JSON object), which
of them are required, whether it predicts a loss and whether it can size a compute budget.
A law class joins the registry with the :func:`register` decorator; the form must be one of
the vocabulary's :data:`~scalefit.schemas.vocabulary.LAW_FORMS` (``tests/test_registry.py``
checks that both agree).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, dataclass, fields, is_dataclass
from typing import Literal, Protocol, TypeVar, runtime_checkable

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..errors import AllocationUnavailableError, UnknownLawError

FloatArray = NDArray[np.float64]


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


@runtime_checkable
class Law(Protocol):
    """What every law offers: its form, its parameters by name (the inverse of
    :func:`law_from_parameters`) and a compute-optimal allocation, or a clear
    :class:`~scalefit.errors.AllocationUnavailableError` when it cannot size a budget."""

    @property
    def form(self) -> str:
        """The law form (``laws.form``), one of the vocabulary's ``LAW_FORMS``."""
        ...

    def parameters(self) -> dict[str, float]:
        """The law's parameters by name, as stored in the ``laws`` table."""
        ...

    def allocation(self, flops: ArrayLike) -> Allocation:
        """Compute-optimal parameters and tokens for ``flops`` training FLOPs.

        Raises
        ------
        AllocationUnavailableError
            The law cannot split a compute budget (see :attr:`LawForm.allocates`).
        """
        ...


@runtime_checkable
class LossLaw(Law, Protocol):
    """A law that predicts the loss (nats) of ``params`` parameters trained on ``tokens``."""

    def loss(self, params: ArrayLike, tokens: ArrayLike) -> FloatArray:
        """Predicted loss (nats)."""
        ...


@runtime_checkable
class FittedLaw(Protocol):
    """What a fit's result offers beside its law (:class:`scalefit.fit.LawFit`): the law, and
    one law per bootstrap resample, for code that takes either a law or a fit."""

    @property
    def law(self) -> Law:
        """The fitted law."""
        ...

    @property
    def n_bootstrap(self) -> int:
        """Bootstrap resamples drawn (0: none)."""
        ...

    def sample_laws(self) -> list[Law]:
        """One law per bootstrap resample."""
        ...


def no_allocation(law: Law, why: str) -> AllocationUnavailableError:
    """The error a law raises when it cannot size a compute budget, saying ``why``."""
    return AllocationUnavailableError(
        f"this `{law.form}` law cannot size a compute budget: {why}. Allocating compute needs "
        "a loss law in N and D (`chinchilla`, `kaplan_nd`), a `tokens_per_param` rule, or an "
        "`allocation` law that states a coefficient (e.g. `llama3_2024`)"
    )


Allocates = Literal["always", "never", "with_coefficients"]
"""Whether a form sizes a compute budget: ``always``; ``never`` (its ``allocation`` raises
:class:`~scalefit.errors.AllocationUnavailableError`); ``with_coefficients``, when the law
states a coefficient beside an exponent (published allocation laws)."""


@dataclass(frozen=True, slots=True)
class LawForm:
    """One law form of the registry: how a law of this form is built, stored and used."""

    form: str
    """The ``laws.form`` value."""
    cls: type
    """The frozen law class (a :class:`Law`)."""
    parameters: tuple[str, ...]
    """Parameter names, the keys of the ``laws.parameters`` JSON object, in field order."""
    required: tuple[str, ...]
    """Parameters without a default: a stored law must state them."""
    allocates: Allocates
    """Whether its laws size a compute budget (see :data:`Allocates`)."""
    has_loss: bool
    """Whether its laws predict a loss from parameters and tokens (a :class:`LossLaw`)."""
    interval_suffixes: tuple[str, ...] = ()
    """Suffixes of extra stored names kept as published interval bounds (``alpha_low``...)."""

    def build(self, parameters: dict[str, float | None]) -> Law:
        """The law with ``parameters`` (``None`` values dropped): see :func:`law_from_parameters`.

        Raises
        ------
        UnknownLawError
            A required parameter is missing, or a name is not one of :attr:`parameters`.
        """
        params: dict[str, object] = {k: float(v) for k, v in parameters.items() if v is not None}
        names = set(self.parameters)
        if self.interval_suffixes:
            extra = {k: params.pop(k) for k in list(params) if k.endswith(self.interval_suffixes)}
            if extra:
                params["extra"] = tuple(sorted(extra.items()))
            names.add("extra")
        unknown = set(params) - names
        if unknown:
            raise UnknownLawError(
                f"unknown parameter(s) {', '.join(f'`{u}`' for u in sorted(unknown))} for law "
                f"form `{self.form}`; allowed: {', '.join(sorted(self.parameters))}"
            )
        missing = [name for name in self.required if name not in params]
        if missing:
            raise UnknownLawError(
                f"law form `{self.form}` needs parameter(s) {', '.join(f'`{m}`' for m in missing)}"
            )
        law: Law = self.cls(**params)
        return law


REGISTRY: dict[str, LawForm] = {}
"""Law form -> its record, filled by :func:`register` as the law modules are imported (they
load on first use: ``scalefit.laws.REGISTRY`` and ``scalefit.laws.law_from_parameters``
import them all first)."""

_L = TypeVar("_L", bound=type)


def register(
    *, allocates: Allocates, interval_suffixes: tuple[str, ...] = ()
) -> Callable[[_L], _L]:
    """Class decorator: record a frozen dataclass law under its ``form`` in :data:`REGISTRY`.

    Its parameters are its dataclass fields (``extra``, the interval bounds, aside); the
    required ones are those without a default.
    """

    def add(cls: _L) -> _L:
        if not is_dataclass(cls):
            raise TypeError(f"{cls.__name__} must be a dataclass to be registered as a law")
        form = getattr(cls, "form", None)  # a class attribute, not a dataclass field
        if not isinstance(form, str):
            raise TypeError(f"{cls.__name__} must name its law form in a `form` class attribute")
        if form in REGISTRY:
            raise ValueError(f"law form `{form}` is registered twice")
        own = [f for f in fields(cls) if f.name != "extra"]
        REGISTRY[form] = LawForm(
            form=form,
            cls=cls,
            parameters=tuple(f.name for f in own),
            required=tuple(
                f.name for f in own if f.default is MISSING and f.default_factory is MISSING
            ),
            allocates=allocates,
            has_loss=callable(getattr(cls, "loss", None)),
            interval_suffixes=interval_suffixes,
        )
        return cls

    return add


def law_from_parameters(form: str, parameters: dict[str, float]) -> Law:
    """The law value of ``form`` with ``parameters``: the inverse of ``law.parameters()``.

    Parameters
    ----------
    form
        One of :data:`~scalefit.laws.LAW_FORMS` (the ``laws.form`` column).
    parameters
        Parameter values by name (the ``laws.parameters`` JSON object). For ``allocation``
        laws, names ending in ``_low``/``_high`` are kept as published interval bounds.

    Raises
    ------
    UnknownLawError
        Unknown form, a missing required parameter, or an unknown parameter name.

    Examples
    --------
    >>> from scalefit.laws import law_from_parameters  # every law form registered
    >>> law = law_from_parameters("chinchilla", {"E": 1.69, "A": 406.4, "B": 410.7,
    ...                                          "alpha": 0.34, "beta": 0.28})
    >>> law_from_parameters(law.form, law.parameters()) == law
    True
    """
    try:
        record = REGISTRY[form]
    except KeyError:
        raise UnknownLawError(
            f"unknown law form `{form}`; allowed: {', '.join(sorted(REGISTRY))}"
        ) from None
    return record.build(dict(parameters))
