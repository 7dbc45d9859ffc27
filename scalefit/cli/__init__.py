"""The ``scalefit`` command: the library's steps for a person at a terminal.

Each command lives in its own module and registers itself on :data:`app`.
"""

from __future__ import annotations

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


# Command modules register themselves on `app` when imported.
from . import core  # noqa: E402,F401
from . import fit as fit  # noqa: E402
from . import ingest as ingest  # noqa: E402
from . import plan as plan  # noqa: E402
from . import studies as studies  # noqa: E402


def main() -> None:
    """Entry point of the ``scalefit`` console script."""
    app()


__all__ = ["app", "main"]
