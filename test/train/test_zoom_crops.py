# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Zoom-crop training items (`PoseDataset(zoom=ZoomSampling())`), `train pose --zoom-crops`."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from dvc_perception.engines.preprocess import ZoomCrop, box_from_mask
from dvc_perception.errors import ConfigError
from dvc_perception.geometry.camera import CameraModel
from dvc_perception.train.datasets import (
    AugmentConfig,
    Frame,
    ListFrameSource,
    PoseDataset,
    ZoomSampling,
)
from dvc_perception.train.toy import toy_frames, toy_object

W, H = 320, 240  # full-resolution frames; the crop network's input is 64x64
NO_PHOTOMETRIC = AugmentConfig(brightness=0.0, contrast=0.0, saturation=0.0, channel_gain=0.0,
                               noise_std=0.0, blur_prob=0.0)


def _affine_of(K_in: np.ndarray, K_src: np.ndarray) -> np.ndarray:
    """The 2x3 source -> input affine A of ``K_in = A K_src``."""
    return (K_in @ np.linalg.inv(K_src))[:2]


def _check_projection(item, frame, obj):
    """The keypoint targets are the 3D keypoints projected with the item's K and the pose."""
    ann = frame.objects[0]
    cam = obj.keypoints_obj @ ann.R.T + ann.t
    uv = (cam @ item["K"].numpy().T)[:, :2] / cam[:, 2:]
    np.testing.assert_allclose(item["keypoints"][0].numpy(), uv, atol=1e-3)


def test_item_is_the_serving_zoom_crop_of_the_jittered_box():
    frames = toy_frames(6, width=W, height=H, seed=3)
    obj, zoom = toy_object(), ZoomSampling()
    ds = PoseDataset(ListFrameSource(frames), [obj], 64, 64, seed=5, zoom=zoom)
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        for i, frame in enumerate(frames):
            item = ds[i]
            assert item["image"].shape == (3, 64, 64) and bool(item["present"][0])
            _check_projection(item, frame, obj)
            # K' = A K with A a uniform scale + shift; the visible box centre lands within the
            # jitter bound of the input centre, and the crop side within the scale range
            A = _affine_of(item["K"].numpy(), frame.K)
            s = A[0, 0]
            np.testing.assert_allclose(A[:, :2], s * np.eye(2), atol=1e-9)
            x, y, w, h = box_from_mask(frame.objects[0].mask)
            centre = A @ [x + w / 2 - 0.5, y + h / 2 - 0.5, 1.0]
            bound = zoom.shift_frac * max(w, h) * s + 1e-6
            assert np.all(np.abs(centre - 31.5) <= bound), (centre, bound)
            side = 64 / s / (zoom.crop_scale * max(w, h))
            assert zoom.scale_range[0] - 1e-9 <= side <= zoom.scale_range[1] + 1e-9
            # the same draws as the dataset (instance order, then the jitter): its K and image
            # are exactly ZoomCrop.from_box's for that box, as serving builds them
            rng = np.random.default_rng([5, epoch, i])
            rng.permutation(1)
            crop = ZoomCrop.from_box(zoom.jitter((x, y, w, h), rng), (W, H), (64, 64),
                                     scale=zoom.crop_scale)
            cam = CameraModel(frame.K, np.zeros(0), W, H)
            np.testing.assert_allclose(item["K"].numpy(),
                                       crop.camera_to_input(cam).K.numpy(), atol=1e-9)
            np.testing.assert_array_equal(item["image"].numpy(),
                                          crop.network_input(frame.image)[0])


def test_validation_crop_centres_the_visible_box_exactly():
    frames = toy_frames(4, width=W, height=H, seed=8)
    obj, zoom = toy_object(), ZoomSampling(crop_scale=1.25).exact()
    ds = PoseDataset(ListFrameSource(frames), [obj], 64, 64, zoom=zoom)
    for i, frame in enumerate(frames):
        item = ds[i]
        A = _affine_of(item["K"].numpy(), frame.K)
        x, y, w, h = box_from_mask(frame.objects[0].mask)
        np.testing.assert_allclose(A @ [x + w / 2 - 0.5, y + h / 2 - 0.5, 1.0], [31.5, 31.5],
                                   atol=1e-9)
        assert A[0, 0] == pytest.approx(64 / (1.25 * max(w, h)))
        _check_projection(item, frame, obj)
        ds.set_epoch(3)  # no jitter: every epoch gives the same crop
        torch.testing.assert_close(ds[i]["K"], item["K"])
        ds.set_epoch(0)


