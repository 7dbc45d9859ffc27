"""The DuckDB store: one file, tables generated from the schemas, one transaction per load.

DuckDB lets one process open a file for writing and blocks every other process, readers
included, while it does. :func:`connect` therefore waits and retries for a bounded time and
then raises :class:`~scalefit.errors.DatabaseBusyError` naming the file, instead of failing
at the first conflict or hanging forever.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import random
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import duckdb
import polars as pl

from .errors import DatabaseBusyError, DatabaseMissingError, QueryError, StoreError
from .load.validate import validate_frame
from .schemas import TABLES, TableSpec

log = logging.getLogger(__name__)

DEFAULT_DB = Path("scalefit.duckdb")
"""Default database file, relative to the working directory."""

DEFAULT_BUSY_TIMEOUT = float(os.environ.get("SCALEFIT_BUSY_TIMEOUT", "30"))
"""Seconds to wait for another process to release the database (env `SCALEFIT_BUSY_TIMEOUT`)."""

_storage_version = "v1.4.0"  # = scalefit.config.STORAGE_VERSION; set by use_storage_version


def use_storage_version(version: str) -> None:
    """Create new stores in DuckDB storage ``version`` (``[store] storage_version``).

    ``"v1.4.0"``, the default, is the newest format DuckDB 1.4 (its CLI, DBeaver, R and Node
    clients) opens. An existing file keeps the format it was created in.
    """
    global _storage_version
    _storage_version = version


_DUCKDB_TYPES: dict[type[pl.DataType], str] = {
    pl.String: "VARCHAR",
    pl.Float64: "DOUBLE",
    pl.Float32: "FLOAT",
    pl.Int64: "BIGINT",
    pl.Int32: "INTEGER",
    pl.Boolean: "BOOLEAN",
    pl.Date: "DATE",
    pl.Datetime: "TIMESTAMP",
}


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def column_types(spec: TableSpec) -> dict[str, str]:
    """DuckDB type of every column of ``spec``, derived from its schema."""
    out = {}
    for name, col in spec.schema.to_schema().columns.items():
        dtype = col.dtype.type
        base = dtype.base_type() if hasattr(dtype, "base_type") else type(dtype)
        try:
            out[name] = _DUCKDB_TYPES[base]
        except KeyError:  # pragma: no cover - a schema author's mistake
            raise StoreError(f"no DuckDB type for {spec.name}.{name} ({dtype})") from None
    return out


def ddl(spec: TableSpec) -> list[str]:
    """``CREATE TABLE`` and ``COMMENT`` statements for ``spec``, generated from its schema.

    Non-nullable columns are ``NOT NULL``. A keyed table gets its key as ``PRIMARY KEY``, so
    that DuckDB itself guarantees no duplicates, unless its spec leaves the key to scalefit
    (``enforce_key_in_db=False``: :func:`write` and the ingest keep it unique, without the
    cost of DuckDB's key index).
    """
    schema = spec.schema.to_schema()
    types = column_types(spec)
    cols = []
    for name, col in schema.columns.items():
        null = "" if col.nullable else " NOT NULL"
        cols.append(f"    {_ident(name)} {types[name]}{null}")
    if spec.key and spec.enforce_key_in_db:
        cols.append(f"    PRIMARY KEY ({', '.join(_ident(k) for k in spec.key)})")
    stmts = [f"CREATE TABLE IF NOT EXISTS {_ident(spec.name)} (\n" + ",\n".join(cols) + "\n)"]
    stmts.append(f"COMMENT ON TABLE {_ident(spec.name)} IS {_sql_string(spec.description)}")
    for name, col in schema.columns.items():
        if col.description:
            stmts.append(
                f"COMMENT ON COLUMN {_ident(spec.name)}.{_ident(name)} IS "
                f"{_sql_string(col.description)}"
            )
    return stmts


def run(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[object] | None = None) -> list:
    """Execute one statement and fetch its rows to the end.

    DuckDB 2 keeps a partly read result open on the connection and refuses other work until
    it is finished, so every statement here is run to completion.
    """
    return con.execute(sql, params or ()).fetchall()


def run_on_frame(con: duckdb.DuckDBPyConnection, frame: pl.DataFrame, name: str, sql: str) -> None:
    """Execute ``sql``, a statement that reads ``frame`` as the table ``name``, to the end.

    The frame is bound for this one statement (a relation's query), not registered on the
    connection: inside a transaction, DuckDB keeps a registered frame alive until the
    transaction ends even once it is unregistered, so a file ingested in many chunks held
    every chunk in memory (about 40 bytes a row, measured; see benchmarks/RESULTS.md).
    """
    try:
        con.from_arrow(frame.to_arrow()).query(name, sql)
    except duckdb.TransactionException as exc:
        # A failed statement aborts the open transaction, and the query's cleanup then fails
        # too; the first error is the one that says what went wrong.
        if isinstance(exc.__context__, duckdb.Error):
            raise exc.__context__ from None
        raise


def _is_lock_conflict(exc: Exception) -> bool:
    text = str(exc).lower()
    return "lock" in text and ("conflicting" in text or "could not set" in text)


def _open(
    path: Path, read_only: bool, timeout: float, config: dict[str, object] | None = None
) -> duckdb.DuckDBPyConnection:
    """Open ``path`` (:func:`_open_once`); a store written by an older scalefit that is
    opened for reading is first upgraded (:func:`ensure_tables` on a writable connection),
    so that every command, the read-only ones included, sees today's layout."""
    con = _open_once(path, read_only, timeout, config)
    if read_only and _outdated(con):
        con.close()
        log.info("upgrading %s, written by an older scalefit, to today's tables", path)
        writer = _open_once(path, False, timeout)
        try:
            ensure_tables(writer)
        finally:
            writer.close()
        con = _open_once(path, read_only, timeout, config)
    return con


def _outdated(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether ``con``'s store is a scalefit store (it has ``fits`` and ``ingests``) that
    lacks a table or column of today's schemas."""
    have = set(
        run(
            con,
            "SELECT table_name, column_name FROM duckdb_columns() "
            "WHERE schema_name = 'main' AND database_name = current_database()",
        )
    )
    tables = {t for t, _ in have}
    if not {"fits", "ingests"} <= tables:
        return False  # not a store scalefit made: never written to on a read
    return any((spec.name, c) not in have for spec in TABLES.values() for c in spec.columns)


def _open_once(
    path: Path, read_only: bool, timeout: float, config: dict[str, object] | None = None
) -> duckdb.DuckDBPyConnection:
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        try:
            options = dict(config or {})
            if not read_only:
                options.setdefault("storage_compatibility_version", _storage_version)
            return duckdb.connect(str(path), read_only=read_only, config=options)
        except duckdb.ConnectionException as exc:
            # The same file is already open in this process with other settings.
            raise StoreError(f"cannot open {path}: {str(exc).splitlines()[0]}") from exc
        except duckdb.InvalidInputException as exc:  # an unknown storage version
            raise StoreError(f"cannot open {path}: {exc}") from exc
        except duckdb.IOException as exc:
            if not _is_lock_conflict(exc):
                raise StoreError(f"cannot open {path}: {exc}") from exc
            if time.monotonic() >= deadline:
                raise DatabaseBusyError(
                    f"{path} is busy: another process has held it for over {timeout:g} s. "
                    "Wait for it to finish (DuckDB allows one writing process at a time), or "
                    "raise the wait with SCALEFIT_BUSY_TIMEOUT=SECONDS.",
                    path=str(path),
                ) from exc
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 1.0)


@contextlib.contextmanager
def connect(
    path: str | os.PathLike[str] = DEFAULT_DB,
    *,
    read_only: bool = False,
    create: bool = True,
    timeout: float | None = None,
) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the store, waiting a bounded time for other processes, and create its tables.

    Parameters
    ----------
    path
        DuckDB file; default ``./scalefit.duckdb``.
    read_only
        Open for reading only (no tables are created).
    create
        Create the file if it is missing (default True). False raises
        :class:`DatabaseMissingError` instead, for commands that only read.
    timeout
        Seconds to wait while another process holds the file; default
        ``SCALEFIT_BUSY_TIMEOUT`` or 30.

    Raises
    ------
    DatabaseMissingError, DatabaseBusyError, StoreError
    """
    path = Path(path)
    if not path.exists():
        if read_only or not create:
            raise DatabaseMissingError(
                f"no database at {path}: run `scalefit refresh --db {path}` first, "
                "or pass --db with the right file"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
    con = _open(path, read_only, DEFAULT_BUSY_TIMEOUT if timeout is None else timeout)
    try:
        if not read_only:
            ensure_tables(con)
        yield con
    finally:
        con.close()


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Migrate the tables of an older layout (:func:`migrate`), create missing tables and
    add columns the schemas gained since the file was made, all in one transaction."""
    with transaction(con):
        migrate(con)
        existing = {
            (t, c)
            for t, c in run(
                con,
                "SELECT table_name, column_name FROM duckdb_columns() WHERE schema_name = 'main'",
            )
        }
        tables = {t for t, _ in existing}
        for spec in TABLES.values():
            if spec.name not in tables:
                for stmt in ddl(spec):
                    run(con, stmt)
                continue
            for name, sqltype in column_types(spec).items():
                if (spec.name, name) not in existing:
                    log.info("adding column %s.%s", spec.name, name)
                    run(con, f"ALTER TABLE {_ident(spec.name)} ADD COLUMN {_ident(name)} {sqltype}")
                    description = spec.schema.to_schema().columns[name].description
                    if description:
                        run(
                            con,
                            f"COMMENT ON COLUMN {_ident(spec.name)}.{_ident(name)} IS "
                            f"{_sql_string(description)}",
                        )


ALLOCATION_PROCEDURES = ("isoflop", "envelope")
"""Procedures that fit an ``allocation`` law. Before ``fits.procedure`` existed (scalefit
0.1, up to commit dce417e), ``fits.form`` held these names for such fits instead of the law
form; :func:`migrate` moves them to ``fits.procedure``."""


def migrate(con: duckdb.DuckDBPyConnection) -> None:
    """Bring a store written by an older scalefit to today's layout (idempotent; the
    caller holds the transaction: :func:`ensure_tables` runs it on every writable open).

    - A ``fits`` table without ``procedure`` is rebuilt from today's schema (DuckDB cannot
      make an added column ``NOT NULL`` in the transaction that fills it): ``procedure`` is
      the old ``form`` where that was ``isoflop`` or ``envelope``, whose law form becomes
      ``allocation`` (the ``laws.form`` of the law they saved); every other fit was made by
      the ``parametric`` procedure and keeps its form. ``fit_id`` is kept as it is: a refit
      of the same data with the same settings derives the same id, and ``laws``,
      ``fit_samples``, ``fit_points`` and the reports keep pointing at it.
    - ``laws.form`` and ``law_parameters.form`` hold law types only (``isoflop`` and
      ``envelope`` were accepted there, though scalefit never wrote them: ``allocation``).

    A nullable column a schema gained (``runs.schedule``: unknown for the runs already
    stored) needs nothing here: :func:`ensure_tables` adds it, with its comment, after this.
    It must be the last column of its schema, since ``ADD COLUMN`` appends, so that a
    migrated store has a new store's layout (``tests/test_migration.py`` checks both).
    """
    have = run(
        con,
        "SELECT table_name, column_name FROM duckdb_columns() WHERE schema_name = 'main' "
        "AND table_name IN ('fits', 'laws', 'law_parameters')",
    )
    old = ", ".join(_sql_string(p) for p in ALLOCATION_PROCEDURES)
    fits_columns = {c for t, c in have if t == "fits"}
    if fits_columns and "procedure" not in fits_columns:
        _rebuild_fits(con, fits_columns)
    for table in ("laws", "law_parameters"):
        if (table, "form") in have:
            run(con, f"UPDATE {_ident(table)} SET form = 'allocation' WHERE form IN ({old})")


def _rebuild_fits(con: duckdb.DuckDBPyConnection, columns: set[str]) -> None:
    """Recreate ``fits`` in today's layout from a ``fits`` without ``procedure``."""
    spec = TABLES["fits"]
    staging = dataclasses.replace(spec, name="_fits_migrating")
    old = ", ".join(_sql_string(p) for p in ALLOCATION_PROCEDURES)
    computed = {
        "procedure": f"CASE WHEN form IN ({old}) THEN form ELSE 'parametric' END",
        "form": f"CASE WHEN form IN ({old}) THEN 'allocation' ELSE form END",
    }
    select = ", ".join(computed.get(c, _ident(c) if c in columns else "NULL") for c in spec.columns)
    for stmt in ddl(staging):
        run(con, stmt)
    cols = ", ".join(_ident(c) for c in spec.columns)
    run(con, f"INSERT INTO {_ident(staging.name)} ({cols}) SELECT {select} FROM fits")
    n = run(con, f"SELECT count(*) FROM {_ident(staging.name)}")[0][0]
    run(con, "DROP TABLE fits")
    run(con, f"ALTER TABLE {_ident(staging.name)} RENAME TO fits")
    log.info("migrated fits (%d rows): fits.procedure filled from the old fits.form", n)


_IN_TRANSACTION: set[int] = set()
"""``id()`` of the connections inside :func:`transaction` (DuckDB cannot be asked: a second
``BEGIN`` aborts the open transaction)."""


@contextlib.contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """Run the block in one transaction: committed whole, or rolled back whole."""
    run(con, "BEGIN TRANSACTION")
    _IN_TRANSACTION.add(id(con))
    try:
        yield con
    except BaseException:
        _IN_TRANSACTION.discard(id(con))
        run(con, "ROLLBACK")
        raise
    _IN_TRANSACTION.discard(id(con))
    run(con, "COMMIT")


def _atomic(con: duckdb.DuckDBPyConnection) -> contextlib.AbstractContextManager:
    """A transaction for the block, unless the caller's :func:`transaction` is open."""
    return contextlib.nullcontext(con) if id(con) in _IN_TRANSACTION else transaction(con)


def write(
    con: duckdb.DuckDBPyConnection,
    table: str,
    frame: pl.DataFrame,
    *,
    replace_where: str | None = None,
    validate: bool = True,
) -> int:
    """Write ``frame`` to ``table`` according to the table's declared write policy.

    One write is atomic (it opens a transaction unless it runs inside :func:`transaction`);
    call it inside :func:`transaction` when several writes must land together.

    An ``upsert`` replaces the rows whose key is in ``frame``: with ``INSERT OR REPLACE``
    when DuckDB holds the key (a ``PRIMARY KEY``), else by deleting those keys first and
    then inserting (``enforce_key_in_db=False``), which keeps the key unique as long as
    rows reach the table through scalefit.

    Parameters
    ----------
    table
        A table of :data:`scalefit.schemas.TABLES`.
    frame
        Rows with the table's columns (missing nullable columns are filled with nulls).
    replace_where
        A SQL predicate: existing rows matching it are deleted first, in the same
        transaction. For ``replace`` tables it limits which rows are replaced (default: all);
        for the others it clears rows the new data supersedes (e.g. curated rows that left
        the source file).
    validate
        Check ``frame`` against the schema first (default True); an invalid row raises
        :class:`StoreError` since rows reaching the store must already be valid.

    Returns
    -------
    int
        Rows written.

    Raises
    ------
    StoreError
        A row is invalid, or ``frame`` repeats a key that DuckDB does not enforce.
    """
    spec = TABLES[table]
    if validate:
        checked = validate_frame(frame, spec.schema, fill_missing=True)
        if not checked.ok:
            first = checked.failures.row(0, named=True)
            raise StoreError(
                f"{checked.rejected.height} invalid row(s) for `{table}`; first: "
                f"row {first['row_number']}: {first['reason']}"
            )
        frame = checked.valid
    else:
        frame = frame.select(spec.columns)
    scalefit_key = spec.key and spec.policy == "upsert" and not spec.enforce_key_in_db
    if scalefit_key and frame.select(pl.struct(spec.key).is_duplicated().any()).item():
        # No PRIMARY KEY would catch a key repeated within the frame.
        first = frame.filter(pl.struct(spec.key).is_duplicated()).select(spec.key).row(0)
        raise StoreError(f"rows for `{table}` repeat the key {spec.key} = {first}")
    name = f"_incoming_{table}"
    target = _ident(table)
    cols = ", ".join(_ident(c) for c in spec.columns)
    with _atomic(con):
        if spec.policy == "replace" or replace_where:
            where = f" WHERE {replace_where}" if replace_where else ""
            run(con, f"DELETE FROM {target}{where}")
        verb = "INSERT"
        if scalefit_key:
            match = " AND ".join(
                f"{target}.{_ident(k)} IS NOT DISTINCT FROM {name}.{_ident(k)}" for k in spec.key
            )
            run_on_frame(con, frame, name, f"DELETE FROM {target} USING {name} WHERE {match}")
        elif spec.policy == "upsert":
            verb = "INSERT OR REPLACE"
        run_on_frame(con, frame, name, f"{verb} INTO {target} ({cols}) SELECT {cols} FROM {name}")
    return frame.height


def query(
    con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[object] | None = None
) -> pl.DataFrame:
    """Run ``sql`` and return the result as a polars frame.

    Raises
    ------
    QueryError
        The query failed (syntax, unknown table or column, …); the message is DuckDB's.
    """
    try:
        rel = con.sql(sql, params=params) if params else con.sql(sql)
        if rel is None:  # a statement without a result
            return pl.DataFrame()
        return rel.pl()
    except duckdb.Error as exc:
        message = str(exc).splitlines()[0]
        raise QueryError(message) from exc


def table_counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Row count of every table of the SQL interface."""
    return {name: run(con, f"SELECT count(*) FROM {_ident(name)}")[0][0] for name in TABLES}


# --- SQL that users write ------------------------------------------------------------------
# Whatever a user types (`scalefit sql`, `--where`, `[fit] where`) runs only on a connection
# from :func:`connect_locked`, and only after DuckDB's own parser has said what it is. It is
# never stored to be run again: a fit records the ids of its points (``fit_points``).

LOCKED_SETTINGS: dict[str, object] = {
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
    if not path.is_file():
        raise DatabaseMissingError(
            f"no database at {path}: run `scalefit refresh --db {path}` first, "
            "or pass --db with the right file"
        )
    con = _open(path, True, DEFAULT_BUSY_TIMEOUT if timeout is None else timeout, LOCKED_SETTINGS)
    try:
        yield con
    finally:
        con.close()


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
        raise StoreError("user SQL must run on a connection from store.connect_locked()")


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
    import json

    return json.loads(run(con, "SELECT json_serialize_sql(?)", [sql])[0][0])


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
    import json

    if not isinstance(text, str):
        raise QueryError(f"the predicate must be text, not {type(text).__name__}")
    text = text.strip()
    if not text:
        return ""
    short = text if len(text) <= 80 else text[:77] + "..."

    def refuse(why: str) -> QueryError:
        return QueryError(f"predicate {short!r} refused: {why}")

    spec = TABLES[PREDICATE_TABLE]
    columns = frozenset(c.lower() for c in spec.columns)
    sql = f"SELECT * FROM {PREDICATE_TABLE} WHERE {text}"
    con = _memory_locked()
    try:
        run(con, ddl(spec)[0])
        try:
            statements = con.extract_statements(sql)
        except duckdb.Error as exc:
            raise refuse(_first_line(exc)) from None
        if len(statements) != 1:
            raise refuse(
                f"it makes {len(statements)} statements; give one boolean expression over "
                f"the columns of `{PREDICATE_TABLE}`"
            )
        tree = _serialize(con, sql)
        if tree.get("error"):
            raise refuse(str(tree.get("error_message") or "it does not parse").splitlines()[0])
        node = _strip_locations(tree["statements"][0].get("node"))
        reference = _serialize(con, f"SELECT * FROM {PREDICATE_TABLE} WHERE true")
        ref = _strip_locations(reference["statements"][0]["node"])
        if not isinstance(node, dict) or {k: v for k, v in node.items() if k != "where_clause"} != {
            k: v for k, v in ref.items() if k != "where_clause"
        }:
            raise refuse(
                "it is more than one boolean expression (it adds clauses such as UNION, "
                "ORDER BY, GROUP BY or LIMIT to the query)"
            )
        problem = _predicate_problem(node.get("where_clause"), columns)
        if problem:
            raise refuse(problem)
        # Its type, as DuckDB binds it: `SELECT <predicate> FROM runs` (not run).
        probe = _serialize(con, f"SELECT true FROM {PREDICATE_TABLE}")
        probe["statements"][0]["node"]["select_list"] = [node["where_clause"]]
        probe_sql = run(con, "SELECT json_deserialize_sql(?)", [json.dumps(probe)])[0][0]
        try:
            kind = con.sql(probe_sql).types[0]
            # and as a WHERE clause (aggregates and the like are refused there)
            con.sql(run(con, "SELECT json_deserialize_sql(?)", [json.dumps(tree)])[0][0])
        except duckdb.Error as exc:
            raise refuse(_first_line(exc)) from None
        if str(kind) != "BOOLEAN":
            raise refuse(f"it is {kind}, not a boolean (true/false) expression")
    except RecursionError:
        raise refuse("it is nested too deeply") from None
    except duckdb.Error as exc:  # e.g. its tree is deeper than DuckDB serializes
        raise refuse(_first_line(exc)) from None
    finally:
        con.close()
    return text


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
    short = predicate if len(predicate) <= 80 else predicate[:77] + "..."
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
        raise QueryError(f"predicate {short!r} failed: {_first_line(exc)}") from None


# --------------------------------------------------------------------------- bulk loads


@dataclasses.dataclass(frozen=True)
class Staging:
    """SQL for loading rows of ``table`` in bulk through a stage, generated from its schema.

    A bulk loader (the user-log ingest) writes rows chunk by chunk, or stages a whole file
    first to find its duplicated keys; either way the rows then upsert ``table`` on its key,
    as :func:`write` does for a frame. Made by :func:`staging`.
    """

    table: str
    name: str
    """The stage: a temporary table."""
    columns: tuple[str, ...]
    """Columns of ``table`` the stage holds, in schema order."""
    extra: tuple[str, ...]
    """The stage's own columns (e.g. a file's ``row_number``), never written to ``table``."""
    create: str
    """``CREATE TEMP TABLE`` for the stage."""

    @property
    def drop(self) -> str:
        """``DROP TABLE`` for the stage."""
        return f"DROP TABLE {_ident(self.name)}"

    def fill(self, incoming: str) -> str:
        """Copy ``incoming`` (with the stage's columns) into the stage."""
        cols = ", ".join(_ident(c) for c in (*self.columns, *self.extra))
        return f"INSERT INTO {_ident(self.name)} ({cols}) SELECT {cols} FROM {_ident(incoming)}"

    def delete_keys(self, incoming: str | None = None) -> str:
        """Delete the rows of ``table`` whose key is in ``incoming`` (default: the stage).

        With ``incoming`` free of duplicated keys, deleting before inserting keeps the key
        unique and lets the later load win (the upsert policy, kept by scalefit when DuckDB
        does not hold the key).
        """
        spec = TABLES[self.table]
        target = _ident(self.table)
        schema = spec.schema.to_schema()
        match = " AND ".join(
            f"{target}.{_ident(k)} "
            + ("IS NOT DISTINCT FROM" if schema.columns[k].nullable else "=")
            + f" s.{_ident(k)}"
            for k in spec.key
        )
        return f"DELETE FROM {target} USING {_ident(incoming or self.name)} s WHERE {match}"

    def insert(self, values: dict[str, str], incoming: str | None = None) -> str:
        """Insert the rows of ``incoming`` (default: the stage) into ``table``; ``values``
        gives the columns the stage lacks (e.g. the ``ingest_id``), as SQL string literals."""
        missing = set(TABLES[self.table].columns) - set(self.columns) - set(values)
        if missing:  # pragma: no cover - a programming error
            raise StoreError(f"no value for {sorted(missing)} of `{self.table}`")
        cols = [_ident(c) for c in self.columns]
        names = ", ".join([*cols, *(_ident(c) for c in values)])
        select = ", ".join([*cols, *(_sql_string(v) for v in values.values())])
        source = _ident(incoming or self.name)
        return f"INSERT INTO {_ident(self.table)} ({names}) SELECT {select} FROM {source}"


def staging(
    table: str,
    name: str,
    *,
    lacks: Sequence[str] = (),
    extra: dict[str, str] | None = None,
) -> Staging:
    """The :class:`Staging` SQL of ``table``, from its schema: a stage named ``name`` with the
    table's columns but ``lacks`` (filled in when rows are inserted), plus ``extra``
    (``{column: DuckDB type}``), the stage's own.

    Raises
    ------
    StoreError
        ``table`` has no key to upsert on, or ``lacks`` names a key column.
    """
    spec = TABLES[table]
    if spec.policy != "upsert" or not spec.key or set(lacks) & set(spec.key):
        raise StoreError(f"`{table}` cannot be upserted through a stage lacking {list(lacks)}")
    types = column_types(spec)
    columns = tuple(c for c in spec.columns if c not in lacks)
    extra = extra or {}
    defs = [f"{_ident(c)} {types[c]}" for c in columns]
    defs += [f"{_ident(c)} {t}" for c, t in extra.items()]
    create = f"CREATE TEMP TABLE {_ident(name)} ({', '.join(defs)})"
    return Staging(table, name, columns, tuple(extra), create)
