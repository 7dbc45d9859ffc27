"""Exit statuses say what happened: an upstream whose download fails with no cached copy makes
`scalefit refresh` exit 1 (as the README says); offline with no cache is a warning (exit 0).

A real HTTP server on 127.0.0.1, stopped to make the download fail; a real Prefect flow run.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from loopback import serve_directory
from test_refresh_full import POINTS, _datasets_with_upstream
from typer.testing import CliRunner

from scalefit.cli import app
from scalefit.errors import UpstreamUnavailableError
from scalefit.load import curated
from scalefit.load.upstream import fetch_upstream, load_upstreams

pytestmark = pytest.mark.slow


@pytest.fixture
def down_upstream(tmp_path: Path) -> Path:
    """A copy of the shipped datasets whose only upstream is on a loopback server that has
    since stopped (its port refuses connections)."""
    www = tmp_path / "www"
    www.mkdir()
    with serve_directory(www) as srv:
        url = f"{srv.url}/points.csv"
    return _datasets_with_upstream(tmp_path, url, POINTS)


def test_failed_download_with_nothing_cached_is_an_error(down_upstream: Path, tmp_path: Path):
    (upstream,) = load_upstreams(down_upstream)
    info = fetch_upstream(upstream, tmp_path / "cache", offline=False, timeout=5)
    assert (info.status, info.level, info.path) == ("failed", "error", None)
    assert "could not download" in info.message and "no cached copy" in info.message
    with pytest.raises(UpstreamUnavailableError):
        info.raise_for_status()
    offline = fetch_upstream(upstream, tmp_path / "cache", offline=True)
    assert (offline.status, offline.level) == ("unavailable", "warning")


def test_refresh_exits_1_when_an_upstream_cannot_be_had(
    prefect_harness, down_upstream: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(curated, "datasets_dir", lambda: down_upstream)
    monkeypatch.setenv("SCALEFIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SCALEFIT_OFFLINE")  # downloads on, to 127.0.0.1 only (guarded)
    result = CliRunner().invoke(app, ["refresh"])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output + result.stderr
    assert "error: upstream:loop_points: loop_points: could not download" in result.stderr
    # the other steps' work is kept: the curated models are in the store
    assert "models" in result.stdout and (tmp_path / "scalefit.duckdb").is_file()

    # Offline by choice, with nothing cached: a warning, exit 0.
    result = CliRunner().invoke(app, ["refresh", "--offline"])
    assert result.exit_code == 0, result.output
    assert "warning: upstream loop_points" in result.stderr
