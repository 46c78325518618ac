# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Compiled (numba, float64, CPU) kernels of `solve_pnp` and `solve_pnp_ransac`.

The same algorithm as the torch path of `pnp.py`, which stays the reference (and the path for
float32, CUDA and ``backward="unrolled"``): EPnP start (4 or 3 control points, mirrored planar
start, multi-start for N < SMALL_N), Levenberg-Marquardt / Newton on SE(3) with Huber weights,
convergence test, validity rules and covariance; the implicit-function backward (exact Hessian,
one damped 6x6 solve per sample, then the mixed second derivatives by hand-written reverse mode);
RANSAC hypotheses, MSAC scoring and the local optimisation. One call per batch, one loop over
samples, no allocation per iteration: the torch path is bound by ~1,400 ATen dispatches.

Differences to the torch path, all at the level of the convergence tolerance: a sample stops
iterating once it has converged (the torch path iterates the whole batch until every sample has),
and the continuation after the multi-start phase runs for unconverged samples only.

Imported lazily by `pnp.py` (importing numba and loading the machine code takes ~1 s, the first
compilation ~1 min); machine code is cached on disk (``cache=True``: ``__pycache__`` next to this
file, else numba's user-wide cache dir or ``NUMBA_CACHE_DIR``; where nothing is writable, the
kernels are compiled once per process). See `pnp.warm_up`.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from dvc_perception.geometry.numba_jit import jit

# Indices into the float64 settings vector `cfg` (built from pnp.py's constants, so that the
# machine code cached on disk never holds stale constants).
CFG_PLANAR_RATIO = 0
CFG_NEWTON_STEP = 1
CFG_TINY_STEP = 2
CFG_MULTI_START_ITERATIONS = 3
CFG_SMALL_N = 4
CFG_COLLINEAR_RATIO = 5
CFG_MIN_POINTS = 6
CFG_SIZE = 7

_SLACK = 256.0 * 2.220446049250313e-16  # 256 eps(float64): cost rounding slack
_TINY_DIAG = 1e-30  # added to the LM diagonal (float64)

# ------------------------------------------------------------------------------------------
# Small dense linear algebra (in place, no allocation)


# Reassociation lets LLVM vectorise the sums over points (results change at round-off level);
# no finite-math assumption: NaN and inf must propagate as in the torch path.
_jit_sums = functools.partial(jit, fastmath={"reassoc", "contract"})


@_jit_sums
def _weighted_dot(c, a, b, a2, b2):
    """sum_i c_i (a_i b_i + a2_i b2_i) over 1-D arrays."""
    h = 0.0
    for i in range(c.shape[0]):
        h += c[i] * (a[i] * b[i] + a2[i] * b2[i])
    return h


@_jit_sums
def _weighted_dot1(c, a, b):
    """sum_i c_i a_i b_i over 1-D arrays."""
    h = 0.0
    for i in range(c.shape[0]):
        h += c[i] * a[i] * b[i]
    return h


@jit
def _lu_solve(A, b):
    """Solve A x = b by LU with partial pivoting; A (n,n) destroyed, b (n,) becomes x.

    Returns False on a zero pivot (x then holds inf/nan, as an unchecked LAPACK solve would).
    """
    n = A.shape[0]
    ok = True
    for k in range(n):
        p = k
        big = abs(A[k, k])
        for i in range(k + 1, n):
            if abs(A[i, k]) > big:
                big = abs(A[i, k])
                p = i
        if p != k:
            for j in range(n):
                A[k, j], A[p, j] = A[p, j], A[k, j]
            b[k], b[p] = b[p], b[k]
        piv = A[k, k]
        if piv == 0.0:
            ok = False
        for i in range(k + 1, n):
            f = A[i, k] / piv
            for j in range(k + 1, n):
                A[i, j] -= f * A[k, j]
            b[i] -= f * b[k]
    for k in range(n - 1, -1, -1):
        s = b[k]
        for j in range(k + 1, n):
            s -= A[k, j] * b[j]
        b[k] = s / A[k, k]
    return ok


@jit
def _cholesky(A, L):
    """Lower Cholesky factor L of A (n,n); False if A is not (numerically) positive definite."""
    n = A.shape[0]
    for j in range(n):
        s = A[j, j]
        for k in range(j):
            s -= L[j, k] * L[j, k]
        if not s > 0.0:
            return False
        d = math.sqrt(s)
        L[j, j] = d
        for i in range(j + 1, n):
            s = A[i, j]
            for k in range(j):
                s -= L[i, k] * L[j, k]
            L[i, j] = s / d
        for i in range(j):
            L[i, j] = 0.0
    return True


@jit
def _cholesky_solve(L, b):
    """Solve L L^T x = b in place (b (n,) becomes x)."""
    n = L.shape[0]
    for i in range(n):
        s = b[i]
        for k in range(i):
            s -= L[i, k] * b[k]
        b[i] = s / L[i, i]
    for i in range(n - 1, -1, -1):
        s = b[i]
        for k in range(i + 1, n):
            s -= L[k, i] * b[k]
        b[i] = s / L[i, i]


@jit
def _eigh3(C, lam, V):
    """Symmetric 3x3 eigen-decomposition by cyclic Jacobi; C destroyed, lam (3,), V columns."""
    for i in range(3):
        for j in range(3):
            V[i, j] = 1.0 if i == j else 0.0
    for _ in range(64):
        off = C[0, 1] * C[0, 1] + C[0, 2] * C[0, 2] + C[1, 2] * C[1, 2]
        diag = C[0, 0] * C[0, 0] + C[1, 1] * C[1, 1] + C[2, 2] * C[2, 2]
        if not off > 1e-36 * diag:  # also stops on NaN
            break
        for pq in range(3):
            p = 0 if pq < 2 else 1
            q = 1 if pq == 0 else 2
            apq = C[p, q]
            if apq == 0.0:
                continue
            theta = (C[q, q] - C[p, p]) / (2.0 * apq)
            if abs(theta) > 1e150:
                tt = 0.5 / theta
            else:
                tt = 1.0 / (abs(theta) + math.sqrt(theta * theta + 1.0))
                if theta < 0.0:
                    tt = -tt
            c = 1.0 / math.sqrt(tt * tt + 1.0)
            s = tt * c
            for k in range(3):
                akp, akq = C[k, p], C[k, q]
                C[k, p] = c * akp - s * akq
                C[k, q] = s * akp + c * akq
            for k in range(3):
                apk, aqk = C[p, k], C[q, k]
                C[p, k] = c * apk - s * aqk
                C[q, k] = s * apk + c * aqk
            for k in range(3):
                vkp, vkq = V[k, p], V[k, q]
                V[k, p] = c * vkp - s * vkq
                V[k, q] = s * vkp + c * vkq
            C[p, q] = C[q, p] = 0.0
    for i in range(3):
        lam[i] = C[i, i]


@jit
def _matmul3(A, B, out):
    """Write A @ B (3x3) into out (which must not alias A or B)."""
    for i in range(3):
        for j in range(3):
            out[i, j] = A[i, 0] * B[0, j] + A[i, 1] * B[1, j] + A[i, 2] * B[2, j]


# ------------------------------------------------------------------------------------------
# SO(3)


@jit
def _rotvec_to_matrix(rx, ry, rz, out):
    """Rodrigues (as so3.rotvec_to_matrix, series below theta^2 = 1e-4) into out (3,3)."""
    th2 = rx * rx + ry * ry + rz * rz
    if th2 < 1e-4:
        a = 1.0 - th2 / 6.0 + th2 * th2 / 120.0
        b = 0.5 - th2 / 24.0 + th2 * th2 / 720.0
    else:
        th = math.sqrt(th2)
        hs = math.sin(0.5 * th)
        a = math.sin(th) / th
        b = 2.0 * hs * hs / th2
    out[0, 0] = 1.0 - b * (ry * ry + rz * rz)
    out[1, 1] = 1.0 - b * (rx * rx + rz * rz)
    out[2, 2] = 1.0 - b * (rx * rx + ry * ry)
    out[0, 1] = -a * rz + b * rx * ry
    out[1, 0] = a * rz + b * rx * ry
    out[0, 2] = a * ry + b * rx * rz
    out[2, 0] = -a * ry + b * rx * rz
    out[1, 2] = -a * rx + b * ry * rz
    out[2, 1] = a * rx + b * ry * rz


