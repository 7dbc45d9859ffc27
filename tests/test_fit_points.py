"""Fits of the runs people log: points from curves (--points), metrics resolved per run, every
run accounted for, the cosine warning; logs written to files and ingested by the real ingest
into a real DuckDB file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from scalefit import store, user_sql
from scalefit.cli import app
from scalefit.config import load_settings
from scalefit.errors import ConfigError
from scalefit.laws import chinchilla_loss

runner = CliRunner()

# The generating law (Hoffmann et al. 2022's approach 3 constants, Besiroglu et al.'s B).
TRUE = {"E": 1.82, "A": 482.0, "B": 2085.4, "alpha": 0.3478, "beta": 0.3658}
SIZES = np.geomspace(2e7, 1e9, 6)
HORIZONS = (5, 20, 80)  # tokens per parameter at the end of each run
TOKENS_PER_STEP = 2**18
NOISE = 0.005  # relative, per logged evaluation


def _write_run(folder: Path, params: float, horizon: int, rng: np.random.Generator) -> int:
    """One run as a user logs it: ``log.jsonl`` (step, tokens, eval_loss) beside ``run.json``
    (params, project). A constant learning rate: the loss at a checkpoint is the law's at the
    tokens seen so far (Hägele et al. 2024), with 0.5% noise."""
    run = folder / f"n{params:.2e}-{horizon}x"
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"params": params, "project": "sweep"}))
    last = int(params * horizon / TOKENS_PER_STEP)
    steps = np.unique(np.geomspace(max(1, last // 100), last, 25).astype(int))
    tokens = steps * TOKENS_PER_STEP
    loss = chinchilla_loss(params, tokens, **TRUE) * np.exp(rng.normal(0, NOISE, steps.size))
    with (run / "log.jsonl").open("w") as fh:
        fh.write(json.dumps({"step": 0, "tokens": 0, "eval_loss": 10.9}) + "\n")  # before training
        for s, t, v in zip(steps, tokens, loss, strict=True):
            fh.write(json.dumps({"step": int(s), "tokens": int(t), "eval_loss": float(v)}) + "\n")
    return steps.size


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 6-size x 3-horizon sweep of loss curves, ingested into a store."""
    root = tmp_path_factory.mktemp("sweep")
    rng = np.random.default_rng(15)
    for params in SIZES:
        for horizon in HORIZONS:
            _write_run(root / "logs", params, horizon, rng)
    db = root / "sweep.duckdb"
    result = runner.invoke(app, ["ingest", str(root / "logs"), "--db", str(db)])
    assert result.exit_code == 0, result.output
    return db


