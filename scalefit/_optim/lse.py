"""The log-sum-exp-affine model (Chinchilla, Kaplan with or without an irreducible term) and
its fused, blocked Huber objective and derivatives."""

from __future__ import annotations

import threading

import numpy as np

from ._blocks import (
    _BLOCK_CELLS,
    _ROW_CAP,
    _ROW_TARGET,
    Array,
    Index,
    Mask,
    _blocks,
    _budget,
    _gram,
    _matmul,
    _round_rows,
    _row_chunks,
    _weights_block,
    first_of_equal_rows,
    huber_cells,
)

_Consts = tuple[list[Array], list[Array]]
"""A block's constant matrices (R1, R2) of the fused derivatives: one per term, one per pair
of terms (see :meth:`LSEAffineModel._consts`)."""
_Workspace = tuple[Array, Mask, Array, Array]
"""One thread's scratch arrays: (float slots, mask, left factor 1, left factor 2)."""


def _constant_term(J: Array, c: Array) -> int | None:
    """A term whose exponent is the same affine function at every point (an irreducible
    term ``e``), if any: its exponential is one number per row, not per point."""
    if J.shape[1] < 2 or J.shape[0] == 0:
        return None
    for k in range(J.shape[1]):
        if np.all(J[:, k, :] == J[:1, k, :]) and np.all(c[:, k] == c[0, k]):
            return k
    return None


def _term_coefficients(J: Array) -> tuple[int, ...]:
    """Each term's log-coefficient, where it has one: the parameter that enters that term
    alone, with slope 1 at every point (``a``, ``b`` and ``e`` of Chinchilla's ``LSE(a -
    alpha log N, b - beta log D, e)``), in term order."""
    out = []
    for k in range(J.shape[1]):
        others = np.delete(J, k, axis=1)
        for j in range(J.shape[2]):
            if np.all(J[:, k, j] == 1.0) and not np.any(others[:, :, j]):
                out.append(j)
                break
    return tuple(out)