@jit
def _exp_so3(wx, wy, wz, out):
    """exp([w]x) for LM steps (as pnp._exp_so3: theta floored by 1e-300 under the root)."""
    th = math.sqrt(wx * wx + wy * wy + wz * wz + 1e-300)
    half = math.sin(0.5 * th) / th
    c = math.cos(th)
    s = math.sin(th) / th
    h = 2.0 * half * half
    out[0, 0] = c + h * wx * wx
    out[1, 1] = c + h * wy * wy
    out[2, 2] = c + h * wz * wz
    out[0, 1] = -s * wz + h * wx * wy
    out[1, 0] = s * wz + h * wx * wy
    out[0, 2] = s * wy + h * wx * wz
    out[2, 0] = -s * wy + h * wx * wz
    out[1, 2] = -s * wx + h * wy * wz
    out[2, 1] = s * wx + h * wy * wz


@jit
def _matrix_to_rotvec(R, out):
    """Logarithm map as so3.matrix_to_rotvec (Shepperd quaternion, then its rotation vector)."""
    m00, m01, m02 = R[0, 0], R[0, 1], R[0, 2]
    m10, m11, m12 = R[1, 0], R[1, 1], R[1, 2]
    m20, m21, m22 = R[2, 0], R[2, 1], R[2, 2]
    dw = 1.0 + m00 + m11 + m22
    dx = 1.0 + m00 - m11 - m22
    dy = 1.0 - m00 + m11 - m22
    dz = 1.0 - m00 - m11 + m22
    aw = math.sqrt(dw) if dw > 0 else 0.0
    ax = math.sqrt(dx) if dx > 0 else 0.0
    ay = math.sqrt(dy) if dy > 0 else 0.0
    az = math.sqrt(dz) if dz > 0 else 0.0
    best, big = 0, aw
    if ax > big:
        best, big = 1, ax
    if ay > big:
        best, big = 2, ay
    if az > big:
        best, big = 3, az
    if best == 0:
        x, y, z, w = m21 - m12, m02 - m20, m10 - m01, dw
    elif best == 1:
        x, y, z, w = dx, m10 + m01, m02 + m20, m21 - m12
    elif best == 2:
        x, y, z, w = m10 + m01, dy, m12 + m21, m02 - m20
    else:
        x, y, z, w = m20 + m02, m21 + m12, dz, m10 - m01
    f = 1.0 / (2.0 * max(big, 0.1))
    x, y, z, w = x * f, y * f, z * f, w * f
    n = math.sqrt(x * x + y * y + z * z + w * w)
    x, y, z, w = x / n, y / n, z / n, w / n
    if w < 0:
        x, y, z, w = -x, -y, -z, -w
    n_sq = x * x + y * y + z * z
    if n_sq < 1e-6:
        s = n_sq / (w * w)
        scale = 2.0 / w * (1.0 - s / 3.0 + s * s / 5.0)
    else:
        nn = math.sqrt(n_sq)
        scale = 2.0 * math.atan2(nn, w) / nn
    out[0], out[1], out[2] = x * scale, y * scale, z * scale


@jit
def _left_jacobian_inverse(phi, J):
    """Inverse left Jacobian of SO(3) at phi (3,) into J (3,3) (as pnp._left_jacobian_inverse)."""
    th2 = phi[0] * phi[0] + phi[1] * phi[1] + phi[2] * phi[2]
    if th2 < 1e-6:
        c = 1.0 / 12.0 + th2 / 720.0
    else:
        th = math.sqrt(th2)
        sn = max(math.sin(th), 1e-12)
        c = 1.0 / th2 - (1.0 + math.cos(th)) / (2.0 * th * sn)
    x, y, z = phi[0], phi[1], phi[2]
    # I - k/2 + c k k, k = [phi]x, k k = phi phi^T - th2 I
    J[0, 0] = 1.0 + c * (x * x - th2)
    J[1, 1] = 1.0 + c * (y * y - th2)
    J[2, 2] = 1.0 + c * (z * z - th2)
    J[0, 1] = 0.5 * z + c * x * y
    J[1, 0] = -0.5 * z + c * x * y
    J[0, 2] = -0.5 * y + c * x * z
    J[2, 0] = 0.5 * y + c * x * z
    J[1, 2] = 0.5 * x + c * y * z
    J[2, 1] = -0.5 * x + c * y * z


# ------------------------------------------------------------------------------------------
# Object frame and closed-form start (EPnP)


@jit
def _object_frame(X, w, n_pos, cfg, c0, axes, sigma, C, lam, V):
    """Weighted principal axes of X (N,3): c0, axes (columns, det +1, canonical signs), sigma.

    Returns (planar, degenerate) as pnp._object_frame. C, lam, V: 3x3/3/3x3 scratch.
    """
    N = X.shape[0]
    sw = 0.0
    for i in range(N):
        sw += w[i]
    sw = max(sw, 1e-300)
    c0[0] = c0[1] = c0[2] = 0.0
    for i in range(N):
        wn = w[i] / sw
        for k in range(3):
            c0[k] += X[i, k] * wn
    for a in range(3):
        for b in range(3):
            C[a, b] = 0.0
    for i in range(N):
        wn = w[i] / sw
        d0, d1, d2 = X[i, 0] - c0[0], X[i, 1] - c0[1], X[i, 2] - c0[2]
        C[0, 0] += wn * d0 * d0
        C[0, 1] += wn * d0 * d1
        C[0, 2] += wn * d0 * d2
        C[1, 1] += wn * d1 * d1
        C[1, 2] += wn * d1 * d2
        C[2, 2] += wn * d2 * d2
    C[1, 0], C[2, 0], C[2, 1] = C[0, 1], C[0, 2], C[1, 2]
    _eigh3(C, lam, V)
    # descending order
    i0, i1, i2 = 0, 1, 2
    if lam[i0] < lam[i1]:
        i0, i1 = i1, i0
    if lam[i1] < lam[i2]:
        i1, i2 = i2, i1
    if lam[i0] < lam[i1]:
        i0, i1 = i1, i0
    order = (i0, i1, i2)
    for j in range(3):
        sigma[j] = math.sqrt(max(lam[order[j]], 0.0))
        for k in range(3):
            axes[k, j] = V[k, order[j]]
    # canonical signs: the largest-magnitude component of axes 1 and 2 is positive ...
    for j in range(2):
        kb = 0
        for k in range(1, 3):
            if abs(axes[k, j]) > abs(axes[kb, j]):
                kb = k
        if axes[kb, j] < 0:
            for k in range(3):
                axes[k, j] = -axes[k, j]
    # ... and the third makes det = +1
    det = (axes[0, 0] * (axes[1, 1] * axes[2, 2] - axes[2, 1] * axes[1, 2])
           - axes[0, 1] * (axes[1, 0] * axes[2, 2] - axes[2, 0] * axes[1, 2])
           + axes[0, 2] * (axes[1, 0] * axes[2, 1] - axes[2, 0] * axes[1, 1]))
    for k in range(3):
        axes[k, 2] *= det
    s1 = max(sigma[0], 1e-300)
    degenerate = (sigma[1] / s1 < cfg[CFG_COLLINEAR_RATIO]) or (sigma[0] <= 1e-12)
    planar = (sigma[2] / s1 < cfg[CFG_PLANAR_RATIO]) or (n_pos < 6)
    return planar, degenerate


