# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Pose and depth error metrics (rotation, translation, reprojection, ADD, ADD-S, depth).

Every function takes numpy arrays or torch tensors and returns the same kind: a torch tensor
when any input is one (on its device, in its floating dtype), a numpy array otherwise. Poses are
object-in-camera, ``X_cam = R @ X_obj + t`` (m). Leading batch dimensions are kept, so unbatched
inputs give 0-d results.

References: ADD and ADD-S follow Hinterstoisser et al., "Model based training, detection and pose
estimation of texture-less 3D objects" (ACCV 2012) and the BOP toolkit's ``add`` / ``adi``
(Hodan et al., "BOP: Benchmark for 6D object pose estimation", ECCV 2018).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Union

import numpy as np
import torch
from torch import Tensor

from dvc_perception.errors import ShapeError, check_shape

ArrayLike = Union[np.ndarray, Tensor]

# Bound on the number of pairwise distances ADD-S holds at once (B * chunk * N floats).
_ADDS_PAIRS_PER_CHUNK = 1 << 22


def _prepare(*arrays: Any) -> tuple[list[Tensor], bool]:
    """Inputs as tensors of one floating dtype and device, and whether any was a tensor."""
    as_torch = any(isinstance(a, Tensor) for a in arrays)
    ref = next((a for a in arrays if isinstance(a, Tensor) and a.is_floating_point()), None)
    dtype = ref.dtype if ref is not None else torch.float64
    device = ref.device if ref is not None else torch.device("cpu")
    out = [torch.as_tensor(np.asarray(a) if not isinstance(a, Tensor) else a).to(device, dtype)
           for a in arrays]
    return out, as_torch


def _finish(x: Tensor, as_torch: bool) -> ArrayLike:
    return x if as_torch else x.detach().cpu().numpy()


def rotation_error_deg(R_est: ArrayLike, R_gt: ArrayLike) -> ArrayLike:
    """Angle of the rotation between two orientations, degrees in [0, 180].

    Computed as ``atan2(|vee(D - D^T)| / 2, (tr D - 1) / 2)`` with ``D = R_est @ R_gt^T``, which
    stays accurate near 0 and near 180 degrees, where ``arccos`` of the trace loses half the
    digits.

    Args:
        R_est: (B, 3, 3) estimated rotations (any leading dims).
        R_gt: (B, 3, 3) reference rotations, broadcastable against `R_est`.

    Returns:
        (B,) degrees.
    """
    (R_est, R_gt), as_torch = _prepare(R_est, R_gt)
    check_shape(R_est, "...,3,3", name="R_est")
    check_shape(R_gt, "...,3,3", name="R_gt")
    D = R_est @ R_gt.transpose(-1, -2)
    vee = torch.stack(
        [D[..., 2, 1] - D[..., 1, 2], D[..., 0, 2] - D[..., 2, 0], D[..., 1, 0] - D[..., 0, 1]],
        dim=-1,
    )
    sin = 0.5 * torch.linalg.vector_norm(vee, dim=-1)
    cos = 0.5 * (D[..., 0, 0] + D[..., 1, 1] + D[..., 2, 2] - 1.0)
    return _finish(torch.rad2deg(torch.atan2(sin, cos)), as_torch)


def translation_error(t_est: ArrayLike, t_gt: ArrayLike) -> ArrayLike:
    """Euclidean distance between translations.

    Args:
        t_est: (B, 3) estimated translations, m (any leading dims).
        t_gt: (B, 3) reference translations, m.

    Returns:
        (B,) m.
    """
    (t_est, t_gt), as_torch = _prepare(t_est, t_gt)
    check_shape(t_est, "...,3", name="t_est")
    check_shape(t_gt, "...,3", name="t_gt")
    return _finish(torch.linalg.vector_norm(t_est - t_gt, dim=-1), as_torch)


def _transform(R: Tensor, t: Tensor, points: Tensor) -> Tensor:
    """(..., N, 3) = R (..., 3, 3) @ points + t (..., 3)."""
    return points @ R.transpose(-1, -2) + t.unsqueeze(-2)


