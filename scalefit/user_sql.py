"""SQL that users write: one read-only query, or one predicate over ``runs``, never code.

Whatever a user types (`scalefit sql`, `--where`, `[fit] where`) runs only on a connection
from :func:`connect_locked`, and only after DuckDB's own parser has said what it is. It is
never stored to be run again: a fit records the ids of its points (``fit_points``).

This module sits above :mod:`scalefit.store` (it opens the store through
:func:`scalefit.store.connect`) and below every entry point of user SQL: ``scalefit sql``
(:func:`user_query`), ``--where`` and ``[fit] where`` (:func:`check_predicate`,
:func:`run_ids_where`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TypeGuard

import duckdb
import polars as pl

from .errors import QueryError, StoreError
from .schemas import TABLES
from .store import DEFAULT_DB, connect, database_missing, ddl, run

LOCKED_SETTINGS: dict[str, str | bool | int | float | list[str]] = {
    # No files (COPY, EXPORT/IMPORT DATABASE, ATTACH of a file, read_csv/read_parquet/
    # read_text/glob, CREATE SECRET), no extension INSTALL/LOAD, no Python replacement scans.
    "enable_external_access": False,
    # A query that needs an extension (httpfs for an http:// URL, ...) fails instead of
    # installing it from the network or loading it from disk.
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
    "allow_unsigned_extensions": False,
    # Python variables are never read as tables.
    "python_enable_replacements": False,
    # No spill files: a query too big for memory fails instead of writing to a temp folder.
    "temp_directory": "",
    # Last: no SET, RESET or PRAGMA can change any of the above (or anything else).
    "lock_configuration": True,
}
"""DuckDB settings of every connection that runs SQL a user wrote (see :func:`connect_locked`)."""

READ_ONLY_STATEMENTS = ("SELECT", "EXPLAIN")
"""Statement types ``scalefit sql`` runs (``SELECT`` includes WITH, FROM-first queries,
VALUES, DESCRIBE, SUMMARIZE and SHOW)."""

_REFUSAL_REASONS: dict[str, str] = {
    "COPY": "it writes or reads files",
    "COPY_DATABASE": "it copies a database",
    "EXPORT": "it writes files",
    "EXTENSION": "it installs extensions (network and disk)",
    "LOAD": "it installs or loads extensions (network and disk)",
    "ATTACH": "it opens another database",
    "DETACH": "it closes a database",
    "SET": "it changes settings",
    "VARIABLE_SET": "it changes settings",
    "PRAGMA": "it runs a pragma (settings and procedures)",
    "CALL": "it calls a procedure",
    "TRANSACTION": "it controls transactions",
    "VACUUM": "it maintains the store",
    "PREPARE": "it prepares statements",
    "EXECUTE": "it executes prepared statements",
    "MULTI": "it runs several statements",
}


def connect_locked(
    path: str | os.PathLike[str] = DEFAULT_DB, *, timeout: float | None = None
) -> contextlib.AbstractContextManager[duckdb.DuckDBPyConnection]:
    """Open the store read-only with :data:`LOCKED_SETTINGS`: the connection for user SQL.

    On it nothing can write (the file is opened read-only, and no file, network or extension
    can be reached), and its settings cannot be changed (``lock_configuration``). Every
    entry point of user-written SQL uses this function.

    Raises
    ------
    DatabaseMissingError, DatabaseBusyError, StoreError
    """
    return _connect_locked(Path(path), timeout)


@contextlib.contextmanager
def _connect_locked(path: Path, timeout: float | None) -> Iterator[duckdb.DuckDBPyConnection]:
    if not path.is_file():  # a folder is no store either
        raise database_missing(path)
    with connect(path, read_only=True, timeout=timeout, config=LOCKED_SETTINGS) as con:
        yield con


def _memory_locked() -> duckdb.DuckDBPyConnection:
    """An empty in-memory database with :data:`LOCKED_SETTINGS` (for parsing only)."""
    return duckdb.connect(":memory:", config=dict(LOCKED_SETTINGS))


def is_locked(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether ``con`` has :data:`LOCKED_SETTINGS` and a read-only store (or no store)."""
    rows = dict(
        run(
            con,
            "SELECT name, value FROM duckdb_settings() WHERE name IN "
            "('enable_external_access', 'lock_configuration', 'autoload_known_extensions', "
            "'autoinstall_known_extensions')",
        )
    )
    locked = rows == {
        "enable_external_access": "false",
        "lock_configuration": "true",
        "autoload_known_extensions": "false",
        "autoinstall_known_extensions": "false",
    }
    read_only = run(
        con,
        "SELECT bool_and(readonly OR path IS NULL) FROM duckdb_databases() WHERE NOT internal",
    )[0][0]
    return locked and bool(read_only)


