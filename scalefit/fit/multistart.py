"""The one multi-start driver, used by every nonlinear form (the data-constrained one too).

The objective is evaluated at every start of a grid and the best fifth of them (all of a grid
of at most 256) are run at once as a numpy batch by the damped Newton engine
(:mod:`scalefit._optim`) for a few iterations; rows whose iterates coincide are merged; the
promising unfinished ones are run to certified convergence in rounds; the end points are
grouped into basins; the best is polished to certified convergence (where it cannot be,
the law is refitted without each of its terms in turn: :func:`_drop_terms`). :func:`search` then
analyses the optimum: convergence, bound hits, identifiability (:mod:`.diagnostics`), and
records the basin spread (how many starts reached the best basin, the next basin's
objective and estimates).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from .. import _optim
from .diagnostics import identifiability

__all__ = ["RTOL", "Optimum", "SearchSpace", "search", "solve_grid"]

RTOL = 1e-14  # Newton decrement / objective at which a fit counts as converged
_BASIN_RTOL = 1e-7  # relative objective gap within which two end points are one basin
_N_CONTINUED = 16  # unfinished starts beyond the near-best ones run on to convergence
_MAX_ROUNDS = 50  # rounds of 10 iterations a continued start gets before it is abandoned
_POLISH_ITER = 2000  # iterations the best point (and each probe without a term) gets
SCREEN_SHARE = 0.2  # share of a grid's starts, best objective first, that the engine runs
SCREEN_MIN = 256  # ... but at least this many (all of a grid this small or smaller)


class SearchSpace(Protocol):
    """What the driver needs of a form: its box, parameter names and estimates."""

    @property
    def lower(self) -> np.ndarray: ...

    @property
    def upper(self) -> np.ndarray: ...

    @property
    def theta_names(self) -> tuple[str, ...]: ...

    def estimates(self, theta: np.ndarray) -> dict[str, np.ndarray]: ...


def _basins(objective: np.ndarray, theta: np.ndarray) -> list[np.ndarray]:
    """Group end points into basins (same objective within a relative tolerance and the same
    parameters within 1e-4), best first; each basin is an index array."""
    order = np.argsort(objective, kind="stable")
    order = order[np.isfinite(objective[order])]
    basins: list[np.ndarray] = []
    while order.size:
        lead = order[0]
        same = (
            np.abs(objective[order] - objective[lead]) <= _BASIN_RTOL * abs(objective[lead])
        ) & (
            np.abs(theta[order] - theta[lead]).max(axis=1) <= 1e-4 * (1 + np.abs(theta[lead]).max())
        )
        basins.append(order[same])
        order = order[~same]
    return basins


def _merge(theta: np.ndarray, f: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Indices of representatives after merging rows whose iterates coincide (every
    parameter within 1e-6 of the other's scale, objective within 1e-9 relative): from the
    same point a deterministic optimizer takes the same path, so one row stands for all and
    carries their count (added into ``count`` in place)."""
    scale = 1e-6 * (1.0 + np.abs(theta))
    key = np.concatenate(
        [np.round(theta / scale).astype(np.int64), np.round(np.log(f) / 1e-9)[:, None]], axis=1
    ).astype(np.int64)
    first, inverse = _optim.first_of_equal_rows(key)
    sums = np.bincount(inverse, weights=count, minlength=first.size)
    count[first] = sums
    return np.sort(first)


@dataclass
class _Runs:
    """The state of every start's row during the search."""

    theta: np.ndarray
    f: np.ndarray
    conv: NDArray[np.bool_]
    count: np.ndarray  # starts each representative row stands for
    keep: NDArray[np.bool_]  # representatives (and non-finite rows)
    abandoned: NDArray[np.bool_]
    n_merged: int = 0

    def add(self, theta: np.ndarray, f: float, conv: bool) -> int:
        """A row that no start stands for (count 0): a point found otherwise; its index."""
        self.theta = np.vstack([self.theta, theta[None]])
        self.f = np.append(self.f, f)
        self.conv = np.append(self.conv, conv)
        self.count = np.append(self.count, 0.0)
        self.keep = np.append(self.keep, True)
        self.abandoned = np.append(self.abandoned, False)
        return self.f.size - 1

    def merge(self, rows: np.ndarray) -> np.ndarray:
        """Merge coinciding ``rows``; the representatives (the others stop being kept)."""
        c = self.count[rows]
        sel = _merge(self.theta[rows], self.f[rows], c)
        self.count[rows] = c
        gone = np.ones(rows.size, dtype=bool)
        gone[sel] = False
        gone = np.flatnonzero(gone)
        self.keep[rows[gone]] = False
        self.n_merged += gone.size
        return rows[sel]