def reprojection_rms_px(
    x2d: ArrayLike,
    x3d: ArrayLike,
    K: ArrayLike,
    R: ArrayLike,
    t: ArrayLike,
    mask: ArrayLike | None = None,
) -> ArrayLike:
    """Root-mean-square reprojection error of a pose, pinhole (undistorted) pixels.

    ``sqrt(mean_i |pi(K (R X_i + t)) - x_i|^2)``, the figure OpenCV's calibration reports.

    Args:
        x2d: (B, N, 2) observed px in the undistorted image.
        x3d: (B, N, 3) or (N, 3) object points, m, object frame.
        K: (B, 3, 3) or (3, 3) camera matrix, px.
        R: (B, 3, 3) rotation, object to camera.
        t: (B, 3) translation, m, camera frame.
        mask: optional (B, N) bool, the points to count (all when None).

    Returns:
        (B,) px; NaN for a sample whose mask is empty.
    """
    args = [x2d, x3d, K, R, t] + ([] if mask is None else [mask])
    tensors, as_torch = _prepare(*args)
    x2d, x3d, K, R, t = tensors[:5]
    check_shape(x2d, "...,2", name="x2d")
    check_shape(x3d, "...,3", name="x3d")
    check_shape(K, "...,3,3", name="K")
    check_shape(R, "...,3,3", name="R")
    check_shape(t, "...,3", name="t")
    cam = _transform(R, t, x3d) @ K.transpose(-1, -2)
    uv = cam[..., :2] / cam[..., 2:3]
    sq = ((uv - x2d) ** 2).sum(-1)
    if mask is None:
        return _finish(sq.mean(-1).sqrt(), as_torch)
    w = tensors[5].to(sq.dtype).expand_as(sq)
    return _finish(((sq * w).sum(-1) / w.sum(-1)).sqrt(), as_torch)


def _model_points_at_both_poses(
    R_est: ArrayLike, t_est: ArrayLike, R_gt: ArrayLike, t_gt: ArrayLike, points_obj: ArrayLike
) -> tuple[Tensor, Tensor, bool]:
    """(points at the estimate (B, N, 3), at the reference (B, N, 3), inputs were torch)."""
    (R_est, t_est, R_gt, t_gt, pts), as_torch = _prepare(R_est, t_est, R_gt, t_gt, points_obj)
    check_shape(pts, "...,3", name="points_obj")
    return _transform(R_est, t_est, pts), _transform(R_gt, t_gt, pts), as_torch


def add_error(
    R_est: ArrayLike, t_est: ArrayLike, R_gt: ArrayLike, t_gt: ArrayLike, points_obj: ArrayLike
) -> ArrayLike:
    """ADD: mean distance between the model points under the two poses.

    Args:
        R_est: (B, 3, 3) estimated rotation.
        t_est: (B, 3) estimated translation, m.
        R_gt: (B, 3, 3) reference rotation.
        t_gt: (B, 3) reference translation, m.
        points_obj: (N, 3) or (B, N, 3) model points, m, object frame.

    Returns:
        (B,) m.
    """
    est, gt, as_torch = _model_points_at_both_poses(R_est, t_est, R_gt, t_gt, points_obj)
    return _finish(torch.linalg.vector_norm(est - gt, dim=-1).mean(-1), as_torch)


