# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Depth from motion on the real 7-Scenes kitchen (`../shared/data/rgbd_kitchen`), classical.

The node's estimator settings (`pipeline.multiview` defaults, no refiner), the sequence's given
poses, the colour camera's focal length as `estimate-focal` measures it (517.2 px; the file's
585 px is the depth camera's) and the sensor depth moved onto the colour camera's grid, as
`rgbd2bag --focal-px 517.2` writes it. Pooled over the 116 frames with depth, against the
issue's bar (AbsRel <= 0.15, delta < 1.25 >= 80 %; the issue scores the refined output through
replay): measured 0.136 / 84.6 % at 83 % of those frames' ground-truth pixels, the same as
through replay (benchmarks/RESULTS.md). With `PoseRefineSettings.structure_scale` off (stop
34's estimator: the scale from the adjusted translations alone) 0.165 / 77.6 %: this fails.
"""

from __future__ import annotations

import numpy as np

from dvc_perception.bag.rgbd import depth_on_colour_grid
from dvc_perception.config import MultiviewConfig
from dvc_perception.datasets.rgbd import iter_rgbd_images, read_rgbd_sequence
from dvc_perception.geometry.metrics import depth_metrics
from dvc_perception.motion_depth.estimator import STATUS_OK, MotionDepthEstimator
from dvc_perception.pipeline.multiview import motion_depth_settings

COLOUR_FOCAL_PX = 517.2


def test_classical_depth_on_the_kitchen_meets_the_issues_bar(kitchen_dir):
    sequence = read_rgbd_sequence(kitchen_dir)
    K_colour = sequence.K.copy()
    K_colour[0, 0] = K_colour[1, 1] = COLOUR_FOCAL_PX
    estimator = MotionDepthEstimator(motion_depth_settings(MultiviewConfig()))
    preds, truths = [], []
    for frame, rgb, depth in iter_rgbd_images(sequence):
        result = estimator.estimate(rgb, K_colour, frame.T_world_cam, frame.stamp_ns * 1e-9)
        if result.status == STATUS_OK:
            preds.append(result.depth)
            truths.append(depth_on_colour_grid(depth, sequence.K, K_colour))
    assert len(preds) >= 100  # of 150: the first ~24 frames barely move
    m = depth_metrics(np.stack(preds), np.stack(truths))
    assert m["abs_rel"] <= 0.15, m
    assert m["delta_1_25"] >= 0.80, m
    assert m["density"] >= 0.75, m
