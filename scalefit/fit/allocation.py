"""Allocation procedures: Hoffmann et al. (2022) approaches 1 and 2.

- :func:`fit_isoflop` (approach 2, IsoFLOP profiles): points are grouped into compute budgets
  (``flops``, else ``6 N D``; points within ``budget_rtol`` share a budget). For each budget
  with at least three model sizes, a parabola of loss against ``log N`` is fitted and its
  minimum taken as ``N_opt(C)``; then ``log N_opt = log k + a log C`` by least squares, and
  ``D_opt = C / (6 N_opt)`` (so ``b = 1 - a``). The bootstrap resamples points within each
  budget.
- :func:`fit_envelope` (approach 1, the envelope of training curves): each run's curve is
  smoothed (a cubic in log FLOPs fitted to log loss, :data:`ENVELOPE_SMOOTH_DEGREE`) and kept
  only over the middle of its FLOP span (:data:`ENVELOPE_TRIM`); at ``n_grid`` log-spaced FLOP
  counts the run with the lowest smoothed loss gives ``N_opt(C)`` and
  ``D_opt(C) = C / (6 N_opt)``; ``N_opt ~ C^a`` and ``D_opt ~ C^b`` by least squares in log
  space. The bootstrap resamples whole runs (each with its own smoothed curve, so the
  intervals carry the smoothing's errors).

Envelope: smoothing matters, because the minimum over runs of noisy values selects favourable
noise. With raw curves, 0.1% noise per logged point biased ``a`` by -0.006 and 0.2% left the
95% intervals covering the truth in 16 of 30 datasets. Smoothed and trimmed, 0.5%, 1% and 2%
noise per point (real eval losses carry 0.5-2%) gave mean errors of +0.001, -0.0005 and
-0.004 and coverage of 30, 30 and 29 of 30 datasets (tests/test_fit.py); noise-free,
+0.0011. Runs with fewer than ``ENVELOPE_SMOOTH_DEGREE + 2`` points are left out, with a
warning. Only interior budgets are kept: those where a run smaller and a run larger than the
best one also reach that FLOP count. Elsewhere the minimum is censored by the model sizes
tried (at the low end of the range only the smallest runs exist, at the high end only the
largest), and keeping those budgets biases ``a`` (on noise-free curves of a known law, from
0.514 to 0.454). How many were dropped, and why, is in ``diagnostics["envelope_budgets"]``
(and the fit's printed summary); a warning says so when the kept minima are made by fewer
than :data:`ENVELOPE_MIN_SIZES` model sizes.

Both are least-squares lines, always solved exactly: they take no Huber ``delta``, and their
bootstrap unit is their own (points within budgets; runs), so a ``delta``, or a ``resample``
they cannot honour (``params``; ``runs`` for an IsoFLOP fit whose runs give several points),
is refused, not ignored.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from typing import Any, Unpack

import numpy as np

from ..errors import FitError
from ..laws import AllocationLaw, training_flops
from .points import PointsLike, _Points, as_points, budget_groups
from .result import LawFit, make_fit
from .settings import FitOptions, FitSettings

__all__ = [
    "ENVELOPE_MIN_SIZES",
    "ENVELOPE_SMOOTH_DEGREE",
    "ENVELOPE_TRIM",
    "fit_envelope",
    "fit_isoflop",
]

_LOG_6 = float(np.log(training_flops(1.0, 1.0)))  # log D_opt = log C - log 6 - log N_opt


def _applicable(procedure: str, s: FitSettings, resamples: tuple[str, ...]) -> None:
    """Refuse settings an allocation fit cannot honour (instead of ignoring them)."""
    if not s.is_default("delta"):
        raise FitError(
            f"an {procedure} fit takes no Huber `delta` (got {s.delta!r}): it fits "
            "least-squares lines; leave delta at its default"
        )
    if not s.is_default("resample") and s.resample not in resamples:
        raise FitError(
            f"an {procedure} fit's bootstrap resamples {resamples[-1]}, not "
            f"{s.resample!r}; use resample={resamples[-1]!r} or leave it at its default"
        )


def _exp(x: float) -> float:
    """``exp(x)``, or ``inf`` where that overflows (the minimum of a nearly flat profile)."""
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


def _isoflop_minima(
    log_n: np.ndarray, loss: np.ndarray, groups: np.ndarray, log_c: np.ndarray, w: np.ndarray
) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Per budget: weighted parabola of loss against log N and its minimum.

    A nearly flat profile puts its minimum astronomically far away (``params_opt`` is then
    ``inf``): no overflow warning or error here; the allocation fit judges the result."""
    xs, ys, rows = [], [], []
    for g in np.unique(groups):
        m = (groups == g) & (w > 0)
        if np.unique(log_n[m]).size < 3:
            continue
        with np.errstate(all="ignore"):
            c2, c1, c0 = (float(c) for c in np.polyfit(log_n[m], loss[m], 2, w=np.sqrt(w[m])))
        if not c2 > 0:
            continue
        x_opt = -c1 / (2 * c2)
        c = float(np.mean(log_c[groups == g]))
        xs.append(c)
        ys.append(x_opt)
        rows.append(
            {
                "flops": math.exp(c),
                "n_points": int(m.sum()),
                "params_opt": _exp(x_opt),
                "loss_min": c0 - c1 * c1 / (4 * c2),
                "curvature": float(c2),
                "inside_range": bool(log_n[m].min() <= x_opt <= log_n[m].max()),
            }
        )
    return np.array(xs), np.array(ys), rows


