"""The whole refresh, as a scheduled user runs it: curated data, a loopback upstream source,
a log folder, reports and plots; then again (idempotent), then with the upstream server down
(the cache serves)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest
from loopback import serve_directory

from scalefit import store
from scalefit.load.curated import datasets_dir
from scalefit.report import parquet_metadata

pytestmark = pytest.mark.slow


def _points() -> str:
    """30 (N, C, loss) points of Hoffmann et al.'s approach-3 law with 1% noise, as the
    upstream file would have them (no token column: tokens = C / 6N)."""
    rng = np.random.default_rng(7)
    lines = ["Model Size,Training FLOP,loss"]
    for n in np.logspace(7.5, 9.5, 6):
        for d in np.logspace(8.5, 10.5, 5):
            loss = (1.69 + 406.4 / n**0.34 + 410.7 / d**0.28) * np.exp(rng.normal(0, 0.01))
            lines.append(f"{n:.6g},{6 * n * d:.6g},{loss:.6f}")
    return "\n".join(lines) + "\n"


POINTS = _points()


def _datasets_with_upstream(root: Path, url: str, text: str) -> Path:
    """A copy of the shipped datasets whose only upstream is ``url`` (pinned to ``text``),
    without the published studies (their refresh is tested in tests/test_studies_refresh.py;
    here they would be downloaded from GitHub, which no test may reach)."""
    target = Path(shutil.copytree(datasets_dir(), root / "datasets"))
    shutil.rmtree(target / "studies", ignore_errors=True)
    kept, inside = [], False
    for line in (target / "sources.toml").read_text().splitlines(keepends=True):
        if line.startswith("["):
            inside = line.startswith("[upstreams.")
        if not inside:
            kept.append(line)
    toml = "".join(kept)
    toml += (
        "[upstreams.loop_points]\n"
        f'url = "{url}"\n'
        f'sha256 = "{hashlib.sha256(text.encode()).hexdigest()}"\n'
        'kind = "runs"\nformat = "csv"\nsource_id = "besiroglu2024"\n'
        "[upstreams.loop_points.columns]\n"
        'params = "Model Size"\nflops = "Training FLOP"\nloss = "loss"\n'
    )
    (target / "sources.toml").write_text(toml)
    return target


def _snapshot(db: Path) -> dict[str, pl.DataFrame]:
    with store.connect(db, read_only=True) as con:
        return {
            t: store.query(con, f"SELECT * FROM {t}")
            for t in (
                "models",
                "runs",
                "observations",
                "comparison_results",
                "ingests",
                "laws",
                "fits",
                "fit_samples",
            )
        }


def test_full_refresh_with_upstream_and_logs(
    prefect_harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scalefit.flows.refresh import refresh

    monkeypatch.delenv("SCALEFIT_OFFLINE")  # downloads on, to 127.0.0.1 only (guarded)
    monkeypatch.setenv("SCALEFIT_CACHE", str(tmp_path / "cache"))
    www = tmp_path / "www"
    www.mkdir()
    (www / "points.csv").write_text(POINTS)
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "run.csv").write_text(
        "run_id,step,tokens,loss,params\nmine,1,1e9,3.3,5e7\nmine,2,2e9,3.1,5e7\n"
    )
    config = tmp_path / "scalefit.toml"
    config.write_text(
        f'[store]\ndb = "sf.duckdb"\nreports = "out"\n[ingest]\nfolders = ["{logs}"]\n'
    )

    with serve_directory(www) as srv:
        datasets = _datasets_with_upstream(tmp_path, f"{srv.url}/points.csv", POINTS)
        first = refresh(config_path=config, datasets_dir=datasets)
        assert first.ok, first.errors
        assert srv.requests == ["/points.csv"]
        second = refresh(config_path=config, datasets_dir=datasets)
    db = tmp_path / "sf.duckdb"
    after_second = _snapshot(db)

    # Tables: curated models, the upstream's points and the user's run, all loaded.
    runs = after_second["runs"]
    assert sorted(runs["project"].unique()) == ["default", "loop_points"]
    assert runs.filter(pl.col("project") == "loop_points").height == 30
    assert after_second["models"].height == 34
    assert after_second["observations"].height == 30 + 2

    # Fits: one per project and law; the user's single run cannot support five parameters
    # (skipped, with the reason), the upstream's sweep is fitted and becomes a law.
    fits = first.steps["fits"]
    assert fits["default/chinchilla"].status == "skipped"
    assert "points" in fits["default/chinchilla"].message
    assert fits["loop_points/chinchilla"].status == "fitted"
    assert second.steps["fits"]["loop_points/chinchilla"].status == "unchanged"
    fitted = after_second["laws"].filter(pl.col("law_id") == "fitted_loop_points_chinchilla")
    assert fitted["origin"].to_list() == ["fitted"]
    comparisons = after_second["comparison_results"]
    assert comparisons.filter(pl.col("law_id") == "fitted_loop_points_chinchilla").height == 34

    # Idempotent: the second run changed nothing, value for value.
    assert second.changes == {} and second.ok
    assert {u.upstream: u.status for u in second.steps["upstreams"]} == {"loop_points": "ok"}

    # Reports: readable by polars and by DuckDB, with metadata; plots are real PNGs.
    out = tmp_path / "out"
    for name in ("models", "comparisons", "fits", "frontier"):
        path = out / f"{name}.parquet"
        frame = pl.read_parquet(path)
        n = duckdb.connect().execute(f"SELECT count(*) FROM read_parquet('{path}')").fetchall()
        assert n[0][0] == frame.height
        meta = parquet_metadata(path)
        assert meta["scalefit.table"] == name and meta["scalefit.rows"] == str(frame.height)
        assert len(meta["scalefit.input_sha256"]) == 64
    assert pl.read_parquet(out / "frontier.parquet")["flops"].min() == pytest.approx(1e18)
    for name in (
        "tokens_vs_params.png",
        "law_fit_fitted_loop_points_chinchilla.png",
        "bootstrap_fitted_loop_points_chinchilla.png",
    ):
        png = out / name
        assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 30_000, name
    assert pl.read_parquet(out / "fits.parquet").height == 1

    # Upstream server down: the cache serves, with a warning, and nothing changes.
    third = refresh(config_path=config, datasets_dir=datasets)
    (result,) = third.steps["upstreams"]
    assert result.status == "warning" and "cache" in result.message.lower()
    assert third.ok and third.changes == {}
    after_third = _snapshot(db)
    for table, frame in after_second.items():
        assert after_third[table].equals(frame), table