def _screen(obj: _optim.HuberObjective, starts: np.ndarray) -> np.ndarray:
    """The starts worth running: the objective at every start (one pass over the points,
    a tenth of an iteration's cost: :meth:`~scalefit._optim.HuberObjective.screen`), then the
    best :data:`SCREEN_SHARE` of them (at least :data:`SCREEN_MIN`), in grid order.

    Most of Hoffmann et al.'s 4500 starts are far off any data (``A = e^25`` with ``alpha =
    0``): running them costs four fifths of a fit and they end in the basins the better ones
    reach. On the 40 hard data sets of ``benchmarks/fit_robustness.py`` a tenth missed one
    optimum (set 24, by 14%) and a fifth none; see benchmarks/RESULTS.md."""
    n = starts.shape[0]
    keep = max(SCREEN_MIN, int(np.ceil(SCREEN_SHARE * n)))
    if n <= keep:
        return starts
    f0 = obj.screen(starts)
    f0 = np.where(np.isfinite(f0), f0, np.inf)
    best = np.sort(np.argsort(f0, kind="stable")[:keep])
    return starts[best]


def _first_pass(
    space: SearchSpace, obj: _optim.HuberObjective, starts: np.ndarray, w: np.ndarray, it: int
) -> _Runs:
    # Phase 1 certifies at a looser 1e-10 (the basin is found); the best end point is then
    # polished to RTOL. Its damping is Marquardt's diagonal: it explores more widely in its
    # few steps than the damping coupled within terms (which converges in fewer), and on
    # degenerate data (a term that can stand in for another) that decides which valley the
    # continued starts are in.
    first = _optim.minimize_chunked(
        obj, starts, w, space.lower, space.upper, max_iter=it, rtol=1e-10, coupling=0.0
    )
    f = first.objective.copy()
    finite = np.isfinite(f) & (f > 0)
    runs = _Runs(
        first.theta.copy(),
        f,
        np.array(first.converged, dtype=bool),  # a copy
        np.ones(f.size),
        finite.copy(),
        np.zeros(f.size, dtype=bool),
    )
    runs.merge(np.flatnonzero(finite))
    runs.keep |= ~finite
    return runs


def _continue(space: SearchSpace, obj: _optim.HuberObjective, runs: _Runs, w: np.ndarray) -> None:
    """Run the promising unfinished rows (objective within 10% of the best so far, and the
    best 16 others) to certified convergence in rounds of 10 iterations, judged after each;
    abandon the rest. One resumable run: a row keeps its damping from round to round."""
    open_rows = np.flatnonzero(runs.keep & ~runs.conv)
    if not open_rows.size:
        return
    f = runs.f
    fmin = np.nanmin(f[runs.keep])
    is_near = f[open_rows] <= fmin + 0.1 * abs(fmin)
    near, rest = open_rows[is_near], open_rows[~is_near]
    cont = np.concatenate([near, rest[np.argsort(f[rest])[:_N_CONTINUED]]])
    left = np.zeros(f.size, dtype=bool)
    left[open_rows] = True
    left[cont] = False
    runs.abandoned[left] = True
    run = _optim.BatchRun(obj, runs.theta[cont], w, space.lower, space.upper, RTOL, None)
    for round_ in range(_MAX_ROUNDS):
        going = np.flatnonzero(run.active)  # rows of the run (positions in `cont`)
        if going.size == 0:
            break
        f_before = run.f[going].copy()
        run.advance(10)
        runs.theta[cont], f[cont], runs.conv[cont] = run.theta, run.f, run.converged
        still = run.active[going]
        gain = f_before[still] - run.f[going[still]]
        going = going[still]
        certified = runs.conv & runs.keep & np.isfinite(f)
        if certified.any() and going.size:
            # A start still above the best certified objective that, descending at the rate
            # of its last round, could not get below it within the rounds left would only be
            # abandoned at the end: abandon it now.
            gap = run.f[going] - f[certified].min()
            hopeless = (gap > 0) & (gap > gain * (_MAX_ROUNDS - 1 - round_))
            runs.abandoned[cont[going[hopeless]]] = True
            run.stop(going[hopeless])
            going = going[~hopeless]
        if going.size > 1:
            kept = np.zeros(f.size, dtype=bool)
            kept[runs.merge(cont[going])] = True
            run.stop(going[~kept[cont[going]]])
    runs.abandoned[cont[run.active]] = True


