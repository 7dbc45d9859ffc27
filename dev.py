#!/usr/bin/env python3
"""Set up scalefit in ``./.venv`` from a fresh clone and run it, with only Python 3.11+ and pip.

    python3 dev.py refresh [OPTIONS]   # load the curated data, fit, compare, write reports
    python3 dev.py test [PYTEST ARGS]  # the whole test suite
    python3 dev.py lint                # ruff check, ruff format --check, mypy
    python3 dev.py COMMAND ...         # any other `scalefit` command, e.g. `sql "select 1"`

The environment is (re)installed only when ``pyproject.toml`` changed since the last run.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("SCALEFIT_VENV", ROOT / ".venv"))
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")

# A separate, tiny environment with the DuckDB 1.x line most clients run, so that the test
# suite can check that a store written by scalefit opens there (tests/test_duckdb_compat.py).
COMPAT_VENV = Path(os.environ.get("SCALEFIT_DUCKDB14_VENV", ROOT / ".venv-duckdb14"))
COMPAT_REQUIREMENT = "duckdb>=1.4,<1.5"
COMPAT_PY = COMPAT_VENV / ("Scripts" if os.name == "nt" else "bin") / PY.name


def _say(message: str) -> None:
    print(f"[dev.py] {message}", file=sys.stderr, flush=True)


def ensure_env() -> None:
    """Create the venv and install scalefit (editable, with test extras) if needed."""
    if sys.version_info < (3, 11):  # noqa: UP036 - a clear message on an old Python
        sys.exit(f"scalefit needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    stamp = VENV / ".scalefit-installed"
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if PY.exists() and stamp.exists() and stamp.read_text() == want:
        return
    if not PY.exists():
        _say(f"creating {VENV}")
        venv.create(VENV, with_pip=True)
    _say("installing scalefit and its dependencies (first run only; a few minutes)")
    subprocess.run(
        [
            *(str(PY), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"),
            *("-e", f"{ROOT}[test]"),
        ],
        check=True,
    )
    stamp.write_text(want)


def ensure_compat_env() -> Path | None:
    """Build ``.venv-duckdb14`` (DuckDB 1.4 only) once; None when it cannot be installed
    (e.g. no package index), in which case the compatibility test skips and says why."""
    stamp = COMPAT_VENV / ".scalefit-installed"
    if COMPAT_PY.exists() and stamp.exists() and stamp.read_text() == COMPAT_REQUIREMENT:
        return COMPAT_PY
    _say(f"creating {COMPAT_VENV} with {COMPAT_REQUIREMENT} (first run only)")
    try:
        if not COMPAT_PY.exists():
            venv.create(COMPAT_VENV, with_pip=True)
        subprocess.run(
            [
                *(str(COMPAT_PY), "-m", "pip", "install", "--quiet"),
                *("--disable-pip-version-check", COMPAT_REQUIREMENT),
            ],
            check=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        _say(f"could not install {COMPAT_REQUIREMENT} ({exc}): the DuckDB 1.4 test will skip")
        return None
    stamp.write_text(COMPAT_REQUIREMENT)
    return COMPAT_PY


# The project's machines hold the studies' published files in a folder beside the clone, laid
# out as the upstream mirror scalefit reads (shared/published-runs/<study>/<path>).
SHARED_MIRROR = ROOT.parent / "shared" / "published-runs"


def command_environment() -> dict[str, str]:
    """The environment of a ``scalefit`` command run through dev.py: the published-runs folder
    beside the clone, when there is one, is the default upstream mirror, so a refresh on a
    machine without network still loads the published studies (verified by sha256 like a
    download). A ``SCALEFIT_UPSTREAM_MIRROR`` already in the environment is left as it is (set
    it empty to use scalefit.toml's ``[upstream] mirror``, or none)."""
    env = dict(os.environ)
    if SHARED_MIRROR.is_dir() and "SCALEFIT_UPSTREAM_MIRROR" not in env:
        env["SCALEFIT_UPSTREAM_MIRROR"] = str(SHARED_MIRROR)
    return env


def parallel(args: list[str]) -> list[str]:
    """pytest-xdist options for the whole suite: one worker per core (at most 2: this is what
    the project's machines and CI have), a test file's tests kept on one worker (their
    module-scoped stores and flow runs are built once). Measured on 2 cores: 722 tests in 6.5
    min against 12.3 min in one process. Passing ``-n`` yourself (``-n 0``: one process)
    overrides it."""
    if any(a == "-n" or a.startswith(("-n", "--numprocesses")) for a in args):
        return []
    return ["-n", str(min(2, os.cpu_count() or 1)), "--dist", "loadfile"]


def test_environment() -> dict[str, str]:
    """The environment the test suite runs in: Prefect kept local, quiet and in a temp home."""
    env = dict(os.environ)
    env.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="scalefit-prefect-"))
    env.setdefault("DO_NOT_TRACK", "1")
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    env.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    return env


def lint() -> int:
    """ruff check, ruff format --check and mypy, each run (so one report shows every
    problem); the exit status is the first nonzero one."""
    statuses = [
        subprocess.call(argv, cwd=ROOT)
        for argv in (
            [str(BIN / "ruff"), "check", "."],
            [str(BIN / "ruff"), "format", "--check", "."],
            [str(BIN / "mypy")],  # pyproject.toml: all of scalefit/, schemas/, flows/
        )
    ]
    return next((s for s in statuses if s), 0)


def main(argv: list[str]) -> int:
    if not argv or argv[0] in {"-h", "--help"}:
        print(__doc__)
        return 0
    command, rest = argv[0], argv[1:]
    ensure_env()
    if command == "test":
        env = test_environment()
        compat = ensure_compat_env()
        if compat is not None:
            env.setdefault("SCALEFIT_DUCKDB14_PYTHON", str(compat))
        return subprocess.call([str(PY), "-m", "pytest", *parallel(rest), *rest], cwd=ROOT, env=env)
    if command == "lint":
        return lint()
    return subprocess.call([str(BIN / "scalefit"), command, *rest], env=command_environment())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