class LSEAffineModel:
    """``log L_hat_i = LSE_k(z_ik)`` with ``z_ik = J[i, k, :] @ theta + c[i, k]``.

    Affine-in-theta terms inside a log-sum-exp cover the Chinchilla law
    (``LSE(a - alpha log N, b - beta log D, e)``) and Kaplan's single-variable laws with or
    without an irreducible term; the Hessian of the prediction is then analytic:
    ``J_i^T (diag(s_i) - s_i s_i^T) J_i`` with ``s_i`` the softmax of ``z_i``.

    The objective and its derivatives are sums over points, evaluated block by block
    (blocks of rows times blocks of points) within a memory budget (``MEMORY_BUDGET``):
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
        self._c_zero = [not ck.any() for ck in self._ck]
        self._const = _constant_term(self.J, self.c)
        self.term_coefficients = _term_coefficients(self.J)
        """Each term's log-coefficient (:func:`_term_coefficients`): at the lower bound of
        its box the term is negligible, which gives the law without that term."""
        # Only the upper triangle of symmetric matrices is computed.
        self._tri = np.triu_indices(p)
        self._pairs = [(a, b) for a in range(k) for b in range(a, k)]
        self._sparsity(k)
        t = len(self._tri[0])
        # Bytes per point of the constant matrices (R1, R2) of one block, and per
        # (row, point) of the scratch arrays of `_block_derivatives` (float slots + a mask).
        self._const_bytes = 8 * (k * (p + t) + len(self._pairs) * t)
        self._slots = k + 9
        self._cell_bytes = 8 * (self._slots + k + 2 * len(self._pairs)) + 1
        self._consts_cache: dict[tuple[int, int], _Consts] = {}
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

    def _sparsity(self, k: int) -> None:
        """Which columns of the fused derivatives' constant matrices can be nonzero, from the
        parameters each term depends on (Chinchilla's three terms depend on two, two and
        one of five): the products skip the rest (a fifth of the work) and a pair of terms
        on disjoint parameters adds nothing to the damping scale's diagonal."""
        iu, ju = self._tri
        nz = [np.any(self.J[:, j, :] != 0, axis=0) for j in range(k)]
        self._term_params = [np.flatnonzero(z) for z in nz]  # the parameters of each term
        self._cols1 = [np.flatnonzero(np.concatenate([z, z[iu] & z[ju]])) for z in nz]
        self._cols2 = [
            np.flatnonzero((nz[i][iu] & nz[j][ju]) | (nz[j][iu] & nz[i][ju]))
            for i, j in self._pairs
        ]
        # The damping scale is the IRLS matrix of each term alone, summed: it keeps the
        # entries between parameters of one term (Chinchilla's (a, alpha) and (b, beta)),
        # which move together, the more so the further the data sit from log N = 0, and a
        # diagonal scale alone makes the steps zig-zag; a sum of Gram matrices, it is
        # positive semi-definite even where terms share a parameter (overtraining's eta).
        self._scaling_pairs = [
            q for q, (i, j) in enumerate(self._pairs) if i == j and self._cols2[q].size
        ]

    def _consts(self, a: int, b: int, keep: bool) -> _Consts:
        """Right-hand matrices of the fused derivatives for points ``a:b`` (see
        :meth:`huber_derivatives`), one per term (``[J_k | J_k J_k^T]``), per pair of terms
        (``sym(J_k J_l^T)``), each with its possibly nonzero
        columns only (:meth:`_sparsity`): every sum over points becomes a matrix product
        with an ``(S, m)`` left factor, so no ``(S, n, P)`` array is ever built."""
        hit = self._consts_cache.get((a, b))
        if hit is not None:
            return hit
        iu, ju = self._tri
        Jt = self.J[a:b].transpose(1, 0, 2)  # (K, m, P)
        R1 = [
            np.ascontiguousarray(np.concatenate([J, J[:, iu] * J[:, ju]], axis=1)[:, cols])
            for J, cols in zip(Jt, self._cols1, strict=True)
        ]
        outer = [
            Jt[i][:, iu] * Jt[j][:, ju] + (Jt[j][:, iu] * Jt[i][:, ju] if i != j else 0.0)
            for i, j in self._pairs
        ]
        R2 = [np.ascontiguousarray(o[:, c]) for o, c in zip(outer, self._cols2, strict=True)]
        out = (R1, R2)
        if keep:
            self._consts_cache[(a, b)] = out
        return out

    def _workspace(self, rows: int, nb: int) -> _Workspace:
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

    def _block_exp(
        self, th: Array, a: int, b: int, slots: list[Array]
    ) -> tuple[Array, list[Array], Array]:
        """Shift, exponentials and their sum for points ``a:b`` of rows ``th``:
        ``log L_hat = shift + log(tot)`` and the softmax is ``e_k / tot``.

        With a constant term (:func:`_constant_term`) the shift is one number per row (the
        largest exponent of the row's block) and that term's exponential one number per
        row: one ``exp`` per point fewer, the dominant cost of an evaluation. Otherwise, or
        if a row's exponents spread so far that a point's sum would underflow, the shift is
        the largest exponent of each point, as in :meth:`predict`."""
        k = len(self._Jk)
        if k > 1 and self._const is not None:
            out = self._block_exp_const(th, a, b, slots, self._const)
            if out is not None:
                return out
        z = slots[:k]
        for j in range(k):
            np.matmul(th, self._Jk[j][:, a:b], out=z[j])
            if not self._c_zero[j]:
                np.add(z[j], self._ck[j][a:b], out=z[j])
        if k == 1:
            return z[0], z, z[0]
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
        return m, z, tot

    def _block_exp_const(
        self, th: Array, a: int, b: int, slots: list[Array], c: int
    ) -> tuple[Array, list[Array], Array] | None:
        """:meth:`_block_exp` with the constant term ``c``; ``None`` where a sum would
        underflow."""
        k = len(self._Jk)
        var = [j for j in range(k) if j != c]
        zc = th @ self._Jk[c][:, 0]
        if not self._c_zero[c]:
            zc = zc + self._ck[c][0]
        shift = zc.copy()
        e: list[Array] = [slots[0]] * k
        for i, j in enumerate(var):
            e[j] = slots[i]
            np.matmul(th, self._Jk[j][:, a:b], out=e[j])
            if not self._c_zero[j]:
                np.add(e[j], self._ck[j][a:b], out=e[j])
            np.maximum(shift, e[j].max(axis=1), out=shift)
        shift = shift[:, None]
        for j in var:
            np.subtract(e[j], shift, out=e[j])
            np.exp(e[j], out=e[j])
        e[c] = np.exp(zc[:, None] - shift)
        tot = slots[k + 1]
        np.add(e[var[0]], e[c], out=tot)
        for j in var[1:]:
            tot += e[j]
        if not tot.min() > 1e-280:
            return None
        return shift, e, tot

    def _block_residual(
        self, th: Array, y: Array, a: int, b: int, slots: list[Array], soft: bool
    ) -> tuple[Array, list[Array]]:
        """Residuals ``log L_hat - y`` of points ``a:b`` (in ``slots[k]``) and the terms'
        exponentials, normalised to the softmax when ``soft``."""
        k = len(self._Jk)
        shift, e, tot = self._block_exp(th, a, b, slots)
        r = slots[k]
        if k == 1:
            np.subtract(tot, y[a:b], out=r)
            return r, e
        if soft:
            inv = slots[k + 2]
            np.divide(1.0, tot, out=inv)
            for j in range(k):
                if e[j].shape == inv.shape:
                    np.multiply(e[j], inv, out=e[j])
                else:  # the constant term's one number per row
                    e[j] = np.multiply(e[j], inv, out=slots[k + 8])
        np.log(tot, out=tot)
        np.add(shift, tot, out=r)
        np.subtract(r, y[a:b], out=r)
        return r, e

    def huber_value(
        self,
        theta: Array,
        y: Array,
        delta: float,
        w: Array,
        *,
        rows: Index | None = None,
        budget: int | None = None,
    ) -> Array:
        """Huber objective ``(S,)`` only, block by block within ``budget`` (weights ``w`` of
        rows ``rows`` when given, else ``w`` as in :meth:`huber_derivatives`). The same
        operations as the objective of :meth:`huber_derivatives`, so the same bits."""
        s = theta.shape[0]
        n, k, _ = self.J.shape
        nb, rmax, _keep = self.plan(budget)
        flat, _, _, _ = self._workspace(rmax, nb)
        f = np.zeros(s)
        for a, b in _blocks(n, nb):
            m = b - a
            for r0, r1 in _row_chunks(s, rmax):
                rs = r1 - r0
                slots = [flat[i, : rs * m].reshape(rs, m) for i in range(self._slots)]
                r, _ = self._block_residual(theta[r0:r1], y, a, b, slots, soft=False)
                h = huber_cells(r, slots[k + 3], slots[k + 4], slots[k + 5], delta)
                h *= _weights_block(w, rows, r0, r1, a, b)
                f[r0:r1] += h.sum(axis=1)
        return f

    def screen_value(
        self, theta: Array, y: Array, delta: float, budget: int | None = None
    ) -> Array | None:
        """Huber objective ``(S,)`` (unit weights) of many starts, to rank them: each term's
        exponentials are computed once per distinct value of the parameters it depends on
        (Hoffmann et al.'s 4500 starts take 30, 30 and 5) and summed per start, so that a
        cell costs one ``log`` and no ``exp``. Equal to :meth:`huber_value` to rounding, not
        bit for bit; ``None`` when the starts share too few values for this to pay, or an
        exponent is beyond +-700 (the sum would overflow or underflow unshifted)."""
        s = theta.shape[0]
        n, k, _ = self.J.shape
        distinct = [first_of_equal_rows(theta[:, c]) for c in self._term_params]
        n_distinct = sum(first.size for first, _ in distinct)
        if n_distinct > s // 2:
            return None
        # Points per block: the distinct exponentials in a quarter of the budget, and at most
        # a block's worth of cells per row chunk.
        m = max(1, min(n, _budget(budget) // 4 // (8 * n_distinct)))
        rows = max(1, min(s, _BLOCK_CELLS // min(n, m)))
        tot, tmp, h, c = (np.empty((rows, min(n, m))) for _ in range(4))
        f = np.zeros(s)
        for a, b in _blocks(n, m):
            ex = []
            for j, (first, _) in enumerate(distinct):
                z = theta[first] @ self._Jk[j][:, a:b] + self._ck[j][a:b]
                if not np.abs(z).max() <= 700.0:
                    return None
                ex.append(np.exp(z))
            for r0, r1 in _row_chunks(s, rows):
                t, u = tot[: r1 - r0, : b - a], tmp[: r1 - r0, : b - a]
                np.take(ex[0], distinct[0][1][r0:r1], axis=0, out=t)
                for j in range(1, k):
                    np.take(ex[j], distinct[j][1][r0:r1], axis=0, out=u)
                    t += u
                np.log(t, out=t)
                t -= y[a:b]
                f[r0:r1] += huber_cells(
                    t, u, h[: r1 - r0, : b - a], c[: r1 - r0, : b - a], delta
                ).sum(axis=1)
        return f

    def huber_derivatives(
        self,
        theta: Array,
        y: Array,
        delta: float,
        w: Array,
        *,
        full_scaling: bool = False,
        rows: Index | None = None,
        budget: int | None = None,
    ) -> tuple[Array, Array, Array, Array]:
        """Huber objective ``(S,)``, gradient ``(S, P)``, exact Hessian ``(S, P, P)`` and the
        IRLS scaling matrix ``(S, P, P)`` (unless ``full_scaling``, the sum of each term's
        own: see :meth:`_sparsity`), fused.

        With ``G_i = sum_k s_ik J_ik`` every sum over points is a sum over terms:
        ``sum_i c_i G_i = sum_k (c s_k) @ J_k`` and
        ``sum_i u_i G_i G_i^T = sum_{k<=l} (u s_k s_l) @ sym(J_k J_l^T)``, each one BLAS
        product of an ``(S, m n)`` stack of elementwise products by a constant matrix, summed
        over blocks of points; rows are evaluated in blocks too (:meth:`plan`). Weights ``w``
        are ``(n,)`` or ``(1, n)`` (shared), or one row per theta row, or (with ``rows``)
        the rows ``rows`` of a larger ``(R, n)`` array, never copied whole.
        """
        s = theta.shape[0]
        n, _, p = self.J.shape
        t = len(self._tri[0])
        nb, rmax, keep = self.plan(budget)
        ws = self._workspace(rmax, nb)
        f = np.zeros(s)
        g1 = np.zeros((s, p + t))
        h2 = np.zeros((s, t))
        d2 = np.zeros((s, t))
        for a, b in _blocks(n, nb):
            consts = self._consts(a, b, keep)
            for r0, r1 in _row_chunks(s, rmax):
                wb = _weights_block(w, rows, r0, r1, a, b)
                parts = self._block_derivatives(
                    theta[r0:r1], y, delta, wb, a, b, ws, consts, full_scaling
                )
                for acc, part in zip((f, g1, h2, d2), parts, strict=True):
                    acc[r0:r1] += part
        g = g1[:, :p]
        H = self._symmetric(g1[:, p:] + h2)
        D = self._symmetric(d2)
        return f, g, H, D

    def _block_derivatives(
        self,
        th: Array,
        y: Array,
        delta: float,
        wb: Array,
        a: int,
        b: int,
        ws: _Workspace,
        consts: _Consts,
        full_scaling: bool,
    ) -> tuple[Array, Array, Array, Array]:
        """One block's share of :meth:`huber_derivatives`: (f, [g | sum w psi s_k J_k J_k^T]
        upper triangle, G G^T part of the Hessian, damping scale)."""
        rs, m, k = th.shape[0], b - a, len(self._Jk)
        flat, mask, flat1, flat2 = ws
        slots = [flat[i, : rs * m].reshape(rs, m) for i in range(self._slots)]
        r, soft = self._block_residual(th, y, a, b, slots, soft=True)
        if k == 1:
            soft = [slots[k + 8]]
            soft[0].fill(1.0)
        ab, psi, u, irls = slots[k + 3], slots[k + 6], slots[k + 7], slots[k + 5]
        h = huber_cells(r, ab, slots[k + 4], irls, delta)
        np.multiply(h, wb, out=h)
        f = h.sum(axis=1)
        np.clip(r, -delta, delta, out=psi)
        np.multiply(wb, psi, out=psi)  # w psi(r)
        left1 = flat1[: rs * k * m].reshape(k, rs, m)
        for j in range(k):
            np.multiply(psi, soft[j], out=left1[j])
        # u = w psi'(r) - w psi(r): weight of G G^T in the exact Hessian;
        # irls = w psi(r) / r: weight in the Gauss-Newton majoriser (damping scale).
        inside = mask[: rs * m].reshape(rs, m)
        np.less_equal(ab, delta, out=inside)
        np.multiply(wb, inside, out=u)
        u -= psi
        np.maximum(ab, delta, out=irls)
        np.divide(delta, irls, out=irls)
        np.multiply(wb, irls, out=irls)
        R1, R2 = consts
        g1 = np.zeros((rs, self.n_params + len(self._tri[0])))
        for j in range(k):
            g1[:, self._cols1[j]] += _matmul(left1[j], R1[j])
        return (f, g1, *self._pair_products(soft, u, irls, h, flat2, R2, full_scaling))

    def _pair_products(
        self,
        soft: list[Array],
        u: Array,
        irls: Array,
        ss: Array,
        flat2: Array,
        R2: list[Array],
        full_scaling: bool,
    ) -> tuple[Array, Array]:
        """``sum_i u_i G_i G_i^T`` (upper triangle) and the damping scale (each term's own
        ``sum_i irls_i s_ik^2 J_ik J_ik^T``, summed, or all of ``sum_i irls_i G_i G_i^T``
        with ``full_scaling``; upper triangle) of one block."""
        rs, m = u.shape
        t = len(self._tri[0])
        npair = len(self._pairs)
        scaling = range(npair) if full_scaling else self._scaling_pairs
        left = flat2[: 2 * npair * rs * m].reshape(2, npair, rs, m)
        h2 = np.zeros((rs, t))
        d2 = np.zeros((rs, t))
        for q, (i, j) in enumerate(self._pairs):
            np.multiply(soft[i], soft[j], out=ss)
            np.multiply(u, ss, out=left[0, q])
            h2[:, self._cols2[q]] += _matmul(left[0, q], R2[q])
            if q in scaling:
                np.multiply(irls, ss, out=left[1, q])
                d2[:, self._cols2[q]] += _matmul(left[1, q], R2[q])
        return h2, d2

    def _symmetric(self, upper: Array) -> Array:
        """``(S, P, P)`` symmetric matrices from their upper triangles ``(S, P(P+1)/2)``."""
        p = self.n_params
        out = np.empty((upper.shape[0], p, p))
        out[:, self._tri[0], self._tri[1]] = upper
        out[:, self._tri[1], self._tri[0]] = upper
        return out
