"""PNG plots of the store's contents (matplotlib, no display needed).

Each function takes plain frames and a path, and writes one readable figure: a title, axis
labels with units, a legend.
"""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt
import numpy as np
import polars as pl

log = logging.getLogger(__name__)

_FAMILY_MARKERS = "osD^v<>pP*XhH"


def _save(fig: plt.Figure, path: Path) -> None:
    from .report import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def plot_tokens_vs_params(models: pl.DataFrame, frontier: pl.DataFrame, path: Path) -> None:
    """Training tokens against parameters (log-log): every published model labelled, each
    law's compute-optimal line, and iso-lines of 20, 100 and 1000 tokens per parameter."""
    fig, ax = plt.subplots(figsize=(11, 8))
    n_lo, n_hi = 1e7, 3e12
    grid = np.logspace(np.log10(n_lo), np.log10(n_hi), 50)
    for ratio, style in ((20, ":"), (100, "--"), (1000, "-.")):
        ax.plot(grid, ratio * grid, color="grey", lw=0.8, ls=style, label=f"{ratio} tokens/param")
    for i, (law_id, rows) in enumerate(frontier.group_by("law_id", maintain_order=True)):
        ax.plot(
            rows["optimal_params"],
            rows["optimal_tokens"],
            lw=2.2,
            color=("black", "firebrick", "royalblue", "darkorange", "seagreen")[i % 5],
            alpha=0.8,
            label=f"compute-optimal: {law_id[0]}",
        )
    for j, (family, rows) in enumerate(models.group_by("family", maintain_order=True)):
        ax.scatter(
            rows["params"],
            rows["tokens"],
            marker=_FAMILY_MARKERS[j % len(_FAMILY_MARKERS)],
            s=40,
            color=plt.cm.tab20(j % 20),
            edgecolors="black",
            linewidths=0.5,
            label=family[0],
            zorder=3,
        )
        for name, n, d in rows.select("model", "params", "tokens").iter_rows():
            ax.annotate(name, (n, d), fontsize=6.5, xytext=(3, 2), textcoords="offset points")
    ax.set(
        xscale="log",
        yscale="log",
        xlim=(n_lo, n_hi),
        ylim=(1e9, 1e14),
        xlabel="parameters N (total)",
        ylabel="training tokens D",
        title="Published models against compute-optimal training",
    )
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    _save(fig, path)


def plot_law_fit(points: pl.DataFrame, law: object, law_id: str, path: Path) -> None:
    """A fitted loss law against its data: loss against parameters, coloured by tokens, with
    the law's curve at a few token counts."""
    fig, ax = plt.subplots(figsize=(9, 6))
    d = points["tokens"].to_numpy()
    sc = ax.scatter(
        points["params"], points["loss"], c=np.log10(d), cmap="viridis", s=18, label="data"
    )
    fig.colorbar(sc, ax=ax, label="log10 training tokens D")
    n = np.logspace(np.log10(points["params"].min()), np.log10(points["params"].max()), 100)
    norm = plt.Normalize(np.log10(d.min()), np.log10(d.max()))
    for tokens in np.quantile(d, [0.1, 0.5, 0.9]):
        ax.plot(n, law.loss(n, tokens), color=plt.cm.viridis(norm(np.log10(tokens))), lw=1.5)
    ax.set(
        xscale="log",
        xlabel="parameters N",
        ylabel="loss (nats)",
        title=f"{law_id}: fitted law (lines at the 10/50/90% token counts) and its data",
    )
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_bootstrap_exponents(samples: pl.DataFrame, path: Path) -> None:
    """Histograms of the bootstrap distributions of a fit's exponents (alpha, beta and the
    allocation exponents a, b where present)."""
    names = [c for c in ("alpha", "beta", "a", "b") if c in samples["parameter"].unique()]
    fig, axes = plt.subplots(1, max(len(names), 1), figsize=(4 * max(len(names), 1), 3.5))
    axes = np.atleast_1d(axes)
    for ax, name in zip(axes, names, strict=False):
        values = samples.filter(pl.col("parameter") == name)["value"].to_numpy()
        ax.hist(values, bins=max(10, min(40, values.size // 10)), color="C0", alpha=0.8)
        lo, hi = np.percentile(values, [2.5, 97.5])
        ax.axvline(lo, color="k", ls="--", lw=0.8)
        ax.axvline(hi, color="k", ls="--", lw=0.8, label="95% interval")
        ax.set(title=name, xlabel="value", ylabel="resamples")
        ax.legend(fontsize=7)
    fig.suptitle(f"Bootstrap distributions of exponents ({samples['fit_id'][0]})")
    _save(fig, path)


def plot_observed_vs_predicted(points: pl.DataFrame, title: str, path: Path) -> None:
    """A study's reproduction: observed against predicted loss (log-log), one colour per
    dataset: the runs the law was fitted to (``fitted``, dots), the held-out runs the claims
    predict (``held_out``, large open diamonds), the others (small open circles), and y = x."""
    fig, ax = plt.subplots(figsize=(7, 6.5))
    datasets = points["dataset"].fill_null("runs").unique(maintain_order=True).to_list()
    for i, name in enumerate(datasets):
        sub = points.filter(pl.col("dataset").fill_null("runs") == name)
        fitted = pl.col("fitted") if "fitted" in sub.columns else ~pl.col("held_out")
        fit = sub.filter(fitted)
        out = sub.filter(pl.col("held_out"))
        rest = sub.filter(~fitted & ~pl.col("held_out"))
        ax.scatter(fit["observed"], fit["predicted"], s=22, color=f"C{i}", label=f"{name}: fitted")
        if rest.height:
            ax.scatter(
                rest["observed"],
                rest["predicted"],
                s=14,
                facecolors="none",
                edgecolors=f"C{i}",
                alpha=0.5,
                linewidths=0.8,
                label=f"{name}: other runs",
            )
        ax.scatter(
            out["observed"],
            out["predicted"],
            s=90,
            facecolors="none",
            edgecolors=f"C{i}",
            linewidths=1.6,
            marker="D",
            label=f"{name}: held out",
        )
    lo = float(min(points["observed"].min(), points["predicted"].min()))
    hi = float(max(points["observed"].max(), points["predicted"].max()))
    ax.plot([lo, hi], [lo, hi], color="k", lw=0.8, ls="--", label="predicted = observed")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="observed loss (nats)",
        ylabel="predicted loss (nats)",
        title=title,
    )
    ax.grid(True, alpha=0.3, which="both")
    ax.legend(fontsize=7)
    _save(fig, path)
