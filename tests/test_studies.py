"""Published run datasets as studies: declarations, the mirror, downloads, parsing, loading.

Real files: the shared mirror (../shared/published-runs), copies of it in tmp dirs (tampered,
truncated, malformed), a real DuckDB file, a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from scalefit import store
from scalefit.cli import app
from scalefit.errors import HashMismatchError, UpstreamUnavailableError
from scalefit.load.curated import datasets_dir
from scalefit.load.studies import (
    fetch_study,
    get_study,
    load_all,
    load_studies,
    load_study,
)

runner = CliRunner()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _tables(db: Path) -> dict[str, list]:
    with store.connect(db, read_only=True) as con:
        return {
            t: sorted(map(repr, store.run(con, f"SELECT * FROM {t}")))
            for t in ("runs", "observations", "quarantine", "ingests")
        }


def _datasets_with_study(root: Path, name: str, files: dict[str, str], url: str) -> Path:
    """A copy of the shipped datasets whose only study is ``name`` with these files."""
    target = Path(shutil.copytree(datasets_dir(), root / "datasets"))
    shipped = (target / "studies" / f"{name}.toml").read_text()
    head = shipped.split("[files]")[0]
    head = "\n".join(
        f'url = "{url}"' if line.startswith("url = ") else line for line in head.splitlines()
    )
    shutil.rmtree(target / "studies")
    (target / "studies").mkdir()
    body = "\n".join(f'"{p}" = "{s}"' for p, s in files.items())
    (target / "studies" / f"{name}.toml").write_text(f"{head}\n[files]\n{body}\n")
    return target


# --------------------------------------------------------------------------------------------
# Declarations


def test_shipped_declarations_pin_every_file(published_runs: Path) -> None:
    """A second read of the pins: every declared sha256 equals the published SHA256SUMS (which
    were checked against the blobs of mlfoundations/scaling at the commit) and the bytes."""
    studies = load_studies()
    assert list(studies) == ["besiroglu2024", "gadre2024"]
    gadre = studies["gadre2024"]
    assert gadre.commit == "a003c4913793ac2ae7ef87b28ecb562955d026d5"
    assert len(gadre.files) == 209
    sums = dict(
        reversed(line.split())
        for line in (published_runs / "gadre2024" / "SHA256SUMS").read_text().splitlines()
    )
    assert dict(gadre.files) == sums
    url = gadre.url("exp_data/models/rpj-open_lm_1b-32.0.json")
    assert url == (
        "https://raw.githubusercontent.com/mlfoundations/scaling/"
        "a003c4913793ac2ae7ef87b28ecb562955d026d5/exp_data/models/rpj-open_lm_1b-32.0.json"
    )
    bes = studies["besiroglu2024"]
    ((path, sha),) = bes.files
    assert _sha((published_runs / "besiroglu2024" / path).read_bytes()) == sha
    assert bes.url(path) == (
        "https://raw.githubusercontent.com/epoch-research/analyzing-chinchilla/"
        "d8197ca6a73a6ce9095584137681282d804c6a7c/data/svg_extracted_data.csv"
    )


def test_mirror_setting_file_and_environment(tmp_path: Path, monkeypatch) -> None:
    from scalefit.config import load_settings

    monkeypatch.delenv("SCALEFIT_UPSTREAM_MIRROR", raising=False)
    toml = tmp_path / "scalefit.toml"
    toml.write_text('[upstream]\nmirror = "runs-mirror"\n')
    assert load_settings(toml).mirror == tmp_path / "runs-mirror"
    monkeypatch.setenv("SCALEFIT_UPSTREAM_MIRROR", str(tmp_path / "env"))
    assert load_settings(toml).mirror == tmp_path / "env"


# --------------------------------------------------------------------------------------------
# Loading from the mirror


@pytest.fixture(scope="module")
def loaded(tmp_path_factory, published_runs: Path) -> Path:
    db = tmp_path_factory.mktemp("studies") / "sf.duckdb"
    with store.connect(db) as con:
        for study in load_studies().values():
            info = load_study(con, study, mirror=published_runs, offline=True)
            assert info.status == "loaded" and info.rejected == 0
    return db


def test_gadre_runs_and_metrics(loaded: Path, published_runs: Path) -> None:
    with store.connect(loaded, read_only=True) as con:
        runs = store.query(con, "SELECT * FROM runs WHERE starts_with(run_id, 'gadre2024:')")
        assert runs.height == 104
        assert sorted(runs["project"].unique()) == [
            "gadre2024/c4_original",
            "gadre2024/rpj",
            "gadre2024/rw_original",
        ]
        run = runs.filter(pl.col("run_id") == "gadre2024:rpj-open_lm_1b-32.0").row(0, named=True)
        assert (run["params"], run["tokens"]) == (1439795200.0, 921468928000.0)
        assert run["flops"] == 6 * 1439795200.0 * 921468928000.0
        config = json.loads(run["config"])
        assert config["chinchilla_multiplier"] == 32.0 and config["dataset"] == "rpj"
        assert config["params_no_embed"] == 1336510464
        obs = store.query(
            con,
            "SELECT metric, value FROM observations WHERE run_id = ?",
            ["gadre2024:rpj-open_lm_1b-32.0"],
        )
        values = dict(obs.iter_rows())
        assert len(values) == 1 + 8 * 3 + 46
        raw = json.loads(
            (published_runs / "gadre2024/exp_data/models/rpj-open_lm_1b-32.0.json").read_text()
        )
        c4 = next(r for r in raw["results"] if "/c4_val/" in r["val_data"][0])
        assert values["eval_loss"] == values["eval_loss:c4_val"] == c4["loss"]
        assert values["eval_loss_lower95:c4_val"] == c4["loss_sequences_lower_95"]
        assert values["eval_loss:openlm"] == raw["results"][0]["loss"] == 1.964944910009702
        assert sorted(k.split(":")[1] for k in values if k.startswith("eval_loss:")) == [
            "c4_val",
            "openlm",
            "paloma_c4_en",
            "paloma_dolma_100_programing_languages",
            "paloma_falcon-refinedweb",
            "paloma_ptb",
            "paloma_redpajama",
            "val_de-en_100",
        ]
        evals = json.loads(
            (
                published_runs
                / "gadre2024/exp_data/evals/evaluation_rpj-open_lm_1b-32.0_heavy.json"
            ).read_text()
        )["eval_metrics"]["icl"]
        assert {
            k.removeprefix("accuracy:"): v for k, v in values.items() if k[:9] == "accuracy:"
        } == evals
        per_metric = store.run(
            con,
            "SELECT count(DISTINCT metric) FROM observations "
            "WHERE starts_with(run_id, 'gadre2024:')",
        )[0][0]
        assert per_metric == 1 + 24 + 46


def test_besiroglu_runs(loaded: Path) -> None:
    with store.connect(loaded, read_only=True) as con:
        runs = store.query(
            con,
            "SELECT r.params, r.tokens, r.flops, o.value FROM runs r JOIN observations o "
            "USING (run_id) WHERE r.project = 'besiroglu2024' AND o.metric = 'loss' "
            "ORDER BY r.run_id = 'besiroglu2024:1' DESC",
        )
    assert runs.height == 245
    first = runs.row(0)
    # Row 1 of the file: Model Size 6795600349.289497, Training FLOP 9.993852799709755e+18.
    assert first[0] == 6795600349.289497 and first[2] == 9.993852799709755e18
    assert first[1] == pytest.approx(9.993852799709755e18 / (6 * 6795600349.289497), rel=1e-15)
    assert first[3] == 5.005581996196243


def test_loading_again_changes_nothing(loaded: Path, published_runs: Path) -> None:
    before = _tables(loaded)
    with store.connect(loaded) as con:
        results = load_all(con, mirror=published_runs, offline=True)
    assert [(r.study, r.load.status) for r in results] == [
        ("besiroglu2024", "unchanged"),
        ("gadre2024", "unchanged"),
    ]
    assert _tables(loaded) == before


# --------------------------------------------------------------------------------------------
# The mirror's and the download's failures


def test_tampered_mirror_file_is_refused(tmp_path: Path, published_runs: Path, db_path) -> None:
    mirror = tmp_path / "mirror"
    shutil.copytree(published_runs / "besiroglu2024", mirror / "besiroglu2024")
    csv = mirror / "besiroglu2024" / "data" / "svg_extracted_data.csv"
    data = csv.read_bytes().replace(b"5.005581996196243", b"4.005581996196243")
    csv.write_bytes(data)
    study = get_study("besiroglu2024")
    with store.connect(db_path) as con:
        with pytest.raises(HashMismatchError) as err:
            load_study(con, study, mirror=mirror, cache_dir=tmp_path / "cache", offline=True)
        assert store.table_counts(con)["runs"] == 0
    message = str(err.value)
    assert err.value.expected == study.files[0][1] and err.value.actual == _sha(data)
    assert study.files[0][1] in message and _sha(data) in message
    assert str(csv) in message and "refused" in message


def test_missing_file_names_the_url_and_the_mirror_path(tmp_path: Path, published_runs) -> None:
    mirror = tmp_path / "mirror"
    shutil.copytree(published_runs / "gadre2024", mirror / "gadre2024")
    gone = "exp_data/models/rpj-open_lm_7b-1.0.json"
    (mirror / "gadre2024" / gone).unlink()
    study = get_study("gadre2024")
    with pytest.raises(UpstreamUnavailableError) as err:
        fetch_study(study, mirror=mirror, cache_dir=tmp_path / "cache", offline=True)
    message = str(err.value)
    assert study.url(gone) in message
    assert str(mirror / "gadre2024" / gone) in message


def test_refresh_step_reports_a_missing_copy_as_a_warning(tmp_path: Path, db_path) -> None:
    """Offline, no mirror, nothing cached: a warning per study, the store untouched."""
    with store.connect(db_path) as con:
        results = load_all(con, mirror=None, cache_dir=tmp_path / "cache", offline=True)
        assert [r.status for r in results] == ["warning", "warning"]
        assert store.table_counts(con)["runs"] == 0
    assert "SCALEFIT_UPSTREAM_MIRROR" in results[0].message


def test_a_failed_download_with_no_copy_is_an_error(server, tmp_path: Path, db_path) -> None:
    """Online, a study whose file cannot be downloaded (here HTTP 404 from 127.0.0.1) and has
    no mirror or cached copy is an error, as for upstream files (the refresh exits 1)."""
    sha = "193478df4e90f040016431996c45682659306840ecdadf83cfb9cd5ca0aa1b30"
    datasets = _datasets_with_study(
        tmp_path, "besiroglu2024", {"data/svg_extracted_data.csv": sha}, f"{server.url}/{{path}}"
    )
    with store.connect(db_path) as con:
        results = load_all(con, datasets, mirror=None, cache_dir=tmp_path / "cache", offline=False)
        assert store.table_counts(con)["runs"] == 0
    assert [(r.study, r.status) for r in results] == [("besiroglu2024", "error")]
    assert "HTTP 404" in results[0].message
    assert server.requests == ["/data/svg_extracted_data.csv"]


def test_download_from_a_loopback_server(
    server, tmp_path: Path, db_path: Path, published_runs: Path
) -> None:
    """With a network: each file downloaded from its pinned URL, verified and cached; the
    cache serves the next fetch; other bytes from the server are refused."""
    src = published_runs / "besiroglu2024" / "data" / "svg_extracted_data.csv"
    (server.root / "data").mkdir()
    shutil.copy(src, server.root / "data" / src.name)
    datasets = _datasets_with_study(
        tmp_path,
        "besiroglu2024",
        {"data/svg_extracted_data.csv": _sha(src.read_bytes())},
        f"{server.url}/{{path}}",
    )
    study = load_studies(datasets)["besiroglu2024"]
    cache = tmp_path / "cache"
    files = fetch_study(study, mirror=None, cache_dir=cache, offline=False)
    assert files.origins["download"] == 1 and server.requests == ["/data/svg_extracted_data.csv"]
    with store.connect(db_path) as con:
        info = load_study(con, study, mirror=None, cache_dir=cache, offline=False)
    assert info.runs == 245 and info.origins == {"mirror": 0, "cache": 1, "download": 0}
    assert len(server.requests) == 1

    (server.root / "data" / src.name).write_text("Model Size,Training FLOP,loss\n1,2,3\n")
    with pytest.raises(HashMismatchError, match="the download of"):
        fetch_study(study, mirror=None, cache_dir=tmp_path / "other-cache", offline=False)
    (server.root / "data" / src.name).unlink()
    with pytest.raises(UpstreamUnavailableError, match="HTTP 404"):
        fetch_study(study, mirror=None, cache_dir=tmp_path / "other-cache", offline=False)


def test_malformed_run_file_is_quarantined_and_the_others_load(
    tmp_path: Path, db_path: Path, published_runs: Path
) -> None:
    src = published_runs / "gadre2024" / "exp_data"
    mirror = tmp_path / "mirror" / "gadre2024" / "exp_data"
    (mirror / "models").mkdir(parents=True)
    (mirror / "evals").mkdir()
    names = ["rpj-d=96_l=8_h=4-1.0", "rpj-d=512_l=8_h=4-1.0", "rpj-open_lm_1b-1.0"]
    files: dict[str, str] = {}
    for name in names:
        for rel in (f"models/{name}.json", f"evals/evaluation_{name}_heavy.json"):
            data = (src / rel).read_bytes()
            if rel == f"models/{names[1]}.json":
                data = data[: len(data) // 2]  # truncated mid-file
            if rel == f"models/{names[2]}.json":
                doc = json.loads(data)
                del doc["hyperparameters"]["params"]
                data = json.dumps(doc).encode()
            (mirror / rel).write_bytes(data)
            files[f"exp_data/{rel}"] = _sha(data)
    datasets = _datasets_with_study(
        tmp_path, "gadre2024", files, "https://example.invalid/{commit}/{path}"
    )
    study = load_studies(datasets)["gadre2024"]
    with store.connect(db_path) as con:
        info = load_study(con, study, mirror=tmp_path / "mirror", offline=True)
        assert (info.runs, info.rejected) == (1, 2)
        runs = store.query(con, "SELECT run_id FROM runs")["run_id"].to_list()
        assert runs == [f"gadre2024:{names[0]}"]
        q = store.query(con, "SELECT path, reason, raw FROM quarantine ORDER BY path")
    assert q["path"].to_list() == [f"exp_data/models/{n}.json" for n in sorted(names[1:])]
    reasons = dict(zip(q["path"], q["reason"], strict=True))
    assert "not valid JSON" in reasons[f"exp_data/models/{names[1]}.json"]
    assert "missing field 'params'" in reasons[f"exp_data/models/{names[2]}.json"]
    assert all(json.loads(r)["text"] for r in q["raw"])


# --------------------------------------------------------------------------------------------
# The commands


def test_studies_commands(tmp_path: Path, mirror: Path) -> None:
    db = tmp_path / "sf.duckdb"
    result = runner.invoke(app, ["studies", "list", "--json"])
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    assert [r["study"] for r in listed] == ["besiroglu2024", "gadre2024"]
    assert listed[1]["files"] == 209

    result = runner.invoke(app, ["studies", "load", "besiroglu2024", "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert "245 runs" in result.stdout and "1 from the mirror" in result.stdout
    result = runner.invoke(app, ["studies", "load", "besiroglu2024", "--db", str(db)])
    assert "already loaded" in result.stdout

    result = runner.invoke(app, ["studies", "list", "--json", "--db", str(db)])
    rows = {r["study"]: r for r in json.loads(result.stdout)}
    assert rows["besiroglu2024"]["runs_loaded"] == 245 and rows["besiroglu2024"]["current"]
    assert rows["gadre2024"]["runs_loaded"] == 0

    result = runner.invoke(app, ["studies", "load", "nope", "--db", str(db)])
    assert result.exit_code == 1
    assert "unknown study 'nope'" in result.output and "Traceback" not in result.output