def _fit(db: Path, *args: str) -> dict:
    argv = ["fit", "--where", "project = 'sweep'", "--db", str(db), "--json", *args]
    result = runner.invoke(app, argv, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.slow
def test_checkpoints_of_a_sweep_recover_the_law_that_made_it(sweep: Path) -> None:
    out = _fit(sweep, "--points", "checkpoints", "--bootstrap", "150", "--seed", "1")
    assert out["points"] == {"mode": "checkpoints", "metric": None, "warnings": [], "warmup": 0.1}
    assert out["settings"]["resample"] == "runs"  # the default with checkpoints
    for name, true in TRUE.items():
        low, high = out["ci"][name]
        assert low <= true <= high, (name, true, low, high)
    assert out["estimates"]["alpha"] == pytest.approx(TRUE["alpha"], abs=0.03)
    assert out["estimates"]["beta"] == pytest.approx(TRUE["beta"], abs=0.03)
    # Every run contributed its checkpoints from 10% of its tokens on (and not step 0).
    assert len(out["runs"]) == 18
    assert all(r["metric"] == "eval_loss" and r["points"] >= 5 for r in out["runs"])
    assert sum(r["points"] for r in out["runs"]) == out["n_points"]
    with store.connect(sweep, read_only=True) as con:
        kept = store.query(
            con,
            "SELECT p.run_id, min(o.tokens) AS first, max(o.tokens) AS last FROM fit_points p "
            "JOIN observations o USING (run_id, step, metric) WHERE p.fit_id = ? "
            "GROUP BY p.run_id",
            [out["fit_id"]],
        )
        record = json.loads(
            store.run(con, "SELECT input FROM fits WHERE fit_id = ?", [out["fit_id"]])[0][0]
        )
    assert kept.height == 18
    assert (kept["first"] >= 0.1 * kept["last"]).all()
    assert record["points"] == "checkpoints" and record["warmup"] == 0.1
    assert record["metrics"] == ["eval_loss"] and record["runs_used"] == 18


def test_final_and_envelope_points_of_the_sweep(sweep: Path) -> None:
    final = _fit(sweep, "--bootstrap", "0")
    assert final["n_points"] == 18 and final["points"]["mode"] == "final"
    assert all(r["points"] == 1 for r in final["runs"])
    checkpoints = _fit(sweep, "--points", "checkpoints", "--bootstrap", "0")
    text = runner.invoke(
        app, ["fit", "--where", "project = 'sweep'", "--db", str(sweep), "--bootstrap", "0"]
    )
    assert "runs: all 18 selected runs contributed eval_loss (final points: 1 each)" in text.stdout
    envelope = _fit(sweep, "--points", "envelope", "--bootstrap", "0")
    # A different point set is a different fit.
    ids = {final["fit_id"], checkpoints["fit_id"], envelope["fit_id"]}
    assert len(ids) == 3
    assert envelope["settings"]["points"] == "envelope"
    # The reports read each fit's points again by id: the same points, tokens and losses.
    from scalefit.fit_store import select_runs
    from scalefit.report import FIT_POINTS_SQL

    for out, mode in ((checkpoints, "checkpoints"), (envelope, "envelope")):
        with user_sql.connect_locked(sweep) as con:
            picked = select_runs(con, where="project = 'sweep'", points=mode).points
        with store.connect(sweep, read_only=True) as con:
            again = store.query(con, FIT_POINTS_SQL, [out["fit_id"]])
        assert again.sort("run_id", "step").equals(picked.sort("run_id", "step")), mode
    assert 5 < envelope["n_points"] < checkpoints["n_points"]
    assert {r["run_id"] for r in envelope["runs"]} == {r["run_id"] for r in final["runs"]}
    off = [r for r in envelope["runs"] if r["points"] == 0]
    assert off and all(r["left_out"].startswith("no point on the envelope") for r in off)
    # The envelope: loss falls with compute, and no checkpoint of any run lies below it.
    with store.connect(sweep, read_only=True) as con:
        pts = store.query(
            con,
            "SELECT r.params * o.tokens AS nd, o.value AS loss FROM fit_points p "
            "JOIN observations o USING (run_id, step, metric) JOIN runs r USING (run_id) "
            "WHERE p.fit_id = ? ORDER BY nd",
            [envelope["fit_id"]],
        )
        every = store.query(  # every checkpoint past the warm-up (10% of its run's tokens)
            con,
            "SELECT r.params * o.tokens AS nd, o.value AS loss FROM observations o "
            "JOIN runs r USING (run_id) "
            "QUALIFY o.tokens >= 0.1 * max(o.tokens) OVER (PARTITION BY o.run_id)",
        )
    assert pts.height == envelope["n_points"]
    assert (np.diff(pts["loss"].to_numpy()) < 0).all()
    for nd, loss in pts.iter_rows():
        below = every.filter((pl.col("nd") <= nd) & (pl.col("loss") < loss))
        assert below.height == 0, (nd, loss, below)


def _metric_runs(folder: Path) -> None:
    """Runs logging different metrics, as the tools write them (one CSV each)."""
    rng = np.random.default_rng(3)
    specs = {
        "hf": (3e7, {"eval_loss": 1.0, "loss": 1.02}),  # HF Trainer: eval and train loss
        "nano": (8e7, {"val_loss": 1.0, "train_loss": 0.98}),  # nanoGPT
        "trainonly": (2e8, {"train_loss": 1.0}),
        "otherset": (5e8, {"eval_wiki_loss": 1.0}),
    }
    for name, (params, metrics) in specs.items():
        steps = np.arange(1, 21) * 200
        tokens = steps * TOKENS_PER_STEP
        base = chinchilla_loss(params, tokens, **TRUE)
        cols = {"step": steps, "tokens": tokens}
        for metric, scale in metrics.items():
            cols[metric] = base * scale * np.exp(rng.normal(0, NOISE, steps.size))
        run = folder / name
        run.mkdir(parents=True)
        (run / "run.json").write_text(json.dumps({"params": params, "project": "mixed"}))
        pl.DataFrame(cols).write_csv(run / "log.csv")
    # No token count anywhere: no tokens column, no tokens_per_step, no total.
    run = folder / "notokens"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"params": 1e8, "project": "mixed"}))
    pl.DataFrame({"step": [100, 200], "eval_loss": [4.0, 3.8]}).write_csv(run / "log.csv")


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mixed")
    _metric_runs(root / "logs")
    db = root / "mixed.duckdb"
    result = runner.invoke(app, ["ingest", str(root / "logs"), "--db", str(db)])
    assert result.exit_code == 0, result.output
    return db