def _ranked_basins(runs: _Runs) -> list[np.ndarray]:
    """Basins of the end points, best first. The best point wins whether or not its start
    finished: a certified but worse basin must never be preferred to a lower objective."""
    ok = runs.conv & runs.keep
    pool = np.flatnonzero(ok)
    if pool.size:
        # Unfinished points count only where they beat every certified one (to 1e-9).
        f = runs.f
        better = runs.keep & ~runs.conv & np.isfinite(f) & (f < f[pool].min() * (1 - 1e-9))
        pool = np.concatenate([pool, np.flatnonzero(better)])
    else:
        pool = np.flatnonzero(runs.keep & np.isfinite(runs.f))
    return [pool[b] for b in _basins(runs.f[pool], runs.theta[pool])]


def _spread(
    space: SearchSpace, runs: _Runs, basins: list[np.ndarray], n_starts: int, n_run: int, it: int
) -> dict[str, Any]:
    """Diagnostics of the search: starts (``n_starts`` given, ``n_run`` of them run after
    the screen), merges, basins, the next basin."""
    f, count, i = runs.f, runs.count, int(basins[0][0])
    second = basins[1][0] if len(basins) > 1 else None
    n_conv = int(count[runs.conv & runs.keep].sum())
    return {
        "n_starts": n_starts,
        "n_screened_starts": n_starts - n_run,
        "n_run_starts": n_run,
        "n_converged_starts": n_conv,
        "n_unfinished_starts": n_run - n_conv,
        "n_abandoned_starts": int(count[runs.abandoned & runs.keep].sum()),
        "n_merged_starts": runs.n_merged,
        "n_best_basin": int(count[basins[0]].sum()),
        "n_basins": len(basins),
        "second_best_objective": None if second is None else float(f[second]),
        "second_best_relative_gap": (
            None if second is None else float((f[second] - f[i]) / max(abs(f[i]), 1e-300))
        ),
        "second_best_estimates": (
            None
            if second is None
            else {k: float(v[0]) for k, v in space.estimates(runs.theta[second]).items()}
        ),
        "other_basin_objectives": [float(f[b[0]]) for b in basins[1:6]],
        "grid_iterations_cap": it,
    }


def solve_grid(
    space: SearchSpace, obj: _optim.HuberObjective, starts: np.ndarray, *, max_iter: int
) -> tuple[_optim.BatchResult, dict[str, Any]]:
    """Screen the starts by their objective (:func:`_screen`), run the rest as one batch for
    ``max_iter`` iterations, continue the promising ones to certified convergence, group the
    end points into basins and polish the best; if the polished point is not certified,
    refit without each term in turn (:func:`_drop_terms`).

    Counts are kept per representative, so the diagnostics count starts, not rows:
    ``n_best_basin`` is the number of starts whose path ended in the best basin. Of the
    ``n_starts`` given, ``n_screened_starts`` were left out by the screen and
    ``n_run_starts`` run; every run start is converged or unfinished."""
    w = np.ones(obj.y.size)
    run = _screen(obj, starts)
    runs = _first_pass(space, obj, run, w, max_iter)
    _continue(space, obj, runs, w)
    basins = _ranked_basins(runs)
    i = int(basins[0][0])
    polished = _optim.minimize_batch(
        obj, runs.theta[i : i + 1], w, space.lower, space.upper, max_iter=_POLISH_ITER, rtol=RTOL
    )
    res, dropped = _drop_terms(space, obj, polished, w)
    refit: dict[str, Any] = {"refit_without_term": None, "refit_gain": None}
    if dropped is not None:
        # The fit is a point that no start reached: it leads the basins (with no start in
        # it, unless some ended there), and the search's best, polished, follows.
        runs.theta[i], runs.f[i] = polished.theta[0], polished.objective[0]
        runs.conv[i] = polished.converged[0]
        new = runs.add(res.theta[0], float(res.objective[0]), bool(res.converged[0]))
        basins = _ranked_basins(runs)
        lead = [k for k, b in enumerate(basins) if new in b]
        basins.insert(0, basins.pop(lead[0]) if lead else np.array([new]))
        f_search = float(polished.objective[0])
        refit = {
            "refit_without_term": space.theta_names[dropped],
            "refit_gain": (f_search - float(res.objective[0])) / max(f_search, 1e-300),
        }
    diag = _spread(space, runs, basins, int(starts.shape[0]), int(run.shape[0]), max_iter)
    diag.update(refit)
    return res, diag


def _row(res: _optim.BatchResult, i: int) -> _optim.BatchResult:
    """Row ``i`` of ``res`` as a one-row result."""
    return _optim.BatchResult(
        *(getattr(res, name)[i : i + 1] for name in _optim.BatchResult.__dataclass_fields__)
    )


