"""Numerics of the fitting engine: Huber loss in log space, its derivatives, and a batched
Levenberg-Marquardt driver that minimises many starts (or many bootstrap resamples) at once.

Every model here predicts ``log L_hat`` for each data point; the objective of one parameter
vector ``theta`` with point weights ``w`` (bootstrap multiplicities, 1 for a plain fit) is::

    f(theta) = sum_i w_i huber_delta(log L_hat_i(theta) - log L_i)

    huber_delta(r) = r^2 / 2                 if |r| <= delta
                   = delta (|r| - delta / 2) otherwise

(Hoffmann et al. 2022, Section 3.3, with the sum instead of the mean as Besiroglu et al. 2024
recommend). Arrays carry a leading "batch" axis ``S`` (starts or resamples): ``theta`` is
``(S, P)``, weights ``(S, n)`` or ``(n,)``.

Why Levenberg-Marquardt and not L-BFGS: with ``delta = 1e-3`` most residuals sit in the linear
part of the Huber loss, the objective near the optimum is ~1e-3 and its gradient far smaller,
so quasi-Newton methods with default tolerances stop early. Newton steps on the exact Hessian
(cheap: at most 5 parameters) converge quadratically, damping keeps them safe far from the
optimum, and convergence is certified by the Newton decrement relative to the objective,
which is scale-free.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]


def huber(r: Array, delta: float) -> tuple[Array, Array, Array]:
    """Huber loss ``h(r)``, its derivative ``psi(r)`` and second derivative ``psi'(r)``."""
    a = np.abs(r)
    inside = a <= delta
    h = np.where(inside, 0.5 * r * r, delta * (a - 0.5 * delta))
    psi = np.clip(r, -delta, delta)
    return h, psi, inside.astype(float)


def _wsum(c: Array, G: Array) -> Array:
    """``sum_i c_si G_sip`` as a batched matrix product ``(S, P)``."""
    return (c[:, None, :] @ G)[:, 0, :]


def _gram(c: Array, G: Array) -> Array:
    """``sum_i c_si G_sip G_siq`` as a batched matrix product ``(S, P, P)``."""
    return (c[:, :, None] * G).transpose(0, 2, 1) @ G