def _require_locked(con: duckdb.DuckDBPyConnection) -> None:
    if not is_locked(con):  # a programming error, never a user's
        raise StoreError("user SQL must run on a connection from user_sql.connect_locked()")


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def user_statement(con: duckdb.DuckDBPyConnection, text: str) -> duckdb.Statement:
    """The one read-only statement in ``text``, as DuckDB parsed it.

    Raises
    ------
    QueryError
        ``text`` does not parse, holds no statement or several, or a statement of a type
        that is not a query (the message names the type and why it is refused).
    """
    try:
        statements = con.extract_statements(text)
    except duckdb.Error as exc:
        raise QueryError(f"cannot parse the query: {_first_line(exc)}") from None
    if not statements:
        raise QueryError('refused: no statement given; pass one query, e.g. "select 1"')
    if len(statements) > 1:
        raise QueryError(
            f"refused: {len(statements)} statements given; scalefit runs exactly one "
            "read-only query at a time"
        )
    statement = statements[0]
    kind = statement.type.name
    if kind not in READ_ONLY_STATEMENTS:
        why = _REFUSAL_REASONS.get(kind, "it changes the store")
        raise QueryError(
            f"refused: a {kind} statement, because {why}; scalefit sql runs one read-only "
            "query (SELECT, WITH, FROM, VALUES, DESCRIBE, SUMMARIZE, SHOW, EXPLAIN) on the store"
        )
    return statement


def _duckdb_error(exc: duckdb.Error) -> QueryError:
    message = _first_line(exc)
    if isinstance(exc, duckdb.PermissionException) or "read-only mode" in message:
        return QueryError(
            f"refused: {message} (user SQL reads only the store: no files, network, "
            "extensions or writes)"
        )
    return QueryError(message)


_PLAIN_TYPES = frozenset(
    {
        "boolean",
        "tinyint",
        "smallint",
        "integer",
        "bigint",
        "utinyint",
        "usmallint",
        "uinteger",
        "ubigint",
        "float",
        "double",
        "decimal",
        "varchar",
    }
)
"""DuckDB types that reach polars and every output format as they are."""

_NESTED_TYPES = frozenset({"list", "struct", "map", "array", "union"})
"""DuckDB types shown as JSON text (CSV has no nested values; polars cannot take unions)."""


@dataclasses.dataclass(frozen=True, slots=True)
class UserResult:
    """A user query's result, ready to print in any format.

    ``frame`` holds plain columns: numbers, booleans and text. Nested values (lists,
    structs, maps, arrays, unions) are JSON text, listed in ``json_columns``; every other
    type (dates, times, intervals, blobs, UUIDs, huge integers, ...) is DuckDB's own text
    form, those of huge integers listed in ``integer_columns`` (so JSON can print numbers).
    """

    frame: pl.DataFrame
    json_columns: tuple[str, ...] = ()
    integer_columns: tuple[str, ...] = ()


def _output_names(names: Sequence[str]) -> list[str]:
    """``names`` made unique as polars needs them: a repeated name gets ``_1``, ``_2``, ..."""
    seen: set[str] = set()
    out = []
    for name in names:
        candidate, n = name, 0
        while candidate in seen:
            n += 1
            candidate = f"{name}_{n}"
        seen.add(candidate)
        out.append(candidate)
    return out


