# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Correct the odometry's relative poses of a keyframe window with matched image features.

Depth from motion is only as good as the relative poses: at a 3 cm baseline and 2 m, a pixel's
displacement is ~4 px at 320x240, so a 0.3 deg rotation error (1.5 px) changes its depth by a
third. Odometry (wheel, IMU, or the KinectFusion trajectory of a public RGB-D sequence) is
rarely that good. This module runs a small bundle adjustment over the window: SIFT features of
the reference frame matched into each source (ratio test + a RANSAC fundamental-matrix check),
unknowns the sources' poses relative to the reference (6 each) and each matched reference
feature's inverse depth (1 each), Huber-weighted reprojection residuals in px, and a Gaussian
prior pulling every pose towards the odometry's (`rotation_sigma_deg`, `translation_sigma_m`),
itself Huber-weighted beyond `prior_huber` sigmas, so that one odometry glitch (a pose that
jumps by centimetres) is outvoted by the images instead of bending the window.
The features fix the rotations and the translation directions; the prior fixes the metric
scale, which images alone cannot. Gauss-Newton with the inverse depths eliminated (Schur
complement: they are independent given the poses).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from dvc_perception.errors import ConfigError

#: Gauss-Newton iterations that move only the inverse depths, from the odometry's poses.
_DEPTH_ONLY_ITERATIONS = 5


@dataclass(frozen=True)
class PoseRefineSettings:
    """Settings of the window bundle adjustment (px at the internal resolution, m, deg)."""

    enabled: bool = True
    max_features: int = 1500
    ratio: float = 0.75
    ransac_px: float = 1.0
    rotation_sigma_deg: float = 2.0
    translation_sigma_m: float = 0.03
    huber_px: float = 0.5
    prior_huber: float = 2.0
    iterations: int = 15
    min_matches: int = 20

    def __post_init__(self) -> None:
        if self.iterations <= _DEPTH_ONLY_ITERATIONS:
            raise ConfigError(f"pose_refine.iterations: expected > {_DEPTH_ONLY_ITERATIONS} (the "
                              f"first {_DEPTH_ONLY_ITERATIONS} move only the depths), got "
                              f"{self.iterations}")
        positive = ("max_features", "ransac_px", "rotation_sigma_deg", "translation_sigma_m",
                    "huber_px", "prior_huber")
        bad = [n for n in positive if not getattr(self, n) > 0]
        if bad or not 0.0 < self.ratio < 1.0 or self.min_matches < 1:
            raise ConfigError(f"pose_refine: expected positive {', '.join(positive)}, ratio in "
                              f"(0, 1) and min_matches >= 1 (bad: {bad or 'ratio/min_matches'})")


@dataclass(frozen=True)
class PoseRefineResult:
    """Refined relative poses and what the adjustment saw.

    Attributes:
        poses: one (4, 4) per source, reference camera -> source camera, m.
        matches: matched features per source (after the RANSAC check).
        median_error_px: median reprojection error after the adjustment (NaN: not run).
        refined: False when too few matches left the odometry's poses unchanged.
    """

    poses: list[np.ndarray]
    matches: list[int]
    median_error_px: float
    refined: bool


_SIFT: dict[int, cv2.SIFT] = {}


def features(grey: np.ndarray, max_features: int) -> tuple[np.ndarray, np.ndarray]:
    """SIFT keypoints (M, 2) float64 px and descriptors (M, 128) float32 of `grey` (h, w)."""
    sift = _SIFT.setdefault(max_features, cv2.SIFT_create(max_features))
    img = np.clip(grey * 255.0 + 0.5, 0, 255).astype(np.uint8)
    kps, desc = sift.detectAndCompute(img, None)
    if desc is None or not kps:
        return np.zeros((0, 2)), np.zeros((0, 128), np.float32)
    return np.array([k.pt for k in kps], np.float64), desc.astype(np.float32)


