"""Does the default search find the same optimum as a long run of the whole grid, on hard data?

40 random data sets (seeded): random true E, A, B, alpha, beta; 3 to 11 model sizes spanning
0.5 to 3.5 decades; 1e8-1e12 tokens; 0.2-3% noise. For each, the chinchilla, kaplan_n_e and
kaplan_nd forms are fitted with each grid cap asked for (default: the engine's default) and
with ``max_grid_iter=40`` from every start of the grid (the screen by objective off); a data
set counts as a miss when a cap's objective is above the long run's by more than 1e-6
(relative). Prints the misses, whether each side certified
convergence, and the times (wall and CPU).

Engine changes are checked against another engine on the same 120 fits: ``--save FILE``
writes every fit's objective, estimates and convergence flag (first cap asked for) as JSON;
``--against FILE`` compares this run's with them (largest relative objective difference,
fits above 1e-9, convergence flags that differ). Run the old engine with ``PYTHONPATH``
pointing at its ``scalefit/`` (e.g. from ``git archive``) and ``--save``; ``--no-long`` skips
the ``max_grid_iter=40`` runs when only that comparison is wanted.

``--trials 23,29`` fits only those data sets. ``--show 23/chinchilla,29/kaplan_n_e`` prints
the convergence certificate at those fits' end points (first cap): estimates, gradient, the
Hessian's diagonal, each variable's own decrement ``g_j^2 / (2 H_jj)`` over the objective,
which variables are pinned on a bound and which the certificate leaves out of the solve, the
decrement.

Usage::

    python benchmarks/fit_robustness.py [--caps 2,3,5,10] [--save F | --against F] [--no-long]
        [--laws chinchilla,kaplan_n_e] [--trials 23,29] [--show TRIAL/FORM,...]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import polars as pl

from scalefit import _optim
from scalefit._optim.driver import _free_mask
from scalefit.fit import GRID_ITERATIONS, LawFit, fit_law, multistart
from scalefit.fit.forms import REGISTRY

LAWS = ("chinchilla", "kaplan_n_e", "kaplan_nd")


def data_sets(n_sets: int = 40) -> list[pl.DataFrame]:
    """The seeded hard data sets (the same every run)."""
    rng = np.random.default_rng(123)
    out = []
    for _ in range(n_sets):
        E = rng.uniform(1.0, 2.5)
        A, B = np.exp(rng.uniform(3, 9)), np.exp(rng.uniform(3, 9))
        alpha, beta = rng.uniform(0.15, 0.7), rng.uniform(0.15, 0.7)
        sizes, lo, span = rng.integers(3, 12), rng.uniform(6.5, 9), rng.uniform(0.5, 3.5)
        n = np.repeat(np.logspace(lo, lo + span, sizes), 8)
        d = np.exp(rng.uniform(np.log(1e8), np.log(1e12), n.size))
        noise = rng.choice([0.002, 0.01, 0.03])
        loss = (E + A / n**alpha + B / d**beta) * np.exp(rng.normal(0, noise, n.size))
        out.append(pl.DataFrame({"params": n, "tokens": d, "loss": loss}))
    return out


def exhaustive(data: pl.DataFrame, law: str) -> LawFit:
    """The long reference: every start of the grid (no screen) for 40 iterations."""
    share = multistart.SCREEN_SHARE
    multistart.SCREEN_SHARE = 1.0
    try:
        return fit_law(data, law=law, max_grid_iter=40)
    finally:
        multistart.SCREEN_SHARE = share


def show(key: str, data: pl.DataFrame, law: str, fit: LawFit) -> None:
    """Print the certificate at ``fit``'s end point (see the module docstring)."""
    form = REGISTRY[law]
    pts = form.points(data)
    obj = _optim.HuberObjective(form.model(pts), np.log(pts.loss), fit.settings["delta"])
    theta = np.array([list(fit.diagnostics["theta"].values())])
    run = _optim.BatchRun(
        obj, theta, np.ones(obj.y.size), form.lower, form.upper, multistart.RTOL, None
    )
    f, g, h = run.f[0], run.g[0], np.diagonal(run.H[0])
    with np.errstate(divide="ignore", invalid="ignore"):
        own = g * g / (2 * np.abs(h)) / f
    left_out = getattr(run, "left_out", None)  # an older engine has no such method
    flat = None if left_out is None else left_out(np.arange(1), run.rtol * run.f + run.atol)[2]
    free = _free_mask(theta, run.g, form.lower, form.upper)[0]
    names = form.theta_names
    dec = run.result().decrement[0]  # exact (the certificate may keep only a bound)
    print(f"{key}: objective {f:.10e}, certified {fit.converged}, decrement/f {dec / f:.3g}")
    print("  estimates", {k: f"{v:.6g}" for k, v in fit.estimates.items()})
    for j, name in enumerate(names):
        out = "" if flat is None or not flat[0, j] else " left out"
        out += "" if free[j] else " pinned"
        print(
            f"  {name:>14s} {theta[0, j]: .8g}  g {g[j]: .3e}  H_jj {h[j]: .3e}  "
            f"g^2/(2 H_jj)/f {own[j]:.3g}{out}"
        )
    print("  on a bound:", fit.diagnostics["on_bound"])


