"""Fit scale: time and peak memory of a ``--bootstrap 0`` chinchilla fit from 250 to 1M points.

Each size is fitted in a fresh process (``fit_law(data, law="chinchilla")``, the full
4500-start grid, no bootstrap) on synthetic data from a known law (``E = 1.8, A = 480,
B = 2100, alpha = 0.35, beta = 0.37``, N log-uniform in 1e7-1e10, D in 1e8-1e11, 2% log-normal
noise, seed 0). Reported per size: wall and CPU time of the fit (user + system of the
process, ``getrusage``: the figure other jobs' load moves least), peak RSS (``VmHWM`` of
the process, as ``ingest_speed.py`` reads it), the per-point cost and its ratio to the
2,500-point run's.

Where the engine before the memory-bounded rework can run (``--compare-max``, default 25k
points) the same data are fitted by it too, in a fresh process that imports ``scalefit``
from ``git archive OLD_REV`` (default the commit this work started from), and the
objectives and estimates are compared.

``--evals K`` measures instead the step that is ~85-90% of a fit: ``K`` rounds of one
objective + derivatives evaluation of 128 grid starts over all the points (the fit's
whole-grid evaluation, 1/35 of the grid), in a fresh process per size; it reports CPU
nanoseconds per (start, point) cell (the minimum over the rounds) and the peak RSS. A 1M-point
fit is ~1,000 s CPU on a quiet core; this gives its per-point cost in a minute.

Usage::

    python benchmarks/fit_scale.py [--sizes 250,2500,25000,250000,1000000] [--compare-max 25000]
    python benchmarks/fit_scale.py --evals 3 [--sizes ...]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from _memory import peak_rss_mb

ROOT = Path(__file__).resolve().parent.parent
OLD_REV = "83e9492"  # main when the memory-bounded engine was started (issue 16)
TRUE = {"E": 1.8, "A": 480.0, "B": 2100.0, "alpha": 0.35, "beta": 0.37}


def synthetic(n: int, seed: int = 0) -> dict:
    import numpy as np

    rng = np.random.default_rng(seed)
    params = np.exp(rng.uniform(np.log(1e7), np.log(1e10), n))
    tokens = np.exp(rng.uniform(np.log(1e8), np.log(1e11), n))
    t = TRUE
    loss = t["E"] + t["A"] / params ** t["alpha"] + t["B"] / tokens ** t["beta"]
    loss = loss * np.exp(0.02 * rng.standard_normal(n))
    return {"params": params, "tokens": tokens, "loss": loss}


def child(n: int) -> dict:
    """One fit in this (fresh) process."""
    import scalefit
    from scalefit.fit import fit_law

    data = synthetic(n)
    before_rss = peak_rss_mb()
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t = time.perf_counter()
    fit = fit_law(data, law="chinchilla")
    wall = time.perf_counter() - t
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    return {
        "n": n,
        "wall": wall,
        "cpu": cpu,
        "peak_mb": peak_rss_mb(),
        "peak_before_fit_mb": before_rss,
        "objective": fit.objective,
        "estimates": dict(fit.estimates),
        "converged": fit.converged,
        "scalefit": str(Path(scalefit.__file__).parent),
    }


def child_evals(n: int, rounds: int) -> dict:
    """``rounds`` whole-grid evaluations (derivatives of 128 grid starts) in this process."""
    import numpy as np

    from scalefit import _optim
    from scalefit.fit import FORMS, _as_points

    form = FORMS["chinchilla"]
    pts = _as_points(synthetic(n), need=form.needs)
    obj = _optim.HuberObjective(form.model(pts), np.log(pts.loss), 1e-3)
    starts = form.grid[:: len(form.grid) // 128][:128]
    w = np.ones(n)
    best = np.inf
    for _ in range(rounds):
        cpu = time.process_time()
        obj._derivatives(starts, w)
        best = min(best, time.process_time() - cpu)
    return {"n": n, "ns_per_cell": 1e9 * best / (n * starts.shape[0]), "peak_mb": peak_rss_mb()}


def _proc_figures(pid: int) -> tuple[float, float]:
    """(CPU seconds, peak RSS MB) of a running process, from /proc."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    with open(f"/proc/{pid}/status") as fh:
        hwm = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
    return cpu, hwm / 1024


