"""Does the default grid find the same optimum as a long grid run, on hard data?

40 random data sets (seeded): random true E, A, B, alpha, beta; 3 to 11 model sizes spanning
0.5 to 3.5 decades; 1e8-1e12 tokens; 0.2-3% noise. For each, the chinchilla, kaplan_n_e and
kaplan_nd forms are fitted with each grid cap asked for (default: the engine's default) and
with ``max_grid_iter=40``; a data set counts as a miss when a cap's objective is above the long
run's by more than 1e-6 (relative). Prints the misses, whether each side certified
convergence, and the times.

Usage::

    python benchmarks/fit_robustness.py [--caps 2,3,5,10]
"""

from __future__ import annotations

import argparse
import inspect
import time
import warnings

import numpy as np
import polars as pl

from scalefit.fit import fit_law


def main() -> None:
    default_cap = inspect.signature(fit_law).parameters["max_grid_iter"].default
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--caps", default=str(default_cap), help="comma-separated grid caps to compare")
    caps = [int(c) for c in ap.parse_args().caps.split(",")]
    warnings.simplefilter("ignore")
    rng = np.random.default_rng(123)
    worst: dict[tuple[int, str], float] = {}
    misses = []
    times = dict.fromkeys(caps, 0.0)
    t_long = 0.0
    for trial in range(40):
        E = rng.uniform(1.0, 2.5)
        A, B = np.exp(rng.uniform(3, 9)), np.exp(rng.uniform(3, 9))
        alpha, beta = rng.uniform(0.15, 0.7), rng.uniform(0.15, 0.7)
        sizes, lo, span = rng.integers(3, 12), rng.uniform(6.5, 9), rng.uniform(0.5, 3.5)
        n = np.repeat(np.logspace(lo, lo + span, sizes), 8)
        d = np.exp(rng.uniform(np.log(1e8), np.log(1e12), n.size))
        noise = rng.choice([0.002, 0.01, 0.03])
        loss = (E + A / n**alpha + B / d**beta) * np.exp(rng.normal(0, noise, n.size))
        data = pl.DataFrame({"params": n, "tokens": d, "loss": loss})
        for law in ("chinchilla", "kaplan_n_e", "kaplan_nd"):
            start = time.perf_counter()
            long = fit_law(data, law=law, max_grid_iter=40)
            t_long += time.perf_counter() - start
            for cap in caps:
                start = time.perf_counter()
                short = fit_law(data, law=law, max_grid_iter=cap)
                times[cap] += time.perf_counter() - start
                rel = (short.objective - long.objective) / long.objective
                worst[cap, law] = max(worst.get((cap, law), -np.inf), rel)
                if rel > 1e-6:
                    misses.append((cap, trial, law, f"{rel:.2g}", short.converged, long.converged))
    for cap in caps:
        print(
            f"cap {cap}: worst relative excess by form:",
            {law: f"{v:.2g}" for (c, law), v in worst.items() if c == cap},
        )
        print(
            f"cap {cap}: misses (trial, form, excess, cap converged, long converged):",
            [m[1:] for m in misses if m[0] == cap],
        )
        print(f"cap {cap}: time {times[cap]:.1f} s")
    print(f"max_grid_iter=40: time {t_long:.1f} s")


if __name__ == "__main__":
    main()
