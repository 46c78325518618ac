# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""The compiled kernels of `motion_depth._compiled` against independent numpy and OpenCV code."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from dvc_perception.motion_depth import _compiled


def _smooth_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    img = cv2.GaussianBlur(rng.uniform(0, 1, (h, w)).astype(np.float32), (0, 0), 1.5)
    return cv2.normalize(img, None, 0.1, 0.9, cv2.NORM_MINMAX)


def _pose(rotvec_deg: tuple[float, float, float], t: tuple[float, float, float]) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = cv2.Rodrigues(np.radians(rotvec_deg))[0]
    T[:3, 3] = t
    return T


K = np.array([[60.0, 0.0, 31.5], [0.0, 60.0, 23.5], [0.0, 0.0, 1.0]])  # 64x48 px


def test_reference_stats_match_clipped_box_filters():
    ref = _smooth_image(np.random.default_rng(0), 48, 64)
    r = 3
    mean, inv_std = _compiled.reference_stats(ref, r)
    # Windows clipped to the image: sums with zero padding over the count of pixels inside.
    box = dict(ddepth=-1, ksize=(2 * r + 1,) * 2, normalize=False, borderType=cv2.BORDER_CONSTANT)
    n = cv2.boxFilter(np.ones_like(ref), **box)
    m = cv2.boxFilter(ref, **box) / n
    var = cv2.boxFilter(ref * ref, **box) / n - m * m
    np.testing.assert_allclose(mean, m, atol=1e-5)
    np.testing.assert_allclose(inv_std, 1.0 / np.sqrt(var), rtol=2e-3)
    flat_mean, flat_inv_std = _compiled.reference_stats(np.full((8, 9), 0.5, np.float32), r)
    np.testing.assert_allclose(flat_mean, 0.5, atol=1e-6)
    assert np.all(flat_inv_std == 0.0)  # no texture: no ZNCC


