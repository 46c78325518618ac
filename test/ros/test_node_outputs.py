# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""What a robot consumes from perception_node, with the shipped demo-object model: the node runs
in its own process (`dvc-perception run`, network keypoints, ``backend: auto``), this process
publishes a rendered frame of the demo object and listens with real subscribers to
``~/detections``, ``~/demo_object/pose``, ``/tf`` and ``/diagnostics``, and changes parameters
through the node's SetParameters service (what ``ros2 param set`` calls). DDS isolation from
conftest.py; every wait is bounded."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import rclpy
import yaml
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseWithCovarianceStamped
from rcl_interfaces.srv import SetParameters
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from dvc_perception.config import PipelineConfig
from dvc_perception.geometry.camera import CameraModel
from dvc_perception.pipeline.pipeline import Pipeline
from dvc_perception.ros.convert import msg_to_pose, rgb_to_image_msg

vision_msgs = pytest.importorskip("vision_msgs.msg", reason="vision_msgs is not built here")
tf2_msgs = pytest.importorskip("tf2_msgs.msg", reason="tf2_msgs is not built here")

pytestmark = [pytest.mark.ros, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "models" / "pose_demo_object.onnx"
MESH = REPO / "config" / "objects" / "demo_object.obj"  # unit m (demo_object.yaml)
NODE = "/perception_node"
FRAME_ID = "camera_optical_frame"
TF_PREFIX = "t21/"
WAIT_S = 20.0


def _ns(stamp: Time) -> int:
    return stamp.sec * 10**9 + stamp.nanosec


def _obj_vertices(path: Path) -> np.ndarray:
    """The OBJ file's vertices (N, 3), read here without the package's mesh loader."""
    rows = [line.split()[1:4] for line in path.read_text().splitlines() if line.startswith("v ")]
    return np.asarray(rows, dtype=np.float64)


@dataclass
class Scene:
    rgb: np.ndarray
    blank: np.ndarray
    info: CameraInfo
    camera: CameraModel


@pytest.fixture(scope="module")
def scene(demo_object_frame) -> Scene:
    frame = demo_object_frame
    h, w = frame.rgb.shape[:2]
    info = CameraInfo(width=w, height=h, distortion_model="plumb_bob")
    info.header.frame_id = FRAME_ID
    info.k = frame.K.ravel().tolist()
    info.d = [0.0] * 5
    info.p = np.column_stack([frame.K, np.zeros(3)]).ravel().tolist()
    blank = np.full_like(frame.rgb, 128)  # no object: a plain grey wall
    return Scene(frame.rgb, blank, info, CameraModel(frame.K, np.zeros(0), w, h))


@pytest.fixture(scope="module")
def reference() -> Pipeline:
    """The same model run here, directly: the reference for score and premises."""
    return Pipeline.from_config(PipelineConfig.from_mapping(
        {"keypoint_source": "network", "network": {"model_path": str(MODEL)}}))


@dataclass
class Probe:
    ctx: Context
    node: object
    executor: SingleThreadedExecutor
    image_pub: object
    info_pub: object
    detections: dict[int, object] = field(default_factory=dict)
    poses: list[PoseWithCovarianceStamped] = field(default_factory=list)
    tf: list[object] = field(default_factory=list)
    diagnostics: list[DiagnosticArray] = field(default_factory=list)
    next_ns: int = 2000 * 10**9

    def spin_until(self, done: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not done() and time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.05)
        return done()

    def send(self, rgb: np.ndarray, info: CameraInfo) -> Time:
        """Publish a frame with a fresh stamp until its ~/detections comes back (bounded)."""
        for _ in range(3):
            self.next_ns += 100_000_007
            stamp = Time(sec=self.next_ns // 10**9, nanosec=self.next_ns % 10**9)
            info.header.stamp = stamp
            self.info_pub.publish(info)
            self.image_pub.publish(rgb_to_image_msg(rgb, Header(stamp=stamp, frame_id=FRAME_ID)))
            key = _ns(stamp)
            if self.spin_until(lambda k=key: k in self.detections, WAIT_S / 3):
                self.spin_until(lambda: False, 0.5)  # the other outputs of the frame
                return stamp
        raise AssertionError(f"no ~/detections for 3 frames within {WAIT_S} s")

    def set_parameter(self, name: str, value) -> object:
        client = self.node.create_client(SetParameters, f"{NODE}/set_parameters")
        try:
            assert client.wait_for_service(timeout_sec=10.0), "no set_parameters service"
            request = SetParameters.Request()
            request.parameters = [Parameter(name, value=value).to_parameter_msg()]
            future = client.call_async(request)
            assert self.spin_until(future.done, 10.0), "set_parameters did not answer"
            [result] = future.result().results
            return result
        finally:
            self.node.destroy_client(client)


@pytest.fixture(scope="module")
def node_process(tmp_path_factory, node_runner) -> Iterator[subprocess.Popen]:
    tmp = tmp_path_factory.mktemp("outputs")
    params = {"perception_node": {"ros__parameters": {
        "reliable_inputs": True, "worker_queue_size": 5, "diagnostics_period_s": 0.3,
        "tf_prefix": TF_PREFIX, "sync": {"mode": "exact"},
        "pipeline": {"keypoint_source": "network",
                     "network": {"model_path": str(MODEL), "backend": "auto"}},
    }}}
    (tmp / "params.yaml").write_text(yaml.safe_dump(params))
    yield from node_runner(tmp / "params.yaml", tmp / "node.log")


@pytest.fixture(scope="module")
def probe(node_process) -> Iterator[Probe]:
    ctx = Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("outputs_probe", context=ctx)
    reliable = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE)
    p = Probe(ctx, node, SingleThreadedExecutor(context=ctx),
              node.create_publisher(Image, "image", reliable),
              node.create_publisher(CameraInfo, "camera_info", reliable))
    node.create_subscription(vision_msgs.Detection3DArray, f"{NODE}/detections",
                             lambda m: p.detections.__setitem__(_ns(m.header.stamp), m), reliable)
    node.create_subscription(PoseWithCovarianceStamped, f"{NODE}/demo_object/pose",
                             p.poses.append, reliable)
    node.create_subscription(tf2_msgs.TFMessage, "/tf", p.tf.append,
                             QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
    node.create_subscription(DiagnosticArray, "/diagnostics", p.diagnostics.append, reliable)
    p.executor.add_node(node)
    ready = p.spin_until(lambda: node_process.poll() is not None or (
        node.count_subscribers("image") > 0
        and node.count_publishers(f"{NODE}/detections") > 0
        and node.count_publishers("/tf") > 0), 60.0) and node_process.poll() is None
    if not ready:
        raise AssertionError("node not discovered within 60 s; node log:\n"
                             + node_process.log_path.read_text())
    yield p
    p.executor.shutdown()
    node.destroy_node()
    rclpy.shutdown(context=ctx)


def _poses_at(probe: Probe, stamp: Time) -> list[PoseWithCovarianceStamped]:
    return [m for m in probe.poses if m.header.stamp == stamp]


def _transforms_at(probe: Probe, stamp: Time) -> list[object]:
    return [t for m in probe.tf for t in m.transforms if t.header.stamp == stamp]


def test_detections_match_the_pose_topic_and_tf(probe, scene, reference):
    stamp = probe.send(scene.rgb, scene.info)
    array = probe.detections[_ns(stamp)]
    assert array.header.stamp == stamp and array.header.frame_id == FRAME_ID
    [det] = array.detections
    [pose] = _poses_at(probe, stamp)
    [hypothesis] = det.results
    assert hypothesis.hypothesis.class_id == "demo_object" and det.id == "0"
    assert hypothesis.pose.pose == pose.pose.pose
    assert list(hypothesis.pose.covariance) == list(pose.pose.covariance)  # same 36 numbers
    [expected] = reference.process(scene.rgb, scene.camera, 0.0).poses
    assert abs(hypothesis.hypothesis.score - expected.score) < 1e-3, expected.score
    # bbox: the pose applied to the mesh's bounding-box centre, extent in metres
    R, t = msg_to_pose(pose.pose.pose)
    vertices = _obj_vertices(MESH)
    lo, hi = vertices.min(axis=0), vertices.max(axis=0)
    c = det.bbox.center.position
    np.testing.assert_allclose([c.x, c.y, c.z], R @ (0.5 * (lo + hi)) + t, atol=1e-6)
    s = det.bbox.size
    np.testing.assert_allclose([s.x, s.y, s.z], hi - lo, atol=1e-9)
    assert det.bbox.center.orientation == pose.pose.pose.orientation
    # the object's frame on /tf: the input stamp, child of the camera frame
    [tf] = _transforms_at(probe, stamp)
    assert tf.header.frame_id == FRAME_ID and tf.child_frame_id == f"{TF_PREFIX}demo_object_0"
    p = pose.pose.pose.position
    tr = tf.transform.translation
    assert (tr.x, tr.y, tr.z) == (p.x, p.y, p.z)
    assert tf.transform.rotation == pose.pose.pose.orientation


def test_frame_without_the_object_gives_empty_detections_and_nothing_stale(
        probe, scene, reference):
    assert reference.process(scene.blank, scene.camera, 0.0).poses == []  # the premise
    probe.send(scene.rgb, scene.info)  # the object is seen just before
    poses_before, tf_before = len(probe.poses), len(probe.tf)
    stamp = probe.send(scene.blank, scene.info)
    probe.spin_until(lambda: False, 1.0)  # time for anything (stale) to arrive
    array = probe.detections[_ns(stamp)]
    assert array.header.stamp == stamp and array.header.frame_id == FRAME_ID
    assert list(array.detections) == []
    assert len(probe.poses) == poses_before and not _poses_at(probe, stamp)
    assert len(probe.tf) == tf_before and not _transforms_at(probe, stamp)


def test_diagnostics_name_the_engine_that_runs_and_the_model(probe):
    n = len(probe.diagnostics)
    probe.spin_until(lambda: len(probe.diagnostics) > n, 10.0)
    mine = [d for d in probe.diagnostics if d.status[0].name.startswith("perception_node")]
    values = {kv.key: kv.value for kv in mine[-1].status[0].values}
    # the parameter says backend "auto": the engine resolved it (no TensorRT/CUDA here)
    assert values["keypoints.backend"] == "onnxruntime", values
    assert values["keypoints.precision"] == "fp32" and values["keypoints.device"] == "cpu"
    sha = hashlib.sha256(MODEL.read_bytes()).hexdigest()
    assert values["model.keypoints"] == f"pose_demo_object.onnx sha256:{sha[:12]}"
    assert values["outputs_off"] == "none"
    assert "float64 (CPU)" not in values.values()


def test_set_parameters_refuses_read_only_and_applies_min_score(probe, scene):
    result = probe.set_parameter("pipeline.network.model_path", "/tmp/other.onnx")
    assert not result.successful
    assert "pipeline.network.model_path" in result.reason and "configure" in result.reason
    result = probe.set_parameter("pipeline.network.backend", "bogus")
    assert not result.successful and "expected one of" in result.reason, result.reason
    result = probe.set_parameter("worker_queue_size", 3)
    assert not result.successful and "read-only" in result.reason, result.reason
    result = probe.set_parameter("pipeline.min_score", 1.0)
    assert result.successful, result.reason
    try:
        stamp = probe.send(scene.rgb, scene.info)  # the object is there, but scored < 1.0
        assert list(probe.detections[_ns(stamp)].detections) == []
        assert not _poses_at(probe, stamp) and not _transforms_at(probe, stamp)
    finally:
        assert probe.set_parameter("pipeline.min_score", 0.5).successful
    stamp = probe.send(scene.rgb, scene.info)
    assert len(probe.detections[_ns(stamp)].detections) == 1 and _poses_at(probe, stamp)


def test_without_vision_msgs_the_node_says_which_outputs_are_off_and_runs(tmp_path):
    """A robot without vision_msgs: the import fails (made to, in a child interpreter); the node
    logs once that ~/detections is off and why, and still answers frames."""
    script = textwrap.dedent("""
        import sys
        sys.modules["vision_msgs"] = None  # `import vision_msgs` raises ImportError
        sys.modules["vision_msgs.msg"] = None
        import numpy as np, rclpy
        from builtin_interfaces.msg import Time
        from rclpy.context import Context
        from rclpy.parameter import Parameter
        from sensor_msgs.msg import CameraInfo
        from std_msgs.msg import Header
        from dvc_perception.ros.convert import rgb_to_image_msg
        from dvc_perception.ros.perception_node import PerceptionNode
        ctx = Context()
        rclpy.init(context=ctx)
        node = PerceptionNode(context=ctx, parameter_overrides=[
            Parameter("torch_threads", value=0)])
        assert not node.startup_error, node.startup_error
        topics = {p.topic_name for p in node._pubs.values()}
        info = CameraInfo(width=64, height=48, distortion_model="plumb_bob")
        info.k = [50.0, 0.0, 31.5, 0.0, 50.0, 23.5, 0.0, 0.0, 1.0]
        image = rgb_to_image_msg(np.zeros((48, 64, 3), np.uint8),
                                 Header(stamp=Time(sec=1), frame_id="cam"))
        ok = node.handle_frame(image, info, 0.0)
        print("RESULT", ok, "/perception_node/detections" in topics,
              node.diagnostics_values()["outputs_off"])
        node.destroy_node()
        rclpy.shutdown(context=ctx)
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, env=dict(os.environ))
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    assert "RESULT True False ~/detections (vision_msgs cannot be imported" in out
    warnings = [line for line in out.splitlines() if "~/detections is off" in line]
    assert len(warnings) == 1 and "vision_msgs" in warnings[0], out


def test_board_detection_box_is_the_printed_pattern():
    """Fiducial mode (in this process): the box of a 9 x 6 inner-corner chessboard is its 10 x 7
    printed squares (origin at the first inner corner), zero thick, placed by the pose."""
    from rclpy.lifecycle import TransitionCallbackReturn
    from scipy.spatial.transform import Rotation

    from dvc_perception.config import FiducialConfig
    from dvc_perception.demo.boards import render_board_view
    from dvc_perception.ros.perception_node import PerceptionNode

    board = FiducialConfig()
    K = np.array([[600.0, 0.0, 319.5], [0.0, 600.0, 239.5], [0.0, 0.0, 1.0]])
    rgb = render_board_view(board, K, Rotation.from_rotvec([0.1, 0.2, -0.1]).as_matrix(),
                            np.array([-0.1, -0.05, 0.6]), 640, 480)
    info = CameraInfo(width=640, height=480, distortion_model="plumb_bob")
    info.k = K.ravel().tolist()
    ctx = Context()
    rclpy.init(context=ctx)
    try:
        node = PerceptionNode(context=ctx, parameter_overrides=[
            Parameter("autostart", value=False), Parameter("torch_threads", value=0)])
        try:
            assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
            image = rgb_to_image_msg(rgb, Header(stamp=Time(sec=4), frame_id="cam"))
            out = node.process_frame(image, info)
        finally:
            node.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)
    [det] = out.detections.detections
    R, t = msg_to_pose(out.pose_msgs["board"].pose.pose)
    sq = board.square_size_m
    centre_obj = np.array([(board.cols - 1) * sq / 2, (board.rows - 1) * sq / 2, 0.0])
    c = det.bbox.center.position
    np.testing.assert_allclose([c.x, c.y, c.z], R @ centre_obj + t, atol=1e-9)
    size = det.bbox.size
    np.testing.assert_allclose([size.x, size.y, size.z],
                               [(board.cols + 1) * sq, (board.rows + 1) * sq, 0.0], atol=1e-12)
    assert det.results[0].hypothesis.class_id == "board" and det.id == "0"
    assert out.detections.header.stamp == Time(sec=4)
