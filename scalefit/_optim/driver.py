"""The batched damped-Newton (Levenberg-Marquardt) driver: many starts or bootstrap resamples
minimised at once, each certified by its Newton decrement."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ._blocks import _BLOCK_CELLS, Array, Index, Mask, _budget
from .generic import HuberObjective


@dataclass(frozen=True)
class BatchResult:
    """Where each batch row ended: parameters, objective, gradient, Hessian, convergence."""

    theta: Array
    objective: Array
    grad: Array
    hess: Array
    converged: Mask
    n_iter: NDArray[np.int_]
    decrement: Array
    at_bound: Mask  # (S, P)


def _free_mask(theta: Array, g: Array, lo: Array, hi: Array) -> Mask:
    """Variables not pinned at a bound by a gradient pointing out of the box."""
    at_lo = (theta <= lo + 1e-12) & (g > 0)
    at_hi = (theta >= hi - 1e-12) & (g < 0)
    return ~(at_lo | at_hi)


_LAPACK_ROWS = 64
"""Batches of at most this many rows are solved by LAPACK when every matrix is positive
definite: ~35 us instead of ~125 us for one to a few dozen 5x5 matrices (the continued
starts, the polish); from a few hundred rows the per-matrix calls cost more than
:func:`_cholesky_solve`'s elementwise operations (measured: 900 rows 500 vs 245 us)."""


def _pivot_floor(diag: Array) -> Array:
    """The least a Cholesky pivot may be and count as positive: ``1e-14`` of its own diagonal
    entry (its rounding error is relative to that entry), whatever the other variables'
    scale. Against the largest entry, a variable of tiny but well-determined curvature
    (``e = log E``, ``E -> 0``) was taken for singular and damped to ~1/100 of Newton's
    steps. One test for both of :func:`_cholesky_solve`'s paths."""
    return 1e-14 * np.abs(diag) + 1e-300


def _lapack_solve(H: Array, g: Array) -> Array | None:
    """``H d = -g`` by LAPACK for every row, or None unless every ``H`` is positive definite
    by :func:`_pivot_floor`'s test (LAPACK refuses the whole stack when one matrix is not
    positive definite)."""
    try:
        pivots = np.diagonal(np.linalg.cholesky(H), axis1=1, axis2=2) ** 2
    except np.linalg.LinAlgError:
        return None
    if not np.all(pivots > _pivot_floor(np.diagonal(H, axis1=1, axis2=2))):
        return None
    out: Array = np.linalg.solve(H, -g[:, :, None])[:, :, 0].astype(np.float64, copy=False)
    return out


def _cholesky_solve(H: Array, g: Array) -> tuple[Array, Mask]:
    """Solve ``H d = -g`` for every batch row by a Cholesky factorisation written out over
    the (at most a handful of) parameters, vectorised over rows; also says which ``H`` were
    positive definite (every pivot above ``1e-14`` of its own diagonal entry; rows that were
    not get ``d = 0``). A small batch whose matrices all are goes to LAPACK
    (:data:`_LAPACK_ROWS`): the same solution to rounding.

    Each matrix entry is held as one contiguous ``(S,)`` array: numpy reductions over a
    trailing axis of length 1-5 cost several times more than these elementwise operations."""
    s, p = g.shape
    if s <= _LAPACK_ROWS:
        fast = _lapack_solve(H, g)
        if fast is not None:
            return fast, np.ones(s, dtype=bool)
    Ht = np.ascontiguousarray(H.transpose(1, 2, 0))  # (P, P, S)
    ok = np.ones(s, dtype=bool)
    tiny = _pivot_floor(np.diagonal(Ht)).T  # (P, S)
    L: list[list[Array]] = [[] for _ in range(p)]  # L[i][j], j <= i
    for j in range(p):
        v = Ht[j, j].copy()
        for m in range(j):
            v -= L[j][m] * L[j][m]
        good = v > tiny[j]
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


