"""PNG plots of the store's contents (matplotlib, no display needed).

Each function takes plain frames and a path, and writes one figure a reader of a paper can
use: a title naming the law, its procedure and its data (never a hash), axes with units,
legends outside the data, one colour per law from a qualitative palette, and the law's
caveat (``laws.caveat``) as a footnote marked ``†`` wherever the law is drawn.

Plots of a fit follow its procedure:

- parametric loss laws (:func:`plot_parametric_fit`): the data grouped by their own token
  budgets (or iso-FLOP slices), the law at each group's budget with its bootstrap band, and a
  residual panel;
- IsoFLOP fits (:func:`plot_isoflop_fit`): each budget's parabola with its optimum and the
  optimum's bootstrap interval, and ``N_opt(C)``, ``D_opt(C)`` with their bands;
- envelope fits (:func:`plot_envelope_fit`): the training curves and their envelope, and
  ``N_opt(C)``, ``D_opt(C)`` with their bands;
- bootstrap distributions (:func:`plot_bootstrap_exponents`) with the point estimate;
- study reproductions (:func:`plot_observed_vs_predicted`): observed against predicted.
"""

from __future__ import annotations

import logging
import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.colors
import matplotlib.lines
import matplotlib.pyplot as plt
import numpy as np
import polars as pl
from matplotlib.text import Text
from matplotlib.transforms import Bbox

log = logging.getLogger(__name__)

_FAMILY_MARKERS = "osD^v<>pP*XhH"
LAW_COLOURS = (
    "#0072B2",
    "#D55E00",
    "#009E73",
    "#CC79A7",
    "#332288",
    "#56B4E9",
    "#E69F00",
    "#882255",
    "#999933",
    "#44AA99",
    "#AA4499",
    "#661100",
)
"""Qualitative palette for laws (Okabe-Ito's colour-blind-safe colours without black and
yellow, then Tol's muted ones): one colour per law; past twelve laws the line style changes
too."""
_LAW_STYLES = ("-", "--", "-.", ":")
CAVEAT_MARK = "†"


def _finish_fit_figure(fig: plt.Figure, title: str, caveat: str | None, path: Path) -> None:
    """Title a fit's two-panel figure (marking a law with a caveat), lay it out, add the
    caveat as a footnote and save it."""
    fig.suptitle(_wrap(title, 130) + (f" {CAVEAT_MARK}" if caveat else ""), fontsize=11)
    fig.tight_layout()
    if caveat:
        _caveat_footnote(fig, {"caveat of this law": caveat})
    _save(fig, path)


