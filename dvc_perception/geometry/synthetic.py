# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Synthetic Perspective-n-Point problems with known ground truth, for tests and benchmarks."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from dvc_perception.errors import ConfigError
from dvc_perception.geometry.so3 import matrix_to_rotvec, rotvec_to_matrix

IMAGE_WIDTH = 640
IMAGE_HEIGHT = 480


@dataclass(frozen=True)
class PnPProblem:
    """A batch of PnP problems and their ground truth.

    Attributes:
        points_obj: (B, N, 3) object points, m, object frame.
        keypoints_px: (B, N, 2) observed pixels (noisy, with outliers), u right, v down.
        K: (B, 3, 3) pinhole intrinsics, px.
        weights: (B, N) per-point weights (ones).
        R_gt: (B, 3, 3) true rotation, object in camera.
        t_gt: (B, 3) true translation, object in camera, m.
        pose_init: (B, 6) perturbed ground truth ``rotvec (rad) | t (m)``, a starting guess.
        outliers: (B, N) bool, True where the keypoint was replaced by a random pixel.
    """

    points_obj: Tensor
    keypoints_px: Tensor
    K: Tensor
    weights: Tensor
    R_gt: Tensor
    t_gt: Tensor
    pose_init: Tensor
    outliers: Tensor


def synthetic_pnp_problem(
    batch: int,
    n_points: int,
    noise_px: float,
    planar: bool = False,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    outlier_ratio: float = 0.0,
) -> PnPProblem:
    """Random PnP problems: an object of about 0.2 m, 0.5-1.5 m in front of a 640x480 camera.

    Non-planar objects are points in a 0.2 m cube seen from any direction; planar ones are points
    on the object's z = 0 plane (like a chessboard) tilted by at most 60 degrees from
    fronto-parallel. Every point lies in front of the camera.

    Args:
        batch: number of problems B.
        n_points: points per problem N.
        noise_px: standard deviation of the Gaussian pixel noise, px.
        planar: whether the object points are coplanar.
        seed: random seed (the same seed gives the same problems).
        dtype: floating dtype of every returned tensor.
        outlier_ratio: fraction of keypoints (rounded down) replaced by uniform random pixels.

    Returns:
        The problems, CPU tensors.
    """
    if batch < 1 or n_points < 1:
        raise ConfigError(f"batch and n_points must be >= 1, got {batch}, {n_points}")
    if noise_px < 0 or not 0.0 <= outlier_ratio < 1.0:
        raise ConfigError(f"need noise_px >= 0 and 0 <= outlier_ratio < 1, got {noise_px}, "
                          f"{outlier_ratio}")
    gen = torch.Generator().manual_seed(seed)
    f64 = torch.float64

    def rand(*shape: int) -> Tensor:
        return torch.rand(*shape, generator=gen, dtype=f64)

    def randn(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=gen, dtype=f64)

    pts = (rand(batch, n_points, 3) - 0.5) * 0.2
    if planar:
        pts[..., 2] = 0.0
        axis = randn(batch, 3)
        axis = axis / axis.norm(dim=-1, keepdim=True)
        # Tilt <= 60 deg, then turn the board to face the camera (object z towards -camera z).
        tilt = rotvec_to_matrix(axis * (rand(batch, 1) * math.pi / 3))
        spin = rotvec_to_matrix(torch.stack(
            [torch.zeros(batch, dtype=f64), torch.zeros(batch, dtype=f64),
             rand(batch) * 2 * math.pi], dim=-1))
        flip = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=f64))
        R = tilt @ flip @ spin
    else:
        axis = randn(batch, 3)
        axis = axis / axis.norm(dim=-1, keepdim=True)
        R = rotvec_to_matrix(axis * (rand(batch, 1) * math.pi))
    z = 0.5 + rand(batch)
    fx = 500.0 + 300.0 * rand(batch)
    fy = fx * (0.95 + 0.1 * rand(batch))
    cx = IMAGE_WIDTH / 2 - 0.5 + 10.0 * randn(batch)
    cy = IMAGE_HEIGHT / 2 - 0.5 + 10.0 * randn(batch)
    # Object centre somewhere in the middle half of the image.
    u0 = (rand(batch) - 0.5) * 0.5 * IMAGE_WIDTH
    v0 = (rand(batch) - 0.5) * 0.5 * IMAGE_HEIGHT
    t = torch.stack([u0 / fx * z, v0 / fy * z, z], dim=-1)
    K = torch.zeros(batch, 3, 3, dtype=f64)
    K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = fx, fy, cx, cy, 1.0
    cam = pts @ R.transpose(-1, -2) + t[:, None, :]
    uvw = cam @ K.transpose(-1, -2)
    uv = uvw[..., :2] / uvw[..., 2:]
    uv = uv + noise_px * randn(batch, n_points, 2)
    n_out = int(math.floor(outlier_ratio * n_points))
    outliers = torch.zeros(batch, n_points, dtype=torch.bool)
    if n_out > 0:
        idx = torch.argsort(rand(batch, n_points), dim=-1)[:, :n_out]
        outliers.scatter_(1, idx, True)
        random_px = rand(batch, n_points, 2) * torch.tensor(
            [IMAGE_WIDTH - 1.0, IMAGE_HEIGHT - 1.0], dtype=f64)
        uv = torch.where(outliers[..., None], random_px, uv)
    rvec = matrix_to_rotvec(R)
    pose_init = torch.cat([rvec + 0.05 * randn(batch, 3), t + 0.02 * randn(batch, 3)], dim=-1)
    return PnPProblem(
        points_obj=pts.to(dtype),
        keypoints_px=uv.to(dtype),
        K=K.to(dtype),
        weights=torch.ones(batch, n_points, dtype=dtype),
        R_gt=R.to(dtype),
        t_gt=t.to(dtype),
        pose_init=pose_init.to(dtype),
        outliers=outliers,
    )

