# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Training losses: heatmaps, keypoints, confidences, masks, pose through PnP, and depth.

The pose loss follows BPnP (Chen et al., "End-to-End Learnable Geometric Vision by
Backpropagating PnP Optimization", CVPR 2020): solve PnP on the predicted keypoints, project the
object's 3D keypoints with the solved pose and compare with their projection under the ground
truth pose. The gradient reaches the keypoints through `solve_pnp`'s implicit backward.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor
from torch.nn import functional as F  # noqa: N812 - the usual torch alias

from dvc_perception.errors import check_shape
from dvc_perception.geometry.projection import project_points
from dvc_perception.models.heads import heatmap_cell_centres


def gaussian_heatmap_target(
    keypoints_px: Tensor, height: int, width: int, stride: int, sigma_cells: float
) -> Tensor:
    """Normalised Gaussian target distributions around keypoints.

    Args:
        keypoints_px: (N, 2) px in the input image (pixel centres at integers).
        height: heatmap rows h.
        width: heatmap columns w.
        stride: input pixels per heatmap cell.
        sigma_cells: Gaussian standard deviation in heatmap cells.

    Returns:
        (N, h*w) non-negative, each row summing to 1 (a keypoint far outside the map gets its
        mass on the nearest border cells).
    """
    check_shape(keypoints_px, "N,2", name="keypoints_px")
    us = heatmap_cell_centres(width, stride, dtype=keypoints_px.dtype).to(keypoints_px.device)
    vs = heatmap_cell_centres(height, stride, dtype=keypoints_px.dtype).to(keypoints_px.device)
    sigma_px = sigma_cells * stride
    du = (us.view(1, 1, width) - keypoints_px[:, 0].view(-1, 1, 1)) / sigma_px
    dv = (vs.view(1, height, 1) - keypoints_px[:, 1].view(-1, 1, 1)) / sigma_px
    log_t = (-0.5 * (du**2 + dv**2)).reshape(-1, height * width)
    return torch.softmax(log_t, dim=-1)


def heatmap_loss(
    heatmap_logits: Tensor, keypoints_px: Tensor, valid: Tensor, stride: int, sigma_cells: float
) -> Tensor:
    """KL divergence from the Gaussian target to the softmax of the heatmap logits.

    Args:
        heatmap_logits: (B, O, K, h, w) logits.
        keypoints_px: (B, O, K, 2) ground-truth keypoints, px input image.
        valid: (B, O, K) bool, which keypoints to supervise (object present, inside the image).
        stride: heatmap stride px.
        sigma_cells: target standard deviation in heatmap cells.

    Returns:
        () mean KL [nats] over valid keypoints (0 when none is valid).
    """
    b, o, k, h, w = (int(n) for n in heatmap_logits.shape)
    check_shape(keypoints_px, f"{b},{o},{k},2", name="keypoints_px")
    check_shape(valid, f"{b},{o},{k}", name="valid")
    sel = valid.reshape(-1)
    if not bool(sel.any()):
        return heatmap_logits.sum() * 0.0
    logits = heatmap_logits.reshape(-1, h * w)[sel]
    target = gaussian_heatmap_target(keypoints_px.reshape(-1, 2)[sel].detach(), h, w, stride,
                                     sigma_cells).to(logits.dtype)
    log_p = torch.log_softmax(logits, dim=-1)
    kl = (target * (torch.log(target.clamp_min(1e-12)) - log_p)).sum(dim=-1)
    return kl.mean()


def keypoint_loss(x2d: Tensor, keypoints_px: Tensor, valid: Tensor) -> Tensor:
    """Mean L1 distance [px] between soft-argmax keypoints and ground truth.

    Args:
        x2d: (B, O, K, 2) predicted keypoints, px.
        keypoints_px: (B, O, K, 2) ground truth, px.
        valid: (B, O, K) bool.

    Returns:
        () mean over valid keypoints of |du| + |dv| (0 when none is valid).
    """
    check_shape(keypoints_px, ",".join(str(int(n)) for n in x2d.shape), name="keypoints_px")
    sel = valid.reshape(-1)
    if not bool(sel.any()):
        return x2d.sum() * 0.0
    diff = (x2d - keypoints_px.to(x2d.dtype)).reshape(-1, 2)[sel]
    return diff.abs().sum(dim=-1).mean()


def confidence_loss(weights: Tensor, target: Tensor, present: Tensor) -> Tensor:
    """Binary cross-entropy of per-keypoint confidences on present objects.

    Args:
        weights: (B, O, K) predicted confidences in (0, 1).
        target: (B, O, K) float in [0, 1] (1 = keypoint visible and well localised).
        present: (B, O) bool, objects in the frame.

    Returns:
        () mean BCE over the keypoints of present objects (0 when none).
    """
    sel = present.unsqueeze(-1).expand_as(weights).reshape(-1)
    if not bool(sel.any()):
        return weights.sum() * 0.0
    p = weights.reshape(-1)[sel].clamp(1e-6, 1 - 1e-6)
    return F.binary_cross_entropy(p, target.reshape(-1)[sel].to(p.dtype))


def mask_loss(mask_logits: Tensor, mask_target: Tensor) -> Tensor:
    """Binary cross-entropy of the object masks at heatmap resolution.

    Args:
        mask_logits: (B, O, h, w) logits.
        mask_target: (B, O, h, w) float in [0, 1] (fraction of the cell covered by the object).

    Returns:
        () mean BCE.
    """
    check_shape(mask_target, ",".join(str(int(n)) for n in mask_logits.shape), name="mask_target")
    return F.binary_cross_entropy_with_logits(mask_logits, mask_target.to(mask_logits.dtype))


def coordinate_loss(pred: Tensor, target: Tensor, valid: Tensor, scales: Tensor) -> Tensor:
    """Mean L1 error of dense object coordinates, in units of each object's scale.

    Args:
        pred: (B, O, 3, h, w) predicted object-frame points [m].
        target: (B, O, 3, h, w) ground truth [m].
        valid: (B, O, h, w) bool, the cells to supervise.
        scales: (O,) m per unit (the objects' radii): errors of small and large objects weigh
            alike.

    Returns:
        () mean over valid cells of sum_xyz |pred - target| / scale (0 when none is valid).
    """
    check_shape(target, ",".join(str(int(n)) for n in pred.shape), name="target")
    b, o, _, h, w = (int(n) for n in pred.shape)
    check_shape(valid, f"{b},{o},{h},{w}", name="valid")
    if not bool(valid.any()):
        return pred.sum() * 0.0
    err = (pred - target.to(pred.dtype)).abs().sum(dim=2) / scales.to(pred).view(1, o, 1, 1)
    return err[valid].mean()


#: Depth [m] below which the pose loss clamps a projected point (wild poses stay finite).
PROJECTION_MIN_DEPTH_M = 1e-3


def solve_pnp_guarded(
    x2d: Tensor, keypoints_obj: Tensor, K: Tensor, weights: Tensor, *, max_iterations: int = 20,
    min_spread_px: float = 2.0, init: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """`solve_pnp` on the samples whose keypoints are not collapsed onto one spot.

    An untrained network puts every keypoint near the image centre; such problems are
    degenerate (singular normal equations), so they are left out rather than handed to the
    solver. When the batched solver raises `torch.linalg.LinAlgError` (one singular sample),
    the samples are solved one by one and those that still fail count as invalid (with a
    warning) instead of ending a training run.

    Args:
        x2d: (N, K, 2) px keypoints.
        keypoints_obj: (N, K, 3) m object frame.
        K: (N, 3, 3) intrinsics px.
        weights: (N, K) non-negative weights.
        max_iterations: solver iterations.
        min_spread_px: keypoints whose weighted spread (std, px) is below this are skipped.
        init: (N, 6) starting poses ``rotvec | t`` for the solver, or None (its closed form).

    Returns:
        (R (N, 3, 3), t (N, 3), ok (N,) bool); R, t of samples not ok are identity / (0, 0, 1)
        and carry no gradient.
    """
    from dvc_perception.geometry.pnp import solve_pnp

    n = int(x2d.shape[0])
    R = torch.eye(3, dtype=x2d.dtype, device=x2d.device).expand(n, 3, 3).clone()
    t = torch.zeros(n, 3, dtype=x2d.dtype, device=x2d.device)
    t[:, 2] = 1.0
    ok = torch.zeros(n, dtype=torch.bool, device=x2d.device)
    with torch.no_grad():
        spread = x2d.detach().std(dim=1).amax(dim=-1)
        solvable = torch.isfinite(spread) & (spread > min_spread_px)
    if not bool(solvable.any()):
        return R, t, ok
    idx = torch.nonzero(solvable).squeeze(-1)
    kp, Kd, wd = keypoints_obj.to(x2d.dtype), K.to(x2d.dtype), weights.to(x2d.dtype)
    x0 = None if init is None else init.detach().to(x2d.dtype)
    try:
        res = solve_pnp(x2d[idx], kp[idx], Kd[idx], wd[idx], max_iterations=max_iterations,
                        backward="implicit", init=None if x0 is None else x0[idx])
        parts = [(idx, res.R, res.t, res.valid)]
    except torch.linalg.LinAlgError:
        # one singular sample fails the batched solve: solve one by one, drop the failures
        parts = []
        for i in idx.tolist():
            try:
                r = solve_pnp(x2d[i : i + 1], kp[i : i + 1], Kd[i : i + 1], wd[i : i + 1],
                              max_iterations=max_iterations, backward="implicit",
                              init=None if x0 is None else x0[i : i + 1])
            except torch.linalg.LinAlgError as err:
                warnings.warn(f"solve_pnp failed on a sample, counted invalid: {err}",
                              stacklevel=2)
                continue
            parts.append((torch.tensor([i], device=x2d.device), r.R, r.t, r.valid))
    for sel, R_s, t_s, valid_s in parts:
        R = R.index_copy(0, sel, R_s)
        t = t.index_copy(0, sel, t_s)
        ok = ok.index_copy(0, sel, valid_s & torch.isfinite(t_s).all(-1))
    return R, t, ok


def pose_reprojection_loss(
    x2d: Tensor,
    weights: Tensor,
    keypoints_obj: Tensor,
    K: Tensor,
    R_gt: Tensor,
    t_gt: Tensor,
    *,
    clamp_px: float = 20.0,
    max_iterations: int = 20,
    init_from_gt: bool = True,
) -> tuple[Tensor, Tensor]:
    """Pose loss through `solve_pnp`: reprojection of the 3D keypoints, solved vs true pose.

    Args:
        x2d: (N, K, 2) predicted keypoints px (network input image, undistorted).
        weights: (N, K) PnP weights (detach them to keep the pose loss off the confidences).
        keypoints_obj: (N, K, 3) m, object frame.
        K: (N, 3, 3) intrinsics of the network input image.
        R_gt: (N, 3, 3) ground-truth rotation.
        t_gt: (N, 3) m ground-truth translation.
        clamp_px: per-keypoint error beyond which the loss grows only logarithmically: early
            in training PnP on poor keypoints gives wild poses whose gradients would dominate.
        max_iterations: LM iterations of the solver.
        init_from_gt: start the solver at the ground-truth pose. The implicit gradient holds at
            whichever optimum the solver reaches; starting at the truth selects the optimum
            nearest to it, so early, poor keypoints still give a usable (not a mirrored or
            behind-the-camera) solution and a gradient.

    Returns:
        (loss, ok): loss () mean capped error [px] over samples whose solve is valid and finite;
        ok (N,) bool, those samples.
    """
    n = int(x2d.shape[0])
    check_shape(keypoints_obj, f"{n},*,3", name="keypoints_obj")
    dtype = x2d.dtype
    kp = keypoints_obj.to(dtype)
    if x2d.requires_grad:
        # a nearly singular solve can send inf/NaN back through the implicit backward for its
        # own sample; zero those entries so they cannot poison the rest of the batch
        x2d.register_hook(lambda g: torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0))
    init = None
    if init_from_gt:
        from dvc_perception.geometry.so3 import matrix_to_rotvec

        init = torch.cat([matrix_to_rotvec(R_gt.to(dtype)), t_gt.to(dtype)], dim=-1)
    R, t, ok = solve_pnp_guarded(x2d, kp, K.to(dtype), weights.to(dtype),
                                 max_iterations=max_iterations, init=init)
    ref = project_points(kp, R_gt.to(dtype), t_gt.to(dtype), K.to(dtype),
                         min_depth=PROJECTION_MIN_DEPTH_M)
    est = project_points(kp, R, t, K.to(dtype), min_depth=PROJECTION_MIN_DEPTH_M)
    err = (est - ref).norm(dim=-1)  # (N, K) px
    ok = ok & torch.isfinite(err).all(dim=-1)
    if not bool(ok.any()):
        return x2d.sum() * 0.0, ok
    # cap softly: err for small errors, clamp_px * (1 + log(err / clamp_px)) beyond
    capped = torch.where(
        err < clamp_px, err, clamp_px * (1.0 + torch.log(err.clamp_min(clamp_px) / clamp_px))
    )
    return capped[ok].mean(), ok


def silog_loss(pred: Tensor, target: Tensor, valid: Tensor, lam: float = 0.85) -> Tensor:
    """Scale-invariant log loss (Eigen et al., NeurIPS 2014), as sqrt of the variance form.

    Args:
        pred: (B, 1, H, W) predicted depth m (> 0).
        target: (B, 1, H, W) ground-truth depth m.
        valid: (B, 1, H, W) bool, finite positive ground truth.
        lam: 0 = plain log-RMSE, 1 = fully scale invariant.

    Returns:
        () loss, mean over images with any valid pixel.
    """
    b = int(pred.shape[0])
    # masked sums, not boolean indexing: the same numbers, without nonzero/index kernels over
    # every pixel (they took about 30 % of a depth training step on the CPU)
    n = valid.reshape(b, -1).sum(dim=-1).to(pred.dtype)
    has = (n > 0).to(pred.dtype)
    n_images = has.sum()
    if not bool(n_images > 0):
        return pred.sum() * 0.0
    # invalid pixels (NaN targets included) contribute a log ratio of exactly 0
    d = torch.log(pred.clamp_min(1e-6)) - torch.log(target.clamp_min(1e-6).to(pred.dtype))
    d = torch.where(valid, d, torch.zeros_like(d)).reshape(b, -1)
    count = n.clamp_min(1.0)
    mean = d.sum(dim=-1) / count
    var = d.square().sum(dim=-1) / count - lam * mean.square()
    return (torch.sqrt(var.clamp_min(1e-12)) * has).sum() / n_images


def depth_l1_loss(pred: Tensor, target: Tensor, valid: Tensor) -> Tensor:
    """Mean absolute depth error [m] over valid pixels (0 when none)."""
    n = valid.sum()
    if not bool(n > 0):
        return pred.sum() * 0.0
    # invalid pixels compare with the prediction itself: error and gradient exactly 0 there,
    # even where the target is NaN
    target = torch.where(valid, target.to(pred.dtype), pred.detach())
    return (pred - target).abs().sum() / n.to(pred.dtype)


def nan_to_invalid(depth: Tensor) -> tuple[Tensor, Tensor]:
    """Depth (…) m with NaN/inf/<=0 unknown -> (depth with unknowns set to 1, valid mask)."""
    valid = torch.isfinite(depth) & (depth > 0)
    return torch.where(valid, depth, torch.ones_like(depth)), valid
