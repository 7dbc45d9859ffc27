"""Start-up of the ``scalefit`` command (issue 16): ``--help``, ``--version``, and
``fit --input`` on ~250 points with ``--bootstrap 0``.

Each command runs ``--repeat`` times in a fresh process; with ``--before DIR`` (a checkout of
an older scalefit, e.g. ``git worktree add /tmp/before dce417e`` or ``git archive dce417e |
tar -x -C /tmp/before``) the same commands run from that tree too (``PYTHONPATH=DIR``, same
interpreter and libraries), alternating with this one so that the machine's load hits both
alike. Each command runs once untimed first, so that its bytecode is compiled and cached as in
an installed package (``PYTHONDONTWRITEBYTECODE`` is unset for the children: with it, every
run compiles scalefit's ~50 modules again). A command that fails stops the benchmark.
Reported: min and median wall time, and min and median CPU time (user + system, from
``getrusage`` of the child), which other jobs' load moves least: on a quiet machine a
single-threaded start-up's wall time is its CPU time. ``--importtime`` also prints the
modules that cost most (``python -X importtime``, cumulative, one run).

Usage::

    python benchmarks/cli_startup.py [--repeat 10] [--before DIR] [--importtime] [--split]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def points_csv(path: Path, n: int = 252, seed: int = 0) -> Path:
    """~250 points of a Chinchilla-like law with 2% noise (as benchmarks/fit_speed.py)."""
    rng = np.random.default_rng(seed)
    params = np.exp(rng.uniform(np.log(1e7), np.log(1e10), n))
    tokens = np.exp(rng.uniform(np.log(1e8), np.log(1e11), n))
    loss = (1.8 + 480.0 / params**0.35 + 2100.0 / tokens**0.37) * np.exp(
        0.02 * rng.standard_normal(n)
    )
    # plain floats: under numpy 2 the repr of a numpy scalar is ``np.float64(...)``
    rows = "".join(
        f"{float(p)!r},{float(t)!r},{float(v)!r}\n"
        for p, t, v in zip(params, tokens, loss, strict=True)
    )
    path.write_text("params,tokens,loss\n" + rows)
    return path


def run(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds of one command in a fresh process (run in the temp dir: ``-c``
    puts the working directory before ``PYTHONPATH``). A command that fails stops the
    benchmark with its stderr: a failing command's time is not the command's."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(
        args, env=env, cwd=env["_CWD"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(
            f"{' '.join(args[3:])} exited with status {done.returncode} "
            f"(PYTHONPATH={env.get('PYTHONPATH', '')}):\n{done.stderr.decode(errors='replace')}"
        )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def importtime(args: list[str], env: dict[str, str], top: int = 12, runs: int = 3) -> list[str]:
    """What the command imports (``python -X importtime``; of ``runs`` runs, the one with the
    median total): the total, the ``top`` imports by cumulative time (ms) among those the
    command and its first imports make, and the self time summed by package."""
    found: list[tuple[float, list[tuple[float, str]], dict[str, float]]] = []
    for _ in range(runs):
        done = subprocess.run(
            [sys.executable, "-X", "importtime", *args[1:]],
            env=env,
            cwd=env["_CWD"],
            capture_output=True,
            text=True,
        )
        total, cumulative, by_package = 0.0, [], {}
        for line in done.stderr.splitlines():
            m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \| ( *)(\S+)", line)
            if not m:
                continue
            self_ms, cum_ms, depth, name = int(m[1]) / 1000, int(m[2]) / 1000, len(m[3]), m[4]
            if depth == 0:
                total += cum_ms
            if depth <= 2:  # packages a top-level import pulls in directly
                cumulative.append((cum_ms, m[3] + name))
            parts = name.split(".")
            package = ".".join(parts[:2]) if parts[0] == "scalefit" else parts[0]
            by_package[package] = by_package.get(package, 0.0) + self_ms
        found.append((total, cumulative, by_package))
    found.sort(key=lambda run: run[0])
    total, cumulative, by_package = found[len(found) // 2]
    cumulative.sort(reverse=True)
    packages = sorted(by_package.items(), key=lambda kv: -kv[1])[:top]
    return [
        f"total {total:.1f} ms (median of {runs} runs); largest, cumulative:",
        *(f"  {ms:8.1f} ms  {name}" for ms, name in cumulative[:top]),
        "self time by package: "
        + ", ".join(f"{name} {ms:.1f}" for name, ms in packages)
        + f", other {total - sum(ms for _, ms in packages):.1f} ms",
    ]


SPLIT = r"""
import resource, sys, time
usage = resource.getrusage(resource.RUSAGE_SELF)
startup = usage.ru_utime + usage.ru_stime  # the interpreter's own start-up, and site
import importlib._bootstrap as bootstrap
clock = time.process_time
state = {"depth": 0, "imports": 0.0, "engine": 0.0, "engine_imports": 0.0, "in_engine": False}
find_and_load = bootstrap._find_and_load

def timed_search(search):
    def search_timed(*args, **kwargs):
        state["in_engine"], start = True, clock()
        try:
            return search(*args, **kwargs)
        finally:
            state["engine"] += clock() - start
            state["in_engine"] = False
    return search_timed

