# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Detector decoding: targets -> perfect outputs -> boxes round trip, peaks, NMS, source boxes.

References are independent of the decoder: local maxima against torch's max-pool, the
letterbox map against a rectangle rendered in the source image and warped by
`Letterbox.network_input`, the zoom crop centre against the rectangle's middle pixel.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F  # noqa: N812 - the usual torch alias

from dvc_perception.engines.preprocess import Letterbox, ZoomCrop, box_from_mask
from dvc_perception.errors import ConfigError, ShapeError
from dvc_perception.pipeline.detection import (
    BoxDetection,
    box_iou,
    boxes_to_source,
    decode_detections,
    local_maxima,
)
from dvc_perception.train.detection import detection_targets

WIDTH, HEIGHT, STRIDE = 320, 240, 4


def _random_scene(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Three instances of class 0 (two overlapping a bit) and instances of classes 1 and 2.

    Boxes lie inside the 320x240 input, no two centres share a heatmap cell, and boxes of one
    class overlap by IoU < 0.3 (a detector must report them separately).
    """
    rng = np.random.default_rng(seed)
    while True:
        boxes, classes = [], []
        # class 0: an instance and a second one shifted by ~60-70 % of its size (overlapping)
        w, h = rng.uniform(20, 60, size=2)
        x, y = rng.uniform(0, WIDTH - 2 * w), rng.uniform(0, HEIGHT - 2 * h)
        boxes += [(x, y, w, h), (x + rng.uniform(0.6, 0.7) * w, y + rng.uniform(0.3, 0.6) * h,
                                 w * rng.uniform(0.9, 1.1), h * rng.uniform(0.9, 1.1))]
        classes += [0, 0]
        for cls in (0, 1, 1, 2):
            w, h = rng.uniform(6, 90, size=2)
            boxes.append((rng.uniform(0, WIDTH - w), rng.uniform(0, HEIGHT - h), w, h))
            classes.append(cls)
        b, c = np.array(boxes), np.array(classes)
        if np.any(b[:, 0] + b[:, 2] > WIDTH) or np.any(b[:, 1] + b[:, 3] > HEIGHT):
            continue
        cells = np.floor((b[:, :2] + b[:, 2:] / 2) / STRIDE).astype(int)
        if len({tuple(cell) for cell in cells}) < len(b):
            continue
        same = [box_iou(b[i], b[j:j + 1])[0] for i in range(len(b)) for j in range(i + 1, len(b))
                if c[i] == c[j]]
        if max(same) < 0.3 and box_iou(b[0], b[1:2])[0] > 0.05:
            return b, c


def _perfect_outputs(targets: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    """What a perfect network would output: the heatmaps, and size / offset only at centres."""
    mask = targets["reg_mask"][None]
    return (targets["centre"], np.where(mask, targets["size"], 0.0),
            np.where(mask, targets["offset"], 0.0))


@pytest.mark.parametrize("seed", range(8))
def test_targets_decode_round_trip_finds_every_instance(seed):
    boxes, classes = _random_scene(seed)
    targets = detection_targets(boxes, classes, 3, WIDTH, HEIGHT, STRIDE)
    dets = decode_detections(*_perfect_outputs(targets), stride=STRIDE)
    assert len(dets) == len(boxes)
    assert sum(d.class_index == 0 for d in dets) == 3  # three instances of one object: three
    unmatched = list(range(len(boxes)))
    for det in dets:
        err = [np.abs(np.array(det.box_xywh) - boxes[i]).max() if classes[i] == det.class_index
               else np.inf for i in unmatched]
        k = int(np.argmin(err))
        assert err[k] < 0.5, (det, boxes[unmatched[k]])
        unmatched.pop(k)
        assert det.score == pytest.approx(1.0)
    assert not unmatched


def test_decoded_centre_follows_the_pixel_centre_convention():
    # A box covering input pixels 8..15 x 4..11: centre at pixel coordinates (11.5, 7.5),
    # i.e. the corner of cells (2, 1) and (3, 2); the target puts it in cell (3, 2), offset 0.
    targets = detection_targets(np.array([[8.0, 4.0, 8.0, 8.0]]), np.array([0]), 1, 32, 32)
    assert targets["reg_mask"][2, 3] and targets["reg_mask"].sum() == 1
    np.testing.assert_allclose(targets["offset"][:, 2, 3], [0.0, 0.0])
    (det,) = decode_detections(*_perfect_outputs(targets))
    assert det.centre == pytest.approx((11.5, 7.5))
    assert det.box_xywh == pytest.approx((8.0, 4.0, 8.0, 8.0))
    # a centre on a cell's centre: cell j's centre is input px 4j + 1.5
    heat = np.zeros((1, 8, 8), np.float32)
    heat[0, 5, 2] = 0.9
    size = np.full((2, 8, 8), 4.0, np.float32)
    (det,) = decode_detections(heat, size, np.full((2, 8, 8), 0.5, np.float32))
    assert det.centre == pytest.approx((4 * 2 + 1.5, 4 * 5 + 1.5))
    # its ZoomCrop is centred on the same point
    crop = ZoomCrop.from_box(det.box_xywh, (32, 32), (16, 16))
    assert (crop.centre_u, crop.centre_v) == pytest.approx(det.centre)


def test_local_maxima_match_torch_max_pool():
    rng = np.random.default_rng(0)
    heat = rng.random((3, 11, 13)).astype(np.float32)
    heat[0, 4, 4:7] = 2.0  # a plateau: every tied cell is kept, as max-pool NMS does
    pooled = F.max_pool2d(torch.from_numpy(heat)[None], 3, stride=1, padding=1)[0].numpy()
    np.testing.assert_array_equal(local_maxima(heat), pooled == heat)
    heat[1, 2, 2] = np.nan
    assert not local_maxima(heat)[1, 2, 2]


def _peaks(cells: list[tuple[int, int, int, float]], box_size: float, n_classes: int = 2):
    heat = np.zeros((n_classes, 20, 20), np.float32)
    for cls, jy, jx, score in cells:
        heat[cls, jy, jx] = score
    size = np.full((2, 20, 20), box_size, np.float32)
    offset = np.full((2, 20, 20), 0.5, np.float32)
    return heat, size, offset


def test_nms_drops_a_duplicate_of_one_class_but_keeps_other_classes():
    # two peaks of class 0 two cells apart (both local maxima), 40 px boxes: IoU 2/3;
    # a class-1 peak in between overlaps both and is kept
    maps = _peaks([(0, 10, 10, 0.9), (0, 10, 12, 0.8), (1, 10, 11, 0.7)], 40.0)
    dets = decode_detections(*maps)
    assert [d.class_index for d in dets] == [0, 1]
    assert [d.score for d in dets] == pytest.approx([0.9, 0.7])
    assert dets[0].centre == pytest.approx((41.5, 41.5))
    assert box_iou(dets[0].box_xywh, np.array([dets[1].box_xywh]))[0] > 0.5
    # a looser threshold keeps the duplicate; sorted by score across classes
    dets = decode_detections(*maps, nms_iou=0.7)
    assert [d.score for d in dets] == pytest.approx([0.9, 0.8, 0.7])
    # small boxes do not overlap: nothing is suppressed
    assert len(decode_detections(*_peaks([(0, 10, 10, 0.9), (0, 10, 12, 0.8)], 6.0))) == 2


def test_min_score_and_max_per_class():
    cells = [(0, 2 + 3 * i, 2 + 3 * k, 0.2 + 0.05 * (4 * i + k)) for i in range(4)
             for k in range(4)]
    maps = _peaks(cells, 4.0, n_classes=1)
    dets = decode_detections(*maps, min_score=0.5, max_per_class=100)
    assert sorted(d.score for d in dets) == pytest.approx(
        sorted(s for *_, s in cells if s >= 0.5))
    top = decode_detections(*maps, max_per_class=3)
    assert [d.score for d in top] == pytest.approx([0.95, 0.9, 0.85])
    assert len(decode_detections(*maps)) == 10  # the default max_per_class of those >= 0.3
    assert decode_detections(*_peaks([], 4.0)) == []


def test_decode_rejects_bad_shapes_and_settings():
    heat, size, offset = _peaks([(0, 1, 1, 0.9)], 4.0)
    with pytest.raises(ShapeError, match="size"):
        decode_detections(heat, size[:, :-1], offset)
    with pytest.raises(ShapeError, match="offset"):
        decode_detections(heat, size, offset[:1])
    with pytest.raises(ShapeError, match="centre_prob"):
        decode_detections(heat[0], size, offset)
    with pytest.raises(ConfigError, match="nms_iou"):
        decode_detections(heat, size, offset, nms_iou=1.5)
    with pytest.raises(ConfigError, match="max_per_class"):
        decode_detections(heat, size, offset, max_per_class=0)
    with pytest.raises(ConfigError, match="stride"):
        decode_detections(heat, size, offset, stride=0)


def test_boxes_to_source_matches_a_warped_rectangle():
    # A rectangle over source pixels 40..139 x 60..139 of a 640x480 frame, letterboxed 2:1.
    src = np.zeros((480, 640, 3), np.uint8)
    src[60:140, 40:140] = 255
    lb = Letterbox(640, 480, 320, 240)
    seen = lb.network_input(src)[0, 0] > 0.5
    box_in = box_from_mask(seen)
    assert box_in == (20.0, 30.0, 50.0, 40.0)
    (det,) = boxes_to_source([BoxDetection(1, 0.8, box_in)], lb)
    assert (det.class_index, det.score) == (1, 0.8)
    assert det.box_xywh == pytest.approx(box_from_mask(src[..., 0] > 0))
    crop = ZoomCrop.from_box(det.box_xywh, (640, 480), (128, 128))
    assert (crop.centre_u, crop.centre_v) == pytest.approx(((40 + 139) / 2, (60 + 139) / 2))


def test_boxes_to_source_scales_and_clips_to_the_image():
    lb = Letterbox(640, 360, 320, 240)  # s = 0.5, content 320x180, padding below
    dets = [BoxDetection(0, 0.9, (10.0, 20.0, 30.0, 40.0)),
            BoxDetection(0, 0.8, (100.0, 170.0, 20.0, 40.0)),
            BoxDetection(1, 0.7, (100.0, 200.0, 20.0, 30.0))]  # all in the padding
    out = boxes_to_source(dets, lb)
    assert len(out) == 2
    assert out[0].box_xywh == pytest.approx((20.0, 40.0, 60.0, 80.0))
    assert out[1].box_xywh == pytest.approx((200.0, 340.0, 40.0, 20.0))
    unclipped = boxes_to_source(dets, lb, clip=False)
    assert unclipped[1].box_xywh == pytest.approx((200.0, 340.0, 40.0, 80.0))
    assert len(unclipped) == 3
