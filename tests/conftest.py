"""Shared fixtures: real files and a real DuckDB file in tmp dirs, one Prefect test harness.

Prefect reads its settings when first imported, so the environment is set here, before any
test module imports it: a throwaway PREFECT_HOME, no telemetry, a generous server start-up.
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="scalefit-prefect-"))
if os.environ.get("PYTEST_XDIST_WORKER"):
    # Parallel workers (pytest -n): each its own Prefect home, so that two workers' ephemeral
    # servers never share one database file.
    os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="scalefit-prefect-")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
# No test may reach a host other than 127.0.0.1: upstream downloads are off unless a test
# turns them on explicitly against its own loopback server.
os.environ["SCALEFIT_OFFLINE"] = "1"

import logging
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from loopback import Server, serve_directory


@pytest.fixture(scope="session")
def prefect_harness():
    """One Prefect test harness (temporary database, ephemeral server) for the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=None):
        yield


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """Path of a fresh DuckDB file in the test's tmp dir (not yet created)."""
    return tmp_path / "scalefit.duckdb"


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any download from a host other than 127.0.0.1 before it leaves the machine."""
    real = urllib.request.urlopen

    def guarded(request: urllib.request.Request, *args: object, **kwargs: object) -> object:
        host = urllib.parse.urlsplit(request.full_url).hostname
        assert host == "127.0.0.1", f"a test tried to reach {request.full_url}"
        return real(request, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", guarded)


@pytest.fixture(autouse=True)
def root_log_handlers() -> Iterator[None]:
    """Each test leaves the root logger's handlers as it found them.

    A flow run in-process (a CliRunner `refresh`) lets Prefect install its console handler
    on the root logger, bound to the stream that test's runner captured and then closed; a
    later test's warning would then print a "Logging error" traceback from that handler.
    """
    before = logging.root.handlers[:]
    yield
    logging.root.handlers[:] = before


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """A static file server on 127.0.0.1 serving ``tmp_path / "www"``."""
    root = tmp_path / "www"
    root.mkdir()
    with serve_directory(root) as srv:
        yield srv


PUBLISHED_RUNS = Path(__file__).resolve().parents[2] / "shared" / "published-runs"
"""The studies' files as released, laid out as a mirror of the upstream repositories
(``<study>/<path>``): ``../shared/published-runs`` beside the repository root."""


@pytest.fixture(scope="session")
def published_runs() -> Path:
    """The shared mirror of the published studies; the test is skipped (saying where it
    looked) only when the folder is absent."""
    if not (PUBLISHED_RUNS / "gadre2024").is_dir():
        pytest.skip(f"the published runs are not at {PUBLISHED_RUNS} (shared/ beside the clone)")
    return PUBLISHED_RUNS


@pytest.fixture
def mirror(published_runs: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """SCALEFIT_UPSTREAM_MIRROR set to the shared published runs for this test."""
    monkeypatch.setenv("SCALEFIT_UPSTREAM_MIRROR", str(published_runs))
    return published_runs
