# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""perception_node with ``pipeline.tracking`` (real rclpy, private Context): a tracked object's
pose is published on ``~/<id>/pose``; once its track is lost nothing more is, and /diagnostics
counts the loss."""

from __future__ import annotations

import time

import numpy as np
import pytest
import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseWithCovarianceStamped
from rclpy.executors import SingleThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import Header

from dvc_perception.pipeline.pipeline import Pipeline
from dvc_perception.pipeline.sources import KeypointDetection
from dvc_perception.ros.convert import msg_to_pose, rgb_to_image_msg
from dvc_perception.ros.perception_node import PerceptionNode

pytestmark = pytest.mark.ros
pytest.importorskip("numba")

VISIBLE = 4  # frames 0-3 show the object, 4-7 only the background


class ProjectedKeypoints:
    """The object's keypoints at `truth` (set per frame); nothing when `truth` is None."""

    backend = "test:projected"
    object_ids = ("demo_object",)

    def __init__(self, scene) -> None:
        self.scene = scene
        self.truth = None

    def detect(self, image_rgb):
        if self.truth is None:
            return []
        R, t = self.truth
        pts = self.scene.keypoints_obj
        uv = (pts @ R.T + t) @ self.scene.K.T
        return [KeypointDetection("demo_object", uv[:, :2] / uv[:, 2:], pts.copy(),
                                  np.ones(len(pts)))]


def _true_pose(k: int):
    R = Rotation.from_rotvec([0.5, -1.0 + np.radians(1.5) * k, 0.3]).as_matrix()
    return R, np.array([-0.03 + 0.003 * k, 0.01, 0.45])


def _info(header: Header, K: np.ndarray) -> CameraInfo:
    info = CameraInfo(header=header, width=640, height=480, distortion_model="plumb_bob")
    info.k = K.ravel().tolist()
    info.d = [0.0] * 5
    info.p = np.hstack([K, np.zeros((3, 1))]).ravel().tolist()
    return info


def _spin_until(executor, condition, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)
    return condition()


def test_tracked_pose_is_published_and_a_lost_one_is_not(ctx, tracking_scene):
    source = ProjectedKeypoints(tracking_scene)
    params = {"autostart": False, "torch_threads": 0, "pipeline.refine.enabled": True,
              "pipeline.tracking.enabled": True, "pipeline.tracking.detect_every": 3}
    node = PerceptionNode(
        context=ctx, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()],
        pipeline_factory=lambda config: Pipeline(
            config, source, refine_models={"demo_object": tracking_scene.mesh}))
    probe = rclpy.create_node("probe", context=ctx)
    executor = SingleThreadedExecutor(context=ctx)
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS, node.startup_error
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        got: list[PoseWithCovarianceStamped] = []
        diagnostics: list[DiagnosticArray] = []
        probe.create_subscription(PoseWithCovarianceStamped, "/perception_node/demo_object/pose",
                                  got.append, 10)
        probe.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 10)
        for n in (node, probe):
            executor.add_node(n)
        pose_pub = node._pose_pubs["demo_object"]
        assert _spin_until(executor, lambda: pose_pub.get_subscription_count() > 0)
        for k in range(2 * VISIBLE):
            R, t = _true_pose(k)
            source.truth = (R, t) if k < VISIBLE else None
            header = Header(stamp=Time(sec=1, nanosec=k * 10**8), frame_id="camera")
            image = tracking_scene.render(R, t, seed=k, visible=k < VISIBLE)
            assert node.handle_frame(rgb_to_image_msg(image, header),
                                     _info(header, tracking_scene.K), time.monotonic())
            if k < VISIBLE:
                assert _spin_until(executor, lambda n=k + 1: len(got) == n), f"frame {k}: no pose"
        _spin_until(executor, lambda: False, timeout_s=0.5)  # anything late would arrive now
        assert [m.header.stamp.nanosec // 10**8 for m in got] == list(range(VISIBLE))
        for m in got:
            _, t_est = msg_to_pose(m.pose.pose)
            t_true = _true_pose(m.header.stamp.nanosec // 10**8)[1]
            assert np.linalg.norm(t_est - t_true) < 0.01
        values = node.diagnostics_values()
        assert values["tracking.lost"] == 1 and values["tracking.active"] == 0
        node.publish_diagnostics()
        assert _spin_until(executor, lambda: bool(diagnostics))
        reported = {kv.key: kv.value for kv in diagnostics[-1].status[0].values}
        assert reported["tracking.lost"] == "1"
    finally:
        executor.shutdown()
        probe.destroy_node()
        node.destroy_node()
