"""A study's reproduction: observed against predicted loss."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import matplotlib.pyplot as plt
import polars as pl

from ._style import law_styles, save


def plot_observed_vs_predicted(points: pl.DataFrame, title: str, path: Path) -> None:
    """A study's reproduction: observed against predicted loss (equal linear axes: losses
    span less than a decade), one colour per
    dataset: the runs the law was fitted to (``fitted``, dots), the held-out runs the claims
    predict (``held_out``, large open diamonds), the others (small open circles), and y = x."""
    fig, ax = plt.subplots(figsize=(7, 6.5))
    datasets = points["dataset"].fill_null("runs").unique(maintain_order=True).to_list()
    styles = law_styles(datasets)
    for name in datasets:
        colour = styles[name]["color"]
        sub = points.filter(pl.col("dataset").fill_null("runs") == name)
        fitted = pl.col("fitted") if "fitted" in sub.columns else ~pl.col("held_out")
        fit = sub.filter(fitted)
        out = sub.filter(pl.col("held_out"))
        rest = sub.filter(~fitted & ~pl.col("held_out"))
        ax.scatter(fit["observed"], fit["predicted"], s=22, color=colour, label=f"{name}: fitted")
        if rest.height:
            ax.scatter(
                rest["observed"],
                rest["predicted"],
                s=14,
                facecolors="none",
                edgecolors=colour,
                alpha=0.5,
                linewidths=0.8,
                label=f"{name}: other runs",
            )
        ax.scatter(
            out["observed"],
            out["predicted"],
            s=90,
            facecolors="none",
            edgecolors=colour,
            linewidths=1.6,
            marker="D",
            label=f"{name}: held out",
        )
    observed, predicted = points["observed"], points["predicted"]
    lo = float(min(cast(float, observed.min()), cast(float, predicted.min())))
    hi = float(max(cast(float, observed.max()), cast(float, predicted.max())))
    ax.plot([lo, hi], [lo, hi], color="k", lw=0.8, ls="--", label="predicted = observed")
    pad = 0.03 * (hi - lo)
    ax.set(
        xlim=(lo - pad, hi + pad),
        ylim=(lo - pad, hi + pad),
        aspect="equal",
        xlabel="observed loss (nats)",
        ylabel="predicted loss (nats)",
        title=title,
    )
    ax.grid(True, alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    save(fig, path)
