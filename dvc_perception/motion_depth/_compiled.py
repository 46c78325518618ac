# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Compiled (numba, float32, CPU) kernels of depth from motion: plane-sweep ZNCC cost, SGM.

The Python modules (`sweep`, `estimator`) hold the API, the checks and the documentation of each
quantity; these kernels hold the per-pixel loops. Imported lazily (importing numba costs ~1 s);
machine code is cached on disk as in `geometry.pnp_compiled`.

Conventions: images are (H, W) float32 grey in [0, 1]; pixel (0, 0) is the centre of the top-left
pixel; a plane hypothesis is an inverse depth ``w`` [1/m] of the reference camera (fronto-parallel
plane z = 1/w); a reference pixel p maps into a source image at ``q = A p~ + b w`` (projective,
``A = K_s R K_r^-1``, ``b = K_s t``, (R, t) taking reference-camera points into the source camera).
"""

from __future__ import annotations

import numba
import numpy as np

from dvc_perception.geometry.numba_jit import jit


@jit
def _box_sum(img, radius, out):
    """Sum of `img` (H, W) over (2r+1)^2 windows clipped to the image, into `out` (H, W)."""
    H, W = img.shape
    rows = np.empty((H, W), np.float32)
    for y in range(H):
        acc = np.float32(0.0)
        for x in range(min(radius, W)):
            acc += img[y, x]
        for x in range(W):
            if x + radius < W:
                acc += img[y, x + radius]
            if x - radius - 1 >= 0:
                acc -= img[y, x - radius - 1]
            rows[y, x] = acc
    for x in range(W):
        acc = np.float32(0.0)
        for y in range(min(radius, H)):
            acc += rows[y, x]
        for y in range(H):
            if y + radius < H:
                acc += rows[y + radius, x]
            if y - radius - 1 >= 0:
                acc -= rows[y - radius - 1, x]
            out[y, x] = acc


@jit
def window_counts(H, W, radius):
    """Pixels in each clipped (2r+1)^2 window, (H, W) float32."""
    ones = np.ones((H, W), np.float32)
    out = np.empty((H, W), np.float32)
    _box_sum(ones, radius, out)
    return out


@jit
def reference_stats(ref, radius):
    """Window mean (H, W) and 1/std (H, W, 0 where flat) of the reference image."""
    H, W = ref.shape
    n = window_counts(H, W, radius)
    s1 = np.empty((H, W), np.float32)
    s2 = np.empty((H, W), np.float32)
    _box_sum(ref, radius, s1)
    _box_sum(ref * ref, radius, s2)
    mean = s1 / n
    var = s2 / n - mean * mean
    inv_std = np.zeros((H, W), np.float32)
    for y in range(H):
        for x in range(W):
            if var[y, x] > 1e-6:
                inv_std[y, x] = 1.0 / np.sqrt(var[y, x])
    return mean, inv_std


@jit
def _warp_plane(src, A, b, w, warped, valid):
    """Sample `src` (bilinear) where plane `w` maps each reference pixel, into `warped`.

    `valid` is False where the point is behind the source camera or outside its image
    (clamped samples there).
    """
    H, W = warped.shape
    for y in range(H):
        for x in range(W):
            qz = A[2, 0] * x + A[2, 1] * y + A[2, 2] + b[2] * w
            if qz <= 1e-6:
                warped[y, x] = 0.0
                valid[y, x] = False
                continue
            u = (A[0, 0] * x + A[0, 1] * y + A[0, 2] + b[0] * w) / qz
            v = (A[1, 0] * x + A[1, 1] * y + A[1, 2] + b[1] * w) / qz
            inside = u >= 0.0 and v >= 0.0 and u <= W - 1.0 and v <= H - 1.0
            valid[y, x] = inside
            if not inside:
                u = min(max(u, 0.0), W - 1.0)
                v = min(max(v, 0.0), H - 1.0)
            x0 = min(int(u), W - 2)
            y0 = min(int(v), H - 2)
            fx = np.float32(u - x0)
            fy = np.float32(v - y0)
            top = src[y0, x0] + fx * (src[y0, x0 + 1] - src[y0, x0])
            bot = src[y0 + 1, x0] + fx * (src[y0 + 1, x0 + 1] - src[y0 + 1, x0])
            warped[y, x] = top + fy * (bot - top)


@jit(parallel=True)
def sweep_zncc(ref, ref_mean, ref_inv_std, src, A, b, inv_depths, radius, cost_sum, cost_count):
    """Add 1 - ZNCC of `ref` with `src` warped by each plane to `cost_sum` (D, H, W).

    `cost_count` (D, H, W) counts the sources that saw each (plane, pixel): a pixel whose plane
    point falls behind the source camera or outside its image is skipped for that source. ZNCC is
    over (2r+1)^2 windows clipped to the image; a flat window (no texture) costs 1 (no
    information). Window sums are running sums: horizontal per row, then vertical.
    """
    H, W = ref.shape
    D = inv_depths.shape[0]
    n = window_counts(H, W, radius)
    for d in numba.prange(D):
        warped = np.empty((H, W), np.float32)
        valid = np.empty((H, W), np.bool_)
        _warp_plane(src, A, b, inv_depths[d], warped, valid)
        h1 = np.empty((H, W), np.float32)
        h2 = np.empty((H, W), np.float32)
        h12 = np.empty((H, W), np.float32)
        for y in range(H):
            a1 = np.float32(0.0)
            a2 = np.float32(0.0)
            a12 = np.float32(0.0)
            for x in range(min(radius, W)):
                a1 += warped[y, x]
                a2 += warped[y, x] * warped[y, x]
                a12 += warped[y, x] * ref[y, x]
            for x in range(W):
                if x + radius < W:
                    v = warped[y, x + radius]
                    a1 += v
                    a2 += v * v
                    a12 += v * ref[y, x + radius]
                if x - radius - 1 >= 0:
                    v = warped[y, x - radius - 1]
                    a1 -= v
                    a2 -= v * v
                    a12 -= v * ref[y, x - radius - 1]
                h1[y, x] = a1
                h2[y, x] = a2
                h12[y, x] = a12
        s1 = np.zeros(W, np.float32)
        s2 = np.zeros(W, np.float32)
        s12 = np.zeros(W, np.float32)
        for y in range(min(radius, H)):
            for x in range(W):
                s1[x] += h1[y, x]
                s2[x] += h2[y, x]
                s12[x] += h12[y, x]
        for y in range(H):
            if y + radius < H:
                for x in range(W):
                    s1[x] += h1[y + radius, x]
                    s2[x] += h2[y + radius, x]
                    s12[x] += h12[y + radius, x]
            if y - radius - 1 >= 0:
                for x in range(W):
                    s1[x] -= h1[y - radius - 1, x]
                    s2[x] -= h2[y - radius - 1, x]
                    s12[x] -= h12[y - radius - 1, x]
            for x in range(W):
                if not valid[y, x]:
                    continue
                inv_n = 1.0 / n[y, x]
                m = s1[x] * inv_n
                var = s2[x] * inv_n - m * m
                c = 1.0
                if var > 1e-6 and ref_inv_std[y, x] > 0.0:
                    cov = s12[x] * inv_n - m * ref_mean[y, x]
                    c = 1.0 - cov * ref_inv_std[y, x] / np.sqrt(var)
                cost_sum[d, y, x] += min(max(c, 0.0), 2.0)
                cost_count[d, y, x] += 1.0


@jit(parallel=True)
def mean_cost(cost_sum, cost_count):
    """Cost per source that saw the point, (H, W, D), from sums and counts (D, H, W).

    1 (no information) where no source saw it.
    """
    D, H, W = cost_sum.shape
    out = np.empty((H, W, D), np.float32)
    for y in numba.prange(H):
        for x in range(W):
            for d in range(D):
                c = cost_count[d, y, x]
                out[y, x, d] = cost_sum[d, y, x] / c if c > 0 else 1.0
    return out


@jit
def _path_step(cost_px, prev, cur, P1, P2):
    """One SGM recurrence step for one pixel's costs `cost_px` (D,), into `cur`.

    ``cur[d] = C[d] + min(prev[d], prev[d+-1] + P1, min prev + P2) - min prev``.
    """
    D = cost_px.shape[0]
    mn = prev[0]
    for d in range(1, D):
        if prev[d] < mn:
            mn = prev[d]
    jump = mn + P2
    for d in range(D):
        best = prev[d]
        if d > 0 and prev[d - 1] + P1 < best:
            best = prev[d - 1] + P1
        if d + 1 < D and prev[d + 1] + P1 < best:
            best = prev[d + 1] + P1
        if jump < best:
            best = jump
        cur[d] = cost_px[d] + best - mn


@jit
def _path(cost, out, P2s, P1, y, x, dy, dx):
    """Aggregate one SGM path starting at (y, x), stepping (dy, dx) until it leaves the image."""
    H, W, D = cost.shape
    prev = np.empty(D, np.float32)
    cur = np.empty(D, np.float32)
    for d in range(D):
        prev[d] = cost[y, x, d]
        out[y, x, d] += prev[d]
    y += dy
    x += dx
    while 0 <= y < H and 0 <= x < W:
        _path_step(cost[y, x], prev, cur, P1, P2s[y, x])
        for d in range(D):
            prev[d] = cur[d]
            out[y, x, d] += cur[d]
        y += dy
        x += dx


@jit(parallel=True)
def sgm(cost, P1, P2s, diagonals):
    """Semi-global aggregation of `cost` (H, W, D) along 4 paths, or 8 with `diagonals`.

    P1 penalises a change of one plane between neighbours, P2s (H, W) a larger jump (lowered at
    image edges by the caller). Returns the summed path costs (H, W, D). Paths of one direction
    never share a pixel, so each direction's paths run in parallel.
    """
    H, W, D = cost.shape
    out = np.zeros((H, W, D), np.float32)
    for y in numba.prange(H):
        _path(cost, out, P2s, P1, y, 0, 0, 1)
        _path(cost, out, P2s, P1, y, W - 1, 0, -1)
    for x in numba.prange(W):
        _path(cost, out, P2s, P1, 0, x, 1, 0)
        _path(cost, out, P2s, P1, H - 1, x, -1, 0)
    if diagonals:
        n = H + W - 1
        # Each diagonal starts on the top row or the left/right column (or bottom for upward).
        for k in numba.prange(n):
            if k < W:
                _path(cost, out, P2s, P1, 0, k, 1, 1)
            else:
                _path(cost, out, P2s, P1, k - W + 1, 0, 1, 1)
        for k in numba.prange(n):
            if k < W:
                _path(cost, out, P2s, P1, H - 1, W - 1 - k, -1, -1)
            else:
                _path(cost, out, P2s, P1, H - 1 - (k - W + 1), W - 1, -1, -1)
        for k in numba.prange(n):
            if k < W:
                _path(cost, out, P2s, P1, 0, W - 1 - k, 1, -1)
            else:
                _path(cost, out, P2s, P1, k - W + 1, W - 1, 1, -1)
        for k in numba.prange(n):
            if k < W:
                _path(cost, out, P2s, P1, H - 1, k, -1, 1)
            else:
                _path(cost, out, P2s, P1, H - 1 - (k - W + 1), 0, -1, 1)
    return out


@jit(parallel=True)
def winner_take_all(agg):
    """Best plane (H, W) float32 of `agg` (H, W, D), parabola-refined, and uniqueness ratio.

    The ratio is best / second best outside the winner's +-1 neighbours (1: ambiguous).
    """
    H, W, D = agg.shape
    idx = np.empty((H, W), np.float32)
    ratio = np.ones((H, W), np.float32)
    for y in numba.prange(H):
        for x in range(W):
            c = agg[y, x]
            k = 0
            best = c[0]
            for d in range(1, D):
                if c[d] < best:
                    best = c[d]
                    k = d
            second = np.inf
            for d in range(D):
                if abs(d - k) > 1 and c[d] < second:
                    second = c[d]
            off = 0.0
            if 0 < k < D - 1:
                den = c[k - 1] - 2.0 * best + c[k + 1]
                if den > 1e-9:
                    off = 0.5 * (c[k - 1] - c[k + 1]) / den
            idx[y, x] = k + off
            if second < np.inf and second > 0:
                ratio[y, x] = best / second
    return idx, ratio


@jit
def forward_warp(inv_depth, variance, age, A, b):
    """Move an inverse-depth map into another camera: z-buffered nearest splat.

    `inv_depth`, `variance`, `age` (h, w) of camera P (inverse depth NaN or <= 0: unknown); a
    pixel (x, y) of P with inverse depth w maps to the new camera at ``q = A [x, y, 1] + b w``
    (A = K R K^-1, b = K t, (R, t) taking P's points into the new camera), its new inverse
    depth being ``w / q_z``. The variance is propagated to first order, ``(w_new / w)^4``
    (d w_new / d w = (w_new / w)^2: exact for a pure translation, approximate with rotation);
    the age is carried unchanged. Returns the new inverse depth, variance and age (h, w), NaN
    (age -1) where nothing landed; the nearest point wins.
    """
    H, W = inv_depth.shape
    out = np.full((H, W), np.nan, np.float32)
    out_var = np.full((H, W), np.nan, np.float32)
    out_age = np.full((H, W), -1, np.int32)
    for y in range(H):
        for x in range(W):
            w = inv_depth[y, x]
            if not (w > 0.0):
                continue
            qx = A[0, 0] * x + A[0, 1] * y + A[0, 2] + b[0] * w
            qy = A[1, 0] * x + A[1, 1] * y + A[1, 2] + b[1] * w
            qz = A[2, 0] * x + A[2, 1] * y + A[2, 2] + b[2] * w
            if qz <= 1e-6:
                continue
            u = int(np.floor(qx / qz + 0.5))
            v = int(np.floor(qy / qz + 0.5))
            if u < 0 or v < 0 or u >= W or v >= H:
                continue
            w_new = w / qz
            if np.isnan(out[v, u]) or w_new > out[v, u]:
                ratio = w_new / w
                out[v, u] = w_new
                out_var[v, u] = variance[y, x] * ratio * ratio * ratio * ratio
                out_age[v, u] = age[y, x]
    return out, out_var, out_age
