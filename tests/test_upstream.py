"""Upstream files: download, pin, cache and offline use against a real HTTP server on
127.0.0.1, loading into a real DuckDB file, and the change log of a model database.

No test here reaches any host but 127.0.0.1: every URL points at the loopback server below,
and ``SCALEFIT_OFFLINE=1`` (set in conftest) stays the default for anything not explicit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
from pathlib import Path

import duckdb
import polars as pl
import pytest
from loopback import Server

from scalefit import store
from scalefit.errors import HashMismatchError, UpstreamConfigError, UpstreamUnavailableError
from scalefit.load.curated import datasets_dir, read_sources
from scalefit.load.upstream import (
    Upstream,
    fetch_upstream,
    load_upstream,
    load_upstreams,
    model_changes,
    normalize_name,
    refresh_upstreams,
)
from scalefit.schemas import TABLES

RUNS_CSV = """\
x,y,color,Model Size,Training FLOP,hex_color,loss
1.0,2.0,#faebdd,1e8,6e17,#faebdd,3.5
1.5,2.5,#f8d1b8,4e8,2.4e18,#f8d1b8,3.0
2.0,3.0,#f47a54,-5,1e18,#f47a54,3.0
2.5,3.5,#f47d57,1e9,6e19,#f47d57,abc
3.0,4.0,#341930,2e9,1.2e20,#341930,2.5
"""

MODELS_V1 = """\
Model,Parameters,Training compute (FLOP),Organization
GPT-3 175B,175000000000,3.14e23,OpenAI
Chinchilla,70000000000,5.76e23,DeepMind
Gopher,280000000000,6.31e23,DeepMind
LLaMA-65B,65200000000,5.5e23,Meta AI
PaLM 540B,540000000000,2.53e24,Google
"""

# A value revised (Chinchilla's compute), a name with stray whitespace (GPT-3), a row renamed
# (LLaMA-65B), a row removed (Gopher), a row added (Llama 2 70B) and a duplicate of it once
# normalised (quarantined; the first row wins).
MODELS_V2 = """\
Model,Parameters,Training compute (FLOP),Organization
"  GPT-3\u00a0  175B ",175000000000,3.14e23,OpenAI
Chinchilla,70000000000,5.88e23,DeepMind
LLaMA 65B,65200000000,5.5e23,Meta AI
PaLM 540B,540000000000,2.53e24,Google
Llama 2 70B,70000000000,8.4e23,Meta AI
Llama 2  70B ,1,1,Meta AI
"""

MODEL_COLUMNS = (("name", "Model"), ("params", "Parameters"), ("flops", "Training compute (FLOP)"))
RUN_COLUMNS = (("params", "Model Size"), ("flops", "Training FLOP"), ("loss", "loss"))


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _upstream(url: str, kind: str = "runs", sha256: str | None = None, **kw: object) -> Upstream:
    return Upstream(
        name=str(kw.pop("name", "up")),
        url=url,
        kind=kind,
        format="csv",
        source_id="besiroglu2024",
        columns=RUN_COLUMNS if kind == "runs" else MODEL_COLUMNS,
        sha256=sha256,
        **kw,  # type: ignore[arg-type]
    )


def _tables(con: duckdb.DuckDBPyConnection) -> dict[str, list[str]]:
    """Every row of every table, sorted: compares whole stores."""
    return {t: sorted(map(repr, store.run(con, f'SELECT * FROM "{t}"'))) for t in TABLES}


# --------------------------------------------------------------------------------------------
# sources.toml


def test_no_shipped_upstream_loads_a_study_file_again() -> None:
    """One loading path per file: a study's file (Besiroglu et al.'s points, once the
    `epoch_chinchilla` upstream) is never also an upstream, by URL or by hash; and every
    shipped upstream, should one be added, is pinned to a commit and cites a known source."""
    from scalefit.load.studies import load_studies

    ups = load_upstreams(datasets_dir() / "sources.toml")
    study_files = {
        (study.url(path), sha) for study in load_studies().values() for path, sha in study.files
    }
    urls, shas = {u for u, _ in study_files}, {s for _, s in study_files}
    assert "193478df4e90f040016431996c45682659306840ecdadf83cfb9cd5ca0aa1b30" in shas
    sources = set(read_sources(datasets_dir() / "sources.toml")["source_id"])
    for up in ups:
        assert up.url not in urls and up.sha256 not in shas, up.name
        assert up.source_id in sources


BASE_TOML = """\
[sources.s1]
title = "T"
kind = "dataset"

