"""The typer application: the top-level options, and every command registered in one order.

:func:`build` registers every command (the help lists them in that order); running one
command needs only the module that defines it (:data:`COMMANDS`), so :func:`scalefit.cli.main`
builds the application with that module alone: the other modules, the libraries they
import at their top (rich's console, the options of a dozen commands) and typer's work of
turning each of their functions into a click command are skipped. What that command does,
prints and reports on a bad option is the same either way (tests/test_cli_startup.py).
"""

from __future__ import annotations

import functools
import importlib

import typer

MODULES = ("core", "fit", "ingest", "plan", "studies")
"""The modules of :mod:`scalefit.cli` that register commands, in the help's order."""

COMMANDS = {
    "refresh": "core",
    "report": "core",
    "serve": "core",
    "sql": "core",
    "models": "core",
    "fit": "fit",
    "ingest": "ingest",
    "plan": "plan",
    "studies": "studies",
    "reproduce": "studies",
}
"""Each top-level command (or group) and the module that registers it."""

_HELP = (
    "Curate published LLM training runs, ingest your own logs, refit scaling laws, "
    "and see where every model sits against compute-optimal training."
)


def _print_version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(f"scalefit {__version__}")
        raise typer.Exit()


def _options(
    version: bool = typer.Option(
        False,
        "--version",
        help="Print the version and exit.",
        callback=_print_version,
        is_eager=True,
    ),
) -> None:
    """Curate published LLM training runs, ingest your own logs, refit scaling laws, and see
    where every model sits against compute-optimal training."""


@functools.cache
def build(command: str | None = None) -> typer.Typer:
    """The application with every command registered (once; the order is the help's order),
    or with only the module that registers ``command`` (a key of :data:`COMMANDS`)."""
    app = typer.Typer(
        name="scalefit",
        help=_HELP,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    app.callback()(_options)
    for name in MODULES if command is None else (COMMANDS[command],):
        importlib.import_module(f"{__package__}.{name}").register(app)
    return app