def _two_instance_frame() -> Frame:
    """One frame holding two instances of the toy cube (the second drawn over the first)."""
    a, b = toy_frames(1, width=W, height=H, seed=21)[0], toy_frames(1, width=W, height=H,
                                                                      seed=22)[0]
    ma, mb = a.objects[0].mask, b.objects[0].mask
    image = np.where(mb[..., None], b.image, a.image)
    first = dataclasses.replace(a.objects[0], mask=ma & ~mb)
    return Frame(image=image, K=a.K, objects=(first, b.objects[0]))


def test_two_instances_of_one_object_are_each_sampled():
    frame = _two_instance_frame()
    boxes = [box_from_mask(ann.mask) for ann in frame.objects]
    centres = np.array([[x + w / 2 - 0.5, y + h / 2 - 0.5] for x, y, w, h in boxes])
    assert np.linalg.norm(centres[0] - centres[1]) > 30  # apart: the crop says which one
    obj = toy_object()
    ds = PoseDataset(ListFrameSource([frame]), [obj], 64, 64, augment=AugmentConfig(), seed=1,
                     zoom=ZoomSampling())
    picked = []
    for epoch in range(10):
        ds.set_epoch(epoch)
        item = ds[0]
        A = _affine_of(item["K"].numpy(), frame.K)
        crop_centre = (np.array([31.5, 31.5]) - A[:, 2]) / A[0, 0]  # input centre, source px
        k = int(np.argmin(np.linalg.norm(centres - crop_centre, axis=1)))
        picked.append(k)
        # the slot holds the sampled instance: its keypoints are the targets, it is present
        ann = frame.objects[k]
        cam = obj.keypoints_obj @ ann.R.T + ann.t
        uv = (cam @ item["K"].numpy().T)[:, :2] / cam[:, 2:]
        np.testing.assert_allclose(item["keypoints"][0].numpy(), uv, atol=1e-3)
        assert bool(item["present"][0])
    assert set(picked) == {0, 1}


def test_another_object_in_the_crop_is_a_target_too():
    frame = _two_instance_frame()
    frame = dataclasses.replace(frame, objects=(
        frame.objects[0], dataclasses.replace(frame.objects[1], object_id="other_cube")))
    objs = [toy_object(), toy_object("other_cube")]
    ds = PoseDataset(ListFrameSource([frame]), objs, 64, 64, seed=1,
                     zoom=ZoomSampling(crop_scale=4.0))  # wide: both cubes in every crop
    for epoch in range(4):
        ds.set_epoch(epoch)
        item = ds[0]
        for j, ann in enumerate(frame.objects):
            cam = objs[j].keypoints_obj @ ann.R.T + ann.t
            uv = (cam @ item["K"].numpy().T)[:, :2] / cam[:, 2:]
            np.testing.assert_allclose(item["keypoints"][j].numpy(), uv, atol=1e-3)
        assert item["present"].all()
        assert (item["mask"].sum(dim=(1, 2)) > 0).all()


def test_frames_without_a_usable_instance_give_the_letterboxed_item():
    frames = toy_frames(3, width=W, height=H, seed=4)
    tiny = np.zeros((H, W), bool)
    tiny[100:104, 100:104] = True  # 16 px < min_visible_px
    frames[0] = dataclasses.replace(frames[0], objects=(
        dataclasses.replace(frames[0].objects[0], mask=None),))
    frames[1] = dataclasses.replace(frames[1], objects=(
        dataclasses.replace(frames[1].objects[0], mask=tiny),))
    frames[2] = dataclasses.replace(frames[2], objects=())
    for augment in (None, AugmentConfig()):
        plain = PoseDataset(ListFrameSource(frames), [toy_object()], 64, 64, augment=augment,
                            seed=2)
        zoomed = PoseDataset(ListFrameSource(frames), [toy_object()], 64, 64, augment=augment,
                             seed=2, zoom=ZoomSampling())
        for i in range(3):
            a, b = plain[i], zoomed[i]
            for key in a:
                torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