@jit
def _polar_rotation(D, R):
    """Rotation near D (3,3) into R: 4 Newton polar iterations, then Gram-Schmidt."""
    fro = 0.0
    for i in range(3):
        for j in range(3):
            fro += D[i, j] * D[i, j]
    f = 1.0 / max(math.sqrt(fro) / math.sqrt(3.0), 1e-300)
    X = np.empty((3, 3))
    cof = np.empty((3, 3))
    for i in range(3):
        for j in range(3):
            X[i, j] = D[i, j] * f
    for _ in range(4):
        for j in range(3):
            j1, j2 = (j + 1) % 3, (j + 2) % 3
            cof[0, j] = X[1, j1] * X[2, j2] - X[2, j1] * X[1, j2]
            cof[1, j] = X[2, j1] * X[0, j2] - X[0, j1] * X[2, j2]
            cof[2, j] = X[0, j1] * X[1, j2] - X[1, j1] * X[0, j2]
        det = X[0, 0] * cof[0, 0] + X[1, 0] * cof[1, 0] + X[2, 0] * cof[2, 0]
        for i in range(3):
            for j in range(3):
                X[i, j] = 0.5 * (X[i, j] + cof[i, j] / det)
    n1 = max(math.sqrt(X[0, 0] ** 2 + X[1, 0] ** 2 + X[2, 0] ** 2), 1e-300)
    a0, a1, a2 = X[0, 0] / n1, X[1, 0] / n1, X[2, 0] / n1
    d = a0 * X[0, 1] + a1 * X[1, 1] + a2 * X[2, 1]
    b0, b1, b2 = X[0, 1] - d * a0, X[1, 1] - d * a1, X[2, 1] - d * a2
    n2 = max(math.sqrt(b0 * b0 + b1 * b1 + b2 * b2), 1e-300)
    b0, b1, b2 = b0 / n2, b1 / n2, b2 / n2
    R[0, 0], R[1, 0], R[2, 0] = a0, a1, a2
    R[0, 1], R[1, 1], R[2, 1] = b0, b1, b2
    R[0, 2] = a1 * b2 - a2 * b1
    R[1, 2] = a2 * b0 - a0 * b2
    R[2, 2] = a0 * b1 - a1 * b0


@jit
def _epnp(X, obs, K, w, c0, axes, sigma, planar, R, t, alpha, G, M, L):
    """EPnP start into R (3,3), t (3,), as pnp._epnp; planar: 3 control points.

    alpha (8,N): scratch for the barycentric coordinates (rows 0-3) and the weighted image
    terms (rows 4-7); G (4,4,4), M (12,12), L (12,12): scratch.
    """
    N = X.shape[0]
    fx, sk, cx, fy, cy = K[0, 0], K[0, 1], K[0, 2], K[1, 1], K[1, 2]
    s0, s1, s2 = max(sigma[0], 1e-300), max(sigma[1], 1e-300), max(sigma[2], 1e-300)
    for i in range(N):
        d0, d1, d2 = X[i, 0] - c0[0], X[i, 1] - c0[1], X[i, 2] - c0[2]
        a1 = (axes[0, 0] * d0 + axes[1, 0] * d1 + axes[2, 0] * d2) / s0
        a2 = (axes[0, 1] * d0 + axes[1, 1] * d1 + axes[2, 1] * d2) / s1
        a3 = 0.0 if planar else (axes[0, 2] * d0 + axes[1, 2] * d1 + axes[2, 2] * d2) / s2
        alpha[0, i] = 1.0 - (a1 + a2 + a3)
        alpha[1, i], alpha[2, i], alpha[3, i] = a1, a2, a3
        yn = (obs[i, 1] - cy) / fy
        xn = (obs[i, 0] - cx - sk * yn) / fx
        wi = w[i]
        alpha[4, i], alpha[5, i], alpha[6, i] = wi, wi * xn, wi * yn
        alpha[7, i] = wi * (xn * xn + yn * yn)
    # G[a, b, f] = sum_i alpha_a alpha_b F_f, F = w (1, x, y, x^2 + y^2)
    for a in range(4):
        for b in range(a, 4):
            for f in range(4):
                G[a, b, f] = _weighted_dot1(alpha[4 + f], alpha[a], alpha[b])
    # M = sum_i w_i (alpha alpha^T) kron Q_i, Q = [[1,0,-x],[0,1,-y],[-x,-y,x^2+y^2]]
    for a in range(4):
        for b in range(a, 4):
            g0, g1, g2, g3 = G[a, b, 0], G[a, b, 1], G[a, b, 2], G[a, b, 3]
            blk = ((g0, 0.0, -g1), (0.0, g0, -g2), (-g1, -g2, g3))
            for k in range(3):
                for m in range(3):
                    M[3 * a + k, 3 * b + m] = blk[k][m]
                    M[3 * b + m, 3 * a + k] = blk[k][m]
    trace = 0.0
    for k in range(12):
        trace += M[k, k]
    if planar:  # the unused 4th control point is pinned to 0 by a stiff diagonal
        for k in range(9, 12):
            M[k, k] += trace
    for k in range(12):
        M[k, k] += 1e-12 * trace
    v = np.zeros(12)
    chol_ok = _cholesky(M, L)
    if not chol_ok:
        for i in range(3):
            t[i] = math.nan
            for j in range(3):
                R[i, j] = math.nan
        return
    v[2] = v[5] = v[8] = 1.0
    v[11] = 0.0 if planar else 1.0
    for _ in range(3):
        _cholesky_solve(L, v)
        nv = 0.0
        for k in range(12):
            nv += v[k] * v[k]
        nv = max(math.sqrt(nv), 1e-300)
        for k in range(12):
            v[k] /= nv
    ctrl = v.reshape(4, 3)  # camera control points up to scale
    ctrl_obj = np.empty((4, 3))
    for k in range(3):
        ctrl_obj[0, k] = c0[k]
        for j in range(3):
            ctrl_obj[j + 1, k] = c0[k] + axes[k, j] * sigma[j]
    num = 0.0
    den = 0.0
    for pair in range(6):
        i = 0 if pair < 3 else (1 if pair < 5 else 2)
        j = (1, 2, 3, 2, 3, 3)[pair]
        if planar and not (pair == 0 or pair == 1 or pair == 3):
            continue
        dv = math.sqrt((ctrl[i, 0] - ctrl[j, 0]) ** 2 + (ctrl[i, 1] - ctrl[j, 1]) ** 2
                       + (ctrl[i, 2] - ctrl[j, 2]) ** 2)
        do = math.sqrt((ctrl_obj[i, 0] - ctrl_obj[j, 0]) ** 2
                       + (ctrl_obj[i, 1] - ctrl_obj[j, 1]) ** 2
                       + (ctrl_obj[i, 2] - ctrl_obj[j, 2]) ** 2)
        num += dv * do
        den += dv * dv
    beta = num / max(den, 1e-300)
    wd = 0.0
    for i in range(N):
        depth = 0.0
        for a in range(4):
            depth += alpha[a, i] * ctrl[a, 2]
        wd += w[i] * depth
    if wd < 0:
        beta = -beta
    D = np.empty((3, 3))  # columns (ctrl_j - ctrl_0) / sigma_j
    for j in range(3):
        sj = max(sigma[j], 1e-300)
        for k in range(3):
            D[k, j] = (ctrl[j + 1, k] - ctrl[0, k]) * beta / sj
    e0 = D[1, 0] * D[2, 1] - D[2, 0] * D[1, 1]
    e1 = D[2, 0] * D[0, 1] - D[0, 0] * D[2, 1]
    e2 = D[0, 0] * D[1, 1] - D[1, 0] * D[0, 1]
    det = e0 * D[0, 2] + e1 * D[1, 2] + e2 * D[2, 2]
    if planar or det <= 0:
        ne = max(math.sqrt(e0 * e0 + e1 * e1 + e2 * e2), 1e-300)
        n0 = math.sqrt(D[0, 0] ** 2 + D[1, 0] ** 2 + D[2, 0] ** 2)
        n1 = math.sqrt(D[0, 1] ** 2 + D[1, 1] ** 2 + D[2, 1] ** 2)
        f = math.sqrt(n0 * n1) / ne
        D[0, 2], D[1, 2], D[2, 2] = e0 * f, e1 * f, e2 * f
    Rp = np.empty((3, 3))
    _polar_rotation(D, Rp)
    for i in range(3):
        for j in range(3):
            R[i, j] = Rp[i, 0] * axes[j, 0] + Rp[i, 1] * axes[j, 1] + Rp[i, 2] * axes[j, 2]
    for i in range(3):
        t[i] = ctrl[0, i] * beta - (R[i, 0] * c0[0] + R[i, 1] * c0[1] + R[i, 2] * c0[2])


