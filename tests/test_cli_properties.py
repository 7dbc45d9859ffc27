"""Every command's options driven with generated values (hypothesis): whatever a user types,
the exit status is 0, 1 or 2, nothing reaches stderr as a traceback or an "internal error"
(a bug caught by the last-resort handler), and where JSON was asked (`--json`, `-f json`) and
the command ran (status 0 or 1), stdout is one strict JSON value (no NaN or Infinity).

Coverage (in-process, with typer's CliRunner, on files and one small store prepared once):

- ``fit``: every option; inputs are a Chinchilla-shaped file, an IsoFLOP sweep, a file with a
  zero loss, a missing file, a non-table file; the store, a missing and a corrupt database.
  ``--jobs`` stays at 1 or invalid (process pools are tested in test_cli_fit.py).
- ``plan``, ``models``, ``ingest``: every option.
- ``sql``: well-formed and malformed single statements in every format, on the store, a
  missing and a corrupt database. Hostile statements and odd result types are the SQL
  engineer's suite (issue 11, "SQL that users write").
- ``report``: the database choices (few examples: it writes plots).
- ``refresh`` and ``serve``: only values that fail before any flow runs or any schedule
  starts (a missing, unreadable or invalid config; an invalid cron or time zone), so that
  the test stays bounded; their full runs are covered by test_refresh_*.py and
  test_serve.py.
- the top level: ``--version``, ``--help``, unknown commands.

Usage errors (status 2) are reported by click before the command runs: stdout is then
empty, so JSON is only checked for statuses 0 and 1.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from scalefit._names import LAW_NAMES
from scalefit.cli import app
from scalefit.errors import ScalefitError
from scalefit.laws import chinchilla_loss
from scalefit.load.logs import ingest_paths

SETTINGS = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,  # the same examples on every run: CI stays reproducible
)


@dataclass(frozen=True)
class Files:
    root: Path
    store: Path
    ingest_db: Path
    points: Path
    sweep: Path
    zero_loss: Path
    not_a_table: Path
    bad_db: Path
    missing: Path
    logs: dict[str, Path]
    configs: dict[str, Path]


def _chinchilla_points() -> pl.DataFrame:
    rng = np.random.default_rng(0)
    n = 40
    params = np.exp(rng.uniform(np.log(1e7), np.log(1e9), n))
    tokens = np.exp(rng.uniform(np.log(1e8), np.log(1e10), n))
    loss = chinchilla_loss(params, tokens, E=1.8, A=480.0, B=2100.0, alpha=0.35, beta=0.37)
    return pl.DataFrame(
        {"run_id": [f"r{i}" for i in range(n)], "params": params, "tokens": tokens, "loss": loss}
    )


def _sweep() -> pl.DataFrame:
    rows = []
    for flops in (1e18, 1e19, 1e20):
        for params in np.geomspace(1e7, 1e9, 5):
            x = math.log(params) - 0.5 * math.log(flops / 120)
            rows.append(
                {
                    "run_id": f"c{flops:.0e}-{params:.0e}",
                    "params": params,
                    "tokens": flops / (6 * params),
                    "flops": flops,
                    "loss": 3.0 + 0.05 * x * x,
                }
            )
    return pl.DataFrame(rows)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    root = tmp_path_factory.mktemp("cli-properties")
    points = root / "points.csv"
    _chinchilla_points().write_csv(points)
    sweep = root / "sweep.parquet"
    _sweep().write_parquet(sweep)
    zero_loss = root / "zero.csv"
    zero_loss.write_text("params,tokens,loss\n1e8,2e9,3.0\n2e8,4e9,0\n4e8,8e9,2.6\n")
    not_a_table = root / "notes.txt"
    not_a_table.write_text("hello\n")
    bad_db = root / "corrupt.duckdb"
    bad_db.write_text("not a database\n")

    logs_dir = root / "logs"
    logs_dir.mkdir()
    logs = {
        "good": logs_dir / "good.csv",
        "empty_step": logs_dir / "empty_step.csv",
        "no_step": logs_dir / "no_step.csv",
        "zero": logs_dir / "zero_loss.csv",
        "nested": logs_dir / "nested.jsonl",
    }
    lines = ["run_id,step,tokens,loss,params,project"]
    for run, params in (("a", 2e7), ("b", 5e7), ("c", 1e8), ("d", 3e8)):
        for step in range(1, 6):
            tokens = step * 4e8
            loss = float(chinchilla_loss(params, tokens, 1.8, 480.0, 2100.0, 0.35, 0.37))
            lines.append(f"{run},{step},{tokens},{loss},{params},p")
    logs["good"].write_text("\n".join(lines) + "\n")
    logs["empty_step"].write_text("run_id,step,tokens,loss\nr,1,10,3.0\nr,,20,2.9\n")
    logs["no_step"].write_text("run_id,tokens,loss\nr,10,3.0\n")
    logs["zero"].write_text("run_id,step,tokens,loss\nr,1,10,3.0\nr,2,20,0\n")
    logs["nested"].write_text('{"run_id": "n", "step": 1, "x": ' + "[" * 5000 + "]" * 5000 + "}\n")
    logs["dir"] = logs_dir

    store = root / "store.duckdb"
    ingest_paths(store, [logs["good"]])
    configs = {
        "missing": root / "nowhere.toml",
        "broken": root / "broken.toml",
        "bad_law": root / "bad_law.toml",
        "bad_cron": root / "bad_cron.toml",
    }
    configs["broken"].write_text("not toml [[[\n")
    configs["bad_law"].write_text('[fit]\nlaws = ["gpt"]\n')
    configs["bad_cron"].write_text('[schedule]\ncron = "99 99 * * *"\n')
    cwd = Path.cwd()
    os.chdir(root)  # no ./scalefit.toml or ./scalefit.duckdb of the repository is read
    yield Files(
        root=root,
        store=store,
        ingest_db=root / "ingest.duckdb",
        points=points,
        sweep=sweep,
        zero_loss=zero_loss,
        not_a_table=not_a_table,
        bad_db=bad_db,
        missing=root / "missing.csv",
        logs=logs,
        configs=configs,
    )
    os.chdir(cwd)


def _asks_json(args: list[str]) -> bool:
    """Whether the last ``-f`` of ``args`` asks for JSON (click keeps the last one)."""
    values = [args[i + 1] for i, a in enumerate(args[:-1]) if a == "-f"]
    return bool(values) and values[-1] == "json"


def _strict_json(text: str) -> object:
    def refuse(name: str) -> None:
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def check(args: list[str], *, wants_json: bool = False) -> None:
    """Run ``scalefit args`` in-process and check the contract of the module docstring."""
    result = CliRunner().invoke(app, args)
    shown = f"scalefit {args!r} -> {result.exit_code}\n{result.stdout}\n{result.stderr}"
    assert result.exception is None or isinstance(result.exception, SystemExit), shown
    assert result.exit_code in (0, 1, 2), shown
    for marker in ("Traceback", "internal error"):
        assert marker not in result.stdout + result.stderr, shown
    if wants_json and result.exit_code in (0, 1):
        try:
            _strict_json(result.stdout)
        except ValueError as exc:
            raise AssertionError(f"{exc}\n{shown}") from None


# ---------------------------------------------------------------- value strategies

_CHARS = st.characters(codec="utf-8", exclude_categories=("Cs", "Cc"))
TEXT = st.text(_CHARS, max_size=12)
FLOATS = st.floats(allow_nan=True, allow_infinity=True).map(repr)
# An option's values: (what its type accepts, what it does not). A quarter of the examples
# draw from both ("wild": mostly usage errors, status 2); the others only from the first, so
# that they reach the command's own checks and work.
NUMBERS = (
    st.one_of(
        FLOATS,
        st.integers(-(2**70), 2**70).map(str),
        st.sampled_from(["0", "-0", "1e999", "-1e999", "1e-320", "nan", "inf", "1e3"]),
    ),
    st.one_of(st.sampled_from(["", "1_000", "abc"]), TEXT),
)
SMALL_INTS = (st.integers(0, 4).map(str), st.sampled_from(["-1", "", "x", "1.5", "1e2"]))
INTS = (st.integers(-(2**70), 2**70).map(str), TEXT)
COUNTS = st.one_of(
    st.sampled_from(["125M", "1.3e9", "2B", "0", "-1", "inf", "1e999", "abc", "1,000", "k"]),
    TEXT,
)
WHERE = st.one_of(
    st.sampled_from(["project = 'p'", "params > 0", "true", "project = 'none'", "nonsense (("]),
    st.text(st.sampled_from("abcdefgp0123456789 =<>()'"), max_size=16),
)


def _options(
    draw: st.DrawFn,
    options: dict[str, st.SearchStrategy | tuple[st.SearchStrategy, st.SearchStrategy]],
    flags: list[str],
    chosen: set[str] | None = None,
) -> list:
    """Some of ``options`` with drawn values, then some of ``flags`` (added to ``chosen``:
    a drawn value may itself read "--json", so the flags are not found by looking).

    A value strategy is one strategy, or a pair (values its type accepts, values it does
    not); the second is drawn from in "wild" examples only."""
    wild = draw(st.sampled_from([False, False, False, True]))
    args: list[str] = []
    for name, values in options.items():
        if isinstance(values, tuple):
            values = st.one_of(*values) if wild else values[0]
        if draw(st.booleans()):
            args += [name, draw(values)]
    for flag in flags:
        if draw(st.booleans()):
            args.append(flag)
            if chosen is not None:
                chosen.add(flag)
    return args


def _paths(files: Files, *extra: Path) -> st.SearchStrategy[str]:
    return st.sampled_from([str(p) for p in (files.store, files.bad_db, files.missing, *extra)])


# ---------------------------------------------------------------- commands


@settings(SETTINGS, max_examples=40)
@given(data=st.data())
def test_fit(files: Files, data: st.DataObject) -> None:
    flags: set[str] = set()
    # Mostly a file that fits (so that the fit's own checks are reached), else the store.
    inputs = [files.points, files.points, files.sweep, files.zero_loss, files.not_a_table]
    source = data.draw(st.sampled_from([*inputs, files.missing, None]))
    laws = st.sampled_from(list(LAW_NAMES))
    args = [
        "fit",
        "--db",  # the store unless the options say otherwise (the last --db counts)
        str(files.store),
        *(["--input", str(source)] if source else []),
        *_options(
            data.draw,
            {
                "--law": (laws, TEXT),
                "--where": WHERE,
                "--metric": (st.sampled_from(["loss", "eval_loss", "train_loss"]), TEXT),
                "--bootstrap": SMALL_INTS,
                "--seed": INTS,
                "--huber-delta": (st.one_of(st.just("1e-3"), NUMBERS[0]), NUMBERS[1]),
                "--resample": (
                    st.sampled_from(["points", "runs", "params"]),
                    st.one_of(st.just("run"), TEXT),
                ),
                "--db": _paths(files),
                "--extrapolate": SMALL_INTS,
                "--jobs": (st.just("1"), st.sampled_from(["0", "-1", "x"])),
            },
            ["--irreducible", "--json", "--no-save"],
        ),
    ]
    if "--bootstrap" not in args[1::2]:
        args += ["--bootstrap", "3"]  # the default 1000 resamples: too slow for many examples
    check(args, wants_json="--json" in flags)


@settings(SETTINGS, max_examples=60)
@given(data=st.data())
def test_plan(files: Files, data: st.DataObject) -> None:
    flags: set[str] = set()
    laws = ["hoffmann2022_approach3", "kaplan2020", "rule_20_tokens_per_param", "muennighoff2023"]
    flops = data.draw(st.one_of(st.sampled_from(["1e22", "6e23", "1e300"]), NUMBERS[0]))
    args = [
        "plan",
        *(["--flops", flops] if data.draw(st.sampled_from([True] * 9 + [False])) else []),
        *_options(
            data.draw,
            {
                "--flops": (st.just("6e23"), NUMBERS[1]),  # a second --flops wins
                "--law": st.one_of(st.sampled_from(laws), st.sampled_from(laws), TEXT),
                "--unique-tokens": NUMBERS,
                "--inference-tokens": NUMBERS,
                "--target-loss": NUMBERS,
                "--db": _paths(files),
            },
            ["--json"],
        ),
    ]
    check(args, wants_json="--json" in flags)


FORMATS = (st.sampled_from(["table", "csv", "json"]), TEXT)


@settings(SETTINGS, max_examples=30)
@given(data=st.data())
def test_sql(files: Files, data: st.DataObject) -> None:
    queries = [
        "select 1 as one",
        "select * from runs",
        "select run_id, count(*) as n from observations group by run_id",
        "select * from nonexistent",
        "selec 1",
        "",
    ]
    query = data.draw(st.one_of(st.sampled_from(queries), TEXT))
    args = ["sql", query, *_options(data.draw, {"-f": FORMATS, "--db": _paths(files)}, [])]
    check(args, wants_json=_asks_json(args))


@settings(SETTINGS, max_examples=30)
@given(data=st.data())
def test_models(files: Files, data: st.DataObject) -> None:
    family = st.one_of(st.sampled_from(["GPT-3", "llama 3.1", "gpt3", ""]), TEXT)
    args = ["models", *_options(data.draw, {"--family": family, "-f": FORMATS}, [])]
    check(args, wants_json=_asks_json(args))


@settings(SETTINGS, max_examples=30)
@given(data=st.data())
def test_ingest(files: Files, data: st.DataObject) -> None:
    logs = [str(p) for p in (*files.logs.values(), files.missing)]
    paths = data.draw(st.lists(st.sampled_from(logs), min_size=1, max_size=2))
    db = st.sampled_from([str(files.ingest_db), str(files.bad_db)])
    options = {
        "--project": TEXT,
        "--params": COUNTS,
        "--tokens-per-step": COUNTS,
        "--format": (st.sampled_from(["csv", "jsonl", "parquet", "trainer_state", "wandb"]), TEXT),
        "--db": db,
    }
    check(["ingest", *paths, *_options(data.draw, options, [])])


@settings(SETTINGS, max_examples=4)
@given(data=st.data())
def test_report(files: Files, data: st.DataObject) -> None:
    out = st.sampled_from([str(files.root / "reports"), str(files.points)])
    check(["report", *_options(data.draw, {"--db": _paths(files), "--out": out}, [])])


@settings(SETTINGS, max_examples=15)
@given(data=st.data())
def test_refresh_with_a_config_that_fails_before_the_flow(files: Files, data: st.DataObject):
    config = data.draw(st.sampled_from(sorted(set(files.configs) - {"bad_cron"})))
    options = {"--db": TEXT, "--reports": TEXT, "--logs": TEXT}
    args = ["refresh", "--config", str(files.configs[config]), *_options(data.draw, options, [])]
    check([*args, *(["--offline"] if data.draw(st.booleans()) else [])])


@settings(SETTINGS, max_examples=30)
@given(data=st.data())
def test_serve_with_a_schedule_that_is_refused(files: Files, data: st.DataObject) -> None:
    from scalefit.config import load_settings
    from scalefit.schedule import check_cron

    cron = data.draw(st.one_of(st.sampled_from(["99 99 * * *", "* * *", "", "@never"]), TEXT))
    timezone = data.draw(st.one_of(st.sampled_from(["UTC", "Mars/Base", "Europe/Paris"]), TEXT))
    defaults = load_settings(None)  # an empty --cron or --timezone means the config's
    try:
        check_cron(cron or defaults.cron, timezone or defaults.timezone)
    except ScalefitError:
        pass
    else:
        assume(False)  # a valid schedule would start serving: not bounded
    options = {"--max-runs": SMALL_INTS}  # never reached: the schedule is refused first
    args = ["serve", "--cron", cron, "--timezone", timezone, *_options(data.draw, options, [])]
    check(args)


@pytest.mark.parametrize(
    "args",
    [[], ["--version"], ["--help"], ["nope"], ["fit", "--help"], ["plan"], ["sql"], ["ingest"]],
)
def test_top_level(files: Files, args: list[str]) -> None:
    check(args)
