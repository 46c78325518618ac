# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Compiled (numba, float64, CPU) kernels of the contour / region refiner.

The Python modules `contour`, `region` and `refiner` hold the API, the documentation of each
quantity and the input checks; these kernels hold the per-point and per-pixel loops. Imported
lazily (importing numba costs ~1 s); machine code is cached on disk (``cache=True``, as
`geometry.pnp_compiled`).

Conventions shared by every kernel: images are (H, W, 3) uint8 RGB, pixel (0, 0) is the centre
of the top-left pixel; K is a 3x3 pinhole matrix [[fx, s, cx], [0, fy, cy], [0, 0, 1]];
correspondence lines have a centre c (px) and a unit normal n pointing out of the silhouette;
the signed position x along a line is ``x = n . (p - c)`` px, negative inside the object.
"""

from __future__ import annotations

import math

import numpy as np

from dvc_perception.geometry.numba_jit import jit

# ------------------------------------------------------------------------------------------
# Contour extraction from a hard render


@jit
def boundary_pixels(mask):
    """Row-major indices (M,) int64 of mask pixels with a 4-neighbour outside the mask.

    The outermost rows and columns are skipped (callers leave a margin around the object).
    """
    H, W = mask.shape
    out = np.empty(H * W, np.int64)
    m = 0
    for y in range(1, H - 1):
        for x in range(1, W - 1):
            if mask[y, x] and not (mask[y - 1, x] and mask[y + 1, x]
                                   and mask[y, x - 1] and mask[y, x + 1]):
                out[m] = y * W + x
                m += 1
    return out[:m]


@jit
def _march(mask, x, y, nx, ny, sign, inside, max_dist):
    """Whole pixels stepped from (x, y) along sign * n while the mask equals `inside`.

    Leaving the rendered window counts as staying outside (the window holds the object).
    """
    H, W = mask.shape
    d = 0
    for i in range(1, max_dist + 1):
        xx = int(math.floor(x + sign * i * nx + 0.5))
        yy = int(math.floor(y + sign * i * ny + 0.5))
        if xx < 0 or yy < 0 or xx >= W or yy >= H:
            if inside:
                break
            return max_dist
        if mask[yy, xx] != inside:
            break
        d = i
    return d


@jit
def extract_contour(mask, face_buf, px, z, faces, K, R, t, n_points, radius, max_dist,
                    points_obj, normals_obj, inner_m, outer_m):
    """Sample up to `n_points` silhouette points of a render and lift them to the object frame.

    Args:
        mask: (H, W) bool silhouette of the render.
        face_buf: (H * W,) int64 visible face per pixel (-1: none), row-major.
        px: (V, 2) projected vertices of the render, px.
        z: (V,) vertex depths, m.
        faces: (F, 3) int64.
        K: (3, 3) intrinsics of the render, px.
        R: (3, 3) rotation of the render's pose, object in camera.
        t: (3,) its translation, m.
        n_points: how many points to sample (evenly over the boundary pixels, row-major order).
        radius: radius [px] of the disc whose outside pixels give the normal direction.
        max_dist: cap of the inner / outer distances, px.
        points_obj: (n_points, 3) out: contour points, object frame, m.
        normals_obj: (n_points, 3) out: outward contour normal lifted to 3D, object frame.
        inner_m: (n_points,) out: distance along -n that stays inside the silhouette, m.
        outer_m: (n_points,) out: distance along +n that stays outside, m (capped).

    Returns:
        The number of points written (points with a degenerate normal are dropped).
    """
    H, W = mask.shape
    cand = boundary_pixels(mask)
    M = cand.shape[0]
    if M == 0:
        return 0
    n_sel = min(n_points, M)
    fx, sk, cx, fy, cy = K[0, 0], K[0, 1], K[0, 2], K[1, 1], K[1, 2]
    f_mean = 0.5 * (fx + fy)
    count = 0
    r2 = radius * radius
    for k in range(n_sel):
        p = cand[((2 * k + 1) * M) // (2 * n_sel)]
        y = p // W
        x = p - y * W
        sx = 0.0
        sy = 0.0
        for dy in range(-radius, radius + 1):
            yy = y + dy
            if yy < 0 or yy >= H:
                continue
            for dx in range(-radius, radius + 1):
                xx = x + dx
                if xx < 0 or xx >= W or dx * dx + dy * dy > r2:
                    continue
                if mask[yy, xx]:
                    sx -= dx
                    sy -= dy
                else:
                    sx += dx
                    sy += dy
        nn = math.sqrt(sx * sx + sy * sy)
        f = face_buf[p]
        if nn < 1e-9 or f < 0:
            continue
        nx = sx / nn
        ny = sy / nn
        # Perspective-correct depth of the visible face at the pixel centre.
        i0, i1, i2 = faces[f, 0], faces[f, 1], faces[f, 2]
        x0, y0 = px[i0, 0], px[i0, 1]
        e1x, e1y = px[i1, 0] - x0, px[i1, 1] - y0
        e2x, e2y = px[i2, 0] - x0, px[i2, 1] - y0
        area2 = e1x * e2y - e1y * e2x
        if not abs(area2) > 1e-12:
            continue
        dx0, dy0 = x - x0, y - y0
        b1 = (dx0 * e2y - dy0 * e2x) / area2
        b2 = (e1x * dy0 - e1y * dx0) / area2
        b0 = 1.0 - b1 - b2
        zq = 1.0 / (b0 / z[i0] + b1 / z[i1] + b2 / z[i2])
        if not (zq > 0.0):
            continue
        # The silhouette edge lies about half a pixel beyond the centre of its inside pixel.
        qx = x + 0.5 * nx
        qy = y + 0.5 * ny
        yn = (qy - cy) / fy
        xn = (qx - cx - sk * yn) / fx
        Xc0, Xc1, Xc2 = xn * zq - t[0], yn * zq - t[1], zq - t[2]
        for a in range(3):
            points_obj[count, a] = R[0, a] * Xc0 + R[1, a] * Xc1 + R[2, a] * Xc2
            normals_obj[count, a] = R[0, a] * nx + R[1, a] * ny
        to_m = zq / f_mean
        inner_m[count] = (0.5 + _march(mask, x, y, nx, ny, -1.0, True, max_dist)) * to_m
        outer_m[count] = (0.5 + _march(mask, x, y, nx, ny, 1.0, False, max_dist)) * to_m
        count += 1
    return count


# ------------------------------------------------------------------------------------------
# Correspondence lines


@jit
def project_lines(points_obj, normals_obj, inner_m, outer_m, R, t, K, width, height,
                  centres, normals, inner_px, outer_px, valid):
    """Line centres (projected contour points), 2D normals and inner / outer lengths in px.

    A line is invalid when its point is at depth <= 0, its normal has no image-plane part or
    its centre is outside the image. Outputs (N, 2), (N, 2), (N,), (N,), (N,) bool.
    """
    fx, sk, cx, fy, cy = K[0, 0], K[0, 1], K[0, 2], K[1, 1], K[1, 2]
    f_mean = 0.5 * (fx + fy)
    for i in range(points_obj.shape[0]):
        X0, X1, X2 = points_obj[i, 0], points_obj[i, 1], points_obj[i, 2]
        zc = R[2, 0] * X0 + R[2, 1] * X1 + R[2, 2] * X2 + t[2]
        valid[i] = False
        if not (zc > 1e-6):
            continue
        xc = R[0, 0] * X0 + R[0, 1] * X1 + R[0, 2] * X2 + t[0]
        yc = R[1, 0] * X0 + R[1, 1] * X1 + R[1, 2] * X2 + t[1]
        u = (fx * xc + sk * yc) / zc + cx
        v = fy * yc / zc + cy
        n0, n1, n2 = normals_obj[i, 0], normals_obj[i, 1], normals_obj[i, 2]
        nx = R[0, 0] * n0 + R[0, 1] * n1 + R[0, 2] * n2
        ny = R[1, 0] * n0 + R[1, 1] * n1 + R[1, 2] * n2
        nn = math.sqrt(nx * nx + ny * ny)
        if nn < 1e-6 or not (u >= 0.0 and v >= 0.0 and u <= width - 1.0 and v <= height - 1.0):
            continue
        centres[i, 0] = u
        centres[i, 1] = v
        normals[i, 0] = nx / nn
        normals[i, 1] = ny / nn
        inner_px[i] = inner_m[i] * f_mean / zc
        outer_px[i] = outer_m[i] * f_mean / zc
        valid[i] = True


@jit
def _bin(image, yy, xx, shift, bins):
    return (((image[yy, xx, 0] >> shift) * bins + (image[yy, xx, 1] >> shift)) * bins
            + (image[yy, xx, 2] >> shift))


@jit
def line_samples(image, centres, normals, inner_px, outer_px, valid, offset_px, length_px,
                 shift, bins, fg_bins, fg_n, bg_bins, bg_n, hist_f, hist_b):
    """Colour bins of the pixels along each valid line, inside and outside the contour.

    Pixels at whole-pixel steps ``offset_px .. min(length_px, inner)`` inside the contour are
    foreground samples, ``offset_px .. min(length_px, outer)`` outside background samples
    (nearest pixel; pixels outside the image are skipped). Outputs: fg_bins, bg_bins (N, L)
    int64 bin indices (L >= length_px + 1), fg_n, bg_n (N,) int64 counts; every sample is also
    counted in hist_f / hist_b (B^3,) float64.
    """
    H, W = image.shape[0], image.shape[1]
    cap = fg_bins.shape[1]
    for i in range(centres.shape[0]):
        fg_n[i] = 0
        bg_n[i] = 0
        if not valid[i]:
            continue
        cx, cy, nx, ny = centres[i, 0], centres[i, 1], normals[i, 0], normals[i, 1]
        for side in range(2):
            sign = -1.0 if side == 0 else 1.0
            limit = min(length_px, inner_px[i] if side == 0 else outer_px[i])
            k = offset_px
            while k <= limit:
                xx = int(math.floor(cx + sign * k * nx + 0.5))
                yy = int(math.floor(cy + sign * k * ny + 0.5))
                k += 1.0
                if xx < 0 or yy < 0 or xx >= W or yy >= H:
                    continue
                b = _bin(image, yy, xx, shift, bins)
                if side == 0 and fg_n[i] < cap:
                    fg_bins[i, fg_n[i]] = b
                    fg_n[i] += 1
                    hist_f[b] += 1.0
                elif side == 1 and bg_n[i] < cap:
                    bg_bins[i, bg_n[i]] = b
                    bg_n[i] += 1
                    hist_b[b] += 1.0


@jit
def _sample(image, table, shift, bins, u, v, colour):
    """Bilinear foreground posterior at (u, v) px (0.5 outside the image).

    With a (3,) `colour`, also the bilinear RGB there (zeros outside), from the same pixels.
    """
    H, W = image.shape[0], image.shape[1]
    if colour.shape[0] == 3:
        colour[0] = 0.0
        colour[1] = 0.0
        colour[2] = 0.0
    if not (u >= 0.0 and v >= 0.0 and u <= W - 1.0 and v <= H - 1.0):
        return 0.5
    x0 = min(int(u), W - 2) if W > 1 else 0
    y0 = min(int(v), H - 2) if H > 1 else 0
    ax = u - x0
    ay = v - y0
    acc = 0.0
    for dy in range(2):
        wy = ay if dy == 1 else 1.0 - ay
        yy = min(y0 + dy, H - 1)
        for dx in range(2):
            w = (ax if dx == 1 else 1.0 - ax) * wy
            xx = min(x0 + dx, W - 1)
            r, g, b = image[yy, xx, 0], image[yy, xx, 1], image[yy, xx, 2]
            acc += w * table[((r >> shift) * bins + (g >> shift)) * bins + (b >> shift)]
            if colour.shape[0] == 3:
                colour[0] += w * r
                colour[1] += w * g
                colour[2] += w * b
    return acc


@jit
def _local_table(i, centres, valid, radius, fg_bins, fg_n, bg_bins, bg_n, global_f,
                 global_b, kappa, hf, hb, table):
    """Foreground posterior per bin (table) from the lines within `radius` px of line i.

    Their samples are pooled and each histogram blended with `kappa` pseudo-samples of the
    global one; hf, hb are (B^3,) scratch arrays.
    """
    nb = table.shape[0]
    for b in range(nb):
        hf[b] = 0.0
        hb[b] = 0.0
    nf = 0.0
    nbk = 0.0
    r2 = radius * radius
    cx, cy = centres[i, 0], centres[i, 1]
    for j in range(centres.shape[0]):
        if not valid[j]:
            continue
        dx = centres[j, 0] - cx
        dy = centres[j, 1] - cy
        if dx * dx + dy * dy > r2:
            continue
        for k in range(fg_n[j]):
            hf[fg_bins[j, k]] += 1.0
        for k in range(bg_n[j]):
            hb[bg_bins[j, k]] += 1.0
        nf += fg_n[j]
        nbk += bg_n[j]
    for b in range(nb):
        pf = (hf[b] + kappa * global_f[b]) / (nf + kappa)
        pb = (hb[b] + kappa * global_b[b]) / (nbk + kappa)
        table[b] = pf / (pf + pb) if pf + pb > 0.0 else 0.5


@jit
def line_distributions(image, table, shift, bins, centres, normals, valid, scale, F, D,
                       amplitude, slope, min_p, radius, fg_bins, fg_n, bg_bins, bg_n,
                       global_f, global_b, kappa, edge_weight, mean_px, var_px, nll, ok):
    """Mean and variance of each line's contour-location distribution (SRT3D's model).

    A line has ``K = F + D - 1`` segments of `scale` px centred on its centre; a segment's
    foreground posterior is the product of its pixels' (independent) likelihood ratios. For each
    of the D candidate contour positions (segment boundaries, `scale` px apart, centred on the
    line centre; D odd keeps the centre a candidate) the log-likelihood sums, over the F segments
    around it, ``log(h_f(x) p_f + h_b(x) (1 - p_f))`` with the smoothed step functions
    ``h_f(x) = 1/2 - amplitude tanh(x / (2 slope))``, ``h_b = 1 - h_f``, x the segment centre's
    signed distance from the candidate in segments.

    Pixel posteriors come from `table` (B^3,) when `radius` <= 0, else from local histograms:
    the samples (`line_samples`) of the lines within `radius` px of the line, blended with
    `kappa` pseudo-samples of the global frequencies global_f, global_b (B^3,) (Tjaden et al.'s
    localized histograms, RBOT, TPAMI 2019).

    With `edge_weight` > 0 each candidate's log-likelihood also gains ``edge_weight * e``, e the
    mean absolute RGB difference (in [0, 1]) between the segments on either side of it: a
    step in colour at the contour, whatever the histograms say.

    Outputs: mean_px, var_px (N,) position [px] along the line and its variance [px^2];
    nll (N,) mean negative log-likelihood per segment at the line centre (the current contour);
    ok (N,) whether the line was evaluated.
    """
    K = F + D - 1
    seg_p = np.empty(K)
    seg_c = np.zeros((K, 3))
    col = np.empty(3 if edge_weight > 0.0 else 0)
    logp = np.empty(D)
    step = np.empty(F)  # h_f at the centres of the F segments around a candidate
    for m in range(F):
        step[m] = 0.5 - amplitude * math.tanh((m + 0.5 - F // 2) / (2.0 * slope))
    half = 0.5 * K
    centre_j = (D - 1) // 2
    nbins = table.shape[0]
    local = np.empty(nbins)
    hf = np.empty(nbins)
    hb = np.empty(nbins)
    for i in range(centres.shape[0]):
        ok[i] = False
        if not valid[i]:
            continue
        tab = table
        if radius > 0.0:
            _local_table(i, centres, valid, radius, fg_bins, fg_n, bg_bins, bg_n, global_f,
                         global_b, kappa, hf, hb, local)
            tab = local
        cx, cy, nx, ny = centres[i, 0], centres[i, 1], normals[i, 0], normals[i, 1]
        for k in range(K):
            acc = 0.0
            if edge_weight > 0.0:
                seg_c[k, 0] = 0.0
                seg_c[k, 1] = 0.0
                seg_c[k, 2] = 0.0
            for j in range(scale):
                x = (k - half) * scale + j + 0.5
                p = _sample(image, tab, shift, bins, cx + x * nx, cy + x * ny, col)
                p = min(max(p, min_p), 1.0 - min_p)
                acc += math.log(p / (1.0 - p))
                if edge_weight > 0.0:
                    for c in range(3):
                        seg_c[k, c] += col[c] / scale
            acc = min(max(acc, -30.0), 30.0)
            seg_p[k] = 1.0 / (1.0 + math.exp(-acc))
        best = -1e300
        for j in range(D):
            b = F // 2 + j
            s = 0.0
            for k in range(j, j + F):
                hfk = step[k - j]
                s += math.log(hfk * seg_p[k] + (1.0 - hfk) * (1.0 - seg_p[k]))
            if j == centre_j:
                nll[i] = -s / F  # the region term alone: comparable across settings
            if edge_weight > 0.0:
                e = (abs(seg_c[b - 1, 0] - seg_c[b, 0]) + abs(seg_c[b - 1, 1] - seg_c[b, 1])
                     + abs(seg_c[b - 1, 2] - seg_c[b, 2])) / (3.0 * 255.0)
                s += edge_weight * e
            logp[j] = s
            if s > best:
                best = s
        total = 0.0
        mean = 0.0
        for j in range(D):
            w = math.exp(logp[j] - best)
            total += w
            mean += w * (j - centre_j)
        mean /= total
        var = 0.0
        for j in range(D):
            d = (j - centre_j) - mean
            var += math.exp(logp[j] - best) * d * d
        var /= total
        mean_px[i] = mean * scale
        var_px[i] = var * scale * scale
        ok[i] = True


# ------------------------------------------------------------------------------------------
# Gauss-Newton normal equations


@jit
def normal_equations(points_obj, R, t, K, centres, normals, mean_px, var_px, ok, huber,
                     H, g, J):
    """Normal equations of ``sum_i w_i (d_i - mean_i)^2 / var_i`` at the pose (R, t).

    ``d_i = n_i . (pi(K (R X_i + t)) - c_i)`` px; the perturbation is ``R <- exp([w]x) R``,
    ``t <- t + dt`` with x = (dt, w) (ROS order). `huber` > 0 down-weights lines whose
    normalised residual exceeds it (Huber weights); <= 0 disables it.

    Outputs: H (6, 6) ``sum w J^T J / var``, g (6,) ``sum w J (d - mean) / var``, J (N, 6)
    the rows dd_i / dx (zero for unused lines).

    Returns:
        (weighted squared residual sum, number of lines used).
    """
    fx, sk, cx, fy, cy = K[0, 0], K[0, 1], K[0, 2], K[1, 1], K[1, 2]
    for a in range(6):
        g[a] = 0.0
        for b in range(6):
            H[a, b] = 0.0
    chi2 = 0.0
    used = 0
    for i in range(points_obj.shape[0]):
        for a in range(6):
            J[i, a] = 0.0
        if not ok[i]:
            continue
        X0, X1, X2 = points_obj[i, 0], points_obj[i, 1], points_obj[i, 2]
        p0 = R[0, 0] * X0 + R[0, 1] * X1 + R[0, 2] * X2
        p1 = R[1, 0] * X0 + R[1, 1] * X1 + R[1, 2] * X2
        p2 = R[2, 0] * X0 + R[2, 1] * X1 + R[2, 2] * X2
        xc, yc, zc = p0 + t[0], p1 + t[1], p2 + t[2]
        if not (zc > 1e-6):
            continue
        iz = 1.0 / zc
        u = (fx * xc + sk * yc) * iz + cx
        v = fy * yc * iz + cy
        nx, ny = normals[i, 0], normals[i, 1]
        d = nx * (u - centres[i, 0]) + ny * (v - centres[i, 1])
        # dd/dX_cam = n^T dpi/dX_cam
        a0 = nx * fx * iz
        a1 = (nx * sk + ny * fy) * iz
        a2 = -(nx * (fx * xc + sk * yc) + ny * fy * yc) * iz * iz
        # dX_cam/dw = -[R X]x, so dd/dw = (R X) x a
        J[i, 0] = a0
        J[i, 1] = a1
        J[i, 2] = a2
        J[i, 3] = p1 * a2 - p2 * a1
        J[i, 4] = p2 * a0 - p0 * a2
        J[i, 5] = p0 * a1 - p1 * a0
        var = var_px[i]
        r = d - mean_px[i]
        w = 1.0 / var
        if huber > 0.0:
            zr = abs(r) * math.sqrt(w)
            if zr > huber:
                w *= huber / zr
        chi2 += w * r * r
        used += 1
        for a in range(6):
            g[a] += w * J[i, a] * r
            for b in range(a, 6):
                H[a, b] += w * J[i, a] * J[i, b]
    for a in range(6):
        for b in range(a):
            H[a, b] = H[b, a]
    return chi2, used
