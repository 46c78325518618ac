# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Replay with ``pipeline.depth_source: multiview``: rgbd2bag -> replay -> eval, end to end.

The sequence is exact (`planar_sequence`: a textured plane at 1.5 m, the camera sliding 4 cm per
frame at 30 Hz), written as a 7-Scenes folder and converted by `rgbd2bag`, so the bag carries
the camera poses on /camera/pose as a real recording does; other bags are rewritten from it
(pose topic dropped, a NaN pose, poses on /tf instead).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import Image

from dvc_perception.bag.evaluate import evaluate_bag
from dvc_perception.bag.io import AtomicBagWriter, BagReader, deserialize
from dvc_perception.bag.replay import replay_bag
from dvc_perception.cli import main
from dvc_perception.errors import BagError
from dvc_perception.synth.synth_bag import CAMERA_POSE_TOPIC

NODE = "/perception_node"
FRAMES = 8
STEP_M = 0.04
#: The sweep for the 1.5 m plane at 160x120 (see test/pipeline/test_multiview.py).
PARAMS = {"pipeline.depth_source": "multiview", "pipeline.multiview.internal_width": 160,
          "pipeline.multiview.min_depth_m": 0.5, "pipeline.multiview.max_depth_m": 4.0,
          "pipeline.multiview.planes": 48, "pipeline.multiview.min_baseline_m": 0.05}