@jit
def _mirror_start(R, t, c0, axes, R2, t2):
    """The other pose of the planar ambiguity (as pnp._mirror_start) into R2, t2."""
    n0 = R[0, 0] * axes[0, 2] + R[0, 1] * axes[1, 2] + R[0, 2] * axes[2, 2]
    n1 = R[1, 0] * axes[0, 2] + R[1, 1] * axes[1, 2] + R[1, 2] * axes[2, 2]
    n2 = R[2, 0] * axes[0, 2] + R[2, 1] * axes[1, 2] + R[2, 2] * axes[2, 2]
    c = np.empty(3)
    for i in range(3):
        c[i] = R[i, 0] * c0[0] + R[i, 1] * c0[1] + R[i, 2] * c0[2] + t[i]
    nc = max(math.sqrt(c[0] * c[0] + c[1] * c[1] + c[2] * c[2]), 1e-300)
    v0, v1, v2 = c[0] / nc, c[1] / nc, c[2] / nc
    nv = n0 * v0 + n1 * v1 + n2 * v2
    m0, m1, m2 = 2.0 * nv * v0 - n0, 2.0 * nv * v1 - n1, 2.0 * nv * v2 - n2
    x0, x1, x2 = n1 * m2 - n2 * m1, n2 * m0 - n0 * m2, n0 * m1 - n1 * m0
    sn = math.sqrt(x0 * x0 + x1 * x1 + x2 * x2)
    cs = n0 * m0 + n1 * m1 + n2 * m2
    f = math.atan2(sn, cs) / max(sn, 1e-12)
    rot = np.empty((3, 3))
    _rotvec_to_matrix(x0 * f, x1 * f, x2 * f, rot)
    _matmul3(rot, R, R2)
    for i in range(3):
        t2[i] = c[i] - (R2[i, 0] * c0[0] + R2[i, 1] * c0[1] + R2[i, 2] * c0[2])


# ------------------------------------------------------------------------------------------
# Normal equations, exact Hessian, Levenberg-Marquardt


# Rows of the per-point scratch J (structure of arrays): the two rows of [dr/dxi, r] and the
# weight c; with the second-order part also alpha = [a; q x a] (a = (dr/dP)^T r), beta =
# [k3; q x k3], c / z, 2 w rho''(s) and q = R X.
J_ROW_U, J_ROW_V, J_C, J_ALPHA, J_BETA, J_CZ, J_D2, J_Q, J_ROWS = 0, 7, 14, 15, 21, 27, 28, 29, 32


@_jit_sums
def _normal_equations(R, t, X, obs, K, w, huber, Hg, S, second, J):
    """Cost and the augmented Gauss-Newton matrix Hg (7,7) = [J r]^T C [J r].

    If ``second``, also the second-order part S (6,6) of the exact Hessian (as
    pnp._normal_equations and pnp._second_order):
    S = sum_i -c_i (alpha beta^T + beta alpha^T) / z_i + [0 0; 0 c_i (sym(q a^T) - (a.q) I)]
        + 2 w_i rho''(s_i) alpha alpha^T.
    huber <= 0: least squares. J (J_ROWS,N) scratch: per-point terms as rows (structure of
    arrays), so that the sums over points vectorise.
    """
    N = X.shape[0]
    k0, k1, k2 = K[2, 0], K[2, 1], K[2, 2]
    kt0 = K[0, 0] * t[0] + K[0, 1] * t[1] + K[0, 2] * t[2]
    kt1 = K[1, 0] * t[0] + K[1, 1] * t[1] + K[1, 2] * t[2]
    kt2 = k0 * t[0] + k1 * t[1] + k2 * t[2]
    cost = 0.0
    for i in range(N):
        X0, X1, X2 = X[i, 0], X[i, 1], X[i, 2]
        q0 = R[0, 0] * X0 + R[0, 1] * X1 + R[0, 2] * X2
        q1 = R[1, 0] * X0 + R[1, 1] * X1 + R[1, 2] * X2
        q2 = R[2, 0] * X0 + R[2, 1] * X1 + R[2, 2] * X2
        z = k0 * q0 + k1 * q1 + k2 * q2 + kt2
        iz = 1.0 / z
        u = (K[0, 0] * q0 + K[0, 1] * q1 + K[0, 2] * q2 + kt0) * iz
        v = (K[1, 0] * q0 + K[1, 1] * q1 + K[1, 2] * q2 + kt1) * iz
        r0, r1 = u - obs[i, 0], v - obs[i, 1]
        s = r0 * r0 + r1 * r1
        wi = w[i]
        root = 0.0
        if huber > 0:
            root = math.sqrt(max(s, 1e-300))
            if root > huber:
                cost += wi * (2.0 * huber * root - huber * huber)
                c = wi * (huber / root)
            else:
                cost += wi * s
                c = wi
        else:
            cost += wi * s
            c = wi
        # rows of dr/dxi: A_j = dr_j/dP = (K_j - k3 uv_j) / z, then q x A_j
        A00, A10, A20 = (K[0, 0] - k0 * u) * iz, (K[0, 1] - k1 * u) * iz, (K[0, 2] - k2 * u) * iz
        A01, A11, A21 = (K[1, 0] - k0 * v) * iz, (K[1, 1] - k1 * v) * iz, (K[1, 2] - k2 * v) * iz
        J[0, i], J[1, i], J[2, i] = A00, A10, A20
        J[3, i], J[4, i], J[5, i] = q1 * A20 - q2 * A10, q2 * A00 - q0 * A20, q0 * A10 - q1 * A00
        J[6, i] = r0
        J[7, i], J[8, i], J[9, i] = A01, A11, A21
        J[10, i], J[11, i], J[12, i] = (q1 * A21 - q2 * A11, q2 * A01 - q0 * A21,
                                        q0 * A11 - q1 * A01)
        J[13, i] = r1
        J[J_C, i] = c
        if second:
            a0 = A00 * r0 + A01 * r1
            a1 = A10 * r0 + A11 * r1
            a2 = A20 * r0 + A21 * r1
            J[J_ALPHA, i], J[J_ALPHA + 1, i], J[J_ALPHA + 2, i] = a0, a1, a2
            J[J_ALPHA + 3, i] = q1 * a2 - q2 * a1
            J[J_ALPHA + 4, i] = q2 * a0 - q0 * a2
            J[J_ALPHA + 5, i] = q0 * a1 - q1 * a0
            J[J_BETA, i], J[J_BETA + 1, i], J[J_BETA + 2, i] = k0, k1, k2
            J[J_BETA + 3, i] = q1 * k2 - q2 * k1
            J[J_BETA + 4, i] = q2 * k0 - q0 * k2
            J[J_BETA + 5, i] = q0 * k1 - q1 * k0
            J[J_CZ, i] = c / z
            J[J_D2, i] = (2.0 * wi * (-0.5 * huber / (root * s))
                          if huber > 0 and root > huber else 0.0)
            J[J_Q, i], J[J_Q + 1, i], J[J_Q + 2, i] = q0, q1, q2
    for a in range(7):
        for b in range(a, 7):
            Hg[a, b] = Hg[b, a] = _weighted_dot(J[J_C], J[J_ROW_U + a], J[J_ROW_U + b],
                                                J[J_ROW_V + a], J[J_ROW_V + b])
    if second:
        _second_order(J, huber, S)
    return 0.5 * cost


