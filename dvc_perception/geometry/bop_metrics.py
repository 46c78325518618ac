# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""BOP pose errors (Hodan et al., BOP 2020): MSSD, MSPD, their average recalls, and box IoU.

For a model's points X (N, 3) m and its symmetry transforms {(R_s, t_s)} (identity included):

- MSSD = min_s max_i || (R_e X_i + t_e) - (R_g (R_s X_i + t_s) + t_g) ||       [m]
- MSPD = min_s max_i || pi(K, R_e X_i + t_e) - pi(K, R_g (R_s X_i + t_s) + t_g) ||   [px]
- AR_MSSD: mean recall over thresholds 0.05, 0.10, ..., 0.50 x the object diameter;
  AR_MSPD: mean recall over 5, 10, ..., 50 px x (image width / 640).

A missed target counts with an infinite error. Numpy float64 throughout; one pose pair at a time
(evaluation, not training).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: MSSD thresholds as fractions of the object diameter.
MSSD_THRESHOLDS = tuple(np.round(np.arange(0.05, 0.51, 0.05), 2))
#: MSPD thresholds in px for a 640 px wide image (scaled by width / 640).
MSPD_THRESHOLDS_PX = tuple(float(v) for v in range(5, 51, 5))


def _symmetric_points(points: np.ndarray, R_gt: np.ndarray, t_gt: np.ndarray,
                      symmetries: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """(S, N, 3) m: the model under the reference pose composed with each symmetry."""
    R_s = np.stack([np.asarray(R, np.float64) for R, _ in symmetries])
    t_s = np.stack([np.asarray(t, np.float64).reshape(3) for _, t in symmetries])
    local = points[None] @ R_s.transpose(0, 2, 1) + t_s[:, None]  # (S, N, 3) object frame
    return local @ np.asarray(R_gt, np.float64).T + np.asarray(t_gt, np.float64).reshape(3)


def _identity_only() -> list[tuple[np.ndarray, np.ndarray]]:
    return [(np.eye(3), np.zeros(3))]


def mssd_error(R_est: np.ndarray, t_est: np.ndarray, R_gt: np.ndarray, t_gt: np.ndarray,
               points: np.ndarray,
               symmetries: Sequence[tuple[np.ndarray, np.ndarray]] | None = None) -> float:
    """Maximum symmetry-aware surface distance [m] of one pose estimate (see module doc)."""
    pts = np.asarray(points, np.float64)
    est = pts @ np.asarray(R_est, np.float64).T + np.asarray(t_est, np.float64).reshape(3)
    ref = _symmetric_points(pts, R_gt, t_gt, symmetries or _identity_only())
    return float(np.linalg.norm(ref - est[None], axis=-1).max(axis=1).min())


def mspd_error(R_est: np.ndarray, t_est: np.ndarray, R_gt: np.ndarray, t_gt: np.ndarray,
               points: np.ndarray, K: np.ndarray,
               symmetries: Sequence[tuple[np.ndarray, np.ndarray]] | None = None) -> float:
    """Maximum symmetry-aware projection distance [px] of one pose estimate (pinhole K)."""
    pts = np.asarray(points, np.float64)
    K = np.asarray(K, np.float64)

    def project(cam: np.ndarray) -> np.ndarray:
        uvw = cam @ K.T
        return uvw[..., :2] / uvw[..., 2:]

    est = project(pts @ np.asarray(R_est, np.float64).T + np.asarray(t_est, np.float64).reshape(3))
    ref = project(_symmetric_points(pts, R_gt, t_gt, symmetries or _identity_only()))
    err = np.linalg.norm(ref - est[None], axis=-1).max(axis=1).min()
    return float(err) if np.isfinite(err) else float("inf")


def average_recall(errors: Sequence[float], thresholds: Sequence[float]) -> float:
    """Mean over `thresholds` of the fraction of `errors` below each (inf: a miss)."""
    e = np.asarray(errors, np.float64)
    if e.size == 0:
        return float("nan")
    return float(np.mean([(e < th).mean() for th in thresholds]))


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two boxes ``(x, y, width, height)`` in px (BOP's ``bbox`` convention)."""
    ax0, ay0, aw, ah = (float(v) for v in a)
    bx0, by0, bw, bh = (float(v) for v in b)
    iw = max(0.0, min(ax0 + aw, bx0 + bw) - max(ax0, bx0))
    ih = max(0.0, min(ay0 + ah, by0 + bh) - max(ay0, by0))
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def projected_box(R: np.ndarray, t: np.ndarray, points: np.ndarray, K: np.ndarray,
                  width: int, height: int) -> tuple[float, float, float, float] | None:
    """``(x, y, w, h)`` px of the model's projection at a pose, clipped to the image.

    None when a point is at or behind the camera or nothing of the box is in the image.
    """
    cam = np.asarray(points, np.float64) @ np.asarray(R, np.float64).T + np.asarray(t).reshape(3)
    if np.any(cam[:, 2] <= 1e-6):
        return None
    uvw = cam @ np.asarray(K, np.float64).T
    uv = uvw[:, :2] / uvw[:, 2:]
    x0, y0 = np.clip(uv.min(0), 0, [width, height])
    x1, y1 = np.clip(uv.max(0), 0, [width, height])
    if x1 <= x0 or y1 <= y0:
        return None
    return float(x0), float(y0), float(x1 - x0), float(y1 - y0)
