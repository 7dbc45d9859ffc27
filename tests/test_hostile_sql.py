"""Hostile input at every entry point of user-written SQL: `scalefit sql`, `fit --where`,
`[fit] where` (the refresh pipeline's fits), `--input` file names, and fits saved by older
versions. Each payload must be refused with one line (no traceback), and the store and the
file system must be byte-for-byte what they were before.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from scalefit import pipeline, report, store, user_sql
from scalefit.cli import app
from scalefit.errors import QueryError
from scalefit.load import logs as ingest

TRUTH = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}


def _sweep_csv(path: Path) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    for i, n in enumerate(np.logspace(7.5, 9.5, 5)):
        for j, d in enumerate(np.logspace(8.5, 10.5, 4)):
            clean = TRUTH["E"] + TRUTH["A"] / n ** TRUTH["alpha"] + TRUTH["B"] / d ** TRUTH["beta"]
            loss = clean * np.exp(rng.normal(0, 0.01))
            rows.append({"run_id": f"r{i}_{j}", "step": 1, "tokens": d, "loss": loss, "params": n})
    rows.append({"run_id": "bad", "step": 1, "tokens": 1e9, "loss": -1.0, "params": 1e8})
    pl.DataFrame(rows).write_csv(path)
    return path


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with runs, observations, a quarantined row and a saved fit, plus another
    scalefit database beside it (what `COPY ... TO 'other.duckdb'` once destroyed)."""
    root = tmp_path_factory.mktemp("template")
    db = root / "store.duckdb"
    ingest.ingest_paths(db, [_sweep_csv(root / "sweep.csv")], project="sweep")
    info = pipeline.fit_project(db, "sweep", "chinchilla", n_bootstrap=0)
    assert info.status == "fitted", info.message
    pipeline.refresh_comparisons(db)
    with store.connect(root / "other.duckdb"):
        pass
    with user_sql.connect_locked(db) as con:
        assert store.table_counts(con)["quarantine"] == 1
    return root


