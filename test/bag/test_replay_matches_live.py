# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Replay equals live: the frames a live perception_node (own process, real Fast DDS) processed
give the same decoded pose messages when the same inputs are replayed from a bag."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
import yaml
from builtin_interfaces.msg import Time
from geometry_msgs.msg import PoseArray, PoseWithCovarianceStamped
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from dvc_perception.bag.io import AtomicBagWriter, BagReader
from dvc_perception.bag.replay import replay_bag
from dvc_perception.config import FiducialConfig
from dvc_perception.demo.boards import render_board_view
from dvc_perception.ros.convert import rgb_to_image_msg

pytestmark = [pytest.mark.ros, pytest.mark.slow]

K = np.array([[600.0, 0.0, 319.5], [0.0, 600.0, 239.5], [0.0, 0.0, 1.0]])
N_FRAMES = 6
NODE = "/perception_node"


def _ns(stamp: Time) -> int:
    return stamp.sec * 10**9 + stamp.nanosec


def _frames() -> list[tuple[Image, CameraInfo]]:
    rng = np.random.default_rng(7)
    board = FiducialConfig()
    out = []
    for k in range(N_FRAMES):
        R = Rotation.from_rotvec(rng.normal(0, 0.25, 3)).as_matrix()
        t = np.array([rng.uniform(-0.12, 0.0), rng.uniform(-0.08, 0.0), rng.uniform(0.45, 0.7)])
        ns = 2000 * 10**9 + k * 50_000_000
        header = Header(stamp=Time(sec=ns // 10**9, nanosec=ns % 10**9), frame_id="cam")
        image = rgb_to_image_msg(render_board_view(board, K, R, t, 640, 480), header)
        info = CameraInfo(header=header, width=640, height=480, distortion_model="plumb_bob")
        info.d = [0.0] * 5
        info.k = K.ravel().tolist()
        info.p = np.column_stack([K, np.zeros(3)]).ravel().tolist()
        out.append((image, info))
    return out


def test_replay_outputs_equal_the_live_nodes(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"perception_node": {"ros__parameters": {
        "reliable_inputs": True, "worker_queue_size": 10, "sync": {"mode": "exact"}}}}))
    log = open(tmp_path / "node.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "dvc_perception.cli", "run",
                             "--params-file", str(params)],
                            stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
    ctx = Context()
    rclpy.init(context=ctx)
    live: dict[int, PoseWithCovarianceStamped] = {}
    arrays: dict[int, PoseArray] = {}
    try:
        node = rclpy.create_node("replay_probe", context=ctx)
        qos = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE)
        image_pub = node.create_publisher(Image, "image", qos)
        info_pub = node.create_publisher(CameraInfo, "camera_info", qos)
        node.create_subscription(PoseWithCovarianceStamped, f"{NODE}/board/pose",
                                 lambda m: live.__setitem__(_ns(m.header.stamp), m), qos)
        node.create_subscription(PoseArray, f"{NODE}/poses",
                                 lambda m: arrays.__setitem__(_ns(m.header.stamp), m), qos)
        executor = SingleThreadedExecutor(context=ctx)
        executor.add_node(node)

        def spin_until(done, timeout: float) -> bool:
            deadline = time.monotonic() + timeout
            while not done() and time.monotonic() < deadline:
                executor.spin_once(timeout_sec=0.05)
            return done()

        assert spin_until(lambda: node.count_subscribers("image") > 0
                          and node.count_publishers(f"{NODE}/poses") > 0, 60.0), (
            f"node not discovered; log:\n{(tmp_path / 'node.log').read_text()}")
        frames = _frames()
        for image, info in frames:  # wait for each, so the live node drops none
            info_pub.publish(info)
            image_pub.publish(image)
            key = _ns(image.header.stamp)
            spin_until(lambda k=key: k in arrays and k in live, 20.0)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        executor.shutdown()
        rclpy.shutdown(context=ctx)
        log.close()
    assert len(live) >= N_FRAMES // 2, f"live node answered only {len(live)} frames"

    with AtomicBagWriter(tmp_path / "in") as writer:
        for image, info in frames:
            ns = _ns(image.header.stamp)
            writer.write_message("/camera/camera_info", info, ns)
            writer.write_message("/camera/image_raw", image, ns)
    replay_bag(tmp_path / "in", tmp_path / "out", params_file=params, progress=False)
    with BagReader(tmp_path / "out") as reader:
        replayed = {
            _ns(msg.header.stamp): msg
            for m in reader.messages([f"{NODE}/board/pose"])
            for msg in [deserialize_message(m.rawdata, PoseWithCovarianceStamped)]
        }
    assert len(replayed) == N_FRAMES
    for stamp, msg in live.items():
        assert replayed[stamp] == msg, f"frame {stamp}: replay differs from the live node"
