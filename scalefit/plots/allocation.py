"""Allocation fits (Hoffmann et al. 2022, approaches 1 and 2) against their data: the
IsoFLOP parabolas or the training curves' envelope, and ``N_opt(C)``, ``D_opt(C)`` with
their bootstrap bands; and the bootstrap band of any law's allocation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.colors
import matplotlib.pyplot as plt
import numpy as np
import polars as pl

from .._budgets import budget_groups
from ..laws import Law
from ._style import LAW_COLOURS, bars, finish_fit_figure, interval, sequential
from .fits import MAX_SLICES, flops_of


def allocation_band(sample_laws: Sequence[Law], flops: Any, level: float = 0.95) -> pl.DataFrame:
    """Percentile interval (``level``) over ``sample_laws`` (bootstrap laws) of the
    compute-optimal parameters and tokens at each of ``flops``."""
    flops = np.asarray(flops, dtype=float)
    n = np.array([np.asarray(law.allocation(flops).params, dtype=float) for law in sample_laws])
    d = np.array([np.asarray(law.allocation(flops).tokens, dtype=float) for law in sample_laws])
    params_low, params_high = interval(n, level)
    tokens_low, tokens_high = interval(d, level)
    return pl.DataFrame(
        {
            "flops": flops,
            "params_low": params_low,
            "params_high": params_high,
            "tokens_low": tokens_low,
            "tokens_high": tokens_high,
        }
    )


def isoflop_profiles(
    points: pl.DataFrame,
    *,
    budget_rtol: float = 0.05,
    n_bootstrap: int = 200,
    level: float = 0.95,
    seed: int = 0,
) -> pl.DataFrame:
    """Each compute budget's parabola of loss against ``ln N`` (Hoffmann et al. 2022,
    approach 2, as :func:`scalefit.fit.fit_isoflop` fits it) and the percentile interval of
    its optimum from resampling the budget's points (``n_bootstrap`` times).

    Returns one row per budget with a convex parabola: ``group`` (index of
    :func:`budget_groups`), ``flops``, ``c2, c1, c0`` (loss =
    ``c2 x^2 + c1 x + c0``, ``x = ln N``), ``params_opt``, ``params_low``, ``params_high``,
    ``loss_min``.
    """
    n = points["params"].to_numpy().astype(float)
    loss = points["loss"].to_numpy().astype(float)
    c = flops_of(points)
    groups = budget_groups(c, budget_rtol)
    rng = np.random.default_rng(seed)
    q = (1 - level) / 2
    rows = []
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        x = np.log(n[idx])
        if np.unique(x).size < 3:
            continue
        c2, c1, c0 = np.polyfit(x, loss[idx], 2)
        if c2 <= 0:
            continue
        vertices = _resampled_vertices(x, loss[idx], n_bootstrap, rng)
        lo, hi = np.quantile(vertices, [q, 1 - q]) if vertices else (np.nan, np.nan)
        x_opt = -c1 / (2 * c2)
        rows.append(
            {
                "group": int(g),
                "flops": float(np.exp(np.mean(np.log(c[idx])))),
                "c2": float(c2),
                "c1": float(c1),
                "c0": float(c0),
                "params_opt": float(np.exp(x_opt)),
                "params_low": float(np.exp(lo)),
                "params_high": float(np.exp(hi)),
                "loss_min": float(c0 - c1 * c1 / (4 * c2)),
            }
        )
    return pl.DataFrame(rows)


def _resampled_vertices(
    x: np.ndarray, loss: np.ndarray, n_bootstrap: int, rng: np.random.Generator
) -> list[float]:
    """The vertex (``ln N`` at the least loss) of the parabola through each of
    ``n_bootstrap`` resamples of one budget's points; resamples with fewer than three
    sizes, or no convex parabola, have none."""
    vertices = []
    for _ in range(n_bootstrap):
        take = rng.choice(x.size, x.size)
        if np.unique(x[take]).size < 3:
            continue
        b2, b1, _b0 = np.polyfit(x[take], loss[take], 2)
        if b2 > 0:
            vertices.append(-b1 / (2 * b2))
    return vertices


def plot_isoflop_fit(
    points: pl.DataFrame,
    law: Law,
    path: Path,
    *,
    title: str,
    sample_laws: Sequence[Law] = (),
    level: float = 0.95,
    caveat: str | None = None,
) -> None:
    """An IsoFLOP fit (approach 2): left, each budget's points and parabola of loss against
    ``N`` with its optimum and the optimum's interval (:func:`isoflop_profiles`); right,
    ``N_opt(C)`` and ``D_opt(C) = C / (6 N_opt)`` at each budget's optimum with the fitted
    allocation law and its ``level`` bootstrap band from ``sample_laws``."""
    profiles = isoflop_profiles(points, level=level)
    fig, (ax, right) = plt.subplots(1, 2, figsize=(13, 5.8))
    _parabolas_panel(fig, ax, points, profiles, level)
    _allocation_panel(
        right,
        law,
        profiles["flops"].to_numpy(),
        profiles["params_opt"].to_numpy(),
        (profiles["params_low"].to_numpy(), profiles["params_high"].to_numpy()),
        sample_laws=sample_laws,
        level=level,
        what="at each budget",
    )
    finish_fit_figure(fig, title, caveat, path)


def _parabolas_panel(
    fig: plt.Figure, ax: plt.Axes, points: pl.DataFrame, profiles: pl.DataFrame, level: float
) -> None:
    """Each budget's points, parabola and optimum with its interval; past
    :data:`MAX_SLICES` budgets a colour bar instead of a legend entry per budget."""
    groups = budget_groups(flops_of(points))
    n = points["params"].to_numpy().astype(float)
    loss = points["loss"].to_numpy().astype(float)
    many = profiles.height > MAX_SLICES
    budgets = profiles["flops"].to_numpy() if profiles.height else np.array([1.0])
    norm = matplotlib.colors.LogNorm(budgets.min(), budgets.max() * 1.0001)
    cmap = matplotlib.colors.LinearSegmentedColormap.from_list(
        "budgets", sequential(256) if many else sequential(max(profiles.height, 2))
    )
    colours = [cmap(norm(c)) for c in budgets] if many else sequential(profiles.height)
    for colour, row in zip(colours, profiles.iter_rows(named=True), strict=True):
        m = groups == row["group"]
        label = None if many else f"C = {row['flops']:.2g} FLOPs"
        ax.scatter(n[m], loss[m], s=22 if not many else 12, color=colour, zorder=3, label=label)
        x = np.linspace(np.log(n[m].min() / 1.2), np.log(n[m].max() * 1.2), 100)
        ax.plot(np.exp(x), row["c2"] * x**2 + row["c1"] * x + row["c0"], color=colour, lw=1.3)
        bars(ax, row["loss_min"], row["params_low"], row["params_high"], colour, vertical=False)
        ax.plot(
            row["params_opt"],
            row["loss_min"],
            "*",
            ms=11,
            color=colour,
            mec="black",
            mew=0.6,
            zorder=4,
        )
    ax.plot([], [], "*", ms=11, color="grey", mec="black", label=f"optimum ({level:.0%} interval)")
    ax.set(
        xscale="log",
        xlabel="parameters N (count)",
        ylabel="loss (nats)",
        title="IsoFLOP profiles: parabola in ln N per budget",
    )
    ax.grid(True, which="both", alpha=0.25)
    # limits from the data: an interval that runs off (an ill-determined optimum) is cut
    # at the edge instead of stretching the axes
    ax.set_xlim(n.min() / 1.5, n.max() * 1.5)
    if many:
        fig.colorbar(
            plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="compute budget C (FLOPs)"
        )
    ax.legend(fontsize=7.5, loc="upper right")


def _allocation_panel(
    ax: plt.Axes,
    law: Law,
    flops: np.ndarray,
    params_opt: np.ndarray,
    optimum_interval: tuple[np.ndarray, np.ndarray] | None,
    *,
    sample_laws: Sequence[Law],
    level: float,
    what: str,
) -> None:
    """``N_opt(C)`` and ``D_opt(C)`` of an allocation fit: its measured optima (with their
    interval), the fitted law and its bootstrap band."""
    grid = np.geomspace(flops.min() / 3, flops.max() * 3, 80)
    opt = law.allocation(grid)
    n_colour, d_colour = LAW_COLOURS[0], LAW_COLOURS[1]
    ax.plot(grid, opt.params, color=n_colour, lw=1.6, label=r"$N_{opt}(C)$ fitted")
    ax.plot(grid, opt.tokens, color=d_colour, lw=1.6, label=r"$D_{opt}(C)$ fitted")
    if sample_laws:
        band = allocation_band(sample_laws, grid, level)
        for side, colour in (("params", n_colour), ("tokens", d_colour)):
            ax.fill_between(
                grid, band[f"{side}_low"], band[f"{side}_high"], color=colour, alpha=0.2, lw=0
            )
    d_opt = flops / (6 * params_opt)
    if optimum_interval is not None:
        lo, hi = optimum_interval
        bars(ax, flops, lo, hi, n_colour)
        bars(ax, flops, flops / (6 * hi), flops / (6 * lo), d_colour)
    ms = 6 if optimum_interval is not None else 3
    tail = f" ({level:.0%} interval)" if optimum_interval is not None else ""
    ax.plot(flops, params_opt, "o", ms=ms, color=n_colour, label=rf"$N_{{opt}}$ {what}{tail}")
    ax.plot(flops, d_opt, "s", ms=ms, color=d_colour, label=r"$D_{opt} = C / (6 N_{opt})$")
    est = law.parameters()
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="training compute C (FLOPs)",
        ylabel="parameters or tokens (count)",
        title=rf"$N_{{opt}} \propto C^{{{est.get('params_exp', float('nan')):.3f}}}$, "
        rf"$D_{{opt}} \propto C^{{{est.get('tokens_exp', float('nan')):.3f}}}$"
        + (f" (bands: {level:.0%} bootstrap)" if sample_laws else ""),
    )
    ax.grid(True, which="both", alpha=0.25)
    shown = np.concatenate([params_opt, d_opt])
    shown = shown[np.isfinite(shown) & (shown > 0)]
    if shown.size:
        ax.set_ylim(shown.min() / 4, shown.max() * 4)
    ax.legend(fontsize=7.5, loc="upper left")


@dataclass(frozen=True)
class _RunCurve:
    """One run's loss curve: its size and its points in order of compute."""

    params: float
    log_flops: np.ndarray
    loss: np.ndarray