def _drop_terms(
    space: SearchSpace, obj: _optim.HuberObjective, best: _optim.BatchResult, w: np.ndarray
) -> tuple[_optim.BatchResult, int | None]:
    """When the polished best point is not certified: the law without each of its terms in
    turn (:attr:`~scalefit._optim.LSEAffineModel.term_coefficients`: the term's
    log-coefficient held at the lower bound of the box, where the term is negligible),
    fitted from that point; each nested fit at least as low as ``best`` is then released
    (the term free to grow back) and polished. The lowest objective wins, and at an
    objective equal within ``1e-9`` a certified point wins. Returns it and the coefficient of
    the term its probe started without (None: ``best`` itself).

    A fit heading for ``E -> 0`` along a curved valley (``B`` with ``beta -> 0`` standing in
    for ``E``) crawls: robustness set 16 would need ~3700 iterations to reach the bound and
    certifies in ~200 without ``E``. Where two terms are one (``beta`` on its bound makes the
    ``B`` term a constant beside ``E``), the Hessian is singular and no point certifies
    until one of them is dropped (set 21). Certified fits are left as they are."""
    coefs = getattr(obj.model, "term_coefficients", ())
    if best.converged[0] or len(coefs) < 2:
        return best, None
    lower, f_best = space.lower, float(best.objective[0])
    tie = f_best * (1 + 1e-9)
    found: list[tuple[int, np.ndarray]] = []
    for j in coefs:
        if best.theta[0, j] <= lower[j]:
            continue
        theta, upper = best.theta.copy(), space.upper.copy()
        theta[0, j] = upper[j] = lower[j]
        fit = _optim.minimize_batch(obj, theta, w, lower, upper, max_iter=_POLISH_ITER, rtol=RTOL)
        if fit.objective[0] <= tie:
            found.append((j, fit.theta))
    if not found:
        return best, None
    probe = _optim.minimize_batch(
        obj,
        np.concatenate([t for _, t in found]),
        w,
        lower,
        space.upper,
        max_iter=_POLISH_ITER,
        rtol=RTOL,
    )
    f = np.concatenate([best.objective, probe.objective])
    f = np.where(np.isfinite(f), f, np.inf)
    conv = np.concatenate([best.converged, probe.converged])
    near = f <= f.min() + 1e-9 * abs(f.min())
    k = int(np.argmax(near & conv)) if (near & conv).any() else int(np.argmin(f))
    if k == 0:
        return best, None
    return _row(probe, k - 1), found[k - 1][0]


def _refit_warning(name: str, gain: float) -> str:
    """What :func:`_drop_terms` did, for the fit's warnings: where the objective did not move
    (to 1e-9), the data cannot tell the law from the one without that term."""
    head = (
        "the best point of the multi-start search was not certified; this fit was reached by "
        f"refitting without the term of {name} (held at the lower bound of the box), then "
        "with it free again"
    )
    if gain <= 1e-9:
        return (
            f"{head}, at the same objective (to 1e-9): the data do not determine the term of "
            f"{name}, and this is the fit that does without it"
        )
    return f"{head}, {gain:.2g} lower (relative objective)"


@dataclass
class Optimum:
    """The certified optimum of a multi-start search, with what was found about it."""

    theta: np.ndarray
    objective: float
    converged: bool
    diagnostics: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


def search(
    space: SearchSpace, obj: _optim.HuberObjective, starts: np.ndarray, *, max_iter: int
) -> Optimum:
    """:func:`solve_grid`, then the optimum's analysis: certified convergence, parameters on
    a bound of the box, the scaled Hessian's condition number (identifiability)."""
    best, diag = solve_grid(space, obj, starts, max_iter=max_iter)
    theta = best.theta[0]
    warns: list[str] = []
    converged = bool(best.converged[0])
    if not converged:
        warns.append(
            f"the best fit did not reach certified convergence (Newton decrement "
            f"{best.decrement[0]:.3g} vs objective {best.objective[0]:.3g})"
        )
    if diag["refit_without_term"] is not None:
        warns.append(_refit_warning(diag["refit_without_term"], diag["refit_gain"]))
    on_bound = [space.theta_names[j] for j in np.flatnonzero(best.at_bound[0])]
    if on_bound:
        warns.append(f"parameter(s) {', '.join(on_bound)} ended on a bound of the search box")
    cond, ident = identifiability(space.theta_names, best.hess[0], ~best.at_bound[0])
    warns += ident
    diag.update(
        {
            "on_bound": on_bound,
            "hessian_condition": cond,
            "newton_decrement": float(best.decrement[0]),
            "gradient": best.grad[0].tolist(),
            "theta": dict(zip(space.theta_names, theta.tolist(), strict=True)),
        }
    )
    return Optimum(theta, float(best.objective[0]), converged, diag, warns)
