"""Models given as a function (curvature by central differences) and the summed Huber
objective that the driver minimises."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ._blocks import (
    _BLOCK_CELLS,
    _ROW_CAP,
    _ROW_TARGET,
    Array,
    Index,
    _blocks,
    _budget,
    _gram,
    _round_rows,
    _row_chunks,
    _weights_block,
    _wsum,
    huber,
)
from .lse import LSEAffineModel


class GenericModel:
    """A model given by ``predict_grad(theta) -> (pred, grad)``; curvature by central
    differences of the gradient (used for the non-affine joint Kaplan law).

    With ``data`` (per-point arrays, e.g. ``{"x": log_N, "y": log_D}``), ``predict_grad`` is
    called as ``predict_grad(theta, **data)`` and the engine may call it on blocks of points
    (``data`` sliced) to keep within its memory budget; without it, only rows are split.
    """

    def __init__(
        self,
        n_params: int,
        predict_grad: Callable[..., tuple[Array, Array]],
        data: dict[str, Array] | None = None,
    ) -> None:
        self.n_params = n_params
        self._pg_raw = predict_grad
        self.data = None if data is None else {k: np.asarray(v) for k, v in data.items()}

    def _pg(self, theta: Array, a: int | None = None, b: int | None = None) -> tuple[Array, Array]:
        if self.data is None:
            return self._pg_raw(theta)
        return self._pg_raw(theta, **{k: v[a:b] for k, v in self.data.items()})

    def plan(self, n: int, budget: int | None = None) -> tuple[int, int]:
        """``(points per block, rows per block)`` within ``budget``: per (row, point) the
        gradient arrays of the central differences dominate (about ``4 P + 12`` floats)."""
        b = _budget(budget)
        work = b - b // 4
        cell = 8 * (4 * self.n_params + 12)
        nb = n
        if self.data is not None:
            nb = max(1, min(n, _BLOCK_CELLS // _ROW_TARGET, work // (cell * _ROW_TARGET)))
        rows = min(_ROW_CAP, max(_BLOCK_CELLS // nb, 8), work // (cell * nb))
        return int(nb), _round_rows(rows)

    def predict(self, theta: Array) -> Array:
        return self._pg(theta)[0]

    def predict_grad(self, theta: Array) -> tuple[Array, Array, None]:
        pred, G = self._pg(theta)
        return pred, G, None

    def curvature(
        self,
        theta: Array,
        coef: Array,
        G: Array,
        soft: None,
        block: tuple[int | None, int | None] = (None, None),
    ) -> Array:
        s, p = theta.shape
        out = np.empty((s, p, p))
        for j in range(p):
            h = 1e-6 * np.maximum(1.0, np.abs(theta[:, j]))
            tp, tm = theta.copy(), theta.copy()
            tp[:, j] += h
            tm[:, j] -= h
            gp = _wsum(coef, self._pg(tp, *block)[1])
            gm = _wsum(coef, self._pg(tm, *block)[1])
            out[:, j, :] = (gp - gm) / (2 * h[:, None])
        return 0.5 * (out + out.transpose(0, 2, 1))


class HuberObjective:
    """The summed Huber objective of a model against observed ``log L``."""

    def __init__(self, model: LSEAffineModel | GenericModel, log_loss: Array, delta: float):
        self.model = model
        self.y = np.asarray(log_loss, dtype=float)
        self.delta = float(delta)

    def value(
        self, theta: Array, w: Array, *, rows: Index | None = None, budget: int | None = None
    ) -> Array:
        """Objective ``(S,)`` of every row of ``theta`` (weights as in :meth:`_derivatives`)."""
        if isinstance(self.model, LSEAffineModel):
            return self.model.huber_value(theta, self.y, self.delta, w, rows=rows, budget=budget)
        d = self.delta
        s, n = theta.shape[0], self.y.size
        nb, rmax = self.model.plan(n, budget)
        f = np.zeros(s)
        for a, b in _blocks(n, nb):
            for r0, r1 in _row_chunks(s, rmax):
                pred = self.model._pg(theta[r0:r1], a, b)[0]
                ab = np.abs(pred - self.y[a:b])
                h = np.where(ab <= d, 0.5 * ab * ab, d * (ab - 0.5 * d))
                f[r0:r1] += (h * _weights_block(w, rows, r0, r1, a, b)).sum(axis=1)
        return f

    def screen(self, theta: Array, *, budget: int | None = None) -> Array:
        """Objective ``(S,)`` of many starts with unit weights, to rank them: as
        :meth:`value`, the cheaper way where the model offers one
        (:meth:`LSEAffineModel.screen_value`), equal to rounding."""
        if isinstance(self.model, LSEAffineModel):
            f = self.model.screen_value(theta, self.y, self.delta, budget)
            if f is not None:
                return f
        return self.value(theta, np.ones(self.y.size), budget=budget)

    def value_grad_hess(self, theta: Array, w: Array) -> tuple[Array, Array, Array, Array]:
        """Objective ``(S,)``, gradient ``(S, P)``, exact Hessian and a positive
        semi-definite scaling matrix (IRLS weights ``psi(r)/r``) for the damping."""
        return self._derivatives(theta, w, full_scaling=True)

    def _derivatives(
        self,
        theta: Array,
        w: Array,
        *,
        full_scaling: bool = False,
        rows: Index | None = None,
        budget: int | None = None,
    ) -> tuple[Array, Array, Array, Array]:
        """As :meth:`value_grad_hess`; of the scaling matrix only what the driver's damping
        uses unless ``full_scaling``: each term's own, summed, for an
        :class:`LSEAffineModel`, the diagonal for a :class:`GenericModel`. Weights ``w``:
        ``(n,)`` shared, ``(S, n)`` one row per row of ``theta``, or with ``rows`` the rows
        ``rows`` of a larger array. Evaluated in blocks within ``budget`` bytes
        (:data:`MEMORY_BUDGET`)."""
        if isinstance(self.model, LSEAffineModel):
            return self.model.huber_derivatives(
                theta, self.y, self.delta, w, full_scaling=full_scaling, rows=rows, budget=budget
            )
        s, p = theta.shape
        n = self.y.size
        nb, rmax = self.model.plan(n, budget)
        f, g, H = np.zeros(s), np.zeros((s, p)), np.zeros((s, p, p))
        D = np.zeros((s, p, p))
        for a, b in _blocks(n, nb):
            block = (a, b) if self.model.data is not None else (None, None)
            for r0, r1 in _row_chunks(s, rmax):
                th = theta[r0:r1]
                wb = _weights_block(w, rows, r0, r1, a, b)
                wb = np.broadcast_to(wb, (r1 - r0, b - a))
                pred, G = self.model._pg(th, *block)
                r = pred - self.y[a:b]
                h, psi, dpsi = huber(r, self.delta)
                f[r0:r1] += (wb * h).sum(axis=1)
                wpsi = wb * psi
                g[r0:r1] += _wsum(wpsi, G)
                H[r0:r1] += _gram(wb * dpsi, G) + self.model.curvature(th, wpsi, G, None, block)
                irls = wb * np.where(dpsi > 0, 1.0, self.delta / np.maximum(np.abs(r), self.delta))
                if full_scaling:
                    D[r0:r1] += _gram(irls, G)
                else:  # a model given as a function has no terms: the diagonal only
                    D[r0:r1, np.arange(p), np.arange(p)] += _wsum(irls, G * G)
        return f, g, H, D


def _huber_loss_and_grad(
    theta: Array, model: LSEAffineModel | GenericModel, log_loss: Array, delta: float
) -> tuple[float, Array]:
    """Summed Huber objective and its analytic gradient at one parameter vector (pure)."""
    obj = HuberObjective(model, log_loss, delta)
    th = np.asarray(theta, dtype=float)[None, :]
    f, g, _, _ = obj.value_grad_hess(th, np.ones((1, obj.y.size)))
    return float(f[0]), g[0]
