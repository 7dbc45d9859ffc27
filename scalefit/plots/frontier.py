"""Published models against every law's compute-optimal allocation (tokens vs parameters)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import polars as pl
from matplotlib.colors import ListedColormap

from ._style import caveat_footnote, law_label, law_styles, save
from .labels import place_labels

_FAMILY_MARKERS = "osD^v<>pP*XhH"

ISO_FLOPS = (1e19, 1e20, 1e21, 1e22, 1e23, 1e24, 1e25, 1e26)
"""Compute budgets drawn as iso-FLOP lines (``6 N D = C``) on the tokens-vs-params plot."""

_Limits = tuple[float, float, float, float]
"""``n_lo, n_hi, d_lo, d_hi``: the axes' parameter and token ranges."""


def tokens_vs_params_figure(
    models: pl.DataFrame,
    frontier: pl.DataFrame,
    *,
    bands: Mapping[str, pl.DataFrame] | None = None,
    caveats: Mapping[str, str] | None = None,
) -> plt.Figure:
    """The figure of :func:`plot_tokens_vs_params` (returned, not saved, so that tests can
    inspect its labels)."""
    caveats = {k: v for k, v in (caveats or {}).items() if v}
    fig = plt.figure(figsize=(13, 9.5))
    ax = fig.add_axes((0.06, 0.25, 0.66, 0.68))
    limits = _limits(models)
    _iso_flop_lines(ax, limits)
    law_handles = _law_lines(ax, frontier, bands or {}, caveats)
    fam_handles, xs, ys, names = _model_points(ax, models)
    n_lo, n_hi, d_lo, d_hi = limits
    ax.set(
        xscale="log",
        yscale="log",
        xlim=(n_lo, n_hi),
        ylim=(d_lo, d_hi),
        xlabel="parameters N (total, count)",
        ylabel="training tokens D (count)",
        title="Published models against each law's compute-optimal allocation "
        "(grey: iso-FLOP lines, C = 6ND)",
    )
    ax.grid(True, which="major", alpha=0.25)
    _legends(fig, ax, law_handles, fam_handles)
    if names:
        place_labels(ax, xs, ys, names, fontsize=6.5)
    caveat_footnote(fig, caveats, width=170)
    return fig


def plot_tokens_vs_params(
    models: pl.DataFrame,
    frontier: pl.DataFrame,
    path: Path,
    *,
    bands: Mapping[str, pl.DataFrame] | None = None,
    caveats: Mapping[str, str] | None = None,
) -> None:
    """Training tokens against parameters (log-log): every published model labelled (labels
    placed so that none overlap), iso-FLOP lines, each law's compute-optimal line in its own
    colour, and for fitted laws the 95% bootstrap band of that line.

    Parameters
    ----------
    models
        ``family``, ``model``, ``params``, ``tokens`` of the published models.
    frontier
        :func:`scalefit.compare.frontier`: each law's ``optimal_params``/``optimal_tokens``.
    bands
        Law id -> ``params_low, params_high, tokens_low, tokens_high`` over the frontier's
        compute grid (:func:`scalefit.plots.allocation_band`).
    caveats
        Law id -> its ``laws.caveat``: the law is marked ``†`` and the caveat footnoted.
    """
    save(tokens_vs_params_figure(models, frontier, bands=bands, caveats=caveats), path)


def _limits(models: pl.DataFrame) -> _Limits:
    """Axes that hold every model and at least 5e7-3e12 parameters, 1e10-1e14 tokens."""
    known = models.filter(pl.col("params").is_not_null() & pl.col("tokens").is_not_null())
    params, tokens = known["params"], known["tokens"]
    n_lo = min(5e7, float(cast(float | None, params.min()) or 5e7) / 2)
    n_hi = max(3e12, float(cast(float | None, params.max()) or 3e12) * 3)
    d_lo = min(1e10, float(cast(float | None, tokens.min()) or 1e10) / 3)
    d_hi = max(1e14, float(cast(float | None, tokens.max()) or 1e14) * 3)
    return n_lo, n_hi, d_lo, d_hi


