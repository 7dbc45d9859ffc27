"""The checks of :class:`scalefit.config.Settings`' fields: each takes a value as a layer
gave it and returns it as stored (a ``where`` predicate normalised) or raises :class:`Bad`
(saying why, or nothing: the setting's allowed values then say it). Strict: a type is never
converted (a file's ``jobs = "4"`` or ``jobs = true`` is refused; environment strings are
parsed before they get here, in :mod:`scalefit.config`). Plain functions rather than a
pydantic model: see :mod:`scalefit.config`."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from .errors import ConfigError

T = TypeVar("T")


def law_names() -> tuple[str, ...]:
    """The names `scalefit fit --law` takes (the vocabulary's, read when first needed)."""
    from .schemas.vocabulary import LAW_NAMES

    return tuple(LAW_NAMES)


def point_modes() -> tuple[str, ...]:
    """The observations of a run a fit may take (the vocabulary's ``POINT_MODES``)."""
    from .schemas.vocabulary import POINT_MODES

    return POINT_MODES


class Bad(Exception):
    """A value a field refuses; ``detail`` says why (None: only what is allowed is said)."""

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail


def instance_of(kind: type[T]) -> Callable[[Any], T]:
    """The check of a value of type ``kind``, exactly as given (no conversion: a file's
    value of the wrong type is refused, not coerced)."""

    def check(value: Any) -> T:
        if not isinstance(value, kind):
            raise Bad
        return value

    return check


path = instance_of(Path)
"""A path (a layer gives a string as a :class:`~pathlib.Path`: a string here is a file's
value of the wrong type)."""
string = instance_of(str)
"""A string."""
boolean = instance_of(bool)
"""True or false (never 0 or 1)."""


def non_empty_path(value: Any) -> Path:
    """A path that names something (not ``""`` or ``"."``)."""
    if str(path(value)) in ("", "."):
        raise Bad("must not be empty")
    return value


def optional_path(value: Any) -> Path | None:
    """A path, or None for none (a file's ``""``)."""
    return None if value is None else path(value)


def paths(value: Any) -> tuple[Path, ...]:
    """A tuple of paths (a file's list, an environment variable split on ``os.pathsep``)."""
    if not isinstance(value, tuple) or not all(isinstance(v, Path) for v in value):
        raise Bad
    return value


def non_empty_str(value: Any) -> str:
    """A non-empty string."""
    if not string(value):
        raise Bad
    return value


def whole(low: int, high: int) -> Callable[[Any], int]:
    """The check of a whole number from ``low`` to ``high`` (never a bool or a float)."""

    def check(value: Any) -> int:
        # a bool is an int to Python, not a number to a user
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise Bad
        return value

    return check


def one_of(*allowed: str) -> Callable[[Any], str]:
    """The check of one of the ``allowed`` strings."""

    def check(value: Any) -> str:
        if not isinstance(value, str) or value not in allowed:
            raise Bad
        return value

    return check


def storage_version(value: Any) -> str:
    """A DuckDB version ``vX.Y.Z``, or ``latest``."""
    if string(value) != "latest" and not re.fullmatch(r"v\d+\.\d+\.\d+", value):
        raise Bad("not a DuckDB version")
    return value


def laws(value: Any) -> tuple[str, ...]:
    """A non-empty tuple of law names, each one `scalefit fit --law` takes."""
    if not isinstance(value, tuple) or not value or not all(isinstance(v, str) for v in value):
        raise Bad
    names = law_names()
    bad = [law for law in value if law not in names]
    if bad:
        raise Bad(f"unknown law {', '.join(map(repr, bad))}")
    return value


def point_mode(value: Any) -> str:
    """One of :func:`point_modes`."""
    if string(value) not in point_modes():
        raise Bad("unknown point mode")
    return value


def where(value: Any) -> str:
    """A predicate on ``runs``, checked and normalised by
    :func:`~scalefit.user_sql.check_predicate` (which imports DuckDB: only when there is one),
    or blank for all runs."""
    if not string(value).strip():
        return value
    from .errors import QueryError
    from .user_sql import check_predicate  # imported only when there is a predicate

    try:
        return check_predicate(value)
    except QueryError as exc:
        raise Bad(str(exc)) from None


def timezone(value: Any) -> str:
    """An IANA time zone the system knows."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(string(value))
    except (ZoneInfoNotFoundError, ValueError):
        raise Bad("unknown time zone") from None
    return value


def cron(value: Any) -> str:
    """A cron schedule of 5 fields (6 with seconds), as :func:`~scalefit.schedule.check_cron`
    takes it; the detail is its message without the value, which the error line shows."""
    from .schedule import check_cron

    try:
        check_cron(string(value))
    except ConfigError as exc:
        detail = str(exc).replace(f"cron `{value}` ", "").removeprefix("is not valid: ")
        raise Bad(detail) from None
    return value