def _allocation_estimates(log_c: np.ndarray, log_n: np.ndarray) -> tuple[dict, float]:
    """``log N_opt = log k + a log C`` by least squares, and the implied ``D_opt``.

    A minimum far outside the sizes tried (a nearly flat profile) can make ``k`` overflow:
    the estimates are then not finite (``inf``, ``0``), never an exception; callers check."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", np.exceptions.RankWarning)
        a, log_k = np.polyfit(log_c, log_n, 1)
        rss = float(np.sum((log_n - (log_k + a * log_c)) ** 2))
    k = _exp(float(log_k))
    return {
        "params_exp": float(a),
        "params_coef": k,
        "tokens_exp": float(1 - a),
        "tokens_coef": 1.0 / float(training_flops(k, 1.0)) if 0.0 < k < math.inf else math.nan,
    }, rss


def _usable(est: Mapping[str, float]) -> bool:
    """Whether every estimate of an allocation fit is a finite, usable number."""
    return all(math.isfinite(v) for v in est.values()) and est["params_coef"] > 0


def _allocation_fit(
    procedure: str,
    est: dict[str, float],
    rss: float,
    samples: np.ndarray,
    pts: _Points,
    s: FitSettings,
    settings: dict[str, Any],
    diag: dict[str, Any],
    warns: list[str],
) -> LawFit:
    """The :class:`LawFit` of an allocation fit (approach 1 or 2): a least-squares line,
    always solved exactly."""
    return make_fit(
        form=procedure,
        law=AllocationLaw(
            params_exp=est["params_exp"],
            params_coef=est["params_coef"],
            tokens_exp=est["tokens_exp"],
            tokens_coef=est["tokens_coef"],
        ),
        est=est,
        derived={},
        samples=samples,
        confidence_level=s.confidence_level,
        objective=rss,
        n_points=pts.n,
        converged=True,
        settings=settings,
        diag=diag,
        warns=warns,
        input_sha256=pts.sha256(),
        stacklevel=4,
    )


def _isoflop_samples(pts: _Points, groups: np.ndarray, s: FitSettings, width: int) -> np.ndarray:
    """Bootstrap of an IsoFLOP fit: points resampled within each budget."""
    rng = s.rng()
    log_n, log_c = np.log(pts.params), np.log(pts.flops)
    out = np.full((s.n_bootstrap, width), np.nan)
    for b in range(s.n_bootstrap):
        w = np.zeros(pts.n)
        for g in np.unique(groups):
            idx = np.flatnonzero(groups == g)
            np.add.at(w, rng.choice(idx, idx.size), 1.0)
        # A resample that cannot be fitted (fewer than two usable budgets, or a nearly
        # flat profile whose minimum overflows) stays NaN: counted, never fatal.
        try:
            bx, by, _ = _isoflop_minima(log_n, pts.loss, groups, log_c, w)
            got = _allocation_estimates(bx, by)[0] if bx.size >= 2 else None
        except (np.linalg.LinAlgError, ValueError, FloatingPointError):
            got = None
        if got is not None and _usable(got):
            out[b] = list(got.values())
    return out


def _isoflop_points(data: PointsLike, s: FitSettings) -> _Points:
    """The points of an IsoFLOP fit, refusing settings it cannot honour."""
    _applicable("isoflop", s, ("runs", "points"))
    pts = as_points(data, need=("params", "flops"))
    if s.resample == "runs" and pts.run_id is not None and np.unique(pts.run_id).size < pts.n:
        raise FitError(
            "an isoflop fit's bootstrap resamples points within budgets, which is resampling "
            "runs only when each run gives one point; these runs give several: use "
            "resample='points'"
        )
    return pts


def fit_isoflop(
    data: PointsLike, *, settings: FitSettings | None = None, **options: Unpack[FitOptions]
) -> LawFit:
    """Hoffmann et al. (2022) approach 2: IsoFLOP profiles (see :mod:`scalefit.fit.allocation`).

    Settings (``settings`` and/or ``options``, as :func:`scalefit.fit.fit_law`):
    ``n_bootstrap``, ``seed``, ``confidence_level``, ``budget_rtol``.

    Returns
    -------
    LawFit
        ``form="isoflop"``; ``law`` is an :class:`~scalefit.laws.AllocationLaw` with
        ``params_exp`` (a), ``params_coef`` (k), ``tokens_exp``, ``tokens_coef``;
        ``objective`` is the residual sum of squares of the line in log space;
        ``diagnostics["budgets"]`` has each budget's minimum.

    Raises
    ------
    FitError
        Fewer than two budgets with three or more model sizes and a convex profile; a
        ``delta`` or ``resample`` the procedure does not use.
    """
    s = FitSettings.of(settings, **options)
    pts = _isoflop_points(data, s)
    groups = budget_groups(pts.flops, s.budget_rtol)
    log_n, log_c = np.log(pts.params), np.log(pts.flops)
    xs, ys, rows = _isoflop_minima(log_n, pts.loss, groups, log_c, np.ones(pts.n))
    if xs.size < 2:
        raise FitError(
            f"{xs.size} compute budget(s) with three or more model sizes and a convex loss "
            "profile: an IsoFLOP fit needs at least two; add model sizes at each budget"
        )
    est, rss = _allocation_estimates(xs, ys)
    if not _usable(est):
        raise FitError(
            "the IsoFLOP minima give no finite allocation line (a budget's loss profile is "
            "nearly flat, so its minimum lies far outside the model sizes tried): add model "
            "sizes on both sides of each budget's minimum"
        )
    warns = [
        f"the loss minimum at {r['flops']:.3g} FLOPs lies outside the model sizes tried"
        for r in rows
        if not r["inside_range"]
    ]
    samples = _isoflop_samples(pts, groups, s, len(est))
    settings_ = {
        "law": "isoflop",
        "n_bootstrap": s.n_bootstrap,
        "seed": s.seed_setting,
        "resample": "points within budgets",
        "confidence_level": s.confidence_level,
        "budget_rtol": s.budget_rtol,
    }
    diag = {"budgets": rows, "n_budgets": len(rows)}
    return _allocation_fit("isoflop", est, rss, samples, pts, s, settings_, diag, warns)


ENVELOPE_MIN_SIZES = 5
"""Fewest model sizes among an envelope fit's interior minima without a warning: ``N_opt``
is a staircase over the sizes tried, and a least-squares line through ``K`` equal steps
shrinks the exponent by about ``1/K^2`` (measured: -0.012 with 7 steps, -0.0009 with 23)."""


ENVELOPE_SMOOTH_DEGREE = 3
"""Degree of the polynomial in log FLOPs fitted to each run's log loss before the envelope.