@pytest.fixture(scope="module")
def sliding_bag(planar_sequence, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("multiview")
    planar_sequence.write_7scenes(root / "seq", [STEP_M * k for k in range(FRAMES)])
    assert main(["rgbd2bag", str(root / "seq"), "-o", str(root / "bag"), "--no-progress"]) == 0
    return root / "bag"


def _rewrite(src: Path, dst: Path, pose: Callable[[int, Any], list[tuple[str, Any]]]) -> Path:
    """`src` copied to `dst` with each camera pose message k replaced by ``pose(k, msg)``'s
    (topic, message) list."""
    with BagReader(src) as reader, AtomicBagWriter(dst, "mcap") as writer:
        topics = reader.topics()
        k = 0
        for m in reader.messages(sorted(topics)):
            if m.topic != CAMERA_POSE_TOPIC:
                writer.write_raw(m.topic, m.msgtype, m.timestamp_ns, m.rawdata)
                continue
            for topic, msg in pose(k, deserialize(m, PoseStamped, k)):
                writer.write_message(topic, msg, m.timestamp_ns)
            k += 1
    return dst


def _depth_medians(out: Path) -> list[float]:
    with BagReader(out) as reader:
        return [float(np.nanmedian(np.frombuffer(msg.data, np.float32)))
                for m in reader.messages([f"{NODE}/depth/image_raw"])
                for msg in [deserialize(m, Image)]]


def _depth_and_confidence(out: Path) -> list[tuple[Image, Image]]:
    """The output bag's depth images and their confidence images, matched by stamp."""
    with BagReader(out) as reader:
        got = {topic: [deserialize(m, Image) for m in reader.messages([topic])]
               for topic in (f"{NODE}/depth/image_raw", f"{NODE}/depth/confidence")}
    depth, confidence = got.values()
    assert [m.header for m in confidence] == [m.header for m in depth]
    return list(zip(depth, confidence))


def test_replay_and_eval_on_the_command_line(sliding_bag, tmp_path, capsys, planar_sequence):
    out = tmp_path / "out"
    params = [a for name, value in PARAMS.items() for a in ("--param", f"{name}:={value}")]
    # the identity extrinsic written with integers, as YAML allows for a list of floats
    params += ["--param", "pipeline.multiview.camera_extrinsic:=[0, 0, 0, 0, 0, 0, 1]"]
    assert main(["replay", str(sliding_bag), "-o", str(out), *params]) == 0
    printed = capsys.readouterr()
    assert "camera poses from /camera/pose: 8 usable" in printed.err
    assert "depth (camera poses from /camera/pose): 1 first_frame, 1 no_motion, 6 ok" \
        in printed.out
    medians = _depth_medians(out)
    assert len(medians) == FRAMES - 2  # the first two frames have no baseline yet
    assert abs(np.median(medians) / planar_sequence.Z - 1.0) < 0.03, medians
    # every depth image has its confidence: same header and size, in [0, 1] where the depth is
    # finite, NaN where it is not
    pairs = _depth_and_confidence(out)
    assert len(pairs) == FRAMES - 2
    for d, c in pairs:
        assert (c.encoding, c.width, c.height) == ("32FC1", d.width, d.height)
        depth, confidence = np.frombuffer(d.data, np.float32), np.frombuffer(c.data, np.float32)
        known = np.isfinite(depth)
        assert np.all((confidence[known] >= 0.0) & (confidence[known] <= 1.0))
        assert np.isnan(confidence[~known]).all()
    assert main(["eval", str(out), "--gt", str(sliding_bag)]) == 0
    report = tmp_path / "out_report"
    depth = json.loads((report / "summary.json").read_text())["depth"]
    assert depth["abs_rel"] < 0.05 and depth["delta_1_25"] > 0.95
    # 2 of 8 frames predict nothing; the others nearly every pixel
    assert 0.65 < depth["density"] <= 0.75
    assert 0.0 < depth["mean_confidence"] <= 1.0
    # the depth figures gain the confidence panel
    assert (report / "depth_00.png").is_file()
    assert "with its confidence" in (report / "index.html").read_text()


def test_replay_without_a_camera_pose_topic_is_refused(sliding_bag, tmp_path):
    bag = _rewrite(sliding_bag, tmp_path / "no_pose", lambda k, msg: [])
    with pytest.raises(BagError, match=r"cannot find the camera pose topic for "
                                       r"/camera/image_raw .* candidates none"):
        replay_bag(bag, tmp_path / "out", parameters=PARAMS, progress=False)
    assert not (tmp_path / "out").exists()
    with pytest.raises(BagError, match="pose topic /camera/nothing is not in the bag"):
        replay_bag(sliding_bag, tmp_path / "out", parameters=PARAMS, progress=False,
                   pose_topic="/camera/nothing")


def test_a_static_camera_has_no_motion(planar_sequence, tmp_path):
    planar_sequence.write_7scenes(tmp_path / "seq", [0.0] * 4)
    assert main(["rgbd2bag", str(tmp_path / "seq"), "-o", str(tmp_path / "bag"),
                 "--no-progress"]) == 0
    s = replay_bag(tmp_path / "bag", tmp_path / "out", parameters=PARAMS, progress=False)
    assert (s.frames_in, s.frames_ok) == (4, 4)
    assert s.depth_status == {"first_frame": 1, "no_motion": 3}
    assert "a static, slow or purely rotating camera" in s.depth_notes[0]
    with BagReader(tmp_path / "out") as reader:
        assert f"{NODE}/depth/image_raw" not in reader.topics()
        assert f"{NODE}/depth/confidence" not in reader.topics()
    with pytest.raises(BagError, match="no /perception_node/depth/image_raw to score.*without "
                                       "camera motion"):
        evaluate_bag(tmp_path / "out", tmp_path / "bag")


def test_nan_poses_are_skipped_and_a_wide_gap_gives_no_pose(sliding_bag, tmp_path):
    def nan_at_4(k: int, msg: PoseStamped) -> list[tuple[str, Any]]:
        if k == 4:
            msg.pose.position.x = float("nan")
        return [(CAMERA_POSE_TOPIC, msg)]

    bag = _rewrite(sliding_bag, tmp_path / "nan", nan_at_4)
    lines: list[str] = []
    s = replay_bag(bag, tmp_path / "out", parameters=PARAMS, progress=False, log=lines.append)
    assert any("7 usable, 1 skipped" in line and "finite" in line for line in lines), lines
    # frame 4 lies between the poses of frames 3 and 5 (2/30 s apart): interpolated, exact
    assert s.depth_status == {"first_frame": 1, "no_motion": 1, "ok": 6}
    s = replay_bag(bag, tmp_path / "out2", parameters={
        **PARAMS, "pipeline.multiview.max_pose_gap_s": 0.05}, progress=False)
    assert s.depth_status == {"first_frame": 1, "no_motion": 1, "ok": 5, "no_pose": 1}
    [note] = [n for n in s.depth_notes if "no_pose" in n]
    assert "0.067 s apart, more than pipeline.multiview.max_pose_gap_s (0.05 s)" in note


def test_camera_poses_from_tf(sliding_bag, tmp_path, planar_sequence):
    from geometry_msgs.msg import TransformStamped
    from tf2_msgs.msg import TFMessage

    def to_tf(k: int, msg: PoseStamped) -> list[tuple[str, Any]]:
        p = msg.pose
        tf = TransformStamped(header=msg.header, child_frame_id="camera_optical_frame")
        tf.transform.translation.x, tf.transform.translation.y, tf.transform.translation.z = (
            p.position.x, p.position.y, p.position.z)
        tf.transform.rotation = p.orientation
        return [("/tf", TFMessage(transforms=[tf]))]

    bag = _rewrite(sliding_bag, tmp_path / "tf", to_tf)
    s = replay_bag(bag, tmp_path / "out", parameters={
        **PARAMS, "pipeline.multiview.pose_type": "tf"}, progress=False)
    assert s.depth_status == {"first_frame": 1, "no_motion": 1, "ok": 6}
    medians = _depth_medians(tmp_path / "out")
    assert abs(np.median(medians) / planar_sequence.Z - 1.0) < 0.03, medians
