"""Labels beside points that overlap neither each other nor the points (a greedy search)."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.text import Text
from matplotlib.transforms import Bbox

from ._style import renderer_of

log = logging.getLogger(__name__)

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
    renderer = renderer_of(fig)
    pts = ax.transData.transform(np.column_stack([x, y]))
    half = marker_px / 2
    placer = _Placer(
        ax,
        renderer,
        frame=ax.get_window_extent(renderer),
        taken=[Bbox.from_extents(px - half, py - half, px + half, py + half) for px, py in pts],
        fontsize=fontsize,
        px_per_pt=fig.dpi / 72.0,
    )
    texts: list[Text | None] = [None] * len(labels)
    for i in _crowded_first(pts):
        texts[i] = placer.place((x[i], y[i]), labels[i])
    return [t for t in texts if t is not None]


def _crowded_first(pts: np.ndarray) -> np.ndarray:
    """Indices of the points (display coordinates), those in crowded places first: they
    have the fewest free positions."""
    dist = np.linalg.norm(pts[:, None, :] - pts[None, :, :], axis=-1)
    crowd = (dist < 60).sum(axis=1)
    return np.lexsort((pts[:, 0], -crowd))


@dataclass
class _Placer:
    """Places one label after another on ``ax``, keeping the boxes already ``taken``."""

    ax: plt.Axes
    renderer: Any
    frame: Bbox
    taken: list[Bbox]
    fontsize: float
    px_per_pt: float

    def place(self, xy: tuple[float, float], label: str) -> Text:
        """Write ``label`` at its first free candidate position near the point ``xy``, else
        at its least crowded one; a leader line past the first ring."""
        placed = self._first_free(xy, label)
        text, box, r = placed
        if r > _RADII[0]:
            self._leader(xy, box)
        self.taken.append(box)
        return text

    def _first_free(self, xy: tuple[float, float], label: str) -> tuple[Text, Bbox, float]:
        best: tuple[float, Text] | None = None
        for r in _RADII:
            for angle in _ANGLES:
                text = self._candidate(xy, label, r, angle)
                box = text.get_window_extent(self.renderer).expanded(1.04, 1.08)
                inside = (
                    box.x0 >= self.frame.x0
                    and box.x1 <= self.frame.x1
                    and box.y0 >= self.frame.y0
                    and box.y1 <= self.frame.y1
                )
                overlap = sum(_area(box, other) for other in self.taken)
                if inside and overlap == 0:
                    if best is not None:
                        best[1].remove()
                    return text, box, r
                score = overlap + (0 if inside else 1e9) + r * self.px_per_pt
                if best is None or score < best[0]:
                    if best is not None:
                        best[1].remove()
                    best = (score, text)
                else:
                    text.remove()
        assert best is not None
        log.info("label %r overlaps others: no free place near its point", label)
        return best[1], best[1].get_window_extent(self.renderer), _RADII[-1]

    def _candidate(self, xy: tuple[float, float], label: str, r: float, angle: float) -> Text:
        """``label`` at distance ``r`` (points) from ``xy`` in direction ``angle``, aligned
        so that its text grows away from the point."""
        dx = r * math.cos(math.radians(angle))
        dy = r * math.sin(math.radians(angle))
        ha = "left" if dx > 1e-9 else "right" if dx < -1e-9 else "center"
        va = "bottom" if dy > 1e-9 else "top" if dy < -1e-9 else "center"
        return self.ax.annotate(
            label,
            xy,
            xytext=(dx, dy),
            textcoords="offset points",
            ha=ha,
            va=va,
            fontsize=self.fontsize,
            zorder=5,
            bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.7},
        )

    def _leader(self, xy: tuple[float, float], box: Bbox) -> None:
        """A thin line from the point ``xy`` to the centre of its label's ``box``."""
        centre = self.ax.transData.inverted().transform(
            (box.x0 + box.width / 2, box.y0 + box.height / 2)
        )
        self.ax.annotate(
            "",
            xy,
            xytext=tuple(centre),
            textcoords="data",
            arrowprops={"arrowstyle": "-", "lw": 0.4, "color": "#777777", "shrinkB": 2},
            zorder=4,
        )


def _area(a: Bbox, b: Bbox) -> float:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return w * h if w > 0 and h > 0 else 0.0