def timed_find_and_load(name, *args):
    # every import of a module not yet loaded passes here (statements, import_module)
    state["depth"] += 1
    start = clock()
    try:
        module = find_and_load(name, *args)
    finally:
        state["depth"] -= 1
        if not state["depth"]:
            state["imports"] += clock() - start
            if state["in_engine"]:
                state["engine_imports"] += clock() - start
    if name == "scalefit.fit.parametric":  # the engine: the multi-start search
        module.search = timed_search(module.search)
    return module

bootstrap._find_and_load = timed_find_and_load
start = clock()
from scalefit.cli import main
try:
    main()
except SystemExit as exc:
    assert not exc.code, exc.code
end = clock()
engine = state["engine"] - state["engine_imports"]
sys.stderr.write(repr({
    "startup": startup,
    "imports": state["imports"],
    "engine": engine,
    "glue": end - start - state["imports"] - engine,
}))
"""
"""Run in the child (``-c``): the command's CPU seconds split into the interpreter's
start-up, imports (every module loaded, wherever; including those the engine loads),
the engine (``scalefit.fit.multistart.search`` minus its imports) and the rest (glue:
typer's parsing, settings, reading the file, the result and its output)."""


def split(args: list[str], env: dict[str, str], repeat: int) -> str:
    """The median of ``repeat`` runs of each part of :data:`SPLIT` (CPU seconds)."""
    parts: dict[str, list[float]] = {}
    for _ in range(repeat):
        done = subprocess.run(
            [sys.executable, "-c", SPLIT, *args[3:]],
            env=env,
            cwd=env["_CWD"],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise SystemExit(f"split run failed:\n{done.stderr}")
        for name, value in eval(done.stderr.strip().splitlines()[-1]).items():
            parts.setdefault(name, []).append(value)
    medians = {name: statistics.median(values) for name, values in parts.items()}
    total = sum(medians.values())
    return f"CPU total {total:.3f} s: " + ", ".join(
        f"{name} {value:.3f} s ({value / total:.0%})" for name, value in medians.items()
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--before", type=Path, help="an older scalefit tree to compare")
    parser.add_argument("--importtime", action="store_true")
    parser.add_argument(
        "--split",
        action="store_true",
        help="the fit commands' CPU split: start-up, imports, engine, glue",
    )
    args = parser.parse_args()
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "SCALEFIT_DEBUG": "0"}
    env.pop("PYTHONPATH", None)
    # An installed package has its bytecode compiled: let the first (untimed) run of each
    # command write it, as an editable install's first run does, and time the runs after.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    trees = {"this tree": env}
    if args.before:
        trees["before"] = {**env, "PYTHONPATH": str(args.before.resolve())}
    with tempfile.TemporaryDirectory() as tmp:
        for tree_env in trees.values():
            tree_env["_CWD"] = tmp
        data = points_csv(Path(tmp) / "points.csv")
        main_py = "from scalefit.cli import main; main()"
        commands = {
            "--help": ["--help"],
            "--version": ["--version"],
            "fit --input (252 points, --bootstrap 0)": [
                *("fit", "--input", str(data), "--bootstrap", "0", "--no-save"),
            ],
            "fit --input ... --json": [
                *("fit", "--input", str(data), "--bootstrap", "0", "--json", "--no-save"),
            ],
        }
        print(f"load average before: {os.getloadavg()[0]:.2f}")
        # The floor the fit's start-up is measured against: the interpreter, numpy, and
        # reading the file (scalefit's own plain-CSV reader, as `fit --input` reads it).
        floor = (
            "import numpy, sys; from scalefit._points_csv import read_points_fast; "
            "read_points_fast(sys.argv[1])"
        )
        for label, cmd in {**commands, "reference: python + numpy + read the CSV": []}.items():
            argv = (
                [sys.executable, "-c", main_py, *cmd]
                if cmd
                else [sys.executable, "-c", floor, str(data)]
            )
            times: dict[str, list[tuple[float, float]]] = {t: [] for t in trees}
            for tree_env in trees.values():
                run(argv, tree_env)  # warm-up: bytecode written, files in the page cache
            for _ in range(args.repeat):
                for tree, tree_env in trees.items():
                    times[tree].append(run(argv, tree_env))
            for tree, values in times.items():
                walls = [w for w, _ in values]
                cpus = [c for _, c in values]
                print(
                    f"{label:42s} {tree:10s} wall min {min(walls):.3f} s "
                    f"median {statistics.median(walls):.3f} s; CPU min {min(cpus):.3f} s "
                    f"median {statistics.median(cpus):.3f} s"
                )
            if args.importtime and cmd:
                for tree, tree_env in trees.items():
                    print(f"  imports of {label} ({tree}):")
                    print("\n".join("  " + line for line in importtime(argv, tree_env)))
            if args.split and cmd and cmd[0] == "fit":
                for tree, tree_env in trees.items():
                    print(f"  split of {label} ({tree}): {split(argv, tree_env, args.repeat)}")
        print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
