"""Start-up of the ``scalefit`` command (issue 16): ``--help``, ``--version``, and
``fit --input`` on ~250 points with ``--bootstrap 0``.

Each command runs ``--repeat`` times in a fresh process; with ``--before DIR`` (a checkout of
an older scalefit, e.g. ``git worktree add /tmp/before dce417e`` or ``git archive dce417e |
tar -x -C /tmp/before``) the same commands run from that tree too (``PYTHONPATH=DIR``, same
interpreter and libraries), alternating with this one so that the machine's load hits both
alike. Each command runs once untimed first, so that its bytecode is compiled and cached as in
an installed package (``PYTHONDONTWRITEBYTECODE`` is unset for the children: with it, every
run compiles scalefit's ~50 modules again). A command that fails stops the benchmark.
Reported: min and median wall time, and min CPU time (user + system, from ``getrusage`` of
the child), which other jobs' load moves least: on a quiet machine a single-threaded
start-up's wall time is its CPU time. ``--importtime`` also prints the
modules that cost most (``python -X importtime``, cumulative, one run).

Usage::

    python benchmarks/cli_startup.py [--repeat 10] [--before DIR] [--importtime]
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


def importtime(args: list[str], env: dict[str, str], top: int = 12) -> list[str]:
    """The ``top`` top-level imports by cumulative time (ms), one run."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *args[1:]],
        env=env,
        cwd=env["_CWD"],
        capture_output=True,
        text=True,
    )
    found = []
    for line in done.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \| ( *)(\S+)", line)
        if m and len(m.group(3)) <= 2:  # packages a top-level import pulls in directly
            found.append((int(m.group(2)) / 1000, m.group(3) + m.group(4)))
    found.sort(reverse=True)
    return [f"{ms:8.1f} ms  {name}" for ms, name in found[:top]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--before", type=Path, help="an older scalefit tree to compare")
    parser.add_argument("--importtime", action="store_true")
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
        for label, cmd in commands.items():
            argv = [sys.executable, "-c", main_py, *cmd]
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
                    f"median {statistics.median(walls):.3f} s; CPU min {min(cpus):.3f} s"
                )
            if args.importtime:
                for tree, tree_env in trees.items():
                    print(f"  imports of {label} ({tree}):")
                    print("\n".join("  " + line for line in importtime(argv, tree_env)))
        print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
