# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""The pinhole projection of object points at a pose, and reprojection errors (torch, batched).

``uv = pi(K (R X + t))`` with ``pi([x, y, z]) = [x / z, y / z]``: object points X (..., N, 3) m,
object-in-camera pose R (..., 3, 3), t (..., 3) m, pinhole intrinsics K (..., 3, 3) px, pixels
(..., N, 2) with (0, 0) the centre of the top-left pixel. Lens distortion is not applied here:
the points are ideal (undistorted) pixels, as PnP and the training losses use them;
`CameraModel.project` adds the lens for camera-frame points.

Points at or behind the camera have no meaningful projection; `min_depth` m clamps the depth
so a wild pose gives large but finite pixels (callers that must tell them apart check
`points_in_camera(...)[..., 2] > 0`).
"""

from __future__ import annotations

from torch import Tensor


def points_in_camera(points_obj: Tensor, R: Tensor, t: Tensor) -> Tensor:
    """(..., N, 3) m: ``R X + t``, object points X (..., N, 3), pose R (..., 3, 3), t (..., 3)."""
    return points_obj @ R.transpose(-1, -2) + t.unsqueeze(-2)


def project_points(points_obj: Tensor, R: Tensor, t: Tensor, K: Tensor, *,
                   min_depth: float = 1e-9) -> Tensor:
    """(..., N, 2) px: object points (..., N, 3) m seen at pose R, t through intrinsics K.

    Depths below `min_depth` m are clamped to it (differentiable elsewhere).
    """
    uvw = points_in_camera(points_obj, R, t) @ K.transpose(-1, -2)
    return uvw[..., :2] / uvw[..., 2:].clamp_min(min_depth)


def reprojection_errors(uv: Tensor, points_obj: Tensor, R: Tensor, t: Tensor, K: Tensor, *,
                        min_depth: float = 1e-9) -> Tensor:
    """(..., N) px: distance between observed pixels uv (..., N, 2) and `project_points`."""
    return (project_points(points_obj, R, t, K, min_depth=min_depth) - uv).norm(dim=-1)
