# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Several instances of one object per frame (`SynthConfig.instances_per_object`)."""

from __future__ import annotations

import collections
import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from dvc_perception.cli import main as cli_main
from dvc_perception.errors import ConfigError
from dvc_perception.render.objects import find_object_yaml, load_object
from dvc_perception.render.raster import render
from dvc_perception.synth.scenes import SceneSampler, SynthConfig
from dvc_perception.synth.shards import load_shards, write_shards
from dvc_perception.synth.synth_bag import POSES_TOPIC, object_pose_topic, write_bag
from dvc_perception.train.shards import frame_from_synth

SMALL = SynthConfig(width=160, height=120, fx=143.1, fy=143.4, cx=81.3, cy=60.5)
COPIES = dataclasses.replace(
    SMALL, objects_per_frame=(2, 3), instances_per_object=(2, 3), distractors_per_frame=(0, 1)
)


@pytest.fixture(scope="module")
def objects():
    # three objects with the same number of keypoints: the demo mesh under three ids
    demo = load_object(find_object_yaml("demo_object"))
    return [demo] + [dataclasses.replace(demo, object_id=f"demo_{c}") for c in "bc"]


@pytest.fixture(scope="module")
def frames(objects):
    sampler = SceneSampler(objects, COPIES, seed=3)
    return sampler, [sampler.sample(i) for i in range(3)]


