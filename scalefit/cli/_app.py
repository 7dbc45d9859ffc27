"""The typer application: the top-level options, and every command registered in one order."""

from __future__ import annotations

import functools

import typer

app = typer.Typer(
    name="scalefit",
    help=(
        "Curate published LLM training runs, ingest your own logs, refit scaling laws, "
        "and see where every model sits against compute-optimal training."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(f"scalefit {__version__}")
        raise typer.Exit()


@app.callback()
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
def build() -> typer.Typer:
    """:data:`app` with every command registered (once; the order is the help's order)."""
    from . import core, fit, ingest, plan, studies

    for module in (core, fit, ingest, plan, studies):
        module.register(app)
    return app
