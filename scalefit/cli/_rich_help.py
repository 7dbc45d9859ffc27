"""Typer's rich help without the two rich modules it imports and scalefit never uses.

``typer.rich_utils`` (which renders ``--help``) imports ``rich.markdown`` (markdown-it-py)
and ``rich.traceback`` (pygments, attrs) at its top: half of what ``scalefit --help`` took
(~110 of ~220 ms, ``python -X importtime``). They serve markdown help
(``rich_markup_mode="markdown"``) and pretty tracebacks, and scalefit uses neither (rich markup;
``pretty_exceptions_enable=False``: no traceback reaches a user). :func:`import_rich_help`
imports ``typer.rich_utils`` with stand-ins for the two names it takes from those modules;
a stand-in imports the real class when it is used, so nothing changes but the time.

The stand-in modules are in ``sys.modules`` only while ``typer.rich_utils`` is imported: any
later ``import rich.markdown`` gets the real module (tested in tests/test_cli_startup.py,
which also checks that the help is byte for byte what typer prints without this).
"""

from __future__ import annotations

import sys
import types
from typing import Any


class Markdown:
    """Stands for ``rich.markdown.Markdown`` in ``typer.rich_utils``: builds the real one."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        from rich.markdown import Markdown as real

        return real(*args, **kwargs)


class Traceback:
    """Stands for ``rich.traceback.Traceback`` in ``typer.rich_utils``: builds the real one."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        from rich.traceback import Traceback as real

        return real(*args, **kwargs)

    @classmethod
    def from_exception(cls, *args: Any, **kwargs: Any) -> Any:
        from rich.traceback import Traceback as real

        return real.from_exception(*args, **kwargs)


_STAND_INS = {"rich.markdown": Markdown, "rich.traceback": Traceback}


def import_rich_help() -> None:
    """Import ``typer.rich_utils`` with the stand-ins (nothing when it is already imported,
    or when a real module it would skip is: then there is nothing to save)."""
    if "typer.rich_utils" in sys.modules or any(name in sys.modules for name in _STAND_INS):
        return
    for name, cls in _STAND_INS.items():
        module = types.ModuleType(name, "scalefit's stand-in while typer.rich_utils loads")
        setattr(module, cls.__name__, cls)
        sys.modules[name] = module
    try:
        import typer.rich_utils  # noqa: F401
    finally:
        for name in _STAND_INS:
            del sys.modules[name]
