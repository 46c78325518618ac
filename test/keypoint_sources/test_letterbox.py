# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
from __future__ import annotations

import numpy as np
import pytest
import torch

from dvc_perception.errors import ShapeError
from dvc_perception.geometry.camera import CameraModel
from dvc_perception.keypoint_sources.letterbox import Letterbox

K = np.array([[533.9, 0.0, 328.8], [0.0, 528.6, 237.2], [0.0, 0.0, 1.0]])
D = np.array([-0.26, -0.13, 0.001, -0.002, 0.0])


@pytest.mark.parametrize("src, dst", [((640, 480), (320, 256)), ((640, 480), (416, 416)),
                                      ((100, 60), (320, 240))])
def test_affine_matches_the_training_letterbox(src, dst):
    from dvc_perception.train.datasets import letterbox_affine

    box = Letterbox(*src, *dst)
    np.testing.assert_allclose(box.affine, letterbox_affine(*src, *dst), rtol=0, atol=1e-15)


def test_camera_and_points_are_exact():
    box = Letterbox(640, 480, 320, 256)
    camera = CameraModel(K, D, 640, 480, "plumb_bob")
    small = box.camera_to_input(camera)
    rng = np.random.default_rng(0)
    pts = torch.as_tensor(rng.uniform([-0.3, -0.2, 0.8], [0.3, 0.2, 2.0], (1, 50, 3)))
    uv_src = camera.project(pts)[0].numpy()
    uv_dst = small.project(pts)[0].numpy()
    A = box.affine
    np.testing.assert_allclose(uv_dst, uv_src @ A[:, :2].T + A[:, 2], atol=1e-9)
    np.testing.assert_allclose(box.points_to_source(uv_dst), uv_src, atol=1e-9)
    assert (small.width, small.height) == (320, 256)


def test_depth_back_to_source_invents_no_surface_and_pads_nan():
    box = Letterbox(640, 480, 320, 256)  # s = 0.5: content 320 x 240, 16 padding rows
    depth = np.full((256, 320), 1.0, np.float32)
    depth[:, 160:] = 3.0  # a depth edge (an object in front of a wall)
    depth[240:] = 7.0  # garbage the network wrote into the padding
    up = box.depth_to_source(depth)
    assert up.shape == (480, 640) and up.dtype == np.float32
    assert set(np.unique(up[np.isfinite(up)])) <= {1.0, 3.0}  # nothing between 1 m and 3 m
    assert np.all(up[:, :320] == 1.0) and np.all(up[:, 320:] == 3.0)
    # an input whose content does not fill the rows: padding is NaN, never a value
    wide = Letterbox(200, 100, 64, 64)  # s = 0.32: content 64 x 32
    d = np.full((64, 64), 5.0, np.float32)
    assert np.all(wide.depth_to_source(d) == 5.0)
    d[:, :] = np.nan
    d[:32] = 2.0
    assert np.all(wide.depth_to_source(d) == 2.0)


def test_shapes_checked():
    box = Letterbox(640, 480, 320, 256)
    with pytest.raises(ShapeError):
        box.depth_to_source(np.zeros((10, 10), np.float32))
    with pytest.raises(ShapeError):
        box.image_to_input(np.zeros((10, 10, 3), np.uint8))
    out = box.image_to_input(np.full((480, 640, 3), 200, np.uint8))
    assert out.shape == (256, 320, 3) and np.all(out[:240] == 200) and np.all(out[241:] == 0)
