# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Compiled kernels of the window adjustment (`pose_refine`).

Its normal equations and the RANSAC fundamental-matrix check of its matches.
`normal_equations`: one pass over the observations instead of about forty numpy operations per
Gauss-Newton iteration (on a window of 4-5 sources and ~600 observations the numpy assembly
took about 1 ms per iteration, most of it per-call overhead). `fundamental_inliers`: replaces
OpenCV's ``FM_RANSAC`` (2.5-3.9 ms per source; benchmarks/RESULTS.md, issue 22). No BLAS or
LAPACK inside (see `_smallest_eigenvector`). Imported lazily (numba).
"""

from __future__ import annotations

import numpy as np

from dvc_perception.geometry.numba_jit import jit

#: Least-squares refits of the best RANSAC sample's inliers (`fundamental_inliers`).
_REFITS = 5


@jit
def normal_equations(R, t, rho, bearings, uv, pts, src, fx, fy, cx, cy, huber_px, depth_only):
    """Huber-weighted Gauss-Newton blocks of the reprojection residuals at (R, t, rho).

    Args:
        R: (S, 3, 3) reference -> source rotations.
        t: (S, 3) reference -> source translations [m].
        rho: (P,) inverse depths [1/m] of the reference features.
        bearings: (N, 3) reference ray (z = 1) of each observation's feature.
        uv: (N, 2) observed source pixel [px].
        pts: (N,) int64 feature index of each observation.
        src: (N,) int64 source index of each observation.
        fx: focal length in x [px].
        fy: focal length in y [px].
        cx: principal point x [px].
        cy: principal point y [px].
        huber_px: Huber threshold of the residual norm [px].
        depth_only: skip the pose blocks (they are returned as zeros).

    Returns (Hpp (6S, 6S), gp (6S,), Hpl (6S, P), Hll (P,), gl (P,)): sums over observations
    of w J^T J and w J^T r with J the residual's Jacobian in the left-perturbed rotation (3),
    the translation (3) and the inverse depth (1); w the Huber weight of the residual norm (0
    for points within 1 mm of the source camera's plane or behind it). The residual is measured
    at depth max(z, 1e-9), as `_Problem._residuals` does.
    """
    S, P, N = R.shape[0], rho.shape[0], pts.shape[0]
    Hpp = np.zeros((6 * S, 6 * S))
    gp = np.zeros(6 * S)
    Hpl = np.zeros((6 * S, P))
    Hll = np.zeros(P)
    gl = np.zeros(P)
    Jp = np.empty((2, 6))
    for n in range(N):
        s, p = src[n], pts[n]
        b0, b1, b2 = bearings[n, 0], bearings[n, 1], bearings[n, 2]
        Y0 = R[s, 0, 0] * b0 + R[s, 0, 1] * b1 + R[s, 0, 2] * b2
        Y1 = R[s, 1, 0] * b0 + R[s, 1, 1] * b1 + R[s, 1, 2] * b2
        Y2 = R[s, 2, 0] * b0 + R[s, 2, 1] * b1 + R[s, 2, 2] * b2
        inv_rho = 1.0 / rho[p]
        X0 = Y0 * inv_rho + t[s, 0]
        X1 = Y1 * inv_rho + t[s, 1]
        z = Y2 * inv_rho + t[s, 2]
        if z <= 1e-3:
            continue
        zc = max(z, 1e-9)
        r0 = fx * X0 / zc + cx - uv[n, 0]
        r1 = fy * X1 / zc + cy - uv[n, 1]
        e = np.sqrt(r0 * r0 + r1 * r1)
        w = 1.0 if e < huber_px else huber_px / max(e, 1e-12)
        a00, a02 = fx / z, -fx * X0 / (z * z)  # d r / d X, rows (a00, 0, a02), (0, a11, a12)
        a11, a12 = fy / z, -fy * X1 / (z * z)
        k = -inv_rho * inv_rho  # d X / d rho = -Y / rho**2
        l0 = (a00 * Y0 + a02 * Y2) * k
        l1 = (a11 * Y1 + a12 * Y2) * k
        Hll[p] += w * (l0 * l0 + l1 * l1)
        gl[p] += w * (l0 * r0 + l1 * r1)
        if depth_only:
            continue
        # rotation: row a of d r / d w is -(J_a x Y) / rho
        Jp[0, 0] = -(0.0 * Y2 - a02 * Y1) * inv_rho
        Jp[0, 1] = -(a02 * Y0 - a00 * Y2) * inv_rho
        Jp[0, 2] = -(a00 * Y1 - 0.0 * Y0) * inv_rho
        Jp[1, 0] = -(a11 * Y2 - a12 * Y1) * inv_rho
        Jp[1, 1] = -(a12 * Y0 - 0.0 * Y2) * inv_rho
        Jp[1, 2] = -(0.0 * Y1 - a11 * Y0) * inv_rho
        Jp[0, 3], Jp[0, 4], Jp[0, 5] = a00, 0.0, a02
        Jp[1, 3], Jp[1, 4], Jp[1, 5] = 0.0, a11, a12
        o = 6 * s
        for i in range(6):
            gp[o + i] += w * (Jp[0, i] * r0 + Jp[1, i] * r1)
            Hpl[o + i, p] += w * (Jp[0, i] * l0 + Jp[1, i] * l1)
            for j in range(6):
                Hpp[o + i, o + j] += w * (Jp[0, i] * Jp[0, j] + Jp[1, i] * Jp[1, j])
    return Hpp, gp, Hpl, Hll, gl


@jit
def _normalising(x):
    """Hartley's similarity T (3, 3) and the points `x` (N, 2) it moves (N, 2).

    T moves them to mean 0 and mean distance sqrt(2).
    """
    n = x.shape[0]
    mx, my = 0.0, 0.0
    for i in range(n):
        mx += x[i, 0]
        my += x[i, 1]
    mx /= n
    my /= n
    d = 0.0
    for i in range(n):
        d += np.sqrt((x[i, 0] - mx) ** 2 + (x[i, 1] - my) ** 2)
    s = np.sqrt(2.0) * n / max(d, 1e-12)
    T = np.zeros((3, 3))
    T[0, 0], T[0, 2] = s, -s * mx
    T[1, 1], T[1, 2] = s, -s * my
    T[2, 2] = 1.0
    y = np.empty((n, 2))
    for i in range(n):
        y[i, 0] = T[0, 0] * x[i, 0] + T[0, 2]
        y[i, 1] = T[1, 1] * x[i, 1] + T[1, 2]
    return T, y


@jit
def _design_rows(y1, y2, idx):
    """The eight-point method's rows (max(k, 9), 9) of the pairs `idx` (k,), zero-padded."""
    k = idx.shape[0]
    A = np.zeros((max(k, 9), 9))
    for r in range(k):
        i = idx[r]
        u1, v1, u2, v2 = y1[i, 0], y1[i, 1], y2[i, 0], y2[i, 1]
        A[r, 0], A[r, 1], A[r, 2] = u2 * u1, u2 * v1, u2
        A[r, 3], A[r, 4], A[r, 5] = v2 * u1, v2 * v1, v2
        A[r, 6], A[r, 7], A[r, 8] = u1, v1, 1.0
    return A


@jit
def _gram(A):
    """A^T A (n, n) of `A` (m, n), in loops (no BLAS: see `_smallest_eigenvector`)."""
    m, n = A.shape
    G = np.zeros((n, n))
    for r in range(m):
        for i in range(n):
            for j in range(n):
                G[i, j] += A[r, i] * A[r, j]
    return G


@jit
def _denormalised(Fn, T1, T2):
    """T2^T Fn T1 (3, 3), in loops (no BLAS: see `_smallest_eigenvector`)."""
    M = np.zeros((3, 3))
    for i in range(3):
        for j in range(3):
            for k in range(3):
                M[i, j] += Fn[i, k] * T1[k, j]
    F = np.zeros((3, 3))
    for i in range(3):
        for j in range(3):
            for k in range(3):
                F[i, j] += T2[k, i] * M[k, j]
    return F


@jit
def _sample_model(y1, y2, idx, T1, T2, F):
    """The fundamental matrix through 8 normalised pairs `idx` with f33 = 1, into `F` (pixels).

    An 8 x 8 linear solve (Gaussian elimination, partial pivoting) instead of an SVD: a RANSAC
    hypothesis only has to score the pairs, so rank 2 is not enforced here (`_fitted_model`
    does it for the final fit). A singular system (pairs that do not move fit every
    skew-symmetric F, none with f33 = 1) takes `_fitted_model`'s least-squares solution.
    """
    A = _design_rows(y1, y2, idx)
    M = np.empty((8, 9))
    for r in range(8):
        for c in range(8):
            M[r, c] = A[r, c]
        M[r, 8] = -A[r, 8]
    for c in range(8):
        p = c
        for r in range(c + 1, 8):
            if abs(M[r, c]) > abs(M[p, c]):
                p = r
        if abs(M[p, c]) < 1e-12:  # degenerate (e.g. pairs that do not move): least squares
            F[:, :] = _fitted_model(y1, y2, idx, T1, T2)
            return
        if p != c:
            for k in range(c, 9):
                M[c, k], M[p, k] = M[p, k], M[c, k]
        for r in range(c + 1, 8):
            f = M[r, c] / M[c, c]
            for k in range(c, 9):
                M[r, k] -= f * M[c, k]
    f = np.empty(9)
    f[8] = 1.0
    for c in range(7, -1, -1):
        acc = M[c, 8]
        for k in range(c + 1, 8):
            acc -= M[c, k] * f[k]
        f[c] = acc / M[c, c]
    F[:, :] = _denormalised(f.reshape(3, 3), T1, T2)


@jit
def _smallest_eigenvector(M):
    """Unit eigenvector (n,) of the smallest eigenvalue of the symmetric `M` (n, n), float64.

    Cyclic Jacobi rotations. Hand-written, not LAPACK: numba's LAPACK is scipy's OpenBLAS, whose
    idle threads spin after a call and took a third of the CPU from the plane sweep's threads
    on 2 cores (benchmarks/RESULTS.md, issue 22).
    """
    n = M.shape[0]
    A = M.copy()
    V = np.eye(n)
    for _ in range(50):
        off = 0.0
        for p in range(n):
            for q in range(p + 1, n):
                off += A[p, q] * A[p, q]
        if off <= 1e-30 * max(np.sum(A * A), 1e-300):
            break
        for p in range(n):
            for q in range(p + 1, n):
                if A[p, q] == 0.0:
                    continue
                theta = 0.5 * (A[q, q] - A[p, p]) / A[p, q]
                t = (1.0 if theta >= 0 else -1.0) / (abs(theta) + np.sqrt(theta * theta + 1.0))
                c = 1.0 / np.sqrt(t * t + 1.0)
                s = t * c
                for k in range(n):  # A <- A J (columns p, q)
                    akp, akq = A[k, p], A[k, q]
                    A[k, p] = c * akp - s * akq
                    A[k, q] = s * akp + c * akq
                for k in range(n):  # A <- J^T A (rows p, q)
                    apk, aqk = A[p, k], A[q, k]
                    A[p, k] = c * apk - s * aqk
                    A[q, k] = s * apk + c * aqk
                for k in range(n):
                    vkp, vkq = V[k, p], V[k, q]
                    V[k, p] = c * vkp - s * vkq
                    V[k, q] = s * vkp + c * vkq
    j = 0
    for i in range(1, n):
        if A[i, i] < A[j, j]:
            j = i
    return V[:, j].copy()


@jit
def _fitted_model(y1, y2, idx, T1, T2):
    """Rank-2 least-squares fundamental matrix (3, 3), pixels, of the normalised pairs `idx`.

    The eight-point method's least-squares solution (the smallest eigenvector of A^T A), then
    its smallest singular component removed: F (I - v v^T) with v the smallest eigenvector of
    F^T F, the closest rank-2 matrix in the Frobenius norm.
    """
    F = _smallest_eigenvector(_gram(_design_rows(y1, y2, idx))).reshape(3, 3)
    v = _smallest_eigenvector(_gram(F))
    Fv = np.zeros(3)
    for i in range(3):
        for k in range(3):
            Fv[i] += F[i, k] * v[k]
    for i in range(3):
        for j in range(3):
            F[i, j] -= Fv[i] * v[j]
    return _denormalised(F, T1, T2)


@jit
def _epipolar_inliers(F, x1, x2, thresh_px, mask):
    """Mark in `mask` the pairs within `thresh_px` of both epipolar lines; return the count.

    The error of a pair is the larger squared distance of either point from the epipolar line
    of the other (OpenCV's ``FM_RANSAC`` error).
    """
    t2 = thresh_px * thresh_px
    count = 0
    for i in range(x1.shape[0]):
        a = F[0, 0] * x1[i, 0] + F[0, 1] * x1[i, 1] + F[0, 2]
        b = F[1, 0] * x1[i, 0] + F[1, 1] * x1[i, 1] + F[1, 2]
        c = F[2, 0] * x1[i, 0] + F[2, 1] * x1[i, 1] + F[2, 2]
        d2 = x2[i, 0] * a + x2[i, 1] * b + c  # x2^T F x1
        e2 = d2 * d2 / max(a * a + b * b, 1e-300)
        a = F[0, 0] * x2[i, 0] + F[1, 0] * x2[i, 1] + F[2, 0]
        b = F[0, 1] * x2[i, 0] + F[1, 1] * x2[i, 1] + F[2, 1]
        e1 = d2 * d2 / max(a * a + b * b, 1e-300)
        mask[i] = max(e1, e2) <= t2
        count += mask[i]
    return count


@jit
def fundamental_inliers(x1, x2, thresh_px, confidence, max_iterations, seed):
    """RANSAC inlier mask (N,) bool of the pixel pairs `x1`, `x2` (N, 2) under one F matrix.

    Samples of 8 pairs (Hartley-normalised, `_sample_model`), scored by the number of pairs
    within `thresh_px` of both epipolar lines; the iteration count adapts to the best inlier
    fraction for `confidence`, at most `max_iterations`. The best sample's inliers are then
    refitted (least squares over all of them, rank 2) while that finds more, up to `_REFITS`
    times (a local optimisation, as LO-RANSAC has it: a model through 8 noisy pairs misses
    true pairs far from them). Deterministic for a `seed`. Fewer than 8 pairs: no inliers.
    """
    n = x1.shape[0]
    best = np.zeros(n, np.bool_)
    if n < 8:
        return best
    np.random.seed(seed)
    T1, y1 = _normalising(x1)
    T2, y2 = _normalising(x2)
    order = np.arange(n)
    mask = np.zeros(n, np.bool_)
    F = np.empty((3, 3))
    best_count = 0
    needed = max_iterations
    it = 0
    while it < needed:
        for k in range(8):  # a partial Fisher-Yates shuffle: 8 distinct pairs
            j = k + np.random.randint(n - k)
            order[k], order[j] = order[j], order[k]
        it += 1
        _sample_model(y1, y2, order[:8], T1, T2, F)
        count = _epipolar_inliers(F, x1, x2, thresh_px, mask)
        if count > best_count:
            best_count = count
            best[:] = mask
            w8 = (count / n) ** 8
            if w8 >= 1.0:
                needed = 0
            elif w8 > 0.0:
                needed = min(needed, int(np.ceil(np.log(1.0 - confidence) / np.log(1.0 - w8))))
    for _ in range(_REFITS):  # least squares on the inliers, while that finds more
        if best_count < 8:
            break
        F = _fitted_model(y1, y2, np.flatnonzero(best), T1, T2)
        count = _epipolar_inliers(F, x1, x2, thresh_px, mask)
        if count < best_count:
            break
        best[:] = mask
        if count == best_count:
            break
        best_count = count
    return best