#: (K sum, keypoints sum, image sum, mask sum, present count) of default (zoom=None) items,
#: computed with the PoseDataset from before zoom crops existed (toy_frames(4, 160x120, seed
#: 11), 128x96 input): the default path must stay as it was
_BEFORE = {
    ("val", 0, 0): (393.6, 1054.0586171150208, 14795.946127435775, 135.875, 1),
    ("val", 1, 3): (393.6, 841.0846481323242, 14760.705735957512, 101.75, 1),
    ("aug", 0, 0): (453.7414742668481, 1148.877781867981, 19286.192626327276, 188.1875, 1),
    ("aug", 0, 3): (431.94411356267915, 867.0553846359253, 18618.83224611869, 127.375, 1),
    ("aug", 1, 0): (439.43085655712537, 988.181278347969, 15139.289188839495, 180.8125, 1),
    ("crop", 0, 3): (363.94411356267915, 255.05537748336792, 3205.2327498379163, 56.375, 1),
    ("crop", 1, 0): (379.43085655712537, 448.1812793016434, 4438.261705841869, 153.5, 1),
}


def test_default_items_are_unchanged():
    frames = ListFrameSource(toy_frames(4, width=160, height=120, seed=11))
    kinds = {"val": {}, "aug": {"augment": AugmentConfig(), "seed": 4},
             "crop": {"augment": AugmentConfig(), "seed": 4, "crop": (64, 48)}}
    for (kind, epoch, i), expected in _BEFORE.items():
        ds = PoseDataset(frames, [toy_object()], 128, 96, zoom=None, **kinds[kind])
        ds.set_epoch(epoch)
        item = ds[i]
        got = (float(item["K"].sum()), float(item["keypoints"].double().sum()),
               float(item["image"].double().sum()), float(item["mask"].double().sum()),
               int(item["present"].sum()))
        assert got[:2] == pytest.approx(expected[:2], rel=1e-12)
        assert got[2:4] == pytest.approx(expected[2:4], rel=1e-6)
        assert got[4] == expected[4]


def test_zoom_settings_are_checked():
    frames = ListFrameSource(toy_frames(1, seed=0))
    with pytest.raises(ConfigError):
        PoseDataset(frames, [toy_object()], 64, 64, crop=(32, 32), zoom=ZoomSampling())
    for bad in ({"crop_scale": 0.0}, {"shift_frac": -0.1}, {"scale_range": (1.2, 1.0)},
                {"min_visible_px": 0}):
        with pytest.raises(ConfigError):
            ZoomSampling(**bad)


@pytest.mark.slow
def test_cli_trains_and_exports_a_zoom_crop_model(tmp_path, capsys):
    pytest.importorskip("onnx")
    from dvc_perception.cli import main
    from dvc_perception.engines.export import read_model_metadata
    from dvc_perception.train.checkpoints import load_checkpoint

    run = tmp_path / "run"
    assert main(["train", "pose", "--toy", "4", "--zoom-crops", "--crop-scale", "1.4",
                 "--input-size", "64x64", "--epochs", "1", "--batch-size", "2",
                 "--max-steps-per-epoch", "1", "--threads", "1", "--no-progress",
                 "--out", str(run)]) == 0
    ckpt = load_checkpoint(run / "best.pt")
    assert ckpt["input_kind"] == "zoom_crop" and ckpt["crop_scale"] == 1.4
    out = tmp_path / "pose_zoom.onnx"
    assert main(["export", str(run / "best.pt"), "--out", str(out)]) == 0
    meta = read_model_metadata(out)
    assert meta.input_size == (64, 64)
    assert meta.extra["input_kind"] == "zoom_crop" and meta.extra["crop_scale"] == 1.4
    capsys.readouterr()


@pytest.mark.parametrize("extra, message", [
    (["--crop", "32x32"], "--zoom-crops and --crop exclude each other"),
    (["--crop-scale", "0"], "crop_scale"),
])
def test_cli_refuses_bad_zoom_options(tmp_path, capsys, extra, message):
    from dvc_perception.cli import main

    assert main(["train", "pose", "--toy", "4", "--zoom-crops", *extra, "--out",
                 str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_cli_refuses_zoom_options_elsewhere(tmp_path, capsys):
    from dvc_perception.cli import main

    assert main(["train", "pose", "--toy", "4", "--crop-scale", "1.2", "--out",
                 str(tmp_path / "a")]) == 2
    assert "--crop-scale only applies with --zoom-crops" in capsys.readouterr().err
    assert main(["train", "detect", "--toy", "4", "--zoom-crops", "--out",
                 str(tmp_path / "b")]) == 2
    assert "--zoom-crops only applies to `train pose`" in capsys.readouterr().err
