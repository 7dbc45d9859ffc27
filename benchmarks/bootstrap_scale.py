"""Does spreading a bootstrap over jobs pay? Serial against threads and processes.

One approach-3 fit to synthetic points (1% noise), then its bootstrap refitted serially (the
reference, measured in the same run) and split into ``--jobs`` jobs on a thread pool and on a
process pool (``forkserver``, as ``scalefit fit --jobs`` uses), plus the whole
``scalefit fit --bootstrap B`` command with and without ``--jobs``. Prints wall times, the
ratio to serial, and the largest relative difference of the samples.

Usage::

    python benchmarks/bootstrap_scale.py [--points 250] [--bootstrap 1000,5000] [--jobs 2]
"""

from __future__ import annotations

import argparse
import multiprocessing
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import polars as pl

from scalefit.fit import fit_law
from scalefit.laws import chinchilla_loss


def _data(n: int) -> pl.DataFrame:
    rng = np.random.default_rng(0)
    params = np.exp(rng.uniform(np.log(1e7), np.log(1e10), n))
    tokens = np.exp(rng.uniform(np.log(1e8), np.log(1e11), n))
    loss = chinchilla_loss(params, tokens, 1.69, 406.4, 410.7, 0.34, 0.28)
    return pl.DataFrame(
        {"params": params, "tokens": tokens, "loss": loss * np.exp(rng.normal(0, 0.01, n))}
    )


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=250)
    ap.add_argument("--bootstrap", default="1000,5000")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    data = _data(args.points)
    start = fit_law(data)
    theta = list(start.diagnostics["theta"].values())
    kw = {"starts": [theta]}  # the grid is not what is measured here
    scalefit = Path(sys.executable).with_name("scalefit")
    ctx = multiprocessing.get_context("forkserver")
    print(f"{args.points} points, {args.jobs} jobs; load average {_load()}")
    print("| resamples | how | seconds | vs serial | max rel. diff. of samples |")
    print("| ---: | --- | ---: | ---: | ---: |")
    for n_boot in (int(b) for b in args.bootstrap.split(",")):
        t_serial, serial = _timed(lambda n=n_boot: fit_law(data, n_bootstrap=n, **kw))
        rows = [("serial, in process", t_serial, serial)]
        with ThreadPoolExecutor(args.jobs) as pool:
            rows.append(
                (
                    "threads, in process",
                    *_timed(lambda n=n_boot, p=pool: _spread(data, n, p.map, args.jobs, kw)),
                )
            )
        t_pool, out = _timed(
            lambda n=n_boot: _in_pool(data, n, args.jobs, ctx, kw)
        )  # pool start included
        rows.append(("processes, in process (pool start included)", t_pool, out))
        for how, t, fit in rows:
            diff = np.nanmax(np.abs(fit.samples - serial.samples) / np.abs(serial.samples))
            print(f"| {n_boot} | {how} | {t:.2f} | {t / t_serial:.2f}x | {diff:.1e} |")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "points.csv"
            data.write_csv(path)
            cmd = [str(scalefit), "fit", "-i", str(path), "--bootstrap", str(n_boot), "--json"]
            t_cli, _ = _timed(lambda c=cmd: subprocess.run(c, check=True, capture_output=True))
            t_cli_j, _ = _timed(
                lambda c=cmd: subprocess.run(
                    [*c, "--jobs", str(args.jobs)], check=True, capture_output=True
                )
            )
        print(f"| {n_boot} | `scalefit fit` (full grid), serial | {t_cli:.2f} | | |")
        print(
            f"| {n_boot} | `scalefit fit --jobs {args.jobs}` | {t_cli_j:.2f} | "
            f"{t_cli_j / t_cli:.2f}x of the serial command | |"
        )


def _spread(data, n, map_jobs, jobs, kw):
    return fit_law(data, n_bootstrap=n, bootstrap_jobs=jobs, bootstrap_map=map_jobs, **kw)


def _in_pool(data, n, jobs, ctx, kw):
    with ProcessPoolExecutor(jobs, mp_context=ctx) as pool:
        return _spread(data, n, pool.map, jobs, kw)


def _load() -> str:
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


if __name__ == "__main__":
    main()
