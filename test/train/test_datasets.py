# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from dvc_perception.engines.preprocess import letterbox_affine
from dvc_perception.errors import ConfigError
from dvc_perception.train.datasets import (
    AugmentConfig,
    DepthDataset,
    ListFrameSource,
    PoseDataset,
    split_train_val,
)
from dvc_perception.train.toy import _CORNER_COLOURS, toy_frames, toy_object

GEOMETRIC_ONLY = AugmentConfig(brightness=0.0, contrast=0.0, saturation=0.0, channel_gain=0.0,
                               noise_std=0.0, blur_prob=0.0)


def test_letterbox_maps_pixel_centres():
    a = letterbox_affine(640, 480, 320, 256)  # s = 0.5, limited by the width
    # the centre of source pixels (0,0),(1,1) -> the centre of destination pixel (0,0) area
    corners = np.array([[-0.5, -0.5, 1.0], [639.5, 479.5, 1.0]])
    np.testing.assert_allclose(corners @ a.T, [[-0.5, -0.5], [319.5, 239.5]])


def test_letterboxed_keypoints_follow_the_intrinsics():
    frames = toy_frames(2, width=256, height=192, seed=5)
    obj = toy_object()
    ds = PoseDataset(ListFrameSource(frames), [obj], 128, 128)  # letterbox: s = 0.5, pad below
    for i, f in enumerate(frames):
        s = ds[i]
        ann = f.objects[0]
        cam = obj.keypoints_obj @ ann.R.T + ann.t
        uv = (cam @ f.K.T)[:, :2] / cam[:, 2:]
        expected = 0.5 * (uv + 0.5) - 0.5  # independent: scale pixel-centre coordinates
        np.testing.assert_allclose(s["keypoints"][0].numpy(), expected, atol=1e-4)
        assert s["image"][:, 97:, :].abs().max() == 0  # padding rows are black


