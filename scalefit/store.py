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
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import duckdb
import polars as pl

from .errors import DatabaseBusyError, DatabaseMissingError, QueryError, StoreError
from .load.validate import validate_frame
from .schemas import TABLES, TableSpec

log = logging.getLogger(__name__)

DEFAULT_DB = Path("scalefit.duckdb")
"""Default database file, relative to the working directory."""

DuckDBSetting = str | bool | int | float | list[str]
"""A value of a DuckDB configuration option (what ``duckdb.connect(config=...)`` accepts)."""

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
    path: Path, read_only: bool, timeout: float, config: Mapping[str, DuckDBSetting] | None = None
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
    path: Path, read_only: bool, timeout: float, config: Mapping[str, DuckDBSetting] | None = None
) -> duckdb.DuckDBPyConnection:
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        try:
            options: dict[str, DuckDBSetting] = dict(config or {})
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


def database_missing(path: Path) -> DatabaseMissingError:
    """The error for a store that is not there, when a command only reads it."""
    return DatabaseMissingError(
        f"no database at {path}: run `scalefit refresh --db {path}` first, "
        "or pass --db with the right file"
    )


@contextlib.contextmanager
def connect(
    path: str | os.PathLike[str] = DEFAULT_DB,
    *,
    read_only: bool = False,
    create: bool = True,
    timeout: float | None = None,
    config: Mapping[str, DuckDBSetting] | None = None,
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
    config
        DuckDB settings of the connection (default none; user SQL runs with
        :data:`scalefit.user_sql.LOCKED_SETTINGS`).

    Raises
    ------
    DatabaseMissingError, DatabaseBusyError, StoreError
    """
    path = Path(path)
    if not path.exists():
        if read_only or not create:
            raise database_missing(path)
        path.parent.mkdir(parents=True, exist_ok=True)
    wait = DEFAULT_BUSY_TIMEOUT if timeout is None else timeout
    con = _open(path, read_only, wait, None if config is None else dict(config))
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
    - A table whose ``PRIMARY KEY`` is not its schema's key is rebuilt with it (its rows
      kept): ``fit_points`` was keyed by ``(fit_id, run_id)`` when a fit used one point per
      run, which would fold a fit's checkpoints into one row.
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
    _rekey(con)
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


def _rekey(con: duckdb.DuckDBPyConnection) -> None:
    """Rebuild each table whose ``PRIMARY KEY`` differs from its spec's key (rows kept)."""
    keys = run(
        con,
        "SELECT table_name, constraint_column_names FROM duckdb_constraints() "
        "WHERE schema_name = 'main' AND constraint_type = 'PRIMARY KEY'",
    )
    for table, columns in keys:
        spec = TABLES.get(table)
        if spec is None or not spec.enforce_key_in_db or list(columns) == list(spec.key):
            continue
        staging = dataclasses.replace(spec, name=f"_{table}_migrating")
        for stmt in ddl(staging):
            run(con, stmt)
        have = {r[0] for r in run(con, f"SELECT * FROM (DESCRIBE {_ident(table)})")}
        cols = ", ".join(_ident(c) for c in spec.columns)
        select = ", ".join(_ident(c) if c in have else "NULL" for c in spec.columns)
        run(
            con, f"INSERT INTO {_ident(staging.name)} ({cols}) SELECT {select} FROM {_ident(table)}"
        )
        run(con, f"DROP TABLE {_ident(table)}")
        run(con, f"ALTER TABLE {_ident(staging.name)} RENAME TO {_ident(table)}")
        log.info("migrated %s: keyed by %s", table, ", ".join(spec.key))


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
    frame = _rows_to_write(spec, frame, validate=validate)
    with _atomic(con):
        if spec.policy == "replace" or replace_where:
            where = f" WHERE {replace_where}" if replace_where else ""
            run(con, f"DELETE FROM {_ident(table)}{where}")
        _insert(con, spec, frame)
    return frame.height


def _key_kept_by_scalefit(spec: TableSpec) -> bool:
    """Whether ``spec`` is upserted on a key DuckDB does not hold (``enforce_key_in_db``)."""
    return bool(spec.key) and spec.policy == "upsert" and not spec.enforce_key_in_db


def _rows_to_write(spec: TableSpec, frame: pl.DataFrame, *, validate: bool) -> pl.DataFrame:
    """``frame`` checked against ``spec`` (with ``validate``) and cut to its columns.

    Raises
    ------
    StoreError
        A row is invalid, or ``frame`` repeats a key that DuckDB does not enforce.
    """
    if validate:
        checked = validate_frame(frame, spec.schema, fill_missing=True)
        if not checked.ok:
            first = checked.failures.row(0, named=True)
            raise StoreError(
                f"{checked.rejected.height} invalid row(s) for `{spec.name}`; first: "
                f"row {first['row_number']}: {first['reason']}"
            )
        frame = checked.valid
    else:
        frame = frame.select(spec.columns)
    if (
        _key_kept_by_scalefit(spec)
        and frame.select(pl.struct(spec.key).is_duplicated().any()).item()
    ):
        # No PRIMARY KEY would catch a key repeated within the frame.
        key = frame.filter(pl.struct(spec.key).is_duplicated()).select(spec.key).row(0)
        raise StoreError(f"rows for `{spec.name}` repeat the key {spec.key} = {key}")
    return frame


def _insert(con: duckdb.DuckDBPyConnection, spec: TableSpec, frame: pl.DataFrame) -> None:
    """Insert ``frame`` into ``spec``'s table by its policy: rows with a key already there
    replace those rows (an upsert), every other row is appended."""
    name = f"_incoming_{spec.name}"
    target = _ident(spec.name)
    cols = ", ".join(_ident(c) for c in spec.columns)
    verb = "INSERT"
    if _key_kept_by_scalefit(spec):
        match = " AND ".join(
            f"{target}.{_ident(k)} IS NOT DISTINCT FROM {name}.{_ident(k)}" for k in spec.key
        )
        run_on_frame(con, frame, name, f"DELETE FROM {target} USING {name} WHERE {match}")
    elif spec.policy == "upsert":
        verb = "INSERT OR REPLACE"
    run_on_frame(con, frame, name, f"{verb} INTO {target} ({cols}) SELECT {cols} FROM {name}")


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
