# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Dense object-coordinate targets, head and decode (`train pose --dense-coordinates`).

The reference is a tilted square plate whose depth is computed here by intersecting each
pixel's ray with its plane: its object coordinates must lie on the plate (z = 0, inside the
square) and project back onto the cell centres, and PnP on the decoded correspondences must
give the plate's pose back.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dvc_perception.errors import ConfigError
from dvc_perception.models.heads import dense_correspondences
from dvc_perception.models.keypoint_net import KeypointNet, KeypointNetConfig
from dvc_perception.train.datasets import (
    Frame,
    ListFrameSource,
    ObjectAnnotation,
    ObjectInfo,
    PoseDataset,
    ZoomSampling,
)

W, H, HALF = 320, 240, 0.05  # frame size px, plate half side m


def _rotation(rx: float, ry: float, rz: float) -> np.ndarray:
    import cv2

    return cv2.Rodrigues(np.array([rx, ry, rz], np.float64))[0]


def _plate_frame(R: np.ndarray, t: np.ndarray) -> Frame:
    """The square plate z = 0, |x|, |y| <= HALF of the object frame, seen at pose (R, t)."""
    K = np.array([[300.0, 0.0, 159.5], [0.0, 300.0, 119.5], [0.0, 0.0, 1.0]])
    uu, vv = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
    rays = np.stack([uu, vv, np.ones_like(uu)], -1) @ np.linalg.inv(K).T  # z = 1
    n = R[:, 2]  # the plate's normal in the camera frame
    depth = (n @ t) / (rays @ n)  # ray-plane intersection: z of the point on the plate
    obj = (rays * depth[..., None] - t) @ R  # R^T (X - t)
    mask = (np.abs(obj[..., 0]) <= HALF) & (np.abs(obj[..., 1]) <= HALF) & (depth > 0)
    image = np.where(mask[..., None], 200, 60).astype(np.uint8) * np.ones(3, np.uint8)
    ann = ObjectAnnotation(object_id="plate", R=R, t=t, mask=mask)
    return Frame(image=image, K=K, depth=np.where(mask, depth, 2.0).astype(np.float32),
                 objects=(ann,))


def _plate() -> ObjectInfo:
    corners = np.array([[x, y, 0.0] for x in (-HALF, HALF) for y in (-HALF, HALF)])
    return ObjectInfo(object_id="plate", keypoints_obj=np.vstack([corners, np.zeros((1, 3))]),
                      diameter_m=2 * np.sqrt(2) * HALF, symmetric=False, points_obj=corners,
                      symmetries=None)


POSES = [(_rotation(0.5, -0.3, 0.2), np.array([0.02, -0.01, 0.6])),
         (_rotation(-0.4, 0.6, 2.0), np.array([-0.05, 0.03, 0.8]))]


@pytest.mark.parametrize("pose", POSES)
def test_targets_lie_on_the_plate_and_project_onto_the_cell_centres(pose):
    frame = _plate_frame(*pose)
    ds = PoseDataset(ListFrameSource([frame]), [_plate()], 64, 64, zoom=ZoomSampling(),
                     coordinates=True, seed=3)
    item = ds[0]
    valid = item["coordinates_valid"][0].numpy()
    assert item["coordinates"].shape == (1, 3, 16, 16) and valid.sum() > 40
    xyz = item["coordinates"][0].numpy().reshape(3, -1).T[valid.reshape(-1)].astype(np.float64)
    # on the plate: exactly (float32 depth) inside it, where inverse depth is interpolated
    # between four plate pixels; at its rim the nearest pixel's depth is off by up to half a
    # pixel of the plate's depth slope (< 1 mm here)
    off = np.abs(xyz[:, 2])
    assert np.mean(off < 2e-5) > 0.8 and off.max() < 1e-3
    assert np.abs(xyz[:, :2]).max() <= HALF + 1e-3
    # each point projects onto its cell's centre (input px 4 j + 1.5)
    R, t, K = item["R"][0].numpy(), item["t"][0].numpy(), item["K"].numpy()
    uvw = (xyz @ R.T + t) @ K.T
    rows, cols = np.nonzero(valid)
    np.testing.assert_allclose(uvw[:, :2] / uvw[:, 2:],
                               np.stack([4 * cols + 1.5, 4 * rows + 1.5], -1), atol=2e-3)
    # cells off the plate are not supervised
    assert not valid[0, 0] or frame.objects[0].mask.all()


def test_items_without_the_option_have_no_coordinates():
    frame = _plate_frame(*POSES[0])
    item = PoseDataset(ListFrameSource([frame]), [_plate()], 64, 64, zoom=ZoomSampling())[0]
    assert "coordinates" not in item and "coordinates_valid" not in item