@jit
def _second_order(J, huber, S):
    """Second-order part S (6,6) of the exact Hessian from the per-point rows of J."""
    for a in range(6):
        for b in range(a, 6):
            sab = -_weighted_dot(J[J_CZ], J[J_ALPHA + a], J[J_BETA + b], J[J_BETA + a],
                                 J[J_ALPHA + b])
            if huber > 0:
                sab += _weighted_dot1(J[J_D2], J[J_ALPHA + a], J[J_ALPHA + b])
            S[a, b] = S[b, a] = sab
    # rotation block: c (sym(q a^T) - (a.q) I), Y = sum_i c_i q_i a_i^T
    aq = 0.0
    for a in range(3):
        aq += _weighted_dot1(J[J_C], J[J_Q + a], J[J_ALPHA + a])
    for a in range(3):
        for b in range(a, 3):
            y = 0.5 * (_weighted_dot1(J[J_C], J[J_Q + a], J[J_ALPHA + b])
                       + _weighted_dot1(J[J_C], J[J_Q + b], J[J_ALPHA + a]))
            if a == b:
                y -= aq
            S[3 + a, 3 + b] += y
            if a != b:
                S[3 + b, 3 + a] += y


@jit
def _lm_workspace(N):
    """Scratch arrays of _levenberg_marquardt for N points (allocated once per batch)."""
    return (np.empty((6, 6)), np.empty((7, 7)), np.empty((6, 6)), np.empty((6, 6)),
            np.empty(6), np.empty((3, 3)), np.empty((3, 3)), np.empty(3), np.empty((J_ROWS, N)))


@jit
def _levenberg_marquardt(R, t, X, obs, K, w, huber, max_iterations, tol, cfg, Hg, work):
    """LM / Newton from (R, t) (updated in place), as pnp._levenberg_marquardt for one sample.

    Returns (cost, converged); Hg (7,7) holds the augmented Gauss-Newton matrix at (R, t).
    work: from _lm_workspace. Stops once converged.
    """
    newton_step, tiny_step = cfg[CFG_NEWTON_STEP], cfg[CFG_TINY_STEP]
    S, Hn, Sn, A, step, E, Rn, tn, J = work
    cost = _normal_equations(R, t, X, obs, K, w, huber, Hg, S, False, J)
    lam = 1e-4
    converged = False
    newton = False
    prev_size = math.inf
    st = 1.0 / max(math.sqrt(t[0] * t[0] + t[1] * t[1] + t[2] * t[2]), 1e-9)
    for _ in range(max_iterations):
        for a in range(6):
            for b in range(6):
                A[a, b] = Hg[a, b] + S[a, b] if newton else Hg[a, b]
            A[a, a] += lam * Hg[a, a] + _TINY_DIAG
            step[a] = -Hg[a, 6]
        _lu_solve(A, step)
        _exp_so3(step[3], step[4], step[5], E)
        _matmul3(E, R, Rn)
        for k in range(3):
            tn[k] = t[k] + step[k]
        cost_new = _normal_equations(Rn, tn, X, obs, K, w, huber, Hn, Sn, newton, J)
        size = 0.0
        for k in range(6):
            sk = abs(step[k]) * (st if k < 3 else 1.0)
            if not sk <= size:  # NaN propagates, as torch's amax
                size = sk
        accept = (cost_new <= cost * (1.0 + _SLACK)) or (size < tiny_step)
        if accept:
            R[:, :] = Rn
            t[:] = tn
            Hg[:, :] = Hn
            cost = cost_new
            if newton:
                S[:, :] = Sn
        if size <= tol and lam <= 1.0:
            converged = True
        slow = accept and size < newton_step and size > 0.1 * prev_size and size > 100.0 * tol
        if accept:
            prev_size = size
        lam = min(max(lam * (0.1 if accept else 10.0), 1e-12), 1e12)
        if converged:
            break
        if slow and not newton:
            newton = True
            _normal_equations(R, t, X, obs, K, w, huber, Hn, S, True, J)
    return cost, converged


@jit
def _covariance(Hg, n_pos, cov):
    """Covariance (6,6) = (J^T W J)^-1 sigma^2 into cov (Jacobi-scaled Cholesky); ok flag."""
    d = np.empty(6)
    Hs = np.empty((6, 6))
    L = np.zeros((6, 6))
    for a in range(6):
        d[a] = 1.0 / math.sqrt(max(Hg[a, a], 1e-300))
    for a in range(6):
        for b in range(6):
            Hs[a, b] = Hg[a, b] * d[a] * d[b]
    if not _cholesky(Hs, L):
        return False
    for a in range(6):
        for b in range(a + 1):
            if not math.isfinite(L[a, b]):
                return False
    sigma2 = Hg[6, 6] / max(2.0 * n_pos - 6.0, 1.0)
    e = np.empty(6)
    for j in range(6):
        for a in range(6):
            e[a] = 1.0 if a == j else 0.0
        _cholesky_solve(L, e)
        for a in range(6):
            cov[a, j] = e[a] * d[a] * d[j] * sigma2
    return True


@jit
def _residuals_one(R, t, X, obs, K, out):
    """Reprojection errors (N,) px at (R, t); inf where the depth is <= 0 or non-finite."""
    for i in range(X.shape[0]):
        P0 = R[0, 0] * X[i, 0] + R[0, 1] * X[i, 1] + R[0, 2] * X[i, 2] + t[0]
        P1 = R[1, 0] * X[i, 0] + R[1, 1] * X[i, 1] + R[1, 2] * X[i, 2] + t[1]
        P2 = R[2, 0] * X[i, 0] + R[2, 1] * X[i, 1] + R[2, 2] * X[i, 2] + t[2]
        z = K[2, 0] * P0 + K[2, 1] * P1 + K[2, 2] * P2
        du = (K[0, 0] * P0 + K[0, 1] * P1 + K[0, 2] * P2) / z - obs[i, 0]
        dv = (K[1, 0] * P0 + K[1, 1] * P1 + K[1, 2] * P2) / z - obs[i, 1]
        e = math.sqrt(du * du + dv * dv)
        out[i] = e if (P2 > 0 and math.isfinite(e)) else math.inf


# ------------------------------------------------------------------------------------------
# Batched forward


