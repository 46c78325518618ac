# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Replay through the node's own per-frame code: counts, ground truth, determinism, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseArray, PoseWithCovarianceStamped
from rclpy.serialization import deserialize_message
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import Header

from dvc_perception.bag.io import AtomicBagWriter, BagReader
from dvc_perception.bag.replay import detect_camera_topics, replay_bag
from dvc_perception.config import FiducialConfig
from dvc_perception.demo.boards import render_board_view
from dvc_perception.errors import BagError
from dvc_perception.ros.convert import rgb_to_image_msg

K = np.array([[600.0, 0.0, 319.5], [0.0, 600.0, 239.5], [0.0, 0.0, 1.0]])
W, H = 640, 480


def _board_poses(n: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    board = FiducialConfig()  # the shipped default board: 9x6 inner corners, 25 mm squares
    centre = np.array([(board.cols - 1) * board.square_size_m / 2,
                       (board.rows - 1) * board.square_size_m / 2, 0.0])
    out = []
    for _ in range(n):
        R = Rotation.from_rotvec(rng.normal(0, 0.25, 3)).as_matrix()
        t = np.array([rng.uniform(-0.03, 0.03), rng.uniform(-0.02, 0.02), rng.uniform(0.4, 0.6)])
        out.append((R, t - R @ centre))
    return out


def _info(header: Header) -> CameraInfo:
    info = CameraInfo(header=header, width=W, height=H, distortion_model="plumb_bob")
    info.d = [0.0] * 5
    info.k = K.ravel().tolist()
    info.r = np.eye(3).ravel().tolist()
    info.p = np.hstack([K, np.zeros((3, 1))]).ravel().tolist()
    return info


def _write_board_bag(path: Path, storage: str, poses, *, drop_info_at: int = -1,
                     bad_image_at: int = -1) -> list[Header]:
    headers = []
    with AtomicBagWriter(path, storage) as writer:
        for k, (R, t) in enumerate(poses):
            ns = 10**9 + k * 10**8
            header = Header(stamp=Time(sec=ns // 10**9, nanosec=ns % 10**9), frame_id="cam")
            img = rgb_to_image_msg(render_board_view(FiducialConfig(), K, R, t, W, H), header)
            if k == bad_image_at:
                img.data = bytes(img.data)[: len(img.data) // 2]  # truncated frame
            writer.write_message("/camera/image_raw", img, ns)
            if k != drop_info_at:
                writer.write_message("/camera/camera_info", _info(header), ns)
            headers.append(header)
    return headers


def _read(bag: Path, topic: str, cls: type) -> list:
    with BagReader(bag) as reader:
        if topic not in reader.topics():
            return []
        return [deserialize_message(m.rawdata, cls) for m in reader.messages([topic])]


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_replay_one_output_per_frame_and_poses_match_ground_truth(tmp_path, storage):
    poses = _board_poses(4)
    headers = _write_board_bag(tmp_path / "in", storage, poses)
    summary = replay_bag(tmp_path / "in", tmp_path / "out", storage=storage, progress=False)
    assert summary.frames_in == summary.frames_ok == len(poses) and not summary.errors
    arrays = _read(tmp_path / "out", "/perception_node/poses", PoseArray)
    board = _read(tmp_path / "out", "/perception_node/board/pose", PoseWithCovarianceStamped)
    assert [a.header for a in arrays] == headers  # input stamps and frame_id preserved
    assert len(board) == len(poses)
    for msg, (R, t) in zip(board, poses):
        p = msg.pose.pose
        t_est = np.array([p.position.x, p.position.y, p.position.z])
        R_est = Rotation.from_quat([p.orientation.x, p.orientation.y, p.orientation.z,
                                    p.orientation.w]).as_matrix()
        assert np.linalg.norm(t_est - t) < 0.01
        assert np.degrees(Rotation.from_matrix(R_est @ R.T).magnitude()) < 2.0
        cov = np.reshape(msg.pose.covariance, (6, 6))
        assert np.all(np.linalg.eigvalsh(cov) > 0)
    # the node's Detection3DArray and /tf outputs are in the bag too, one per frame, as live
    from tf2_msgs.msg import TFMessage
    from vision_msgs.msg import Detection3DArray

    detections = _read(tmp_path / "out", "/perception_node/detections", Detection3DArray)
    transforms = _read(tmp_path / "out", "/tf", TFMessage)
    assert [d.header for d in detections] == headers
    for det, msg in zip(detections, board):
        assert [d.results[0].hypothesis.class_id for d in det.detections] == ["board"]
        assert det.detections[0].results[0].pose == msg.pose
    assert len(transforms) == len(poses)
    assert all(tf.transforms[0].header == h for tf, h in zip(transforms, headers))


def test_two_replays_decode_identically(tmp_path):
    _write_board_bag(tmp_path / "in", "mcap", _board_poses(2, seed=1))
    replay_bag(tmp_path / "in", tmp_path / "a", progress=False)
    replay_bag(tmp_path / "in", tmp_path / "b", progress=False)
    for topic, cls in (("/perception_node/poses", PoseArray),
                       ("/perception_node/board/pose", PoseWithCovarianceStamped)):
        assert _read(tmp_path / "a", topic, cls) == _read(tmp_path / "b", topic, cls)


def test_bad_frames_become_error_records_never_silent_drops(tmp_path):
    poses = _board_poses(4, seed=2)
    headers = _write_board_bag(tmp_path / "in", "mcap", poses, drop_info_at=1, bad_image_at=2)
    summary = replay_bag(tmp_path / "in", tmp_path / "out", progress=False,
                         parameters={"sync.mode": "exact"})
    assert summary.frames_in == 4 and summary.frames_ok == 2
    errors = _read(tmp_path / "out", "/perception_node/frame_errors", DiagnosticArray)
    assert [e.header for e in errors] == [headers[1], headers[2]]
    kinds = [e.status[0].values[0].value for e in errors]
    assert kinds[0] == "camera_info" and kinds[1] == "image"
    arrays = _read(tmp_path / "out", "/perception_node/poses", PoseArray)
    assert len(arrays) + len(errors) == len(poses)


def test_copy_inputs_and_out_of_order_stamps(tmp_path):
    _write_board_bag(tmp_path / "in", "mcap", _board_poses(2, seed=3))
    replay_bag(tmp_path / "in", tmp_path / "out", copy_inputs=True, progress=False)
    with BagReader(tmp_path / "out") as reader:
        assert reader.topics()["/camera/image_raw"].count == 2
    # stamps going backwards: a clear error and no output bag
    with AtomicBagWriter(tmp_path / "ooo", "mcap") as writer:
        for k, sec in enumerate((5, 3)):
            header = Header(stamp=Time(sec=sec), frame_id="cam")
            img = rgb_to_image_msg(np.zeros((H, W, 3), np.uint8), header)
            writer.write_message("/camera/image_raw", img, 10**9 * (k + 1))
            writer.write_message("/camera/camera_info", _info(header), 10**9 * (k + 1))
    with pytest.raises(BagError, match="out of order"):
        replay_bag(tmp_path / "ooo", tmp_path / "out2", progress=False)
    assert not (tmp_path / "out2").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out2")]


def test_topic_detection_errors(tmp_path):
    from dvc_perception.bag.io import TopicInfo

    topics = {"/a/image_raw": TopicInfo("/a/image_raw", "sensor_msgs/msg/Image", 1),
              "/b/image_raw": TopicInfo("/b/image_raw", "sensor_msgs/msg/Image", 1),
              "/a/camera_info": TopicInfo("/a/camera_info", "sensor_msgs/msg/CameraInfo", 1),
              "/b/camera_info": TopicInfo("/b/camera_info", "sensor_msgs/msg/CameraInfo", 1)}
    with pytest.raises(BagError, match="cannot auto-detect the image topic"):
        detect_camera_topics(topics)
    assert detect_camera_topics(topics, "/b/image_raw") == ("/b/image_raw", "/b/camera_info")
    with pytest.raises(BagError, match="not in the bag"):
        detect_camera_topics(topics, "/c/image_raw")
    with pytest.raises(BagError, match="CameraInfo"):
        detect_camera_topics(topics, "/a/image_raw", "/a/image_raw")
