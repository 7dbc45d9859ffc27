"""Fit speed: scalefit's engine against the original procedure, on the same ~250 points.

Reference (what Hoffmann et al. 2022 and the Besiroglu et al. 2024 replication do): one
``scipy.optimize.minimize(method="L-BFGS-B")`` per start of the 4500-point grid, numerical
gradients, the summed Huber loss (delta 1e-3) of log residuals in log-sum-exp form. Running it
on all 4500 starts takes many minutes, so by default it runs on a random subset of starts and
its time is scaled to the full grid (said so in the output); ``--reference-starts 4500`` runs
it whole.

Engine: the whole ``scalefit fit`` command in a subprocess (process start included), and the
in-process fit with a 1000-resample bootstrap.

The two sides are interleaved (command, a slice of the reference's starts, command, the next
slice, ...) so that a machine shared with other jobs slows both alike; wall time and CPU time
(user + system, the command's from ``getrusage`` of its process) are both reported, and the
CPU-time ratio is the one that other jobs' load does not move.

BLAS threads: both sides run with ``OPENBLAS_NUM_THREADS=1`` unless the environment sets it.
On this shared 2-core machine OpenBLAS's idle threads spin inside the reference's
``minimize`` calls and made it 2.5-10x slower from run to run (0.47 s single-threaded against
1.2-5.2 s default for the same 20 starts); one thread gives the reference its best and
steadiest time, so the speed-up is not flattered by that.

Usage::

    python benchmarks/fit_speed.py [--data FILE.csv] [--reference-starts 150] [--repeat 3]
"""

from __future__ import annotations

import os

# Before numpy is imported (see the module docstring); the `scalefit fit` subprocess inherits it.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
from scipy.optimize import minimize

from scalefit.fit import fit_chinchilla, hoffmann_grid
from scalefit.laws import chinchilla_loss

DELTA = 1e-3


def synthetic(n: int = 250, seed: int = 0) -> pl.DataFrame:
    """~250 points of a Chinchilla-like law with 2% multiplicative noise."""
    rng = np.random.default_rng(seed)
    params = np.exp(rng.uniform(np.log(1e7), np.log(1e10), n))
    tokens = np.exp(rng.uniform(np.log(1e8), np.log(1e11), n))
    loss = chinchilla_loss(params, tokens, 1.8, 480.0, 2100.0, 0.35, 0.37)
    loss = loss * np.exp(0.02 * rng.standard_normal(n))
    return pl.DataFrame({"params": params, "tokens": tokens, "loss": loss})


def reference(data: pl.DataFrame, starts: np.ndarray) -> tuple[float, float, float]:
    """The original procedure on ``starts``: (wall seconds, CPU seconds, best objective)."""
    x = np.log(data["params"].to_numpy())
    y = np.log(data["tokens"].to_numpy())
    target = np.log(data["loss"].to_numpy())

    def objective(theta: np.ndarray) -> float:
        a, b, e, alpha, beta = theta
        pred = np.logaddexp(np.logaddexp(a - alpha * x, b - beta * y), e)
        r = pred - target
        ar = np.abs(r)
        return float(np.sum(np.where(ar <= DELTA, 0.5 * r * r, DELTA * (ar - 0.5 * DELTA))))

    t, cpu = time.perf_counter(), time.process_time()
    best = np.inf
    for start in starts:
        res = minimize(objective, start, method="L-BFGS-B")
        if res.success and res.fun < best:
            best = res.fun
    return time.perf_counter() - t, time.process_time() - cpu, best


def cli_fit(path: Path, bootstrap: int) -> tuple[float, float, dict]:
    """``scalefit fit`` in a subprocess: (wall seconds, CPU seconds, its JSON)."""
    cmd = [
        sys.executable,
        "-c",
        "from scalefit.cli import main; main()",
        "fit",
        "--input",
        str(path),
        "--bootstrap",
        str(bootstrap),
        "--json",
        "--no-save",
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=os.environ.copy())
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, json.loads(out.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, help="CSV with params, tokens, loss (default synthetic)")
    ap.add_argument("--reference-starts", type=int, default=150)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    data = pl.read_csv(args.data) if args.data else synthetic()
    grid = hoffmann_grid()
    rng = np.random.default_rng(args.seed)
    k = min(args.reference_starts, len(grid))
    subset = grid[np.sort(rng.choice(len(grid), k, replace=False))] if k < len(grid) else grid
    print(f"data: {data.height} points ({args.data or 'synthetic, seed 0'})")
    print(
        f"machine: {os.cpu_count()} cores, OPENBLAS_NUM_THREADS="
        f"{os.environ['OPENBLAS_NUM_THREADS']}, load average {os.getloadavg()}"
    )

    cli_wall, cli_cpu, ref_wall, ref_cpu, ref_best = [], [], 0.0, 0.0, np.inf
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "points.csv"
        data.write_csv(path)
        for chunk in np.array_split(subset, args.repeat):
            wall, cpu, out = cli_fit(path, 0)
            cli_wall.append(wall)
            cli_cpu.append(cpu)
            wall, cpu, best = reference(data, chunk)
            ref_wall, ref_cpu, ref_best = ref_wall + wall, ref_cpu + cpu, min(ref_best, best)
        boot_cli_sec, _, boot_out = cli_fit(path, 1000)

    t = time.perf_counter()
    fit = fit_chinchilla(data)
    engine_sec = time.perf_counter() - t
    t = time.perf_counter()
    fit_chinchilla(data, n_bootstrap=1000, seed=0)
    boot_sec = time.perf_counter() - t

    scale = len(grid) / k
    ref_full, ref_full_cpu = ref_wall * scale, ref_cpu * scale
    cli_sec, cli_cpu_sec = float(np.median(cli_wall)), float(np.median(cli_cpu))
    engine_best = out["objective"]
    rel = abs(engine_best - ref_best) / ref_best
    scaled = "" if k == len(grid) else f" (ran {k} random starts, scaled x{scale:.1f})"
    print(
        f"reference, full grid:           {ref_full:9.1f} s wall, {ref_full_cpu:.1f} s CPU{scaled}"
    )
    print(f"reference best objective:       {ref_best:.12g} (over the starts it ran)")
    print(
        f"scalefit fit (CLI, full grid):  {cli_sec:9.2f} s wall, {cli_cpu_sec:.2f} s CPU "
        f"(median of {args.repeat}, process start included)"
    )
    print(f"scalefit best objective:        {engine_best:.12g}")
    print(f"objective relative difference:  {rel:.2e}  (engine lower: {engine_best <= ref_best})")
    print(f"speed-up, CLI vs reference:     {ref_full / cli_sec:9.1f} x wall")
    print(f"                                {ref_full_cpu / cli_cpu_sec:9.1f} x CPU time")
    print(f"in-process grid fit:            {engine_sec:9.2f} s")
    print(f"in-process fit + 1000 bootstrap:{boot_sec:9.2f} s")
    print(f"CLI fit + 1000 bootstrap:       {boot_cli_sec:9.2f} s")
    dg = fit.diagnostics
    print(f"starts in best basin:           {dg['n_best_basin']} of {len(grid)}")
    print(
        f"starts converged / merged / abandoned: {dg['n_converged_starts']} / "
        f"{dg['n_merged_starts']} / {dg['n_abandoned_starts']}"
    )
    print(f"load average after the run:     {os.getloadavg()}")  # other jobs on the machine
    print(
        f"bootstrap refits not converged: {boot_out['diagnostics'].get('bootstrap_not_converged')}"
    )


if __name__ == "__main__":
    main()
