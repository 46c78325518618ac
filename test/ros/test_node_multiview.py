# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""perception_node with ``pipeline.depth_source: multiview`` on real topics (real rclpy, private
Context): image, camera_info and the body's PoseStamped in; ~/poses for every frame, depth and its
confidence from the depth thread when it is free, the outcomes counted on /diagnostics.

The frames are `planar_sequence` (a textured plane at 1.5 m, the camera sliding 4 cm per frame
at 30 Hz); the poses are a body's (``camera_extrinsic``: the camera optical frame 0.1 m ahead
of and 0.2 m above the body, looking along its x axis, as on a robot), published half a frame
before and after each image so that every image pose is interpolated.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import rclpy
import rclpy.executors
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseArray, PoseStamped
from rclpy.parameter import Parameter
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from dvc_perception.ros.convert import rgb_to_image_msg
from dvc_perception.ros.perception_node import PerceptionNode

pytestmark = pytest.mark.ros

FRAMES = 16
RATE_HZ = 30.0
STEP_M = 0.04
#: base_link -> camera optical frame (REP 103: optical z = base x, optical x = -base y).
EXTRINSIC = (0.1, 0.0, 0.2, -0.5, 0.5, -0.5, 0.5)


def _stamp(t: float) -> Time:
    return Time(sec=int(t), nanosec=int(round((t - int(t)) * 1e9)))


def _body_pose_msg(seq, t: float, t0: float) -> PoseStamped:
    """The body's pose at `t` whose camera is at ``seq.pose(x(t))``, x(t) = 4 cm per frame."""
    T_base_cam = np.eye(4)
    T_base_cam[:3, :3] = Rotation.from_quat(EXTRINSIC[3:]).as_matrix()
    T_base_cam[:3, 3] = EXTRINSIC[:3]
    T = seq.pose(STEP_M * RATE_HZ * (t - t0)) @ np.linalg.inv(T_base_cam)
    msg = PoseStamped(header=Header(stamp=_stamp(t), frame_id="world"))
    q = Rotation.from_matrix(T[:3, :3]).as_quat()
    msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = T[:3, 3].tolist()
    (msg.pose.orientation.x, msg.pose.orientation.y, msg.pose.orientation.z,
     msg.pose.orientation.w) = q.tolist()
    return msg


