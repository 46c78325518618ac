# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Detector outputs -> boxes: CenterNet peak decoding and per-class box NMS (numpy only).

Runs on what an engine returns for one frame of `models.detector_net.DetectorNetForExport`
(``centre_prob`` (O, h, w), ``size`` (2, h, w), ``offset`` (2, h, w), one batch element).

Pixel and box conventions (the same as `engines.preprocess` and the keypoint network):

- pixel centres at integer coordinates; input pixel u covers ``[u - 0.5, u + 0.5)``;
- a box ``(x, y, w, h)`` is BOP/COCO's: ``x``, ``y`` the column / row index of its top-left
  pixel, ``w``, ``h`` its extent in px, so it covers ``[x - 0.5, x + w - 0.5)`` in pixel-centre
  coordinates (pixels ``x .. x + w - 1`` for integer values) and its centre is at
  ``(x + w / 2 - 0.5, y + h / 2 - 0.5)``, as in `ZoomCrop.from_box`;
- heatmap cell j (stride s = 4) covers input pixel centres ``s*j .. s*j + s - 1``, i.e.
  ``[s*j - 0.5, s*(j + 1) - 0.5)``, its centre at ``s*j + (s - 1) / 2`` (4j + 1.5);
- a peak at cell (jx, jy) with offset (fx, fy) in [0, 1) puts the box centre at input px
  ``c = (j + f) * s - 0.5`` (f = 0.5: the cell centre), hence
  ``x = (jx + fx) * s - w / 2`` and ``y = (jy + fy) * s - h / 2``. The training targets
  (`train.detection.detection_targets`) invert exactly this: ``j = floor((x + w / 2) / s)``,
  ``f = (x + w / 2) / s - j``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from dvc_perception.errors import ConfigError, check_shape

if TYPE_CHECKING:  # only the type: decoding never needs cv2 / torch
    from dvc_perception.engines.preprocess import Letterbox


@dataclass(frozen=True)
class BoxDetection:
    """One detected instance.

    Attributes:
        class_index: index of the object class (the detector's output channel, the position in
            its ``object_ids``).
        score: centre-heatmap probability at the peak, in [0, 1].
        box_xywh: ``(x, y, w, h)`` px in the image the detector saw (BOP/COCO: x, y the index
            of the top-left pixel; see the module docstring).
    """

    class_index: int
    score: float
    box_xywh: tuple[float, float, float, float]

    @property
    def centre(self) -> tuple[float, float]:
        """Box centre (u, v) px, pixel centres: ``(x + w / 2 - 0.5, y + h / 2 - 0.5)``."""
        x, y, w, h = self.box_xywh
        return (x + 0.5 * w - 0.5, y + 0.5 * h - 0.5)


def local_maxima(heat: np.ndarray) -> np.ndarray:
    """(..., h, w) -> bool: cells equal to the max of their 3x3 window (CenterNet's max-pool NMS).

    Cells outside the map do not count; NaN cells are never maxima and NaN neighbours are
    ignored. Ties (plateaus) keep every tied cell, as ``maxpool(heat) == heat`` does.
    """
    heat = np.asarray(heat)
    pad = [(0, 0)] * (heat.ndim - 2) + [(1, 1), (1, 1)]
    padded = np.pad(heat.astype(np.float64), pad, constant_values=-np.inf)
    h, w = heat.shape[-2:]
    pooled = np.full(heat.shape, -np.inf)
    for dy in range(3):
        for dx in range(3):
            pooled = np.fmax(pooled, padded[..., dy:dy + h, dx:dx + w])
    return heat >= pooled