Hoffmann et al. (2022, Section 3.1) smooth and then interpolate each run's loss curve before
taking, at each FLOP count, the run of lowest loss; they do not say how. Without smoothing,
the minimum over runs selects favourable noise: with 0.1% noise per logged point the exponent
came out 0.006 low and its intervals covered the truth in 26 of 30 datasets. Measured on curves
of a known law (60 points over 3.5 decades of tokens per run): degree 2 bends the curves enough
to bias the exponent by +0.006 noise-free; 3 gives +0.0005; 4 and 5 are as close noise-free
but noisier."""

ENVELOPE_TRIM = 0.2
"""Fraction of each run's log-FLOP span dropped at either end after smoothing.

A fitted polynomial is least certain at the ends of its data (leverage), and the envelope's
minimum favours the least certain curves (their errors reach lower). At a small budget the
competing runs are all near the starts of their curves, the larger ones nearest, so larger
runs win too often; at a large budget all are near the ends, the smaller ones nearest, so
smaller runs win too often: the exponent comes out low. Using every run's whole smoothed
curve biased the exponent by -0.006, -0.019 and -0.036 at 0.5%, 1% and 2% noise per point;
keeping each run's middle 60% gives +0.001, -0.0005 and -0.004 (means over 30 seeded datasets;
see tests/test_fit.py). The result depends on this choice: keeping the middle 70% gave -0.003,
-0.007, -0.015, the middle 50% +0.009, +0.011, +0.014. On three other designs (other laws,
12-20 sizes, 40-100 points per curve) the middle 60% kept 30/30 coverage at each noise level,
where untrimmed smoothed curves fell to 17/30 at 2% on one of them; the mean error there stayed
within 0.01 except with 15 sizes over 3 decades of tokens (+0.012, +0.03, +0.08 at 0.5%, 1%,
2%, with intervals wide enough to cover)."""


def _envelope_curves(
    pts: _Points, runs: np.ndarray, uniq: np.ndarray, log_g: np.ndarray
) -> tuple[np.ndarray, np.ndarray, int]:
    """Each run's smoothed log loss at each log FLOP count of ``log_g``, one row per run of
    ``uniq`` (``inf`` where the run's trimmed curve does not reach), each run's parameters,
    and how many runs were too short to smooth.

    Smoothing: least squares of log loss on a polynomial of degree
    :data:`ENVELOPE_SMOOTH_DEGREE` in log FLOPs, per run, evaluated only on the middle of the
    run's FLOP span (:data:`ENVELOPE_TRIM` of it dropped at either end). A run with fewer than
    ``ENVELOPE_SMOOTH_DEGREE + 2`` distinct FLOP counts is left out (its row stays ``inf``).
    """
    curves = np.full((uniq.size, log_g.size), np.inf)
    sizes = np.empty(uniq.size)
    too_short = 0
    for i, r in enumerate(uniq):
        m = runs == r
        sizes[i] = pts.params[m][0]
        lc, log_loss = np.log(pts.flops[m]), np.log(pts.loss[m])
        if np.unique(lc).size < ENVELOPE_SMOOTH_DEGREE + 2:
            too_short += 1
            continue
        lo, hi = lc.min(), lc.max()
        mid, half = (lo + hi) / 2, (hi - lo) / 2
        coef = np.polynomial.polynomial.polyfit((lc - mid) / half, log_loss, ENVELOPE_SMOOTH_DEGREE)
        cut = ENVELOPE_TRIM * (hi - lo)
        inside = (log_g >= lo + cut) & (log_g <= hi - cut)
        curves[i, inside] = np.polynomial.polynomial.polyval((log_g[inside] - mid) / half, coef)
    return curves, sizes, too_short


def _envelope_minima(
    curves: np.ndarray, sizes: np.ndarray, log_g: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, int]]:
    """For each FLOP count, the run of lowest loss, kept only where that run is interior.

    ``curves`` and ``sizes`` are rows of :func:`_envelope_curves` (a bootstrap passes a
    resample of them). A budget is interior when runs smaller and larger than the best run
    also reach it (their curves span that FLOP count). At the ends of the FLOP range only the
    smallest (or only the largest) runs reach a budget, so "the best run" there is whichever
    run exists, not the loss minimum: keeping those budgets biases the allocation exponent.

    Returns ``(log C, log N_opt, log D_opt, counts)`` over the kept budgets; ``counts`` says
    how many budgets were ``covered`` by any run and why the others were dropped
    (``at_smallest``, ``at_largest``: the best run there is the smallest, or the largest, of
    the runs reaching it).
    """
    reach = np.isfinite(curves)
    covered = reach.any(axis=0)
    best_n = np.where(covered, sizes[np.argmin(curves, axis=0)], np.nan)
    with np.errstate(invalid="ignore"):
        smaller = (reach & (sizes[:, None] < best_n[None, :])).any(axis=0)
        larger = (reach & (sizes[:, None] > best_n[None, :])).any(axis=0)
    at_smallest = covered & ~smaller
    at_largest = covered & smaller & ~larger
    ok = covered & smaller & larger
    counts = {
        "grid": int(log_g.size),
        "covered": int(covered.sum()),
        "at_smallest": int(at_smallest.sum()),
        "at_largest": int(at_largest.sum()),
        "kept": int(ok.sum()),
        "sizes": int(np.unique(best_n[ok]).size),
    }
    log_n = np.log(best_n[ok])
    return log_g[ok], log_n, log_g[ok] - _LOG_6 - log_n, counts


def _envelope_estimator(
    curves: np.ndarray, sizes: np.ndarray, log_g: np.ndarray
) -> Callable[[np.ndarray], tuple[dict[str, float], float, dict[str, int]]]:
    """The envelope's estimates from a selection of runs (rows of ``curves``)."""

    def estimate(take: np.ndarray) -> tuple[dict[str, float], float, dict[str, int]]:
        lc, ln, ld, counts = _envelope_minima(curves[take], sizes[take], log_g)
        if np.unique(ln).size < 2:
            return {}, math.nan, counts
        a, log_k = np.polyfit(lc, ln, 1)
        b, log_kd = np.polyfit(lc, ld, 1)
        rss = float(np.sum((ln - (log_k + a * lc)) ** 2) + np.sum((ld - (log_kd + b * lc)) ** 2))
        est = {
            "params_exp": float(a),
            "params_coef": math.exp(log_k),
            "tokens_exp": float(b),
            "tokens_coef": math.exp(log_kd),
        }
        return est, rss, counts

    return estimate


def _envelope_warnings(too_short: int, n_runs: int, counts: Mapping[str, int]) -> list[str]:
    warns = []
    if too_short:
        warns.append(
            f"{too_short} of {n_runs} runs have fewer than {ENVELOPE_SMOOTH_DEGREE + 2} "
            "points on their loss curve, too few to smooth: left out of the envelope"
        )
    if counts["sizes"] < ENVELOPE_MIN_SIZES:
        warns.append(
            f"the envelope's interior minima are made by only {counts['sizes']} model sizes: "
            f"N_opt is a staircase of {counts['sizes']} steps, which biases the exponent "
            "towards zero; add runs of more sizes"
        )
    return warns


def fit_envelope(
    curves: PointsLike, *, settings: FitSettings | None = None, **options: Unpack[FitOptions]
) -> LawFit:
    """Hoffmann et al. (2022) approach 1: the envelope of training curves (see
    :mod:`scalefit.fit.allocation` for the method and its measured accuracy).

    ``curves`` holds many observations per run (``run_id``, ``params``, ``loss`` and
    ``flops`` or ``tokens``). Settings (``settings`` and/or ``options``, as
    :func:`scalefit.fit.fit_law`): ``n_grid`` (FLOP counts, default 250), ``n_bootstrap``,
    ``seed``, ``confidence_level``.

    Raises
    ------
    FitError
        No ``run_id``, or the interior budgets' minima are made by fewer than two model sizes
        (runs of more sizes, overlapping in FLOPs, are needed); a ``delta`` or ``resample``
        the procedure does not use.
    """
    s = FitSettings.of(settings, **options)
    _applicable("envelope", s, ("runs",))
    pts = as_points(curves, need=("params", "flops"))
    if pts.run_id is None:
        raise FitError("an envelope fit needs a `run_id` column (one loss curve per run)")
    uniq = np.unique(pts.run_id)
    log_g = np.log(np.geomspace(pts.flops.min(), pts.flops.max(), s.n_grid))
    smooth, sizes, too_short = _envelope_curves(pts, pts.run_id, uniq, log_g)
    estimate = _envelope_estimator(smooth, sizes, log_g)
    est, rss, counts = estimate(np.arange(uniq.size))
    if not est:
        raise FitError(
            f"the loss envelope has {counts['kept']} interior budget(s) of {counts['grid']} "
            f"({counts['at_smallest']} have the smallest run covering them as the minimum, "
            f"{counts['at_largest']} the largest, {counts['grid'] - counts['covered']} no run): "
            "an envelope fit needs interior minima at two or more model sizes; add runs "
            "smaller and larger than the best ones, with curves overlapping in FLOPs"
        )
    samples = np.full((s.n_bootstrap, len(est)), np.nan)
    rng = s.rng() if s.n_bootstrap else None
    for b in range(s.n_bootstrap):
        assert rng is not None
        got = estimate(rng.choice(uniq.size, uniq.size))[0]
        if got:
            samples[b] = list(got.values())
    recorded = {
        "law": "envelope",
        "n_grid": s.n_grid,
        "n_bootstrap": s.n_bootstrap,
        "seed": s.seed_setting,
        "resample": "runs",
        "confidence_level": s.confidence_level,
        "smooth_degree": ENVELOPE_SMOOTH_DEGREE,
        "trim": ENVELOPE_TRIM,
    }
    diag = {"n_runs": int(uniq.size), "runs_too_short": too_short, "envelope_budgets": counts}
    warns = _envelope_warnings(too_short, int(uniq.size), counts)
    return _allocation_fit("envelope", est, rss, samples, pts, s, recorded, diag, warns)
