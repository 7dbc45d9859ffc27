"""An old store opened by today's code keeps working: ``fits.procedure`` is filled from the old
``fits.form``, the form becomes the law type, fit ids stay, every command still reads it.

The store is ``tests/fixtures/store_v0_1.duckdb.gz``, written by scalefit at commit dce417e
(before ``fits.procedure`` existed) with every procedure its CLI could save; how it was made:
``tests/fixtures/make_store_v0_1.py``.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import duckdb
import polars as pl
import pytest
from typer.testing import CliRunner

from scalefit import pipeline, store
from scalefit.cli import app
from scalefit.load.validate import validate_frame
from scalefit.schemas import PROCEDURES, TABLES

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "store_v0_1.duckdb.gz"

OLD_FORMS = {
    "chinchilla",
    "isoflop",
    "kaplan_nd",
    "kaplan_n",
    "kaplan_c",
    "data_constrained",
    "envelope",
    "overtraining",
}
"""``fits.form`` values of the fixture: one fit of each, as the old code wrote them."""


@pytest.fixture
def old_store(tmp_path: Path) -> Path:
    """A copy of the fixture store, as the old code left it."""
    db = tmp_path / "old.duckdb"
    with gzip.open(FIXTURE, "rb") as src, db.open("wb") as dst:
        shutil.copyfileobj(src, dst)
    return db


def raw(db: Path, sql: str) -> list[tuple]:
    """Rows of ``sql`` read with plain DuckDB, read-only: what is in the file, untouched."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def contents(db: Path) -> dict[str, list[tuple]]:
    """Every table's rows, sorted, and the layout of every column."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        out = {
            name: con.execute(f'SELECT * FROM "{name}" ORDER BY ALL').fetchall() for name in TABLES
        }
        out["_layout"] = layout(con)
        return out
    finally:
        con.close()


def layout(con: duckdb.DuckDBPyConnection) -> list[tuple]:
    """Every table's constraints, every column's place, type and nullability, and the
    comments of ``fits`` and its columns (those of other tables stay as the file was made:
    a schema's newer description does not reach an old store)."""
    tables = con.execute(
        "SELECT table_name, comment FROM duckdb_tables() WHERE schema_name = 'main' "
        "AND table_name = 'fits'"
    ).fetchall()
    constraints = con.execute(
        "SELECT table_name, constraint_type, constraint_column_names FROM duckdb_constraints() "
        "WHERE schema_name = 'main' ORDER BY ALL"
    ).fetchall()
    return (
        tables
        + constraints
        + con.execute(
            "SELECT table_name, column_index, column_name, data_type, is_nullable, "
            "CASE WHEN table_name = 'fits' THEN comment END "
            "FROM duckdb_columns() WHERE schema_name = 'main' AND table_name IN "
            "(SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main') "
            "ORDER BY table_name, column_index"
        ).fetchall()
    )


def test_the_fixture_is_the_old_layout(old_store: Path) -> None:
    """The fixture holds what the migration is for (if this fails, the fixture was remade
    with newer code): no `procedure`, procedures in `fits.form`, every procedure saved."""
    columns = {
        c
        for (c,) in raw(
            old_store, "SELECT column_name FROM duckdb_columns() WHERE table_name = 'fits'"
        )
    }
    assert "procedure" not in columns and "input" in columns
    forms = [f for (f,) in raw(old_store, "SELECT form FROM fits")]
    assert sorted(forms) == sorted(OLD_FORMS)
    counts = {t: raw(old_store, f'SELECT count(*) FROM "{t}"')[0][0] for t in TABLES}
    for table in ("models", "laws", "runs", "fit_samples", "fit_points", "comparison_results"):
        assert counts[table] > 0, table


def test_opening_migrates_fits_and_keeps_every_id(old_store: Path) -> None:
    before = dict(raw(old_store, "SELECT fit_id, form FROM fits"))
    counts = {t: raw(old_store, f'SELECT count(*) FROM "{t}"')[0][0] for t in TABLES}
    old_laws = raw(old_store, "SELECT law_id, form, fit_id FROM laws ORDER BY law_id")
    with store.connect(old_store) as con:
        after = {r[0]: r[1:] for r in store.run(con, "SELECT fit_id, procedure, form FROM fits")}
        assert store.table_counts(con) == counts
    assert set(after) == set(before)  # fit ids stable
    for fit_id, old_form in before.items():
        if old_form in ("isoflop", "envelope"):
            assert after[fit_id] == (old_form, "allocation"), fit_id
        else:
            assert after[fit_id] == ("parametric", old_form), fit_id
    # the fitted laws already had their law type; every reference still resolves
    assert raw(old_store, "SELECT law_id, form, fit_id FROM laws ORDER BY law_id") == old_laws
    for table in ("laws", "fit_samples", "fit_points"):
        dangling = raw(
            old_store,
            f"SELECT count(*) FROM {table} WHERE fit_id IS NOT NULL "
            "AND fit_id NOT IN (SELECT fit_id FROM fits)",
        )
        assert dangling == [(0,)], table
    # each fit's form is its law's
    mismatched = raw(
        old_store, "SELECT f.fit_id FROM fits f JOIN laws l USING (fit_id) WHERE f.form <> l.form"
    )
    assert mismatched == []


def test_a_migrated_store_has_a_new_stores_layout_and_valid_rows(
    old_store: Path, tmp_path: Path
) -> None:
    fresh = tmp_path / "fresh.duckdb"
    with store.connect(fresh):
        pass
    with store.connect(old_store):
        pass
    con = duckdb.connect(str(fresh), read_only=True)
    try:
        want = layout(con)
    finally:
        con.close()
    assert contents(old_store)["_layout"] == want
    with store.connect(old_store, read_only=True) as con:
        for name, spec in TABLES.items():
            frame = store.query(con, f'SELECT * FROM "{name}"')
            checked = validate_frame(frame, spec.schema)
            assert checked.ok, (name, checked.failures.head(3).to_dicts())
        assert store.query(con, "SELECT * FROM comparisons").height > 0  # the view
        procedures = store.query(con, "SELECT DISTINCT procedure FROM fits")["procedure"]
    assert set(procedures) == set(PROCEDURES)


def test_opening_adds_runs_schedule_unknown_for_old_runs(old_store: Path) -> None:
    """``runs.schedule`` (issue 15) did not exist: it is added, null (unknown) for every
    stored run, and the runs keep every other value."""
    old_columns = [
        c
        for (c,) in raw(
            old_store, "SELECT column_name FROM duckdb_columns() WHERE table_name = 'runs'"
        )
    ]
    assert "schedule" not in old_columns
    before = raw(old_store, "SELECT * FROM runs ORDER BY run_id")
    with store.connect(old_store) as con:
        after = store.run(
            con, f"SELECT {', '.join(old_columns)}, schedule FROM runs ORDER BY run_id"
        )
        comment = store.run(
            con,
            "SELECT comment FROM duckdb_columns() WHERE table_name = 'runs' "
            "AND column_name = 'schedule'",
        )
    assert [r[:-1] for r in after] == before
    assert {r[-1] for r in after} == {None}
    assert "cosine" in comment[0][0]


def test_migrating_twice_changes_nothing(old_store: Path) -> None:
    with store.connect(old_store):
        pass
    once = contents(old_store)
    with store.connect(old_store):
        pass
    assert contents(old_store) == once


def test_a_failed_migration_leaves_the_old_store_as_it_was(
    old_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One transaction: columns, rows and constraint land together or not at all."""
    before = contents(old_store)
    real = store.run

    def failing(con, sql, params=None):
        if sql.startswith('ALTER TABLE "_fits_migrating" RENAME'):
            raise duckdb.IOException("disk full (simulated)")
        return real(con, sql, params)

    monkeypatch.setattr(store, "run", failing)
    with pytest.raises(duckdb.IOException), store.connect(old_store):
        pass
    monkeypatch.undo()
    assert contents(old_store) == before


def test_read_only_commands_work_on_an_old_store(old_store: Path) -> None:
    """`scalefit sql` reads on a locked read-only connection: the store is upgraded first."""
    result = CliRunner().invoke(
        app,
        [
            "sql",
            "select procedure, form from fits order by all",
            "--db",
            str(old_store),
            "--format",
            "json",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert {(r["procedure"], r["form"]) for r in rows} >= {
        ("isoflop", "allocation"),
        ("envelope", "allocation"),
        ("parametric", "chinchilla"),
        ("parametric", "data_constrained"),
    }


def test_a_foreign_duckdb_file_is_not_written_on_a_read(tmp_path: Path) -> None:
    other = tmp_path / "other.duckdb"
    con = duckdb.connect(str(other))
    con.execute("CREATE TABLE fits (x INTEGER)")
    con.close()
    with store.connect(other, read_only=True) as con:
        tables = store.run(con, "SELECT table_name FROM duckdb_tables()")
    assert tables == [("fits",)]


def test_fitting_and_reporting_on_top_of_an_old_store(old_store: Path, tmp_path: Path) -> None:
    """Refits of the old fits' data land on the old fit ids; a new fit adds a row; the
    reports are written from the migrated store."""
    old_ids = dict(raw(old_store, "SELECT form, fit_id FROM fits"))
    n_fits = len(old_ids)
    # the refresh's IsoFLOP fit: same data and settings, so nothing new to save
    info = pipeline.fit_project(old_store, "sweep", "isoflop", n_bootstrap=20, seed=0)
    assert (info.status, info.fit_id) == ("unchanged", old_ids["isoflop"]), info
    runner = CliRunner()
    sweep = ["--where", "project = 'sweep'", "--db", str(old_store), "--seed", "0", "--json"]
    result = runner.invoke(app, ["fit", "--law", "kaplan-c", "--bootstrap", "20", *sweep])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["saved"] and out["fit_id"] == old_ids["kaplan_c"]
    result = runner.invoke(app, ["fit", "--law", "kaplan-d", "--bootstrap", "0", *sweep])
    assert result.exit_code == 0, result.output
    new_id = json.loads(result.stdout)["fit_id"]
    assert new_id not in old_ids.values()
    with store.connect(old_store, read_only=True) as con:
        fits = store.query(con, "SELECT fit_id, procedure, form FROM fits")
    assert fits.height == n_fits + 1
    assert fits.filter(pl.col("fit_id") == new_id).rows() == [(new_id, "parametric", "kaplan_d")]
    assert fits.filter(pl.col("fit_id") == old_ids["kaplan_c"]).rows() == [
        (old_ids["kaplan_c"], "parametric", "kaplan_c")
    ]
    out_dir = tmp_path / "reports"
    result = runner.invoke(app, ["report", "--db", str(old_store), "--out", str(out_dir)])
    assert result.exit_code == 0, result.output
    fit_params = pl.read_parquet(out_dir / "fit_parameters.parquet")
    assert set(fit_params["procedure"]) == set(PROCEDURES)
    assert set(fit_params["fit_id"]) == set(fits["fit_id"])
    reported = pl.read_parquet(out_dir / "fits.parquet")
    assert reported.filter(pl.col("procedure") == "isoflop")["form"].to_list() == ["allocation"]
    pngs = {p.name for p in out_dir.glob("*.png")}
    assert {"law_fit_fitted_sweep_isoflop.png", "law_fit_fitted_sweep_chinchilla.png"} <= pngs
    assert f"law_fit_{old_ids['envelope']}.png" not in pngs  # its input file is gone


def test_fit_points_are_rekeyed_to_hold_checkpoints(old_store: Path) -> None:
    """The old `fit_points` key (fit_id, run_id) would fold a fit's checkpoints into one row:
    opening rebuilds it with today's key, every row kept, and then two steps of a run fit."""
    pk = (
        "SELECT constraint_column_names FROM duckdb_constraints() WHERE table_name = "
        "'fit_points' AND constraint_type = 'PRIMARY KEY'"
    )
    assert raw(old_store, pk) == [(["fit_id", "run_id"],)]
    rows = sorted(raw(old_store, "SELECT * FROM fit_points"))
    with store.connect(old_store) as con:
        assert sorted(store.run(con, "SELECT * FROM fit_points")) == rows
        fit_id, run_id, step, metric = rows[0]
        extra = pl.DataFrame({"fit_id": [fit_id], "run_id": [run_id], "step": [step + 1]})
        store.write(con, "fit_points", extra.with_columns(pl.lit(metric).alias("metric")))
        kept = store.run(con, "SELECT count(*) FROM fit_points WHERE fit_id = ?", [fit_id])
    assert raw(old_store, pk) == [(["fit_id", "run_id", "metric", "step"],)]
    assert kept[0][0] == sum(1 for r in rows if r[0] == fit_id) + 1
