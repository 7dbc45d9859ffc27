"""What Prefect's ephemeral mode costs a ``scalefit refresh``, step by step (issue 16).

Each measurement runs in a fresh process with a fresh ``PREFECT_HOME`` (what a user's first
``scalefit refresh`` of the day pays; later runs reuse the home's database but still start a
server), and prints the seconds of each phase:

- ``imports``: ``import prefect`` and the flow module (``scalefit.flows.refresh``);
- ``server``: the temporary API server (``SubprocessASGIServer().start()``: a uvicorn
  subprocess that imports Prefect's server and migrates its SQLite database);
- ``empty_flow``: one run of a flow with no task (flow-run bookkeeping over HTTP);
- ``tasks_N``: the same flow with N trivial tasks, per task;
- ``overlap``: the server started in a thread while the flow module is imported, as
  ``scalefit refresh`` does since issue 16 (``scalefit.flows._env.start_ephemeral_server``):
  the wall time of imports + server when they overlap.

With ``--refresh``, the whole ``scalefit refresh`` command (curated datasets only: no mirror,
offline, a fresh DuckDB file, then a second run on the same file) is timed as well, and with
``--before DIR`` also an older scalefit tree's (``PYTHONPATH=DIR``), alternating.

Usage::

    python benchmarks/prefect_overhead.py [--repeat 3] [--tasks 10] [--refresh [--before DIR]]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_CHILD = r"""
import json, sys, time, threading
t0 = time.perf_counter()
mode, n_tasks = sys.argv[1], int(sys.argv[2])
out = {}
if mode == "overlap":
    from scalefit.flows._env import start_ephemeral_server
    started = start_ephemeral_server()
    import scalefit.flows.refresh  # noqa: F401  (the work the server start overlaps)
    t1 = time.perf_counter(); out["imports"] = t1 - t0
    started.wait()
    t2 = time.perf_counter(); out["server_wait_after_imports"] = t2 - t1
    out["imports+server"] = t2 - t0
else:
    import prefect  # noqa: F401
    import scalefit.flows.refresh  # noqa: F401
    t1 = time.perf_counter(); out["imports"] = t1 - t0
    from prefect.server.api.server import SubprocessASGIServer
    SubprocessASGIServer().start()
    t2 = time.perf_counter(); out["server"] = t2 - t1
from prefect import flow, task

@task
def tiny(i):
    return i

@flow
def empty():
    return 0

@flow
def with_tasks(n):
    return [tiny(i) for i in range(n)]

t3 = time.perf_counter(); empty()
t4 = time.perf_counter(); out["empty_flow"] = t4 - t3
empty()
t5 = time.perf_counter(); out["empty_flow_again"] = t5 - t4
with_tasks(n_tasks)
t6 = time.perf_counter(); out["per_task"] = (t6 - t5 - out["empty_flow_again"]) / max(n_tasks, 1)
out["total"] = t6 - t0
print(json.dumps(out))
"""


def _env(home: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PREFECT_HOME=home,
        DO_NOT_TRACK="1",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_LOGGING_LEVEL="WARNING",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
    )
    env.pop("PREFECT_API_URL", None)
    return env


def child(mode: str, n_tasks: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="prefect-home-") as home:
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, mode, str(n_tasks)],
            env=_env(home),
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


def refresh_runs(before: Path | None = None) -> list[float]:
    """Wall seconds of two ``scalefit refresh`` runs on one fresh store (curated data only);
    ``before``: run an older scalefit tree's command (``PYTHONPATH``)."""
    times = []
    with tempfile.TemporaryDirectory(prefix="refresh-bench-") as tmp:
        env = _env(str(Path(tmp) / "prefect"))
        env.pop("PYTHONPATH", None)
        if before is not None:
            env["PYTHONPATH"] = str(before.resolve())
        env.pop("SCALEFIT_UPSTREAM_MIRROR", None)
        env.update(SCALEFIT_OFFLINE="1", SCALEFIT_CACHE=str(Path(tmp) / "cache"))
        main = "from scalefit.cli import main; main()"
        cmd = [sys.executable, "-c", main, "refresh", "--db", "s.duckdb", "--reports", "r"]
        for _ in range(2):
            start = time.perf_counter()
            subprocess.run(cmd, env=env, capture_output=True, cwd=tmp, check=False)
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=10)
    parser.add_argument("--modes", default="serial,overlap")
    parser.add_argument("--refresh", action="store_true")
    parser.add_argument("--before", type=Path, help="an older scalefit tree, for --refresh")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    results: dict[str, list[dict[str, float]]] = {m: [] for m in args.modes.split(",")}
    for _ in range(args.repeat):  # the modes alternate, so that load changes hit both
        for mode in results:
            results[mode].append(child(mode, args.tasks))
    for mode, runs in results.items():
        print(f"\n{mode} ({args.repeat} fresh processes; median [min]):")
        for key in runs[0]:
            values = [r[key] for r in runs]
            print(f"  {key:28s} {statistics.median(values):7.3f} s  [{min(values):.3f}]")
    if args.refresh:
        trees = {"this tree": None, "before": args.before} if args.before else {"this tree": None}
        for i in range(args.repeat):
            for label, tree in trees.items():
                first, second = refresh_runs(tree)
                print(
                    f"scalefit refresh (curated only; {label}), repeat {i + 1}: "
                    f"{first:.2f} s, re-run {second:.2f} s",
                    flush=True,
                )
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