def _iso_flop_lines(ax: plt.Axes, limits: _Limits) -> None:
    """The :data:`ISO_FLOPS` lines, each labelled just inside the plot where it leaves it
    (top or right edge)."""
    n_lo, n_hi, d_lo, d_hi = limits
    grid = np.geomspace(n_lo, n_hi, 100)
    for c in ISO_FLOPS:
        ax.plot(grid, c / (6 * grid), color="#BBBBBB", lw=0.7, zorder=1)
        n_top = c / (6 * d_hi)
        if n_lo <= n_top <= n_hi / 3:
            pos, ha, va = (n_top * 1.1, d_hi / 1.15), "left", "top"
        elif d_lo <= c / (6 * n_lo) <= d_hi:
            pos, ha, va = (n_lo * 1.1, c / (6 * n_lo) / 1.15), "left", "top"
        elif d_lo <= c / (6 * n_hi) <= d_hi:
            pos, ha, va = (n_hi / 1.1, c / (6 * n_hi) * 1.15), "right", "bottom"
        else:
            continue
        exp = round(math.log10(c))
        ax.text(*pos, f"$10^{{{exp}}}$ FLOPs", fontsize=7, color="#888888", ha=ha, va=va)


def _law_lines(
    ax: plt.Axes,
    frontier: pl.DataFrame,
    bands: Mapping[str, pl.DataFrame],
    caveats: Mapping[str, str],
) -> list[Any]:
    """Each law's compute-optimal line in its own style, with its bootstrap band if it has
    one; returns the lines (for the legend)."""
    styles = law_styles(frontier["law_id"].unique(maintain_order=True).to_list())
    handles = []
    for key, rows in frontier.group_by("law_id", maintain_order=True):
        law_id = str(key[0])
        st = styles[law_id]
        (line,) = ax.plot(
            rows["optimal_params"],
            rows["optimal_tokens"],
            lw=2.0,
            color=st["color"],
            ls=st["ls"],
            zorder=2,
            label=law_label(law_id, caveats),
        )
        handles.append(line)
        band = bands.get(law_id)
        if band is not None and band.height:
            xs = np.concatenate([band["params_low"], band["params_high"][::-1]])
            ys = np.concatenate([band["tokens_high"], band["tokens_low"][::-1]])
            ax.fill(xs, ys, color=st["color"], alpha=0.15, lw=0, zorder=1.5)
            for n_edge, d_edge in (("params_low", "tokens_high"), ("params_high", "tokens_low")):
                ax.plot(band[n_edge], band[d_edge], color=st["color"], lw=0.6, ls=":", zorder=1.6)
            line.set_label(f"{law_label(law_id, caveats)} (band: 95% bootstrap)")
    return handles


def _model_points(
    ax: plt.Axes, models: pl.DataFrame
) -> tuple[list[Any], list[float], list[float], list[str]]:
    """The published models, one marker and pastel colour per family; returns the families'
    handles and every drawn model's ``params``, ``tokens`` and label."""
    handles = []
    pastel = _colours("tab20")[1::2] + _colours("tab20b")[2::4]
    xs, ys, names = [], [], []
    for j, (family, rows) in enumerate(models.group_by("family", maintain_order=True)):
        rows = rows.filter(pl.col("params").is_not_null() & pl.col("tokens").is_not_null())
        if rows.height == 0:
            continue
        handles.append(
            ax.scatter(
                rows["params"],
                rows["tokens"],
                marker=_FAMILY_MARKERS[j % len(_FAMILY_MARKERS)],
                s=42,
                color=pastel[j % len(pastel)],
                edgecolors="black",
                linewidths=0.6,
                label=str(family[0]),
                zorder=3,
            )
        )
        xs += rows["params"].to_list()
        ys += rows["tokens"].to_list()
        # a model's name alone ("417M") does not say whose it is
        head = str(family[0]).split()[0].lower()
        names += [m if head in m.lower() else f"{family[0]} {m}" for m in rows["model"]]
    return handles, xs, ys, names


def _colours(name: str) -> tuple[Any, ...]:
    """The colours of matplotlib's qualitative colour map ``name``."""
    colours: Any = cast(ListedColormap, matplotlib.colormaps[name]).colors
    return tuple(colours)


def _legends(fig: plt.Figure, ax: plt.Axes, law_handles: list[Any], fam_handles: list[Any]) -> None:
    """The laws' legend right of the axes, the families' legend below them: never over data."""
    right, top = ax.get_position().x1, ax.get_position().y1
    style = {"fontsize": 8, "title_fontsize": 8.5, "frameon": False}
    fig.legend(
        handles=law_handles,
        title="compute-optimal N, D (law)",
        loc="upper left",
        bbox_to_anchor=(right + 0.01, top),
        **style,
    )
    ax.legend(
        handles=fam_handles,
        title="model family",
        loc="upper center",
        bbox_to_anchor=(0.5, -0.08),
        ncol=6,
        **style,
    )