[upstreams.u]
url = "http://127.0.0.1:1/f.csv"
kind = "models"
source_id = "s1"
[upstreams.u.columns]
name = "Model"
"""


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (('kind = "models"', 'kind = "weights"'), "`kind` = 'weights' is not one of runs, models"),
        (('url = "http://127.0.0.1:1/f.csv"\n', ""), "has no `url`"),
        (('url = "http://127.0.0.1:1/f.csv"', 'url = "ftp://x/f.csv"'), "must start with"),
        (('source_id = "s1"', 'source_id = "nope"'), "is not defined in [sources]"),
        (('kind = "models"', 'kind = "models"\nsha256 = "abc"'), "is not 64 hex digits"),
        (('kind = "models"', 'kind = "models"\npin = true'), "no `sha256`"),
        (('kind = "models"', 'kind = "models"\nmirror = "x"'), "unknown key(s) ['mirror']"),
        (('name = "Model"', 'params = "P"'), "must map `name`"),
        (('name = "Model"', 'name = "Model"\nloss = "L"'), "unknown target column(s) ['loss']"),
        (('f.csv"', 'f.dat"'), "needs `format`"),
    ],
)
def test_bad_entries_say_what_to_fix(tmp_path: Path, edit: tuple[str, str], words: str) -> None:
    path = tmp_path / "sources.toml"
    assert edit[0] in BASE_TOML
    path.write_text(BASE_TOML.replace(*edit), encoding="utf-8")
    with pytest.raises(UpstreamConfigError, match=r"\[upstreams\.u\]") as info:
        load_upstreams(path)
    assert words in str(info.value)
    assert info.value.upstream == "u"


def test_good_entry_and_no_upstreams(tmp_path: Path) -> None:
    path = tmp_path / "sources.toml"
    path.write_text(BASE_TOML.replace('kind = "models"', 'kind = "models"\npin = false'))
    (up,) = load_upstreams(tmp_path)  # a folder is fine too
    assert (up.format, up.pinned, up.column_map) == ("csv", False, {"name": "Model"})
    path.write_text(BASE_TOML.split("[upstreams")[0])
    assert load_upstreams(path) == []


def test_normalize_name() -> None:
    assert normalize_name("  GPT-3\u00a0\t 175B\u200b ") == "GPT-3 175B"
    assert normalize_name("ＧＰＴ－３") == "GPT-3"  # full-width forms (NFKC)
    assert normalize_name("LLaMA") == "LLaMA"  # case is kept
    assert normalize_name(" \t") is None


# --------------------------------------------------------------------------------------------
# Download, pin, cache


def test_download_verifies_and_keeps_a_snapshot(server: Server, tmp_path: Path) -> None:
    url = server.put("runs.csv", RUNS_CSV)
    up = _upstream(url, sha256=_sha(RUNS_CSV))
    info = fetch_upstream(up, tmp_path / "cache", offline=False)
    assert (info.status, info.level, info.changed) == ("ok", "ok", True)
    assert info.sha256 == _sha(RUNS_CSV) and info.path is not None
    assert info.path == tmp_path / "cache" / "up" / f"{_sha(RUNS_CSV)}.csv"
    assert info.path.read_text() == RUNS_CSV
    pointer = json.loads((tmp_path / "cache" / "up" / "current.json").read_text())
    assert pointer["sha256"] == _sha(RUNS_CSV) and pointer["url"] == url
    assert server.requests == ["/runs.csv"]
    info.raise_for_status()

    again = fetch_upstream(up, tmp_path / "cache", offline=False)
    assert (again.status, again.changed, again.fetched_at) == ("ok", False, info.fetched_at)
    # No temp files left behind.
    assert sorted(p.name for p in (tmp_path / "cache" / "up").iterdir()) == [
        f"{_sha(RUNS_CSV)}.csv",
        "current.json",
    ]


def test_unpinned_keeps_every_snapshot(server: Server, tmp_path: Path) -> None:
    url = server.put("m.csv", MODELS_V1)
    up = _upstream(url, kind="models")
    first = fetch_upstream(up, tmp_path, offline=False)
    server.put("m.csv", MODELS_V2)
    second = fetch_upstream(up, tmp_path, offline=False)
    assert (second.status, second.changed, second.previous_sha256) == ("ok", True, first.sha256)
    assert first.path is not None and first.path.read_text() == MODELS_V1
    assert second.path is not None and second.path.read_text() == MODELS_V2


def test_hash_mismatch_keeps_last_good_copy(server: Server, tmp_path: Path) -> None:
    url = server.put("runs.csv", RUNS_CSV)
    up = _upstream(url, sha256=_sha(RUNS_CSV))
    good = fetch_upstream(up, tmp_path, offline=False)
    changed = RUNS_CSV.replace("3.5", "3.6")
    server.put("runs.csv", changed)

    bad = fetch_upstream(up, tmp_path, offline=False)
    assert (bad.status, bad.level) == ("hash_mismatch", "error")
    assert bad.path == good.path and bad.sha256 == _sha(RUNS_CSV)  # the last good copy
    assert bad.downloaded_sha256 == _sha(changed)
    assert f'sha256 = "{_sha(changed)}"' in bad.message  # says how to accept it
    # The new bytes are set aside for review, not installed.
    assert bad.rejected_path == tmp_path / "up" / "rejected" / f"{_sha(changed)}.csv"
    assert bad.rejected_path.read_text() == changed
    assert json.loads((tmp_path / "up" / "current.json").read_text())["sha256"] == _sha(RUNS_CSV)
    with pytest.raises(HashMismatchError) as exc:
        bad.raise_for_status()
    assert (exc.value.actual, exc.value.expected) == (_sha(changed), _sha(RUNS_CSV))

    # Pinned to bytes never seen: an error and nothing to load.
    fresh = fetch_upstream(up, tmp_path / "other", offline=False)
    assert (fresh.status, fresh.path) == ("hash_mismatch", None)
    assert "no good copy" in fresh.message


def test_server_down_uses_cache_with_warning(
    server: Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = server.put("m.csv", MODELS_V1)
    up = _upstream(url, kind="models")
    good = fetch_upstream(up, tmp_path, offline=False)
    missing = dataclasses.replace(up, url=f"{server.url}/gone.csv")
    with caplog.at_level(logging.WARNING, logger="scalefit.load"):
        gone = fetch_upstream(missing, tmp_path, offline=False)
    assert (gone.status, gone.level, gone.path) == ("cached", "warning", good.path)
    assert "HTTP 404" in gone.message

    server.stop()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="scalefit.load"):
        down = fetch_upstream(up, tmp_path, offline=False, timeout=5)
    assert (down.status, down.path, down.sha256) == ("cached", good.path, good.sha256)
    assert "using the cached snapshot" in down.message
    assert any(r.levelno == logging.WARNING and "cached" in r.message for r in caplog.records)
    down.raise_for_status()  # a warning, not an error

    # A damaged cached file is never used.
    assert good.path is not None
    good.path.write_text("damaged")
    broken = fetch_upstream(up, tmp_path, offline=False, timeout=5)
    assert (broken.status, broken.level, broken.path) == ("failed", "error", None)


def test_offline_and_no_cache_is_a_clear_status(server: Server, tmp_path: Path) -> None:
    url = server.put("runs.csv", RUNS_CSV)
    up = _upstream(url, sha256=_sha(RUNS_CSV))
    info = fetch_upstream(up, tmp_path, offline=True)
    assert (info.status, info.level, info.path) == ("unavailable", "warning", None)
    assert "offline" in info.message and "SCALEFIT_OFFLINE" in info.message
    assert f"{_sha(RUNS_CSV)}.csv" in info.message  # where to put the file by hand
    with pytest.raises(UpstreamUnavailableError):
        info.raise_for_status()
    # The environment (SCALEFIT_OFFLINE=1, set by conftest) is the default: no request.
    assert fetch_upstream(up, tmp_path).status == "unavailable"
    assert server.requests == []

    fetch_upstream(up, tmp_path, offline=False)
    cached = fetch_upstream(up, tmp_path, offline=True)
    assert (cached.status, cached.sha256) == ("offline", _sha(RUNS_CSV))
    assert server.requests == ["/runs.csv"]


# --------------------------------------------------------------------------------------------
# Loading


def test_runs_load_with_quarantine_and_idempotent(
    server: Server, tmp_path: Path, db_path: Path
) -> None:
    url = server.put("runs.csv", RUNS_CSV)
    up = _upstream(url, sha256=_sha(RUNS_CSV), name="sweep")
    info = fetch_upstream(up, tmp_path / "cache", offline=False)
    with store.connect(db_path) as con:
        load = load_upstream(con, up, info)
        assert (load.status, load.rows_in, load.rows_ok, load.rows_rejected) == (
            "loaded",
            5,
            3,
            2,
        )
        runs = store.query(con, "SELECT * FROM runs ORDER BY run_id")
        assert runs["run_id"].to_list() == ["sweep:1", "sweep:2", "sweep:5"]
        assert set(runs["project"]) == {"sweep"} and set(runs["source_id"]) == {"besiroglu2024"}
        assert set(runs["params_method"]) == {"given"}
        # The file has no token column: tokens = flops / (6 params).
        assert runs["tokens"].to_list() == pytest.approx([1e9, 1e9, 1e10])
        assert json.loads(runs["config"][0])["derived"] == "tokens = flops / (6 params)"
        obs = store.query(con, "SELECT * FROM observations ORDER BY run_id")
        assert obs["value"].to_list() == [3.5, 3.0, 2.5]
        assert set(obs["metric"]) == {"loss"} and set(obs["step"]) == {0}
        assert obs["flops"].to_list() == [6e17, 2.4e18, 1.2e20]

        q = store.query(con, "SELECT * FROM quarantine ORDER BY row_number")
        assert q["row_number"].to_list() == [3, 4]
        assert set(q["path"]) == {url} and set(q["ingest_id"]) == {load.ingest_id}
        assert "`params` (file column 'Model Size') = -5" in q["reason"][0]
        assert "must be > 0" in q["reason"][0]
        assert "`value` (file column 'loss') = abc is not a number" in q["reason"][1]
        assert json.loads(q["raw"][1])["Model Size"] == "1e9"  # the row as the file has it
        ingest = store.query(con, "SELECT * FROM ingests").row(0, named=True)
        assert (ingest["rows_in"], ingest["rows_ok"], ingest["rows_rejected"]) == (5, 3, 2)
        assert (ingest["path"], ingest["sha256"], ingest["format"]) == (url, _sha(RUNS_CSV), "csv")
        assert ingest["status"] == "rejected_rows"
        snap = store.query(con, "SELECT * FROM upstream_snapshots").row(0, named=True)
        assert (snap["status"], snap["rows"], snap["rows_rejected"]) == ("current", 3, 2)

        before = _tables(con)
        again = load_upstream(con, up, fetch_upstream(up, tmp_path / "cache", offline=False))
        assert again.status == "unchanged"
        assert _tables(con) == before


def _load_models(server: Server, tmp_path: Path, con, text: str):
    url = server.put("models.csv", text)
    up = _upstream(url, kind="models", name="db")
    return load_upstream(con, up, fetch_upstream(up, tmp_path / "cache", offline=False))


def test_model_database_change_log(server: Server, tmp_path: Path, db_path: Path) -> None:
    v1, v2 = _sha(MODELS_V1), _sha(MODELS_V2)
    with store.connect(db_path) as con:
        first = _load_models(server, tmp_path, con, MODELS_V1)
        assert (first.status, first.rows_ok, first.changes) == ("loaded", 5, 0)
        assert store.table_counts(con)["upstream_changes"] == 0  # the first snapshot is the base
        models = store.query(con, "SELECT * FROM upstream_models ORDER BY row_number")
        assert models["name"].to_list()[:2] == ["GPT-3 175B", "Chinchilla"]
        assert json.loads(models["extra"][0]) == {"Organization": "OpenAI"}
        assert models["tokens"].null_count() == 5  # not mapped

        second = _load_models(server, tmp_path, con, MODELS_V2)
        assert (second.status, second.rows_ok, second.rows_rejected) == ("loaded", 5, 1)
        changes = store.query(
            con,
            "SELECT upstream, from_sha256, to_sha256, name, change, column_name, old_value, "
            "new_value FROM upstream_changes ORDER BY change, name",
        )
        added = json.dumps(
            {
                "Organization": "Meta AI",
                "flops": "8.4e+23",
                "params": "70000000000",
                "tokens": None,
            },
            sort_keys=True,
        )
        removed = json.dumps(
            {
                "Organization": "DeepMind",
                "flops": "6.31e+23",
                "params": "280000000000",
                "tokens": None,
            },
            sort_keys=True,
        )
        assert changes.rows() == [
            ("db", v1, v2, "Llama 2 70B", "added", None, None, added),
            ("db", v1, v2, "Chinchilla", "changed", "flops", "5.76e+23", "5.88e+23"),
            ("db", v1, v2, "Gopher", "removed", None, removed, None),
            ("db", v1, v2, "LLaMA 65B", "renamed", "name", "LLaMA-65B", "LLaMA 65B"),
        ]
        assert second.changes == 4
        models = store.query(con, "SELECT * FROM upstream_models ORDER BY name")
        assert models["name"].to_list() == [
            "Chinchilla",
            "GPT-3 175B",
            "LLaMA 65B",
            "Llama 2 70B",
            "PaLM 540B",
        ]
        gpt3 = models.filter(pl.col("name") == "GPT-3 175B").row(0, named=True)
        assert gpt3["name_raw"] == "  GPT-3\u00a0  175B " and gpt3["snapshot_sha256"] == v2
        q = store.query(con, "SELECT * FROM quarantine")
        assert q["row_number"].to_list() == [6]
        assert "duplicate `name` = Llama 2 70B once normalised (first at row 5)" in q["reason"][0]
        snaps = store.query(con, "SELECT sha256, status FROM upstream_snapshots ORDER BY sha256")
        assert dict(snaps.rows()) == {v1: "superseded", v2: "current"}

        # The same snapshot again changes nothing at all.
        before = _tables(con)
        third = _load_models(server, tmp_path, con, MODELS_V2)
        assert (third.status, third.changes) == ("unchanged", 0)
        assert _tables(con) == before


def test_model_changes_rules() -> None:
    schema = {"name": pl.String, "params": pl.Float64, "tokens": pl.Float64}
    schema |= {"flops": pl.Float64, "extra": pl.String}

    def frame(*rows: tuple) -> pl.DataFrame:
        return pl.DataFrame(list(rows), schema=schema, orient="row")

    def js(**values: object) -> str:
        return json.dumps({"params": None, "tokens": None, "flops": None} | values, sort_keys=True)

    old = frame(
        ("Gpt-4", 1e12, None, None, '{"org": "A"}'),
        ("X", None, None, None, '{"org": null}'),
        ("Y", None, None, None, '{"org": null}'),
    )
    new = frame(
        ("GPT-4", 2e12, None, None, '{"org": "A", "year": "2023"}'),
        ("Z", None, None, None, '{"org": null, "year": null}'),
    )
    # A case-only rename with a revised value is one rename and one change; rows whose values
    # are all missing are never paired as renames; a new column is one change, not one per row.
    assert model_changes(old, new).rows() == [
        ("Z", "added", None, None, js(org=None, year=None)),
        ("X", "removed", None, js(org=None), None),
        ("Y", "removed", None, js(org=None), None),
        ("GPT-4", "changed", "params", "1000000000000", "2000000000000"),
        ("GPT-4", "renamed", "name", "Gpt-4", "GPT-4"),
        (None, "column_added", "year", None, None),
    ]
    assert model_changes(old, old).height == 0
    # Two candidates with the same values: ambiguous, so no rename is guessed.
    twins = frame(("A", 1.0, None, None, "{}"), ("B", 1.0, None, None, "{}"))
    moved = frame(("C", 1.0, None, None, "{}"), ("D", 1.0, None, None, "{}"))
    assert model_changes(twins, moved)["change"].to_list() == ["added"] * 2 + ["removed"] * 2


# --------------------------------------------------------------------------------------------
# The refresh step


def test_refresh_upstreams(server: Server, tmp_path: Path, db_path: Path) -> None:
    datasets = Path(shutil.copytree(datasets_dir(), tmp_path / "datasets"))
    toml = datasets / "sources.toml"
    url = server.put("svg_extracted_data.csv", RUNS_CSV)
    pinned = "193478df4e90f040016431996c45682659306840ecdadf83cfb9cd5ca0aa1b30"  # the real file's
    text = (
        toml.read_text(encoding="utf-8")
        + f"""
