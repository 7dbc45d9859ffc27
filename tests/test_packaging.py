"""`pip install .` and `pip install -e .` give a working scalefit with no path trick.

The repository keeps ``schemas/``, ``flows/`` and ``datasets/`` at the top level;
``scalefit/schemas`` etc. are relative symlinks to them. The wheel (built by hatchling, which
follows the links) ships them inside the ``scalefit`` namespace and nothing else at the top
level; the editable install is one ``.pth`` entry for the repository root. In both, and in the
clone, ``scalefit.__path__`` is the package folder alone, so ``tests``, ``benchmarks`` and
``dev`` are never importable as ``scalefit.*``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINKED = ("schemas", "flows", "datasets")
NOT_SUBPACKAGES = ("tests", "benchmarks", "dev")

pytestmark = pytest.mark.slow

# What a probe prints: where scalefit and its linked folders come from, the package path,
# the curated datasets it reads, and which top-level repository folders leak into scalefit.*.
PROBE = """
import importlib, importlib.util, json, sys
import scalefit, scalefit.schemas, scalefit.flows
from scalefit.load.curated import datasets_dir, read_curated
leaks = [n for n in NOT_SUBPACKAGES if importlib.util.find_spec("scalefit." + n) is not None]
print(json.dumps({
    "scalefit": scalefit.__file__,
    "path": list(scalefit.__path__),
    "schemas": scalefit.schemas.__file__,
    "flows": scalefit.flows.__file__,
    "datasets": str(datasets_dir()),
    "tables": sorted(scalefit.schemas.TABLES),
    "counts": read_curated().counts(),
    "leaks": leaks,
}))
""".replace("NOT_SUBPACKAGES", repr(NOT_SUBPACKAGES))


def _build(version: str, directory: Path) -> Path:
    """A wheel of the repository built in-process by hatchling (offline, no isolation)."""
    from hatchling.builders.wheel import WheelBuilder

    directory.mkdir(parents=True, exist_ok=True)
    (path,) = WheelBuilder(str(ROOT)).build(directory=str(directory), versions=[version])
    return Path(path)


def _install(wheel: Path, target: Path) -> Path:
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "-q"),
            *("--disable-pip-version-check", "--target", str(target), str(wheel)),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return target


def _probe(prelude: str, cwd: Path, env: dict[str, str] | None = None) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", prelude + PROBE],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build("standard", tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="module")
def editable(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build("editable", tmp_path_factory.mktemp("editable"))


def test_the_linked_folders_are_relative_symlinks_in_the_repository() -> None:
    for name in LINKED:
        link = ROOT / "scalefit" / name
        assert link.is_symlink(), f"scalefit/{name} must be a symlink to ../{name}"
        assert os.readlink(link) == f"../{name}"
        assert link.resolve() == (ROOT / name).resolve()


def test_scalefit_init_does_not_extend_its_path() -> None:
    source = (ROOT / "scalefit" / "__init__.py").read_text(encoding="utf-8")
    assert "__path__" not in source.split('"""', 2)[-1]


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
    for name in LINKED:  # every file of the linked folders, and only once
        files = sorted(
            str(p.relative_to(ROOT / name))
            for p in (ROOT / name).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts
        )
        shipped = sorted(n.split("/", 2)[2] for n in names if n.startswith(f"scalefit/{name}/"))
        assert shipped == files
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


def test_a_wheel_built_from_the_sdist_has_the_same_files(wheel: Path, tmp_path: Path) -> None:
    # `python -m build` makes the sdist first, then the wheel from it: the linked folders must
    # survive that round trip (a tree walk that skips what it has seen would drop them).
    import tarfile

    from hatchling.builders.sdist import SdistBuilder
    from hatchling.builders.wheel import WheelBuilder

    (sdist,) = SdistBuilder(str(ROOT)).build(directory=str(tmp_path / "sdist"))
    with tarfile.open(sdist) as archive:
        archive.extractall(tmp_path / "unpacked", filter="data")
    (tree,) = (tmp_path / "unpacked").iterdir()
    assert (tree / "schemas" / "__init__.py").is_file()  # the repository's folders too
    (rebuilt,) = WheelBuilder(str(tree)).build(
        directory=str(tmp_path / "wheel"), versions=["standard"]
    )
    assert sorted(zipfile.ZipFile(rebuilt).namelist()) == sorted(zipfile.ZipFile(wheel).namelist())


def test_installed_wheel_works_from_any_directory(wheel: Path, tmp_path: Path) -> None:
    site = _install(wheel, tmp_path / "site")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = dict(os.environ, PYTHONPATH=str(site))
    got = _probe("", elsewhere, env)
    package = site / "scalefit"
    assert got["scalefit"] == str(package / "__init__.py")
    assert got["path"] == [str(package)]
    assert got["schemas"] == str(package / "schemas" / "__init__.py")
    assert got["flows"] == str(package / "flows" / "__init__.py")
    assert got["datasets"] == str(package / "datasets")
    assert {"models", "runs", "fits"} <= set(got["tables"])
    assert got["counts"]["models"] >= 34
    assert got["leaks"] == []
    listed = subprocess.run(
        [sys.executable, "-m", "scalefit", "models", "-f", "json"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)) == got["counts"]["models"]


def test_editable_wheel_is_one_path_entry_for_the_repository(editable: Path) -> None:
    archive = zipfile.ZipFile(editable)
    names = archive.namelist()
    assert not [n for n in names if n.startswith("scalefit/")], "the editable copies files"
    (pth,) = [n for n in names if n.endswith(".pth")]
    assert archive.read(pth).decode().strip() == str(ROOT)


def test_editable_install_imports_the_repository(editable: Path, tmp_path: Path) -> None:
    site = _install(editable, tmp_path / "site")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # The test environment may itself be an editable install of this clone: drop the
    # repository from sys.path, then let the freshly installed .pth (and it alone) add it back.
    prelude = (
        "import os, site, sys\n"
        f"sys.path[:] = [p for p in sys.path if os.path.realpath(p or '.') != {str(ROOT)!r}]\n"
        f"site.addsitedir({str(site)!r})\n"
    )
    got = _probe(prelude, elsewhere)
    package = ROOT / "scalefit"
    assert got["scalefit"] == str(package / "__init__.py")
    assert got["path"] == [str(package)]
    # resolved through the symlinks, so edits in schemas/ and flows/ are live
    assert Path(got["schemas"]).resolve() == ROOT / "schemas" / "__init__.py"
    assert Path(got["flows"]).resolve() == ROOT / "flows" / "__init__.py"
    assert Path(got["datasets"]).resolve() == ROOT / "datasets"
    assert got["leaks"] == []


def test_the_clone_imports_without_an_install(tmp_path: Path) -> None:
    # `python -m scalefit` from the clone (what dev.py and the tests do) sees the same layout
    prelude = (
        "import os, sys\n"
        f"sys.path[:] = [p for p in sys.path if os.path.realpath(p or '.') != {str(ROOT)!r}]\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
    )
    got = _probe(prelude, tmp_path)
    assert got["path"] == [str(ROOT / "scalefit")]
    assert got["leaks"] == []