def adds_error(
    R_est: ArrayLike, t_est: ArrayLike, R_gt: ArrayLike, t_gt: ArrayLike, points_obj: ArrayLike
) -> ArrayLike:
    """ADD-S (BOP "adi"): mean distance from each estimated point to the closest reference one.

    For symmetric objects (eggbox, glue): a pose that differs by a symmetry scores 0.

    Args and shapes as `add_error`.

    Returns:
        (B,) m. Memory is bounded by chunking the N x N distances.
    """
    est, gt, as_torch = _model_points_at_both_poses(R_est, t_est, R_gt, t_gt, points_obj)
    est, gt = torch.broadcast_tensors(est, gt)
    lead, n = est.shape[:-2], est.shape[-2]
    est = est.reshape(-1, n, 3)
    gt = gt.reshape(-1, n, 3)
    chunk = max(1, _ADDS_PAIRS_PER_CHUNK // max(1, est.shape[0] * n))
    nearest = torch.cat(
        # direct differences, not |a|^2 + |b|^2 - 2ab, which loses ~0.3 mm at 1 m in float32
        [
            torch.cdist(est[:, i : i + chunk], gt, compute_mode="donot_use_mm_for_euclid_dist")
            .amin(-1)
            for i in range(0, n, chunk)
        ],
        dim=-1,
    )
    return _finish(nearest.mean(-1).reshape(lead), as_torch)


def depth_metrics(
    pred: ArrayLike, gt: ArrayLike, valid: ArrayLike | None = None
) -> dict[str, float]:
    """Standard monocular-depth errors over the valid pixels (Eigen et al., NeurIPS 2014).

    Args:
        pred: (H, W) predicted depth, m (any leading dims, all pixels pooled).
        gt: (H, W) reference depth, m; NaN, inf or <= 0 where unknown (REP 118).
        valid: optional (H, W) bool mask; by default the pixels where `gt` is finite and > 0
            and `pred` is finite. A given mask is combined with that default.

    Returns:
        ``{"abs_rel": mean |pred - gt| / gt, "rmse": m, "delta_1_25": fraction of pixels with
        max(pred / gt, gt / pred) < 1.25, "n": number of valid pixels, "n_gt": pixels where
        `gt` is valid (and `valid` set), "density": n / n_gt}``; the three errors are NaN when
        n == 0 (an empty frame is not an error), the density when n_gt == 0.
    """
    args = [pred, gt] + ([] if valid is None else [valid])
    tensors, _ = _prepare(*args)
    pred, gt = tensors[0], tensors[1]
    if pred.shape != gt.shape:
        raise ShapeError(
            f"pred: expected the shape of gt {tuple(gt.shape)}, got {tuple(pred.shape)}"
        )
    gt_ok = torch.isfinite(gt) & (gt > 0)
    if valid is not None:
        if tensors[2].shape != gt.shape:
            raise ShapeError(
                f"valid: expected the shape of gt {tuple(gt.shape)}, got {tuple(tensors[2].shape)}"
            )
        gt_ok &= tensors[2] != 0
    ok = gt_ok & torch.isfinite(pred)
    p, g = pred[ok], gt[ok]
    n, n_gt = int(ok.sum()), int(gt_ok.sum())
    nan = float("nan")
    density = n / n_gt if n_gt else nan
    if n == 0:
        return {"abs_rel": nan, "rmse": nan, "delta_1_25": nan, "n": 0, "n_gt": n_gt,
                "density": density}  # fmt: skip
    ratio = torch.maximum(p / g, g / p)
    ratio = torch.where(p > 0, ratio, torch.full_like(ratio, float("inf")))
    return {
        "abs_rel": float(((p - g).abs() / g).mean()),
        "rmse": float(((p - g) ** 2).mean().sqrt()),
        "delta_1_25": float((ratio < 1.25).to(torch.float64).mean()),
        "n": n,
        "n_gt": n_gt,
        "density": density,
    }


def median_scale_depth(pred: ArrayLike, gt: ArrayLike) -> ArrayLike:
    """Each (H, W) frame of `pred` times median(gt) / median(pred) over its valid pixels.

    The per-frame scale alignment used to score monocular depth, whose scale is unobservable
    (Zhou et al., "Unsupervised learning of depth and ego-motion from video", CVPR 2017).
    Valid pixels are those `depth_metrics` scores (gt finite and > 0, pred finite); medians
    average the two middle values for an even count, as ``numpy.median`` does.

    Args:
        pred: (..., H, W) predicted depth, m.
        gt: (..., H, W) reference depth, m; NaN, inf or <= 0 where unknown.

    Returns:
        (..., H, W) scaled prediction; a frame with no valid pixel or a prediction median
        <= 0 is all NaN (left out of any metric).
    """
    (p, g), as_torch = _prepare(pred, gt)
    if p.shape != g.shape or p.dim() < 2:
        raise ShapeError(f"pred: expected (..., H, W) with the shape of gt {tuple(g.shape)}, "
                         f"got {tuple(p.shape)}")  # fmt: skip
    frames_p, frames_g = p.reshape(-1, *p.shape[-2:]), g.reshape(-1, *g.shape[-2:])
    out = torch.full_like(frames_p, float("nan"))
    for i, (fp, fg) in enumerate(zip(frames_p, frames_g)):  # per frame: quantile's size limit
        ok = torch.isfinite(fg) & (fg > 0) & torch.isfinite(fp)
        if not bool(ok.any()):
            continue
        median_p = torch.quantile(fp[ok], 0.5)
        if float(median_p) > 0:
            out[i] = fp * (torch.quantile(fg[ok], 0.5) / median_p)
    return _finish(out.reshape(p.shape), as_torch)


def recall_at(errors: ArrayLike, thresholds: Sequence[float] | ArrayLike) -> np.ndarray:
    """Fraction of errors at or below each threshold (NaN counts as a failure).

    Args:
        errors: (M,) per-sample errors in any unit.
        thresholds: (T,) thresholds in the unit of `errors`, e.g. 0.1 * diameter for ADD.

    Returns:
        (T,) float64 recalls in [0, 1]; NaN for every threshold when `errors` is empty.
    """
    e = np.asarray(
        errors.detach().cpu().numpy() if isinstance(errors, Tensor) else errors, dtype=np.float64
    ).reshape(-1)
    thr = np.asarray(
        thresholds.detach().cpu().numpy() if isinstance(thresholds, Tensor) else thresholds,
        dtype=np.float64,
    ).reshape(-1)
    if e.size == 0:
        return np.full(thr.shape, np.nan)
    return (np.nan_to_num(e, nan=np.inf)[None, :] <= thr[:, None]).mean(axis=1)