def match(ref_feat: tuple[np.ndarray, np.ndarray], src_feat: tuple[np.ndarray, np.ndarray],
          settings: PoseRefineSettings) -> tuple[np.ndarray, np.ndarray]:
    """Reference feature indices (M,) and source pixels (M, 2) of the accepted matches.

    A match passes the ratio test and a RANSAC fundamental-matrix check (`ransac_px`).
    """
    (_, d_ref), (p_src, d_src) = ref_feat, src_feat
    empty = (np.zeros(0, np.int64), np.zeros((0, 2)))
    if len(d_ref) < 2 or len(d_src) < 2:
        return empty
    pairs = cv2.BFMatcher(cv2.NORM_L2).knnMatch(d_ref, d_src, k=2)
    good = [m for m, n in (p for p in pairs if len(p) == 2)
            if m.distance < settings.ratio * n.distance]
    if len(good) < 8:
        return empty
    qi = np.array([m.queryIdx for m in good], np.int64)
    uv = p_src[[m.trainIdx for m in good]]
    _, inliers = cv2.findFundamentalMat(ref_feat[0][qi], uv, cv2.FM_RANSAC, settings.ransac_px,
                                        0.999)
    if inliers is None:
        return empty
    keep = inliers.ravel().astype(bool)
    return qi[keep], uv[keep]


def _huber_weight(normalised: np.ndarray, k: float) -> float:
    """IRLS weight of a Huber loss at the deviation `normalised` (in sigmas): 1 within `k`."""
    n = float(np.linalg.norm(normalised))
    return 1.0 if n <= k else k / n


def _so3_exp(w: np.ndarray) -> np.ndarray:
    return cv2.Rodrigues(np.asarray(w, np.float64).reshape(3, 1))[0]


def _so3_log(R: np.ndarray) -> np.ndarray:
    return cv2.Rodrigues(R)[0].ravel()


def refine_window(ref_feat: tuple[np.ndarray, np.ndarray],
                  src_feats: list[tuple[np.ndarray, np.ndarray]], odometry: list[np.ndarray],
                  K: np.ndarray, settings: PoseRefineSettings) -> PoseRefineResult:
    """Relative poses (reference -> source, (4, 4) m) refined by the window adjustment.

    Args:
        ref_feat: `features` of the reference frame.
        src_feats: `features` of each source frame.
        odometry: the odometry's relative pose per source, reference -> source camera.
        K: (3, 3) intrinsics of the images the features were found in [px].
        settings: the adjustment's settings.
    """
    unchanged = PoseRefineResult([T.copy() for T in odometry], [0] * len(odometry), float("nan"),
                                 False)
    if not settings.enabled or not odometry:
        return unchanged
    obs = [match(ref_feat, f, settings) for f in src_feats]
    counts = [len(q) for q, _ in obs]
    if sum(counts) < settings.min_matches:
        return PoseRefineResult(unchanged.poses, counts, float("nan"), False)
    used = np.unique(np.concatenate([q for q, _ in obs]))
    index = np.full(len(ref_feat[0]), -1, np.int64)
    index[used] = np.arange(len(used))
    pix = ref_feat[0][used]
    bearings = np.c_[pix, np.ones(len(pix))] @ np.linalg.inv(K).T  # (P, 3), z = 1
    problem = _Problem(K, bearings, [(index[q], uv) for q, uv in obs], odometry, settings)
    problem.solve()
    return PoseRefineResult(problem.poses(), counts, problem.median_error(), True)