def _digest(frame) -> str:
    """Instance image and poses (rounded: robust to last-bit float differences)."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(frame.instance_ids, dtype="<i2").tobytes())
    for a, decimals in ((frame.R, 9), (frame.t, 9), (frame.keypoints_2d, 2)):
        h.update(np.round(np.asarray(a, np.float64), decimals).astype("<f8").tobytes())
    return h.hexdigest()[:20]


def test_default_frames_are_unchanged(objects) -> None:
    # Checksums computed with the sampler as it was before instances_per_object existed: the
    # default (1, 1) draws no extra random numbers, so every frame stays the same.
    one = SceneSampler(objects[:1], SMALL, seed=0)
    assert _digest(one.sample(0)) == "3d0d8fb7dcad15e68a8a"
    assert _digest(one.sample(1)) == "fcfb372f50dd70cee290"
    cfg = dataclasses.replace(SMALL, objects_per_frame=(2, 3), back_plane_from="surface")
    several = SceneSampler([objects[0], objects[1], objects[2]], cfg, seed=5)
    assert _digest(several.sample(0)) == "675fc7996a9c3c247ce0"
    assert _digest(several.sample(2)) == "b9639d5e8fd3af10e8fe"
    explicit = SceneSampler(objects[:1], dataclasses.replace(SMALL, instances_per_object=(1, 1)))
    a, b = one.sample(1), explicit.sample(1)
    for field in ("rgb", "depth", "instance_ids", "R", "t", "keypoints_2d"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), field)


def test_every_copy_is_its_own_instance(objects, frames) -> None:
    _, fs = frames
    kp3d = objects[0].keypoints.double().numpy()
    radius = float(objects[0].mesh.vertices.double().norm(dim=1).max())
    counts_seen = set()
    clear_pairs = pairs = 0
    for f in fs:
        m = len(f.object_ids)
        assert list(f.object_ids) == sorted(f.object_ids)
        counts = collections.Counter(f.object_ids)
        assert 2 <= len(counts) <= 3 and all(2 <= c <= 3 for c in counts.values())
        counts_seen |= set(counts.values())
        assert f.R.shape == (m, 3, 3) and f.t.shape == (m, 3)
        assert f.keypoints_2d.shape[0] == f.visib_fraction.shape[0] == m
        assert set(np.unique(f.instance_ids)) <= {-2, -1, *range(m)}
        assert len({tuple(np.round(t, 9)) for t in f.t}) == m  # distinct poses
        for k in range(m):
            # keypoints: the projection of this instance's own pose
            cam = kp3d @ f.R[k].T + f.t[k]
            uv = cam[:, :2] / cam[:, 2:] * [SMALL.fx, SMALL.fy] + [SMALL.cx, SMALL.cy]
            np.testing.assert_allclose(f.keypoints_2d[k], uv, atol=1e-3)
            # mask: where id k is, this instance's mesh rendered alone at its pose is, at the
            # same depth
            mask = f.mask(k)
            np.testing.assert_array_equal(mask, f.instance_ids == k)
            assert mask.any(), f"instance {k} of frame {f.index} is fully hidden"
            alone = render(objects[0].mesh, (torch.as_tensor(f.R[k]), torch.as_tensor(f.t[k])),
                           torch.as_tensor(f.K), 160, 120)  # fmt: skip
            assert (alone.instance_ids.numpy()[mask] >= 0).all()
            np.testing.assert_allclose(f.depth[mask], alone.depth.numpy()[mask], atol=1e-5)
        # placement: copies keep their bounding spheres apart (up to the fallback draw)
        for a in range(m):
            for b in range(a + 1, m):
                pairs += 1
                clear_pairs += np.linalg.norm(f.t[a] - f.t[b]) >= 2 * radius - 1e-9
    assert counts_seen == {2, 3}
    assert clear_pairs >= 0.8 * pairs


def test_shards_keep_every_instance(tmp_path: Path, frames) -> None:
    sampler, fs = frames
    write_shards(sampler, tmp_path, 2, frames_per_shard=1, progress=False)
    reader = load_shards(tmp_path)
    assert reader.index["config"]["instances_per_object"] == [2, 3]
    for got, want in zip(reader, fs):
        assert got.object_ids == want.object_ids
        for field in ("instance_ids", "R", "t", "keypoints_2d", "keypoints_visible",
                      "visib_fraction"):  # fmt: skip
            np.testing.assert_array_equal(getattr(got, field), getattr(want, field), field)
        train = frame_from_synth(got)
        assert [a.object_id for a in train.objects] == list(want.object_ids)
        for k, ann in enumerate(train.objects):
            np.testing.assert_array_equal(ann.mask, want.instance_ids == k)
            np.testing.assert_array_equal(ann.t, want.t[k])


def test_bag_carries_every_instance(tmp_path: Path, frames) -> None:
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    sampler, fs = frames
    bag = write_bag(sampler, tmp_path / "bag", 1, progress=False)
    ts = get_typestore(Stores.ROS2_KILTED)
    msgs: dict[str, list] = {}
    with Reader(bag) as reader:
        for conn, _, data in reader.messages():
            if conn.topic.startswith("/ground_truth/"):
                msgs.setdefault(conn.topic, []).append(ts.deserialize_cdr(data, conn.msgtype))
    f = fs[0]
    assert len(msgs[POSES_TOPIC][0].poses) == len(f.object_ids)
    for oid, n in collections.Counter(f.object_ids).items():
        got = msgs[object_pose_topic(oid)]
        assert len(got) == n and len({m.header.stamp.nanosec for m in got}) == 1
        rows = [k for k, o in enumerate(f.object_ids) if o == oid]
        for m, k in zip(got, rows):
            p = m.pose.position
            np.testing.assert_allclose([p.x, p.y, p.z], f.t[k])


@pytest.mark.parametrize("bad", [(0, 1), (3, 2), (0, 0), (1.0, 2), (1, 2, 3), (True, 2)])
def test_bad_ranges_are_refused(bad) -> None:
    with pytest.raises(ConfigError, match="instances_per_object"):
        SynthConfig(instances_per_object=bad)


def test_range_from_yaml_and_cli(tmp_path: Path, capsys) -> None:
    assert SynthConfig.from_mapping({"instances_per_object": [2, 4]}).instances_per_object == (
        2, 4)  # fmt: skip
    with pytest.raises(ConfigError, match="instances_per_object"):
        SynthConfig.from_mapping({"instances_per_object": [3, 1]})
    base = ["synth", "--objects", "demo_object", "--frames", "1", "--width", "160",
            "--height", "120", "--no-progress"]  # fmt: skip
    bad = [*base, "--out", str(tmp_path / "bad"), "--instances-per-object", "3", "2"]
    assert cli_main(bad) == 2
    err = capsys.readouterr().err.strip()
    assert "instances_per_object" in err and "\n" not in err
    out = tmp_path / "ok"
    assert cli_main([*base, "--out", str(out), "--instances-per-object", "2", "2"]) == 0
    assert collections.Counter(load_shards(out)[0].object_ids) == {"demo_object": 2}