@pytest.mark.parametrize("crop", [None, (64, 48)])
def test_augmented_keypoints_land_on_their_coloured_corner(crop):
    frames = toy_frames(12, width=128, height=96, seed=7)
    ds = PoseDataset(ListFrameSource(frames), [toy_object()], 128, 96, augment=GEOMETRIC_ONLY,
                     seed=3, crop=crop)
    hits = total = 0
    for i in range(len(frames)):
        s = ds[i]
        img = s["image"].numpy().transpose(1, 2, 0)
        assert img.shape[:2] == ((96, 128) if crop is None else (48, 64))
        assert s["mask"].shape[-2:] == (img.shape[0] // 4, img.shape[1] // 4)
        for k in range(8):
            if not s["kp_visible"][0, k]:
                continue
            u, v = (int(round(c)) for c in s["keypoints"][0, k].tolist())
            if not (0 <= u < img.shape[1] and 0 <= v < img.shape[0]):
                continue
            total += 1
            hits += np.abs(img[v, u] * 255 - _CORNER_COLOURS[k]).max() < 60
    assert total >= 20
    assert hits / total > 0.9


def test_augmentation_is_a_function_of_seed_epoch_and_index():
    frames = ListFrameSource(toy_frames(3, seed=1))
    a = PoseDataset(frames, [toy_object()], 128, 96, augment=AugmentConfig(), seed=11)
    b = PoseDataset(frames, [toy_object()], 128, 96, augment=AugmentConfig(), seed=11)
    s1, s2 = a[2], b[2]
    for key in s1:
        torch.testing.assert_close(s1[key], s2[key])
    a.set_epoch(1)
    assert not torch.equal(a[2]["image"], s1["image"])


def test_depth_dataset_keeps_metric_depth_and_scales_focal():
    frames = toy_frames(1, width=256, height=192, seed=2)
    ds = DepthDataset(ListFrameSource(frames), 128, 96)
    s = ds[0]
    assert float(s["fx"]) == pytest.approx(frames[0].K[0, 0] * 0.5)
    d = s["depth"][0].numpy()
    assert np.nanmin(d) >= np.nanmin(frames[0].depth) - 1e-6
    assert np.nanmax(d) <= np.nanmax(frames[0].depth) + 1e-6
    crop = DepthDataset(ListFrameSource(frames), 128, 96, crop=(64, 48))[0]
    assert crop["image"].shape == (3, 48, 64) and crop["depth"].shape == (1, 48, 64)
    assert float(crop["fx"]) == pytest.approx(float(s["fx"]))


def test_split_is_disjoint_and_seeded():
    src = ListFrameSource(toy_frames(10, seed=0))
    tr, va = split_train_val(src, 0.3, seed=4)
    tr2, va2 = split_train_val(src, 0.3, seed=4)
    assert len(tr) == 7 and len(va) == 3
    assert set(tr._indices).isdisjoint(va._indices)
    assert va._indices == va2._indices
    with pytest.raises(ConfigError):
        split_train_val(src, 0.0, seed=0)


@pytest.mark.slow
def test_shard_source_matches_the_renderers_keypoints(tmp_path):
    from dvc_perception.render.objects import find_object_yaml, load_object
    from dvc_perception.synth import scenes as synth
    from dvc_perception.synth.shards import load_shards, write_shards
    from dvc_perception.train.datasets import load_object_infos
    from dvc_perception.train.shards import ShardFrameSource, frame_from_synth

    obj = load_object(find_object_yaml("demo_object"))
    cfg = synth.SynthConfig(width=160, height=128, fx=150.0, fy=150.0, cx=80.0, cy=64.0,
                            distance_m=(0.3, 0.5))
    write_shards(synth.SceneSampler([obj], cfg, seed=3), tmp_path, 3,
                       frames_per_shard=2, progress=False)
    src = ShardFrameSource(tmp_path)
    reader = load_shards(tmp_path)
    ds = PoseDataset(src, load_object_infos(["demo_object"]), 160, 128)
    for i in range(3):
        s, ref = ds[i], reader[i]
        np.testing.assert_allclose(s["keypoints"][0].numpy(), ref.keypoints_2d[0], atol=1e-3)
        np.testing.assert_array_equal(s["kp_visible"][0].numpy() > 0,
                                      ref.keypoints_visible[0] & s["kp_in_image"][0].numpy())
        mask_frac = s["mask"][0].numpy().mean()
        assert mask_frac == pytest.approx(ref.mask(0).mean(), abs=1e-6)
        direct = frame_from_synth(ref)
        np.testing.assert_array_equal(direct.image, src[i].image)
        np.testing.assert_array_equal(direct.objects[0].mask, src[i].objects[0].mask)


def test_concat_source_indexes_through_all_parts():
    from dvc_perception.train.datasets import ConcatFrameSource

    a, b = toy_frames(2, seed=1), toy_frames(3, seed=2)
    cat = ConcatFrameSource([ListFrameSource(a), ListFrameSource(b)])
    assert len(cat) == 5
    assert cat[1] is a[1] and cat[2] is b[0] and cat[4] is b[2]
    with pytest.raises(IndexError):
        cat[5]


def test_photometric_colour_matrix_matches_the_per_pixel_formula():
    # saturation towards grey, channel gain, contrast about the mean, brightness: the single
    # 3x4 colour matrix must equal the step-by-step float64 formula (noise and blur off)
    from dvc_perception.train.datasets import _photometric

    img = np.random.default_rng(1).random((24, 32, 3), dtype=np.float32)
    cfg = dataclasses.replace(AugmentConfig(), noise_std=0.0, blur_prob=0.0)
    for seed in range(5):
        out = _photometric(img, np.random.default_rng(seed), cfg)
        rng = np.random.default_rng(seed)  # the same draws, in the same order
        s = rng.uniform(1 - cfg.saturation, 1 + cfg.saturation)
        gain = rng.uniform(1 - cfg.channel_gain, 1 + cfg.channel_gain, size=3)
        c = rng.uniform(1 - cfg.contrast, 1 + cfg.contrast)
        b = rng.uniform(-cfg.brightness, cfg.brightness)
        grey = img.astype(np.float64).mean(axis=2, keepdims=True)
        x = (grey + (img - grey) * s) * gain
        ref = np.clip((x - x.mean()) * c + x.mean() + b, 0.0, 1.0)
        np.testing.assert_allclose(out, ref, atol=1e-5)


def test_photometric_noise_is_zero_mean_with_the_drawn_std():
    from dvc_perception.train.datasets import _photometric

    img = np.full((120, 160, 3), 0.5, np.float32)
    cfg = AugmentConfig(saturation=0.0, channel_gain=0.0, contrast=0.0, brightness=0.0,
                        blur_prob=0.0, noise_std=0.05)
    stds = []
    for seed in range(20):
        noise = _photometric(img, np.random.default_rng(seed), cfg) - 0.5
        assert abs(float(noise.mean())) < 0.002
        stds.append(float(noise.std()))
        # i.i.d. within an image: neighbouring pixels uncorrelated
        flat = noise.reshape(-1)
        assert abs(float(np.corrcoef(flat[:-1], flat[1:])[0, 1])) < 0.03
    assert 0.0 <= min(stds) and max(stds) <= 0.05 * 1.03
    assert max(stds) - min(stds) > 0.01  # the std is drawn per image


def _half_turn_object():
    """An object with a 180 deg symmetry about its z axis and keypoints in its x-y plane."""
    from dvc_perception.train.datasets import ObjectInfo

    kp = np.array([[0.04, 0.0, 0.0], [0.04, 0.02, 0.0], [0.03, -0.02, 0.0], [-0.01, 0.03, 0.0],
                   [-0.04, 0.0, 0.0], [-0.03, -0.02, 0.0]])
    half_turn = np.diag([-1.0, -1.0, 1.0, 1.0]).reshape(-1).tolist()
    return ObjectInfo("half_turn", kp, 0.1, True, kp.copy(),
                      symmetries={"discrete": [half_turn], "continuous": []})


def _projection(points_obj, R, t, K):
    cam = points_obj @ R.T + t
    return (cam @ K.T)[:, :2] / cam[:, 2:]


def test_symmetric_targets_take_keypoint_visibility_from_the_canonical_pose():
    from dvc_perception.train.datasets import Frame, ObjectAnnotation

    obj = _half_turn_object()
    K = np.array([[200.0, 0.0, 31.5], [0.0, 200.0, 31.5], [0.0, 0.0, 1.0]])
    t = np.array([0.0, 0.0, 0.5])
    mask = np.zeros((64, 64), bool)
    mask[16:48, 8:32] = True  # the object's visible pixels: its right half is occluded
    half_turn = np.diag([-1.0, -1.0, 1.0])
    for R, canonical in ((np.eye(3), True), (half_turn, False)):
        # the annotation as the renderer writes it: keypoints of the drawn pose on the mask
        uv = np.rint(_projection(obj.keypoints_obj, R, t, K)).astype(int)
        drawn_visible = mask[uv[:, 1], uv[:, 0]]
        frame = Frame(np.zeros((64, 64, 3), np.uint8), K, objects=(
            ObjectAnnotation("half_turn", R, t, mask=mask, keypoints_visible=drawn_visible),))
        item = PoseDataset(ListFrameSource([frame]), [obj], 64, 64)[0]  # identity letterbox
        # the targets use the canonical pose (the identity rotation here) in both cases
        uv_canon = _projection(obj.keypoints_obj, np.eye(3), t, K)
        np.testing.assert_allclose(item["keypoints"][0].numpy(), uv_canon, atol=1e-4)
        ui, vi = np.rint(uv_canon).astype(int).T
        expected = mask[vi, ui]  # keypoint k is visible where the canonical keypoint k lands
        assert 0 < expected.sum() < len(expected)
        if not canonical:  # the drawn keypoints' flags are those of the mirrored points
            assert np.array_equal(drawn_visible, ~expected)
        np.testing.assert_array_equal(item["kp_visible"][0].numpy() > 0.5, expected)


def test_keypoint_visibility_annotations_are_kept_under_the_drawn_pose():
    from dvc_perception.train.datasets import Frame, ObjectAnnotation

    obj = _half_turn_object()
    K = np.array([[200.0, 0.0, 31.5], [0.0, 200.0, 31.5], [0.0, 0.0, 1.0]])
    mask = np.ones((64, 64), bool)
    flags = np.array([True, False, True, False, True, False])  # not what the mask says
    frame = Frame(np.zeros((64, 64, 3), np.uint8), K, objects=(ObjectAnnotation(
        "half_turn", np.eye(3), np.array([0.0, 0.0, 0.5]), mask=mask, keypoints_visible=flags),))
    item = PoseDataset(ListFrameSource([frame]), [obj], 64, 64)[0]
    np.testing.assert_array_equal(item["kp_visible"][0].numpy() > 0.5, flags)
