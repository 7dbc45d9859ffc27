"""Fit speed: scalefit's engine against the original procedure, on the same ~250 points.

Reference (what Hoffmann et al. 2022 and the Besiroglu et al. 2024 replication do): one
``scipy.optimize.minimize(method="L-BFGS-B")`` per start of the 4500-point grid, numerical
gradients, the summed Huber loss (delta 1e-3) of log residuals in log-sum-exp form. Running it
on all 4500 starts takes many minutes, so by default it runs on a random subset of starts and
its time is scaled to the full grid (said so in the output); ``--reference-starts 4500`` runs
it whole.

Analytic-gradient reference (the fair yardstick): the same L-BFGS-B per start on the same
objective and starts, with its exact gradient (``jac=True``) instead of finite differences.

Floor: a fresh ``python`` that imports numpy, reads the CSV and evaluates the Huber objective
of all 4500 starts once, vectorised (what no fit of this grid can go below).

Engine: the whole ``scalefit fit`` command in a subprocess (process start included), the
in-process fit alone (the engine's share of the command) and with a 1000-resample bootstrap.

All sides are interleaved (command, floor, a slice of each reference's starts, command, ...)
so that a machine shared with other jobs slows them alike; wall time and CPU time (user +
system, a subprocess's from ``getrusage``) are both reported, and the CPU-time ratio is the
one that other jobs' load moves least.

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


def _design(data: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (
        np.log(data["params"].to_numpy()),
        np.log(data["tokens"].to_numpy()),
        np.log(data["loss"].to_numpy()),
    )


def reference(
    data: pl.DataFrame, starts: np.ndarray, analytic: bool = False
) -> tuple[float, float, float]:
    """The original procedure on ``starts``: (wall seconds, CPU seconds, best objective);
    with ``analytic`` the exact gradient is given to L-BFGS-B (``jac=True``)."""
    x, y, target = _design(data)

    def objective(theta: np.ndarray) -> float:
        a, b, e, alpha, beta = theta
        pred = np.logaddexp(np.logaddexp(a - alpha * x, b - beta * y), e)
        r = pred - target
        ar = np.abs(r)
        return float(np.sum(np.where(ar <= DELTA, 0.5 * r * r, DELTA * (ar - 0.5 * DELTA))))

    def with_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        a, b, e, alpha, beta = theta
        z0, z1 = a - alpha * x, b - beta * y
        pred = np.logaddexp(np.logaddexp(z0, z1), e)
        r = pred - target
        ar = np.abs(r)
        f = float(np.sum(np.where(ar <= DELTA, 0.5 * r * r, DELTA * (ar - 0.5 * DELTA))))
        psi = np.clip(r, -DELTA, DELTA)
        s0, s1, s2 = np.exp(z0 - pred), np.exp(z1 - pred), np.exp(e - pred)
        grad = np.array(
            [psi @ s0, psi @ s1, psi @ s2, -(psi * s0) @ x, -(psi * s1) @ y], dtype=float
        )
        return f, grad

    t, cpu = time.perf_counter(), time.process_time()
    best = np.inf
    for start in starts:
        if analytic:
            res = minimize(with_grad, start, method="L-BFGS-B", jac=True)
        else:
            res = minimize(objective, start, method="L-BFGS-B")
        if res.success and res.fun < best:
            best = res.fun
    return time.perf_counter() - t, time.process_time() - cpu, best


FLOOR = r"""
import sys
import numpy as np
d = np.loadtxt(sys.argv[1], delimiter=",", skiprows=1)
x, y, t = np.log(d[:, 0]), np.log(d[:, 1]), np.log(d[:, 2])
a, b, e, al, be = np.load(sys.argv[2]).T[:, :, None]
pred = np.logaddexp(np.logaddexp(a - al * x, b - be * y), e)
ar = np.abs(pred - t)
f = np.where(ar <= 1e-3, 0.5 * ar * ar, 1e-3 * (ar - 0.5e-3)).sum(axis=1)
print(f.min())
"""


def _child_env() -> dict[str, str]:
    """The environment of the timed children: this one's, without
    ``PYTHONDONTWRITEBYTECODE``, so that they import scalefit from cached bytecode as an
    installed package does (with it set, as in this workplace's shells, every run compiled
    ~50 modules from source: 60-100 ms that no user pays)."""
    env = os.environ.copy()
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def floor(path: Path, grid_path: Path) -> tuple[float, float]:
    """Python + numpy import + reading the CSV + one vectorised evaluation of the objective
    at every start of the grid (saved as ``.npy``), in a fresh process: (wall, CPU) seconds."""
    cmd = [sys.executable, "-c", FLOOR, str(path), str(grid_path)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=_child_env())
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


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
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=_child_env())
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, json.loads(out.stdout)


def interleaved(data: pl.DataFrame, subset: np.ndarray, repeat: int) -> dict:
    """Command, floor, numerical reference, analytic reference, ``repeat`` times in turn
    (the references on consecutive slices of ``subset``): every side's wall and CPU times."""
    out: dict = {k: [] for k in ("cli", "floor")} | {"num": [0.0, 0.0, np.inf]}
    out["ana"] = [0.0, 0.0, np.inf]
    with tempfile.TemporaryDirectory() as tmp:
        path, grid_path = Path(tmp) / "points.csv", Path(tmp) / "grid.npy"
        data.write_csv(path)
        np.save(grid_path, hoffmann_grid())
        cli_fit(path, 0)  # untimed: writes the bytecode caches
        for chunk in np.array_split(subset, repeat):
            wall, cpu, out["json"] = cli_fit(path, 0)
            out["cli"].append((wall, cpu))
            out["floor"].append(floor(path, grid_path))
            for key, analytic in (("num", False), ("ana", True)):
                wall, cpu, best = reference(data, chunk, analytic)
                acc = out[key]
                out[key] = [acc[0] + wall, acc[1] + cpu, min(acc[2], best)]
        out["boot_cli"] = cli_fit(path, 1000)[0]
    return out