def _run_curves(curves: pl.DataFrame) -> list[_RunCurve]:
    c = flops_of(curves)
    n = curves["params"].to_numpy().astype(float)
    loss = curves["loss"].to_numpy().astype(float)
    runs = curves["run_id"].to_numpy()
    out = []
    for r in np.unique(runs):
        m = runs == r
        order = np.argsort(c[m])
        out.append(_RunCurve(n[m][0], np.log(c[m][order]), loss[m][order]))
    return out


@dataclass(frozen=True)
class _Envelope:
    """The lowest loss any run reaches at each compute of a grid, and which run it is."""

    log_flops: np.ndarray
    """The grid: ``ln C``, evenly spaced over the compute the runs span."""
    loss: np.ndarray
    """Each run's loss at each grid compute (interpolated); ``inf`` where it has none."""
    sizes: np.ndarray
    """Each run's parameters."""

    @classmethod
    def of(cls, runs: Sequence[_RunCurve], n_grid: int) -> _Envelope:
        lo = min(run.log_flops[0] for run in runs)
        hi = max(run.log_flops[-1] for run in runs)
        log_g = np.linspace(lo, hi, n_grid)
        at = np.full((len(runs), n_grid), np.inf)
        for i, run in enumerate(runs):
            inside = (log_g >= run.log_flops[0]) & (log_g <= run.log_flops[-1])
            at[i, inside] = np.interp(log_g[inside], run.log_flops, run.loss)
        return cls(log_g, at, np.array([run.params for run in runs]))

    @property
    def covered(self) -> np.ndarray:
        """Grid points some run reaches."""
        return np.isfinite(self.loss).any(axis=0)

    @property
    def best(self) -> np.ndarray:
        """Index of the run with the lowest loss at each grid point."""
        return np.argmin(self.loss, axis=0)

    def kept(self) -> np.ndarray:
        """Grid points whose best run has runs both smaller and larger reaching there too,
        as the fit keeps them (elsewhere the minimum is censored by the sizes tried)."""
        reach = np.isfinite(self.loss)
        best_n = self.sizes[self.best]
        smaller = (reach & (self.sizes[:, None] < best_n[None, :])).any(axis=0)
        larger = (reach & (self.sizes[:, None] > best_n[None, :])).any(axis=0)
        return self.covered & smaller & larger


