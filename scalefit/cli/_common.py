"""What every command shares: options, output and error handling.

No traceback reaches a user. A ``ScalefitError`` is the user's to fix: one line on stderr and
exit status 1. Anything else is a bug in scalefit: one line saying so, exit status 1, and the
traceback only when ``SCALEFIT_DEBUG=1``. A command asked for JSON (``--json``, ``-f json``)
also prints the error as one JSON object, ``{"error": "..."}``, on stdout, so that its output
is valid JSON whatever happened.
"""

from __future__ import annotations

import functools
import json
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from ..errors import ScalefitError

if TYPE_CHECKING:
    import polars as pl

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])

DbOption = Annotated[
    Path,
    typer.Option("--db", help="DuckDB file.", envvar="SCALEFIT_DB", show_default=True),
]
DEFAULT_DB_PATH = Path("scalefit.duckdb")


def prepare_prefect_environment() -> None:
    """Defaults that keep Prefect's ephemeral mode local and quiet.

    scalefit promises nothing leaves 127.0.0.1, so Prefect's telemetry is off unless the user
    turned it on; a cold start of the ephemeral server takes 10-15 s on a small machine, so the
    startup wait is generous. Each is only a default: an explicit setting wins.
    """
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


def print_error(message: str) -> None:
    """``error: message`` on stderr; the message is shown as written (never as markup)."""
    err_console.print(Text.assemble(("error:", "bold red"), " ", message), soft_wrap=True)


def print_warning(message: str) -> None:
    """``warning: message`` on stderr; the message is shown as written (never as markup)."""
    err_console.print(Text.assemble(("warning:", "yellow"), " ", message), soft_wrap=True)


def _wants_json(kwargs: dict[str, Any]) -> bool:
    """Whether the command was asked for JSON output (``--json`` or ``--format json``)."""
    fmt = kwargs.get("format")
    return kwargs.get("as_json") is True or getattr(fmt, "value", fmt) == "json"


def json_line(obj: Any) -> str:
    """``obj`` as one line of strict JSON: a float that is not finite (NaN, infinity) becomes
    ``null``, since JSON has no such numbers; other non-JSON values become text."""

    def clean(o: Any) -> Any:
        if isinstance(o, float) and not math.isfinite(o):
            return None
        if isinstance(o, dict):
            return {k: clean(v) for k, v in o.items()}
        if isinstance(o, list | tuple):
            return [clean(v) for v in o]
        return o

    return json.dumps(clean(obj), default=str, allow_nan=False)


def handle_errors(fn: F) -> F:
    """Turn any exception into one clear line on stderr and exit status 1 (see the module
    docstring); a command asked for JSON also prints ``{"error": "..."}`` on stdout."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise
        except ScalefitError as exc:
            message = str(exc)
        except Exception as exc:  # a bug: still no traceback unless asked for
            if os.environ.get("SCALEFIT_DEBUG") == "1":
                raise
            message = (
                f"internal error ({type(exc).__name__}: {exc}); this is a bug in scalefit, "
                "please report it (SCALEFIT_DEBUG=1 shows the traceback)"
            )
        print_error(message)
        if _wants_json(kwargs):
            sys.stdout.write(json_line({"error": message}) + "\n")
        raise typer.Exit(1)

    return wrapper  # type: ignore[return-value]


def human_count(value: float | None) -> str:
    """A count in short form: 1.75e11 -> "175B", 1.4e12 -> "1.4T", 4.4e7 -> "44M"."""
    if value is None:
        return ""
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= scale:
            return f"{value / scale:.4g}{suffix}"
    return f"{value:.4g}"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def print_frame(frame: pl.DataFrame, fmt: str = "table", *, title: str | None = None) -> None:
    """Print ``frame`` as a rich table, CSV, or JSON (one array of row objects)."""
    from rich.table import Table

    if fmt == "csv":
        sys.stdout.write(frame.write_csv())
    elif fmt == "json":
        sys.stdout.write(json.dumps(frame.to_dicts(), default=str) + "\n")
    else:
        table = Table(title=title, show_lines=False)
        for name in frame.columns:
            numeric = frame.schema[name].is_numeric()
            table.add_column(name, justify="right" if numeric else "left")
        for row in frame.iter_rows():
            table.add_row(*(_cell(v) for v in row))
        console.print(table)
