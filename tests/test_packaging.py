"""`pip install .` gives a working scalefit: the wheel ships schemas, flows and datasets
inside the `scalefit` namespace and nothing at the top level but `scalefit`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (path,) = out.glob("scalefit-*.whl")
    return path


def test_wheel_layout(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"scalefit"}
    for needed in (
        "scalefit/schemas/__init__.py",
        "scalefit/flows/refresh.py",
        "scalefit/datasets/sources.toml",
        "scalefit/datasets/gpt3.csv",
    ):
        assert needed in names


def test_installed_wheel_works_from_any_directory(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(site),
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = dict(os.environ, PYTHONPATH=str(site))
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, scalefit, scalefit.schemas, scalefit.flows;"
            "from scalefit.load.curated import datasets_dir, read_curated;"
            "print(json.dumps([scalefit.__file__, str(datasets_dir()), read_curated().counts()]))",
        ],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert probe.returncode == 0, probe.stderr
    module_file, datasets, counts = json.loads(probe.stdout)
    assert module_file.startswith(str(site))
    assert datasets.startswith(str(site))
    assert counts["models"] >= 34
    listed = subprocess.run(
        [sys.executable, "-m", "scalefit", "models", "-f", "json"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)) == counts["models"]
