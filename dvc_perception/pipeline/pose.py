# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Robust, confidence-weighted pose from keypoints: the one solver the pipeline and training use.

`estimate_poses` fits every keypoint with the weighted PnP (EPnP + Levenberg-Marquardt); a sample
whose weighted keypoints all reproject within ``settings.threshold_px`` keeps that pose. The
others (all of them with ``settings.always_ransac``) go through `solve_pnp_ransac` (MSAC
hypotheses, then weighted LM on the inliers). Batched over B samples; undistorted pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from dvc_perception.config import PnPConfig
from dvc_perception.geometry.pnp import solve_pnp, solve_pnp_ransac


@dataclass(frozen=True)
class InitialPose:
    """A pose to refine from instead of detecting (`Pipeline.process`'s ``initial_poses``).

    Attributes:
        object_id: the object's id (it needs a refiner model: a mesh).
        R: (3, 3) float64 rotation, object frame to camera optical frame.
        t: (3,) float64 m, object origin in the camera optical frame.
        score: in [0, 1]; the refined pose's score is ``score * exp(-refine.cost_weight *
            cost)`` (1: the alignment alone decides).
        track_id: the track this pose continues (`pipeline.tracking`); None otherwise.
    """

    object_id: str
    R: np.ndarray
    t: np.ndarray
    score: float = 1.0
    track_id: int | None = None


@dataclass(frozen=True)
class RobustPoses:
    """Batched robust poses (object-in-camera, ``X_cam = R @ X_obj + t``).

    Attributes:
        R: (B, 3, 3) float64 rotation.
        t: (B, 3) float64 m.
        covariance: (B, 6, 6) float64, ROS order (see `PnPResult.covariance`).
        inliers: (B, N) bool keypoints the pose was fitted to.
        valid: (B,) bool; False where no pose was found or it is not finite.
    """

    R: Tensor
    t: Tensor
    covariance: Tensor
    inliers: Tensor
    valid: Tensor


def estimate_poses(x2d: Tensor, x3d: Tensor, K: Tensor, weights: Tensor, settings: PnPConfig
                   ) -> RobustPoses:
    """Robust weighted PnP of B keypoint sets.

    Args:
        x2d: (B, N, 2) float64 undistorted keypoints, px.
        x3d: (B, N, 3) float64 object points, m.
        K: (B, 3, 3) float64 pinhole intrinsics, px.
        weights: (B, N) float64 confidences in [0, 1] (PnP weights; 0 drops a keypoint).
        settings: threshold, hypotheses, seed, iterations and the always-RANSAC switch.

    Returns:
        `RobustPoses`; detached (no gradient).
    """
    with torch.no_grad():
        B = x2d.shape[0]
        direct_ok = torch.zeros(B, dtype=torch.bool)
        if not settings.always_ransac:  # all keypoints fit: no outliers, no RANSAC needed
            direct = solve_pnp(x2d, x3d, K, weights, max_iterations=settings.max_iterations)
            fits = (direct.residuals <= settings.threshold_px) | (weights <= 0)
            direct_ok = direct.valid & fits.all(-1)
        rest = ~direct_ok
        R = torch.eye(3, dtype=x2d.dtype).repeat(B, 1, 1)
        t = torch.zeros(B, 3, dtype=x2d.dtype)
        cov = torch.zeros(B, 6, 6, dtype=x2d.dtype)
        inliers = torch.zeros(x2d.shape[:2], dtype=torch.bool)
        valid = direct_ok.clone()
        if bool(direct_ok.any()):
            R[direct_ok], t[direct_ok] = direct.R[direct_ok], direct.t[direct_ok]
            cov[direct_ok] = direct.covariance[direct_ok]
            inliers[direct_ok] = weights[direct_ok] > 0
        if bool(rest.any()):
            hyp = solve_pnp_ransac(
                x2d[rest], x3d[rest], K[rest], weights[rest],
                threshold_px=settings.threshold_px, num_hypotheses=settings.num_hypotheses,
                min_inliers=4, seed=settings.seed, max_iterations=settings.max_iterations,
            )  # fmt: skip
            R[rest], t[rest], cov[rest] = hyp.R, hyp.t, hyp.covariance
            inliers[rest], valid[rest] = hyp.inliers, hyp.valid
        finite = torch.isfinite(R).flatten(1).all(-1) & torch.isfinite(t).all(-1)
        return RobustPoses(R=R, t=t, covariance=cov, inliers=inliers & valid[:, None],
                           valid=valid & finite)