def compare(record: dict[str, dict], path: Path) -> None:
    """Print how this run's fits differ from those saved in ``path``."""
    other = json.loads(path.read_text())
    record = {k: v for k, v in record.items() if k in other}
    rels = {
        key: abs(r["objective"] - other[key]["objective"]) / abs(other[key]["objective"])
        for key, r in record.items()
    }
    est = {
        key: max(
            abs(v - other[key]["estimates"][k]) / max(abs(other[key]["estimates"][k]), 1e-300)
            for k, v in r["estimates"].items()
        )
        for key, r in record.items()
    }
    flags = [key for key, r in record.items() if r["converged"] != other[key]["converged"]]
    worst = max(rels, key=rels.get)
    print(
        f"against {path}: {len(record)} fits; largest relative objective difference "
        f"{rels[worst]:.2g} ({worst}); above 1e-9: {[k for k, v in rels.items() if v > 1e-9]}"
    )
    signed = {
        k: f"{(record[k]['objective'] - other[k]['objective']) / other[k]['objective']:+.2g}"
        + ("" if record[k]["converged"] else " (not certified here)")
        for k, v in rels.items()
        if v > 1e-9
    }
    print(f"  those, signed (+: this run's objective is higher): {signed}")
    print(
        f"  largest relative estimate difference {max(est.values()):.2g}; "
        f"convergence flags that differ: {flags}"
    )


def main() -> None:
    default_cap = GRID_ITERATIONS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--caps", default=str(default_cap), help="comma-separated grid caps to compare")
    ap.add_argument("--save", type=Path, help="write the first cap's fits here (JSON)")
    ap.add_argument("--against", type=Path, help="compare the first cap's fits with these")
    ap.add_argument("--laws", default=",".join(LAWS), help="comma-separated forms to fit")
    ap.add_argument("--no-long", action="store_true", help="skip the max_grid_iter=40 runs")
    ap.add_argument("--trials", default="", help="comma-separated data sets to fit (default all)")
    ap.add_argument("--show", default="", help="trial/form fits whose certificate to print")
    args = ap.parse_args()
    caps = [int(c) for c in args.caps.split(",")]
    warnings.simplefilter("ignore")
    worst: dict[tuple[int, str], float] = {}
    misses = []
    times = dict.fromkeys(caps, 0.0)
    cpus = dict.fromkeys(caps, 0.0)
    t_long = cpu_long = 0.0
    record: dict[str, dict] = {}
    to_show = set(filter(None, args.show.split(",")))
    trials = {int(t) for t in args.trials.split(",") if t}
    for trial, data in enumerate(data_sets()):
        if trials and trial not in trials:
            continue
        for law in args.laws.split(","):
            long = None
            if not args.no_long:
                start, cpu = time.perf_counter(), time.process_time()
                long = exhaustive(data, law)
                t_long += time.perf_counter() - start
                cpu_long += time.process_time() - cpu
            for cap in caps:
                start, cpu = time.perf_counter(), time.process_time()
                short = fit_law(data, law=law, max_grid_iter=cap)
                times[cap] += time.perf_counter() - start
                cpus[cap] += time.process_time() - cpu
                if cap == caps[0]:
                    record[f"{trial}/{law}"] = {
                        "objective": short.objective,
                        "estimates": {k: float(v) for k, v in short.estimates.items()},
                        "converged": bool(short.converged),
                    }
                    if f"{trial}/{law}" in to_show:
                        show(f"{trial}/{law}", data, law, short)
                if long is None:
                    continue
                rel = (short.objective - long.objective) / long.objective
                worst[cap, law] = max(worst.get((cap, law), -np.inf), rel)
                if rel > 1e-6:
                    misses.append((cap, trial, law, f"{rel:.2g}", short.converged, long.converged))
    for cap in caps:
        if not args.no_long:
            print(
                f"cap {cap}: worst relative excess by form:",
                {law: f"{v:.2g}" for (c, law), v in worst.items() if c == cap},
            )
            print(
                f"cap {cap}: misses (trial, form, excess, cap converged, long converged):",
                [m[1:] for m in misses if m[0] == cap],
            )
        print(f"cap {cap}: time {times[cap]:.1f} s wall, {cpus[cap]:.1f} s CPU")
    if not args.no_long:
        print(f"max_grid_iter=40: time {t_long:.1f} s wall, {cpu_long:.1f} s CPU")
    if args.save:
        args.save.write_text(json.dumps(record, indent=1))
    if args.against:
        compare(record, args.against)


if __name__ == "__main__":
    main()