def test_depth_runs_beside_the_poses(ctx, planar_sequence):
    seq = planar_sequence
    params = {"torch_threads": 0, "reliable_inputs": True, "worker_queue_size": FRAMES,
              "diagnostics_period_s": 0.5, "pipeline.depth_source": "multiview",
              "pipeline.multiview.internal_width": 160, "pipeline.multiview.min_depth_m": 0.5,
              "pipeline.multiview.max_depth_m": 4.0, "pipeline.multiview.planes": 48,
              "pipeline.multiview.min_baseline_m": 0.05,
              "pipeline.multiview.camera_extrinsic": list(EXTRINSIC)}
    node = PerceptionNode(context=ctx, parameter_overrides=[
        Parameter(k, value=v) for k, v in params.items()])
    probe = rclpy.create_node("multiview_probe", context=ctx)
    executor = rclpy.executors.SingleThreadedExecutor(context=ctx)
    try:
        assert not node.startup_error, node.startup_error
        assert "/camera_pose" in {s.topic_name for s in node._subs}
        got: dict[str, list[tuple[float, object]]] = {"poses": [], "depth": [], "diag": [],
                                                      "confidence": []}
        probe.create_subscription(PoseArray, "/perception_node/poses",
                                  lambda m: got["poses"].append((time.monotonic(), m)), 50)
        probe.create_subscription(Image, "/perception_node/depth/image_raw",
                                  lambda m: got["depth"].append((time.monotonic(), m)), 50)
        probe.create_subscription(Image, "/perception_node/depth/confidence",
                                  lambda m: got["confidence"].append((time.monotonic(), m)), 50)
        probe.create_subscription(DiagnosticArray, "/diagnostics",
                                  lambda m: got["diag"].append((time.monotonic(), m)), 50)
        image_pub = probe.create_publisher(Image, "image", 50)
        info_pub = probe.create_publisher(CameraInfo, "camera_info", 50)
        pose_pub = probe.create_publisher(PoseStamped, "camera_pose", 50)
        for n in (node, probe):
            executor.add_node(n)
        deadline = time.monotonic() + 10.0
        while min(p.get_subscription_count() for p in (image_pub, info_pub, pose_pub)) == 0 or (
                node._pubs["depth"].get_subscription_count() == 0
                or node._pubs["depth_confidence"].get_subscription_count() == 0):
            assert time.monotonic() < deadline, "topics not discovered"
            executor.spin_once(timeout_sec=0.05)

        t0, half = 1.0, 0.5 / RATE_HZ
        pose_pub.publish(_body_pose_msg(seq, t0 - half, t0))
        for k in range(FRAMES):
            t = t0 + k / RATE_HZ
            pose_pub.publish(_body_pose_msg(seq, t + half, t0))
            header = Header(stamp=_stamp(t), frame_id="camera_optical_frame")
            info = CameraInfo(header=header, width=seq.W, height=seq.H,
                              distortion_model="plumb_bob", k=seq.K.reshape(-1).tolist(),
                              d=[0.0] * 5)
            info_pub.publish(info)
            image_pub.publish(rgb_to_image_msg(seq.render(STEP_M * k), header))
            until = time.monotonic() + 1.0 / RATE_HZ
            while time.monotonic() < until:
                executor.spin_once(timeout_sec=0.005)

        def published(v: dict) -> int:  # frames whose depth goes out
            return int(v["depth.ok"]) + int(v["depth.carried"])

        def outcomes() -> int:
            v = node.diagnostics_values()
            return sum(int(v[f"depth.{s}"]) for s in (
                "ok", "carried", "first_frame", "no_motion", "no_pose", "bad_pose", "busy"))

        deadline = time.monotonic() + 30.0
        while (len(got["poses"]) < FRAMES or outcomes() < FRAMES
               or not any("depth.ok" in {kv.key for kv in m.status[0].values}
                          for _, m in got["diag"])):  # fmt: skip
            assert time.monotonic() < deadline, (len(got["poses"]), node.diagnostics_values())
            executor.spin_once(timeout_sec=0.05)
        for _ in range(20):  # the last depth message may still be on its way
            executor.spin_once(timeout_sec=0.02)
        deadline = time.monotonic() + 5.0
        while len(got["confidence"]) < published(node.diagnostics_values()):
            assert time.monotonic() < deadline, (len(got["confidence"]), len(got["depth"]))
            executor.spin_once(timeout_sec=0.05)

        values = node.diagnostics_values()
        # every frame's poses were published, in order, whatever the depth thread was doing
        stamps = [m.header.stamp for _, m in got["poses"]]
        assert stamps == [_stamp(t0 + k / RATE_HZ) for k in range(FRAMES)]
        assert values["frames_processed"] == FRAMES
        # depth went out for the frames the depth thread took; frames that came while it was
        # busy got none (a depth takes longer than a frame period here)
        assert values["depth.busy"] >= 1 and values["depth.ok"] >= 1, values
        assert len(got["depth"]) == published(values), values
        assert values["depth.no_pose"] == values["depth.bad_pose"] == 0, values
        assert values["camera_poses.received"] == FRAMES + 1
        assert values["camera_poses.rejected"] == 0
        for _, m in got["depth"]:
            assert (m.encoding, m.width, m.height) == ("32FC1", seq.W, seq.H)
            assert m.header.frame_id == "camera_optical_frame"
            depth = np.frombuffer(m.data, np.float32)
            # 0.25 px of disparity at the shortest longest-baseline, 8 cm (as in
            # test/pipeline/test_multiview.py)
            assert abs(np.nanmedian(depth) / seq.Z - 1.0) < 0.25 / (seq.K[0, 0] * 0.08 / seq.Z)
            assert np.isfinite(depth).mean() > 0.8
        # each depth came with its confidence: same header and size, in [0, 1] where the depth
        # is finite, NaN where it is not
        assert len(got["confidence"]) == len(got["depth"]), values
        for (_, d), (_, c) in zip(got["depth"], got["confidence"]):
            assert c.header == d.header
            assert (c.encoding, c.width, c.height, c.step) == ("32FC1", d.width, d.height, d.step)
            depth = np.frombuffer(d.data, np.float32)
            confidence = np.frombuffer(c.data, np.float32)
            known = np.isfinite(depth)
            assert np.all((confidence[known] >= 0.0) & (confidence[known] <= 1.0))
            assert np.isnan(confidence[~known]).all()
            assert confidence[known].mean() > 0.0
        # poses kept flowing while depth ran: a later frame's poses came out before the
        # depth of an earlier frame
        first_depth_time, first_depth = got["depth"][0]
        assert any(received < first_depth_time
                   and (m.header.stamp.sec, m.header.stamp.nanosec)
                   > (first_depth.header.stamp.sec, first_depth.header.stamp.nanosec)
                   for received, m in got["poses"])  # fmt: skip
    finally:
        executor.shutdown()
        probe.destroy_node()
        node.stop_worker(2.0)
        node.destroy_node()


def test_nan_camera_poses_are_counted_and_a_frame_without_a_pose_gets_none(ctx, planar_sequence):
    seq = planar_sequence
    node = PerceptionNode(context=ctx, parameter_overrides=[
        Parameter("torch_threads", value=0),
        Parameter("pipeline.depth_source", value="multiview"),
        Parameter("pipeline.multiview.internal_width", value=160),
        Parameter("pipeline.multiview.max_pose_gap_s", value=0.0)])
    try:
        assert not node.startup_error, node.startup_error
        bad = _body_pose_msg(seq, 1.0, 1.0)
        bad.pose.orientation.w = float("nan")
        node._on_camera_pose(bad)  # the subscription's callback, as the executor calls it
        assert node.pose_buffer is not None and len(node.pose_buffer) == 0
        header = Header(stamp=_stamp(1.0), frame_id="camera_optical_frame")
        info = CameraInfo(header=header, width=seq.W, height=seq.H, distortion_model="plumb_bob",
                          k=seq.K.reshape(-1).tolist(), d=[0.0] * 5)
        outputs = node.process_frame(rgb_to_image_msg(seq.render(0.0), header), info,
                                     with_depth=False)
        assert outputs.result.depth_status == "deferred"
        assert outputs.depth_msg is None and outputs.confidence_msg is None
        assert "depth_confidence" in node._pubs
        assert not node.handle_depth(outputs)  # the depth thread's work: no pose, no depth
        values = node.diagnostics_values()
        assert (values["camera_poses.received"], values["camera_poses.rejected"]) == (1, 1)
        assert values["depth.no_pose"] == 1
        assert "no pose received" in values["depth.last_problem"]
        # the estimator's settings are live; where the poses come from is read at configure
        [ok, refused] = node.set_parameters([
            Parameter("pipeline.multiview.planes", value=40),
            Parameter("pipeline.multiview.pose_topic", value="odom_pose")])
        assert ok.successful and node.pipeline.config.multiview.planes == 40
        assert not refused.successful and "read at configure" in refused.reason
    finally:
        node.stop_worker(2.0)
        node.destroy_node()