def user_query(con: duckdb.DuckDBPyConnection, text: str) -> UserResult:
    """Run ``text``, one read-only query a user wrote, on a :func:`connect_locked` connection.

    DuckDB parses ``text`` (:func:`user_statement`: exactly one query); the locked
    connection then refuses whatever the query would reach beyond the store.

    Raises
    ------
    QueryError
        Refused (what, and why) or failed (DuckDB's message); always one line.
    StoreError
        ``con`` is not a locked connection (a programming error).
    """
    _require_locked(con)
    statement = user_statement(con, text)
    try:
        rel = con.sql(statement)
        if rel is None:  # pragma: no cover - only queries get here
            return UserResult(pl.DataFrame())
        names = _output_names(rel.columns)
        exprs, json_cols, int_cols = [], [], []
        for i, (name, dtype) in enumerate(zip(names, rel.types, strict=True)):
            col = duckdb.SQLExpression(f"#{i + 1}")
            kind = dtype.id
            if kind in _NESTED_TYPES:
                col = duckdb.FunctionExpression("to_json", col).cast(duckdb.sqltypes.VARCHAR)
                json_cols.append(name)
            elif kind not in _PLAIN_TYPES:
                col = col.cast(duckdb.sqltypes.VARCHAR)
                if kind in ("hugeint", "uhugeint", "bignum", "varint"):
                    int_cols.append(name)
            exprs.append(col.alias(f"c{i}"))
        if not exprs:
            return UserResult(pl.DataFrame())
        frame = rel.project(*exprs).pl()
    except duckdb.Error as exc:
        raise _duckdb_error(exc) from None
    except pl.exceptions.PolarsError as exc:  # a type this module does not yet convert
        raise QueryError(f"cannot show the result: {_first_line(exc)}") from None
    frame.columns = names
    return UserResult(frame, tuple(json_cols), tuple(int_cols))


# --- predicates (`--where`, `[fit] where`) --------------------------------------------------

PREDICATE_TABLE = "runs"
"""The one table a predicate may read (its columns only)."""


def _strip_locations(tree: object) -> object:
    if isinstance(tree, dict):
        return {
            k: _strip_locations(v) for k, v in tree.items() if not k.startswith("query_location")
        }
    if isinstance(tree, list):
        return [_strip_locations(v) for v in tree]
    return tree


def _serialize(con: duckdb.DuckDBPyConnection, sql: str) -> dict:
    return json.loads(run(con, "SELECT json_serialize_sql(?)", [sql])[0][0])


def _deserialize(con: duckdb.DuckDBPyConnection, tree: dict) -> str:
    return run(con, "SELECT json_deserialize_sql(?)", [json.dumps(tree)])[0][0]


def _short(text: str) -> str:
    """``text`` as an error message quotes it: at most 80 characters."""
    return text if len(text) <= 80 else text[:77] + "..."


def _predicate_problem(expr: object, columns: frozenset[str]) -> str | None:
    """Why the expression tree ``expr`` is not a plain predicate over ``columns``, or None."""
    if isinstance(expr, list):
        return next((p for e in expr if (p := _predicate_problem(e, columns))), None)
    if not isinstance(expr, dict):
        return None
    cls = str(expr.get("class", ""))
    if cls == "SUBQUERY" or "node" in expr or "from_table" in expr or "subquery" in expr:
        return "it contains a subquery"
    if cls == "PARAMETER":
        return "it contains a parameter placeholder"
    if cls == "COLUMN_REF":
        parts = [str(p) for p in expr.get("column_names", [])]
        if len(parts) == 2 and parts[0].lower() == PREDICATE_TABLE:
            parts = parts[1:]
        if len(parts) != 1 or parts[0].lower() not in columns:
            return (
                f"`{'.'.join(parts)}` is not a column of `{PREDICATE_TABLE}` "
                f"(columns: {', '.join(sorted(columns))})"
            )
    if cls == "WINDOW":
        return "it contains a window function"
    return next(
        (p for k, v in expr.items() if k != "literal" and (p := _predicate_problem(v, columns))),
        None,
    )


def check_predicate(text: str) -> str:
    """Check that ``text`` is a single boolean expression over the ``runs`` columns.

    DuckDB parses ``SELECT * FROM runs WHERE <text>`` (``json_serialize_sql``, on an
    in-memory locked connection holding an empty ``runs`` table; nothing reads the store)
    and the tree must be exactly that query with ``text`` as its WHERE clause: one
    statement, no other clause (ORDER BY, UNION, GROUP BY, ...), no subquery, no table, no
    parameter, only columns of ``runs``; and DuckDB must bind it as a BOOLEAN.

    Returns
    -------
    str
        ``text`` without surrounding blanks ("" selects every run).

    Raises
    ------
    QueryError
        One line: the predicate and why it is refused.
    """
    if not isinstance(text, str):
        raise QueryError(f"the predicate must be text, not {type(text).__name__}")
    text = text.strip()
    if not text:
        return ""
    con = _memory_locked()
    try:
        run(con, ddl(TABLES[PREDICATE_TABLE])[0])
        why = _predicate_refusal(con, text)
    except RecursionError:
        why = "it is nested too deeply"
    except duckdb.Error as exc:  # e.g. it does not parse, or its tree is too deep to serialize
        why = _first_line(exc)
    finally:
        con.close()
    if why:
        raise QueryError(f"predicate {_short(text)!r} refused: {why}")
    return text


