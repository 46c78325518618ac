# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dvc_perception.cli import main as cli_main
from dvc_perception.errors import ConfigError
from dvc_perception.render.objects import find_object_yaml, load_object
from dvc_perception.render.raster import render
from dvc_perception.synth.scenes import (
    DISTRACTOR_ID,
    SceneSampler,
    SynthConfig,
)
from dvc_perception.synth.shards import load_shards, write_shards

SMALL = SynthConfig(width=160, height=120, fx=143.1, fy=143.4, cx=81.3, cy=60.5)


@pytest.fixture(scope="module")
def demo():
    return load_object(find_object_yaml("demo_object"))


def test_same_seed_same_frame_other_seed_other_frame(demo) -> None:
    a = SceneSampler([demo], SMALL, seed=7).sample(3)
    b = SceneSampler([demo], SMALL, seed=7).sample(3)
    c = SceneSampler([demo], SMALL, seed=8).sample(3)
    for field in ("rgb", "depth", "instance_ids", "R", "t", "keypoints_2d"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.rgb, c.rgb)
    # Frames are independent of generation order.
    s = SceneSampler([demo], SMALL, seed=7)
    s.sample(5)
    np.testing.assert_array_equal(s.sample(3).rgb, a.rgb)


def test_ground_truth_is_consistent(demo) -> None:
    cfg = dataclasses.replace(SMALL, distractors_per_frame=(0, 0), extra_planes=(0, 0))
    sampler = SceneSampler([demo], cfg, seed=1)
    kp3d = demo.keypoints.double().numpy()
    for i in range(4):
        f = sampler.sample(i)
        assert f.object_ids == ("demo_object",)
        assert f.rgb.shape == (120, 160, 3) and f.rgb.dtype == np.uint8
        assert f.depth.dtype == np.float32 and np.isfinite(f.depth).all()  # back plane everywhere
        np.testing.assert_allclose(f.R[0] @ f.R[0].T, np.eye(3), atol=1e-9)
        # Keypoints: pinhole projection of the model keypoints at the GT pose...
        cam = kp3d @ f.R[0].T + f.t[0]
        uv = cam[:, :2] / cam[:, 2:] * [cfg.fx, cfg.fy] + [cfg.cx, cfg.cy]
        np.testing.assert_allclose(f.keypoints_2d[0], uv, atol=1e-3)
        # ...that land on the rendered object (3x3 dilated mask; no occluders here).
        mask = cv2.dilate(f.mask(0).astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        x, y = np.rint(uv[:, 0]).astype(int), np.rint(uv[:, 1]).astype(int)
        inside = (x >= 0) & (x < 160) & (y >= 0) & (y < 120)
        assert inside.any()
        assert mask[y[inside], x[inside]].all()
        np.testing.assert_array_equal(f.keypoints_visible[0], inside)
        assert f.visib_fraction[0] == pytest.approx(1.0)
        # The GT depth of the object equals a fresh render of the mesh alone at the GT pose.
        alone = render(demo.mesh, (torch.as_tensor(f.R[0]), torch.as_tensor(f.t[0])),
                       torch.as_tensor(f.K), 160, 120)  # fmt: skip
        m = f.mask(0)
        np.testing.assert_allclose(f.depth[m], alone.depth.numpy()[m], atol=1e-5)


@pytest.mark.parametrize("gap", [0.0, 0.04])
def test_back_plane_from_surface_touches_the_object(demo, gap: float) -> None:
    # Independent check through the render: fit the back plane to the rendered background
    # depth, then measure the object's vertices (at the GT pose) against it.
    cfg = dataclasses.replace(
        SMALL, distractors_per_frame=(0, 0), extra_planes=(0, 0), objects_per_frame=(1, 1),
        back_plane_from="surface", back_plane_gap_m=(gap, gap),
    )
    verts = demo.mesh.vertices.double().numpy()
    for i in range(3):
        f = SceneSampler([demo], cfg, seed=4).sample(i)
        bg = (f.instance_ids == -1) & np.isfinite(f.depth)
        v, u = np.nonzero(bg)
        d = f.depth[bg].astype(np.float64)
        X = np.stack([(u - cfg.cx) / cfg.fx * d, (v - cfg.cy) / cfg.fy * d, d], axis=1)
        # plane n . X = c with |n| = 1: least squares via the smallest singular vector
        centre = X.mean(axis=0)
        n = np.linalg.svd(X - centre, full_matrices=False)[2][-1]
        n = -n if n[2] > 0 else n  # towards the camera
        assert np.abs((X - centre) @ n).max() < 1e-3  # one plane behind the whole view
        clearance = (verts @ f.R[0].T + f.t[0] - centre) @ n  # > 0: in front of the plane
        assert clearance.min() == pytest.approx(gap, abs=5e-4)


def test_occluders_and_several_objects(lmo_dir: Path) -> None:
    # two LM-O objects (one network serves objects with the same number of keypoints; the demo
    # object has 17, the LM-O descriptions 9)
    can = load_object(find_object_yaml("lmo_obj_05"), data_root=lmo_dir.parent)
    ape = load_object(find_object_yaml("lmo_obj_01"), data_root=lmo_dir.parent)
    cfg = dataclasses.replace(SMALL, objects_per_frame=(2, 2), distractors_per_frame=(3, 3),
                              occluder_probability=1.0)  # fmt: skip
    sampler = SceneSampler([ape, can], cfg, seed=2)
    occluded = 0
    for i in range(4):
        f = sampler.sample(i)
        assert f.object_ids == ("lmo_obj_01", "lmo_obj_05")
        assert f.keypoints_2d.shape == (2, 9, 2) and f.keypoints_visible.shape == (2, 9)
        assert set(np.unique(f.instance_ids)) <= {-2, -1, 0, 1}
        occluded += int((f.visib_fraction < 0.999).sum())
        # A hidden keypoint is out of the image or covered by something else.
        for k in range(2):
            for (u, v), vis in zip(f.keypoints_2d[k], f.keypoints_visible[k]):
                x, y = round(float(u)), round(float(v))
                if not vis and 0 <= x < 160 and 0 <= y < 120:
                    assert f.instance_ids[y, x] != k
    assert occluded > 0
    assert DISTRACTOR_ID == -2


def test_sequence_mode_moves_camera_around_static_scene(demo) -> None:
    cfg = dataclasses.replace(SMALL, sequence=True, orbit_period_frames=8)
    sampler = SceneSampler([demo], cfg, seed=4)
    frames = [sampler.sample(i) for i in (0, 2, 5)]
    world = []
    for f in frames:
        T_cam_obj = np.eye(4)
        T_cam_obj[:3, :3], T_cam_obj[:3, 3] = f.R[0], f.t[0]
        world.append(f.T_world_cam @ T_cam_obj)
    np.testing.assert_allclose(world[1], world[0], atol=1e-9)
    np.testing.assert_allclose(world[2], world[0], atol=1e-9)
    assert not np.allclose(frames[1].R, frames[0].R)  # the orbit turns the view of the object
    # The subdivided back plane keeps covering the view while the camera moves.
    assert all(np.isnan(f.depth).mean() < 0.02 for f in frames)


def test_shards_round_trip(tmp_path: Path, demo) -> None:
    sampler = SceneSampler([demo], SMALL, seed=3)
    write_shards(sampler, tmp_path, 5, frames_per_shard=2, progress=False)
    assert sorted(p.name for p in tmp_path.glob("shard_*.npz")) == [
        "shard_00000.npz", "shard_00001.npz", "shard_00002.npz"]  # fmt: skip
    reader = load_shards(tmp_path)
    assert len(reader) == 5
    np.testing.assert_allclose(reader.keypoints_3d("demo_object"), demo.keypoints.numpy(),
                               atol=1e-6)  # fmt: skip
    for i, got in enumerate(reader):
        want = sampler.sample(i)
        assert got.index == i and got.object_ids == want.object_ids
        for field in ("rgb", "depth", "instance_ids", "R", "t", "keypoints_2d",
                      "keypoints_visible", "visib_fraction", "K", "T_world_cam"):  # fmt: skip
            np.testing.assert_array_equal(getattr(got, field), getattr(want, field), field)


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="distance_m"):
        SynthConfig(distance_m=(1.0, 0.5))
    with pytest.raises(ConfigError, match="unknown keys"):
        SynthConfig.from_mapping({"widht": 3})
    assert SynthConfig.from_mapping({"distance_m": [0.5, 0.7]}).distance_m == (0.5, 0.7)
    with pytest.raises(ConfigError, match="back_plane_from"):
        SynthConfig(back_plane_from="center")
    with pytest.raises(ConfigError, match="at least one object"):
        SceneSampler([], SMALL)


def test_synth_command_writes_shards(tmp_path: Path) -> None:
    out = tmp_path / "shards"
    rc = cli_main(["synth", "--objects", "demo_object", "--frames", "2", "--out", str(out),
                   "--width", "160", "--height", "120", "--no-progress"])  # fmt: skip
    assert rc == 0
    reader = load_shards(out)
    assert len(reader) == 2 and reader[0].rgb.shape == (120, 160, 3)
    # Intrinsics scaled with the image: 640 -> 160 is a factor 4 (pixel-centre aware).
    assert reader[0].K[0, 0] == pytest.approx(572.4114 / 4)
    assert reader[0].K[0, 2] == pytest.approx((325.2611 + 0.5) / 4 - 0.5)
    assert cli_main(["synth", "--frames", "1"]) == 2  # neither --out nor --bag


def test_load_shards_rejects_other_directories(tmp_path: Path) -> None:
    from dvc_perception.errors import InputError

    with pytest.raises(InputError, match="no index.json"):
        load_shards(tmp_path)
    (tmp_path / "index.json").write_text('{"format": "something_else"}')
    with pytest.raises(InputError, match="expected format"):
        load_shards(tmp_path)
