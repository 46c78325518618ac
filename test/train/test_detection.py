# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Detector targets and loss: splats, regression targets, the focal loss against a float64
reference written out here, and a tiny overfit that decodes back to the boxes it learnt."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from dvc_perception.engines.preprocess import box_from_mask
from dvc_perception.errors import ConfigError, ShapeError
from dvc_perception.models.detector_net import DetectorNet, DetectorNetConfig, DetectorNetOutput
from dvc_perception.pipeline.detection import box_iou, decode_detections
from dvc_perception.train.detection import (
    detection_loss,
    detection_targets,
    focal_loss_sum,
    gaussian_radius,
    stack_detection_targets,
)


def test_box_from_mask():
    mask = np.zeros((10, 12), bool)
    assert box_from_mask(mask) is None
    mask[3, 5] = True
    assert box_from_mask(mask) == (5.0, 3.0, 1.0, 1.0)
    mask[2:8, 4:11] = True
    assert box_from_mask(mask) == (4.0, 2.0, 7.0, 6.0)
    with pytest.raises(ShapeError, match="mask"):
        box_from_mask(np.zeros((2, 3, 4), bool))


def test_gaussian_radius_properties():
    r = gaussian_radius(10.0, 20.0)
    assert 0 < r < 10.0
    assert gaussian_radius(30.0, 60.0) == pytest.approx(3 * r)  # homogeneous in the size
    assert gaussian_radius(10.0, 30.0) > r and gaussian_radius(10.0, 20.0, 0.9) < r


def test_targets_splats_and_regression_values():
    # stride 4, 64x48 input -> 16x12 cells; two class-0 boxes and one class-1 box
    boxes = np.array([[10.0, 8.0, 40.0, 24.0], [30.0, 14.0, 12.0, 10.0], [0.0, 0.0, 3.0, 3.0]])
    t = detection_targets(boxes, np.array([0, 0, 1]), 2, 64, 48)
    assert t["centre"].shape == (2, 12, 16) and t["centre"].dtype == np.float32
    assert t["size"].shape == (2, 12, 16) and t["offset"].shape == (2, 12, 16)
    assert t["reg_mask"].shape == (12, 16) and t["reg_mask"].dtype == bool
    # centre of box 0: (10 + 20) / 4 = 7.5, (8 + 12) / 4 = 5.0 -> cell (7, 5), offset (0.5, 0)
    assert t["centre"][0, 5, 7] == 1.0 and t["reg_mask"][5, 7]
    np.testing.assert_allclose(t["size"][:, 5, 7], [40.0, 24.0])
    np.testing.assert_allclose(t["offset"][:, 5, 7], [0.5, 0.0])
    # box 1: (36 / 4, 19 / 4) = (9.0, 4.75) -> cell (9, 4), offset (0, 0.75)
    assert t["centre"][0, 4, 9] == 1.0
    np.testing.assert_allclose(t["offset"][:, 4, 9], [0.0, 0.75])
    # box 2 (class 1): tiny, radius 0: a single 1.0 cell
    assert t["centre"][1, 0, 0] == 1.0 and np.count_nonzero(t["centre"][1]) == 1
    assert t["reg_mask"].sum() == 3 and (t["centre"] == 1.0).sum() == 3
    # the Gaussian of box 0 at a neighbour of its centre (where box 1's splat is lower)
    r = int(gaussian_radius(24 / 4, 40 / 4))
    sigma = (2 * r + 1) / 6
    assert r >= 1
    assert t["centre"][0, 5, 6] == pytest.approx(math.exp(-1 / (2 * sigma**2)), rel=1e-6)
    # element-wise max where splats overlap: never above either splat's own maximum
    only0 = detection_targets(boxes[:1], np.array([0]), 2, 64, 48)["centre"][0]
    only1 = detection_targets(boxes[1:2], np.array([0]), 2, 64, 48)["centre"][0]
    np.testing.assert_array_equal(t["centre"][0], np.maximum(only0, only1))
    off = ~t["reg_mask"]
    assert (t["size"][:, off] == 0).all() and (t["offset"][:, off] == 0).all()


