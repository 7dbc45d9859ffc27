"""Names a package serves on first use (PEP 562), shared by the packages that do so
(:mod:`scalefit.fit`, :mod:`scalefit.laws`): a command imports the modules it uses only."""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Any


def serve(namespace: dict[str, Any], module: str, name: str) -> Any:
    """``name`` from the package's submodule ``module``, imported now and kept in the
    package's ``namespace`` (its ``globals()``), so that it is looked up once."""
    value = getattr(importlib.import_module(f"{namespace['__name__']}.{module}"), name)
    namespace[name] = value
    return value


def names(namespace: dict[str, Any], public: Iterable[str]) -> list[str]:
    """The package's ``dir()``: what it holds and what it serves."""
    return sorted({*namespace, *public})