def _masked_solve(H: Array, g: Array, free: Mask) -> tuple[Array, Mask]:
    """Solve ``H d = -g`` on the free variables; returns ``d`` and whether ``H`` was PD there."""
    if free.all():  # the usual case, and the same numbers: nothing to mask
        return _cholesky_solve(H, g)
    p = g.shape[1]
    eye = np.eye(p)[None]
    fm = free[:, :, None] & free[:, None, :]
    scale = np.abs(np.diagonal(H, axis1=1, axis2=2)).max(axis=1)[:, None, None] + 1e-300
    Hm = np.where(fm, H, 0.0) + np.where(free[:, :, None], 0.0, eye * scale)
    d, ok = _cholesky_solve(Hm, np.where(free, g, 0.0))
    return np.where(free, d, 0.0), ok


COUPLING = 0.97
"""How much of the off-diagonal of each term's IRLS matrix the damping keeps (see
:func:`_damping_matrix`); 0 is Marquardt's diagonal scaling."""


def _damping_matrix(D: Array, coupling: float = COUPLING) -> Array:
    """The matrix the damping adds to the Hessian, from the IRLS scaling ``D`` (the curvature
    of the Huber loss's quadratic majoriser; each term's own, summed, see
    :meth:`LSEAffineModel._sparsity`): the diagonal, raised to at least ``1e-12`` of its
    largest entry, and the off-diagonal entries shrunk by ``coupling``, which keeps
    the matrix positive definite where parameters of a term are collinear on the data. A
    diagonal ``D`` gives Marquardt's diagonal scaling."""
    p = D.shape[1]
    diag = np.diagonal(D, axis1=1, axis2=2)
    scale = np.maximum(diag, 1e-12 * diag.max(axis=1, keepdims=True) + 1e-300)
    M = D * coupling
    M[:, np.arange(p), np.arange(p)] = scale
    return M


# A trial point's objective alone costs about 40% of its objective, gradient and Hessian. When
# most trial steps are accepted (far more than this share), the derivatives at every trial
# point are computed at once instead of the objective first and the derivatives of the
# accepted ones after: one pass over the points instead of two. Both give the same numbers.
_FUSE_ACCEPTED = 0.6


