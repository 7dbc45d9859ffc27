"""What the command line imports before it works (issue 16), and that the shortcuts change
nothing: `--version` answers without typer, `--help` renders without rich's markdown and
traceback modules yet prints exactly what typer prints, `fit --input` reads a plain CSV
without polars into the same points, and the refresh starts no server of its own when one is
configured. Timings are measured in benchmarks/ (RESULTS.md), never asserted here."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from scalefit import __version__
from scalefit._points_csv import read_points_fast
from scalefit.laws import chinchilla_loss

_ENV = {**os.environ, "TERMINAL_WIDTH": "100", "COLUMNS": "100"}


def _python(code: str, *args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env=env or _ENV,
        check=True,
    )
    return done.stdout


def test_version_answers_without_typer() -> None:
    out = _python(
        "import sys; sys.argv = ['scalefit', '--version']; from scalefit.cli import main; main();"
        "print(sorted(m for m in ('typer', 'rich', 'click') if m in sys.modules))"
    )
    assert out.splitlines() == [f"scalefit {__version__}", "[]"]


@pytest.mark.parametrize("args", [["--help"], ["fit", "--help"], ["ingest", "--help"], []])
def test_help_is_typers_own_without_markdown_or_traceback(args: list[str]) -> None:
    """The help printed through ``main()`` (stand-ins while typer.rich_utils loads) is byte
    for byte the help typer prints when it imports everything itself; afterwards the real
    rich modules import normally."""
    check = (
        "import sys\n"
        "from scalefit.cli import main\n"
        "code = 0\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    code = exc.code or 0\n"
        "skipped = sorted(m for m in ('markdown_it', 'rich.markdown', 'rich.traceback', "
        "'pygments') if m in sys.modules)\n"
        "import rich.markdown, rich.traceback\n"
        "real = rich.markdown.Markdown('x').markup == 'x' and "
        "hasattr(rich.traceback.Traceback, 'from_exception')\n"
        "import typer.rich_utils as u\n"
        "sys.stderr.write(repr((skipped, real, u.Markdown('y').markup, code)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", check, *args], capture_output=True, text=True, env=_ENV
    )
    plain = subprocess.run(
        [sys.executable, "-c", "from scalefit.cli import app; app()", *args],
        capture_output=True,
        text=True,
        env=_ENV,
    )
    assert done.stderr.strip() == repr(([], True, "y", plain.returncode)), done.stderr
    assert done.stdout == plain.stdout and "Usage" in done.stdout


def test_each_command_is_registered_by_its_module() -> None:
    """`main()` builds the application with the module of the command it runs: the table
    of commands (``_app.COMMANDS``) names every command of the whole application, and the
    application of one command has that command (and its module's others) only."""
    from typer.main import get_command

    from scalefit.cli._app import COMMANDS, build

    def names(app: object) -> set[str]:
        return set(get_command(app).commands)  # type: ignore[arg-type, attr-defined]

    assert names(build()) == set(COMMANDS)
    for command, module in COMMANDS.items():
        own = names(build(command))
        assert command in own and {COMMANDS[n] for n in own} == {module}, command


@pytest.mark.parametrize(
    "args",
    [
        ["fit", "--bootstrap", "many"],
        ["fit", "--no-such-option"],
        ["fitt"],
        ["plan"],
        ["studies", "list", "--help"],
        ["sql", "--help"],
        ["--no-such-option"],
    ],
)
def test_one_commands_application_answers_as_the_whole_one(args: list[str]) -> None:
    """Errors and help through `main()` (which builds only the command's module) are
    byte for byte what the whole application prints, with the same exit status."""
    ran = [
        subprocess.run(
            [sys.executable, "-c", code, *args], capture_output=True, text=True, env=_ENV
        )
        for code in ("from scalefit.cli import main; main()", "from scalefit.cli import app; app()")
    ]
    assert ran[0].returncode == ran[1].returncode
    assert (ran[0].returncode == 0) == ("--help" in args)
    assert (ran[0].stdout, ran[0].stderr) == (ran[1].stdout, ran[1].stderr)
    assert "Usage" in ran[0].stdout + ran[0].stderr


def _points_file(path: Path, n: int = 40, *, run_ids: list[str] | None = None) -> Path:
    rng = np.random.default_rng(3)
    params = np.exp(rng.uniform(np.log(1e7), np.log(1e10), n))
    tokens = np.exp(rng.uniform(np.log(1e8), np.log(1e11), n))
    loss = chinchilla_loss(params, tokens, 1.8, 480.0, 2100.0, 0.35, 0.37)
    frame = pl.DataFrame(
        {"params": params.round(0).astype(np.int64), "tokens": tokens, "loss": loss}
    )
    if run_ids is not None:
        frame = frame.with_columns(run_id=pl.Series(run_ids[:n]))
    frame.write_csv(path)
    return path


def test_a_plain_csv_reads_like_polars_reads_it(tmp_path: Path) -> None:
    from scalefit import fit as fitting
    from scalefit import fit_store

    path = _points_file(tmp_path / "p.csv", run_ids=[f"run-{i % 7}" for i in range(40)])
    fast = read_points_fast(path)
    assert fast is not None and list(fast) == ["params", "tokens", "loss", "run_id"]
    slow = fit_store.read_points(path)
    for name in ("params", "tokens", "loss"):
        assert np.array_equal(fast[name], slow[name].cast(pl.Float64).to_numpy())
    assert fast["run_id"] == slow["run_id"].to_list()
    a = fitting.fit_named(fast, "chinchilla", n_bootstrap=5, seed=2, resample="runs")
    b = fitting.fit_named(slow, "chinchilla", n_bootstrap=5, seed=2, resample="runs")
    assert a.fit_id == b.fit_id and a.estimates == b.estimates and a.ci == b.ci


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ('params,tokens,loss\n1,2,"3"\n', "a quoted field"),
        ("params,tokens,loss\n1,,3\n", "a missing value"),
        ("params,tokens,loss\n1,2\n", "a short row"),
        ("params,tokens,loss,run_id\n1,2,3,01\n", "a run_id polars reads as a number"),
        ("params,tokens,loss,note\n1,2,3,x\n", "a text column"),
        ("params,tokens,loss\n1, 2,3\n", "a space polars would not read as a number"),
        ("params,tokens,loss\nnan,2,3\n", "a value polars reads as text"),
        ("params,tokens,loss\n12345678901234567890,2,3\n", "an integer past Int64"),
        ("params,params,loss\n1,2,3\n", "a repeated column"),
        ("params,tokens,loss\n", "no rows"),
    ],
)
def test_anything_but_a_plain_csv_is_left_to_polars(tmp_path: Path, text: str, why: str) -> None:
    path = tmp_path / "p.csv"
    path.write_text(text)
    assert read_points_fast(path) is None, why