@jit
def solve_batch(x2d, X, K, w, init, huber, max_iterations, tol, multi_start, cfg):
    """Batched PnP forward (as pnp's torch path) in float64.

    Bx, Bk, Bw and Bi below are 1 or B (broadcast); arrays C-contiguous float64.

    Args:
        x2d: (B,N,2) keypoints, px.
        X: (Bx,N,3) object points, m.
        K: (Bk,3,3) intrinsics.
        w: (Bw,N) weights.
        init: (Bi,6) starting poses rotvec|t, or (0,6) for the closed-form starts.
        huber: Huber delta, px; <= 0 for least squares.
        max_iterations: LM iterations at most.
        tol: convergence threshold on the step.
        multi_start: extra starts for N < SMALL_N.
        cfg: (CFG_SIZE,) settings.

    Returns:
        R (B,3,3), t (B,3), rvec (B,3), cost (B,), converged (B,), valid (B,), covariance
        (B,6,6), residuals (B,N); invalid samples: I, 0, 0, 0, False, False, 0, inf.
    """
    B, N = x2d.shape[0], x2d.shape[1]
    Bx, Bk, Bw, Bi = X.shape[0], K.shape[0], w.shape[0], init.shape[0]
    has_init = Bi > 0
    R_out = np.zeros((B, 3, 3))
    t_out = np.zeros((B, 3))
    rv_out = np.zeros((B, 3))
    cost_out = np.zeros(B)
    conv_out = np.zeros(B, dtype=np.bool_)
    valid_out = np.zeros(B, dtype=np.bool_)
    cov_out = np.zeros((B, 6, 6))
    res_out = np.full((B, N), math.inf)
    # phase 1: input checks and object frames (the multi-start schedule is decided per batch)
    ok = np.zeros(B, dtype=np.bool_)
    planar = np.zeros(B, dtype=np.bool_)
    n_pos = np.zeros(B, dtype=np.int64)
    c0s = np.zeros((B, 3))
    axes_all = np.zeros((B, 3, 3))
    sigmas = np.zeros((B, 3))
    C = np.empty((3, 3))
    lam = np.empty(3)
    V = np.empty((3, 3))
    any_planar = False
    for b in range(B):
        xb, Xb = x2d[b], X[b if Bx > 1 else 0]
        Kb, wb = K[b if Bk > 1 else 0], w[b if Bw > 1 else 0]
        total = 0.0
        wmin = math.inf
        npos = 0
        for i in range(N):
            total += xb[i, 0] + xb[i, 1] + Xb[i, 0] + Xb[i, 1] + Xb[i, 2] + wb[i]
            wmin = min(wmin, wb[i])
            if wb[i] > 0:
                npos += 1
        for i in range(3):
            for j in range(3):
                total += Kb[i, j]
        if has_init:
            for k in range(6):
                total += init[b if Bi > 1 else 0, k]
        good = math.isfinite(total) and wmin >= 0 and npos >= cfg[CFG_MIN_POINTS]
        pl = N < 6  # invalid samples count as the torch path's replacement problem
        if good:
            pl, degenerate = _object_frame(Xb, wb, npos, cfg, c0s[b], axes_all[b], sigmas[b],
                                           C, lam, V)
            good = not degenerate
        ok[b] = good
        planar[b] = pl
        n_pos[b] = npos
        any_planar = any_planar or pl
    small = N < cfg[CFG_SMALL_N] and multi_start and not has_init
    n_starts = 4 if small else (2 if (any_planar and not has_init) else 1)
    early = n_starts > 1 and not any_planar
    first = min(int(cfg[CFG_MULTI_START_ITERATIONS]), max_iterations) if early else max_iterations
    # phase 2: solve each valid sample
    SR = np.empty((4, 3, 3))
    St = np.empty((4, 3))
    SH = np.empty((4, 7, 7))
    scost = np.empty(4)
    sconv = np.zeros(4, dtype=np.bool_)
    work = _lm_workspace(N)
    alpha = np.empty((8, N))
    G = np.empty((4, 4, 4))
    M = np.empty((12, 12))
    L = np.empty((12, 12))
    for b in range(B):
        if not ok[b]:
            R_out[b, 0, 0] = R_out[b, 1, 1] = R_out[b, 2, 2] = 1.0
            continue
        xb, Xb = x2d[b], X[b if Bx > 1 else 0]
        Kb, wb = K[b if Bk > 1 else 0], w[b if Bw > 1 else 0]
        c0, axes, sigma = c0s[b], axes_all[b], sigmas[b]
        ns = 1
        if has_init:
            ib = b if Bi > 1 else 0
            _rotvec_to_matrix(init[ib, 0], init[ib, 1], init[ib, 2], SR[0])
            St[0, 0], St[0, 1], St[0, 2] = init[ib, 3], init[ib, 4], init[ib, 5]
        else:
            _epnp(Xb, xb, Kb, wb, c0, axes, sigma, planar[b], SR[0], St[0], alpha, G, M, L)
            if small:
                _epnp(Xb, xb, Kb, wb, c0, axes, sigma, True, SR[1], St[1], alpha, G, M, L)
                _mirror_start(SR[0], St[0], c0, axes, SR[2], St[2])
                _mirror_start(SR[1], St[1], c0, axes, SR[3], St[3])
                ns = 4
            elif planar[b]:
                _mirror_start(SR[0], St[0], c0, axes, SR[1], St[1])
                ns = 2
        best = 0
        for k in range(ns):
            scost[k], sconv[k] = _levenberg_marquardt(SR[k], St[k], Xb, xb, Kb, wb, huber,
                                                      first, tol, cfg, SH[k], work)
            ck = scost[k] if math.isfinite(scost[k]) else math.inf
            cb = scost[best] if math.isfinite(scost[best]) else math.inf
            if ck < cb:
                best = k
        Rb, tb, Hg = SR[best], St[best], SH[best]
        cost, conv = scost[best], sconv[best]
        if early and max_iterations > first and not conv:
            cost, conv = _levenberg_marquardt(Rb, tb, Xb, xb, Kb, wb, huber,
                                              max_iterations - first, tol, cfg, Hg, work)
        # validity, covariance, outputs
        good = math.isfinite(cost)
        for i in range(3):
            good = good and math.isfinite(tb[i])
            for j in range(3):
                good = good and math.isfinite(Rb[i, j])
        for i in range(N):
            depth = Rb[2, 0] * Xb[i, 0] + Rb[2, 1] * Xb[i, 1] + Rb[2, 2] * Xb[i, 2] + tb[2]
            if not (depth > 0 or wb[i] <= 0):
                good = False
        if good:
            good = _covariance(Hg, n_pos[b], cov_out[b])
            for a in range(6):
                for c in range(6):
                    good = good and math.isfinite(cov_out[b, a, c])
        if not good:
            cov_out[b, :, :] = 0.0
            R_out[b, 0, 0] = R_out[b, 1, 1] = R_out[b, 2, 2] = 1.0
            continue
        valid_out[b] = True
        R_out[b] = Rb
        t_out[b] = tb
        _matrix_to_rotvec(Rb, rv_out[b])
        cost_out[b] = cost
        conv_out[b] = conv
        _residuals_one(Rb, tb, Xb, xb, Kb, res_out[b])
    return R_out, t_out, rv_out, cost_out, conv_out, valid_out, cov_out, res_out


@jit
def residuals_batch(R, t, x2d, X, K, valid):
    """Reprojection errors (B,N) px at poses R (B,3,3), t (B,3).

    +inf for invalid samples, depths <= 0 and non-finite values. X (Bx,N,3), K (Bk,3,3)
    broadcast as in solve_batch.
    """
    B, N = x2d.shape[0], x2d.shape[1]
    Bx, Bk = X.shape[0], K.shape[0]
    out = np.full((B, N), math.inf)
    for b in range(B):
        if valid[b]:
            _residuals_one(R[b], t[b], X[b if Bx > 1 else 0], x2d[b], K[b if Bk > 1 else 0],
                           out[b])
    return out


# ------------------------------------------------------------------------------------------
# Implicit backward


