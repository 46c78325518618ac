# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Differentiable heatmap decoding: soft-argmax into keypoints and confidence-pooled weights.

Integral regression (Sun et al., "Integral Human Pose Regression", ECCV 2018): the keypoint is
the expectation of pixel-centre coordinates under the softmax of the heatmap logits, which is
differentiable and sub-pixel accurate. Only Reshape, Softmax, MatMul, Mul, Sigmoid and
ReduceSum are used, so the decode runs inside the exported ONNX graph (opset 17) and TensorRT.

Pixel convention (DESIGN.md): integer coordinates are pixel centres. A heatmap at stride `s`
has cell (i, j) covering input pixels [s*j, s*j + s) horizontally, whose centre is the input
coordinate ``s*j + (s - 1)/2`` (1.5 at stride 4).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from dvc_perception.errors import ShapeError, check_shape


def heatmap_cell_centres(size: int, stride: int, *, dtype: torch.dtype = torch.float32) -> Tensor:
    """Input-image pixel coordinate of the centre of each heatmap cell along one axis.

    Args:
        size: heatmap cells along the axis.
        stride: input pixels per cell.
        dtype: output dtype.

    Returns:
        (size,) px: ``stride * i + (stride - 1) / 2``.
    """
    return torch.arange(size, dtype=dtype) * stride + (stride - 1) / 2.0


def soft_argmax_2d(
    logits: Tensor, stride: int, window: int = 0
) -> tuple[Tensor, Tensor]:
    """Soft-argmax of heatmap logits into input-image pixel coordinates.

    With ``window > 0`` the softmax is restricted to the ``window x window`` cells around each
    channel's arg-max (a local soft-argmax): the residual probability mass of the background
    then cannot pull the keypoint towards the image centre, and the decoded position does not
    depend on the size of the heatmap (training crops vs whole inference images). The arg-max
    selection itself carries no gradient; the expectation inside the window does.

    Args:
        logits: (B, C, h, w) heatmap logits, one channel per keypoint.
        stride: input pixels per heatmap cell.
        window: odd side of the local window in cells, or 0 for the whole heatmap.

    Returns:
        (xy, prob): xy (B, C, 2) px (u right, v down) in the input image, pixel centres at
        integer coordinates; prob (B, C, h*w) the (windowed) softmax distribution (sums to 1
        per channel).
    """
    check_shape(logits, "B,C,H,W", name="logits")
    if stride < 1:
        raise ShapeError(f"stride: expected >= 1, got {stride}")
    if window < 0 or (window and window % 2 == 0):
        raise ShapeError(f"window: expected 0 or an odd number of cells, got {window}")
    b, c, h, w = (int(n) for n in logits.shape)
    flat = logits.reshape(b, c, h * w)
    us = heatmap_cell_centres(w, stride, dtype=logits.dtype).to(logits.device)
    vs = heatmap_cell_centres(h, stride, dtype=logits.dtype).to(logits.device)
    # (h*w, 2) table of cell centres; a MatMul is the expectation and exports as one node.
    grid = torch.stack(
        [us.unsqueeze(0).expand(h, w).reshape(-1), vs.unsqueeze(1).expand(h, w).reshape(-1)],
        dim=-1,
    )
    if window:
        peak = grid[flat.argmax(dim=-1)]  # (B, C, 2) px, centre of the arg-max cell
        # the window (Chebyshev distance in px from the peak) as the outer product of a row and
        # a column test: (B, C, w) and (B, C, h) instead of (B, C, h*w, 2) differences. Cells
        # beyond it get a large negative logit (finite, so FP16 engines stay NaN-free)
        radius = stride * (window // 2) + 0.5 * stride
        in_u = (us.view(1, 1, w) - peak[..., 0:1]).abs() <= radius
        in_v = (vs.view(1, 1, h) - peak[..., 1:2]).abs() <= radius
        inside = (in_v.unsqueeze(-1) & in_u.unsqueeze(-2)).reshape(b, c, h * w)
        flat = torch.where(inside, flat, torch.full_like(flat, -1.0e4))
    prob = torch.softmax(flat, dim=-1)
    xy = prob @ grid
    return xy, prob


def pool_confidence(conf_logits: Tensor, prob: Tensor) -> Tensor:
    """Per-keypoint confidence: sigmoid of the confidence map averaged under the heatmap.

    Args:
        conf_logits: (B, C, h, w) confidence logits, one channel per keypoint.
        prob: (B, C, h*w) the soft-argmax distribution of the same keypoints.

    Returns:
        (B, C) confidence in (0, 1).
    """
    b, c, h, w = (int(n) for n in conf_logits.shape)
    check_shape(prob, f"{b},{c},{h * w}", name="prob")
    return torch.sigmoid((conf_logits.reshape(b, c, h * w) * prob).sum(dim=-1))


def dense_correspondences(
    coordinates: np.ndarray, mask_prob: np.ndarray, stride: int, *, min_prob: float = 0.5,
    max_points: int = 256,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """2D-3D correspondences of one object from a dense object-coordinate output.

    Args:
        coordinates: (3, h, w) object-frame points [m], one per heatmap cell.
        mask_prob: (h, w) the object's mask probability.
        stride: input pixels per cell.
        min_prob: cells below this mask probability are left out.
        max_points: at most this many cells, taken evenly (in row-major order) from those kept.

    Returns:
        (x2d (N, 2) px cell centres in the network input, x3d (N, 3) m, weights (N,) mask
        probabilities), float64; N = 0 when no cell passes.
    """
    check_shape(coordinates, "3,H,W", name="coordinates")
    h, w = int(coordinates.shape[1]), int(coordinates.shape[2])
    check_shape(mask_prob, f"{h},{w}", name="mask_prob")
    prob = np.asarray(mask_prob, np.float64).reshape(-1)
    points = np.asarray(coordinates, np.float64).reshape(3, -1).T
    keep = np.flatnonzero((prob >= min_prob) & np.all(np.isfinite(points), axis=1))
    if keep.size > max_points:
        keep = keep[np.linspace(0, keep.size - 1, max_points).round().astype(np.int64)]
    us = heatmap_cell_centres(w, stride, dtype=torch.float64).numpy()
    vs = heatmap_cell_centres(h, stride, dtype=torch.float64).numpy()
    x2d = np.stack([us[keep % w], vs[keep // w]], axis=-1)
    return x2d, points[keep], prob[keep]