def test_the_fast_reader_imports_no_polars(tmp_path: Path) -> None:
    path = _points_file(tmp_path / "p.csv", n=5)
    out = _python(
        "import sys; from scalefit._points_csv import read_points_fast; "
        "cols = read_points_fast(sys.argv[1]); "
        "print(sorted(cols), 'polars' in sys.modules)",
        str(path),
    )
    assert out.strip() == "['loss', 'params', 'tokens'] False"


def test_importing_the_fit_package_imports_no_polars() -> None:
    """`scalefit.fit` imports polars only where a frame is read or made (issue 16): importing
    the fitting package, and every public name of it (each loads its module), loads neither
    polars nor the store's DuckDB or pandera."""
    out = _python(
        "import sys; import scalefit.fit; from scalefit.fit import *; "
        "print(sorted(m for m in ('polars', 'duckdb', 'pandera') if m in sys.modules))"
    )
    assert out.strip() == "[]"


@pytest.mark.parametrize(
    ("package", "eager", "submodule"),
    [
        ("scalefit.fit", ("scalefit._names",), "forms"),
        ("scalefit.laws", ("scalefit.laws.base", "scalefit.laws.formulas"), "kaplan"),
    ],
)
def test_every_public_name_is_served_from_its_module(
    package: str, eager: tuple[str, ...], submodule: str
) -> None:
    """The packages import their modules on first use of a name (PEP 562): importing one
    loads none of the modules it serves lazily, and every name of ``__all__`` is then the
    very object its module defines, listed by ``dir()``; a submodule is an attribute too."""
    module = importlib.import_module(package)
    lazy: dict[str, str] = module._LAZY
    whole = getattr(module, "_WHOLE_REGISTRY", ())
    for name in module.__all__:
        value = getattr(module, name)
        if name in lazy:
            assert value is getattr(importlib.import_module(f"{package}.{lazy[name]}"), name)
        elif name not in whole:  # imported with the package, from its cheap modules
            homes = [importlib.import_module(m) for m in eager]
            assert any(getattr(home, name, None) is value for home in homes), name
        assert name in dir(module)
    assert getattr(module, submodule) is importlib.import_module(f"{package}.{submodule}")
    with pytest.raises(AttributeError, match="no_such_name"):
        module.no_such_name  # noqa: B018
    served = sorted({f"{package}.{m}" for m in lazy.values()})
    out = _python(
        f"import sys, {package}; print(sorted(m for m in {served!r} if m in sys.modules))"
    )
    assert out.strip() == "[]"