def engine_share(data: pl.DataFrame) -> tuple[float, float, float, dict]:
    """In-process fit (wall, CPU: the engine's share of the command), the same with a
    1000-resample bootstrap (wall), and the fit's diagnostics."""
    t, cpu = time.perf_counter(), time.process_time()
    fit = fit_chinchilla(data)
    engine = (time.perf_counter() - t, time.process_time() - cpu)
    t = time.perf_counter()
    fit_chinchilla(data, n_bootstrap=1000, seed=0)
    return *engine, time.perf_counter() - t, fit.diagnostics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, help="CSV with params, tokens, loss (default synthetic)")
    ap.add_argument("--reference-starts", type=int, default=150)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--seed",
        type=int,
        default=0,
        help="which random grid starts the references run (not the data: synthetic seed 0)",
    )
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
    fit_chinchilla(data)  # warm the in-process side's imports
    out = interleaved(data, subset, args.repeat)
    eng_wall, eng_cpu, boot_sec, dg = engine_share(data)
    report(out, len(grid) / k, k, len(grid), args.repeat, (eng_wall, eng_cpu, boot_sec, dg))


def report(out: dict, scale: float, k: int, n_grid: int, repeat: int, eng: tuple) -> None:
    """Print the figures and ratios of :func:`main`'s run."""
    cli_wall = float(np.median([w for w, _ in out["cli"]]))
    cli_cpu = float(np.median([c for _, c in out["cli"]]))
    fl_wall = float(np.median([w for w, _ in out["floor"]]))
    fl_cpu = float(np.median([c for _, c in out["floor"]]))
    scaled = "" if k == n_grid else f" (ran {k} random starts, scaled x{scale:.1f})"
    engine_best = out["json"]["objective"]
    for key, name in (("num", "numerical gradients"), ("ana", "analytic gradients")):
        wall, cpu, best = out[key][0] * scale, out[key][1] * scale, out[key][2]
        rel = abs(engine_best - best) / best
        print(f"reference, {name}, full grid: {wall:8.1f} s wall, {cpu:.1f} s CPU{scaled}")
        print(
            f"  its best objective {best:.12g}; scalefit's {engine_best:.12g}: rel. diff. "
            f"{rel:.2e} (scalefit lower: {engine_best <= best})"
        )
        print(
            f"  speed-up of the command: {wall / cli_wall:7.1f} x wall, {cpu / cli_cpu:.1f} x CPU"
        )
    print(
        f"scalefit fit (CLI, full grid):  {cli_wall:6.2f} s wall, {cli_cpu:.2f} s CPU "
        f"(median of {repeat}, process start included)"
    )
    print(
        f"floor (python + numpy + CSV + one whole-grid evaluation): {fl_wall:.3f} s wall, "
        f"{fl_cpu:.3f} s CPU (median of {repeat})"
    )
    print(
        f"  command / floor:            {cli_wall / fl_wall:6.2f} x wall, "
        f"{cli_cpu / fl_cpu:.2f} x CPU"
    )
    eng_wall, eng_cpu, boot_sec, dg = eng
    print(f"in-process grid fit (the engine's share): {eng_wall:.3f} s wall, {eng_cpu:.3f} s CPU")
    print(f"in-process fit + 1000 bootstrap:{boot_sec:9.2f} s")
    print(f"CLI fit + 1000 bootstrap:       {out['boot_cli']:9.2f} s")
    print(f"starts in best basin:           {dg['n_best_basin']} of {n_grid}")
    print(
        f"starts converged / merged / abandoned: {dg['n_converged_starts']} / "
        f"{dg['n_merged_starts']} / {dg['n_abandoned_starts']}"
    )
    print(f"load average after the run:     {os.getloadavg()}")  # other jobs on the machine


if __name__ == "__main__":
    main()
