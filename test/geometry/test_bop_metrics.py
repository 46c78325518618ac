# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from dvc_perception.geometry.bop_metrics import (
    MSPD_THRESHOLDS_PX,
    MSSD_THRESHOLDS,
    average_recall,
    box_iou,
    mspd_error,
    mssd_error,
    projected_box,
)

K = np.array([[600.0, 0.0, 320.0], [0.0, 600.0, 240.0], [0.0, 0.0, 1.0]])
PTS = np.random.default_rng(0).uniform(-0.05, 0.05, (200, 3))


def test_thresholds_are_bops():
    assert MSSD_THRESHOLDS == (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5)
    assert MSPD_THRESHOLDS_PX == tuple(float(v) for v in range(5, 51, 5))


def test_mssd_and_mspd_of_known_offsets():
    R = Rotation.from_rotvec([0.3, -0.2, 0.1]).as_matrix()
    t = np.array([0.02, -0.01, 0.8])
    assert mssd_error(R, t, R, t, PTS) == 0.0 and mspd_error(R, t, R, t, PTS, K) == 0.0
    # a translation d: every point moves by |d|
    d = np.array([0.003, -0.004, 0.0])
    assert mssd_error(R, t + d, R, t, PTS) == pytest.approx(0.005, abs=1e-15)
    # a shift parallel to the image plane at depth z moves every pixel by f |d| / z ... only
    # when all points share the depth: a flat object facing the camera
    flat = PTS * [1.0, 1.0, 0.0]
    assert mspd_error(np.eye(3), t + d, np.eye(3), t, flat, K) == pytest.approx(
        600.0 * 0.005 / 0.8, rel=1e-12)
    # a rotation about the centroid: the farthest point moves by 2 r sin(a / 2)
    a = 0.2
    Ra = Rotation.from_rotvec([0.0, 0.0, a]).as_matrix()
    r = np.linalg.norm(PTS[:, :2], axis=1).max()
    assert mssd_error(Ra, np.zeros(3), np.eye(3), np.zeros(3), PTS) == pytest.approx(
        2 * r * np.sin(a / 2), rel=1e-12)


def test_a_symmetry_makes_the_flipped_pose_exact():
    flip = Rotation.from_rotvec([0.0, 0.0, np.pi]).as_matrix()
    symmetric = np.concatenate([PTS, PTS @ flip.T])  # 2-fold about z by construction
    syms = [(np.eye(3), np.zeros(3)), (flip, np.zeros(3))]
    R = Rotation.from_rotvec([0.1, 0.2, 0.3]).as_matrix()
    t = np.array([0.0, 0.0, 0.7])
    R_flipped = R @ flip
    assert mssd_error(R_flipped, t, R, t, symmetric) > 0.01
    assert mssd_error(R_flipped, t, R, t, symmetric, syms) == pytest.approx(0.0, abs=1e-15)
    assert mspd_error(R_flipped, t, R, t, symmetric, K, syms) == pytest.approx(0.0, abs=1e-9)


def test_average_recall_box_iou_and_projected_box():
    assert average_recall([0.0, np.inf], [1.0, 2.0]) == 0.5
    assert average_recall([1.5], [1.0, 2.0]) == 0.5
    assert np.isnan(average_recall([], [1.0]))
    assert box_iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 10, 10), (20, 20, 5, 5)) == 0.0
    box = projected_box(np.eye(3), np.array([0.0, 0.0, 1.0]), np.array([[-0.1, -0.05, 0.0],
                        [0.1, 0.05, 0.0]]), K, 640, 480)
    assert box == pytest.approx((260.0, 210.0, 120.0, 60.0))
    assert projected_box(np.eye(3), np.array([0.0, 0.0, -1.0]), PTS, K, 640, 480) is None