def test_the_law_registry_is_whole_and_in_order_whichever_law_loads_first() -> None:
    """``scalefit.laws.REGISTRY`` (and ``LAW_FORMS``, ``law_from_parameters``) see every law
    form, in the order the law modules register them, even when a command has loaded one
    law module first; a fit form's law class is looked up when a fit ends, and is the
    registry's class of its form."""
    first = _python(
        "from scalefit.laws import KaplanLaw, ChinchillaLaw\n"
        "from scalefit.laws import REGISTRY, LAW_FORMS, law_from_parameters\n"
        "law = law_from_parameters('tokens_per_param', {'ratio': 20.0})\n"
        "print(list(REGISTRY), LAW_FORMS, law.form)"
    )
    eager = _python(
        "import scalefit.laws.allocation, scalefit.laws.chinchilla\n"
        "import scalefit.laws.data_constrained, scalefit.laws.kaplan\n"
        "import scalefit.laws.overtraining, scalefit.laws.inference\n"
        "from scalefit.laws.base import REGISTRY\n"
        "print(list(REGISTRY), tuple(sorted(REGISTRY)), 'tokens_per_param')"
    )
    assert first == eager
    threads = _python(  # first uses racing in threads: each sees every form
        "import threading, scalefit.laws as laws\n"
        "seen, start = [], threading.Barrier(8)\n"
        "def use(i):\n"
        "    start.wait()\n"
        "    seen.append(len(laws.REGISTRY) if i % 2 else len(laws.LAW_FORMS))\n"
        "threads = [threading.Thread(target=use, args=(i,)) for i in range(8)]\n"
        "[t.start() for t in threads]; [t.join() for t in threads]\n"
        "print(seen)"
    )
    from scalefit import laws
    from scalefit.fit import REGISTRY
    from scalefit.schemas import vocabulary

    assert threads.strip() == repr([len(vocabulary.LAW_FORMS)] * 8)
    assert set(laws.LAW_FORMS) == set(vocabulary.LAW_FORMS)
    for name, form in REGISTRY.items():
        law = form.law(dict.fromkeys(form.names, 0.5))
        assert law.form == form.fit_form and type(law) is laws.REGISTRY[law.form].cls, name


def test_the_seed_type_is_served_without_numpy_random_until_asked() -> None:
    """Checking a fit's settings (the seed among them) imports no numpy.random; ``Seed``, the
    seed setting's type, is there when asked for, and a generator is still told apart."""
    out = _python(
        "import sys, numpy as np\n"
        "from scalefit.fit.settings import FitSettings\n"
        "s = FitSettings(seed=3)\n"
        "before = 'numpy.random' in sys.modules\n"
        "from scalefit.fit.settings import Seed\n"
        "g = np.random.default_rng(3)\n"
        "t = FitSettings(seed=g)\n"
        "import typing; from scalefit.fit.settings import FitOptions\n"
        "hints = [typing.get_type_hints(c)['seed'] for c in (FitSettings, FitOptions)]\n"
        "print(before, Seed == int | np.random.Generator | None, s.seed_setting, "
        "t.seed_setting, t.rng() is g, hints == [Seed, Seed])"
    )
    assert out.split() == ["False", "True", "3", "None", "True", "True"]


