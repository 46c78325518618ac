# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""`sweep.plane_sweep_depth` with exact relative poses on the rendered scene (`conftest.py`)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from dvc_perception.errors import ShapeError
from dvc_perception.motion_depth.sweep import SweepSettings, plane_sweep_depth

SETTINGS = SweepSettings(min_depth_m=0.8, max_depth_m=5.0, planes=48)
#: Matching error allowed [px]: the renderer samples the texture bilinearly at other texture
#: positions in each view, and the sweep resamples the source bilinearly again.
MATCH_SIGMA_PX = 0.5


def _disparity_gain(K: np.ndarray, relative: np.ndarray, inv_depth: np.ndarray) -> np.ndarray:
    """|d q / d w| (H, W) [px per 1/m]: how far a reference pixel's match in the source moves
    per unit of inverse depth at `inv_depth` (central difference of the projection)."""
    h, w = inv_depth.shape
    u, v = np.meshgrid(np.arange(w), np.arange(h))
    rays = np.stack([u, v, np.ones_like(u)], axis=-1) @ np.linalg.inv(K).T  # z = 1

    def project(inv: np.ndarray) -> np.ndarray:
        X = rays / inv[..., None] @ relative[:3, :3].T + relative[:3, 3]
        uvw = X @ K.T
        return uvw[..., :2] / uvw[..., 2:]

    eps = 1e-4
    return np.linalg.norm(project(inv_depth + eps) - project(inv_depth - eps), axis=-1) / (2 * eps)


def _matchable(scene, depth_ref: np.ndarray, k_ref: float, k_srcs: list[float], radius: int
               ) -> np.ndarray:
    """Reference pixels whose ZNCC window sees one surface and whose surface point every source
    sees (inside the image with the window, not hidden: the source's rendered depth agrees)."""
    h, w = depth_ref.shape
    u, v = np.meshgrid(np.arange(w), np.arange(h))
    rays = np.stack([u, v, np.ones_like(u)], axis=-1) @ np.linalg.inv(scene.K).T
    ok = np.ones((h, w), bool)
    for k in k_srcs:
        T = scene.relative(k_ref, k)
        X = rays * depth_ref[..., None] @ T[:3, :3].T + T[:3, 3]
        uvw = X @ scene.K.T
        q = uvw[..., :2] / uvw[..., 2:]
        inside = ((q[..., 0] >= radius) & (q[..., 0] <= w - 1 - radius) & (q[..., 1] >= radius)
                  & (q[..., 1] <= h - 1 - radius))
        _, depth_src = scene.render(scene.pose(k))
        qi = np.clip(np.rint(q).astype(int), 0, [w - 1, h - 1])
        seen_depth = depth_src[qi[..., 1], qi[..., 0]]
        ok &= inside & (np.abs(seen_depth - X[..., 2]) < 0.05 * X[..., 2])
    # A jump of more than 5 % between neighbours is a depth edge (the surfaces here differ by
    # 25 % or more; within a surface neighbours differ by < 3 %).
    jump = np.zeros((h, w), bool)
    jump[:, 1:] |= np.abs(np.diff(depth_ref, axis=1)) > 0.05 * depth_ref[:, 1:]
    jump[1:, :] |= np.abs(np.diff(depth_ref, axis=0)) > 0.05 * depth_ref[1:, :]
    near_edge = cv2.dilate(jump.astype(np.uint8), np.ones((2 * radius + 3,) * 2, np.uint8))
    return ok & ~near_edge.astype(bool)


def test_plane_sweep_recovers_rendered_depth_within_the_geometric_bound(rendered_scene):
    scene = rendered_scene
    k_ref, k_srcs = 3.0, [0.0, 6.0]  # 12.5 cm on either side, 0.9 deg of yaw each
    colour, depth_true = scene.render(scene.pose(k_ref))
    sources = [scene.grey(scene.render(scene.pose(k))[0]) for k in k_srcs]
    relative = [scene.relative(k_ref, k) for k in k_srcs]
    result = plane_sweep_depth(scene.grey(colour), sources, relative, scene.K, SETTINGS)
    assert result.depth.shape == result.confidence.shape == (scene.H, scene.W)
    assert result.depth.dtype == np.float32

    # The bound, per pixel. Each source's match moves g_s = |dq_s/dw| px per unit of inverse
    # depth w, so a matching error of MATCH_SIGMA_PX moves that source's cost minimum by
    # MATCH_SIGMA_PX / g_s in w; the mean cost's minimum lies between the sources' minima,
    # within MATCH_SIGMA_PX / min_s g_s of the truth. The sweep samples w every `step` and the
    # parabola through the winning plane and its neighbours places the estimate within half a
    # step of the sampled minimum:  |1/z_est - 1/z_true| <= step/2 + MATCH_SIGMA_PX / min_s g_s.
    inv_true = 1.0 / depth_true
    step = float(np.diff(SETTINGS.inverse_depths()[:2])[0])
    gain = np.min([_disparity_gain(scene.K, T, inv_true) for T in relative], axis=0)
    bound = step / 2 + MATCH_SIGMA_PX / gain
    # (At the median gain of ~19 px per 1/m, the bound is 0.037 /m: 5 % of depth at 1.4 m.)
    error = np.abs(1.0 / result.depth - inv_true)

    ok = _matchable(scene, depth_true, k_ref, k_srcs, SETTINGS.window_radius)
    grey = scene.grey(colour)
    r = SETTINGS.window_radius
    std = np.sqrt(np.maximum(cv2.blur(grey * grey, (2 * r + 1,) * 2)
                             - cv2.blur(grey, (2 * r + 1,) * 2) ** 2, 0.0))
    textured = ok & (std > 0.02)
    # Edge bands (the window), occlusions and the image sides leave a little over half.
    assert textured.mean() > 0.5, "the test scene should be mostly matchable"
    within = error[textured] <= bound[textured]
    assert within.mean() >= 0.98, f"{within.mean():.3f} of textured pixels within the bound"
    # The typical pixel is matched far better than the worst case: within a quarter of the
    # bound (one source image shifted by half a pixel, e.g. sampled off its pixel centres,
    # fails this; its median is then ~0.4).
    assert np.median(error[textured] / bound[textured]) <= 0.25
    # Both sources see these pixels at the winning plane, and the winner is unambiguous.
    assert np.mean(result.seen[textured] == 2) >= 0.99
    assert np.mean(result.confidence[textured] >= 0.2) >= 0.9


def test_plane_sweep_refuses_mismatched_inputs(rendered_scene):
    scene = rendered_scene
    grey = scene.grey(scene.render(scene.pose(0.0))[0])
    T = scene.relative(0.0, 1.0)
    with pytest.raises(ShapeError, match="one pose per source"):
        plane_sweep_depth(grey, [grey, grey], [T], scene.K, SETTINGS)
    with pytest.raises(ShapeError, match="at least one source"):
        plane_sweep_depth(grey, [], [], scene.K, SETTINGS)
    with pytest.raises(ShapeError, match=r"sources of shape \(120, 160\)"):
        plane_sweep_depth(grey, [grey[:, :100]], [T], scene.K, SETTINGS)