@jit
def backward_batch(x2d, X, K, w, R, t, rvec, valid, huber, gR, gt, grv):
    """Vector-Jacobian product of the implicit solution (as pnp._ImplicitPnP).

    The outputs to first order: R = (I + [dtheta]x) R_hat, t = t_hat + dt,
    rvec = rvec_hat + J_l^-1 dtheta. The upstream gradients give g_xi (B,6); u solves the
    damped exact-Hessian system H u = g_xi; the result is the gradient of -u . dC/dxi w.r.t.
    x2d, X, K, w, by hand-written reverse mode.

    Args:
        x2d: (B,N,2), as solve_batch (so are X, K, w and huber).
        X: (Bx,N,3).
        K: (Bk,3,3).
        w: (Bw,N).
        R: (B,3,3) solve_batch's output (so are t, rvec and valid).
        t: (B,3).
        rvec: (B,3).
        valid: (B,) bool.
        huber: Huber delta, px; <= 0 for least squares.
        gR: (B,3,3) upstream gradient of R.
        gt: (B,3) upstream gradient of t.
        grv: (B,3) upstream gradient of rvec.

    Returns:
        g_x2d (B,N,2), g_X (Bx,N,3), g_K (Bk,3,3), g_w (Bw,N); invalid samples contribute 0.
    """
    B, N = x2d.shape[0], x2d.shape[1]
    Bx, Bk, Bw = X.shape[0], K.shape[0], w.shape[0]
    g_x2d = np.zeros((B, N, 2))
    g_X = np.zeros((Bx, N, 3))
    g_K = np.zeros((Bk, 3, 3))
    g_w = np.zeros((Bw, N))
    Hg = np.empty((7, 7))
    S = np.empty((6, 6))
    Jw = np.empty((J_ROWS, N))
    H = np.empty((6, 6))
    J = np.empty((3, 3))
    gx = np.empty(6)
    d = np.empty(6)
    for b in range(B):
        if not valid[b]:
            continue
        bx, bk, bw = b if Bx > 1 else 0, b if Bk > 1 else 0, b if Bw > 1 else 0
        Rb, tb, Kb, Xb, xb, wb = R[b], t[b], K[bk], X[bx], x2d[b], w[bw]
        G = gR[b]
        # g_xi = (dL/dt, dL/dtheta)
        gx[0], gx[1], gx[2] = gt[b, 0], gt[b, 1], gt[b, 2]
        g0 = g1 = g2 = 0.0
        for c in range(3):
            g0 += G[2, c] * Rb[1, c] - G[1, c] * Rb[2, c]
            g1 += G[0, c] * Rb[2, c] - G[2, c] * Rb[0, c]
            g2 += G[1, c] * Rb[0, c] - G[0, c] * Rb[1, c]
        _left_jacobian_inverse(rvec[b], J)
        for k in range(3):
            gk = J[0, k] * grv[b, 0] + J[1, k] * grv[b, 1] + J[2, k] * grv[b, 2]
            if k == 0:
                g0 += gk
            elif k == 1:
                g1 += gk
            else:
                g2 += gk
        gx[3], gx[4], gx[5] = g0, g1, g2
        # u = H^-1 g_xi (exact Hessian, Jacobi scaling, relative damping 1e-12)
        _normal_equations(Rb, tb, Xb, xb, Kb, wb, huber, Hg, S, True, Jw)
        for a in range(6):
            for c in range(6):
                H[a, c] = Hg[a, c] + S[a, c]
        for a in range(6):
            d[a] = 1.0 / math.sqrt(max(abs(H[a, a]), 1e-300))
        for a in range(6):
            for c in range(6):
                H[a, c] *= d[a] * d[c]
            H[a, a] += 1e-12
            gx[a] *= d[a]
        ok = _lu_solve(H, gx)
        for a in range(6):
            gx[a] *= d[a]
            ok = ok and math.isfinite(gx[a])
        if not ok:
            continue
        v10, v11, v12 = -gx[0], -gx[1], -gx[2]  # v = -u
        v20, v21, v22 = -gx[3], -gx[4], -gx[5]
        _point_gradients(Rb, tb, Xb, xb, Kb, wb, huber, v10, v11, v12, v20, v21, v22,
                         g_x2d[b], g_X[bx], g_K[bk], g_w[bw])
    return g_x2d, g_X, g_K, g_w


@jit
def _point_gradients(R, t, X, obs, K, w, huber, v10, v11, v12, v20, v21, v22,
                     g_obs, g_X, g_K, g_w):
    """Accumulate the gradient of L = v . g(xi = 0) over the points.

    g = sum_i c_i [a_i; q_i x a_i], a_i = (dr_i/dP)^T r_i, c_i = w_i rho'(s_i). With
    m = v1 + v2 x q and e = (dr/dP) m: L_i = c_i (r_i . e_i); reverse mode through e, uv, z,
    P = R X + t, K and the robust weight.
    """
    N = X.shape[0]
    K00, K01, K02, K10, K11, K12 = K[0, 0], K[0, 1], K[0, 2], K[1, 0], K[1, 1], K[1, 2]
    k0, k1, k2 = K[2, 0], K[2, 1], K[2, 2]
    gK00 = gK01 = gK02 = gK10 = gK11 = gK12 = gK20 = gK21 = gK22 = 0.0
    for i in range(N):
        X0, X1, X2 = X[i, 0], X[i, 1], X[i, 2]
        q0 = R[0, 0] * X0 + R[0, 1] * X1 + R[0, 2] * X2
        q1 = R[1, 0] * X0 + R[1, 1] * X1 + R[1, 2] * X2
        q2 = R[2, 0] * X0 + R[2, 1] * X1 + R[2, 2] * X2
        P0, P1, P2 = q0 + t[0], q1 + t[1], q2 + t[2]
        z = k0 * P0 + k1 * P1 + k2 * P2
        iz = 1.0 / z
        u = (K00 * P0 + K01 * P1 + K02 * P2) * iz
        v = (K10 * P0 + K11 * P1 + K12 * P2) * iz
        r0, r1 = u - obs[i, 0], v - obs[i, 1]
        s = r0 * r0 + r1 * r1
        wi = w[i]
        drho, ddrho = 1.0, 0.0
        if huber > 0:
            root = math.sqrt(max(s, 1e-300))
            if root > huber:
                drho = huber / root
                ddrho = -0.5 * huber / (root * s) if s > 1e-300 else 0.0
        c = wi * drho
        m0 = v10 + v21 * q2 - v22 * q1
        m1 = v11 + v22 * q0 - v20 * q2
        m2 = v12 + v20 * q1 - v21 * q0
        Km0 = K00 * m0 + K01 * m1 + K02 * m2
        Km1 = K10 * m0 + K11 * m1 + K12 * m2
        km = k0 * m0 + k1 * m1 + k2 * m2
        e0, e1 = (Km0 - u * km) * iz, (Km1 - v * km) * iz
        h = r0 * e0 + r1 * e1
        # L = c h
        g_w[i] += h * drho
        gs = h * wi * ddrho
        gr0 = c * e0 + 2.0 * r0 * gs
        gr1 = c * e1 + 2.0 * r1 * gs
        ge0, ge1 = c * r0, c * r1
        g_obs[i, 0] -= gr0
        g_obs[i, 1] -= gr1
        gKm0, gKm1 = ge0 * iz, ge1 * iz
        gkm = -(ge0 * u + ge1 * v) * iz
        gu = gr0 - ge0 * km * iz
        gv = gr1 - ge1 * km * iz
        gz = -(ge0 * e0 + ge1 * e1 + gu * u + gv * v) * iz
        gKP0, gKP1, gKP2 = gu * iz, gv * iz, gz
        # KP = K P and (Km, km) = K m
        gK00 += gKP0 * P0 + gKm0 * m0
        gK01 += gKP0 * P1 + gKm0 * m1
        gK02 += gKP0 * P2 + gKm0 * m2
        gK10 += gKP1 * P0 + gKm1 * m0
        gK11 += gKP1 * P1 + gKm1 * m1
        gK12 += gKP1 * P2 + gKm1 * m2
        gK20 += gKP2 * P0 + gkm * m0
        gK21 += gKP2 * P1 + gkm * m1
        gK22 += gKP2 * P2 + gkm * m2
        gP0 = K00 * gKP0 + K10 * gKP1 + k0 * gKP2
        gP1 = K01 * gKP0 + K11 * gKP1 + k1 * gKP2
        gP2 = K02 * gKP0 + K12 * gKP1 + k2 * gKP2
        gm0 = K00 * gKm0 + K10 * gKm1 + k0 * gkm
        gm1 = K01 * gKm0 + K11 * gKm1 + k1 * gkm
        gm2 = K02 * gKm0 + K12 * gKm1 + k2 * gkm
        # m = v1 + v2 x q: dL/dq += gm x v2; P = q + t
        gq0 = gP0 + gm1 * v22 - gm2 * v21
        gq1 = gP1 + gm2 * v20 - gm0 * v22
        gq2 = gP2 + gm0 * v21 - gm1 * v20
        g_X[i, 0] += R[0, 0] * gq0 + R[1, 0] * gq1 + R[2, 0] * gq2
        g_X[i, 1] += R[0, 1] * gq0 + R[1, 1] * gq1 + R[2, 1] * gq2
        g_X[i, 2] += R[0, 2] * gq0 + R[1, 2] * gq1 + R[2, 2] * gq2
    g_K[0, 0] += gK00
    g_K[0, 1] += gK01
    g_K[0, 2] += gK02
    g_K[1, 0] += gK10
    g_K[1, 1] += gK11
    g_K[1, 2] += gK12
    g_K[2, 0] += gK20
    g_K[2, 1] += gK21
    g_K[2, 2] += gK22


