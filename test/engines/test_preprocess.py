# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from dvc_perception.engines.preprocess import (
    Letterbox,
    ZoomCrop,
    check_rgb_image,
    letterbox_affine,
    preprocess_frame,
)
from dvc_perception.errors import ConfigError, InputError, ShapeError
from dvc_perception.geometry.camera import CameraModel

K = np.array([[533.9, 0.0, 328.8], [0.0, 528.6, 237.2], [0.0, 0.0, 1.0]])
D = np.array([-0.26, -0.13, 0.001, -0.002, 0.0])


@pytest.mark.parametrize("src, dst", [((640, 480), (320, 256)), ((640, 480), (416, 416)),
                                      ((100, 60), (320, 240))])
def test_affine_is_the_documented_map(src, dst):
    # u_dst = s (u + 0.5) - 0.5 with s = min(dst_w / src_w, dst_h / src_h), written out here
    s = min(dst[0] / src[0], dst[1] / src[1])
    uv = np.array([[0.0, 0.0], [src[0] - 1.0, src[1] - 1.0], [12.25, 7.5]])
    box = Letterbox(*src, *dst)
    np.testing.assert_allclose(uv @ box.affine[:, :2].T + box.affine[:, 2], s * (uv + 0.5) - 0.5,
                               rtol=0, atol=1e-12)
    np.testing.assert_array_equal(box.affine, letterbox_affine(*src, *dst))


def _training_input(rgb, width, height, crop=None, seed=0):
    from dvc_perception.train.datasets import Frame, _prepare

    return _prepare(Frame(image=rgb, K=K), width, height, None, np.random.default_rng(seed), crop)


def test_training_and_serving_give_the_same_network_input():
    rgb = np.random.default_rng(1).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    box = Letterbox(640, 480, 320, 256)
    _, train_image, train_K = _training_input(rgb, 320, 256)
    served = box.network_input(rgb)
    np.testing.assert_array_equal(served[0].transpose(1, 2, 0), train_image)
    camera = CameraModel(K, D, 640, 480, "plumb_bob")
    np.testing.assert_allclose(train_K, box.camera_to_input(camera).K.numpy(), atol=1e-12)
    # a training crop is the same input, cut at the crop's offset (multiples of 4 px)
    affine, crop_image, crop_K = _training_input(rgb, 320, 256, crop=(96, 64), seed=3)
    x0, y0 = -round(affine[0, 2] - box.affine[0, 2]), -round(affine[1, 2] - box.affine[1, 2])
    np.testing.assert_array_equal(crop_image, train_image[y0:y0 + 64, x0:x0 + 96])
    np.testing.assert_allclose(crop_K[:2, 2], train_K[:2, 2] - (x0, y0), atol=1e-12)
    # INT8 calibration preprocesses with the same map (normalisation of the metadata)
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.6, 0.7)
    np.testing.assert_array_equal(preprocess_frame(rgb, (320, 256), mean, std, "letterbox"),
                                  box.network_input(rgb, mean, std))
    mean_c, std_c = np.reshape(mean, (3, 1, 1)), np.reshape(std, (3, 1, 1))
    np.testing.assert_allclose(box.network_input(rgb, mean, std)[0],
                               (served[0] - mean_c) / std_c, atol=1e-6)


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
        box.network_input(np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(ShapeError):
        check_rgb_image(np.zeros((480, 640), np.uint8))
    with pytest.raises(ShapeError):
        check_rgb_image(np.zeros((480, 640, 3), np.float32))
    with pytest.raises(InputError):
        preprocess_frame(np.zeros((480, 640, 3), np.float32), (320, 256))
    out = box.network_input(np.full((480, 640, 3), 200, np.uint8))
    assert out.shape == (1, 3, 256, 320) and out.dtype == np.float32
    np.testing.assert_allclose(out[0, :, :240], 200 / 255, rtol=1e-6)
    assert np.all(out[0, :, 241:] == 0)


def test_zoom_crop_is_exact_and_centred():
    camera = CameraModel(K, D, 640, 480, "plumb_bob")
    crop = ZoomCrop.from_box((300, 200, 40, 60), (640, 480), (128, 128), scale=1.5)
    assert (crop.centre_u, crop.centre_v, crop.side_px) == (319.5, 229.5, 90.0)
    A = crop.affine
    np.testing.assert_allclose(A @ [319.5, 229.5, 1.0], [63.5, 63.5], atol=1e-12)
    # the crop's camera projects exactly where the source camera's pixels map
    small = crop.camera_to_input(camera)
    pts = torch.as_tensor(np.random.default_rng(2).uniform([-0.1, -0.1, 0.7], [0.1, 0.1, 1.0],
                                                           (1, 40, 3)))
    uv_src = camera.project(pts)[0].numpy()
    np.testing.assert_allclose(small.project(pts)[0].numpy(), uv_src @ A[:, :2].T + A[:, 2],
                               atol=1e-9)
    np.testing.assert_allclose(crop.points_to_source(uv_src @ A[:, :2].T + A[:, 2]), uv_src,
                               atol=1e-9)
    # the input is the documented warp of the full-resolution frame; outside the frame is zero
    rgb = np.random.default_rng(3).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    ref = cv2.warpAffine(rgb.astype(np.float32) / 255.0, A, (128, 128), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    np.testing.assert_array_equal(crop.network_input(rgb)[0].transpose(1, 2, 0), ref)
    edge = ZoomCrop(640, 480, 64, 64, 2.0, 2.0, 40.0)  # centred near the corner
    assert np.all(edge.network_input(rgb)[0, :, :20, :20] == 0.0)
    with pytest.raises(ConfigError):
        ZoomCrop(640, 480, 64, 64, 10.0, 10.0, 0.0)