@pytest.fixture
def work(template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh copy of the template as the working directory (relative paths land here)."""
    root = tmp_path / "work"
    root.mkdir()
    for item in template.iterdir():
        if item.is_file():
            (root / item.name).write_bytes(item.read_bytes())
    monkeypatch.chdir(root)
    yield root


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` (relative path) and the sha256 of its bytes."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def assert_refused(result, snap: dict[str, str], root: Path, *words: str) -> str:
    """Exit status 1, one line on stderr starting `error:`, no traceback, nothing changed."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word.lower() in lines[0].lower(), lines[0]
    assert snapshot(root) == snap, "the store or the file system changed"
    return lines[0]


runner = CliRunner()

HOSTILE_SQL = [
    # the measured payloads
    ("COPY (SELECT 42) TO 'x.csv'", "COPY"),
    ("COPY (SELECT 42) TO 'other.duckdb' (FORMAT csv)", "COPY"),
    ("EXPORT DATABASE 'exported'", "EXPORT"),
    ("INSTALL httpfs", "extensions"),
    ("LOAD httpfs", "extensions"),
    ("FORCE INSTALL httpfs FROM 'http://127.0.0.1:9/'", "extensions"),
    # files, the network, other databases
    ("COPY runs TO 'runs.parquet' (FORMAT parquet)", "COPY"),
    ("COPY runs FROM 'sweep.csv'", "COPY"),
    ("IMPORT DATABASE 'exported'", "refused"),
    ("ATTACH 'other.duckdb' AS other", "ATTACH"),
    ("ATTACH ':memory:' AS scratch", "ATTACH"),
    ("ATTACH 'new.duckdb' AS new", "ATTACH"),
    ("DETACH store", "DETACH"),
    ("USE other", "refused"),
    ("SELECT * FROM read_csv('sweep.csv')", "refused"),
    ("SELECT * FROM read_csv('/etc/passwd', sep = ':')", "refused"),
    ("SELECT * FROM read_parquet('*.parquet')", "refused"),
    ("SELECT * FROM glob('*')", "refused"),
    ("SELECT * FROM glob('/**/*.duckdb')", "refused"),
    ("SELECT * FROM read_text('other.duckdb')", "refused"),
    ("SELECT * FROM read_blob('*')", "refused"),
    ("SELECT * FROM 'sweep.csv'", ""),
    ("SELECT * FROM sniff_csv('sweep.csv')", "refused"),
    ("SELECT * FROM read_csv('http://127.0.0.1:9/x.csv')", "refused"),
    ("SELECT * FROM query('COPY (SELECT 1) TO ''q.csv''')", ""),
    ("CREATE SECRET s (TYPE s3, KEY_ID 'a', SECRET 'b')", "CREATE"),
    ("CREATE PERSISTENT SECRET s (TYPE s3, KEY_ID 'a', SECRET 'b')", "CREATE"),
    # settings
    ("PRAGMA enable_profiling", "PRAGMA"),
    ("PRAGMA database_list", "PRAGMA"),
    ("SET enable_external_access = true", "SET"),
    ("SET lock_configuration = false", "SET"),
    ("RESET lock_configuration", "SET"),
    ("SET VARIABLE x = 1", "SET"),
    ("SET temp_directory = 'spill'", "SET"),
    ("CALL pragma_version()", "CALL"),
    ("CHECKPOINT", "refused"),
    ("FORCE CHECKPOINT", "refused"),
    ("VACUUM", "refused"),
    ("BEGIN TRANSACTION", "refused"),
    # writes
    ("CREATE TABLE t (a INTEGER)", "CREATE"),
    ("CREATE TEMP TABLE t AS SELECT 1", "CREATE"),
    ("CREATE VIEW v AS SELECT 1", "CREATE"),
    ("CREATE MACRO m(a) AS a", "CREATE"),
    ("DROP TABLE quarantine", "DROP"),
    ("DELETE FROM quarantine", "DELETE"),
    ("UPDATE runs SET params = 0", "UPDATE"),
    ("INSERT INTO quarantine SELECT * FROM quarantine", "INSERT"),
    ("ALTER TABLE runs ADD COLUMN x INTEGER", "ALTER"),
    ("WITH d AS (DELETE FROM quarantine RETURNING *) SELECT * FROM d", "refused"),
    ("PIVOT runs ON project", "refused"),
    # several statements, or none
    ("SELECT 1; DROP TABLE quarantine", "2 statements"),
    ("SELECT 1; SELECT 2", "2 statements"),
    ("SELECT 1; COPY (SELECT 42) TO 'x.csv'", "2 statements"),
    ("", "no statement"),
    (";", "no statement"),
    ("-- only a comment", "no statement"),
    ("/* only a comment */", "no statement"),
    # quoting tricks
    ("SELECT 'a'; COPY (SELECT 42) TO 'x.csv' --'", "2 statements"),
    ("SELECT $$x$$; DROP TABLE quarantine; --", "2 statements"),
    ('SELECT 1 AS "a""; DROP TABLE quarantine; --"; DELETE FROM runs', "2 statements"),
]


@pytest.mark.parametrize(("query", "word"), HOSTILE_SQL)
def test_sql_refuses_with_one_line_and_changes_nothing(work: Path, query: str, word: str) -> None:
    snap = snapshot(work)
    result = runner.invoke(app, ["sql", "--db", "store.duckdb", "--", query])
    assert_refused(result, snap, work, word)


def test_sql_still_answers_queries_on_the_locked_connection(work: Path) -> None:
    snap = snapshot(work)
    result = runner.invoke(
        app, ["sql", "select count(*) as n from quarantine", "--db", "store.duckdb", "-f", "json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [{"n": 1}]
    assert snapshot(work) == snap


def test_sql_through_a_real_process(work: Path) -> None:
    """The installed entry point, not only the in-process runner."""
    snap = snapshot(work)
    for query in ("COPY (SELECT 42) TO 'other.duckdb'", "INSTALL httpfs"):
        proc = subprocess.run(
            [sys.executable, "-m", "scalefit", "sql", query, "--db", "store.duckdb"],
            capture_output=True,
            text=True,
            cwd=work,
            env={**os.environ, "COLUMNS": "200"},
            timeout=120,
        )
        assert proc.returncode == 1, proc.stderr
        assert "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "refused" in proc.stderr
    assert snapshot(work) == snap


def test_the_locked_connection_has_its_settings_and_cannot_change_them(work: Path) -> None:
    with user_sql.connect_locked("store.duckdb") as con:
        values = dict(
            con.execute(
                "SELECT name, value FROM duckdb_settings() WHERE name IN "
                "(SELECT unnest(?::VARCHAR[]))",
                [list(user_sql.LOCKED_SETTINGS)],
            ).fetchall()
        )
        assert values == {k: str(v).lower() for k, v in user_sql.LOCKED_SETTINGS.items()}
        assert user_sql.is_locked(con)
        # Below scalefit's statement check: DuckDB itself refuses, on this connection.
        for sql in (
            "SET enable_external_access = true",
            "SET autoload_known_extensions = true",
            "SET lock_configuration = false",
            "SET temp_directory = 'spill'",
        ):
            with pytest.raises(duckdb.InvalidInputException, match="locked"):
                con.execute(sql)
        with pytest.raises(duckdb.PermissionException):
            con.execute("COPY (SELECT 42) TO 'x.csv'")
        with pytest.raises(duckdb.PermissionException):
            con.execute("SELECT * FROM read_csv('sweep.csv')")
        with pytest.raises(duckdb.PermissionException):
            con.execute("LOAD httpfs")
        with pytest.raises(duckdb.Error, match="read-only"):
            con.execute("DELETE FROM quarantine")
        secret_frame = pl.DataFrame({"a": [1]})  # noqa: F841 - what a replacement scan would read
        with pytest.raises(duckdb.CatalogException):
            con.execute("SELECT * FROM secret_frame")
    with store.connect("store.duckdb") as writable:
        with pytest.raises(Exception, match="connect_locked"):
            user_sql.user_query(writable, "select 1")
        with pytest.raises(Exception, match="connect_locked"):
            user_sql.run_ids_where(writable, "true")


HOSTILE_WHERE = [
    # the payload: closes the query's parentheses and appends statements
    ("true)) r USING (run_id); COPY (select 42) TO 'x.csv'; SELECT 'loss' AS metric --", ""),
    ("true; COPY (SELECT 42) TO 'x.csv'", "2 statements"),
    ("true; DROP TABLE quarantine", "2 statements"),
    ("true) OR (1=1", ""),
    ("project = 'sweep' UNION SELECT * FROM runs", "more than one boolean expression"),
    ("true ORDER BY 1", "more than one boolean expression"),
    ("true LIMIT 1", "more than one boolean expression"),
    ("true GROUP BY ALL", "more than one boolean expression"),
    ("run_id IN (SELECT run_id FROM observations)", "subquery"),
    ("EXISTS (SELECT * FROM read_csv('sweep.csv'))", "subquery"),
    ("project = (SELECT string_agg(reason, '') FROM quarantine)", "subquery"),
    ("read_text('other.duckdb') IS NOT NULL", ""),
    ("o.metric = 'eval_loss'", "not a column of `runs`"),
    ("value > 0", "not a column of `runs`"),
    ("project", "not a boolean"),
    ("1", "not a boolean"),
    ("count(*) > 0", "aggregate"),
    ("row_number() OVER () = 1", "window"),
    ("project = ?", "parameter"),
    ("project = 'it''s' ; DROP TABLE quarantine; --", "2 statements"),
    ("project = $$x$$; DROP TABLE quarantine", "2 statements"),
    ("\"project\" = 'a'; ATTACH 'other.duckdb'", "2 statements"),
    ("project = 'a' /* unterminated", "unterminated"),
    ("project = 'a", "unterminated"),
    # deep nesting (Python's and DuckDB's recursion limits)
    ("abs(" * 100 + "params" + ")" * 100 + " > 0", "nesting depth"),
    ("NOT " * 300 + "true", "nested too deeply"),
    ("abs(" * 1200 + "params" + ")" * 1200 + " > 0", "expression depth"),
]


@pytest.mark.parametrize(("predicate", "word"), HOSTILE_WHERE)
def test_fit_where_refuses_with_one_line_and_changes_nothing(
    work: Path, predicate: str, word: str
) -> None:
    snap = snapshot(work)
    result = runner.invoke(
        app,
        ["fit", "--db", "store.duckdb", "--bootstrap", "0", "--save", "--where", predicate],
    )
    line = assert_refused(result, snap, work, word)
    assert "predicate" in line


@pytest.mark.parametrize(("predicate", "word"), HOSTILE_WHERE)
def test_config_where_is_checked_before_use(work: Path, predicate: str, word: str) -> None:
    """`[fit] where` reaches pipeline.fit_projects / fit_project (what refresh runs)."""
    snap = snapshot(work)
    with pytest.raises(QueryError, match="predicate") as err:
        user_sql.check_predicate(predicate)
    assert "\n" not in str(err.value) and word.lower() in str(err.value).lower()
    with pytest.raises(QueryError):
        pipeline.fit_projects(Path("store.duckdb"), predicate)
    with pytest.raises(QueryError):
        pipeline.fit_project(Path("store.duckdb"), "sweep", "chinchilla", where=predicate)
    assert snapshot(work) == snap


def test_a_comment_in_where_only_ends_the_predicate(work: Path) -> None:
    """A quoting trick that parses is one predicate: nothing after `--` runs."""
    snap = snapshot(work)
    predicate = "project = 'nope' -- '; DROP TABLE quarantine"
    assert user_sql.check_predicate(predicate) == predicate
    result = runner.invoke(app, ["fit", "--where", predicate, "--db", "store.duckdb"])
    assert_refused(result, snap, work, "no observations")


def test_good_predicates_pass_and_select_by_id(work: Path) -> None:
    assert user_sql.check_predicate("  project = 'sweep' and params > 1e8 ") == (
        "project = 'sweep' and params > 1e8"
    )
    assert user_sql.check_predicate("") == ""
    with user_sql.connect_locked("store.duckdb") as con:
        assert user_sql.run_ids_where(con, "") is None
        ids = user_sql.run_ids_where(con, "runs.params > 1e9 AND lower(project) LIKE 'sw%'")
        expected = con.execute(
            "SELECT run_id FROM runs WHERE params > 1e9 ORDER BY run_id"
        ).fetchall()
    assert ids == [r[0] for r in expected] and 0 < len(ids) < 20


CRAFTED_NAMES = [
    "runs WHERE true) r USING (run_id); DROP TABLE quarantine; --.csv",
    "x'; DROP TABLE quarantine; --.csv",
    "x\"); COPY (SELECT 42) TO 'x.csv'; --.csv",
]


def test_a_crafted_input_file_name_is_data(work: Path) -> None:
    """Once planted `DROP TABLE quarantine` in every later report: now the file name is a
    value in the fit's JSON record, and reports read the file again only by path and hash."""
    with user_sql.connect_locked("store.duckdb") as con:
        points = store.query(
            con,
            "SELECT r.params, r.tokens, o.value AS loss FROM runs r JOIN observations o "
            "USING (run_id) WHERE o.metric = 'loss'",
        )
    for name in CRAFTED_NAMES:
        points.write_csv(work / name)
        args = ["fit", "--input", name, "--db", "store.duckdb", "--bootstrap", "0", "--save"]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        points = points.with_columns(loss=points["loss"] * 1.01)  # another fit id
    with user_sql.connect_locked("store.duckdb") as con:
        rows = con.execute(
            "SELECT input FROM fits WHERE input LIKE '%\"file\"%' ORDER BY created_at"
        ).fetchall()
    records = [json.loads(r[0]) for r in rows]
    assert sorted(r["path"] for r in records) == sorted(CRAFTED_NAMES)
    assert all(len(r["sha256"]) == 64 for r in records)
    db_before = hashlib.sha256((work / "store.duckdb").read_bytes()).hexdigest()
    for _ in range(2):  # every later report
        result = runner.invoke(app, ["report", "--db", "store.duckdb", "--out", "reports"])
        assert result.exit_code == 0, result.output
    assert hashlib.sha256((work / "store.duckdb").read_bytes()).hexdigest() == db_before
    assert not (work / "x.csv").exists()
    with user_sql.connect_locked("store.duckdb") as con:
        assert store.table_counts(con)["quarantine"] == 1


def test_old_fits_saved_as_sql_text_are_migrated_and_never_run(
    work: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A store written before fits recorded their input: `ensure_tables` adds the column
    and `fit_points`; the old SQL-text selection (here a planted statement) is not run."""
    con = duckdb.connect("store.duckdb")
    con.execute("ALTER TABLE fits DROP COLUMN input")
    con.execute("DROP TABLE fit_points")
    con.execute(
        "UPDATE fits SET selection = 'runs WHERE true) r USING (run_id); DROP TABLE quarantine; --'"
    )
    con.close()
    with store.connect("store.duckdb") as con:  # migrates on open
        columns = {r[0] for r in con.execute("DESCRIBE fits").fetchall()}
        assert "input" in columns
        assert store.table_counts(con)["fit_points"] == 0
    with caplog.at_level(logging.WARNING, logger="scalefit.report"):
        info = pipeline.write_reports(Path("store.duckdb"), Path("reports"))
    assert "fits.parquet" in info.files
    assert not any(name.startswith("law_fit_") for name in info.files)
    assert "no record of its points" in caplog.text
    with user_sql.connect_locked("store.duckdb") as con:
        assert store.table_counts(con)["quarantine"] == 1
    # The next scheduled refit of the same data records what the old fit lacked.
    again = pipeline.fit_project(Path("store.duckdb"), "sweep", "chinchilla", n_bootstrap=0)
    assert again.status == "fitted"
    with user_sql.connect_locked("store.duckdb") as con:
        fits = con.execute("SELECT fit_id, input FROM fits").fetchall()
        n_points = store.table_counts(con)["fit_points"]
    assert len(fits) == 1 and fits[0][0] == again.fit_id and fits[0][1] is not None
    assert n_points == 20


def test_reports_rebuild_a_fits_points_from_its_ids(work: Path) -> None:
    with user_sql.connect_locked("store.duckdb") as con:
        fit_id, record = con.execute("SELECT fit_id, input FROM fits").fetchall()[0]
        rebuilt = store.query(con, report.FIT_POINTS_SQL, [fit_id])
        fitted = store.query(con, "SELECT count(*) AS n FROM runs")["n"][0]
    assert json.loads(record)["source"] == "store"
    assert rebuilt.height == fitted == 20
    info = pipeline.write_reports(Path("store.duckdb"), Path("reports"))
    assert "law_fit_fitted_sweep_chinchilla.png" in info.files


def test_a_predicate_stays_one_cell_of_the_fits_summary(work: Path) -> None:
    import re

    predicate = "project = 'sweep' OR project = 'a|`b`'"
    info = pipeline.fit_project(
        Path("store.duckdb"), "sweep", "kaplan-n", where=predicate, n_bootstrap=0
    )
    assert info.status == "fitted", info.message
    markdown = pipeline.fits_markdown(Path("store.duckdb"))
    row = next(line for line in markdown.splitlines() if info.fit_id in line)
    assert len(re.findall(r"(?<!\\)\|", row)) == 8  # 7 cells
    assert r"'a\|\`b\`'" in row


def test_why_there_is_no_allow_files(tmp_path: Path) -> None:
    """The README says reading other files is not offered: DuckDB's opt-in for it
    (`allowed_directories`) also lets the connection write there, so "nothing is written"
    would rest on scalefit's statement check alone, not on the connection. If this starts
    failing, the opt-in may have become read-only: reconsider `--allow-files`."""
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "log.csv").write_text("a\n1\n")
    con = duckdb.connect(config={"autoload_known_extensions": False})
    con.execute("SET allowed_directories = [?]", [f"{allowed}/"])
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    assert con.execute(f"SELECT * FROM read_csv('{allowed}/log.csv')").fetchall() == [(1,)]
    with pytest.raises(duckdb.PermissionException):  # a real boundary for other folders
        con.execute(f"SELECT * FROM read_csv('{allowed}/../log.csv')").fetchall()
    con.execute(f"COPY (SELECT 42) TO '{allowed}/written.csv'")
    con.close()
    assert (allowed / "written.csv").read_text().splitlines()[-1] == "42"
