"""The bootstrap of a nonlinear fit: resample weights, picklable refit jobs, intervals.

Each resample is refit from the full-data optimum alone (a warm start; no other basin is
tried) to certified convergence. The resamples are drawn in order, block by block within the
engine's memory budget, and split into :class:`BootstrapJob` (run by the builtin ``map``, an
executor's ``map`` or Prefect tasks); the samples do not depend on how many jobs there are
or where they run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .. import _optim
from ..errors import FitError
from .multistart import RTOL
from .points import _Points

__all__ = [
    "BootstrapJob",
    "BootstrapMap",
    "BootstrapRefits",
    "percentile_ci",
    "refit_resamples",
    "run_bootstrap_job",
]


def _bootstrap_groups(pts: _Points, resample: str) -> np.ndarray:
    """The group of each point that a resample draws whole: the point itself, its run or
    its model size."""
    if resample == "points":
        return np.arange(pts.n)
    if resample == "runs":
        if pts.run_id is None:
            raise FitError("`resample='runs'` needs a `run_id` column; use 'points' or 'params'")
        return np.unique(pts.run_id, return_inverse=True)[1]
    return np.unique(pts.params, return_inverse=True)[1]


def _bootstrap_weights(
    pts: _Points, resample: str, n_bootstrap: int, rng: np.random.Generator
) -> np.ndarray:
    """All ``(n_bootstrap, n)`` resample weights at once (how often each point is drawn);
    the fit draws them block by block instead (:func:`refit_resamples`), row for row the
    same."""
    blocks = _optim.bootstrap_weight_blocks(_bootstrap_groups(pts, resample), n_bootstrap, rng)
    return np.concatenate([w for _, _, w in blocks]) if n_bootstrap else np.zeros((0, pts.n))


class BootstrapRefits(NamedTuple):
    """Where the refits of a :class:`BootstrapJob` ended: one row per resample."""

    theta: np.ndarray
    converged: np.ndarray


@dataclass(frozen=True)
class BootstrapJob:
    """Refits of a slice of a fit's bootstrap resamples, warm-started at the full-data optimum.

    Self-contained and picklable, so that it can run in another thread, process or Dask
    worker (:func:`run_bootstrap_job`). A resample's refit depends only on its own weights,
    so the samples are the same however the resamples are split into jobs and wherever the
    jobs run.
    """

    objective: _optim.HuberObjective
    theta: np.ndarray
    weights: np.ndarray  # (resamples, points): how often each point is drawn
    lower: np.ndarray
    upper: np.ndarray

    @property
    def size(self) -> int:
        """Resamples in this job."""
        return int(self.weights.shape[0])


BootstrapMap = Callable[
    [Callable[[BootstrapJob], BootstrapRefits], Iterable[BootstrapJob]],
    Iterable[BootstrapRefits],
]
"""Runs bootstrap jobs, in order, like the builtin ``map`` (the default), an executor's
``map``, or Prefect tasks (the refresh flow's ``bootstrap_map``). The jobs come as an
iterator that draws each job's resamples when it is taken: the builtin ``map`` holds one
job's weights at a time; a parallel map takes them all first."""


def run_bootstrap_job(job: BootstrapJob) -> BootstrapRefits:
    """Refit every resample of ``job`` to certified convergence (NaN-free; check
    ``converged``)."""
    th0 = np.repeat(job.theta[None, :], job.size, axis=0)
    res = _optim.minimize_chunked(
        job.objective, th0, job.weights, job.lower, job.upper, max_iter=1000, rtol=RTOL
    )
    return BootstrapRefits(res.theta, res.converged)


@dataclass(frozen=True)
class Resampling:
    """How a fit's bootstrap is drawn and run."""

    resample: str
    n_bootstrap: int
    rng: np.random.Generator
    jobs: int = 1
    map_jobs: BootstrapMap = map


def refit_resamples(
    obj: _optim.HuberObjective,
    theta: np.ndarray,
    pts: _Points,
    bounds: tuple[np.ndarray, np.ndarray],
    how: Resampling,
    diag: dict[str, object],
    warns: list[str],
) -> tuple[np.ndarray, np.ndarray]:
    """Refit ``how.n_bootstrap`` resamples warm-started from ``theta`` to certified
    convergence, split into ``how.jobs`` :class:`BootstrapJob` run by ``how.map_jobs``.

    Returns the refits' parameters (one row per resample) and whether each converged;
    records the count of failures in ``diag`` and warns when over 1% failed.
    """
    n = how.n_bootstrap
    groups = _bootstrap_groups(pts, how.resample)
    # Jobs of at most ceil(n / jobs) resamples, each drawn only when it is run (with the
    # builtin map) and within the engine's memory budget: 1,000 resamples of 1M points
    # would be an 8 GB matrix at once. The draws are the same however they are split.
    per_job = -(-n // min(how.jobs, n))
    rows = min(per_job, _optim.weight_block_rows(pts.n, int(groups.max()) + 1))
    n_parts = -(-n // rows)
    blocks = _optim.bootstrap_weight_blocks(groups, n, how.rng, max_rows=rows)
    parts = (BootstrapJob(obj, theta, w, *bounds) for _, _, w in blocks)
    done = list(how.map_jobs(run_bootstrap_job, parts))
    if len(done) != n_parts:
        raise RuntimeError(f"bootstrap_map returned {len(done)} results for {n_parts} jobs")
    thetas = np.concatenate([d.theta for d in done])
    converged = np.concatenate([d.converged for d in done])
    n_bad = int((~converged).sum())
    diag["bootstrap_not_converged"] = n_bad
    if n_bad > 0.01 * n:
        warns.append(f"{n_bad} of {n} bootstrap refits did not converge")
    return thetas, converged


def percentile_ci(
    samples: np.ndarray, names: Sequence[str], level: float
) -> dict[str, tuple[float, float]]:
    """Percentile intervals at ``level`` of each column of ``samples`` (NaN rows left out)."""
    q = (1 - level) / 2
    out = {}
    for j, name in enumerate(names):
        col = samples[:, j]
        col = col[np.isfinite(col)]
        if col.size:
            out[name] = (float(np.quantile(col, q)), float(np.quantile(col, 1 - q)))
    return out
