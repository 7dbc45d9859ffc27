"""What every figure shares: the palette, text helpers, the caveat footnote, interval bars
and saving (matplotlib's Agg backend: files only, never a display)."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg, RendererAgg
from matplotlib.figure import Figure, SubFigure

from .._files import atomic_path

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


def law_styles(law_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """A distinct ``color`` (and past the palette, ``ls``) for each law, in order."""
    n = len(LAW_COLOURS)
    return {
        law_id: {"color": LAW_COLOURS[i % n], "ls": _LAW_STYLES[(i // n) % len(_LAW_STYLES)]}
        for i, law_id in enumerate(dict.fromkeys(law_ids))
    }


def sequential(k: int) -> list[Any]:
    """``k`` colours in order along viridis (budgets, slices), its yellow end left out."""
    return [plt.cm.viridis(v) for v in np.linspace(0.0, 0.85, max(k, 1))]


def wrap(text: str, width: int = 95) -> str:
    return "\n".join(textwrap.wrap(text, width=width))


def law_label(law_id: str, caveats: Mapping[str, str] | None) -> str:
    """``law_id``, marked :data:`CAVEAT_MARK` when it has a caveat."""
    return f"{law_id} {CAVEAT_MARK}" if caveats and law_id in caveats else law_id


def fmt_count(x: float) -> str:
    """``1.3e+09`` as ``1.3B`` (K, M, B, T)."""
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(x) >= div:
            return f"{x / div:.3g}{unit}"
    return f"{x:.3g}"


def interval(samples: Any, level: float) -> tuple[np.ndarray, np.ndarray]:
    """The percentile interval at ``level`` of ``samples`` along their first axis (one row a
    bootstrap resample), ignoring NaNs."""
    q = (1 - level) / 2
    return np.nanquantile(samples, q, axis=0), np.nanquantile(samples, 1 - q, axis=0)


def bars(ax: plt.Axes, at: Any, lo: Any, hi: Any, colour: Any, *, vertical: bool = True) -> None:
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


def renderer_of(fig: Figure | SubFigure) -> RendererAgg:
    """The renderer of ``fig`` (every figure here is drawn by Agg), to measure text."""
    return cast(FigureCanvasAgg, fig.canvas).get_renderer()


def caveat_footnote(fig: plt.Figure, caveats: Mapping[str, str], width: int = 150) -> None:
    """Each law's caveat under everything else in the figure, marked like the law's label."""
    if not caveats:
        return
    lines = []
    for law_id, text in caveats.items():
        lines += textwrap.wrap(f"{CAVEAT_MARK} {law_id}: {text}", width=width)
    fig.canvas.draw()
    renderer = renderer_of(fig)
    boxes = [a.get_tightbbox(renderer) for a in fig.axes]
    bottom = min(box.y0 for box in boxes if box is not None) / fig.bbox.height
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


def save(fig: plt.Figure, path: Path) -> None:
    """Write ``fig`` as a PNG at ``path`` (whole or not at all) and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def finish_fit_figure(fig: plt.Figure, title: str, caveat: str | None, path: Path) -> None:
    """Title a fit's two-panel figure (marking a law with a caveat), lay it out, add the
    caveat as a footnote and save it."""
    fig.suptitle(wrap(title, 130) + (f" {CAVEAT_MARK}" if caveat else ""), fontsize=11)
    fig.tight_layout()
    if caveat:
        caveat_footnote(fig, {"caveat of this law": caveat})
    save(fig, path)
