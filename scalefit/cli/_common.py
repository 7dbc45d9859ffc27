"""What every command shares: settings, output and error handling (options: :mod:`.options`).

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
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import typer

from ..errors import ScalefitError

if TYPE_CHECKING:
    import polars as pl
    from rich.console import Console
    from rich.text import Text

    from ..config import Settings

    console: Console
    err_console: Console


_CONSOLES: dict[bool, Console] = {}


def _console(*, stderr: bool = False) -> Console:
    """The rich console of stdout (or stderr), made on first use, so that a command that
    prints no rich output (``scalefit fit --json``) does not import rich's console (~30 ms)."""
    if stderr not in _CONSOLES:
        from rich.console import Console

        _CONSOLES[stderr] = Console(stderr=stderr)
    return _CONSOLES[stderr]


def __getattr__(name: str) -> Any:
    # `console` and `err_console`: the consoles of stdout and stderr (`_console`).
    if name in ("console", "err_console"):
        return _console(stderr=name == "err_console")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_DB_PATH = Path("scalefit.duckdb")


def read_settings(config: Path | None, **options: tuple[str, Any]) -> Settings:
    """The settings a command runs with: its options (``field=("--flag", value)``, None when
    not given) > ``SCALEFIT_*`` variables > the config file > the defaults.

    Bad values anywhere are one :class:`~scalefit.errors.ConfigError`: one line each, exit
    status 1.
    """
    from ..config import load_settings

    return load_settings(config, options=options)


def print_error(message: str) -> None:
    """``error: message`` on stderr, one such line per line of the message (several bad
    settings are said together); the message is shown as written (never as markup)."""
    from rich.text import Text

    console = _console(stderr=True)
    for line in message.splitlines() or [""]:
        console.print(Text.assemble(("error:", "bold red"), " ", line), soft_wrap=True)


def print_warning(message: str) -> None:
    """``warning: message`` on stderr; the message is shown as written (never as markup)."""
    from rich.text import Text

    _console(stderr=True).print(Text.assemble(("warning:", "yellow"), " ", message), soft_wrap=True)


def _wants_json(kwargs: dict[str, Any]) -> bool:
    """Whether the command was asked for JSON output (``--json`` or ``--format json``)."""
    fmt = kwargs.get("format")
    return kwargs.get("as_json") is True or getattr(fmt, "value", fmt) == "json"


def json_line(obj: Any) -> str:
    """``obj`` as one line of strict JSON: a float that is not finite (NaN, infinity) becomes
    ``null``, since JSON has no such numbers; other non-JSON values become text."""

    from .._json import finite

    return json.dumps(finite(obj), default=str, allow_nan=False)


def handle_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn any exception into one clear line on stderr and exit status 1 (see the module
    docstring); a command asked for JSON also prints ``{"error": "..."}`` on stdout."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
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

    return wrapper


def human_count(value: float | None) -> str:
    """A count in short form: 1.75e11 -> "175B", 1.4e12 -> "1.4T", 4.4e7 -> "44M"."""
    if value is None:
        return ""
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= scale:
            return f"{value / scale:.4g}{suffix}"
    return f"{value:.4g}"


def _cell(value: Any) -> Text:
    from rich.text import Text

    if value is None:
        return Text("")
    if isinstance(value, float):
        return Text(f"{value:.4g}")
    return Text(str(value))  # as written: a value is never read as rich markup


def _strict(value: Any) -> Any:
    """``value`` with what JSON cannot hold made JSON: NaN and infinities become null,
    decimals numbers."""
    import decimal

    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            return None
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {str(k): _strict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict(v) for v in value]
    return value


def strict_json(value: Any) -> str:
    """``value`` as strict JSON (RFC 8259: no NaN or Infinity; anything else as text)."""
    return json.dumps(_strict(value), allow_nan=False, default=str)


def print_frame(
    frame: pl.DataFrame,
    fmt: str = "table",
    *,
    title: str | None = None,
    json_columns: tuple[str, ...] = (),
    integer_columns: tuple[str, ...] = (),
) -> None:
    """Print ``frame`` as a rich table, CSV, or strict JSON (one array of row objects).

    ``json_columns`` hold JSON text (nested values) and ``integer_columns`` integers as
    text: JSON output prints them as JSON values and numbers.
    """
    if fmt == "csv":
        sys.stdout.write(frame.write_csv())
    elif fmt == "json":
        rows = frame.to_dicts()
        for row in rows:
            for name in json_columns:
                if row[name] is not None:
                    row[name] = json.loads(row[name])
            for name in integer_columns:
                if row[name] is not None:
                    row[name] = int(row[name])
        sys.stdout.write(strict_json(rows) + "\n")
    else:
        numeric = tuple(name for name in frame.columns if frame.schema[name].is_numeric())
        print_rows(frame.columns, frame.iter_rows(), numeric=numeric, title=title)


def print_rows(
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    numeric: tuple[str, ...] = (),
    title: str | None = None,
) -> None:
    """Print rows as a rich table (what :func:`print_frame` prints for a table, without
    polars): ``numeric`` columns are right-aligned, floats shown to 4 significant digits."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, show_lines=False)
    for name in columns:
        table.add_column(Text(name), justify="right" if name in numeric else "left")
    for row in rows:
        table.add_row(*(_cell(v) for v in row))
    _console().print(table)
