# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Chessboard target: object points order, rendered views, detection and their errors."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from dvc_perception.demo.chessboard import (
    ChessboardSpec,
    demo_board_poses,
    demo_camera,
    ideal_pixel_map,
    render_chessboard_view,
    require_chessboard_corners,
    solve_pnp_opencv,
)
from dvc_perception.errors import ConfigError, InputError
from dvc_perception.geometry.camera import CameraModel

CAMERA = CameraModel([[530.0, 0, 319.5], [0, 530.0, 239.5], [0, 0, 1]], [], 640, 480, "none")


def test_object_points_follow_opencv_order() -> None:
    spec = ChessboardSpec(cols=4, rows=3, square=0.025)
    pts = spec.object_points()
    assert pts.shape == (12, 3)
    np.testing.assert_allclose(pts[1], [0.025, 0, 0])  # along a row first (x), like OpenCV
    np.testing.assert_allclose(pts[4], [0, 0.025, 0])
    assert np.all(pts[:, 2] == 0)


@pytest.mark.parametrize("spec", [ChessboardSpec(), ChessboardSpec(cols=7, rows=5, square=0.03)])
def test_rendered_views_are_detected_where_projected(spec: ChessboardSpec) -> None:
    R, t = demo_board_poses(spec, 4)
    obj = spec.object_points()
    for k in range(4):
        image = render_chessboard_view(CAMERA, R[k], t[k], spec)
        assert image.shape == (480, 640) and image.dtype == np.uint8
        found = require_chessboard_corners(image, spec)
        proj, _ = cv2.projectPoints(obj, cv2.Rodrigues(R[k])[0], t[k], CAMERA.K.numpy(), None)
        err = np.linalg.norm(found - proj.reshape(-1, 2), axis=1)
        # cornerSubPix on anti-aliased perspective corners: ~0.05 px RMS; a half-pixel slip in
        # the renderer's pixel convention would show as 0.5 px.
        assert np.sqrt(np.mean(err**2)) < 0.15 and abs(np.mean(found - proj.reshape(-1, 2))) < 0.05


def test_ideal_pixel_map_matches_undistort_points() -> None:
    cam = demo_camera()
    m = ideal_pixel_map(cam, supersample=4)
    assert m.shape == (1920, 2560, 2) and m.dtype == np.float32
    big = cam.scaled(4, 4)
    rng = np.random.default_rng(0)
    q = np.stack([rng.integers(0, 2560, 3000), rng.integers(0, 1920, 3000)], -1)
    q = np.concatenate([q, [[0, 0], [2559, 1919], [0, 1919], [2559, 0]]])
    exact = big.undistort_points(torch.from_numpy(q.astype(np.float64))).numpy()
    np.testing.assert_allclose(m[q[:, 1], q[:, 0]], exact, atol=0.08, rtol=0)


def test_distorted_views_are_detected_where_opencv_projects() -> None:
    cam = demo_camera()
    spec = ChessboardSpec()
    R, t = demo_board_poses(spec, 3)
    ideal_map = ideal_pixel_map(cam)
    obj = spec.object_points()
    for k in range(3):
        found = require_chessboard_corners(
            render_chessboard_view(cam, R[k], t[k], spec, ideal_map=ideal_map), spec)
        proj, _ = cv2.projectPoints(obj, cv2.Rodrigues(R[k])[0], t[k], cam.K.numpy(),
                                    cam.D.numpy())
        err = found - proj.reshape(-1, 2)
        assert np.sqrt(np.mean(np.sum(err**2, axis=1))) < 0.15
        # Without the distortion the corners would be off by > 1 px: the test sees the lens.
        pinhole, _ = cv2.projectPoints(obj, cv2.Rodrigues(R[k])[0], t[k], cam.K.numpy(), None)
        assert np.abs(found - pinhole.reshape(-1, 2)).max() > 1.0


def test_opencv_reference_recovers_rendered_pose() -> None:
    spec = ChessboardSpec()
    R, t = demo_board_poses(spec, 2)
    corners = np.stack([
        require_chessboard_corners(render_chessboard_view(CAMERA, R[k], t[k], spec), spec)
        for k in range(2)
    ])
    R_cv, t_cv = solve_pnp_opencv(corners, spec.object_points(), CAMERA.K.numpy())
    np.testing.assert_allclose(t_cv, t, atol=0.05)
    angle = np.degrees(np.linalg.norm(
        [cv2.Rodrigues(R_cv[k] @ R[k].T)[0].ravel() for k in range(2)], axis=1))
    assert angle.max() < 0.3


def test_detection_errors() -> None:
    spec = ChessboardSpec()
    with pytest.raises(InputError, match="no complete 9x6 chessboard"):
        require_chessboard_corners(np.full((480, 640), 128, np.uint8), spec, name="blank.png")
    with pytest.raises(InputError, match="uint8"):
        require_chessboard_corners(np.zeros((480, 640), np.float32), spec)
    with pytest.raises(ConfigError, match="inner corners"):
        ChessboardSpec(cols=1)
    with pytest.raises(ConfigError, match="square"):
        ChessboardSpec(square=0.0)
    with pytest.raises(ConfigError, match="supersample"):
        render_chessboard_view(CAMERA, np.eye(3), np.array([0, 0, 10.0]), spec, supersample=0)


def test_colour_input_is_accepted() -> None:
    spec = ChessboardSpec()
    R, t = demo_board_poses(spec, 1)
    grey = render_chessboard_view(CAMERA, R[0], t[0], spec)
    bgr = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    np.testing.assert_allclose(require_chessboard_corners(bgr, spec),
                               require_chessboard_corners(grey, spec), atol=1e-6)
    assert torch.is_tensor(CAMERA.K)
