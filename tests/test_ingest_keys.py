"""``observations`` keeps its key ``(run_id, metric, step)`` unique through every write path.

The DuckDB table has no PRIMARY KEY (its index cost as much as reading the data; see
benchmarks/RESULTS.md): scalefit's writes keep the key. Each test here would fail if one of
them let a duplicate in, or let an earlier write win over a later one. The same paths run on
a database made before the key left the DDL (with the PRIMARY KEY still in place).

Real files, real DuckDB files; small, so that they stay fast.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import duckdb
import polars as pl
import pytest
from ingest_files import rows

from scalefit import store
from scalefit.errors import StoreError
from scalefit.load.logs import ingest_paths
from scalefit.schemas import TABLES

Key = tuple[str, str, int]


def _old_database(path: Path) -> None:
    """A store as scalefit made it while ``observations`` had a PRIMARY KEY."""
    con = duckdb.connect(str(path))
    try:
        old = dataclasses.replace(TABLES["observations"], enforce_key_in_db=True)
        for stmt in store.ddl(old):
            con.execute(stmt)
    finally:
        con.close()
    with store.connect(path):
        pass


def _primary_keys(db: Path) -> list[str]:
    return [
        r[0]
        for r in rows(
            db,
            "SELECT table_name FROM duckdb_constraints() "
            "WHERE constraint_type = 'PRIMARY KEY' ORDER BY 1",
        )
    ]


@pytest.fixture(params=["new", "old"])
def store_db(request: pytest.FixtureRequest, db_path: Path) -> tuple[Path, bool]:
    """A fresh store, or one made with the old PRIMARY KEY on ``observations`` (True)."""
    old = request.param == "old"
    if old:
        _old_database(db_path)
        assert "observations" in _primary_keys(db_path)
    else:
        with store.connect(db_path):
            pass
        assert "observations" not in _primary_keys(db_path)
        assert "runs" in _primary_keys(db_path)  # the other keys stay DuckDB's
    return db_path, old


class _Expected:
    """What ``observations`` must hold: per key, the value of the latest write, and the file
    it came from (a changed file replaces only its own rows)."""

    def __init__(self) -> None:
        self.rows: dict[Key, tuple[float, str]] = {}

    def ingest(self, file: str, data: list[tuple[str, str, int, float]], *, replace: bool) -> None:
        if replace:
            self.rows = {k: v for k, v in self.rows.items() if v[1] != file}
        for run_id, metric, step, value in data:  # in file order: the last row wins
            self.rows[(run_id, metric, step)] = (value, file)

    def check(self, db: Path) -> None:
        (n, distinct) = rows(
            db, "SELECT count(*), count(DISTINCT (run_id, metric, step)) FROM observations"
        )[0]
        assert n == distinct, f"{n - distinct} duplicated key(s) in observations"
        got = {
            (r, m, s): v
            for r, m, s, v in rows(db, "SELECT run_id, metric, step, value FROM observations")
        }
        assert got == {k: v for k, (v, _) in self.rows.items()}


def _write_log(path: Path, data: list[tuple[str, str, int, float]]) -> Path:
    """A long CSV with a `loss` and an `eval_loss` column (empty where not logged)."""
    lines = ["run_id,step,loss,eval_loss"]
    for run_id, metric, step, value in data:
        cells = [str(value), ""] if metric == "loss" else ["", str(value)]
        lines.append(f"{run_id},{step},{','.join(cells)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _curve(run_id: str, steps: range, offset: float, eval_every: int = 5) -> list:
    out = []
    for s in steps:
        out.append((run_id, "loss", s, round(4.0 - s / 100 + offset, 4)))
        if s % eval_every == 0:
            out.append((run_id, "eval_loss", s, round(4.1 - s / 100 + offset, 4)))
    return out


def test_every_ingest_path_keeps_the_key_and_the_later_ingest_wins(
    store_db: tuple[Path, bool], tmp_path: Path
) -> None:
    (db, old), expected = store_db, _Expected()
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"

    # A fresh ingest: two runs, two metrics.
    first = _curve("r1", range(1, 31), 0.0) + _curve("r2", range(1, 11), 0.0)
    (info,) = ingest_paths(db, [_write_log(a, first)], params=1e6)
    assert (info.mode, info.rows_rejected) == ("new", 0)
    expected.ingest("a", first, replace=False)
    expected.check(db)

    # The log grows; the run was resumed from step 26, so steps 26-30 are logged again.
    grown = _curve("r1", range(26, 41), 0.5)
    with a.open("a") as fh:
        for run_id, metric, step, value in grown:
            cells = [str(value), ""] if metric == "loss" else ["", str(value)]
            fh.write(f"{run_id},{step},{','.join(cells)}\n")
    (info,) = ingest_paths(db, [a], params=1e6)
    assert (info.mode, info.rows_ok) == ("appended", len(grown))
    expected.ingest("a", grown, replace=False)
    expected.check(db)

    # Another file logs overlapping keys of r1 (and a new run): the later ingest wins.
    other = _curve("r1", range(20, 51), 1.0) + _curve("r3", range(1, 6), 1.0)
    (info,) = ingest_paths(db, [_write_log(b, other)], params=1e6)
    assert info.mode == "new"
    expected.ingest("b", other, replace=False)
    expected.check(db)

    # The first file changes: its rows are replaced, and it now wins on the keys it shares.
    changed = _curve("r1", range(1, 26), 2.0) + _curve("r2", range(1, 6), 2.0)
    (info,) = ingest_paths(db, [_write_log(a, changed)], params=1e6)
    assert info.mode == "replaced"
    expected.ingest("a", changed, replace=True)
    expected.check(db)

    # Unchanged: skipped, nothing written.
    (info,) = ingest_paths(db, [b], params=1e6)
    assert info.status == "unchanged"
    expected.check(db)

    # The same bytes under other settings are read again (replaced), and win again.
    (info,) = ingest_paths(db, [b], params=2e6)
    assert info.mode == "replaced"
    expected.ingest("b", other, replace=True)
    expected.check(db)

    # A file that logs a key twice: its last row wins, within the file and over the store.
    twice = [("r1", "loss", 3, 9.0), ("r2", "loss", 2, 9.5), ("r1", "loss", 3, 8.0)]
    (info,) = ingest_paths(db, [_write_log(tmp_path / "c.csv", twice)], params=1e6)
    assert (info.rows_ok, info.rows_rejected) == (2, 1)
    expected.ingest("c", twice, replace=False)
    expected.check(db)

    # store.write's upsert of observations (as the curated and upstream loaders use it).
    upsert = [("r1", "loss", 3, 7.0), ("r3", "eval_loss", 5, 6.5), ("r9", "loss", 1, 5.0)]
    with store.connect(db) as con:
        store.write(
            con,
            "observations",
            pl.DataFrame(upsert, schema=["run_id", "metric", "step", "value"], orient="row"),
        )
    expected.ingest("write", upsert, replace=False)
    expected.check(db)
    # An old database keeps its PRIMARY KEY (left in place, not migrated): still correct.
    assert ("observations" in _primary_keys(db)) == old


def test_store_write_upsert_keeps_the_key_without_a_primary_key(db_path: Path) -> None:
    def frame(data: list) -> pl.DataFrame:
        return pl.DataFrame(data, schema=["run_id", "metric", "step", "value"], orient="row")

    with store.connect(db_path) as con:
        store.write(con, "observations", frame([("r", "loss", 1, 3.0), ("r", "loss", 2, 2.0)]))
        store.write(con, "observations", frame([("r", "loss", 2, 2.5), ("r", "loss", 3, 1.5)]))
        got = store.run(con, "SELECT step, value FROM observations ORDER BY step")
        assert got == [(1, 3.0), (2, 2.5), (3, 1.5)]
        # A key repeated within one frame is refused, with or without validation, and
        # nothing of that frame is written.
        twice = frame([("r", "loss", 4, 1.0), ("r", "loss", 4, 1.1)])
        with pytest.raises(StoreError, match="duplicate key"):
            store.write(con, "observations", twice)
        with pytest.raises(StoreError, match="repeat the key"):
            store.write(
                con,
                "observations",
                twice.with_columns(
                    pl.col("step").cast(pl.Int64),
                    pl.lit(None, pl.Float64).alias("tokens"),
                    pl.lit(None, pl.Float64).alias("flops"),
                    pl.lit(None, pl.String).alias("ingest_id"),
                ),
                validate=False,
            )
        assert store.run(con, "SELECT count(*) FROM observations") == [(3,)]


def test_store_write_is_atomic_on_its_own(db_path: Path) -> None:
    """Delete-then-insert is two statements: outside a transaction, write opens its own, so
    a failed insert leaves the deleted rows in place."""

    def frame(value: object) -> pl.DataFrame:
        return pl.DataFrame({"run_id": ["r"], "metric": ["loss"], "step": [1], "value": [value]})

    with store.connect(db_path) as con:
        store.write(con, "observations", frame(3.0))
        bad = frame(None).with_columns(
            pl.lit(None, pl.Float64).alias("value"),
            pl.lit(None, pl.Float64).alias("tokens"),
            pl.lit(None, pl.Float64).alias("flops"),
            pl.lit(None, pl.String).alias("ingest_id"),
        )
        with pytest.raises(duckdb.ConstraintException):  # value is NOT NULL
            store.write(con, "observations", bad, validate=False)
        assert store.run(con, "SELECT step, value FROM observations") == [(1, 3.0)]


# ------------------------------------------------------------------ one pass, or two


def _ingest_with_chunks(
    tmp_path: Path, name: str, text: str, chunk_rows: int, monkeypatch: pytest.MonkeyPatch
) -> tuple[tuple[int, int, int], dict[str, list[tuple]]]:
    """Ingest ``text`` as a CSV read in chunks of ``chunk_rows``: counts, and the tables."""
    from scalefit.load import readers as _readers

    monkeypatch.setattr(_readers, "CHUNK_ROWS", chunk_rows)
    folder = tmp_path / f"{name}-{chunk_rows}"
    folder.mkdir()
    log = folder / "log.csv"
    log.write_text(text)
    db = folder / "db.duckdb"
    (info,) = ingest_paths(db, [log])
    tables = {
        t: rows(db, f"SELECT * EXCLUDE (ingest_id) FROM {t} ORDER BY ALL")
        for t in ("observations", "runs")
    }
    tables["quarantine"] = rows(db, "SELECT row_number, reason FROM quarantine ORDER BY ALL")
    return (info.rows_in, info.rows_ok, info.rows_rejected), tables


@pytest.mark.parametrize(
    "name, text, passes",
    [
        # Rows arrive in order, keys unique: one pass, written chunk by chunk.
        ("plain", "run_id,step,loss,params\nr,1,4.0,1e6\nr,2,3.9,1e6\nr,3,3.8,1e6\n", 1),
        # `params` shows up only after the run's first rows, then differs for another run:
        # the first pass resolved the runs without those values, so it starts again.
        (
            "late-params",
            "run_id,step,loss,params\nr,1,4.0,\nr,2,3.9,\nr,3,3.8,1e6\n"
            "s,1,4.0,1e6\ns,2,3.9,1e6\ns,3,3.8,2e6\n",
            2,
        ),
        # A step logged again after rows were written: read again with a stage, so that
        # the superseded row is quarantined with its row number.
        ("relogged", "run_id,step,loss,params\nr,1,4.0,1e6\nr,2,3.9,1e6\nr,1,3.5,1e6\n", 2),
        # A run fails its schema (params <= 0), found when the runs are validated at the
        # end of the pass: read again, rejecting that run's rows as they come.
        (
            "bad-run",
            "run_id,step,loss,params\nr,1,4.0,1e6\nr,2,3.9,1e6\nq,1,4.0,-1\nq,2,3.9,-1\n",
            2,
        ),
    ],
)
def test_the_single_pass_gives_what_the_careful_pass_gives(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    name: str,
    text: str,
    passes: int,
) -> None:
    """Small chunks make the one pass meet what it cannot handle mid-file; one chunk for the
    whole file is the reference. Same counts, rows, runs and quarantine either way."""
    with caplog.at_level("INFO", logger="scalefit.load"):
        small = _ingest_with_chunks(tmp_path, name, text, 2, monkeypatch)
    restarts = [r for r in caplog.records if "reading again" in r.getMessage()]
    assert len(restarts) == passes - 1
    whole = _ingest_with_chunks(tmp_path, name, text, 10_000, monkeypatch)
    assert small == whole
    if name == "late-params":
        assert [r[0] for r in small[1]["runs"]] == ["r"]  # s differs in params: rejected
        assert small[1]["runs"][0][2] == 1e6
    if name == "bad-run":
        assert small[0] == (4, 2, 2)
        assert all("run `q`" in reason for _, reason in small[1]["quarantine"])


def test_a_failure_in_the_writer_thread_fails_the_file_and_writes_nothing(
    tmp_path: Path, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks are written by a thread of their own while the next is validated: an error
    there reaches the ingest, which rolls the file back and records the failure."""
    from scalefit.load import log_sink
    from scalefit.load import readers as _readers

    monkeypatch.setattr(_readers, "CHUNK_ROWS", 2)
    real, calls = log_sink._Sink._insert, []

    def failing(self: object, valid: pl.DataFrame) -> None:
        calls.append(valid.height)
        if len(calls) == 2:
            raise duckdb.IOException("disk full (simulated)")
        real(self, valid)

    monkeypatch.setattr(log_sink._Sink, "_insert", failing)
    log = _write_log(tmp_path / "log.csv", _curve("r", range(1, 8), 0.0, eval_every=100))
    (info,) = ingest_paths(db_path, [log], params=1e6)
    assert (info.status, info.rows_ok) == ("failed", 0)
    assert "disk full (simulated)" in info.message
    assert rows(db_path, "SELECT count(*) FROM observations") == [(0,)]
    assert rows(db_path, "SELECT count(*) FROM runs") == [(0,)]
    assert rows(db_path, "SELECT status FROM ingests") == [("failed",)]


def test_the_ingest_bounds_duckdb_memory_on_connections_it_opens(db_path: Path) -> None:
    from scalefit.load import logs as ingest

    limit = "memory_limit"
    reference = duckdb.connect()
    reference.execute(f"SET {limit} = '{ingest.MEMORY_LIMIT}'")
    expected = reference.execute(f"SELECT current_setting('{limit}')").fetchall()
    reference.close()
    with ingest._connection(db_path) as con:
        assert store.run(con, f"SELECT current_setting('{limit}')") == expected
    with store.connect(db_path) as con:  # a caller's connection keeps its settings
        before = store.run(con, f"SELECT current_setting('{limit}')")
        with ingest._connection(con) as same:
            assert store.run(same, f"SELECT current_setting('{limit}')") == before
