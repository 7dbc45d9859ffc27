"""Bulk loads through a stage: the staging table and the upsert SQL of a table, generated
from its schema (``schemas/``), so that no loader writes a table's columns by hand."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from .errors import StoreError
from .schemas import TABLES
from .store import _ident, _sql_string, column_types


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