def test_sweep_cost_matches_a_warp_perspective_zncc_at_each_plane():
    rng = np.random.default_rng(1)
    h, w, r = 48, 64, 3
    # reference camera -> source cameras; the second moves far enough that some of the
    # reference's points leave its image but not the first's
    poses = [_pose((0.8, -1.5, 0.4), (0.06, -0.01, 0.02)),
             _pose((-0.5, 1.0, -0.3), (-0.5, 0.04, 0.02))]
    ref = _smooth_image(rng, h, w)
    # The sources see a plane at 1/w = 1.6 m; the sweep is tried there and at other planes.
    w_true = 1.0 / 1.6
    inv_depths = np.array([0.3, w_true, 0.9], np.float32)

    def homography(T: np.ndarray, inv_depth: float) -> np.ndarray:
        # Plane-induced homography reference pixel -> source pixel of the fronto-parallel
        # plane n = (0, 0, 1), distance 1/w: H = K (R + t n^T w) K^-1 (Hartley & Zisserman).
        n = np.array([0.0, 0.0, 1.0])
        return K @ (T[:3, :3] + np.outer(T[:3, 3], n) * inv_depth) @ np.linalg.inv(K)

    srcs = []
    for T in poses:
        src = cv2.warpPerspective(ref, homography(T, w_true), (w, h),  # src(H p) = ref(p)
                                  flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        srcs.append((src + rng.normal(0, 0.01, src.shape)).astype(np.float32))
    mean, inv_std = _compiled.reference_stats(ref, r)
    A = np.stack([K @ T[:3, :3] @ np.linalg.inv(K) for T in poses])
    b = np.stack([K @ T[:3, 3] for T in poses])
    cost = np.full((h, len(inv_depths), w), np.nan, np.float32)
    _compiled.sweep_cost(ref, mean, inv_std, np.stack(srcs), A, b, inv_depths, r, cost)

    u, v = np.meshgrid(np.arange(w), np.arange(h))
    pix = np.stack([u, v, np.ones_like(u)], axis=-1).astype(np.float64)
    win_ref = sliding_window_view(ref.astype(np.float64), (2 * r + 1,) * 2)
    a = win_ref - win_ref.mean(axis=(-1, -2), keepdims=True)
    for d, inv_depth in enumerate(inv_depths):
        insides, fulls, expected = [], [], []
        for T, src in zip(poses, srcs):
            H = homography(T, float(inv_depth))
            q = pix @ H.T
            q = q[..., :2] / q[..., 2:]
            inside = ((q[..., 0] >= 0) & (q[..., 0] <= w - 1) & (q[..., 1] >= 0)
                      & (q[..., 1] <= h - 1))
            warped = cv2.warpPerspective(src, H, (w, h),
                                         flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                         borderMode=cv2.BORDER_REPLICATE)
            win_src = sliding_window_view(warped.astype(np.float64), (2 * r + 1,) * 2)
            c = win_src - win_src.mean(axis=(-1, -2), keepdims=True)
            zncc = (a * c).mean(axis=(-1, -2)) / (a.std(axis=(-1, -2)) * c.std(axis=(-1, -2)))
            # Interior pixels: the whole window inside both images (no clipped windows, no
            # clamped samples, where the two borders are handled differently).
            full = cv2.erode(inside.astype(np.uint8), np.ones((2 * r + 1,) * 2, np.uint8),
                             borderType=cv2.BORDER_CONSTANT, borderValue=0)[r:h - r, r:w - r]
            insides.append(inside[r:h - r, r:w - r])
            fulls.append(full > 0)
            expected.append(np.clip(1.0 - zncc, 0.0, 2.0))
        # The sources that see a pixel at this plane: those its point projects inside.
        seen = _compiled.seen_at(np.full((h, w), d, np.float32), A, b, inv_depths)
        np.testing.assert_array_equal(seen[r:h - r, r:w - r], np.sum(insides, axis=0))
        got = cost[r:h - r, d, r:w - r]
        # Both sources see the pixel with their whole windows: the mean of their costs.
        both = fulls[0] & fulls[1]
        # One of them only: its cost alone (the other's point is outside its image).
        only = [fulls[i] & ~insides[1 - i] for i in range(2)]
        assert both.sum() > 300 and only[0].sum() > 100
        # OpenCV quantises sample positions to 1/32 px: a warped value is off by up to
        # |gradient| / 64 (~1e-3 here), the ZNCC of a window by about that over its std (~0.1).
        for mask, want in [(both, 0.5 * (expected[0] + expected[1])), (only[0], expected[0]),
                           (only[1], expected[1])]:
            if mask.any():
                np.testing.assert_allclose(got[mask], want[mask], atol=0.02)
                assert np.median(np.abs(got - want)[mask]) < 2e-3
        # No source sees it: no information.
        assert np.all(got[~insides[0] & ~insides[1]] == 1.0)
    # The true plane is the best one almost everywhere.
    seen_all = np.min([_compiled.seen_at(np.full((h, w), d, np.float32), A, b, inv_depths)
                       for d in range(len(inv_depths))], axis=0) == 2
    best = np.argmin(cost, axis=1)
    assert np.mean(best[seen_all] == 1) > 0.95


def _sweep_cost_float64(ref, srcs, A, b, inv_depths, r):
    """`sweep_cost`'s definition (its docstring) in float64 numpy, and the (pixel, plane)s
    whose windows are textured in every source that sees them (ZNCC well conditioned)."""
    h, w = ref.shape
    box = dict(ddepth=cv2.CV_64F, ksize=(2 * r + 1,) * 2, normalize=False,
               borderType=cv2.BORDER_CONSTANT)
    n = cv2.boxFilter(np.ones((h, w)), **box)
    ref64 = ref.astype(np.float64)
    ref_mean = cv2.boxFilter(ref64, **box) / n
    ref_var = cv2.boxFilter(ref64 * ref64, **box) / n - ref_mean ** 2
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    cost = np.empty((h, len(inv_depths), w))
    textured = np.empty((h, len(inv_depths), w), bool)
    behind = 0
    for d, inv_depth in enumerate(inv_depths.astype(np.float64)):
        total, count, tex = np.zeros((h, w)), np.zeros((h, w)), ref_var > 1e-3
        for src, A_s, b_s in zip(srcs.astype(np.float64), A, b):
            q = (np.einsum("ij,jyx->iyx", A_s, np.stack([u, v, np.ones_like(u)]))
                 + (b_s * inv_depth)[:, None, None])
            front = q[2] > 1e-6
            behind += np.sum(~front)
            qu = np.where(front, q[0] / np.where(front, q[2], 1.0), 0.0)
            qv = np.where(front, q[1] / np.where(front, q[2], 1.0), 0.0)
            seen = front & (qu >= 0) & (qv >= 0) & (qu <= w - 1) & (qv <= h - 1)
            qu, qv = np.clip(qu, 0, w - 1), np.clip(qv, 0, h - 1)
            x0, y0 = np.minimum(qu.astype(int), w - 2), np.minimum(qv.astype(int), h - 2)
            fx, fy = qu - x0, qv - y0
            top = src[y0, x0] + fx * (src[y0, x0 + 1] - src[y0, x0])
            bottom = src[y0 + 1, x0] + fx * (src[y0 + 1, x0 + 1] - src[y0 + 1, x0])
            warped = np.where(front, top + fy * (bottom - top), 0.0)
            mean = cv2.boxFilter(warped, **box) / n
            var = cv2.boxFilter(warped * warped, **box) / n - mean ** 2
            cov = cv2.boxFilter(warped * ref64, **box) / n - mean * ref_mean
            ok = (var > 1e-6) & (ref_var > 1e-6)
            zncc = cov / np.sqrt(np.where(ok, var * ref_var, 1.0))
            total += np.where(seen, np.where(ok, np.clip(1.0 - zncc, 0.0, 2.0), 1.0), 0.0)
            count += seen
            tex &= ~seen | (var > 1e-3)
        cost[:, d] = np.where(count > 0, total / np.maximum(count, 1), 1.0)
        textured[:, d] = tex
    assert behind > 0  # the case of a point behind a source camera is tested
    return cost, textured


@pytest.mark.parametrize("r, w", [(1, 64), (2, 64), (3, 64), (4, 64), (3, 61)])
def test_sweep_cost_matches_its_definition_in_float64(r, w):
    """Every (pixel, plane), clipped windows and image borders included, where the ZNCC is well
    conditioned; one source sees part of the nearest plane behind it (it has moved past it).
    A width of 61 px: the warp's gather takes 8 pixels at a time, then the last 5 alone."""
    rng = np.random.default_rng(2)
    h = 48
    ref = _smooth_image(rng, h, w)
    srcs = np.stack([_smooth_image(rng, h, w) for _ in range(2)])
    poses = [_pose((0.5, 2.0, -0.3), (0.08, -0.02, 0.03)),
             _pose((0.0, 40.0, 0.0), (0.0, 0.0, -0.9))]
    A = np.stack([K @ T[:3, :3] @ np.linalg.inv(K) for T in poses])
    b = np.stack([K @ T[:3, 3] for T in poses])
    inv_depths = np.array([1.0 / 3.0, 1.0 / 1.5, 1.0], np.float32)
    mean, inv_std = _compiled.reference_stats(ref, r)
    cost = np.full((h, len(inv_depths), w), np.nan, np.float32)
    _compiled.sweep_cost(ref, mean, inv_std, srcs, A, b, inv_depths, r, cost)
    want, textured = _sweep_cost_float64(ref, srcs, A, b, inv_depths, r)
    assert textured.mean() > 0.5
    np.testing.assert_allclose(cost[textured], want[textured], atol=1e-3)
    assert np.all((cost >= 0.0) & (cost <= 2.0))


def test_winner_depth_matches_interp_seen_at_and_the_speckle_codes():
    """`winner_depth` against its numpy definition, exactly: planes hit exactly (0, the last,
    inner ones), halves (rint rounds them to even) and a source that sees only part."""
    rng = np.random.default_rng(7)
    h, w = 48, 64
    inv_depths = np.linspace(1.0 / 6.0, 1.0 / 0.3, 64, dtype=np.float32)
    index = rng.uniform(0.0, 63.0, (h, w)).astype(np.float32)
    index[0, :5] = [0.0, 63.0, 17.0, 2.5 / 16.0, 3.5 / 16.0]
    index[1, :3] = [1e-7, 62.99999, 0.5]
    ratio = rng.uniform(0.0, 1.0, (h, w)).astype(np.float32)
    poses = [_pose((0.5, 2.0, -0.3), (0.08, -0.02, 0.03)),
             _pose((0.0, 10.0, 0.0), (-0.4, 0.0, 0.05))]
    A = np.stack([K @ T[:3, :3] @ np.linalg.inv(K) for T in poses])
    b = np.stack([K @ T[:3, 3] for T in poses])
    depth, confidence, seen, codes = _compiled.winner_depth(index, ratio, A, b, inv_depths)
    want_seen = _compiled.seen_at(index, A, b, inv_depths)
    assert 0 < np.mean(want_seen == 2) < 1 and np.any(want_seen == 0)
    np.testing.assert_array_equal(seen, want_seen)
    inv_depth = np.interp(index.ravel(), np.arange(64), inv_depths).reshape(h, w)
    np.testing.assert_array_equal(depth, (1.0 / inv_depth).astype(np.float32))
    np.testing.assert_array_equal(confidence,
                                  np.where(seen > 0, 1.0 - ratio, 0.0).astype(np.float32))
    np.testing.assert_array_equal(codes, np.where(seen > 0, np.rint(index * 16.0), -16)
                                  .astype(np.int16))
    assert codes[0, 3] in (2, -16) and codes[0, 4] in (4, -16)  # halves to even


@pytest.mark.parametrize("prior_dtype", [np.float32, np.float64])
def test_fuse_prior_matches_the_numpy_expressions(prior_dtype):
    """`fuse_prior` against the estimator's former numpy expressions, exactly, with a float32
    prior and a float64 one (the scale filter multiplies the prior by a float64 factor)."""
    rng = np.random.default_rng(8)
    h, w = 40, 50
    depth = rng.uniform(0.5, 4.0, (h, w)).astype(np.float32)
    measured = rng.uniform(size=(h, w)) < 0.7
    sigma = 0.013
    p = (1.0 / depth * rng.choice([1.0, 1.02, 1.5], (h, w))).astype(prior_dtype)
    p[rng.uniform(size=(h, w)) < 0.2] = np.nan
    p_var = rng.uniform(1e-5, 1e-3, (h, w)).astype(prior_dtype)
    p_var[np.isnan(p)] = np.nan
    p_age = rng.integers(-1, 8, (h, w)).astype(np.int32)
    max_age = 5
    meas = np.where(measured, 1.0 / depth, np.nan).astype(np.float32)
    meas_var = np.where(measured, sigma * sigma, np.nan).astype(np.float32)
    age = np.where(measured, 0, -1).astype(np.int32)
    agree = measured & np.isfinite(p) & ((meas - p) ** 2 <= 9.0 * (meas_var + p_var))
    fused_var = np.where(agree, 1.0 / (1.0 / np.where(agree, meas_var, 1.0)
                                       + 1.0 / np.where(agree, p_var, 1.0)), meas_var)
    fused = np.where(agree, fused_var * (meas / np.where(agree, meas_var, 1.0)
                                         + p / np.where(agree, p_var, 1.0)), meas)
    only_prior = ~measured & np.isfinite(p) & (p_age < max_age)
    want = (np.where(only_prior, p, fused).astype(np.float32),
            np.where(only_prior, p_var, fused_var).astype(np.float32),
            np.where(only_prior, p_age + 1, age).astype(np.int32))
    assert 0.1 < agree.mean() < 0.6 and only_prior.any()
    got = _compiled.fuse_prior(depth, measured, np.float32(sigma * sigma), p, p_var, p_age,
                               max_age, prior_dtype(1.0), prior_dtype(9.0))
    for g, e in zip(got, want):
        assert g.dtype == e.dtype
        np.testing.assert_array_equal(g, e)


def test_window_sums_of_radius_3_in_one_pass_add_as_the_passes_do():
    """`_window_sums7` (r = 3) makes the passes' additions (1 + 2 + 4 neighbours, each span a
    balanced sum) in the same order: equal to them in float32, bit for bit."""
    rng = np.random.default_rng(9)
    n = 53
    row = rng.uniform(0.0, 1.0, n + 6).astype(np.float32)
    out = np.full(n + 5, np.nan, np.float32)
    _compiled._window_sums7(row, out, 2, n)
    r = [row[j:j + n] for j in range(7)]
    want = (r[0] + (r[1] + r[2])) + ((r[3] + r[4]) + (r[5] + r[6]))
    np.testing.assert_array_equal(out[2:2 + n], want)
    assert np.isnan(out[:2]).all() and np.isnan(out[2 + n:]).all()
    assert not np.array_equal(want, r[0] + r[1] + r[2] + r[3] + r[4] + r[5] + r[6])  # order


def _sgm_reference(cost: np.ndarray, p1: float, p2s: np.ndarray, diagonals: bool) -> np.ndarray:
    """Semi-global matching (Hirschmueller 2008) in plain Python: for each direction r,
    L_r(p, d) = C(p, d) + min(L_r(p-r, d), L_r(p-r, d+-1) + P1, min_k L_r(p-r, k) + P2(p))
    - min_k L_r(p-r, k), L_r = C where p - r is outside; the sum over directions."""
    h, w, n = cost.shape
    directions = [(0, 1), (0, -1), (1, 0), (-1, 0)]
    if diagonals:
        directions += [(1, 1), (-1, -1), (1, -1), (-1, 1)]
    total = np.zeros((h, w, n))
    for dy, dx in directions:
        L = np.zeros((h, w, n))
        # Visit pixels so that the predecessor p - r always comes first.
        for y, x in sorted(np.ndindex(h, w), key=lambda p: (dy * p[0], dx * p[1])):
            py, px = y - dy, x - dx
            if not (0 <= py < h and 0 <= px < w):
                L[y, x] = cost[y, x]
                continue
            prev = L[py, px]
            lowest = prev.min()
            for d in range(n):
                options = [prev[d], lowest + p2s[y, x]]
                if d > 0:
                    options.append(prev[d - 1] + p1)
                if d + 1 < n:
                    options.append(prev[d + 1] + p1)
                L[y, x, d] = cost[y, x, d] + min(options) - lowest
        total += L
    return total


def _planes_mid(cost: np.ndarray) -> np.ndarray:
    """(h, w, n) -> the kernels' layout (h, n, w)."""
    return np.ascontiguousarray(cost.transpose(0, 2, 1))


@pytest.mark.parametrize("diagonals", [False, True])
@pytest.mark.parametrize(("shape", "chunks"), [((5, 7, 6), 1), ((3, 70, 5), 1), ((3, 70, 5), 3),
                                               ((4, 21, 19), 1), ((4, 21, 19), 3)],
                         ids=["small", "one-chunk", "three-chunks", "blocks-one-chunk",
                              "blocks-three-chunks"])
def test_sgm_matches_a_plain_python_recurrence(diagonals, shape, chunks):
    # (4, 21, 19): 21 x 19 (width x planes) rows transposed in 8 x 8 blocks and the rest one
    # by one; one chunk: the horizontal paths inside the vertical pass (4 paths)
    rng = np.random.default_rng(2)
    cost = rng.uniform(0.0, 2.0, shape).astype(np.float32)
    p2s = rng.uniform(0.2, 1.0, shape[:2]).astype(np.float32)
    got = _compiled.sgm(_planes_mid(cost), np.float32(0.1), p2s, diagonals, chunks)
    np.testing.assert_allclose(got.transpose(0, 2, 1), _sgm_reference(cost, 0.1, p2s, diagonals),
                               rtol=1e-5, atol=1e-5)


def test_sgm_of_one_pixel_and_one_row_is_the_cost_per_path():
    cost = np.random.default_rng(3).uniform(0, 1, (1, 1, 4)).astype(np.float32)
    got = _compiled.sgm(_planes_mid(cost), np.float32(0.1), np.ones((1, 1), np.float32), True)
    np.testing.assert_allclose(got, 8 * _planes_mid(cost), rtol=1e-6)  # every path starts there
    row = np.random.default_rng(4).uniform(0, 1, (1, 6, 5)).astype(np.float32)
    p2s = np.full((1, 6), 0.5, np.float32)
    np.testing.assert_allclose(_compiled.sgm(_planes_mid(row), np.float32(0.05), p2s, False),
                               _planes_mid(_sgm_reference(row, 0.05, p2s, False)), rtol=1e-5,
                               atol=1e-6)


def test_winner_take_all_matches_a_numpy_parabola_fit():
    rng = np.random.default_rng(5)
    h, w, n = 6, 7, 9
    agg = rng.uniform(0.5, 3.0, (h, w, n)).astype(np.float32)
    agg[0, 0] = np.linspace(1.0, 2.0, n)  # minimum on the first plane: no neighbour to fit
    agg[0, 1] = np.linspace(2.0, 1.0, n)  # on the last plane
    agg[0, 2] = 1.5  # flat: ambiguous
    agg[0, 3] = (np.arange(n) - 3.3) ** 2 + 1.0  # an exact parabola, vertex at plane 3.3
    idx, ratio = _compiled.winner_take_all(_planes_mid(agg))
    for y in range(h):
        for x in range(w):
            c = agg[y, x].astype(np.float64)
            k = int(np.argmin(c))
            expected = float(k)
            if 0 < k < n - 1:
                a2, a1, _ = np.polyfit([-1.0, 0.0, 1.0], c[k - 1:k + 2], 2)
                if a2 > 0:
                    expected = k - a1 / (2 * a2)
            assert idx[y, x] == pytest.approx(expected, abs=1e-4), (y, x)
            far = [c[d] for d in range(n) if abs(d - k) > 1]
            assert ratio[y, x] == pytest.approx(c[k] / min(far), rel=1e-5), (y, x)
    assert idx[0, 3] == pytest.approx(3.3, abs=1e-4)
    assert (idx[0, 0], idx[0, 1], idx[0, 2]) == (0.0, n - 1.0, 0.0)
    assert ratio[0, 2] == 1.0


@pytest.mark.parametrize("diagonals", [False, True])
def test_sgm_winner_is_the_winner_of_the_aggregated_costs(diagonals):
    # The fused kernel against the two kernels checked above (several column chunks).
    rng = np.random.default_rng(6)
    cost = rng.uniform(0.0, 2.0, (9, 8, 150)).astype(np.float32)  # (h, n, w)
    p2s = rng.uniform(0.2, 1.0, (9, 150)).astype(np.float32)
    idx, ratio = _compiled.sgm_winner(cost, np.float32(0.1), p2s, diagonals, chunks=4)
    want_idx, want_ratio = _compiled.winner_take_all(
        _compiled.sgm(cost, np.float32(0.1), p2s, diagonals, chunks=1))
    np.testing.assert_array_equal(idx, want_idx)
    np.testing.assert_array_equal(ratio, want_ratio)
    # one chunk (the horizontal paths inside the vertical pass) sums exactly as several
    np.testing.assert_array_equal(_compiled.sgm(cost, np.float32(0.1), p2s, diagonals, chunks=1),
                                  _compiled.sgm(cost, np.float32(0.1), p2s, diagonals, chunks=3))


def _warp_reference(inv_depth: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Points of a camera at `inv_depth` moved by T into another camera, projected, rounded to
    the nearest pixel, nearest point kept: the new inverse depth (H, W), NaN where none."""
    h, w = inv_depth.shape
    ys, xs = np.nonzero(inv_depth > 0)  # NaN and non-positive: unknown
    wv = inv_depth[ys, xs].astype(np.float64)
    X = np.stack([xs, ys, np.ones_like(xs)], axis=1) @ np.linalg.inv(K).T / wv[:, None]
    Xn = X @ T[:3, :3].T + T[:3, 3]
    front = Xn[:, 2] > 1e-6 / wv
    uvw = Xn[front] @ K.T
    u = np.floor(uvw[:, 0] / uvw[:, 2] + 0.5).astype(int)
    v = np.floor(uvw[:, 1] / uvw[:, 2] + 0.5).astype(int)
    w_new = 1.0 / Xn[front, 2]
    inside = (u >= 0) & (u < w) & (v >= 0) & (v < h)
    out = np.full((h, w), np.nan)
    order = np.argsort(w_new[inside])  # far first: nearer points overwrite
    out[v[inside][order], u[inside][order]] = w_new[inside][order]
    return out


@pytest.mark.parametrize("T", [_pose((1.0, -2.0, 0.5), (0.05, 0.02, -0.08)),
                               _pose((0.0, 0.0, 0.0), (0.03, -0.01, 0.10))],
                         ids=["rotation+translation", "translation"])
def test_forward_warp_matches_projecting_the_points(T):
    rng = np.random.default_rng(7)
    inv_depth = (0.3 + 0.8 * _smooth_image(rng, 48, 64)).astype(np.float32)
    inv_depth[10:20, 30:45] += 0.6  # a nearer patch: it occludes what is behind it
    inv_depth[rng.uniform(size=inv_depth.shape) < 0.05] = np.nan
    inv_depth[0, :3] = [0.0, -0.5, np.nan]  # unknown: never splatted
    variance = rng.uniform(1e-4, 1e-3, inv_depth.shape).astype(np.float32)
    A = K @ T[:3, :3] @ np.linalg.inv(K)
    b = K @ T[:3, 3]
    age = rng.integers(0, 9, inv_depth.shape).astype(np.int32)
    got, got_var, got_age = _compiled.forward_warp(inv_depth, variance, age, A, b)
    # the age travels with its point: every landed pixel carries an age that was given
    assert np.all(got_age[~np.isnan(got)] >= 0) and np.all(got_age[np.isnan(got)] == -1)
    finite = inv_depth
    expected = _warp_reference(finite, T)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_allclose(got[~np.isnan(got)], expected[~np.isnan(expected)], rtol=1e-5)
    assert np.isnan(got).mean() < 0.3
    if np.allclose(T[:3, :3], np.eye(3)):
        # Variance by first-order propagation: var_new = var (d w_new / d w)^2, the derivative
        # by central differences of the projection, each landing pixel traced to its source.
        ys, xs = np.nonzero(finite > 0)
        eps = 1e-4
        wv = finite[ys, xs].astype(np.float64)
        ray = np.stack([xs, ys, np.ones_like(xs)], axis=1) @ np.linalg.inv(K).T

        def w_new(wx: np.ndarray) -> np.ndarray:
            return 1.0 / (ray[:, 2] / wx + T[2, 3])

        gain = (w_new(wv + eps) - w_new(wv - eps)) / (2 * eps)
        uvw = (ray / wv[:, None] + T[:3, 3]) @ K.T
        u = np.floor(uvw[:, 0] / uvw[:, 2] + 0.5).astype(int)
        v = np.floor(uvw[:, 1] / uvw[:, 2] + 0.5).astype(int)
        inside = (u >= 0) & (u < 64) & (v >= 0) & (v < 48)
        landed = inside & np.isclose(got[v.clip(0, 47), u.clip(0, 63)], w_new(wv), rtol=1e-6)
        assert landed.sum() > 1000
        np.testing.assert_allclose(got_var[v[landed], u[landed]],
                                   variance[ys, xs][landed] * gain[landed] ** 2, rtol=1e-3)
