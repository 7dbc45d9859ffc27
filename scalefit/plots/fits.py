"""A parametric loss law against the data it was fitted to, and the bootstrap distributions
of a fit's exponents; how a fit's points fall into budgets (shared with :mod:`.allocation`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.lines
import matplotlib.pyplot as plt
import numpy as np
import polars as pl

from .._budgets import budget_groups
from ..laws import LossLaw, training_flops
from ._style import (
    CAVEAT_MARK,
    LAW_COLOURS,
    bars,
    caveat_footnote,
    fmt_count,
    interval,
    save,
    sequential,
    wrap,
)

MAX_SLICES = 8
"""Most token budgets (or iso-FLOP slices) a parametric fit plot draws a curve for."""


def flops_of(points: pl.DataFrame) -> np.ndarray:
    """Each point's training compute: its ``flops`` where known, else ``6 N D``."""
    n = points["params"].to_numpy().astype(float)
    d = points["tokens"].to_numpy().astype(float)
    if "flops" in points.columns:
        c = points["flops"].cast(pl.Float64).fill_null(np.nan).to_numpy()
        return np.where(np.isfinite(c), c, training_flops(n, d))
    return training_flops(n, d)


def fit_slices(points: pl.DataFrame) -> tuple[str, np.ndarray]:
    """How a parametric fit's data are drawn: ``("tokens", groups)`` when the points share at
    most :data:`MAX_SLICES` token budgets (within 5%), else ``("flops", groups)`` when they
    share that few compute budgets (IsoFLOP designs), else ``("bins", groups)``: token
    quantile bins, each drawn at its own points' tokens."""
    d = points["tokens"].to_numpy().astype(float)
    by_tokens = budget_groups(d)
    n_tokens = by_tokens.max() + 1
    by_flops = budget_groups(flops_of(points))
    n_flops = by_flops.max() + 1
    if n_tokens <= MAX_SLICES and n_tokens <= n_flops:
        return "tokens", by_tokens
    if n_flops <= MAX_SLICES:
        return "flops", by_flops
    edges = np.quantile(np.log(d), np.linspace(0, 1, 6)[1:-1])
    return "bins", np.searchsorted(edges, np.log(d), side="right")


_SLICE_NAMES = {"flops": "iso-FLOP slice", "tokens": "token budget", "bins": "tokens D"}


def plot_parametric_fit(
    points: pl.DataFrame,
    law: LossLaw,
    path: Path,
    *,
    title: str,
    sample_laws: Sequence[LossLaw] = (),
    level: float = 0.95,
    caveat: str | None = None,
) -> None:
    """A parametric loss law against the data it was fitted to.

    Top: loss against parameters, the points grouped by their own token budgets (or
    iso-FLOP slices, see :func:`fit_slices`), and the law at each group's budget with the
    ``level`` bootstrap band of ``sample_laws``. Bottom: the residuals ``observed / predicted
    - 1`` in percent. ``points`` has ``params``, ``tokens``, ``loss`` (and ``flops``).
    """
    n = points["params"].to_numpy().astype(float)
    d = points["tokens"].to_numpy().astype(float)
    loss = points["loss"].to_numpy().astype(float)
    c = flops_of(points)
    kind, groups = fit_slices(points)
    uniq = np.unique(groups)
    fig, (ax, res) = plt.subplots(
        2, 1, figsize=(9, 7.5), sharex=True, gridspec_kw={"height_ratios": [3, 1.2]}
    )
    predicted = np.asarray(law.loss(n, d), dtype=float)
    for colour, g in zip(sequential(uniq.size), uniq, strict=True):
        m = groups == g
        label, tokens_at = _slice(kind, d[m], c[m])
        ax.scatter(n[m], loss[m], s=22, color=colour, zorder=3, label=label)
        if kind == "bins":
            # scattered (N, D): no curve matches the points, so the law is drawn at each
            # point's own (N, D), joined to the observation, with its interval
            ax.vlines(n[m], loss[m], predicted[m], color=colour, lw=0.7, zorder=2)
            if sample_laws:
                at = np.array([law_s.loss(n[m], d[m]) for law_s in sample_laws], dtype=float)
                bars(ax, n[m], *interval(at, level), colour)
            ax.scatter(n[m], predicted[m], s=26, facecolors="white", edgecolors=colour, zorder=2.5)
        else:
            _law_curve(ax, law, n[m], tokens_at, colour, sample_laws, level)
        res.scatter(n[m], 100 * (loss[m] / predicted[m] - 1), s=16, color=colour, zorder=3)
    _residual_axes(res, 100 * (loss / predicted - 1))
    _parametric_axes(ax, title, kind, caveat, len(sample_laws), level)
    fig.tight_layout()
    if caveat:
        caveat_footnote(fig, {"caveat of this law": caveat}, width=120)
    save(fig, path)


def _slice(
    kind: str, d: np.ndarray, c: np.ndarray
) -> tuple[str, Callable[[np.ndarray], np.ndarray]]:
    """A slice's legend label and its tokens as a function of parameters: ``C / (6 N)`` on
    an iso-FLOP slice (``kind`` ``"flops"``), else its budget of tokens; ``d`` and ``c``
    are the slice's points' tokens and FLOPs."""
    if kind == "flops":
        budget = float(np.exp(np.mean(np.log(c))))

        def on_iso_flops(x: np.ndarray, budget: float = budget) -> np.ndarray:
            return budget / (6 * x)

        return f"C = {budget:.2g} FLOPs", on_iso_flops
    budget = float(np.exp(np.mean(np.log(d))))
    lo, hi = d.min(), d.max()
    label = (
        f"D = {fmt_count(budget)} tokens"
        if kind == "tokens"
        else f"D {fmt_count(lo)}–{fmt_count(hi)}"
    )

    def at_budget(x: np.ndarray, budget: float = budget) -> np.ndarray:
        return np.full_like(x, budget)

    return label, at_budget