class BatchRun:
    """A minimisation of many rows at once that can be resumed: every row's point,
    objective, gradient, Hessian, damping scale and damping, and which rows are still
    running. :func:`minimize_batch` is one :meth:`advance`; a caller that judges rows
    between rounds (the multi-start search) advances it in rounds and stops (:meth:`stop`)
    the rows it gives up, so that the others resume with their damping, not from scratch."""

    def __init__(
        self,
        objective: HuberObjective,
        theta: Array,
        weights: Array,
        lower: Array,
        upper: Array,
        rtol: float,
        budget: int | None,
        coupling: float = COUPLING,
    ) -> None:
        self.obj, self.w, self.lower, self.upper = objective, weights, lower, upper
        self.rtol, self.budget, self.coupling = rtol, budget, coupling
        self.shared = weights.ndim == 1
        s, p = theta.shape
        self.theta = theta
        self.f, self.g, self.H, self.D = objective._derivatives(theta, weights, budget=budget)
        self.lam = np.full(s, 1.0)
        self.converged = np.zeros(s, dtype=bool)
        self.n_iter = np.zeros(s, dtype=int)
        self.dec = np.full(s, np.inf)
        self.exact = np.ones(s, dtype=bool)  # dec exact (else a lower bound, see certify)
        # Objectives at the floating-point floor (noise-free data) count as converged.
        self.atol = 1e-24 * (np.full(s, weights.sum()) if self.shared else weights.sum(axis=1))
        self.active = np.ones(s, dtype=bool)
        self.eye = np.eye(p)[None]
        self.fuse = True
        self.certify(np.arange(s))

    def advance(self, max_iter: int) -> None:
        """Up to ``max_iter`` more iterations of the running rows."""
        for _ in range(max_iter):
            idx = np.flatnonzero(self.active)
            if idx.size == 0:
                break
            self.iterate(idx)

    def stop(self, rows: Index) -> None:
        """Stop running ``rows`` (left as they are, not converged unless they were)."""
        self.active[rows] = False

    def result(self) -> BatchResult:
        """Where each row is now (with the exact decrement of rows whose certificate kept
        only a bound, see :meth:`certify`)."""
        rows = np.flatnonzero(~self.exact)
        if rows.size:
            tol = self.rtol * self.f[rows] + self.atol[rows]
            free, gain, flat = self.left_out(rows, tol)
            self.dec[rows] = self._decrement(rows, free & ~flat, gain, flat)[0]
            self.exact[rows] = True
        free = _free_mask(self.theta, self.g, self.lower, self.upper)
        at_bound = ~free | (self.theta <= self.lower) | (self.theta >= self.upper)
        return BatchResult(
            self.theta, self.f, self.g, self.H, self.converged, self.n_iter, self.dec, at_bound
        )

    def rows_of(self, rows: Index) -> Index | None:
        return None if self.shared else rows

    def certify(self, rows: Index) -> None:
        """The undamped Newton decrement on the free variables; computed once per point
        (a rejected step leaves it unchanged). A row is certified when the Hessian there is
        positive definite and the decrement within ``rtol * f`` (plus ``atol``).

        A direction with next to no curvature (a term driven to zero, e.g. A -> 0 with
        alpha at its bound) would make the Hessian singular: it is left out of the solve
        only when the decrease it alone can still bring is itself within the tolerance
        (:meth:`left_out`), and that decrease is added to the decrement. On a slope (``E ->
        0``: along ``e = log E`` the gradient and the curvature both vanish like ``E``, but
        not their ratio) the row is therefore not certified: it runs on until the parameter
        converges or reaches the bound of the box, where :func:`_free_mask` pins it."""
        tol = self.rtol * self.f[rows] + self.atol[rows]
        free, gain, flat = self.left_out(rows, tol)
        solved = free & ~flat
        # Each solved variable's own decrement g_j^2 / (2 H_jj) is at most the whole
        # decrement (and H_jj <= 0 means H is not positive definite: infinite). Rows where
        # one is above 100x the tolerance can neither be certified nor count as near it
        # (:meth:`iterate`): they keep that bound instead of a solve, most rows far from
        # their optimum. :meth:`result` reports the exact decrement.
        gi = self.g[rows]
        hd = np.diagonal(self.H[rows], axis1=1, axis2=2)
        with np.errstate(divide="ignore", invalid="ignore"):
            own = np.where(hd > 0, gi * gi / (2 * hd), np.inf)
        bound = np.where(solved, own, 0.0).max(axis=1)
        far = bound > 100 * tol
        self.dec[rows[far]] = bound[far]
        self.exact[rows] = ~far
        if far.all():
            return
        rest = np.flatnonzero(~far)
        di, pd = self._decrement(rows[rest], solved[rest], gain[rest], flat[rest])
        self.dec[rows[rest]] = di
        done = pd & (di <= tol[rest])
        self.converged[rows[rest[done]]] = True
        self.active[rows[rest[done]]] = False

    def _decrement(self, rows: Index, solved: Mask, gain: Array, flat: Mask) -> tuple[Array, Mask]:
        """The decrement of rows ``rows`` (``inf`` where the Hessian on the solved variables
        is not positive definite), and whether it is."""
        gi = self.g[rows]
        dn, pd = _masked_solve(self.H[rows], gi, solved)
        di = -0.5 * np.einsum("sp,sp->s", gi, np.where(solved, dn, 0.0))
        if flat.any():
            di += np.where(flat, gain, 0.0).sum(axis=1)
        return np.where(pd, di, np.inf), pd

    def left_out(self, rows: Index, tol: Array) -> tuple[Mask, Array, Mask]:
        """For rows ``rows``: the free variables, each one's own gain (:meth:`own_gain`;
        computed only for the directions of next to no curvature, 0 elsewhere), and which of
        them :meth:`certify` leaves out of the solve: curvature at most 1e-10 of the stiffest
        direction's and own gain within ``tol`` (a term dead with nothing left to give; a
        gradient and a curvature that are both zero)."""
        th, gi = self.theta[rows], self.g[rows]
        free = _free_mask(th, gi, self.lower, self.upper)
        hd = np.abs(np.diagonal(self.H[rows], axis1=1, axis2=2))
        soft = free & (hd <= 1e-10 * hd.max(axis=1, keepdims=True))
        gain = np.zeros(gi.shape)
        if soft.any():  # rarely: the gains only where they are needed
            i, j = np.nonzero(soft)
            gain[i, j] = self.own_gain(th[i, j], gi[i, j], hd[i, j], self.lower[j], self.upper[j])
        return free, gain, soft & (gain <= tol[:, None])

    @staticmethod
    def own_gain(theta: Array, g: Array, h: Array, lower: Array, upper: Array) -> Array:
        """How much each variable alone can still decrease the objective by its
        one-dimensional quadratic model (gradient ``g``, curvature ``h >= 0``), downhill
        from ``theta`` and within the box: ``g^2 / (2 h)`` (its own Newton decrement) where
        the Newton step stays inside, else the model's decrease at the bound, ``|g| room -
        h room^2 / 2`` (all of ``|g| room`` where there is no curvature); 0 where ``g`` is.
        It is at most the Newton decrement of the whole free set where the Hessian is
        positive definite (``g_j^2 / H_jj <= g^T H^-1 g``)."""
        ag = np.abs(g)
        room = np.maximum(np.where(g > 0, theta - lower, upper - theta), 0.0)
        with np.errstate(over="ignore", invalid="ignore"):
            inside = ag <= h * room  # the Newton step -g/h stays in (never where h = 0 < |g|)
            newton = 0.5 * ag * (ag / np.where(inside & (h > 0), h, 1.0))
            gain = np.where(inside, newton, ag * room - 0.5 * h * room * room)
        return np.where(ag == 0, 0.0, gain)

    def damped_step(self, idx: Index) -> tuple[Array, Array, Mask, Array]:
        """Trial points of rows ``idx``: (trial, step, factorisation ok, damping used).

        Damping scaled by the diagonal of the IRLS Gauss-Newton matrix
        ``sum_i w_i psi(r_i)/r_i G_i G_i^T`` (the curvature of the quadratic majoriser of
        the Huber loss): positive where the exact Hessian is flat because most residuals
        sit in the linear part. A damped matrix that is not positive definite gets more
        damping at once: raising it costs a 5x5 factorisation, not an iteration and an
        objective evaluation."""
        th, gi, Hi = self.theta[idx], self.g[idx], self.H[idx]
        free = _free_mask(th, gi, self.lower, self.upper)
        M = _damping_matrix(self.D[idx], self.coupling)
        lam_i = self.lam[idx]
        d, ok = _masked_solve(Hi + lam_i[:, None, None] * M, gi, free)
        for _retry in range(12):
            bad = np.flatnonzero(~ok & (lam_i < 1e30))
            if bad.size == 0:
                break
            lam_i[bad] *= 8.0
            Hd = Hi[bad] + lam_i[bad, None, None] * M[bad]
            d[bad], ok[bad] = _masked_solve(Hd, gi[bad], free[bad])
        # np.minimum/np.maximum: np.clip's Python wrapper costs several times more per call.
        trial = np.minimum(np.maximum(th + np.where(free, d, 0.0), self.lower), self.upper)
        return trial, trial - th, ok, lam_i

    def evaluate(self, trial: Array, idx: Index) -> tuple[Array, tuple[Array, ...] | None]:
        """Objective at the trial points, and their derivatives when fused (see
        :data:`_FUSE_ACCEPTED`)."""
        rows = self.rows_of(idx)
        if self.fuse:
            out = self.obj._derivatives(trial, self.w, rows=rows, budget=self.budget)
            return out[0], out
        return self.obj.value(trial, self.w, rows=rows, budget=self.budget), None

    def iterate(self, idx: Index) -> None:
        """One damped Newton iteration of rows ``idx``: step, judge, move, certify."""
        fi, gi, Hi = self.f[idx], self.g[idx], self.H[idx]
        th = self.theta[idx]
        self.n_iter[idx] += 1
        trial, step, ok, lam_i = self.damped_step(idx)
        pred_dec = -(
            np.einsum("sp,sp->s", gi, step) + 0.5 * np.einsum("sp,spq,sq->s", step, Hi, step)
        )
        ft, derivs = self.evaluate(trial, idx)
        actual = fi - ft
        rho = np.where(ok & (pred_dec > 0), actual / np.where(pred_dec > 0, pred_dec, 1.0), -1.0)
        acc = ok & (actual > 0) & (rho > 1e-4)
        # A step too small to change f in floating point: the row is as good as it gets.
        stuck = ok & ~acc & (np.abs(step).max(axis=1) <= 1e-15 * (1.0 + np.abs(th).max(axis=1)))
        lam_i = np.where(acc & (rho > 0.75), lam_i / 5.0, lam_i)
        lam_i = np.where(acc & (rho < 0.25), lam_i * 2.0, lam_i)
        lam_i = np.where(~acc, lam_i * 8.0, lam_i)
        self.lam[idx] = np.minimum(np.maximum(lam_i, 1e-12), 1e30)
        give_up = stuck | (self.lam[idx] >= 1e30)
        # No step changes f any more in floating point: converged as far as precision allows
        # when the decrement is within 100x the tolerance (it cannot shrink further).
        near = self.dec[idx] <= 100 * self.rtol * fi + self.atol[idx]
        self.converged[idx[stuck & near]] = True
        self.active[idx[give_up]] = False
        self.fuse = bool(
            np.count_nonzero(acc) >= _FUSE_ACCEPTED * acc.size
            or idx.size * self.obj.y.size <= _BLOCK_CELLS
        )
        if acc.any():
            self.accept(idx[acc], trial[acc], None if derivs is None else [d[acc] for d in derivs])

    def accept(self, rows: Index, trial: Array, derivs: Sequence[Array] | None) -> None:
        """Move rows ``rows`` to their trial points and certify them there."""
        if derivs is None:
            derivs = self.obj._derivatives(
                trial, self.w, rows=self.rows_of(rows), budget=self.budget
            )
        self.theta[rows] = trial
        self.f[rows], self.g[rows], self.H[rows], self.D[rows] = derivs
        self.certify(rows)


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
    coupling: float = COUPLING,
) -> BatchResult:
    """Minimise ``objective`` from every row of ``theta0`` (each with its weights row).

    Damped Newton (Levenberg-Marquardt, the damping scaled by each term's IRLS matrix with
    its off-diagonal shrunk by ``coupling``: 0 is Marquardt's diagonal scaling), steps
    projected onto the box ``[lower, upper]``, variables pinned at a bound by the gradient
    excluded. A row has converged when the Newton decrement ``g^T H^-1 g / 2`` on its free
    variables is at most ``rtol * f`` (plus 1e-24 per unit of weight): the further decrease a
    Newton step can bring is then negligible relative to the objective itself, whatever its
    scale. ``weights`` of shape ``(n,)`` are shared by every row (never copied per row);
    ``(S, n)`` weights are read a block at a time. Every evaluation stays within ``budget``
    bytes of work memory (default ``MEMORY_BUDGET``).
    """
    theta = np.clip(np.array(theta0, dtype=float), lower, upper)
    _budget(budget)  # a bad budget fails here, not after the first evaluation
    run = BatchRun(objective, theta, weights, lower, upper, rtol, budget, coupling)
    run.advance(max_iter)
    return run.result()


def driver_chunk(n_params: int, budget: int | None = None) -> int:
    """Rows :func:`minimize_chunked` gives one :func:`minimize_batch` call: the driver's own
    per-row state (parameters, gradients, Hessians and their damped copies, a few dozen
    ``P x P`` arrays) in a quarter of ``budget``; the evaluations inside split rows and
    points further (:meth:`LSEAffineModel.plan`)."""
    per_row = 8 * (14 * n_params * n_params + 24 * n_params + 32)
    return max(1, _budget(budget) // 4 // per_row)


def minimize_chunked(
    objective: HuberObjective,
    theta0: Array,
    weights: Array,
    lower: Array,
    upper: Array,
    *,
    rtol: float = 1e-14,
    max_iter: int = 300,
    chunk: int | None = None,
    budget: int | None = None,
    coupling: float = COUPLING,
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
            minimize_batch(
                objective,
                theta0[sl],
                wt,
                lower,
                upper,
                rtol=rtol,
                max_iter=max_iter,
                budget=budget,
                coupling=coupling,
            )
        )
    if len(parts) == 1:
        return parts[0]
    return BatchResult(
        *(
            np.concatenate([getattr(r, name) for r in parts])
            for name in BatchResult.__dataclass_fields__
        )
    )