_HEAVY = (
    *("polars", "duckdb", "pandera", "prefect", "pyarrow", "scipy", "pydantic", "numpy.ma"),
    *("numpy.random", "secrets", "tomllib"),
    *("scalefit.fit.allocation", "scalefit.fit.bootstrap", "scalefit.fit.extrapolation"),
    *("scalefit.laws.allocation", "scalefit.laws.data_constrained", "scalefit.laws.inference"),
    *("scalefit.laws.kaplan", "scalefit.laws.overtraining"),
)
"""What ``scalefit fit --input`` on a plain CSV never imports (issue 16): pydantic neither
(~75 ms: the settings are checked without it, and typer < 0.28 coerces no option through
it), nor ``numpy.ma`` (~10 ms: ``np.unique``, ``np.setdiff1d`` and ``np.isin`` import it,
so the search does without them), nor ``numpy.random`` (~10 ms with ``secrets``: a seed is
only used by a bootstrap), nor ``tomllib`` without a settings file, nor the modules of the
procedures, laws and bootstrap a chinchilla fit without resamples does not use."""


@pytest.mark.parametrize("as_json", [True, False])
def test_fit_input_imports_no_polars_nor_the_store(tmp_path: Path, as_json: bool) -> None:
    """The real command, run through ``main()`` in a fresh interpreter, fits a plain CSV
    and prints its result without importing polars, DuckDB, pandera, Prefect or pydantic."""
    path = _points_file(tmp_path / "p.csv", run_ids=[f"r{i}" for i in range(40)])
    check = (
        "import sys\n"
        "from scalefit.cli import main\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
        f"sys.stderr.write(repr(sorted(m for m in {_HEAVY!r} if m in sys.modules)))\n"
    )
    args = ["fit", "--input", str(path), "--bootstrap", "0", "--no-save"]
    done = subprocess.run(
        [sys.executable, "-c", check, *args, *(["--json"] if as_json else [])],
        capture_output=True,
        text=True,
        env={k: v for k, v in _ENV.items() if k != "SCALEFIT_CONFIG"},
        cwd=tmp_path,  # no scalefit.toml: a settings file is read with tomllib
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == "[]"
    if as_json:
        out = json.loads(done.stdout)
        assert out["n_points"] == 40 and out["points"] == {"source": "file"}
    else:
        assert "chinchilla fit to 40 points" in done.stdout


def test_columns_as_arrays_give_the_points_a_frame_gives() -> None:
    """Points from columns that are already arrays (read without polars) equal the points
    from a polars frame of the same columns; other columns go through polars, with its
    errors."""
    from scalefit.errors import FitError
    from scalefit.fit.points import _Arrays, as_constrained_points, as_points

    rng = np.random.default_rng(5)
    cols = {
        "params": rng.uniform(1e7, 1e9, 12),
        "tokens": rng.uniform(1e8, 1e10, 12),
        "unique_tokens": rng.uniform(1e8, 1e9, 12),
        "loss": rng.uniform(2.0, 3.0, 12),
        "run_id": [f"r{i % 3}" for i in range(12)],
    }
    assert _Arrays.of(cols) is not None
    for read in (
        lambda d: as_points(d, need=("params", "tokens")),
        lambda d: as_points(d, need=("params", "tokens"), target="params"),
        as_constrained_points,
    ):
        fast, slow = read(cols), read(pl.DataFrame(cols))
        for name in ("params", "tokens", "loss", "flops", "run_id", "x", "unique"):
            a, b = getattr(fast, name), getattr(slow, name)
            assert (a is None) == (b is None), name
            if a is not None:
                assert a.dtype == b.dtype and np.array_equal(a, b, equal_nan=a.dtype != object)
    assert fast.sha256() == slow.sha256()
    assert as_points(cols, need=()).params is not cols["params"]  # a copy, as polars makes
    for other in (
        {**cols, "run_id": np.arange(12.0)},  # polars casts a numeric run_id to text
        {**cols, "params": cols["params"].astype(np.int64)},
        {**cols, "params": list(cols["params"])},
        {**cols, "params": np.ma.masked_array(cols["params"])},
        {**cols, "params": cols["params"].astype(">f8")},
        {**cols, "loss": cols["loss"][:5]},  # polars refuses columns of unequal lengths
        {**cols, "note": ["x"] * 12},
        {},
    ):
        assert _Arrays.of(other) is None
    with pytest.raises(FitError, match="no `loss` column"):
        as_points({"params": cols["params"]}, need=())
    with pytest.raises(Exception, match="height of column"):
        as_points({**cols, "loss": cols["loss"][:5]}, need=())


@pytest.mark.parametrize("preset", [None, "some_plugin"])
def test_settings_are_read_and_checked_without_pydantic(preset: str | None) -> None:
    """Reading and checking the settings (a file, the environment, an option) imports no
    pydantic at all, and leaves ``PYDANTIC_DISABLE_PLUGINS`` as it found it."""
    env = {k: v for k, v in _ENV.items() if k != "PYDANTIC_DISABLE_PLUGINS"}
    env["SCALEFIT_SCALE_WORKERS"] = "3"
    if preset is not None:
        env["PYDANTIC_DISABLE_PLUGINS"] = preset
    out = _python(
        "import os, sys, tempfile; from scalefit.config import load_settings\n"
        "path = os.path.join(tempfile.mkdtemp(), 'scalefit.toml')\n"
        "open(path, 'w').write('[fit]\\nseed = 5\\n[schedule]\\ncron = \"0 4 * * *\"\\n')\n"
        "s = load_settings(path, options={'jobs': ('--jobs', 2)})\n"
        "print(s.jobs, s.workers, s.seed, s.cron, 'pydantic' in sys.modules, "
        "os.environ.get('PYDANTIC_DISABLE_PLUGINS'))",
        env=env,
    )
    assert out.split() == ["2", "3", "5", "0", "4", "*", "*", "*", "False", str(preset)]


def test_fit_input_prints_the_same_either_way(tmp_path: Path, monkeypatch) -> None:
    """`scalefit fit --input` gives the same table and JSON from the fast reader as from
    polars' (the fast reader turned off)."""
    from typer.testing import CliRunner

    from scalefit import _points_csv
    from scalefit.cli import app

    path = _points_file(tmp_path / "p.csv", run_ids=[f"r{i}" for i in range(40)])
    outputs = []
    for fast in (True, False):
        if not fast:
            monkeypatch.setattr(_points_csv, "read_points_fast", lambda path: None)
        args = ["fit", "--input", str(path), "--bootstrap", "5", "--seed", "1"]
        table = CliRunner().invoke(app, args)
        as_json = CliRunner().invoke(app, [*args, "--json"])
        assert table.exit_code == 0 and as_json.exit_code == 0, table.output
        outputs.append((table.stdout, json.loads(as_json.stdout)))
    assert outputs[0] == outputs[1]


def test_a_configured_server_is_used_and_none_is_started() -> None:
    """With PREFECT_API_URL set, the refresh's early server start does nothing (and does not
    even import Prefect's server): Prefect uses the configured server."""
    env = {**_ENV, "PREFECT_API_URL": "http://127.0.0.1:9/api"}
    out = _python(
        "import sys; from scalefit.flows._env import start_ephemeral_server; "
        "s = start_ephemeral_server(); s.wait(); "
        "print(s._thread is None, 'prefect.server.api.server' in sys.modules)",
        env=env,
    )
    assert out.strip() == "True False"


@pytest.mark.slow
def test_the_server_started_early_is_the_one_prefect_uses(tmp_path: Path) -> None:
    """Without a configured server, the server `scalefit refresh` starts before importing the
    flow is the ephemeral server the flow run then talks to (one server, not two)."""
    env = {**_ENV, "PREFECT_HOME": str(tmp_path / "prefect")}
    env.pop("PREFECT_API_URL", None)
    code = (
        "from scalefit.flows._env import start_ephemeral_server\n"
        "started = start_ephemeral_server()\n"
        "from prefect import flow\n"
        "from prefect.context import get_run_context\n"
        "from prefect.server.api.server import SubprocessASGIServer\n"
        "started.wait()\n"
        "@flow\n"
        "def where():\n"
        "    return str(get_run_context().client.api_url)\n"
        "used = where()\n"
        "print(used.rstrip('/') == SubprocessASGIServer().api_url, "
        "len(SubprocessASGIServer._instances))\n"
    )
    assert _python(code, env=env).strip().splitlines()[-1] == "True 1"
