# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from dvc_perception.errors import BagError, ConfigError
from dvc_perception.render.objects import find_object_yaml, load_object
from dvc_perception.synth.scenes import SceneSampler, SynthConfig
from dvc_perception.synth.synth_bag import write_bag

SMALL = SynthConfig(width=96, height=72, fx=86.0, fy=86.0, cx=47.5, cy=35.5)
N_FRAMES = 3
FPS = 15.0
START_NS = 1_700_000_000_000_000_000


def _read_raw(path: Path) -> dict[str, list[tuple[int, bytes]]]:
    from rosbags.rosbag2 import Reader

    out: dict[str, list[tuple[int, bytes]]] = {}
    with Reader(path) as reader:
        for conn, stamp, data in reader.messages():
            out.setdefault(conn.topic, []).append((stamp, bytes(data)))
    return out


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_bag_round_trip_with_rclpy(tmp_path: Path, storage: str) -> None:
    from geometry_msgs.msg import PoseArray, PoseStamped
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import CameraInfo, Image

    demo = load_object(find_object_yaml("demo_object"))
    sampler = SceneSampler([demo], SMALL, seed=11)
    bag = write_bag(sampler, tmp_path / "bag", N_FRAMES, fps=FPS, storage=storage,
                    start_ns=START_NS, progress=False)  # fmt: skip
    suffix = ".mcap" if storage == "mcap" else ".db3"
    assert any(p.suffix == suffix for p in bag.iterdir())
    raw = _read_raw(bag)
    assert set(raw) == {
        "/camera/image_raw", "/camera/camera_info", "/camera/depth/ground_truth",
        "/ground_truth/poses", "/ground_truth/demo_object/pose",
    }  # fmt: skip
    assert all(len(v) == N_FRAMES for v in raw.values())
    for i in range(N_FRAMES):
        frame = sampler.sample(i)
        stamp = START_NS + round(i * 1e9 / FPS)
        image = deserialize_message(raw["/camera/image_raw"][i][1], Image)
        assert raw["/camera/image_raw"][i][0] == stamp
        assert image.header.stamp.sec * 10**9 + image.header.stamp.nanosec == stamp
        assert image.header.frame_id == "camera_optical_frame"
        assert image.encoding == "rgb8" and image.step == 96 * 3
        rgb = np.frombuffer(bytes(image.data), np.uint8).reshape(72, 96, 3)
        np.testing.assert_array_equal(rgb, frame.rgb)
        depth_msg = deserialize_message(raw["/camera/depth/ground_truth"][i][1], Image)
        assert depth_msg.encoding == "32FC1" and depth_msg.is_bigendian == 0
        depth = np.frombuffer(bytes(depth_msg.data), "<f4").reshape(72, 96)
        np.testing.assert_array_equal(depth, frame.depth)
        info = deserialize_message(raw["/camera/camera_info"][i][1], CameraInfo)
        np.testing.assert_array_equal(np.asarray(info.k).reshape(3, 3), frame.K)
        assert (info.width, info.height) == (96, 72)
        poses = deserialize_message(raw["/ground_truth/poses"][i][1], PoseArray)
        single = deserialize_message(raw["/ground_truth/demo_object/pose"][i][1], PoseStamped)
        assert len(poses.poses) == 1 and single.pose == poses.poses[0]
        p = single.pose
        np.testing.assert_allclose([p.position.x, p.position.y, p.position.z], frame.t[0])
        q = [p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w]
        np.testing.assert_allclose(Rotation.from_quat(q).as_matrix(), frame.R[0], atol=1e-9)


def test_bag_bad_arguments(tmp_path: Path) -> None:
    demo = load_object(find_object_yaml("demo_object"))
    sampler = SceneSampler([demo], SMALL, seed=0)
    with pytest.raises(ConfigError, match="storage"):
        write_bag(sampler, tmp_path / "b", 1, storage="rosbag1", progress=False)
    with pytest.raises(ConfigError, match="fps"):
        write_bag(sampler, tmp_path / "b", 1, fps=0.0, progress=False)
    (tmp_path / "exists").mkdir()
    with pytest.raises(BagError, match="already exists"):
        write_bag(sampler, tmp_path / "exists", 1, progress=False)