def _save(fig: plt.Figure, path: Path) -> None:
    from ..report import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def law_styles(law_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """A distinct ``color`` (and past the palette, ``ls``) for each law, in order."""
    n = len(LAW_COLOURS)
    return {
        law_id: {"color": LAW_COLOURS[i % n], "ls": _LAW_STYLES[(i // n) % len(_LAW_STYLES)]}
        for i, law_id in enumerate(dict.fromkeys(law_ids))
    }


def _caveat_footnote(fig: plt.Figure, caveats: Mapping[str, str], width: int = 150) -> None:
    """Each law's caveat under everything else in the figure, marked like the law's label."""
    if not caveats:
        return
    lines = []
    for law_id, text in caveats.items():
        lines += textwrap.wrap(f"{CAVEAT_MARK} {law_id}: {text}", width=width)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    bottom = min(a.get_tightbbox(renderer).y0 for a in fig.axes) / fig.bbox.height
    fig.text(
        0.01,
        bottom - 0.01,
        "\n".join(lines),
        ha="left",
        va="top",
        fontsize=7.5,
        color="#444444",
        transform=fig.transFigure,
    )


def _wrap(text: str, width: int = 95) -> str:
    return "\n".join(textwrap.wrap(text, width=width))


def _law_label(law_id: str, caveats: Mapping[str, str] | None) -> str:
    return f"{law_id} {CAVEAT_MARK}" if caveats and law_id in caveats else law_id


def _fmt_count(x: float) -> str:
    """``1.3e+09`` as ``1.3B`` (K, M, B, T)."""
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(x) >= div:
            return f"{x / div:.3g}{unit}"
    return f"{x:.3g}"


# --------------------------------------------------------------------------- label placement


_ANGLES = (45, 135, 315, 225, 0, 180, 90, 270, 20, 160, 340, 200, 70, 110, 290, 250)
_RADII = (3, 9, 16, 25, 36, 50, 66)


def place_labels(
    ax: plt.Axes,
    x: Sequence[float],
    y: Sequence[float],
    labels: Sequence[str],
    *,
    fontsize: float = 7.0,
    marker_px: float = 7.0,
) -> list[Text]:
    """Write ``labels`` beside the points ``(x, y)`` so that no two labels overlap, no label
    covers a point, and every label stays inside the axes.

    A greedy search, densest labels first: for each point, candidate positions on rings of
    growing radius around it (eight directions, then eight more), the first whose text box
    is free is taken; past the first ring a thin leader line joins label and point. A label
    that fits nowhere is put at its least crowded candidate and logged. Call after the axes'
    limits and scales are final.
    """
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    pts = ax.transData.transform(np.column_stack([x, y]))
    half = marker_px / 2
    taken: list[Bbox] = [
        Bbox.from_extents(px - half, py - half, px + half, py + half) for px, py in pts
    ]
    frame = ax.get_window_extent(renderer)
    # Points in crowded places first: they have the fewest free positions.
    dist = np.linalg.norm(pts[:, None, :] - pts[None, :, :], axis=-1)
    crowd = (dist < 60).sum(axis=1)
    order = np.lexsort((pts[:, 0], -crowd))
    px_per_pt = fig.dpi / 72.0
    texts: list[Text | None] = [None] * len(labels)
    for i in order:
        best: tuple[float, Text] | None = None
        placed = None
        for r in _RADII:
            for angle in _ANGLES:
                dx = r * math.cos(math.radians(angle))
                dy = r * math.sin(math.radians(angle))
                ha = "left" if dx > 1e-9 else "right" if dx < -1e-9 else "center"
                va = "bottom" if dy > 1e-9 else "top" if dy < -1e-9 else "center"
                text = ax.annotate(
                    labels[i],
                    (x[i], y[i]),
                    xytext=(dx, dy),
                    textcoords="offset points",
                    ha=ha,
                    va=va,
                    fontsize=fontsize,
                    zorder=5,
                    bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.7},
                )
                box = text.get_window_extent(renderer).expanded(1.04, 1.08)
                inside = (
                    box.x0 >= frame.x0
                    and box.x1 <= frame.x1
                    and box.y0 >= frame.y0
                    and box.y1 <= frame.y1
                )
                overlap = sum(_area(box, other) for other in taken)
                if inside and overlap == 0:
                    placed = (text, box, r)
                    break
                score = overlap + (0 if inside else 1e9) + r * px_per_pt
                if best is None or score < best[0]:
                    if best is not None:
                        best[1].remove()
                    best = (score, text)
                else:
                    text.remove()
            if placed:
                break
        if placed:
            text, box, r = placed
            if best is not None and best[1] is not text:
                best[1].remove()
        else:
            assert best is not None
            text, r = best[1], _RADII[-1]
            box = text.get_window_extent(renderer)
            log.info("label %r overlaps others: no free place near its point", labels[i])
        if r > _RADII[0]:
            centre = ax.transData.inverted().transform(
                (box.x0 + box.width / 2, box.y0 + box.height / 2)
            )
            ax.annotate(
                "",
                (x[i], y[i]),
                xytext=tuple(centre),
                textcoords="data",
                arrowprops={"arrowstyle": "-", "lw": 0.4, "color": "#777777", "shrinkB": 2},
                zorder=4,
            )
        taken.append(box)
        texts[i] = text
    return [t for t in texts if t is not None]


def _area(a: Bbox, b: Bbox) -> float:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return w * h if w > 0 and h > 0 else 0.0


# --------------------------------------------------------------------------- tokens vs params


ISO_FLOPS = (1e19, 1e20, 1e21, 1e22, 1e23, 1e24, 1e25, 1e26)
"""Compute budgets drawn as iso-FLOP lines (``6 N D = C``) on the tokens-vs-params plot."""


def tokens_vs_params_figure(
    models: pl.DataFrame,
    frontier: pl.DataFrame,
    *,
    bands: Mapping[str, pl.DataFrame] | None = None,
    caveats: Mapping[str, str] | None = None,
) -> plt.Figure:
    """The figure of :func:`plot_tokens_vs_params` (returned, not saved, so that tests can
    inspect its labels)."""
    bands = bands or {}
    caveats = {k: v for k, v in (caveats or {}).items() if v}
    fig = plt.figure(figsize=(13, 9.5))
    ax = fig.add_axes((0.06, 0.25, 0.66, 0.68))
    known = models.filter(pl.col("params").is_not_null() & pl.col("tokens").is_not_null())
    n_lo = min(5e7, float(known["params"].min() or 5e7) / 2)
    n_hi = max(3e12, float(known["params"].max() or 3e12) * 3)
    d_lo = min(1e10, float(known["tokens"].min() or 1e10) / 3)
    d_hi = max(1e14, float(known["tokens"].max() or 1e14) * 3)
    grid = np.geomspace(n_lo, n_hi, 100)
    for c in ISO_FLOPS:
        ax.plot(grid, c / (6 * grid), color="#BBBBBB", lw=0.7, zorder=1)
        # the line's label just inside the plot where the line leaves it (top or right edge)
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
    styles = law_styles(frontier["law_id"].unique(maintain_order=True).to_list())
    law_handles = []
    for law_id, rows in frontier.group_by("law_id", maintain_order=True):
        law_id = str(law_id[0])
        st = styles[law_id]
        (line,) = ax.plot(
            rows["optimal_params"],
            rows["optimal_tokens"],
            lw=2.0,
            color=st["color"],
            ls=st["ls"],
            zorder=2,
            label=_law_label(law_id, caveats),
        )
        law_handles.append(line)
        band = bands.get(law_id)
        if band is not None and band.height:
            xs = np.concatenate([band["params_low"], band["params_high"][::-1]])
            ys = np.concatenate([band["tokens_high"], band["tokens_low"][::-1]])
            ax.fill(xs, ys, color=st["color"], alpha=0.15, lw=0, zorder=1.5)
            for n_edge, d_edge in (("params_low", "tokens_high"), ("params_high", "tokens_low")):
                ax.plot(band[n_edge], band[d_edge], color=st["color"], lw=0.6, ls=":", zorder=1.6)
            law_handles[-1].set_label(f"{_law_label(law_id, caveats)} (band: 95% bootstrap)")
    fam_handles = []
    pastel = plt.cm.tab20.colors[1::2] + plt.cm.tab20b.colors[2::4]
    xs, ys, names = [], [], []
    for j, (family, rows) in enumerate(models.group_by("family", maintain_order=True)):
        rows = rows.filter(pl.col("params").is_not_null() & pl.col("tokens").is_not_null())
        if rows.height == 0:
            continue
        fam_handles.append(
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
    right, top = ax.get_position().x1, ax.get_position().y1
    fig.legend(
        handles=law_handles,
        title="compute-optimal N, D (law)",
        fontsize=8,
        title_fontsize=8.5,
        loc="upper left",
        bbox_to_anchor=(right + 0.01, top),
        frameon=False,
    )
    ax.legend(
        handles=fam_handles,
        title="model family",
        fontsize=8,
        title_fontsize=8.5,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.08),
        ncol=6,
        frameon=False,
    )
    if names:
        place_labels(ax, xs, ys, names, fontsize=6.5)
    _caveat_footnote(fig, caveats, width=170)
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
        compute grid (:func:`allocation_band`).
    caveats
        Law id -> its ``laws.caveat``: the law is marked ``†`` and the caveat footnoted.
    """
    _save(tokens_vs_params_figure(models, frontier, bands=bands, caveats=caveats), path)


def allocation_band(sample_laws: Sequence[Any], flops: Any, level: float = 0.95) -> pl.DataFrame:
    """Percentile interval (``level``) over ``sample_laws`` (bootstrap laws) of the
    compute-optimal parameters and tokens at each of ``flops``."""
    flops = np.asarray(flops, dtype=float)
    n = np.array([np.asarray(law.allocation(flops).params, dtype=float) for law in sample_laws])
    d = np.array([np.asarray(law.allocation(flops).tokens, dtype=float) for law in sample_laws])
    q = (1 - level) / 2
    return pl.DataFrame(
        {
            "flops": flops,
            "params_low": np.nanquantile(n, q, axis=0),
            "params_high": np.nanquantile(n, 1 - q, axis=0),
            "tokens_low": np.nanquantile(d, q, axis=0),
            "tokens_high": np.nanquantile(d, 1 - q, axis=0),
        }
    )


# --------------------------------------------------------------------------- fit plots


def budget_groups(values: np.ndarray, rtol: float = 0.05) -> np.ndarray:
    """Group index of each value: values within ``rtol`` of their group's smallest share it."""
    order = np.argsort(values)
    out = np.empty(values.size, dtype=int)
    g, lead = -1, -np.inf
    for i in order:
        if values[i] > lead * (1 + rtol):
            g, lead = g + 1, values[i]
        out[i] = g
    return out


MAX_SLICES = 8
"""Most token budgets (or iso-FLOP slices) a parametric fit plot draws a curve for."""


def fit_slices(points: pl.DataFrame) -> tuple[str, np.ndarray]:
    """How a parametric fit's data are drawn: ``("tokens", groups)`` when the points share at
    most :data:`MAX_SLICES` token budgets (within 5%), else ``("flops", groups)`` when they
    share that few compute budgets (IsoFLOP designs), else ``("bins", groups)``: token
    quantile bins, each drawn at its own points' tokens."""
    d = points["tokens"].to_numpy().astype(float)
    by_tokens = budget_groups(d)
    n_tokens = by_tokens.max() + 1
    c = _flops(points)
    by_flops = budget_groups(c)
    n_flops = by_flops.max() + 1
    if n_tokens <= MAX_SLICES and n_tokens <= n_flops:
        return "tokens", by_tokens
    if n_flops <= MAX_SLICES:
        return "flops", by_flops
    edges = np.quantile(np.log(d), np.linspace(0, 1, 6)[1:-1])
    return "bins", np.searchsorted(edges, np.log(d), side="right")


def _flops(points: pl.DataFrame) -> np.ndarray:
    n = points["params"].to_numpy().astype(float)
    d = points["tokens"].to_numpy().astype(float)
    if "flops" in points.columns:
        c = points["flops"].cast(pl.Float64).fill_null(np.nan).to_numpy()
        return np.where(np.isfinite(c), c, 6 * n * d)
    return 6 * n * d


def _sequential(k: int) -> list[Any]:
    return [plt.cm.viridis(v) for v in np.linspace(0.0, 0.85, max(k, 1))]


def _bars(ax: plt.Axes, at: Any, lo: Any, hi: Any, colour: Any, *, vertical: bool = True) -> None:
    """Interval bars from ``lo`` to ``hi`` at positions ``at``, drawn as segments rather
    than as errors around an estimate: a percentile interval need not contain the point
    estimate, and such a case must show, not fail."""
    at, lo, hi = (np.atleast_1d(np.asarray(v, dtype=float)) for v in (at, lo, hi))
    ok = np.isfinite(lo) & np.isfinite(hi)
    draw = ax.vlines if vertical else ax.hlines
    draw(at[ok], lo[ok], hi[ok], color=colour, lw=0.9, zorder=2.4)
    cap = "_" if vertical else "|"
    for end in (lo, hi):
        xy = (at[ok], end[ok]) if vertical else (end[ok], at[ok])
        ax.plot(*xy, ls="none", marker=cap, ms=5, color=colour, zorder=2.4)


def plot_parametric_fit(
    points: pl.DataFrame,
    law: Any,
    path: Path,
    *,
    title: str,
    sample_laws: Sequence[Any] = (),
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
    c = _flops(points)
    kind, groups = fit_slices(points)
    uniq = np.unique(groups)
    colours = _sequential(uniq.size)
    fig, (ax, res) = plt.subplots(
        2, 1, figsize=(9, 7.5), sharex=True, gridspec_kw={"height_ratios": [3, 1.2]}
    )
    predicted = np.asarray(law.loss(n, d), dtype=float)
    q = (1 - level) / 2
    for colour, g in zip(colours, uniq, strict=True):
        m = groups == g
        if kind == "flops":
            budget = float(np.exp(np.mean(np.log(c[m]))))
            label = f"C = {budget:.2g} FLOPs"

            def tok(x: np.ndarray, budget: float = budget) -> np.ndarray:
                return budget / (6 * x)
        else:
            budget = float(np.exp(np.mean(np.log(d[m]))))
            lo, hi = d[m].min(), d[m].max()
            label = (
                f"D = {_fmt_count(budget)} tokens"
                if kind == "tokens"
                else f"D {_fmt_count(lo)}–{_fmt_count(hi)}"
            )

            def tok(x: np.ndarray, budget: float = budget) -> np.ndarray:
                return np.full_like(x, budget)

        ax.scatter(n[m], loss[m], s=22, color=colour, zorder=3, label=label)
        if kind == "bins":
            # scattered (N, D): no curve matches the points, so the law is drawn at each
            # point's own (N, D), joined to the observation, with its interval
            ax.vlines(n[m], loss[m], predicted[m], color=colour, lw=0.7, zorder=2)
            if sample_laws:
                at = np.array([law_s.loss(n[m], d[m]) for law_s in sample_laws], dtype=float)
                _bars(
                    ax,
                    n[m],
                    np.nanquantile(at, q, axis=0),
                    np.nanquantile(at, 1 - q, axis=0),
                    colour,
                )
            ax.scatter(n[m], predicted[m], s=26, facecolors="white", edgecolors=colour, zorder=2.5)
        else:
            grid = np.geomspace(n[m].min() / 1.25, n[m].max() * 1.25, 80)
            ax.plot(grid, law.loss(grid, tok(grid)), color=colour, lw=1.4, zorder=2)
            if sample_laws:
                curves = np.array(
                    [law_s.loss(grid, tok(grid)) for law_s in sample_laws], dtype=float
                )
                ax.fill_between(
                    grid,
                    np.nanquantile(curves, q, axis=0),
                    np.nanquantile(curves, 1 - q, axis=0),
                    color=colour,
                    alpha=0.2,
                    lw=0,
                    zorder=1,
                )
        res.scatter(n[m], 100 * (loss[m] / predicted[m] - 1), s=16, color=colour, zorder=3)
    res.axhline(0, color="k", lw=0.8)
    lim = max(0.5, 1.15 * float(np.nanmax(np.abs(100 * (loss / predicted - 1)))))
    res.set(ylim=(-lim, lim), xscale="log", xlabel="parameters N (count)")
    res.set_ylabel("residual (%)\nobserved / law − 1")
    res.grid(True, alpha=0.3)
    ax.set(xscale="log", ylabel="loss (nats)")
    ax.grid(True, which="both", alpha=0.25)
    band = f"; bands: {level:.0%} bootstrap ({len(sample_laws)} resamples)" if sample_laws else ""
    what = {"flops": "iso-FLOP slice", "tokens": "token budget", "bins": "tokens D"}[kind]
    drawn = (
        "open circles: the law at each point's own (N, D)"
        if kind == "bins"
        else f"lines: the law at each {what}"
    )
    band = band.replace("bands", "bars" if kind == "bins" else "bands")
    mark = f" {CAVEAT_MARK}" if caveat else ""
    ax.set_title(f"{_wrap(title)}{mark}\n{drawn}{band}", fontsize=10)
    ax.legend(fontsize=7.5, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, title=what)
    fig.tight_layout()
    if caveat:
        _caveat_footnote(fig, {"caveat of this law": caveat}, width=120)
    _save(fig, path)


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
    c = _flops(points)
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
        vertices = []
        for _ in range(n_bootstrap):
            take = rng.choice(idx.size, idx.size)
            if np.unique(x[take]).size < 3:
                continue
            b2, b1, _b0 = np.polyfit(x[take], loss[idx][take], 2)
            if b2 > 0:
                vertices.append(-b1 / (2 * b2))
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


def plot_isoflop_fit(
    points: pl.DataFrame,
    law: Any,
    path: Path,
    *,
    title: str,
    sample_laws: Sequence[Any] = (),
    level: float = 0.95,
    caveat: str | None = None,
) -> None:
    """An IsoFLOP fit (approach 2): left, each budget's points and parabola of loss against
    ``N`` with its optimum and the optimum's interval (:func:`isoflop_profiles`); right,
    ``N_opt(C)`` and ``D_opt(C) = C / (6 N_opt)`` at each budget's optimum with the fitted
    allocation law and its ``level`` bootstrap band from ``sample_laws``."""
    profiles = isoflop_profiles(points, level=level)
    groups = budget_groups(_flops(points))
    n = points["params"].to_numpy().astype(float)
    loss = points["loss"].to_numpy().astype(float)
    fig, (ax, right) = plt.subplots(1, 2, figsize=(13, 5.8))
    many = profiles.height > MAX_SLICES  # then a colour bar, not a legend entry per budget
    budgets = profiles["flops"].to_numpy() if profiles.height else np.array([1.0])
    norm = matplotlib.colors.LogNorm(budgets.min(), budgets.max() * 1.0001)
    cmap = matplotlib.colors.LinearSegmentedColormap.from_list(
        "budgets", _sequential(256) if many else _sequential(max(profiles.height, 2))
    )
    colours = [cmap(norm(c)) for c in budgets] if many else _sequential(profiles.height)
    for colour, row in zip(colours, profiles.iter_rows(named=True), strict=True):
        c = row["flops"]
        m = groups == row["group"]
        label = None if many else f"C = {c:.2g} FLOPs"
        ax.scatter(n[m], loss[m], s=22 if not many else 12, color=colour, zorder=3, label=label)
        x = np.linspace(np.log(n[m].min() / 1.2), np.log(n[m].max() * 1.2), 100)
        ax.plot(np.exp(x), row["c2"] * x**2 + row["c1"] * x + row["c0"], color=colour, lw=1.3)
        _bars(ax, row["loss_min"], row["params_low"], row["params_high"], colour, vertical=False)
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
    _finish_fit_figure(fig, title, caveat, path)


def _allocation_panel(
    ax: plt.Axes,
    law: Any,
    flops: np.ndarray,
    params_opt: np.ndarray,
    interval: tuple[np.ndarray, np.ndarray] | None,
    *,
    sample_laws: Sequence[Any],
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
    if interval is not None:
        lo, hi = interval
        _bars(ax, flops, lo, hi, n_colour)
        _bars(ax, flops, flops / (6 * hi), flops / (6 * lo), d_colour)
    ms = 6 if interval is not None else 3
    tail = f" ({level:.0%} interval)" if interval is not None else ""
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


def plot_envelope_fit(
    curves: pl.DataFrame,
    law: Any,
    path: Path,
    *,
    title: str,
    sample_laws: Sequence[Any] = (),
    level: float = 0.95,
    caveat: str | None = None,
    n_grid: int = 60,
) -> None:
    """An envelope fit (approach 1): left, every run's loss curve against compute, coloured
    by model size, and the envelope (the lowest loss reached at each compute); right, the
    size of the run on the envelope at each compute (``N_opt``, a staircase over the sizes
    tried) and ``D_opt = C / (6 N_opt)``, with the fitted allocation law and its bootstrap
    band. ``curves`` has ``run_id``, ``params``, ``loss`` and ``flops`` or ``tokens``."""
    c = _flops(curves)
    n = curves["params"].to_numpy().astype(float)
    loss = curves["loss"].to_numpy().astype(float)
    runs = curves["run_id"].to_numpy()
    sizes = np.unique(n)
    norm = matplotlib.colors.LogNorm(sizes.min(), sizes.max() * (1.0001 if sizes.size == 1 else 1))
    fig, (ax, right) = plt.subplots(1, 2, figsize=(13, 5.8))
    log_g = np.linspace(np.log(c.min()), np.log(c.max()), n_grid)
    at = np.full((np.unique(runs).size, n_grid), np.inf)
    size_of = np.empty(np.unique(runs).size)
    for i, r in enumerate(np.unique(runs)):
        m = runs == r
        order = np.argsort(c[m])
        lc, lo = np.log(c[m][order]), loss[m][order]
        ax.plot(np.exp(lc), lo, color=plt.cm.viridis(norm(n[m][0])), lw=1.0, alpha=0.9)
        inside = (log_g >= lc[0]) & (log_g <= lc[-1])
        at[i, inside] = np.interp(log_g[inside], lc, lo)
        size_of[i] = n[m][0]
    covered = np.isfinite(at).any(axis=0)
    best = np.argmin(at, axis=0)
    ax.plot(
        np.exp(log_g[covered]),
        at[best[covered], np.flatnonzero(covered)],
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
    # as the fit does: only compute budgets where runs smaller and larger than the best one
    # also reach it are kept (elsewhere the minimum is censored by the sizes tried)
    reach = np.isfinite(at)
    best_n = size_of[best]
    smaller = (reach & (size_of[:, None] < best_n[None, :])).any(axis=0)
    larger = (reach & (size_of[:, None] > best_n[None, :])).any(axis=0)
    kept = covered & smaller & larger
    _allocation_panel(
        right,
        law,
        np.exp(log_g[kept]),
        best_n[kept],
        None,
        sample_laws=sample_laws,
        level=level,
        what="on the envelope (fitted)",
    )
    dropped = covered & ~kept
    if dropped.any():
        right.scatter(
            np.exp(log_g[dropped]),
            best_n[dropped],
            s=12,
            facecolors="none",
            edgecolors="grey",
            label=r"$N_{opt}$ censored by the sizes tried (not fitted)",
        )
        right.legend(fontsize=7.5, loc="upper left")
    _finish_fit_figure(fig, title, caveat, path)


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
    order = ("alpha", "beta", "a", "b", "params_exp", "tokens_exp")
    names = [c for c in order if c in present]
    labels = {
        "a": r"$a$ in $N_{opt} \propto C^a$",
        "b": r"$b$ in $D_{opt} \propto C^b$",
        "params_exp": r"$a$ in $N_{opt} \propto C^a$",
        "tokens_exp": r"$b$ in $D_{opt} \propto C^b$",
        "alpha": r"$\alpha$ in $A / N^\alpha$",
        "beta": r"$\beta$ in $B / D^\beta$",
    }
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
        head = labels[name]
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
        f"{_wrap(title, 45 * k)}\nBootstrap distributions of the exponents ({n_samples} resamples)",
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
    _save(fig, path)


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
    lo = float(min(points["observed"].min(), points["predicted"].min()))
    hi = float(max(points["observed"].max(), points["predicted"].max()))
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
    _save(fig, path)