# ------------------------------------------------------------------------------------------
# RANSAC


@jit
def ransac_prepare(x2d, X, w):
    """Usable points (B,N) (weight > 0, finite values) and copies with the others zeroed.

    Returns usable, x2d (B,N,2), X (B,N,3) (broadcast from (Bx,N,3)), w (B,N) (from (Bw,N)).
    """
    B, N = x2d.shape[0], x2d.shape[1]
    Bx, Bw = X.shape[0], w.shape[0]
    usable = np.zeros((B, N), dtype=np.bool_)
    xz = np.zeros((B, N, 2))
    Xz = np.zeros((B, N, 3))
    wz = np.zeros((B, N))
    for b in range(B):
        Xb, wb = X[b if Bx > 1 else 0], w[b if Bw > 1 else 0]
        for i in range(N):
            fin = wb[i] > 0 and math.isfinite(wb[i])
            for k in range(2):
                fin = fin and math.isfinite(x2d[b, i, k])
            for k in range(3):
                fin = fin and math.isfinite(Xb[i, k])
            if fin:
                usable[b, i] = True
                xz[b, i, 0], xz[b, i, 1] = x2d[b, i, 0], x2d[b, i, 1]
                Xz[b, i, 0], Xz[b, i, 1], Xz[b, i, 2] = Xb[i, 0], Xb[i, 1], Xb[i, 2]
                wz[b, i] = wb[i]
    return usable, xz, Xz, wz


@jit
def _msac_errors(R, t, X, obs, K, err, depth):
    """Errors (N,) px and depths (N,) m as ransac._reprojection_error (|z| floored by 1e-12)."""
    for i in range(X.shape[0]):
        P0 = R[0, 0] * X[i, 0] + R[0, 1] * X[i, 1] + R[0, 2] * X[i, 2] + t[0]
        P1 = R[1, 0] * X[i, 0] + R[1, 1] * X[i, 1] + R[1, 2] * X[i, 2] + t[1]
        P2 = R[2, 0] * X[i, 0] + R[2, 1] * X[i, 1] + R[2, 2] * X[i, 2] + t[2]
        z = K[2, 0] * P0 + K[2, 1] * P1 + K[2, 2] * P2
        if abs(z) < 1e-12:
            z = 1e-12
        du = (K[0, 0] * P0 + K[0, 1] * P1 + K[0, 2] * P2) / z - obs[i, 0]
        dv = (K[1, 0] * P0 + K[1, 1] * P1 + K[1, 2] * P2) / z - obs[i, 1]
        err[i] = math.sqrt(du * du + dv * dv)
        depth[i] = P2


@jit
def ransac_select(xz, Xz, K, wz, usable, idx, threshold, huber, max_iterations, tol,
                  hyp_iterations, hyp_tol, cfg):
    """Hypotheses, MSAC scoring and local optimisation of pnp.solve_pnp_ransac.

    Args:
        xz: (B,N,2) keypoints, from ransac_prepare (as Xz, wz and usable).
        Xz: (B,N,3) object points.
        K: (Bk,3,3) intrinsics.
        wz: (B,N) weights.
        usable: (B,N) bool.
        idx: (B,H,m) minimal sets.
        threshold: inlier threshold, px.
        huber: Huber delta of the refinement, px (<= 0: least squares).
        max_iterations: LM iterations of the refinement.
        tol: convergence threshold of the refinement.
        hyp_iterations: LM iterations of the hypotheses.
        hyp_tol: their convergence threshold.
        cfg: (CFG_SIZE,) settings.

    Returns:
        inliers (B,N) bool and the starting pose init (B,6) of the final refinement.
    """
    B, N = xz.shape[0], xz.shape[1]
    H, m = idx.shape[1], idx.shape[2]
    Bk = K.shape[0]
    hx = np.empty((B * H, m, 2))
    hX = np.empty((B * H, m, 3))
    hK = np.empty((B * H, 3, 3))
    for b in range(B):
        for h in range(H):
            bh = b * H + h
            hK[bh] = K[b if Bk > 1 else 0]
            for j in range(m):
                i = idx[b, h, j]
                hx[bh, j, 0], hx[bh, j, 1] = xz[b, i, 0], xz[b, i, 1]
                hX[bh, j, 0], hX[bh, j, 1], hX[bh, j, 2] = Xz[b, i, 0], Xz[b, i, 1], Xz[b, i, 2]
    ones = np.ones((1, m))
    no_init = np.zeros((0, 6))
    Rh, th, rvh, _, _, vh, _, _ = solve_batch(hx, hX, hK, ones, no_init, -1.0, hyp_iterations,
                                              hyp_tol, False, cfg)
    thr2 = threshold * threshold
    err = np.empty(N)
    depth = np.empty(N)
    inliers = np.zeros((B, N), dtype=np.bool_)
    init = np.zeros((B, 6))
    for b in range(B):
        Kb = K[b if Bk > 1 else 0]
        best, best_score = 0, math.inf
        for h in range(H):
            bh = b * H + h
            _msac_errors(Rh[bh], th[bh], Xz[b], xz[b], Kb, err, depth)
            score = 0.0
            for i in range(N):
                ok = usable[b, i] and depth[i] > 0 and math.isfinite(err[i])
                tr = min(err[i], threshold) ** 2 if ok else thr2
                score += tr * wz[b, i]
            if not vh[bh]:
                score = math.inf
            if score < best_score:
                best, best_score = h, score
        bh = b * H + best
        _msac_errors(Rh[bh], th[bh], Xz[b], xz[b], Kb, err, depth)
        for i in range(N):
            inliers[b, i] = (usable[b, i] and depth[i] > 0 and math.isfinite(err[i])
                             and err[i] < threshold)
        init[b, :3] = rvh[bh]
        init[b, 3:] = th[bh]
    # local optimisation: refine on the inliers from the hypothesis and from a fresh start
    w_in = wz * inliers
    R1, t1, rv1, c1, _, v1, _, _ = solve_batch(xz, Xz, K, w_in, init, huber, max_iterations,
                                               tol, True, cfg)
    R2, t2, rv2, c2, _, v2, _, _ = solve_batch(xz, Xz, K, w_in, no_init, huber, max_iterations,
                                               tol, True, cfg)
    for b in range(B):
        Kb = K[b if Bk > 1 else 0]
        second = v2[b] and (not v1[b] or c2[b] < c1[b])
        Rr, tr_, rvr, vr = (R2[b], t2[b], rv2[b], v2[b]) if second else (R1[b], t1[b], rv1[b],
                                                                        v1[b])
        _msac_errors(Rr, tr_, Xz[b], xz[b], Kb, err, depth)
        n_better = 0
        n_old = 0
        for i in range(N):
            if usable[b, i] and depth[i] > 0 and err[i] < threshold:
                n_better += 1
            if inliers[b, i]:
                n_old += 1
        if vr and n_better >= n_old:
            for i in range(N):
                inliers[b, i] = usable[b, i] and depth[i] > 0 and err[i] < threshold
            init[b, :3] = rvr
            init[b, 3:] = tr_
    return inliers, init