def test_targets_shared_cell_keeps_the_smaller_box_and_empty_input():
    boxes = np.array([[0.0, 0.0, 32.0, 32.0], [13.0, 13.0, 6.0, 6.0]])  # both centre (16, 16)
    t = detection_targets(boxes, np.array([0, 1]), 2, 32, 32)
    np.testing.assert_allclose(t["size"][:, 4, 4], [6.0, 6.0])
    assert t["centre"][0, 4, 4] == 1.0 and t["centre"][1, 4, 4] == 1.0
    empty = detection_targets(np.zeros((0, 4)), np.zeros((0,), int), 3, 32, 32)
    assert empty["centre"].shape == (3, 8, 8) and not empty["centre"].any()
    assert not empty["reg_mask"].any()


def test_targets_reject_bad_input():
    with pytest.raises(ShapeError, match="boxes_xywh"):
        detection_targets(np.zeros((2, 3)), np.zeros(2, int), 1, 32, 32)
    with pytest.raises(ShapeError, match="class_index"):
        detection_targets(np.ones((2, 4)), np.zeros(3, int), 1, 32, 32)
    with pytest.raises(ConfigError, match="class_index"):
        detection_targets(np.ones((1, 4)), np.array([2]), 2, 32, 32)
    with pytest.raises(ConfigError, match="finite"):
        detection_targets(np.array([[np.nan, 0, 1, 1]]), np.array([0]), 1, 32, 32)
    with pytest.raises(ConfigError, match="stride"):
        detection_targets(np.ones((1, 4)), np.array([0]), 1, 32, 32, stride=0)


def _reference_focal(logits: np.ndarray, y: np.ndarray) -> float:
    """Penalty-reduced focal loss, written from the CenterNet paper in float64 probabilities."""
    p = 1.0 / (1.0 + np.exp(-logits))
    pos = -((1 - p) ** 2) * np.log(p)
    neg = -((1 - y) ** 4) * p**2 * np.log(1 - p)
    return float(np.where(y == 1.0, pos, neg).sum() / max((y == 1.0).sum(), 1))


def test_focal_loss_matches_a_float64_reference():
    rng = np.random.default_rng(3)
    boxes = np.array([[4.0, 4.0, 12.0, 10.0], [20.0, 6.0, 9.0, 14.0]])
    t = detection_targets(boxes, np.array([0, 1]), 2, 32, 32)
    logits = rng.uniform(-4, 4, size=(1, 2, 8, 8))
    y = t["centre"][None].astype(np.float64)
    got, n_pos = focal_loss_sum(torch.from_numpy(logits), torch.from_numpy(y))
    assert int(n_pos) == 2
    assert float(got) / 2 == pytest.approx(_reference_focal(logits, y), rel=1e-10)
    # through detection_loss (float32): the centre part is the same number
    out = DetectorNetOutput(torch.from_numpy(logits).float(), torch.ones(1, 2, 8, 8),
                            torch.full((1, 2, 8, 8), 0.5))
    _, parts = detection_loss(out, stack_detection_targets([t]))
    assert parts["centre"] == pytest.approx(_reference_focal(logits, y), rel=1e-5)
    # no positives: the negative term alone (not divided by zero)
    none = np.zeros_like(y)
    got, n_pos = focal_loss_sum(torch.from_numpy(logits), torch.from_numpy(none))
    assert int(n_pos) == 0 and float(got) == pytest.approx(_reference_focal(logits, none))


def test_focal_loss_is_finite_for_extreme_logits():
    y = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.5, 0.5])
    logits = torch.tensor([50.0, -50.0, 50.0, -50.0, 50.0, -50.0], requires_grad=True)
    loss, n_pos = focal_loss_sum(logits, y)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    # confident and wrong costs |logit|: 50 for the missed centre, 50 for the false positive,
    # 50 * (1 - 0.5)^4 near a centre; confident and right costs ~0
    assert float(loss.detach()) == pytest.approx(50.0 + 50.0 + 50.0 / 16, rel=1e-6)
    assert int(n_pos) == 2