def plot_envelope_fit(
    curves: pl.DataFrame,
    law: Law,
    path: Path,
    *,
    title: str,
    sample_laws: Sequence[Law] = (),
    level: float = 0.95,
    caveat: str | None = None,
    n_grid: int = 60,
) -> None:
    """An envelope fit (approach 1): left, every run's loss curve against compute, coloured
    by model size, and the envelope (the lowest loss reached at each compute); right, the
    size of the run on the envelope at each compute (``N_opt``, a staircase over the sizes
    tried) and ``D_opt = C / (6 N_opt)``, with the fitted allocation law and its bootstrap
    band. ``curves`` has ``run_id``, ``params``, ``loss`` and ``flops`` or ``tokens``."""
    runs = _run_curves(curves)
    env = _Envelope.of(runs, n_grid)
    fig, (ax, right) = plt.subplots(1, 2, figsize=(13, 5.8))
    _curves_panel(fig, ax, runs, env)
    kept = env.kept()
    best_n = env.sizes[env.best]
    _allocation_panel(
        right,
        law,
        np.exp(env.log_flops[kept]),
        best_n[kept],
        None,
        sample_laws=sample_laws,
        level=level,
        what="on the envelope (fitted)",
    )
    dropped = env.covered & ~kept
    if dropped.any():
        right.scatter(
            np.exp(env.log_flops[dropped]),
            best_n[dropped],
            s=12,
            facecolors="none",
            edgecolors="grey",
            label=r"$N_{opt}$ censored by the sizes tried (not fitted)",
        )
        right.legend(fontsize=7.5, loc="upper left")
    finish_fit_figure(fig, title, caveat, path)


def _curves_panel(fig: plt.Figure, ax: plt.Axes, runs: Sequence[_RunCurve], env: _Envelope) -> None:
    """Every run's loss curve, coloured by its size (with a colour bar), and the envelope."""
    sizes = np.unique(env.sizes)
    norm = matplotlib.colors.LogNorm(sizes.min(), sizes.max() * (1.0001 if sizes.size == 1 else 1))
    for run in runs:
        colour = plt.cm.viridis(norm(run.params))
        ax.plot(np.exp(run.log_flops), run.loss, color=colour, lw=1.0, alpha=0.9)
    covered = env.covered
    ax.plot(
        np.exp(env.log_flops[covered]),
        env.loss[env.best[covered], np.flatnonzero(covered)],
        color="k",
        lw=2.0,
        ls="--",
        label="envelope: lowest loss at each compute",
    )
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap="viridis"), ax=ax, label="parameters N")
    ax.set(
        xscale="log",
        xlabel="training compute C (FLOPs)",
        ylabel="loss (nats)",
        title="Training curves and their envelope",
    )
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7.5, loc="upper right")
