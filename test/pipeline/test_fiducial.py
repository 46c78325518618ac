# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
from __future__ import annotations

import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from dvc_perception.config import FiducialConfig
from dvc_perception.demo.boards import render_board_view
from dvc_perception.errors import ConfigError, InputError
from dvc_perception.pipeline.fiducial import FiducialSource, chessboard_points_obj
from dvc_perception.pipeline.sources import KeypointSource

K = np.array([[600.0, 0.0, 319.5], [0.0, 600.0, 239.5], [0.0, 0.0, 1.0]])


def _project(points: np.ndarray, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    cam = points @ R.T + t
    uv = cam @ K.T
    return uv[:, :2] / uv[:, 2:]


@pytest.mark.parametrize("roll", [0.0, np.pi / 2, np.pi, -np.pi / 2 + 0.3])
def test_chessboard_labels_are_canonical_whatever_the_roll(roll):
    """Corner 0 is always the board origin, even when the board is seen upside down."""
    board = FiducialConfig(cols=9, rows=6, square_size_m=0.025)
    R = Rotation.from_rotvec([0.0, 0.0, roll]).as_matrix() @ Rotation.from_rotvec(
        [0.2, -0.1, 0.0]).as_matrix()
    centre = np.array([4 * 0.025, 2.5 * 0.025, 0.0])
    t = np.array([0.0, 0.0, 0.55]) - R @ centre  # board centre on the optical axis
    image = render_board_view(board, K, R, t, 640, 480)
    (det,) = FiducialSource(board).detect(image)
    expected = _project(chessboard_points_obj(9, 6, 0.025), R, t)
    assert np.abs(det.keypoints_px - expected).max() < 0.5  # same labels, sub-pixel corners
    np.testing.assert_array_equal(det.points_obj, chessboard_points_obj(9, 6, 0.025))


def test_charuco_ids_give_the_right_object_points():
    board = FiducialConfig(board_type="charuco", cols=5, rows=7, square_size_m=0.03,
                           marker_size_m=0.022, dictionary="DICT_4X4_50")
    R = Rotation.from_rotvec([0.1, 0.3, 0.2]).as_matrix()
    t = np.array([-0.07, -0.1, 0.5])
    (det,) = FiducialSource(board).detect(render_board_view(board, K, R, t, 640, 480))
    assert len(det.keypoints_px) == (5 - 1) * (7 - 1)
    assert np.abs(det.keypoints_px - _project(det.points_obj, R, t)).max() < 0.5
    assert isinstance(FiducialSource(board), KeypointSource)


def test_errors_and_nothing_found():
    with pytest.raises(ConfigError, match="needs 60 markers"):
        FiducialSource(FiducialConfig(board_type="aruco_grid", cols=10, rows=6,
                                      dictionary="DICT_4X4_50"))
    with pytest.raises(ConfigError, match="dictionary"):
        FiducialConfig(dictionary="DICT_9X9_1")
    source = FiducialSource(FiducialConfig(board_type="charuco", cols=5, rows=4,
                                           square_size_m=0.04, marker_size_m=0.03))
    assert source.detect(np.full((120, 160, 3), 255, np.uint8)) == []
    with pytest.raises(InputError, match="uint8"):
        source.detect(np.zeros((120, 160), np.uint8))
    assert "charuco" in source.backend and cv2.__version__ in source.backend