def _fit_mixed(db: Path, *args: str) -> tuple[dict, str]:
    argv = ["fit", "--where", "project = 'mixed'", "--db", str(db), "--law", "kaplan-d"]
    result = runner.invoke(app, [*argv, "--points", "checkpoints", "--bootstrap", "0", *args])
    assert result.exit_code == 0, result.output
    return (json.loads(result.stdout) if "--json" in args else {}), result.stderr


def test_each_run_contributes_its_own_metric_or_says_why_not(mixed: Path) -> None:
    out, stderr = _fit_mixed(mixed, "--json")
    runs = {r["run_id"]: r for r in out["runs"]}
    assert set(runs) == {"hf", "nano", "trainonly", "otherset", "notokens"}
    assert runs["hf"]["metric"] == "eval_loss"  # preferred to HF's training `loss`
    assert runs["nano"]["metric"] == "val_loss"
    assert runs["trainonly"]["metric"] == "train_loss"
    # 20 evaluations each; the first is before 10% of the run's tokens (the warm-up)
    assert all(runs[r]["points"] == 19 for r in ("hf", "nano", "trainonly"))
    assert runs["otherset"]["metric"] is None and runs["otherset"]["points"] == 0
    assert "none of the metrics eval_loss, val_loss" in runs["otherset"]["left_out"]
    assert "has: eval_wiki_loss; pass --metric" in runs["otherset"]["left_out"]
    assert runs["notokens"]["left_out"].startswith("no token count")
    assert "left_out" not in runs["hf"]
    assert out["n_points"] == 57
    # Losses on different data are not comparable: said once, on stderr and in the JSON.
    mixing = [w for w in out["points"]["warnings"] if "mix metrics" in w]
    assert len(mixing) == 1 and "train_loss (1 run)" in mixing[0]
    assert "warning: the points mix metrics" in stderr
    assert "2 of 5 selected runs left out" in stderr


def test_text_output_lists_every_run(mixed: Path) -> None:
    argv = ["fit", "--where", "project = 'mixed'", "--db", str(mixed), "--law", "kaplan-d"]
    result = runner.invoke(
        app,
        [*argv, "--points", "checkpoints", "--bootstrap", "0", "--no-save"],
        env={"COLUMNS": "250"},
    )
    assert result.exit_code == 0, result.output
    for text in ("runs: checkpoints points", "hf", "val_loss", "train_loss", "otherset"):
        assert text in result.stdout, text
    assert "no token count" in result.stdout


