# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Training targets and loss of the CenterNet-style detector (`models.detector_net`).

Targets (`detection_targets`, numpy, one image): per instance, a Gaussian splat on its class's
centre heatmap (exactly 1.0 at its centre cell, radius from the box size by CenterNet's
``gaussian_radius(min_overlap=0.7)``, sigma ``(2r + 1) / 6``, element-wise max where instances
overlap), and at the centre cell its box size [input px] and sub-cell offset [cells]. The cell
and offset are the exact inverse of `pipeline.detection.decode_detections` (see its module
docstring for the pixel convention): for a box ``(x, y, w, h)`` (BOP/COCO, x the index of the
leftmost pixel column) ``q = (x + w / 2) / stride``, cell ``j = floor(q)``, offset ``q - j``.

Loss (`detection_loss`, torch): CenterNet's penalty-reduced pixel-wise focal loss (alpha 2,
beta 4) on the centre logits, computed from logits with ``logsigmoid`` (finite for any logit),
plus L1 on the log-size and on the offset at the instances' centre cells; each term normalised
by the number of instances; weights 1 / 0.1 / 1 (CenterNet's, with the size term on log-sizes).

Data (`DetectionDataset`): frames -> the detector's input through the one frame -> network-input
map of the other datasets (`datasets._prepare`: letterbox, seeded augmentation, optional crop)
and every instance of every object of the network as a visible-part box in input px
(`visible_box_in_input`: the instance mask's own box, clipped to what lands in the input, through
the sample's affine). Validation (`count_matches`): greedy same-class matching at IoU >= 0.5.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F  # noqa: N812 - the usual torch alias

from dvc_perception.engines.preprocess import box_from_mask
from dvc_perception.errors import ConfigError, ShapeError, check_shape
from dvc_perception.models.detector_net import DETECTOR_STRIDE
from dvc_perception.pipeline.detection import BoxDetection, box_iou
from dvc_perception.train.datasets import (
    AugmentConfig,
    FrameSource,
    _check_crop,
    _EpochFrames,
    _prepare,
    _warp,
)

FOCAL_ALPHA = 2.0
FOCAL_BETA = 4.0
SIZE_WEIGHT = 0.1
OFFSET_WEIGHT = 1.0
CENTRE_WEIGHT = 1.0
#: Largest offset target: a centre exactly on a cell's far edge belongs to the next cell, so
#: offsets are in [0, 1); this keeps float rounding from writing 1.0.
_MAX_OFFSET = 1.0 - 1e-6


def gaussian_radius(height: float, width: float, min_overlap: float = 0.7) -> float:
    """CenterNet's Gaussian radius [same unit as the sizes] for a box of `height` x `width`.

    The smallest of the three radii (both corners moved inwards, outwards, or one each) at which
    a box with corners displaced by it still has IoU `min_overlap` with the true box; verbatim
    the formula of CornerNet / CenterNet (``gaussian_radius`` in their ``image.py``), including
    its ``(b + sqrt(b^2 - 4ac)) / 2`` form, so the splats match published training.
    """
    a1 = 1.0
    b1 = height + width
    c1 = width * height * (1.0 - min_overlap) / (1.0 + min_overlap)
    r1 = (b1 + math.sqrt(max(b1 * b1 - 4.0 * a1 * c1, 0.0))) / 2.0
    a2 = 4.0
    b2 = 2.0 * (height + width)
    c2 = (1.0 - min_overlap) * width * height
    r2 = (b2 + math.sqrt(max(b2 * b2 - 4.0 * a2 * c2, 0.0))) / 2.0
    a3 = 4.0 * min_overlap
    b3 = -2.0 * min_overlap * (height + width)
    c3 = (min_overlap - 1.0) * width * height
    r3 = (b3 + math.sqrt(max(b3 * b3 - 4.0 * a3 * c3, 0.0))) / 2.0
    return min(r1, r2, r3)


def detection_targets(
    boxes_xywh: np.ndarray,
    class_index: np.ndarray,
    num_classes: int,
    width: int,
    height: int,
    stride: int = 4,
) -> dict[str, np.ndarray]:
    """Dense targets of one image for `detection_loss`.

    Instances are drawn largest box first, so where two centres share a cell the smaller box's
    size and offset are the ones kept (the centre heatmaps keep both). Boxes with no area or a
    centre outside the map (not a visible-part box) get no target.

    Args:
        boxes_xywh: (M, 4) visible-part boxes ``(x, y, w, h)`` [input px], BOP/COCO convention.
        class_index: (M,) class of each box, in [0, num_classes).
        num_classes: O, the detector's number of classes.
        width: input width [px].
        height: input height [px].
        stride: input px per output cell; the maps are ``ceil(height / stride)`` x
            ``ceil(width / stride)`` (the network's output for sizes divisible by `stride`).

    Returns:
        ``centre`` (O, h, w) float32 heatmaps in [0, 1]; ``size`` (2, h, w) float32 (width,
        height) px and ``offset`` (2, h, w) float32 cells in [0, 1), set at the centre cells
        and 0 elsewhere; ``reg_mask`` (h, w) bool, True at the centre cells.

    Raises:
        ShapeError: `boxes_xywh` not (M, 4) or `class_index` not (M,).
        ConfigError: sizes or stride not positive, a class out of range, a non-finite box.
    """
    boxes = np.asarray(boxes_xywh, dtype=np.float64)
    classes = np.asarray(class_index)
    if boxes.size == 0:  # no instances: any empty array
        boxes, classes = boxes.reshape(0, 4), classes.reshape(0).astype(np.int64)
    check_shape(boxes, "M,4", name="boxes_xywh")
    check_shape(classes, f"{boxes.shape[0]}", name="class_index")
    for name, value in (("num_classes", num_classes), ("width", width), ("height", height),
                        ("stride", stride)):
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ConfigError(f"{name}: expected a positive integer, got {value!r}")
    if classes.size and (
        not np.issubdtype(classes.dtype, np.integer)
        or classes.min() < 0
        or classes.max() >= num_classes
    ):
        raise ConfigError(
            f"class_index: expected integers in [0, {num_classes}), got {classes.tolist()}"
        )
    if not np.all(np.isfinite(boxes)):
        raise ConfigError("boxes_xywh: expected finite boxes")

    out_w, out_h = -(-int(width) // stride), -(-int(height) // stride)
    centre = np.zeros((int(num_classes), out_h, out_w), dtype=np.float32)
    size = np.zeros((2, out_h, out_w), dtype=np.float32)
    offset = np.zeros((2, out_h, out_w), dtype=np.float32)
    reg_mask = np.zeros((out_h, out_w), dtype=bool)

    order = np.argsort(-(boxes[:, 2] * boxes[:, 3]), kind="stable")  # largest first
    for i in order:
        x, y, bw, bh = boxes[i]
        if bw <= 0 or bh <= 0:
            continue
        qx, qy = (x + 0.5 * bw) / stride, (y + 0.5 * bh) / stride
        jx, jy = math.floor(qx), math.floor(qy)
        if not (0 <= jx < out_w and 0 <= jy < out_h):
            continue
        radius = max(0, int(gaussian_radius(bh / stride, bw / stride, 0.7)))
        _draw_gaussian(centre[int(classes[i])], jx, jy, radius)
        size[:, jy, jx] = (bw, bh)
        offset[:, jy, jx] = (min(qx - jx, _MAX_OFFSET), min(qy - jy, _MAX_OFFSET))
        reg_mask[jy, jx] = True
    return {"centre": centre, "size": size, "offset": offset, "reg_mask": reg_mask}


def _draw_gaussian(heat: np.ndarray, jx: int, jy: int, radius: int) -> None:
    """Element-wise max of `heat` (h, w) and a Gaussian of radius `radius` cells at (jx, jy).

    CenterNet's ``draw_umich_gaussian``: sigma ``(2r + 1) / 6``, truncated to the (2r + 1)^2
    window, exactly 1.0 at the centre.
    """
    sigma = (2 * radius + 1) / 6.0
    h, w = heat.shape
    x0, x1 = max(jx - radius, 0), min(jx + radius + 1, w)
    y0, y1 = max(jy - radius, 0), min(jy + radius + 1, h)
    dx = np.arange(x0, x1) - jx
    dy = np.arange(y0, y1) - jy
    g = np.exp(-(dx[None, :] ** 2 + dy[:, None] ** 2) / (2.0 * sigma * sigma))
    np.maximum(heat[y0:y1, x0:x1], g.astype(np.float32), out=heat[y0:y1, x0:x1])
    heat[jy, jx] = 1.0


def stack_detection_targets(targets: Sequence[Mapping[str, np.ndarray]],
                            device: torch.device | str | None = None) -> dict[str, Tensor]:
    """Per-image `detection_targets` -> one batch of tensors (a leading B dimension)."""
    if not targets:
        raise ShapeError("targets: expected at least one image's targets, got none")
    return {
        key: torch.as_tensor(np.stack([np.asarray(t[key]) for t in targets]), device=device)
        for key in ("centre", "size", "offset", "reg_mask")
    }


def focal_loss_sum(logits: Tensor, target: Tensor, alpha: float = FOCAL_ALPHA,
                   beta: float = FOCAL_BETA) -> tuple[Tensor, Tensor]:
    """CenterNet's penalty-reduced focal loss, summed, from logits: (sum, number of positives).

    With p = sigmoid(logit) and y the Gaussian target, a cell with ``y == 1`` adds
    ``-(1 - p)^alpha log p`` and every other cell ``-(1 - y)^beta p^alpha log(1 - p)``;
    ``log p = logsigmoid(logit)``, ``log(1 - p) = logsigmoid(-logit)`` and ``1 - p =
    sigmoid(-logit)``, so the loss is finite for any finite logit. Computed in float32 (or
    float64 for float64 logits).
    """
    if logits.shape != target.shape:
        raise ShapeError(
            f"focal loss: logits {tuple(logits.shape)} and target {tuple(target.shape)} differ"
        )
    x = logits if logits.dtype == torch.float64 else logits.float()
    y = target.to(x.dtype)
    pos = y == 1.0
    pos_term = torch.sigmoid(-x).pow(alpha) * F.logsigmoid(x)
    neg_term = (1.0 - y).pow(beta) * torch.sigmoid(x).pow(alpha) * F.logsigmoid(-x)
    total = -torch.where(pos, pos_term, neg_term).sum()
    return total, pos.sum()


def detection_loss(output: Any, targets: Mapping[str, Any]) -> tuple[Tensor, dict[str, float]]:
    """CenterNet detection loss of a batch.

    ``total = focal(centre) + 0.1 * L1(log size) + 1.0 * L1(offset)``: the focal term summed over
    all cells and classes (`focal_loss_sum`) and divided by the number of positive cells; the L1
    terms are the mean absolute error over the two components, summed over the centre cells
    (``reg_mask``) and divided by the number of instances (normalisers at least 1).

    Args:
        output: a `DetectorNetOutput` (``centre_logits`` (B, O, h, w), ``size`` (B, 2, h, w) px,
            ``offset`` (B, 2, h, w) cells).
        targets: `stack_detection_targets` of the B images (tensors or arrays; a single image's
            `detection_targets` without the batch dimension is accepted for B = 1).

    Returns:
        (total loss, parts): parts maps ``centre``, ``size``, ``offset``, ``total`` to floats
        and ``num_instances`` to the number of instances.

    Raises:
        ShapeError: outputs and targets disagree in shape.
    """
    logits = output.centre_logits
    dev = logits.device
    tgt = {k: torch.as_tensor(np.asarray(v) if not isinstance(v, Tensor) else v, device=dev)
           for k, v in targets.items() if k in ("centre", "size", "offset", "reg_mask")}
    if tgt["centre"].dim() == 3:
        tgt = {k: v.unsqueeze(0) for k, v in tgt.items()}
    check_shape(logits, "B,O,h,w", name="centre_logits")
    b, o, h, w = (int(n) for n in logits.shape)
    check_shape(output.size, f"{b},2,{h},{w}", name="size")
    check_shape(output.offset, f"{b},2,{h},{w}", name="offset")
    check_shape(tgt["centre"], f"{b},{o},{h},{w}", name="targets centre")
    check_shape(tgt["size"], f"{b},2,{h},{w}", name="targets size")
    check_shape(tgt["offset"], f"{b},2,{h},{w}", name="targets offset")
    check_shape(tgt["reg_mask"], f"{b},{h},{w}", name="targets reg_mask")

    focal, num_pos = focal_loss_sum(logits, tgt["centre"])
    l_centre = focal / num_pos.clamp_min(1).to(focal.dtype)

    mask = tgt["reg_mask"].bool().unsqueeze(1).expand(b, 2, h, w)
    num_inst = tgt["reg_mask"].bool().sum()
    norm = 2.0 * num_inst.clamp_min(1).to(torch.float32)
    size_pred = output.size.float()
    size_t = tgt["size"].float()
    log_err = torch.log(size_pred.clamp_min(1e-6)) - torch.log(size_t.clamp_min(1e-6))
    l_size = torch.where(mask, log_err.abs(), torch.zeros_like(log_err)).sum() / norm
    off_err = output.offset.float() - tgt["offset"].float()
    l_offset = torch.where(mask, off_err.abs(), torch.zeros_like(off_err)).sum() / norm

    total = CENTRE_WEIGHT * l_centre + SIZE_WEIGHT * l_size + OFFSET_WEIGHT * l_offset
    parts = {
        "centre": float(l_centre.detach()),
        "size": float(l_size.detach()),
        "offset": float(l_offset.detach()),
        "total": float(total.detach()),
        "num_instances": float(num_inst),
    }
    return total, parts


def visible_box_in_input(
    mask: np.ndarray, affine: np.ndarray, width: int, height: int
) -> tuple[float, float, float, float] | None:
    """Box ``(x, y, w, h)`` [input px] of the part of a source mask that lands in the input.

    The source pixels of `mask` whose squares overlap the input image (``[-0.5, width - 0.5)``
    x ``[-0.5, height - 0.5)`` in pixel-centre coordinates) give a tight source box
    (`box_from_mask`); its edges (``x - 0.5`` and ``x + w - 0.5``) go through the affine and
    are clipped to the input. For the axis-aligned maps of `_prepare` (scale and shift:
    letterbox, zoom, crop) this is exactly the box of the mask's image in the input, e.g. a
    letterbox of scale s maps ``(x, y, w, h)`` to ``(s x, s y, s w, s h)``.

    Args:
        mask: (H, W) bool visible-pixel mask in the source image.
        affine: (2, 3) source px -> input px (pixel-centre convention), no rotation or shear.
        width: input width px.
        height: input height px.

    Returns:
        The box, or None when no pixel of the mask lands in the input.

    Raises:
        ShapeError: `mask` not 2-D or `affine` not (2, 3).
        ConfigError: `affine` rotates, shears or flips.
    """
    mask = np.asarray(mask, dtype=bool)
    check_shape(mask, "H,W", name="mask")
    a = np.asarray(affine, dtype=np.float64)
    check_shape(a, "2,3", name="affine")
    if a[0, 1] != 0.0 or a[1, 0] != 0.0 or not (a[0, 0] > 0 and a[1, 1] > 0):
        raise ConfigError(f"affine: expected a positive scale and shift only, got {a.tolist()}")
    (sx, bx), (sy, by) = (a[0, 0], a[0, 2]), (a[1, 1], a[1, 2])
    u = np.arange(mask.shape[1], dtype=np.float64)
    v = np.arange(mask.shape[0], dtype=np.float64)
    cols = (sx * (u + 0.5) + bx > -0.5) & (sx * (u - 0.5) + bx < width - 0.5)
    rows = (sy * (v + 0.5) + by > -0.5) & (sy * (v - 0.5) + by < height - 0.5)
    box = box_from_mask(mask & rows[:, None] & cols[None, :])
    if box is None:
        return None
    x0, y0, w, h = box
    left = max(sx * (x0 - 0.5) + bx, -0.5)
    right = min(sx * (x0 + w - 0.5) + bx, width - 0.5)
    top = max(sy * (y0 - 0.5) + by, -0.5)
    bottom = min(sy * (y0 + h - 0.5) + by, height - 0.5)
    if right <= left or bottom <= top:
        return None
    return (float(left + 0.5), float(top + 0.5), float(right - left), float(bottom - top))


class DetectionDataset(_EpochFrames):
    """Frames -> detector inputs and dense CenterNet targets (`detection_targets`).

    The input image is exactly `PoseDataset`'s for the same frame, seed, epoch and index (the
    same `_prepare`: letterbox, augmentation, crop). Every annotated instance of an object of
    the network is one box, so several instances of one object id in a frame each get their own
    centre peak; annotations of other objects are ignored. An instance's box is the visible
    part of its mask in the input (`visible_box_in_input`); instances with fewer than
    `min_mask_px` mask pixels at the input resolution (nearest warp, as `PoseDataset` counts
    them) get no target, so the detector is not asked for slivers.

    Args:
        frames: the frame source (every instance of a network object needs a mask).
        object_ids: the detector's classes, in output order (O of them).
        input_width: network input width px (multiple of 4).
        input_height: network input height px (multiple of 4).
        augment: augmentation, or None (validation).
        seed: augmentation seed.
        min_mask_px: fewest visible pixels at the input size for an instance to count.
        crop: (width, height) multiples of 16: train on crops of the input (mostly around an
            object; boxes are clipped to the crop). None: the whole input.
        max_instances: length of the padded ground-truth box list (``boxes``) used by
            validation; a frame with more instances keeps its largest boxes there (the dense
            targets keep every instance).

    Items (dict of tensors, fixed shapes, so the loop's stacking collate batches them):
    ``image`` (3, H, W) float32 RGB [0, 1]; ``centre`` (O, H/4, W/4) float32; ``size`` (2, H/4,
    W/4) float32 px; ``offset`` (2, H/4, W/4) float32 cells; ``reg_mask`` (H/4, W/4) bool;
    ``boxes`` (max_instances, 4) float32 ``(x, y, w, h)`` input px; ``box_class``
    (max_instances,) int64, -1 on padding rows; ``index`` () long.

    Raises:
        ConfigError: no objects, repeated ids, an input size not a multiple of 4, a bad crop.
        ShapeError: (on access) an instance of a network object without a mask, or a mask of
            another size than the image.
    """

    def __init__(
        self,
        frames: FrameSource,
        object_ids: Sequence[str],
        input_width: int,
        input_height: int,
        *,
        augment: AugmentConfig | None = None,
        seed: int = 0,
        min_mask_px: int = 40,
        crop: tuple[int, int] | None = None,
        max_instances: int = 64,
    ) -> None:
        ids = tuple(str(i) for i in object_ids)
        if not ids or len(set(ids)) != len(ids):
            raise ConfigError(f"DetectionDataset: expected unique object ids, got {ids}")
        if input_width % DETECTOR_STRIDE or input_height % DETECTOR_STRIDE:
            raise ConfigError(f"input size must be a multiple of {DETECTOR_STRIDE}, got "
                              f"{input_width}x{input_height}")
        if max_instances < 1:
            raise ConfigError(f"max_instances: expected >= 1, got {max_instances}")
        self.frames = frames
        self.object_ids = ids
        self.width, self.height = int(input_width), int(input_height)
        self.augment = augment
        self.seed = int(seed)
        self.min_mask_px = int(min_mask_px)
        self.crop = _check_crop(crop, self.width, self.height)
        self.max_instances = int(max_instances)
        self.epoch = 0
        self._index = {oid: i for i, oid in enumerate(ids)}

    def boxes(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(image (h, w, 3) float32, boxes (M, 4) float64 input px, classes (M,) int64).

        The sample's input image and its instances' boxes (see the class docstring), before
        the dense targets are drawn.
        """
        frame = self.frames[index]
        rng = self._rng(index)
        affine, image, _ = _prepare(frame, self.width, self.height, self.augment, rng, self.crop)
        out_h, out_w = int(image.shape[0]), int(image.shape[1])
        src_h, src_w = frame.image.shape[:2]
        boxes: list[tuple[float, float, float, float]] = []
        classes: list[int] = []
        for ann in frame.objects:
            j = self._index.get(ann.object_id)
            if j is None:
                continue
            if ann.mask is None:
                raise ShapeError(f"frame {index}: an instance of {ann.object_id!r} has no "
                                 f"mask; detection training needs instance masks")
            check_shape(ann.mask, f"{src_h},{src_w}", name=f"{ann.object_id}.mask")
            warped = _warp(np.asarray(ann.mask).astype(np.uint8), affine, out_w, out_h,
                           nearest=True, fill=0.0)
            if int(np.count_nonzero(warped)) < self.min_mask_px:
                continue
            box = visible_box_in_input(ann.mask, affine, out_w, out_h)
            if box is not None:
                boxes.append(box)
                classes.append(j)
        return (image, np.asarray(boxes, np.float64).reshape(-1, 4),
                np.asarray(classes, np.int64).reshape(-1))

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        """Sample `index` (see the class docstring for the keys)."""
        image, boxes, classes = self.boxes(index)
        out_h, out_w = int(image.shape[0]), int(image.shape[1])
        targets = detection_targets(boxes, classes, len(self.object_ids), out_w, out_h,
                                    DETECTOR_STRIDE)
        padded = np.zeros((self.max_instances, 4), np.float32)
        padded_class = np.full(self.max_instances, -1, np.int64)
        keep = np.argsort(-(boxes[:, 2] * boxes[:, 3]), kind="stable")[: self.max_instances]
        keep = np.sort(keep)
        padded[: keep.size] = boxes[keep]
        padded_class[: keep.size] = classes[keep]
        item = {k: torch.from_numpy(v) for k, v in targets.items()}
        item.update({
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "boxes": torch.from_numpy(padded),
            "box_class": torch.from_numpy(padded_class),
            "index": torch.tensor(int(index)),
        })
        return item


def count_matches(
    detections: Sequence[BoxDetection],
    gt_boxes: np.ndarray,
    gt_classes: np.ndarray,
    iou_threshold: float = 0.5,
) -> int:
    """Number of ground-truth boxes matched by a detection of the same class.

    Greedy in decreasing detection score (COCO's order): each detection takes the unmatched
    ground-truth box of its class with the highest IoU, if that IoU is >= `iou_threshold`; each
    detection and each ground-truth box is used at most once.

    Args:
        detections: the detections of one image (`pipeline.detection.decode_detections`).
        gt_boxes: (M, 4) ``(x, y, w, h)`` ground-truth boxes, same px as the detections.
        gt_classes: (M,) class index of each box.
        iou_threshold: least IoU of a match.

    Returns:
        The number of matches (true positives), at most min(len(detections), M).
    """
    gt = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    cls = np.asarray(gt_classes).reshape(-1)
    check_shape(cls, f"{gt.shape[0]}", name="gt_classes")
    used = np.zeros(gt.shape[0], bool)
    matches = 0
    for det in sorted(detections, key=lambda d: -d.score):
        free = np.flatnonzero((cls == det.class_index) & ~used)
        if free.size == 0:
            continue
        iou = box_iou(det.box_xywh, gt[free])
        best = int(np.argmax(iou))
        if iou[best] >= iou_threshold:
            used[free[best]] = True
            matches += 1
    return matches
