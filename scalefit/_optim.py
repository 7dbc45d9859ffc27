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
from collections.abc import Callable
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


class LSEAffineModel:
    """``log L_hat_i = LSE_k(z_ik)`` with ``z_ik = J[i, k, :] @ theta + c[i, k]``.

    Affine-in-theta terms inside a log-sum-exp cover the Chinchilla law
    (``LSE(a - alpha log N, b - beta log D, e)``) and Kaplan's single-variable laws with or
    without an irreducible term; the Hessian of the prediction is then analytic:
    ``J_i^T (diag(s_i) - s_i s_i^T) J_i`` with ``s_i`` the softmax of ``z_i``.
    """

    def __init__(self, J: Array, c: Array | None = None) -> None:
        self.J = np.ascontiguousarray(J, dtype=float)  # (n, K, P)
        n, k, p = self.J.shape
        self.c = np.zeros((n, k)) if c is None else np.asarray(c, dtype=float)
        self.n_params = p
        self._JJ = np.einsum("nkp,nkq->nkpq", self.J, self.J).reshape(n * k, p * p)
        self._Jk = [np.ascontiguousarray(self.J[:, j, :].T) for j in range(k)]
        self._ck = [np.ascontiguousarray(self.c[:, j]) for j in range(k)]
        # Right-hand matrices of the fused derivatives (see `huber_derivatives`): every sum
        # over points becomes one matrix product with a stacked ``(S, m * n)`` left factor,
        # so no ``(S, n, P)`` array is ever built.
        # Only the upper triangle of symmetric matrices is computed.
        self._tri = np.triu_indices(p)
        iu, ju = self._tri
        Jt = self.J.transpose(1, 0, 2)  # (K, n, P)
        self._R1 = np.ascontiguousarray(
            np.concatenate([Jt, Jt[:, :, iu] * Jt[:, :, ju]], axis=2).reshape(k * n, -1)
        )
        self._pairs = [(a, b) for a in range(k) for b in range(a, k)]
        outer = [
            Jt[a][:, iu] * Jt[b][:, ju] + (Jt[b][:, iu] * Jt[a][:, ju] if a != b else 0.0)
            for a, b in self._pairs
        ]
        self._R2 = np.ascontiguousarray(np.concatenate(outer, axis=0))
        self._R2diag = np.ascontiguousarray(self._R2[:, iu == ju])
        self._scratch = threading.local()

    def __getstate__(self) -> dict:
        # Scratch buffers belong to one thread of one process: never ship them.
        return {k: v for k, v in self.__dict__.items() if k != "_scratch"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._scratch = threading.local()

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

    def huber_derivatives(
        self, theta: Array, y: Array, delta: float, w: Array, *, full_scaling: bool = False
    ) -> tuple[Array, Array, Array, Array]:
        """Huber objective ``(S,)``, gradient ``(S, P)``, exact Hessian ``(S, P, P)`` and the
        IRLS scaling matrix (its diagonal ``(S, P)`` unless ``full_scaling``), fused.

        With ``G_i = sum_k s_ik J_ik`` every sum over points is a sum over terms:
        ``sum_i c_i G_i = sum_k (c s_k) @ J_k`` and
        ``sum_i u_i G_i G_i^T = sum_{k<=l} (u s_k s_l) @ sym(J_k J_l^T)``, each one BLAS
        product of an ``(S, m n)`` stack of elementwise products by a constant matrix.
        """
        s = theta.shape[0]
        n, k, p = self.J.shape
        z = self._z(theta)
        if k == 1:
            pred, soft = z[0], [np.ones_like(z[0])]
        else:
            m = np.maximum.reduce(z)
            e = [np.exp(zk - m) for zk in z]
            tot = e[0] + e[1]
            for ek in e[2:]:
                tot += ek
            pred = m + np.log(tot)
            inv = 1.0 / tot
            soft = [ek * inv for ek in e]
        r = pred - y
        a = np.abs(r)
        inside = a <= delta
        h = np.where(inside, 0.5 * r * r, delta * (a - 0.5 * delta))
        psi = np.clip(r, -delta, delta)
        f = (h * w).sum(axis=1)
        wpsi = w * psi
        left1, left2 = self._buffers(s)
        for j in range(k):
            np.multiply(wpsi, soft[j], out=left1[:, j, :])
        gh = _matmul(left1.reshape(s, k * n), self._R1)
        g = gh[:, :p]
        # u = w psi'(r) - w psi(r): weight of G G^T in the exact Hessian;
        # irls = w psi(r) / r: weight in the Gauss-Newton majoriser (damping scale).
        u = np.where(inside, w, 0.0) - wpsi
        irls = w * np.where(inside, 1.0, delta / np.maximum(a, delta))
        npair = len(self._pairs)
        for q, (i, j) in enumerate(self._pairs):
            ss = soft[i] * soft[j] if i != j else soft[i] * soft[i]
            np.multiply(u, ss, out=left2[0, :, q, :])
            np.multiply(irls, ss, out=left2[1, :, q, :])
        H = self._symmetric(gh[:, p:] + _matmul(left2[0].reshape(s, npair * n), self._R2))
        if full_scaling:
            D = self._symmetric(_matmul(left2[1].reshape(s, npair * n), self._R2))
        else:
            D = _matmul(left2[1].reshape(s, npair * n), self._R2diag)
        return f, g, H, D

    def _buffers(self, s: int) -> tuple[Array, Array]:
        """Scratch arrays for :meth:`huber_derivatives`, kept between calls: allocating a
        few MB per call costs more in page faults than the arithmetic that fills them. One
        set per thread, so that threads sharing a model (bootstrap jobs on a thread pool) do
        not overwrite each other's."""
        n, k, _ = self.J.shape
        bufs = getattr(self._scratch, "bufs", None)
        if bufs is None or bufs[0].shape[0] < s:
            bufs = self._scratch.bufs = (np.empty((s, k, n)), np.empty((2, s, len(self._pairs), n)))
        b1, b2 = bufs
        return b1[:s], b2[:, :s]

    def _symmetric(self, upper: Array) -> Array:
        """``(S, P, P)`` symmetric matrices from their upper triangles ``(S, P(P+1)/2)``."""
        p = self.n_params
        out = np.empty((upper.shape[0], p, p))
        out[:, self._tri[0], self._tri[1]] = upper
        out[:, self._tri[1], self._tri[0]] = upper
        return out


class GenericModel:
    """A model given by ``predict_grad(theta) -> (pred, grad)``; curvature by central
    differences of the gradient (used for the non-affine joint Kaplan law)."""

    def __init__(self, n_params: int, predict_grad: Callable[[Array], tuple[Array, Array]]) -> None:
        self.n_params = n_params
        self._pg = predict_grad

    def predict(self, theta: Array) -> Array:
        return self._pg(theta)[0]

    def predict_grad(self, theta: Array) -> tuple[Array, Array, None]:
        pred, G = self._pg(theta)
        return pred, G, None

    def curvature(self, theta: Array, coef: Array, G: Array, soft: None) -> Array:
        s, p = theta.shape
        out = np.empty((s, p, p))
        for j in range(p):
            h = 1e-6 * np.maximum(1.0, np.abs(theta[:, j]))
            tp, tm = theta.copy(), theta.copy()
            tp[:, j] += h
            tm[:, j] -= h
            gp = _wsum(coef, self._pg(tp)[1])
            gm = _wsum(coef, self._pg(tm)[1])
            out[:, j, :] = (gp - gm) / (2 * h[:, None])
        return 0.5 * (out + out.transpose(0, 2, 1))


class HuberObjective:
    """The summed Huber objective of a model against observed ``log L``."""

    def __init__(self, model: LSEAffineModel | GenericModel, log_loss: Array, delta: float):
        self.model = model
        self.y = np.asarray(log_loss, dtype=float)
        self.delta = float(delta)

    def value(self, theta: Array, w: Array) -> Array:
        a = np.abs(self.model.predict(theta) - self.y)
        d = self.delta
        h = np.where(a <= d, 0.5 * a * a, d * (a - 0.5 * d))
        return (h * w).sum(axis=1)

    def value_grad_hess(self, theta: Array, w: Array) -> tuple[Array, Array, Array, Array]:
        """Objective ``(S,)``, gradient ``(S, P)``, exact Hessian and a positive
        semi-definite scaling matrix (IRLS weights ``psi(r)/r``) for the damping."""
        return self._derivatives(theta, w, full_scaling=True)

    def _derivatives(
        self, theta: Array, w: Array, *, full_scaling: bool = False
    ) -> tuple[Array, Array, Array, Array]:
        """As :meth:`value_grad_hess`; the scaling matrix only as its diagonal ``(S, P)``
        unless ``full_scaling`` (the driver needs no more)."""
        w = np.atleast_2d(w)
        if isinstance(self.model, LSEAffineModel):
            return self.model.huber_derivatives(
                theta, self.y, self.delta, w, full_scaling=full_scaling
            )
        pred, G, soft = self.model.predict_grad(theta)
        r = pred - self.y
        h, psi, dpsi = huber(r, self.delta)
        f = (w * h).sum(axis=1)
        wpsi = w * psi
        g = _wsum(wpsi, G)
        H = _gram(w * dpsi, G) + self.model.curvature(theta, wpsi, G, soft)
        irls = w * np.where(dpsi > 0, 1.0, self.delta / np.maximum(np.abs(r), self.delta))
        if full_scaling:
            return f, g, H, _gram(irls, G)
        return f, g, H, _wsum(irls, G * G)


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
) -> BatchResult:
    """Minimise ``objective`` from every row of ``theta0`` (each with its weights row).

    Damped Newton (Levenberg-Marquardt with Marquardt scaling from IRLS weights), steps
    projected onto the box ``[lower, upper]``, variables pinned at a bound by the gradient
    excluded. A row has converged when the Newton decrement ``g^T H^-1 g / 2`` on its free
    variables is at most ``rtol * f`` (plus 1e-24 per unit of weight): the further decrease a
    Newton step can bring is then negligible relative to the objective itself, whatever its
    scale. ``weights`` of shape ``(n,)`` are shared by every row (never copied per row).
    """
    theta = np.clip(np.array(theta0, dtype=float), lower, upper)
    s, p = theta.shape
    shared = weights.ndim == 1

    def rows_w(rows: Array) -> Array:
        return weights if shared else weights[rows]

    f, g, H, dscale = objective._derivatives(theta, rows_w(slice(None)))
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
        ft = objective.value(trial, rows_w(idx))
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
            fa, ga, Ha, Da = objective._derivatives(trial[acc], rows_w(a_idx))
            theta[a_idx], f[a_idx], g[a_idx], H[a_idx], dscale[a_idx] = trial[acc], fa, ga, Ha, Da
            certify(a_idx)
    free = _free_mask(theta, g, lower, upper)
    at_bound = ~free | (theta <= lower) | (theta >= upper)
    return BatchResult(theta, f, g, H, converged, n_iter, dec, at_bound)


def minimize_chunked(
    objective: HuberObjective,
    theta0: Array,
    weights: Array,
    lower: Array,
    upper: Array,
    *,
    chunk: int = 512,
    **kwargs: float,
) -> BatchResult:
    """:func:`minimize_batch` over chunks of rows, to bound memory (``S x n x P`` arrays)."""
    parts = []
    for start in range(0, theta0.shape[0], chunk):
        sl = slice(start, start + chunk)
        wt = weights if weights.ndim == 1 else weights[sl]
        parts.append(minimize_batch(objective, theta0[sl], wt, lower, upper, **kwargs))
    if len(parts) == 1:
        return parts[0]
    return BatchResult(
        *(
            np.concatenate([getattr(r, name) for r in parts])
            for name in BatchResult.__dataclass_fields__
        )
    )