class _Problem:
    """The window adjustment's state: poses (R, t) per source and inverse depths per point."""

    def __init__(self, K: np.ndarray, bearings: np.ndarray,
                 obs: list[tuple[np.ndarray, np.ndarray]], odometry: list[np.ndarray],
                 settings: PoseRefineSettings) -> None:
        self.K = K
        self.bearings = bearings
        self.obs = obs
        self.odometry = odometry
        self.s = settings
        self.R = [T[:3, :3].copy() for T in odometry]
        self.t = [T[:3, 3].copy() for T in odometry]
        self.rho = np.full(len(bearings), 0.5)  # 1/m; first refined alone (poses held)

    def _project(self, j: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        pts, uv = self.obs[j]
        Y = self.bearings[pts] @ self.R[j].T
        X = Y / self.rho[pts, None] + self.t[j]
        K = self.K
        z = np.maximum(X[:, 2], 1e-9)
        r = np.c_[K[0, 0] * X[:, 0] / z + K[0, 2] - uv[:, 0],
                  K[1, 1] * X[:, 1] / z + K[1, 2] - uv[:, 1]]
        return Y, X, r, pts

    def solve(self) -> None:
        S, P = len(self.obs), len(self.rho)
        sig_r = np.radians(self.s.rotation_sigma_deg)
        sig_t = self.s.translation_sigma_m
        prior = np.r_[np.full(3, 1 / sig_r**2), np.full(3, 1 / sig_t**2)]
        for it in range(self.s.iterations):
            Hpp = np.zeros((6 * S, 6 * S))
            gp = np.zeros(6 * S)
            Hll = np.full(P, 1e-6)
            gl = np.zeros(P)
            Hpl = np.zeros((6 * S, P))
            for j in range(S):
                Y, X, r, pts = self._project(j)
                if len(pts) == 0:
                    continue
                z = X[:, 2]
                e = np.linalg.norm(r, axis=1)
                w = np.where(e < self.s.huber_px, 1.0, self.s.huber_px / np.maximum(e, 1e-12))
                w[z <= 1e-3] = 0.0
                fx, fy = self.K[0, 0], self.K[1, 1]
                Jx = np.zeros((len(pts), 2, 3))
                Jx[:, 0, 0] = fx / z
                Jx[:, 0, 2] = -fx * X[:, 0] / z**2
                Jx[:, 1, 1] = fy / z
                Jx[:, 1, 2] = -fy * X[:, 1] / z**2
                inv_rho = (1.0 / self.rho[pts])[:, None]
                # d X / d w (left perturbation R <- exp(w) R) = -[Y / rho]x; row a: -(a x Y) / rho
                Jw = -np.cross(Jx, Y[:, None, :]) * inv_rho[:, None]
                Jp = np.concatenate([Jw, Jx], axis=2)  # (n, 2, 6): rotation, translation
                Jl = np.einsum("nab,nb->na", Jx, -Y * inv_rho**2)  # d r / d rho
                sl = slice(6 * j, 6 * j + 6)
                Hpp[sl, sl] += np.einsum("n,nai,naj->ij", w, Jp, Jp)
                gp[sl] += np.einsum("n,nai,na->i", w, Jp, r)
                Hll += np.bincount(pts, w * np.einsum("na,na->n", Jl, Jl), minlength=P)
                gl += np.bincount(pts, w * np.einsum("na,na->n", Jl, r), minlength=P)
                hpl = w[:, None] * np.einsum("nai,na->ni", Jp, Jl)
                for k in range(6):
                    Hpl[6 * j + k] += np.bincount(pts, hpl[:, k], minlength=P)
            Hll *= 1.0 + 1e-2
            if it < _DEPTH_ONLY_ITERATIONS:  # depths alone first, from the odometry's poses
                dp = np.zeros(6 * S)
                dl = -gl / Hll
            else:
                for j in range(S):
                    sl = slice(6 * j, 6 * j + 6)
                    dev = np.r_[_so3_log(self.R[j] @ self.odometry[j][:3, :3].T),
                                self.t[j] - self.odometry[j][:3, 3]]
                    weight = np.r_[np.full(3, _huber_weight(dev[:3] / sig_r, self.s.prior_huber)),
                                   np.full(3, _huber_weight(dev[3:] / sig_t, self.s.prior_huber))]
                    Hpp[sl, sl] += np.diag(prior * weight)
                    gp[sl] += prior * weight * dev
                Hpp *= 1.0 + 1e-2
                schur = Hpp - (Hpl / Hll) @ Hpl.T
                dp = -np.linalg.solve(schur, gp - Hpl @ (gl / Hll))
                dl = -(gl + Hpl.T @ dp) / Hll
            for j in range(S):
                self.R[j] = _so3_exp(dp[6 * j:6 * j + 3]) @ self.R[j]
                self.t[j] = self.t[j] + dp[6 * j + 3:6 * j + 6]
            self.rho = np.clip(self.rho + dl, 1e-3, 1e3)
            if it >= _DEPTH_ONLY_ITERATIONS and np.abs(dp).max() < 1e-7:
                break

    def poses(self) -> list[np.ndarray]:
        out = []
        for R, t in zip(self.R, self.t):
            T = np.eye(4)
            T[:3, :3] = R
            T[:3, 3] = t
            out.append(T)
        return out

    def median_error(self) -> float:
        errs = [np.linalg.norm(self._project(j)[2], axis=1) for j in range(len(self.obs))]
        flat = np.concatenate(errs) if errs else np.zeros(0)
        return float(np.median(flat)) if len(flat) else float("nan")