def _matmul(a: Array, b: Array, rows: int = 8) -> Array:
    """``a @ b`` as a stack of ``rows``-row products. One large product lets OpenBLAS
    spread it over threads, which on a shared machine waits on busy cores (measured 10-20x
    slower under load); products this small always run on the calling thread."""
    s = a.shape[0]
    head = s - s % rows
    if head == 0:
        return a @ b
    out = np.empty((s, b.shape[1]))
    out[:head] = (a[:head].reshape(head // rows, rows, a.shape[1]) @ b).reshape(head, -1)
    if head < s:
        out[head:] = a[head:] @ b
    return out


MEMORY_BUDGET: int = 256 * 2**20
"""Bytes of work memory one evaluation of the objective may hold (default 256 MB): scratch
arrays of the derivatives, per-point constants, copies of per-row weights. The rows
(starts or bootstrap resamples) and the points of every evaluation are processed in blocks
chosen from it, so that memory does not grow with the number of points or of starts; the
data themselves (``O(n)`` design arrays, weights) come on top. Override module-wide, or per
call with ``budget=`` (:func:`minimize_batch`, :func:`minimize_chunked`)."""

_ROW_CAP = 512  # rows per block at most (more gains nothing once Python overhead is amortised)
_ROW_TARGET = 64  # rows a block of points leaves room for, when the points must be split
# (row, point) cells per block, whatever the budget: a block's arrays then stay in the CPU's
# caches. Measured on 250 and 2,500 points: ~90-130 ns per cell up to 64k cells, 3-7x more
# from 128k cells (e.g. 512 rows x 250 points, or 64 rows x 2,500 points).
_BLOCK_CELLS = 65536


def _round_rows(rows: int) -> int:
    """At least one row; a multiple of 8 from 8 up (:func:`_matmul` works in 8-row stacks)."""
    return int(max(1, rows - rows % 8 if rows >= 8 else rows))


def _budget(budget: int | None) -> int:
    b = MEMORY_BUDGET if budget is None else budget
    if isinstance(b, bool) or not isinstance(b, int | np.integer) or b < 1:
        raise ValueError(f"a memory budget must be a positive whole number of bytes, not {b!r}")
    return int(b)


def _blocks(n: int, size: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` of consecutive blocks of ``size`` (a generator: a list of a million
    one-point blocks would itself outgrow a small budget)."""
    return ((a, min(a + size, n)) for a in range(0, n, size))


_row_chunks = _blocks


def _weights_block(w: Array, rows: Array | None, r0: int, r1: int, a: int, b: int) -> Array:
    """Weights of rows ``r0:r1`` (of ``rows`` when given) and points ``a:b``; a shared
    ``(n,)`` or ``(1, n)`` vector stays shared (a view, broadcast)."""
    if w.ndim == 1:
        return w[a:b]
    if w.shape[0] == 1 and rows is None:
        return w[0, a:b]
    if rows is None:
        return w[r0:r1, a:b]
    return w[rows[r0:r1], a:b]


class LSEAffineModel:
    """``log L_hat_i = LSE_k(z_ik)`` with ``z_ik = J[i, k, :] @ theta + c[i, k]``.

    Affine-in-theta terms inside a log-sum-exp cover the Chinchilla law
    (``LSE(a - alpha log N, b - beta log D, e)``) and Kaplan's single-variable laws with or
    without an irreducible term; the Hessian of the prediction is then analytic:
    ``J_i^T (diag(s_i) - s_i s_i^T) J_i`` with ``s_i`` the softmax of ``z_i``.

    The objective and its derivatives are sums over points, evaluated block by block
    (blocks of rows times blocks of points) within a memory budget (:data:`MEMORY_BUDGET`):
    scratch arrays are kept between calls and the per-point constant matrices of the fused
    derivatives are kept only while all of them fit in a quarter of the budget; otherwise
    each block's are built when it is evaluated.
    """

    def __init__(self, J: Array, c: Array | None = None) -> None:
        self.J = np.ascontiguousarray(J, dtype=float)  # (n, K, P)
        n, k, p = self.J.shape
        self.c = np.zeros((n, k)) if c is None else np.asarray(c, dtype=float)
        self.n_params = p
        self._Jk = [np.ascontiguousarray(self.J[:, j, :].T) for j in range(k)]
        self._ck = [np.ascontiguousarray(self.c[:, j]) for j in range(k)]
        # Only the upper triangle of symmetric matrices is computed.
        self._tri = np.triu_indices(p)
        self._pairs = [(a, b) for a in range(k) for b in range(a, k)]
        t = len(self._tri[0])
        # Bytes per point of the constant matrices (R1, R2, R2diag) of one block, and per
        # (row, point) of the scratch arrays of `_block_derivatives` (float slots + a mask).
        self._const_bytes = 8 * (k * (p + t) + len(self._pairs) * (t + p))
        self._slots = k + 9
        self._cell_bytes = 8 * (self._slots + k + 2 * len(self._pairs)) + 1
        self._consts_cache: dict[tuple[int, int], tuple[Array, Array, Array]] = {}
        self._scratch = threading.local()

    def __getstate__(self) -> dict:
        # Scratch buffers belong to one thread of one process, and cached constants are
        # rebuilt on demand: never ship them.
        skip = ("_scratch", "_consts_cache")
        return {k: v for k, v in self.__dict__.items() if k not in skip}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._consts_cache = {}
        self._scratch = threading.local()

    @property
    def _JJ(self) -> Array:
        """``J_ik J_ik^T`` flattened, ``(n K, P P)``: only for :meth:`curvature` (built per call,
        not kept: at a million points it alone would take 600 MB)."""
        n, k, p = self.J.shape
        return np.einsum("nkp,nkq->nkpq", self.J, self.J).reshape(n * k, p * p)

    # -- memory plan ---------------------------------------------------------------------

    def plan(self, budget: int | None = None) -> tuple[int, int, bool]:
        """``(points per block, rows per block, constants kept)`` within ``budget`` bytes.

        Kept constants take at most a quarter of the budget; a block's scratch arrays (and
        its constants, when built on the fly, counted twice for their temporaries) at most
        three quarters. Points are split only when fewer than 64 rows would fit a block of
        all of them; the block size depends on the number of points and the budget only, so
        a row's result does not depend on which other rows share its evaluation."""
        b = _budget(budget)
        n = self.J.shape[0]
        keep = n * self._const_bytes <= b // 4
        work = b - b // 4
        per_point = 0 if keep else 2 * self._const_bytes
        nb = max(
            1,
            min(
                n, _BLOCK_CELLS // _ROW_TARGET, work // (self._cell_bytes * _ROW_TARGET + per_point)
            ),
        )
        rows = min(_ROW_CAP, _BLOCK_CELLS // nb, (work - nb * per_point) // (self._cell_bytes * nb))
        return int(nb), _round_rows(rows), bool(keep)

    def _consts(self, a: int, b: int, keep: bool) -> tuple[Array, Array, Array]:
        """Right-hand matrices of the fused derivatives for points ``a:b`` (see
        :meth:`huber_derivatives`): every sum over points becomes one matrix product with a
        stacked ``(S, m * n)`` left factor, so no ``(S, n, P)`` array is ever built."""
        hit = self._consts_cache.get((a, b))
        if hit is not None:
            return hit
        k = self.J.shape[1]
        iu, ju = self._tri
        Jt = self.J[a:b].transpose(1, 0, 2)  # (K, m, P)
        R1 = np.ascontiguousarray(
            np.concatenate([Jt, Jt[:, :, iu] * Jt[:, :, ju]], axis=2).reshape(k * (b - a), -1)
        )
        outer = [
            Jt[i][:, iu] * Jt[j][:, ju] + (Jt[j][:, iu] * Jt[i][:, ju] if i != j else 0.0)
            for i, j in self._pairs
        ]
        R2 = np.ascontiguousarray(np.concatenate(outer, axis=0))
        R2diag = np.ascontiguousarray(R2[:, iu == ju])
        out = (R1, R2, R2diag)
        if keep:
            self._consts_cache[(a, b)] = out
        return out

    def _workspace(self, rows: int, nb: int) -> tuple[Array, Array, Array, Array]:
        """Scratch arrays for one block, kept between calls: allocating them per call costs
        more in page faults than the arithmetic that fills them. One set per thread, so that
        threads sharing a model (bootstrap jobs on a thread pool) do not overwrite each
        other's. Returns (float slots, mask, left factor 1, left factor 2), flat."""
        k = self.J.shape[1]
        cap = rows * nb
        ws = getattr(self._scratch, "ws", None)
        if ws is None or ws[0].shape[1] < cap:
            ws = self._scratch.ws = (
                np.empty((self._slots, cap)),
                np.empty(cap, dtype=bool),
                np.empty(k * cap),
                np.empty(2 * len(self._pairs) * cap),
            )
        return ws

    # -- evaluation ----------------------------------------------------------------------

    def _z(self, theta: Array) -> list[Array]:
        # One contiguous (S, n) array per term: reductions over a short trailing axis of
        # length K are several times slower in numpy than elementwise ops between K arrays.
        return [theta @ self._Jk[k] + self._ck[k] for k in range(len(self._Jk))]

    def predict(self, theta: Array) -> Array:
        z = self._z(theta)
        if len(z) == 1:
            return z[0]
        m = np.maximum.reduce(z)
        tot = sum(np.exp(zk - m) for zk in z)
        return m + np.log(tot)

    def predict_grad(self, theta: Array) -> tuple[Array, Array, Array]:
        """Prediction ``(S, n)``, its gradient ``(S, n, P)`` and the softmax ``(S, n, K)``."""
        z = self._z(theta)
        m = np.maximum.reduce(z)
        e = [np.exp(zk - m) for zk in z]
        tot = sum(e)
        pred = m + np.log(tot)
        soft = np.stack([ek / tot for ek in e], axis=2)
        G = soft[:, :, 0, None] * self.J[None, :, 0, :]
        for k in range(1, len(z)):
            G += soft[:, :, k, None] * self.J[None, :, k, :]
        return pred, G, soft

    def curvature(self, theta: Array, coef: Array, G: Array, soft: Array) -> Array:
        """``sum_i coef_i Hess(log L_hat_i)`` for every batch row, ``(S, P, P)``."""
        s, n, k = soft.shape
        p = self.n_params
        first = ((coef[:, :, None] * soft).reshape(s, n * k) @ self._JJ).reshape(s, p, p)
        return first - _gram(coef, G)

    def _block_pred(
        self, th: Array, a: int, b: int, slots: list[Array]
    ) -> tuple[Array, list[Array]]:
        """Prediction and (unnormalised: the caller normalises) exponentials of points
        ``a:b``, in ``slots``; returns (prediction, terms). Same operations, in the same
        order, as :meth:`predict`, so that a single block gives the same bits."""
        k = len(self._Jk)
        z = slots[:k]
        for j in range(k):
            np.matmul(th, self._Jk[j][:, a:b], out=z[j])
            np.add(z[j], self._ck[j][a:b], out=z[j])
        if k == 1:
            return z[0], z
        m, tot = slots[k], slots[k + 1]
        np.maximum(z[0], z[1], out=m)
        for zj in z[2:]:
            np.maximum(m, zj, out=m)
        for zj in z:
            np.subtract(zj, m, out=zj)
            np.exp(zj, out=zj)
        np.add(z[0], z[1], out=tot)
        for zj in z[2:]:
            tot += zj
        return m, z

    def huber_value(
        self,
        theta: Array,
        y: Array,
        delta: float,
        w: Array,
        *,
        rows: Array | None = None,
        budget: int | None = None,
    ) -> Array:
        """Huber objective ``(S,)`` only, block by block within ``budget`` (weights ``w`` of
        rows ``rows`` when given, else ``w`` as in :meth:`huber_derivatives`)."""
        s = theta.shape[0]
        n, k, _ = self.J.shape
        nb, rmax, _keep = self.plan(budget)
        flat, mask, _, _ = self._workspace(rmax, nb)
        f = np.zeros(s)
        for a, b in _blocks(n, nb):
            m = b - a
            for r0, r1 in _row_chunks(s, rmax):
                rs = r1 - r0
                slots = [flat[i, : rs * m].reshape(rs, m) for i in range(self._slots)]
                pred, _ = self._block_pred(theta[r0:r1], a, b, slots)
                if k > 1:
                    tot = slots[k + 1]
                    np.log(tot, out=tot)
                    np.add(pred, tot, out=pred)
                r, ab, h, t = pred, slots[k + 2], slots[k + 3], slots[k + 4]
                np.subtract(r, y[a:b], out=r)
                np.abs(r, out=ab)
                np.multiply(0.5, ab, out=h)
                h *= ab
                np.subtract(ab, 0.5 * delta, out=t)
                np.multiply(delta, t, out=t)
                inside = mask[: rs * m].reshape(rs, m)
                np.less_equal(ab, delta, out=inside)
                np.copyto(t, h, where=inside)
                t *= _weights_block(w, rows, r0, r1, a, b)
                f[r0:r1] += t.sum(axis=1)
        return f

    def huber_derivatives(
        self,
        theta: Array,
        y: Array,
        delta: float,
        w: Array,
        *,
        full_scaling: bool = False,
        rows: Array | None = None,
        budget: int | None = None,
    ) -> tuple[Array, Array, Array, Array]:
        """Huber objective ``(S,)``, gradient ``(S, P)``, exact Hessian ``(S, P, P)`` and the
        IRLS scaling matrix (its diagonal ``(S, P)`` unless ``full_scaling``), fused.

        With ``G_i = sum_k s_ik J_ik`` every sum over points is a sum over terms:
        ``sum_i c_i G_i = sum_k (c s_k) @ J_k`` and
        ``sum_i u_i G_i G_i^T = sum_{k<=l} (u s_k s_l) @ sym(J_k J_l^T)``, each one BLAS
        product of an ``(S, m n)`` stack of elementwise products by a constant matrix, summed
        over blocks of points; rows are evaluated in blocks too (:meth:`plan`). Weights ``w``
        are ``(n,)`` or ``(1, n)`` (shared), or one row per theta row, or (with ``rows``)
        the rows ``rows`` of a larger ``(R, n)`` array, never copied whole.
        """
        s = theta.shape[0]
        n, k, p = self.J.shape
        t = len(self._tri[0])
        npair = len(self._pairs)
        nb, rmax, keep = self.plan(budget)
        flat, mask, flat1, flat2 = self._workspace(rmax, nb)
        f = np.zeros(s)
        g1 = np.zeros((s, p + t))
        h2 = np.zeros((s, t))
        d2 = np.zeros((s, t if full_scaling else p))
        for a, b in _blocks(n, nb):
            m = b - a
            R1, R2, R2diag = self._consts(a, b, keep)
            yb = y[a:b]
            for r0, r1 in _row_chunks(s, rmax):
                rs = r1 - r0
                slots = [flat[i, : rs * m].reshape(rs, m) for i in range(self._slots)]
                inside = mask[: rs * m].reshape(rs, m)
                left1 = flat1[: rs * k * m].reshape(rs, k, m)
                left2 = flat2[: 2 * rs * npair * m].reshape(2, rs, npair, m)
                wb = _weights_block(w, rows, r0, r1, a, b)
                pred, soft = self._block_pred(theta[r0:r1], a, b, slots)
                if k == 1:
                    one = slots[1]
                    one.fill(1.0)
                    soft = [one]
                else:
                    tot, inv = slots[k + 1], slots[k + 2]
                    np.divide(1.0, tot, out=inv)
                    np.log(tot, out=tot)
                    np.add(pred, tot, out=pred)
                    for sj in soft:
                        np.multiply(sj, inv, out=sj)
                r, ab, h, tt = pred, slots[k + 3], slots[k + 4], slots[k + 5]
                psi, u = slots[k + 6], slots[k + 7]
                np.subtract(r, yb, out=r)
                np.abs(r, out=ab)
                np.less_equal(ab, delta, out=inside)
                np.multiply(0.5, r, out=h)
                h *= r
                np.subtract(ab, 0.5 * delta, out=tt)
                np.multiply(delta, tt, out=tt)
                np.copyto(tt, h, where=inside)
                np.multiply(tt, wb, out=tt)
                f[r0:r1] += tt.sum(axis=1)
                np.clip(r, -delta, delta, out=psi)
                np.multiply(wb, psi, out=psi)  # w psi(r)
                for j in range(k):
                    np.multiply(psi, soft[j], out=left1[:, j, :])
                g1[r0:r1] += _matmul(left1.reshape(rs, k * m), R1)
                # u = w psi'(r) - w psi(r): weight of G G^T in the exact Hessian;
                # irls = w psi(r) / r: weight in the Gauss-Newton majoriser (damping scale).
                u.fill(0.0)
                np.copyto(u, wb, where=inside)
                u -= psi
                irls = ab
                np.maximum(ab, delta, out=irls)
                np.divide(delta, irls, out=irls)
                np.copyto(irls, 1.0, where=inside)
                np.multiply(wb, irls, out=irls)
                ss = h
                for q, (i, j) in enumerate(self._pairs):
                    np.multiply(soft[i], soft[j], out=ss)
                    np.multiply(u, ss, out=left2[0, :, q, :])
                    np.multiply(irls, ss, out=left2[1, :, q, :])
                h2[r0:r1] += _matmul(left2[0].reshape(rs, npair * m), R2)
                d2[r0:r1] += _matmul(
                    left2[1].reshape(rs, npair * m), R2 if full_scaling else R2diag
                )
        g = g1[:, :p]
        H = self._symmetric(g1[:, p:] + h2)
        D = self._symmetric(d2) if full_scaling else d2
        return f, g, H, D

    def _symmetric(self, upper: Array) -> Array:
        """``(S, P, P)`` symmetric matrices from their upper triangles ``(S, P(P+1)/2)``."""
        p = self.n_params
        out = np.empty((upper.shape[0], p, p))
        out[:, self._tri[0], self._tri[1]] = upper
        out[:, self._tri[1], self._tri[0]] = upper
        return out


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
        self, theta: Array, w: Array, *, rows: Array | None = None, budget: int | None = None
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
        rows: Array | None = None,
        budget: int | None = None,
    ) -> tuple[Array, Array, Array, Array]:
        """As :meth:`value_grad_hess`; the scaling matrix only as its diagonal ``(S, P)``
        unless ``full_scaling`` (the driver needs no more). Weights ``w``: ``(n,)`` shared,
        ``(S, n)`` one row per row of ``theta``, or with ``rows`` the rows ``rows`` of a
        larger array. Evaluated in blocks within ``budget`` bytes (:data:`MEMORY_BUDGET`)."""
        if isinstance(self.model, LSEAffineModel):
            return self.model.huber_derivatives(
                theta, self.y, self.delta, w, full_scaling=full_scaling, rows=rows, budget=budget
            )
        s, p = theta.shape
        n = self.y.size
        nb, rmax = self.model.plan(n, budget)
        f, g, H = np.zeros(s), np.zeros((s, p)), np.zeros((s, p, p))
        D = np.zeros((s, p, p)) if full_scaling else np.zeros((s, p))
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
                D[r0:r1] += _gram(irls, G) if full_scaling else _wsum(irls, G * G)
        return f, g, H, D


def _huber_loss_and_grad(
    theta: Array, model: LSEAffineModel | GenericModel, log_loss: Array, delta: float
) -> tuple[float, Array]:
    """Summed Huber objective and its analytic gradient at one parameter vector (pure)."""
    obj = HuberObjective(model, log_loss, delta)
    th = np.asarray(theta, dtype=float)[None, :]
    f, g, _, _ = obj.value_grad_hess(th, np.ones((1, obj.y.size)))
    return float(f[0]), g[0]


@dataclass(frozen=True)
class BatchResult:
    """Where each batch row ended: parameters, objective, gradient, Hessian, convergence."""

    theta: Array
    objective: Array
    grad: Array
    hess: Array
    converged: Array
    n_iter: Array
    decrement: Array
    at_bound: Array  # (S, P) bool


def _free_mask(theta: Array, g: Array, lo: Array, hi: Array) -> Array:
    """Variables not pinned at a bound by a gradient pointing out of the box."""
    at_lo = (theta <= lo + 1e-12) & (g > 0)
    at_hi = (theta >= hi - 1e-12) & (g < 0)
    return ~(at_lo | at_hi)


def _cholesky_solve(H: Array, g: Array) -> tuple[Array, Array]:
    """Solve ``H d = -g`` for every batch row by a Cholesky factorisation written out over
    the (at most a handful of) parameters, vectorised over rows; also says which ``H`` were
    positive definite (rows that were not get ``d = 0``).

    Each matrix entry is held as one contiguous ``(S,)`` array: numpy reductions over a
    trailing axis of length 1-5 cost several times more than these elementwise operations."""
    s, p = g.shape
    Ht = np.ascontiguousarray(H.transpose(1, 2, 0))  # (P, P, S)
    ok = np.ones(s, dtype=bool)
    tiny = 1e-14 * np.abs(np.diagonal(H, axis1=1, axis2=2)).max(axis=1) + 1e-300
    L: list[list[Array]] = [[] for _ in range(p)]  # L[i][j], j <= i
    for j in range(p):
        v = Ht[j, j].copy()
        for m in range(j):
            v -= L[j][m] * L[j][m]
        good = v > tiny
        ok &= good
        ljj = np.sqrt(np.where(good, v, 1.0))
        L[j].append(ljj)
        for i in range(j + 1, p):
            acc = Ht[i, j].copy()
            for m in range(j):
                acc -= L[i][m] * L[j][m]
            L[i].append(acc / ljj)
    u: list[Array] = []
    for i in range(p):
        acc = -g[:, i]
        for m in range(i):
            acc = acc - L[i][m] * u[m]
        u.append(acc / L[i][i])
    d: list[Array] = [np.empty(0)] * p
    for i in reversed(range(p)):
        acc = u[i]
        for m in range(i + 1, p):
            acc = acc - L[m][i] * d[m]
        d[i] = acc / L[i][i]
    out = np.stack(d, axis=1)
    out[~ok] = 0.0
    return out, ok


def _masked_solve(H: Array, g: Array, free: Array) -> tuple[Array, Array]:
    """Solve ``H d = -g`` on the free variables; returns ``d`` and whether ``H`` was PD there."""
    p = g.shape[1]
    eye = np.eye(p)[None]
    fm = free[:, :, None] & free[:, None, :]
    scale = np.abs(np.diagonal(H, axis1=1, axis2=2)).max(axis=1)[:, None, None] + 1e-300
    Hm = np.where(fm, H, 0.0) + np.where(free[:, :, None], 0.0, eye * scale)
    d, ok = _cholesky_solve(Hm, np.where(free, g, 0.0))
    return np.where(free, d, 0.0), ok


def minimize_batch(
    objective: HuberObjective,
    theta0: Array,
    weights: Array,
    lower: Array,
    upper: Array,
    *,
    rtol: float = 1e-14,
    max_iter: int = 300,
    budget: int | None = None,
) -> BatchResult:
    """Minimise ``objective`` from every row of ``theta0`` (each with its weights row).

    Damped Newton (Levenberg-Marquardt with Marquardt scaling from IRLS weights), steps
    projected onto the box ``[lower, upper]``, variables pinned at a bound by the gradient
    excluded. A row has converged when the Newton decrement ``g^T H^-1 g / 2`` on its free
    variables is at most ``rtol * f`` (plus 1e-24 per unit of weight): the further decrease a
    Newton step can bring is then negligible relative to the objective itself, whatever its
    scale. ``weights`` of shape ``(n,)`` are shared by every row (never copied per row);
    ``(S, n)`` weights are read a block at a time. Every evaluation stays within ``budget``
    bytes of work memory (default :data:`MEMORY_BUDGET`).
    """
    theta = np.clip(np.array(theta0, dtype=float), lower, upper)
    s, p = theta.shape
    shared = weights.ndim == 1

    _budget(budget)  # a bad budget fails here, not after the first evaluation

    def rows_of(rows: Array) -> Array | None:
        return None if shared else rows

    f, g, H, dscale = objective._derivatives(theta, weights, budget=budget)
    lam = np.full(s, 1.0)
    converged = np.zeros(s, dtype=bool)
    n_iter = np.zeros(s, dtype=int)
    dec = np.full(s, np.inf)
    # Objectives at the floating-point floor (noise-free data) count as converged.
    atol = 1e-24 * (np.full(s, weights.sum()) if shared else weights.sum(axis=1))
    active = np.ones(s, dtype=bool)
    eye = np.eye(p)[None]

    def certify(rows: Array) -> None:
        # The undamped Newton decrement on the free variables; computed once per point
        # (a rejected step leaves it unchanged). Directions with no curvature at all (a
        # term driven to zero, e.g. A -> 0 with alpha at its bound) are left out of the
        # decrement when their gradient is also negligible at the scale of the stiffest one.
        th, fi, gi, Hi = theta[rows], f[rows], g[rows], H[rows]
        free = _free_mask(th, gi, lower, upper)
        hd = np.abs(np.diagonal(Hi, axis1=1, axis2=2))
        hmax = hd.max(axis=1, keepdims=True)
        flat = (hd <= 1e-10 * hmax) & (gi * gi <= rtol * fi[:, None] * hmax + 1e-300)
        dn, pd = _masked_solve(Hi, gi, free & ~flat)
        di = np.where(pd, -0.5 * np.einsum("sp,sp->s", gi, np.where(free & ~flat, dn, 0.0)), np.inf)
        dec[rows] = di
        done = pd & (di <= rtol * fi + atol[rows])
        converged[rows[done]] = True
        active[rows[done]] = False

    certify(np.arange(s))
    for _ in range(max_iter):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        th, fi, gi, Hi = theta[idx], f[idx], g[idx], H[idx]
        free = _free_mask(th, gi, lower, upper)
        n_iter[idx] += 1
        # Damping scaled by the diagonal of the IRLS Gauss-Newton matrix
        # sum_i w_i psi(r_i)/r_i G_i G_i^T (the curvature of the quadratic majoriser of the
        # Huber loss): positive where the exact Hessian is flat because most residuals sit
        # in the linear part.
        diag = dscale[idx]
        scale = np.maximum(diag, 1e-12 * diag.max(axis=1, keepdims=True) + 1e-300)
        lam_i = lam[idx]
        d, ok = _masked_solve(Hi + lam_i[:, None, None] * scale[:, :, None] * eye, gi, free)
        # A damped matrix that is not positive definite gets more damping at once: raising
        # it costs a 5x5 factorisation, not an iteration and an objective evaluation.
        for _retry in range(12):
            bad = np.flatnonzero(~ok & (lam_i < 1e30))
            if bad.size == 0:
                break
            lam_i[bad] *= 8.0
            Hd = Hi[bad] + lam_i[bad, None, None] * scale[bad, :, None] * eye
            d[bad], ok[bad] = _masked_solve(Hd, gi[bad], free[bad])
        trial = np.clip(th + np.where(free, d, 0.0), lower, upper)
        step = trial - th
        pred_dec = -(
            np.einsum("sp,sp->s", gi, step) + 0.5 * np.einsum("sp,spq,sq->s", step, Hi, step)
        )
        ft = objective.value(trial, weights, rows=rows_of(idx), budget=budget)
        actual = fi - ft
        rho = np.where(ok & (pred_dec > 0), actual / np.where(pred_dec > 0, pred_dec, 1.0), -1.0)
        acc = ok & (actual > 0) & (rho > 1e-4)
        # A step too small to change f in floating point: the row is as good as it gets.
        stuck = ok & ~acc & (np.abs(step).max(axis=1) <= 1e-15 * (1.0 + np.abs(th).max(axis=1)))
        lam_i = np.where(acc & (rho > 0.75), lam_i / 5.0, lam_i)
        lam_i = np.where(acc & (rho < 0.25), lam_i * 2.0, lam_i)
        lam_i = np.where(~acc, lam_i * 8.0, lam_i)
        lam[idx] = np.clip(lam_i, 1e-12, 1e30)
        give_up = stuck | (lam[idx] >= 1e30)
        # No step changes f any more in floating point: converged as far as precision allows
        # when the decrement is within 100x the tolerance (it cannot shrink further).
        converged[idx[stuck & (dec[idx] <= 100 * rtol * fi + atol[idx])]] = True
        active[idx[give_up]] = False
        if acc.any():
            a_idx = idx[acc]
            fa, ga, Ha, Da = objective._derivatives(
                trial[acc], weights, rows=rows_of(a_idx), budget=budget
            )
            theta[a_idx], f[a_idx], g[a_idx], H[a_idx], dscale[a_idx] = trial[acc], fa, ga, Ha, Da
            certify(a_idx)
    free = _free_mask(theta, g, lower, upper)
    at_bound = ~free | (theta <= lower) | (theta >= upper)
    return BatchResult(theta, f, g, H, converged, n_iter, dec, at_bound)


def driver_chunk(n_params: int, budget: int | None = None) -> int:
    """Rows :func:`minimize_chunked` gives one :func:`minimize_batch` call: the driver's own
    per-row state (parameters, gradients, Hessians and their damped copies, a few dozen
    ``P x P`` arrays) in a quarter of ``budget``; the evaluations inside split rows and
    points further (:meth:`LSEAffineModel.plan`)."""
    per_row = 8 * (12 * n_params * n_params + 24 * n_params + 32)
    return max(1, _budget(budget) // 4 // per_row)


def minimize_chunked(
    objective: HuberObjective,
    theta0: Array,
    weights: Array,
    lower: Array,
    upper: Array,
    *,
    chunk: int | None = None,
    budget: int | None = None,
    **kwargs: float,
) -> BatchResult:
    """:func:`minimize_batch` over chunks of rows, to bound memory: ``chunk`` rows at a time
    (default: as many as :func:`driver_chunk` allows within ``budget``). A row's result does
    not depend on the chunk it runs in."""
    if chunk is None:
        chunk = driver_chunk(theta0.shape[1], budget)
    parts = []
    for start in range(0, theta0.shape[0], chunk):
        sl = slice(start, start + chunk)
        wt = weights if weights.ndim == 1 else weights[sl]
        parts.append(
            minimize_batch(objective, theta0[sl], wt, lower, upper, budget=budget, **kwargs)
        )
    if len(parts) == 1:
        return parts[0]
    return BatchResult(
        *(
            np.concatenate([getattr(r, name) for r in parts])
            for name in BatchResult.__dataclass_fields__
        )
    )