def test_a_forced_metric_leaves_out_the_runs_without_it(mixed: Path) -> None:
    out, _ = _fit_mixed(mixed, "--json", "--metric", "train_loss")
    runs = {r["run_id"]: r for r in out["runs"]}
    assert runs["nano"]["metric"] == "train_loss" and runs["trainonly"]["metric"] == "train_loss"
    assert runs["hf"]["left_out"] == "no `train_loss` observations (has: eval_loss, loss)"
    assert out["points"]["metric"] == "train_loss" and out["points"]["warnings"] == [
        "3 of 5 selected runs left out (see `runs`)"
    ]


def test_nothing_to_fit_says_why_for_every_run(mixed: Path) -> None:
    result = runner.invoke(
        app, ["fit", "--where", "run_id = 'notokens'", "--db", str(mixed), "--bootstrap", "0"]
    )
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert (
        lines[-1].startswith("error: none of the 1 runs matching") and "no token count" in lines[-1]
    )
    assert "Traceback" not in result.output


def test_checkpoints_of_cosine_runs_warn_once_naming_them(sweep: Path, tmp_path: Path) -> None:
    db = tmp_path / "cosine.duckdb"
    db.write_bytes(sweep.read_bytes())
    with store.connect(db) as con:  # runs.schedule, as the ingest of r15 writes it
        con.execute("ALTER TABLE runs ADD COLUMN IF NOT EXISTS schedule VARCHAR")
        con.execute("UPDATE runs SET schedule = 'constant'")
        con.execute("UPDATE runs SET schedule = 'cosine' WHERE run_id LIKE '%-80x'")
        cosine = sorted(
            r[0]
            for r in con.execute("SELECT run_id FROM runs WHERE schedule = 'cosine'").fetchall()
        )
    out = _fit(db, "--points", "checkpoints", "--bootstrap", "0", "--no-save")
    warns = [w for w in out["points"]["warnings"] if "cosine" in w]
    assert len(warns) == 1 and all(r in warns[0] for r in cosine)
    assert "--points final" in warns[0] and "Hägele et al. 2024" in warns[0]
    for mode in ("final", "envelope"):  # the final loss of a cosine run is what it claims
        out = _fit(db, "--points", mode, "--bootstrap", "0", "--no-save")
        assert not [w for w in out["points"]["warnings"] if "cosine" in w]


def test_resample_points_with_checkpoints_is_allowed_but_warned(sweep: Path) -> None:
    argv = ["fit", "--where", "project = 'sweep'", "--db", str(sweep), "--no-save"]
    result = runner.invoke(
        app, [*argv, "--points", "checkpoints", "--resample", "points", "--bootstrap", "2"]
    )
    assert result.exit_code == 0, result.output
    assert "warning: --resample points with --points checkpoints" in result.stderr
    result = runner.invoke(app, [*argv, "--law", "envelope", "--points", "final"])
    assert result.exit_code == 1 and "use --points checkpoints" in result.stderr


def test_points_setting_option_beats_environment_beats_file(
    sweep: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SCALEFIT_FIT_POINTS", raising=False)
    (tmp_path / "scalefit.toml").write_text('[fit]\npoints = "envelope"\n')
    assert _fit(sweep, "--bootstrap", "0", "--no-save")["points"]["mode"] == "envelope"
    monkeypatch.setenv("SCALEFIT_FIT_POINTS", "checkpoints")
    assert _fit(sweep, "--bootstrap", "0", "--no-save")["points"]["mode"] == "checkpoints"
    out = _fit(sweep, "--bootstrap", "0", "--no-save", "--points", "final")
    assert out["points"]["mode"] == "final"
    monkeypatch.setenv("SCALEFIT_FIT_POINTS", "last")
    result = runner.invoke(app, ["fit", "--db", str(sweep)])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "error: environment variable SCALEFIT_FIT_POINTS: [fit] points = 'last' is not valid: "
        "unknown point mode; allowed: one of final, checkpoints, envelope"
    ]


def test_points_setting_is_checked() -> None:
    assert load_settings(environ={}).fit_points == "final"
    with pytest.raises(ConfigError, match=r"option --points: \[fit\] points = 'all'"):
        load_settings(environ={}, options={"fit_points": ("--points", "all")})
