# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Debug drawings of poses on images: the node's ``~/overlay`` and the evaluation report.

Points are projected with the image's own `CameraModel` (lens distortion included), so a drawn
axis lands where the camera saw it. Images are (H, W, 3) uint8 RGB; poses object-in-camera,
metres. A pose with a drawn point at or behind the camera, or projecting absurdly far off the
image, is skipped rather than drawn wrong.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch

from dvc_perception.geometry.camera import CameraModel
from dvc_perception.pipeline.pipeline import ObjectPose

#: Axis colours x, y, z (RGB).
AXIS_COLOURS = ((255, 0, 0), (0, 255, 0), (0, 0, 255))
_BOX_EDGES = ((0, 1), (0, 2), (0, 4), (1, 3), (1, 5), (2, 3), (2, 6), (3, 7), (4, 5), (4, 6),
              (5, 7), (6, 7))  # fmt: skip
#: Projected points farther than this from the origin [px] are not drawn.
_FAR_PX = 1e5


def project_pose_points(camera: CameraModel, R: np.ndarray, t: np.ndarray,
                        points_obj: np.ndarray) -> list[tuple[int, int]] | None:
    """Integer pixels of object points (M, 3) m at pose R, t; None when any cannot be drawn."""
    cam = np.asarray(points_obj, np.float64) @ np.asarray(R, np.float64).T + np.asarray(t)
    if np.any(cam[:, 2] <= 1e-6):
        return None
    uv = camera.project(torch.as_tensor(cam, dtype=torch.float64)).numpy()
    if not np.all(np.isfinite(uv)) or np.abs(uv).max() > _FAR_PX:
        return None
    return [(int(round(u)), int(round(v))) for u, v in uv]


def draw_axes(image: np.ndarray, camera: CameraModel, R: np.ndarray, t: np.ndarray,
              length_m: float, colours: Sequence[tuple[int, int, int]] = AXIS_COLOURS) -> None:
    """Draw the object's x, y, z axes (`length_m` long) into `image` in place."""
    p = project_pose_points(camera, R, t, np.vstack([np.zeros(3), np.eye(3) * length_m]))
    if p is None:
        return
    for k, colour in enumerate(colours):
        cv2.line(image, p[0], p[k + 1], colour, 2, cv2.LINE_AA)


def draw_box(image: np.ndarray, camera: CameraModel, R: np.ndarray, t: np.ndarray,
             half_extent_m: np.ndarray, colour: tuple[int, int, int]) -> None:
    """Draw the object-frame box of half extents (3,) m centred on the origin, in place."""
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])
    p = project_pose_points(camera, R, t, signs * np.asarray(half_extent_m))
    if p is None:
        return
    for a, b in _BOX_EDGES:
        cv2.line(image, p[a], p[b], colour, 2, cv2.LINE_AA)


def draw_overlay(rgb: np.ndarray, poses: Sequence[ObjectPose], camera: CameraModel,
                 axis_length_m: float) -> np.ndarray:
    """Copy of `rgb` with each pose's keypoints (yellow circles) and axes (x red, y green, z blue).

    Args:
        rgb: (H, W, 3) uint8 RGB input image.
        poses: the frame's poses.
        camera: the image's camera.
        axis_length_m: axis length [m].
    """
    out = np.ascontiguousarray(rgb).copy()
    for pose in poses:
        for u, v in pose.keypoints_2d:
            cv2.circle(out, (int(round(u)), int(round(v))), 3, (255, 255, 0), 1, cv2.LINE_AA)
        draw_axes(out, camera, pose.R, pose.t, axis_length_m)
    return out
