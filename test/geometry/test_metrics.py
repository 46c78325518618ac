# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Metrics against independent numpy / scipy / OpenCV references, singular cases forced in."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from dvc_perception.errors import ShapeError
from dvc_perception.geometry import metrics
from dvc_perception.geometry.metrics import (
    add_error,
    adds_error,
    depth_metrics,
    median_scale_depth,
    recall_at,
    reprojection_rms_px,
    rotation_error_deg,
    translation_error,
)


def _random_poses(b: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    R = Rotation.random(b, random_state=seed).as_matrix()
    t = rng.normal(size=(b, 3)) * 0.1 + [0, 0, 1.0]
    return R, t


def test_rotation_error_random_matches_scipy() -> None:
    R1, _ = _random_poses(64, seed=0)
    R2, _ = _random_poses(64, seed=1)
    ref = np.degrees((Rotation.from_matrix(R1) * Rotation.from_matrix(R2).inv()).magnitude())
    got = rotation_error_deg(R1, R2)
    assert isinstance(got, np.ndarray) and got.shape == (64,)
    np.testing.assert_allclose(got, ref, atol=1e-9, rtol=0)


@pytest.mark.parametrize("angle", [0.0, 1e-9, 1e-7, 1e-3, 1.0, np.pi - 1e-6, np.pi - 1e-9, np.pi])
def test_rotation_error_singular_angles(angle: float) -> None:
    rng = np.random.default_rng(3)
    axes = rng.normal(size=(8, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    R_gt = Rotation.random(8, random_state=4).as_matrix()
    R_est = Rotation.from_rotvec(axes * angle).as_matrix() @ R_gt
    got = rotation_error_deg(torch.from_numpy(R_est), torch.from_numpy(R_gt))
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float64
    # arccos((tr - 1) / 2) is off by ~1e-6 deg at these angles: the test would catch it
    np.testing.assert_allclose(got.numpy(), np.full(8, np.degrees(angle)), rtol=1e-6, atol=1e-12)


def test_rotation_error_identical_is_exactly_zero() -> None:
    R, _ = _random_poses(16, seed=5)
    assert np.all(rotation_error_deg(R, R) < 1e-6)
    assert float(rotation_error_deg(np.eye(3), np.eye(3))) == 0.0


def test_translation_error() -> None:
    _, t1 = _random_poses(10, seed=6)
    _, t2 = _random_poses(10, seed=7)
    np.testing.assert_allclose(translation_error(t1, t2), np.linalg.norm(t1 - t2, axis=1))
    got = translation_error(torch.from_numpy(t1).float(), torch.from_numpy(t2).float())
    assert got.dtype == torch.float32


def test_reprojection_rms_matches_opencv() -> None:
    rng = np.random.default_rng(8)
    R, t = _random_poses(4, seed=8)
    t[:, 2] = 2.0
    x3d = rng.uniform(-0.2, 0.2, size=(30, 3))
    K = np.array([[600.0, 0, 320], [0, 610, 240], [0, 0, 1]])
    x2d, ref = [], []
    for b in range(4):
        proj, _ = cv2.projectPoints(x3d, cv2.Rodrigues(R[b])[0], t[b], K, None)
        noisy = proj.reshape(-1, 2) + rng.normal(scale=1.5, size=(30, 2))
        x2d.append(noisy)
        ref.append(np.sqrt(np.mean(np.sum((noisy - proj.reshape(-1, 2)) ** 2, axis=1))))
    x2d = np.stack(x2d)
    np.testing.assert_allclose(reprojection_rms_px(x2d, x3d, K, R, t), ref, rtol=1e-10)
    mask = np.zeros((4, 30), bool)
    mask[:, :10] = True
    sub = reprojection_rms_px(x2d[:, :10], x3d[:10], K, R, t)
    np.testing.assert_allclose(reprojection_rms_px(x2d, x3d, K, R, t, mask=mask), sub, rtol=1e-12)


def test_add_matches_numpy() -> None:
    R1, t1 = _random_poses(5, seed=9)
    R2, t2 = _random_poses(5, seed=10)
    pts = np.random.default_rng(11).uniform(-0.05, 0.05, size=(200, 3))
    ref = [np.mean(np.linalg.norm((pts @ R1[b].T + t1[b]) - (pts @ R2[b].T + t2[b]), axis=1))
           for b in range(5)]
    np.testing.assert_allclose(add_error(R1, t1, R2, t2, pts), ref, rtol=1e-12)
    np.testing.assert_allclose(add_error(R1, t1, R1, t1, pts), 0.0, atol=1e-15)


def test_adds_matches_kdtree(monkeypatch: pytest.MonkeyPatch) -> None:
    R1, t1 = _random_poses(6, seed=12)
    R2, t2 = _random_poses(6, seed=13)
    t2 = t1 + 0.01 * np.random.default_rng(14).normal(size=t1.shape)
    pts = np.random.default_rng(15).uniform(-0.05, 0.05, size=(500, 3))
    ref = []
    for b in range(6):
        dist, _ = cKDTree(pts @ R2[b].T + t2[b]).query(pts @ R1[b].T + t1[b])
        ref.append(dist.mean())
    np.testing.assert_allclose(adds_error(R1, t1, R2, t2, pts), ref, rtol=1e-10)
    monkeypatch.setattr(metrics, "_ADDS_PAIRS_PER_CHUNK", 700)  # many chunks, same answer
    got = adds_error(torch.from_numpy(R1), torch.from_numpy(t1), R2, t2, pts)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10)


def test_adds_is_zero_for_a_symmetry_but_add_is_not() -> None:
    # A point set with a 180 degree symmetry about z: (x, y, z) and (-x, -y, z).
    half = np.random.default_rng(16).uniform(-0.05, 0.05, size=(100, 3))
    pts = np.concatenate([half, half * [-1, -1, 1]])
    R_gt, t_gt = np.eye(3)[None], np.array([[0.0, 0.0, 1.0]])
    R_est = Rotation.from_rotvec([0, 0, np.pi]).as_matrix()[None]
    assert adds_error(R_est, t_gt, R_gt, t_gt, pts)[0] < 1e-12
    assert add_error(R_est, t_gt, R_gt, t_gt, pts)[0] > 0.01


def test_depth_metrics_match_numpy() -> None:
    rng = np.random.default_rng(17)
    gt = rng.uniform(0.5, 4.0, size=(48, 64))
    pred = gt * rng.uniform(0.7, 1.4, size=gt.shape)
    gt[:5] = np.nan
    gt[5:8] = 0.0
    pred[10, :7] = np.inf
    ok = np.isfinite(gt) & (gt > 0) & np.isfinite(pred)
    p, g = pred[ok], gt[ok]
    got = depth_metrics(pred, gt)
    assert got["n"] == ok.sum()
    np.testing.assert_allclose(got["abs_rel"], np.mean(np.abs(p - g) / g), rtol=1e-12)
    np.testing.assert_allclose(got["rmse"], np.sqrt(np.mean((p - g) ** 2)), rtol=1e-12)
    np.testing.assert_allclose(got["delta_1_25"], np.mean(np.maximum(p / g, g / p) < 1.25))
    valid = np.zeros_like(ok)
    valid[20:30] = True
    sub = depth_metrics(torch.from_numpy(pred).float(), torch.from_numpy(gt).float(), valid)
    assert sub["n"] == (ok & valid).sum()
    np.testing.assert_allclose(sub["rmse"], np.sqrt(np.mean((pred - gt)[ok & valid] ** 2)),
                               rtol=1e-5)


def test_depth_density_counts_ground_truth_pixels_without_a_prediction() -> None:
    gt = np.full((4, 5), 2.0)
    gt[0] = np.nan  # 15 valid
    pred = np.full((4, 5), 2.0)
    pred[1, :3] = np.nan  # 3 of them not predicted
    m = depth_metrics(pred, gt)
    assert (m["n"], m["n_gt"], m["density"], m["abs_rel"]) == (12, 15, 12 / 15, 0.0)
    assert np.isnan(depth_metrics(pred, np.zeros((4, 5)))["density"])


def test_median_scale_depth_matches_numpy_per_frame() -> None:
    rng = np.random.default_rng(3)
    gt = rng.uniform(0.5, 4.0, size=(3, 6, 7))
    pred = gt * rng.uniform(0.5, 2.0, size=(3, 1, 1)) * rng.uniform(0.9, 1.1, size=gt.shape)
    gt[0, :2] = np.nan
    pred[1, 3, :4] = np.inf
    gt[2] = 0.0  # a frame with nothing to scale by
    got = median_scale_depth(pred, gt)
    for f in range(2):
        ok = np.isfinite(gt[f]) & (gt[f] > 0) & np.isfinite(pred[f])  # even and odd counts
        want = pred[f] * np.median(gt[f][ok]) / np.median(pred[f][ok])
        np.testing.assert_allclose(got[f][ok], want[ok], rtol=1e-12)
    assert np.isnan(got[2]).all()
    t = median_scale_depth(torch.from_numpy(pred).float(), torch.from_numpy(gt).float())
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32
    with pytest.raises(ShapeError, match="pred"):
        median_scale_depth(np.ones(4), np.ones(4))


def test_depth_metrics_empty_and_bad_shapes() -> None:
    empty = depth_metrics(np.ones((4, 4)), np.full((4, 4), np.nan))
    assert empty["n"] == 0 and np.isnan(empty["rmse"])
    with pytest.raises(ShapeError, match="pred"):
        depth_metrics(np.ones((4, 5)), np.ones((4, 4)))
    with pytest.raises(ShapeError, match="R_est"):
        rotation_error_deg(np.eye(4), np.eye(3))
    with pytest.raises(ShapeError, match="x2d"):
        reprojection_rms_px(np.zeros((1, 5, 3)), np.zeros((5, 3)), np.eye(3), np.eye(3)[None],
                            np.zeros((1, 3)))


def test_recall_at() -> None:
    errors = np.array([0.1, 0.5, np.nan, 2.0])
    np.testing.assert_allclose(recall_at(errors, [0.1, 1.0, 5.0]), [0.25, 0.5, 0.75])
    np.testing.assert_allclose(recall_at(torch.tensor([1.0, 3.0]), torch.tensor([2.0])), [0.5])
    assert np.isnan(recall_at([], [1.0])).all()