[upstreams.epoch_chinchilla]
url = "{url}"
sha256 = "{pinned}"
kind = "runs"
format = "csv"
source_id = "besiroglu2024"
[upstreams.epoch_chinchilla.columns]
params = "Model Size"
flops = "Training FLOP"
loss = "loss"

[upstreams.model_db]
url = "{server.url}/models.csv"
pin = false
kind = "models"
source_id = "besiroglu2024"
[upstreams.model_db.columns]
name = "Model"
params = "Parameters"

[upstreams.missing]
url = "{server.url}/missing.csv"
kind = "models"
source_id = "besiroglu2024"
[upstreams.missing.columns]
name = "Model"
"""
    )
    toml.write_text(text, encoding="utf-8")
    server.put("models.csv", MODELS_V1)
    cache = tmp_path / "cache"

    # Still pinned to the real file's sha256: the stand-in is a mismatch, an error that does
    # not stop the other upstreams; a 404 with nothing cached is an error too (refresh exits 1).
    results = {r.upstream: r for r in refresh_upstreams(db_path, datasets, cache, offline=False)}
    assert list(results) == ["epoch_chinchilla", "model_db", "missing"]
    assert results["epoch_chinchilla"].status == "error"
    assert results["epoch_chinchilla"].fetch.status == "hash_mismatch"
    assert (results["model_db"].status, results["model_db"].load.rows_ok) == ("ok", 5)
    assert (results["missing"].status, results["missing"].fetch.status) == ("error", "failed")
    assert "HTTP 404" in results["missing"].message
    with store.connect(db_path) as con:
        assert store.table_counts(con)["runs"] == 0
        rejected = store.query(
            con,
            "SELECT status, message FROM upstream_snapshots WHERE upstream = 'epoch_chinchilla'",
        )
        assert rejected["status"].to_list() == ["rejected"]

    toml.write_text(text.replace(pinned, _sha(RUNS_CSV)), encoding="utf-8")
    results = {r.upstream: r for r in refresh_upstreams(db_path, datasets, cache, offline=False)}
    assert results["epoch_chinchilla"].status == "ok"
    assert results["epoch_chinchilla"].load.rows_ok == 3
    assert results["model_db"].load.status == "unchanged"

    # Offline by default (SCALEFIT_OFFLINE=1 from conftest): no request, the cache is used.
    seen = len(server.requests)
    with store.connect(db_path) as con:
        before = _tables(con)
    results = {r.upstream: r for r in refresh_upstreams(db_path, datasets, cache)}
    assert len(server.requests) == seen
    assert [r.fetch.status for r in results.values()] == ["offline", "offline", "unavailable"]
    assert {r.status for r in results.values()} == {"warning"}
    with store.connect(db_path) as con:
        assert _tables(con) == before