def evals(sizes: list[int], rounds: int) -> None:
    """Per-cell cost of the whole-grid evaluation at every size (see ``--evals``)."""
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()}", flush=True)
    rows = []
    for n in sizes:
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(n), "--evals", str(rounds)],
            stdout=subprocess.PIPE,
            text=True,
            check=True,
        ).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(
            f"{n:>9,} points: {rows[-1]['ns_per_cell']:6.1f} ns CPU per (start, point), "
            f"peak RSS {rows[-1]['peak_mb']:.0f} MB",
            flush=True,
        )
    ref = next((r for r in rows if r["n"] == 2500), None)
    if ref:
        print(
            "ratio to 2,500 points:",
            ", ".join(f"{r['n']:,}: {r['ns_per_cell'] / ref['ns_per_cell']:.2f}" for r in rows),
        )
    print(f"load average after the run: {os.getloadavg()}")


def run(n: int, pythonpath: str | None, timeout: float | None = None) -> dict:
    """One size in a fresh process. Past ``timeout`` seconds the fit is stopped and what it
    had used so far (CPU time, peak RSS) is reported as unfinished."""
    env = os.environ.copy()
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    t = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", str(n)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        cpu, peak = _proc_figures(proc.pid)
        proc.kill()
        proc.communicate()
        return {
            "n": n,
            "unfinished": True,
            "wall": time.perf_counter() - t,
            "cpu": cpu,
            "peak_mb": peak,
        }
    if proc.returncode:
        raise SystemExit(f"the fit of {n} points failed (exit {proc.returncode})")
    return json.loads(out.strip().splitlines()[-1])


def old_tree(rev: str, dest: Path) -> str:
    """``scalefit/`` as of ``rev``, extracted under ``dest``; returns the path to import it from."""
    tar = dest / "old.tar"
    with open(tar, "wb") as fh:
        subprocess.run(["git", "-C", str(ROOT), "archive", rev, "scalefit"], check=True, stdout=fh)
    with tarfile.open(tar) as tf:
        tf.extractall(dest, filter="data")
    return str(dest)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="250,2500,25000,250000,1000000")
    ap.add_argument("--compare-max", type=int, default=25000)
    ap.add_argument("--old-rev", default=OLD_REV)
    ap.add_argument(
        "--timeout", type=float, help="stop a fit after this many seconds and report it unfinished"
    )
    ap.add_argument("--evals", type=int, help="time K whole-grid evaluations per size instead")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        out = child_evals(args.child, args.evals) if args.evals else child(args.child)
        print(json.dumps(out))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.evals:
        evals(sizes, args.evals)
        return
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        old_path = None
        if any(n <= args.compare_max for n in sizes):
            old_path = old_tree(args.old_rev, Path(tmp))
        for n in sizes:
            load = os.getloadavg()[0]
            new = run(n, None, args.timeout)
            old = run(n, old_path, args.timeout) if old_path and n <= args.compare_max else None
            if new.get("unfinished"):
                print(
                    f"{n:>9,} points: UNFINISHED after {new['wall']:.0f} s wall, "
                    f"{new['cpu']:.0f} s CPU; peak RSS so far {new['peak_mb']:.0f} MB",
                    flush=True,
                )
                continue
            if old and old.get("unfinished"):
                old = None
            rows.append((n, new, old))
            line = (
                f"{n:>9,} points: {new['wall']:8.2f} s wall {new['cpu']:8.2f} s CPU "
                f"{new['peak_mb']:7.0f} MB peak (before the fit {new['peak_before_fit_mb']:.0f} MB)"
                f"  objective {new['objective']:.12g}  converged {new['converged']}"
                f"  load {load:.1f}->{os.getloadavg()[0]:.1f}"
            )
            if old:
                rel = abs(new["objective"] - old["objective"]) / old["objective"]
                est = max(
                    abs(new["estimates"][k] - v) / abs(v) for k, v in old["estimates"].items()
                )
                line += (
                    f"\n{'':>17} old engine: {old['wall']:8.2f} s wall {old['cpu']:8.2f} s CPU "
                    f"{old['peak_mb']:7.0f} MB peak; objective rel. diff. {rel:.1e}, "
                    f"estimates max rel. diff. {est:.1e}"
                )
            print(line, flush=True)
    ref = next((r for n, r, _ in rows if n == 2500), None)
    print("\nper-point cost (fit time / points), ratio to the 2,500-point run:")
    for n, r, _ in rows:
        ratio = ""
        if ref:
            ratio = (
                f"  x{(r['cpu'] / n) / (ref['cpu'] / 2500):.2f} CPU, "
                f"x{(r['wall'] / n) / (ref['wall'] / 2500):.2f} wall"
            )
        est = ", ".join(f"{k} {v:.4g}" for k, v in r["estimates"].items())
        print(f"{n:>9,}: {1e6 * r['cpu'] / n:9.1f} us CPU/point{ratio}  ({est})")
    print(f"true law: {TRUE}; load average after the run: {os.getloadavg()}")


if __name__ == "__main__":
    main()