def box_iou(box: Sequence[float], boxes: np.ndarray) -> np.ndarray:
    """IoU of one ``(x, y, w, h)`` box with each of `boxes` (N, 4) -> (N,) float64."""
    x, y, w, h = (float(v) for v in box)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    ix = np.minimum(x + w, boxes[:, 0] + boxes[:, 2]) - np.maximum(x, boxes[:, 0])
    iy = np.minimum(y + h, boxes[:, 1] + boxes[:, 3]) - np.maximum(y, boxes[:, 1])
    inter = np.clip(ix, 0.0, None) * np.clip(iy, 0.0, None)
    union = w * h + boxes[:, 2] * boxes[:, 3] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def decode_detections(
    centre_prob: np.ndarray,
    size: np.ndarray,
    offset: np.ndarray,
    *,
    stride: int = 4,
    min_score: float = 0.3,
    max_per_class: int = 10,
    nms_iou: float = 0.5,
) -> list[BoxDetection]:
    """Peaks of the centre heatmaps -> boxes, per-class greedy NMS, sorted by score.

    A peak is a cell that is the maximum of its 3x3 window with probability >= `min_score`.
    Its box is ``x = (jx + fx) * stride - w / 2``, ``y = (jy + fy) * stride - h / 2`` with
    (w, h) = ``size`` and (fx, fy) = ``offset`` at the cell (module docstring). Within each
    class, peaks in decreasing score are kept unless their IoU with an already kept box of that
    class exceeds `nms_iou`, up to `max_per_class`; boxes of different classes never suppress
    each other.

    Args:
        centre_prob: (O, h, w) centre probabilities, one map per class.
        size: (2, h, w) box (width, height) [input px].
        offset: (2, h, w) (x, y) centre offset [cells] from the cell's top-left corner, [0, 1).
        stride: input px per heatmap cell.
        min_score: minimum peak probability.
        max_per_class: most detections kept per class.
        nms_iou: IoU above which a lower-scoring box of the same class is dropped.

    Returns:
        Detections sorted by decreasing score (ties: by class, then position).

    Raises:
        ShapeError: the maps' shapes do not match the above.
        ConfigError: `stride` < 1, `max_per_class` < 1, `nms_iou` outside [0, 1] or a non-finite
            `min_score`.
    """
    heat = np.asarray(centre_prob)
    size = np.asarray(size)
    offset = np.asarray(offset)
    check_shape(heat, "O,h,w", name="centre_prob")
    h, w = int(heat.shape[1]), int(heat.shape[2])
    check_shape(size, f"2,{h},{w}", name="size")
    check_shape(offset, f"2,{h},{w}", name="offset")
    if isinstance(stride, bool) or int(stride) != stride or stride < 1:
        raise ConfigError(f"stride: expected a positive integer, got {stride!r}")
    if isinstance(max_per_class, bool) or int(max_per_class) != max_per_class or max_per_class < 1:
        raise ConfigError(f"max_per_class: expected a positive integer, got {max_per_class!r}")
    if not 0.0 <= float(nms_iou) <= 1.0:
        raise ConfigError(f"nms_iou: expected a value in [0, 1], got {nms_iou!r}")
    if not np.isfinite(min_score):
        raise ConfigError(f"min_score: expected a finite value, got {min_score!r}")

    peaks = local_maxima(heat) & (heat >= min_score)
    detections: list[BoxDetection] = []
    for cls in range(int(heat.shape[0])):
        jy, jx = np.nonzero(peaks[cls])
        if jy.size == 0:
            continue
        scores = heat[cls, jy, jx].astype(np.float64)
        bw = size[0, jy, jx].astype(np.float64)
        bh = size[1, jy, jx].astype(np.float64)
        ok = np.isfinite(bw) & np.isfinite(bh) & (bw > 0) & (bh > 0)
        cu = (jx + offset[0, jy, jx].astype(np.float64)) * stride
        cv = (jy + offset[1, jy, jx].astype(np.float64)) * stride
        ok &= np.isfinite(cu) & np.isfinite(cv)
        boxes = np.stack([cu - 0.5 * bw, cv - 0.5 * bh, bw, bh], axis=1)[ok]
        scores = scores[ok]
        order = np.argsort(-scores, kind="stable")  # row-major position breaks ties
        kept: list[int] = []
        for i in order:
            if kept and np.any(box_iou(boxes[i], boxes[kept]) > nms_iou):
                continue
            kept.append(int(i))
            if len(kept) == max_per_class:
                break
        for i in kept:
            x, y, bw_i, bh_i = (float(v) for v in boxes[i])
            detections.append(BoxDetection(cls, float(scores[i]), (x, y, bw_i, bh_i)))
    detections.sort(key=lambda d: -d.score)  # stable: class order among equal scores
    return detections


def boxes_to_source(
    detections: Sequence[BoxDetection], letterbox: Letterbox, *, clip: bool = True
) -> list[BoxDetection]:
    """Boxes in the letterboxed network input -> boxes in the source (full-resolution) image.

    The box's edges ``(x - 0.5, y - 0.5)`` and ``(x + w - 0.5, y + h - 0.5)`` (pixel-centre
    coordinates) go through ``letterbox.points_to_source``, so for a letterbox of scale s the
    source box is ``(x / s, y / s, w / s, h / s)``: the input to `ZoomCrop.from_box`.

    Args:
        detections: boxes in input px (`decode_detections`).
        letterbox: the map that made the network input (anything with `points_to_source`,
            `src_width` and `src_height`, e.g. a `ZoomCrop`, works the same way).
        clip: clip each box to the source image (boxes reaching into the letterbox padding);
            boxes left with no area are dropped.

    Returns:
        The detections with source-image boxes, in the same order; class and score unchanged.
    """
    out: list[BoxDetection] = []
    for det in detections:
        x, y, w, h = (float(v) for v in det.box_xywh)
        edges = np.array([[x - 0.5, y - 0.5], [x + w - 0.5, y + h - 0.5]])
        (u0, v0), (u1, v1) = letterbox.points_to_source(edges) + 0.5
        if clip:
            u0, u1 = np.clip([u0, u1], 0.0, float(letterbox.src_width))
            v0, v1 = np.clip([v0, v1], 0.0, float(letterbox.src_height))
            if u1 <= u0 or v1 <= v0:
                continue
        box = (float(u0), float(v0), float(u1 - u0), float(v1 - v0))
        out.append(BoxDetection(det.class_index, det.score, box))
    return out