def _predicate_refusal(con: duckdb.DuckDBPyConnection, text: str) -> str | None:
    """Why ``text`` is not one boolean expression over the columns of ``runs`` (None if it
    is), read from the tree DuckDB parses on ``con``, an empty locked database with ``runs``.
    """
    sql = f"SELECT * FROM {PREDICATE_TABLE} WHERE {text}"
    statements = con.extract_statements(sql)
    if len(statements) != 1:
        return (
            f"it makes {len(statements)} statements; give one boolean expression over "
            f"the columns of `{PREDICATE_TABLE}`"
        )
    tree = _serialize(con, sql)
    if tree.get("error"):
        return str(tree.get("error_message") or "it does not parse").splitlines()[0]
    node = _strip_locations(tree["statements"][0].get("node"))
    if not _only_a_where_clause(node, con):
        return (
            "it is more than one boolean expression (it adds clauses such as UNION, "
            "ORDER BY, GROUP BY or LIMIT to the query)"
        )
    columns = frozenset(c.lower() for c in TABLES[PREDICATE_TABLE].columns)
    return _predicate_problem(node.get("where_clause"), columns) or _type_problem(con, tree, node)


def _only_a_where_clause(node: object, con: duckdb.DuckDBPyConnection) -> TypeGuard[dict]:
    """Whether the parsed query ``node`` is ``SELECT * FROM runs WHERE ...`` and no more."""
    reference = _serialize(con, f"SELECT * FROM {PREDICATE_TABLE} WHERE true")
    ref = _strip_locations(reference["statements"][0]["node"])
    if not isinstance(node, dict) or not isinstance(ref, dict):
        return False
    return {k: v for k, v in node.items() if k != "where_clause"} == {
        k: v for k, v in ref.items() if k != "where_clause"
    }


def _type_problem(con: duckdb.DuckDBPyConnection, tree: dict, node: dict) -> str | None:
    """Why the checked WHERE clause of ``tree`` is not a boolean as DuckDB binds it (nothing
    is run): its type in ``SELECT <predicate> FROM runs``, and whether DuckDB binds it as a
    WHERE clause at all (aggregates and the like are refused there)."""
    probe = _serialize(con, f"SELECT true FROM {PREDICATE_TABLE}")
    probe["statements"][0]["node"]["select_list"] = [node["where_clause"]]
    kind = con.sql(_deserialize(con, probe)).types[0]
    con.sql(_deserialize(con, tree))
    if str(kind) != "BOOLEAN":
        return f"it is {kind}, not a boolean (true/false) expression"
    return None


def run_ids_where(con: duckdb.DuckDBPyConnection, predicate: str) -> list[str] | None:
    """The ``run_id`` of every run matching ``predicate``, evaluated on ``con``, a
    :func:`connect_locked` connection; None for an empty predicate (every run).

    The predicate is checked first (:func:`check_predicate`); the query run is the one
    DuckDB rebuilds from the checked tree. Callers pass on the ids (data, as bound
    parameters), never the predicate's text.

    Raises
    ------
    QueryError
        The predicate is refused, or DuckDB cannot evaluate it (e.g. it is not boolean).
    StoreError
        ``con`` is not a locked connection (a programming error).
    """
    _require_locked(con)
    predicate = check_predicate(predicate)
    if not predicate:
        return None
    try:
        query = run(
            con,
            "SELECT json_deserialize_sql(json_serialize_sql(?))",
            [f"SELECT * FROM {PREDICATE_TABLE} WHERE {predicate}"],
        )[0][0]
        user_statement(con, query)
        rel = con.sql(query).project("run_id")
        return [r[0] for r in rel.order("run_id").fetchall()]
    except (duckdb.Error, QueryError) as exc:
        raise QueryError(f"predicate {_short(predicate)!r} failed: {_first_line(exc)}") from None