def _law_curve(
    ax: plt.Axes,
    law: LossLaw,
    n: np.ndarray,
    tokens_at: Callable[[np.ndarray], np.ndarray],
    colour: Any,
    sample_laws: Sequence[LossLaw],
    level: float,
) -> None:
    """The law along a slice (over its points' parameters ``n``, a little beyond) and the
    ``level`` band of ``sample_laws`` there."""
    grid = np.geomspace(n.min() / 1.25, n.max() * 1.25, 80)
    ax.plot(grid, law.loss(grid, tokens_at(grid)), color=colour, lw=1.4, zorder=2)
    if sample_laws:
        curves = np.array([law_s.loss(grid, tokens_at(grid)) for law_s in sample_laws], dtype=float)
        lo, hi = interval(curves, level)
        ax.fill_between(grid, lo, hi, color=colour, alpha=0.2, lw=0, zorder=1)


def _residual_axes(res: plt.Axes, residual_pct: np.ndarray) -> None:
    """The residual panel's zero line, symmetric limits and labels."""
    res.axhline(0, color="k", lw=0.8)
    lim = max(0.5, 1.15 * float(np.nanmax(np.abs(residual_pct))))
    res.set(ylim=(-lim, lim), xscale="log", xlabel="parameters N (count)")
    res.set_ylabel("residual (%)\nobserved / law − 1")
    res.grid(True, alpha=0.3)


def _parametric_axes(
    ax: plt.Axes, title: str, kind: str, caveat: str | None, n_samples: int, level: float
) -> None:
    """The loss panel's scales, title (what is drawn, and the bands) and legend."""
    ax.set(xscale="log", ylabel="loss (nats)")
    ax.grid(True, which="both", alpha=0.25)
    what = _SLICE_NAMES[kind]
    if kind == "bins":
        drawn = "open circles: the law at each point's own (N, D)"
    else:
        drawn = f"lines: the law at each {what}"
    shown = "bars" if kind == "bins" else "bands"
    band = f"; {shown}: {level:.0%} bootstrap ({n_samples} resamples)" if n_samples else ""
    mark = f" {CAVEAT_MARK}" if caveat else ""
    ax.set_title(f"{wrap(title)}{mark}\n{drawn}{band}", fontsize=10)
    ax.legend(fontsize=7.5, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, title=what)


_EXPONENT_ORDER = ("alpha", "beta", "a", "b", "params_exp", "tokens_exp")
_EXPONENT_LABELS = {
    "a": r"$a$ in $N_{opt} \propto C^a$",
    "b": r"$b$ in $D_{opt} \propto C^b$",
    "params_exp": r"$a$ in $N_{opt} \propto C^a$",
    "tokens_exp": r"$b$ in $D_{opt} \propto C^b$",
    "alpha": r"$\alpha$ in $A / N^\alpha$",
    "beta": r"$\beta$ in $B / D^\beta$",
}


def plot_bootstrap_exponents(
    samples: pl.DataFrame,
    path: Path,
    *,
    title: str,
    estimates: Mapping[str, float] | None = None,
    level: float = 0.95,
) -> None:
    """Histograms of the bootstrap distributions of a fit's exponents (``alpha``, ``beta``
    and the allocation exponents ``a``, ``b``, or ``params_exp``, ``tokens_exp``) with the
    point estimate (solid) and the percentile interval at ``level`` (dashed)."""
    present = set(samples["parameter"].unique().to_list())
    names = [c for c in _EXPONENT_ORDER if c in present]
    k = max(len(names), 1)
    fig, axes = plt.subplots(1, k, figsize=(3.6 * k, 3.6))
    axes = np.atleast_1d(axes)
    q = (1 - level) / 2
    for ax, name in zip(axes, names, strict=False):
        values = samples.filter(pl.col("parameter") == name)["value"].to_numpy()
        ax.hist(values, bins=max(10, min(40, values.size // 8)), color="#9DB9D5", ec="white")
        lo, hi = np.quantile(values, [q, 1 - q])
        ax.axvline(lo, color="k", ls="--", lw=0.9)
        ax.axvline(hi, color="k", ls="--", lw=0.9)
        head = _EXPONENT_LABELS[name]
        if estimates and name in estimates:
            ax.axvline(estimates[name], color=LAW_COLOURS[1], lw=1.8)
            head += f"\n{estimates[name]:.4g} [{lo:.4g}, {hi:.4g}]"
        ax.set_title(head, fontsize=10)
        ax.set(xlabel="value (dimensionless)", ylabel="resamples")
    handles = [
        matplotlib.lines.Line2D([], [], color=LAW_COLOURS[1], lw=1.8, label="point estimate"),
        matplotlib.lines.Line2D([], [], color="k", ls="--", lw=0.9, label=f"{level:.0%} interval"),
    ]
    n_samples = samples["sample"].n_unique()
    fig.suptitle(
        f"{wrap(title, 45 * k)}\nBootstrap distributions of the exponents ({n_samples} resamples)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, 0.0),
        ncol=2,
        fontsize=8,
        frameon=False,
    )
    save(fig, path)