@pytest.mark.parametrize("pose", POSES)
def test_pnp_on_decoded_correspondences_gives_the_pose_back(pose):
    from dvc_perception.config import PnPConfig
    from dvc_perception.pipeline.pose import estimate_poses

    frame = _plate_frame(*pose)
    item = PoseDataset(ListFrameSource([frame]), [_plate()], 64, 64, zoom=ZoomSampling(),
                       coordinates=True)[0]
    prob = item["coordinates_valid"][0].numpy().astype(np.float64)  # a perfect mask
    x2d, x3d, w = dense_correspondences(item["coordinates"][0].numpy(), prob, 4, max_points=60)
    assert x2d.shape[0] == 60 and np.all(w == 1.0)
    found = estimate_poses(torch.from_numpy(x2d)[None], torch.from_numpy(x3d)[None],
                           item["K"][None].double(), torch.from_numpy(w)[None],
                           PnPConfig(threshold_px=1.0))
    assert bool(found.valid[0])
    np.testing.assert_allclose(found.R[0].numpy(), pose[0], atol=1e-4)
    np.testing.assert_allclose(found.t[0].numpy(), pose[1], atol=1e-5)


def test_dense_correspondences_threshold_cap_and_cell_centres():
    h, w = 5, 6
    coords = np.arange(3 * h * w, dtype=np.float64).reshape(3, h, w)
    prob = np.zeros((h, w))
    prob[1, 2], prob[3, 4], prob[4, 0] = 0.9, 0.5, 0.49
    x2d, x3d, p = dense_correspondences(coords, prob, 4)
    np.testing.assert_array_equal(x2d, [[4 * 2 + 1.5, 4 * 1 + 1.5], [4 * 4 + 1.5, 4 * 3 + 1.5]])
    np.testing.assert_array_equal(x3d, [coords[:, 1, 2], coords[:, 3, 4]])
    np.testing.assert_array_equal(p, [0.9, 0.5])
    # the cap takes cells evenly, first and last included
    # (row-major cells 0, 10, 19 and 29 of the 5 x 6)
    x2d, _, _ = dense_correspondences(coords, np.ones((h, w)), 4, max_points=4)
    np.testing.assert_array_equal(x2d, [[1.5, 1.5], [4 * 4 + 1.5, 4 * 1 + 1.5],
                                        [4 * 1 + 1.5, 4 * 3 + 1.5], [4 * 5 + 1.5, 4 * 4 + 1.5]])
    # non-finite predictions are left out
    coords[0, 1, 2] = np.nan
    assert dense_correspondences(coords, prob, 4)[0].shape == (1, 2)


def test_head_outputs_metres_per_object_scale():
    cfg = KeypointNetConfig(object_ids=("a", "b"), input_width=64, input_height=64,
                            widths=(8, 8, 16, 16), blocks=(0, 0, 0, 1), decoder_channels=(8, 8),
                            dense_coordinates=True, coordinate_scales_m=(0.1, 0.3))
    net = KeypointNet(cfg).eval()
    with torch.no_grad():
        net.coordinate_head.weight.zero_()
        net.coordinate_head.bias.copy_(torch.tensor([1.0, 2.0, 3.0, -1.0, 0.5, 0.0]))
        out = net(torch.rand(2, 3, 64, 64))
    assert out.coordinates is not None and out.coordinates.shape == (2, 2, 3, 16, 16)
    np.testing.assert_allclose(out.coordinates[0, :, :, 5, 7].numpy(),
                               [[0.1, 0.2, 0.3], [-0.3, 0.15, 0.0]], rtol=1e-6)
    plain = KeypointNet(KeypointNetConfig(object_ids=("a",), input_width=64, input_height=64))
    assert plain(torch.rand(1, 3, 64, 64)).coordinates is None
    with pytest.raises(ConfigError, match="coordinate_scales_m"):
        KeypointNetConfig(object_ids=("a", "b"), dense_coordinates=True,
                          coordinate_scales_m=(0.1,))


@pytest.mark.slow
def test_cli_trains_and_exports_a_dense_coordinate_model(tmp_path, capsys):
    pytest.importorskip("onnx")
    from dvc_perception.cli import main
    from dvc_perception.engines.export import read_model_metadata
    from dvc_perception.train.checkpoints import load_checkpoint

    run = tmp_path / "run"
    assert main(["train", "pose", "--toy", "4", "--zoom-crops", "--dense-coordinates",
                 "--coordinate-weight", "2", "--input-size", "64x64", "--epochs", "1",
                 "--batch-size", "2", "--max-steps-per-epoch", "1", "--threads", "1",
                 "--no-progress", "--out", str(run)]) == 0
    ckpt = load_checkpoint(run / "best.pt")
    cfg = ckpt["model_config"]
    assert cfg["dense_coordinates"] is True
    assert cfg["coordinate_scales_m"] == pytest.approx([0.5 * 0.1 * np.sqrt(3)])  # toy cube
    history = ckpt["history"][-1]
    assert np.isfinite(history["train_coordinates"]) and "val_coord_err_mm_median" in history
    out = tmp_path / "dense.onnx"
    assert main(["export", str(run / "best.pt"), "--out", str(out)]) == 0
    meta = read_model_metadata(out)
    assert meta.extra["correspondences"] == "dense_coordinates"
    import onnxruntime as ort

    names = [o.name for o in ort.InferenceSession(str(out)).get_outputs()]
    assert names == ["x2d", "weights", "objectness", "mask", "coordinates"]
    capsys.readouterr()


def test_cli_refuses_dense_options_elsewhere(tmp_path, capsys):
    from dvc_perception.cli import main

    assert main(["train", "detect", "--toy", "4", "--dense-coordinates", "--out",
                 str(tmp_path / "a")]) == 2
    assert "--dense-coordinates only applies to `train pose`" in capsys.readouterr().err
