"""The ``scalefit`` command: the library's steps for a person at a terminal.

Each command lives in a module of this package (its options in :mod:`.options`, defined once)
and :mod:`._app` registers them on :data:`app` in one order. Importing this package costs
nothing: ``scalefit --version`` answers without typer, ``--help`` without the rich modules
that only markdown help and pretty tracebacks use (see :mod:`._rich_help`), a command
builds the application with its own module only, and imports the libraries it uses when it
runs.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import typer

    app: typer.Typer


def main() -> None:
    """Entry point of the ``scalefit`` console script."""
    args = sys.argv[1:]
    if args == ["--version"]:
        from .. import __version__

        sys.stdout.write(f"scalefit {__version__}\n")
        return
    if not args or "--help" in args:
        from ._rich_help import import_rich_help

        import_rich_help()
    from ._app import COMMANDS, build

    # A command needs only the module that registers it (see ._app); anything else (no
    # command, an option first, an unknown name) gets the whole application.
    build(args[0] if args and args[0] in COMMANDS else None)()


def __getattr__(name: str) -> object:
    # `from scalefit.cli import app`: the typer application with every command registered.
    if name == "app":
        from ._app import build

        return build()
    raise AttributeError(f"module 'scalefit.cli' has no attribute {name!r}")


__all__ = ["app", "main"]