def test_regression_terms_by_hand():
    boxes = np.array([[0.0, 0.0, 8.0, 8.0], [16.0, 16.0, 4.0, 8.0]])
    t = detection_targets(boxes, np.array([0, 0]), 1, 32, 32)
    cells = np.argwhere(t["reg_mask"])  # (row, col): (1, 1) and (5, 4)
    size = torch.from_numpy(np.where(t["reg_mask"][None], t["size"], 1.0))[None].clone()
    offset = torch.from_numpy(t["offset"])[None].clone()
    (r0, c0), (r1, c1) = cells
    size[0, 0, r0, c0] *= math.e  # log error 1 on one component of one instance
    offset[0, 1, r1, c1] += 0.25  # offset error 0.25 on one component of the other
    offset[0, :, 0, 0] = 0.9  # not a centre cell: ignored
    logits = torch.where(torch.from_numpy(t["centre"])[None] == 1.0, 30.0, -30.0)
    total, parts = detection_loss(DetectorNetOutput(logits, size, offset), t)
    # mean over the two components, summed over instances, divided by the 2 instances
    assert parts["size"] == pytest.approx(1.0 / 4, rel=1e-5)
    assert parts["offset"] == pytest.approx(0.25 / 4, rel=1e-5)
    assert parts["num_instances"] == 2
    assert float(total) == pytest.approx(parts["centre"] + 0.1 * 0.25 + 0.25 / 4, rel=1e-5)
    with pytest.raises(ShapeError, match="targets centre"):
        detection_loss(DetectorNetOutput(logits[:, :, :-1], size[:, :, :-1],
                                         offset[:, :, :-1]), t)


def _synthetic_image(rng: np.random.Generator, boxes: list[tuple[int, int, int, int]],
                     colours: list[tuple[float, float, float]]) -> np.ndarray:
    image = rng.uniform(0.0, 0.35, size=(48, 64, 3))
    for (x, y, w, h), colour in zip(boxes, colours):
        image[y:y + h, x:x + w] = colour
    return image.astype(np.float32)


def test_tiny_detector_overfits_and_decodes_its_boxes():
    seed = 0
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    red, blue = (0.9, 0.15, 0.1), (0.1, 0.3, 0.95)
    scenes = [  # (box (x, y, w, h) px, class): 0 = red rectangle, 1 = blue rectangle
        [((4, 6, 14, 12), 0), ((30, 4, 12, 16), 0), ((44, 28, 16, 14), 0)],
        [((6, 26, 16, 14), 0), ((18, 30, 12, 12), 0), ((38, 8, 18, 14), 1)],
    ]
    images, targets = [], []
    for scene in scenes:
        boxes = [b for b, _ in scene]
        classes = [c for _, c in scene]
        images.append(_synthetic_image(rng, boxes, [(red, blue)[c] for c in classes]))
        targets.append(detection_targets(np.array(boxes, float), np.array(classes), 2, 64, 48))
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    batch = stack_detection_targets(targets)

    cfg = DetectorNetConfig(object_ids=("red", "blue"), input_width=64, input_height=48,
                            widths=(16, 24, 32, 48), blocks=(0, 1, 1, 1),
                            decoder_channels=(32, 32))
    net = DetectorNet(cfg)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    net.train()
    for _ in range(60):
        loss, _ = detection_loss(net(x), batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-5:]) < losses[0] / 5, (losses[0], losses[-5:])

    # batch-norm statistics of this batch (momentum 1), then the eval-mode (exported) path
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 1.0
    with torch.no_grad():
        net(x)
        net.eval()
        out = net(x)
    prob = torch.sigmoid(out.centre_logits).numpy()
    for i, scene in enumerate(scenes):
        dets = decode_detections(prob[i], out.size[i].numpy(), out.offset[i].numpy())
        assert len(dets) == len(scene), dets
        for box, cls in scene:
            ious = [box_iou(box, np.array([d.box_xywh]))[0] if d.class_index == cls else 0.0
                    for d in dets]
            assert max(ious) > 0.5, (box, cls, dets)
