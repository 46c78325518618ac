# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""`output_frame`: perception_node (real rclpy, private Context) listens to /tf and /tf_static
from real publishers in this process and expresses poses, covariance, detections and object
frames in ``odom``: the camera is looked up at the image stamp through a static chain
(latched before the node started) and an interpolated dynamic link; a frame whose transform is
unknown publishes nothing and is counted. References: the pipeline run directly in the camera
frame, composed with 4x4 matrices and scipy's Slerp here; a bag replay gives the same."""

from __future__ import annotations

import time

import numpy as np
import pytest
import rclpy
import rclpy.executors
from builtin_interfaces.msg import Time
from geometry_msgs.msg import PoseWithCovarianceStamped, TransformStamped
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from scipy.spatial.transform import Rotation, Slerp
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import Header

from dvc_perception.config import FiducialConfig, PipelineConfig
from dvc_perception.demo.boards import render_board_view
from dvc_perception.geometry.camera import CameraModel
from dvc_perception.pipeline.pipeline import Pipeline
from dvc_perception.ros.convert import msg_to_pose, rgb_to_image_msg
from dvc_perception.ros.perception_node import PerceptionNode

vision_msgs = pytest.importorskip("vision_msgs.msg", reason="vision_msgs is not built here")
tf2_msgs = pytest.importorskip("tf2_msgs.msg", reason="tf2_msgs is not built here")

pytestmark = pytest.mark.ros

BOARD = FiducialConfig(object_id="board", board_type="chessboard", cols=9, rows=6,
                       square_size_m=0.025)
K = np.array([[600.0, 0.0, 319.5], [0.0, 600.0, 239.5], [0.0, 0.0, 1.0]])
CAMERA = "cam_optical"
S = 10**9
T_BASE_LINK_CAM = (Rotation.from_euler("xyz", [10, -5, 30], degrees=True), [0.2, 0.0, 0.5])
T_LINK_OPTICAL = (Rotation.from_euler("ZYX", [-90, 0, -90], degrees=True), [0.0, 0.0, 0.0])
#: odom -> base_link at 10.0 s and 10.2 s
T_ODOM_BASE = {10 * S: (Rotation.from_rotvec([0.0, 0.0, 0.2]), [1.0, 2.0, 0.0]),
               10 * S + S // 5: (Rotation.from_rotvec([0.05, 0.0, 0.5]), [1.3, 2.2, 0.1])}


def _T(rot: Rotation, t) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = rot.as_matrix(), t
    return T


def _tf(parent: str, child: str, stamp_ns: int, rot: Rotation, t) -> TransformStamped:
    msg = TransformStamped()
    msg.header.stamp = Time(sec=stamp_ns // S, nanosec=stamp_ns % S)
    msg.header.frame_id, msg.child_frame_id = parent, child
    msg.transform.translation.x, msg.transform.translation.y, msg.transform.translation.z = t
    q = rot.as_quat()
    r = msg.transform.rotation
    r.x, r.y, r.z, r.w = (float(v) for v in q)
    return msg


def _odom_from_camera(stamp_ns: int) -> np.ndarray:
    """The reference: slerp / lerp of odom -> base_link at the stamp, then the static chain."""
    (s0, (r0, t0)), (s1, (r1, t1)) = sorted(T_ODOM_BASE.items())
    s = (stamp_ns - s0) / (s1 - s0)
    rot = Slerp([0.0, 1.0], Rotation.concatenate([r0, r1]))([s])[0]
    T_odom_base = _T(rot, (1 - s) * np.asarray(t0) + s * np.asarray(t1))
    return T_odom_base @ _T(*T_BASE_LINK_CAM) @ _T(*T_LINK_OPTICAL)


def _info() -> CameraInfo:
    info = CameraInfo(width=640, height=480, distortion_model="plumb_bob")
    info.header.frame_id = CAMERA
    info.k = K.ravel().tolist()
    info.d = [0.0] * 5
    info.p = np.column_stack([K, np.zeros(3)]).ravel().tolist()
    return info


def test_poses_detections_and_tf_in_the_output_frame(ctx):
    probe = rclpy.create_node("tf_probe", context=ctx)
    executor = rclpy.executors.SingleThreadedExecutor(context=ctx)
    executor.add_node(probe)
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)  # StaticTransformBroadcaster
    static_pub = probe.create_publisher(tf2_msgs.TFMessage, "/tf_static", latched)
    static_pub.publish(tf2_msgs.TFMessage(transforms=[
        _tf("base_link", "camera_link", 0, *T_BASE_LINK_CAM),
        _tf("camera_link", CAMERA, 0, *T_LINK_OPTICAL)]))  # before the node exists
    tf_pub = probe.create_publisher(tf2_msgs.TFMessage, "/tf", QoSProfile(depth=100))
    poses: list[PoseWithCovarianceStamped] = []
    detections: list = []
    object_frames: list = []
    probe.create_subscription(PoseWithCovarianceStamped, "/perception_node/board/pose",
                              poses.append, 10)
    probe.create_subscription(vision_msgs.Detection3DArray, "/perception_node/detections",
                              detections.append, 10)
    probe.create_subscription(tf2_msgs.TFMessage, "/tf", lambda m: object_frames.extend(
        t for t in m.transforms if t.header.frame_id != "odom" or t.child_frame_id != "base_link"
    ), QoSProfile(depth=100))
    fiducial = {f"pipeline.fiducial.{k}": v for k, v in
                (("cols", 9), ("rows", 6), ("square_size_m", 0.025))}
    node = PerceptionNode(context=ctx, parameter_overrides=[
        Parameter(k, value=v) for k, v in {"torch_threads": 0, "output_frame": "odom",
                                            "tf_timeout_s": 0.3, **fiducial}.items()])
    executor.add_node(node)
    try:
        assert not node.startup_error, node.startup_error
        deadline = time.monotonic() + 10.0
        while (tf_pub.get_subscription_count() == 0 or node.count_publishers("/tf_static") == 0
               or node._pose_pubs["board"].get_subscription_count() == 0
               or node._pubs["detections"].get_subscription_count() == 0):
            assert time.monotonic() < deadline, "TF publishers and subscribers not discovered"
            executor.spin_once(timeout_sec=0.05)
        tf_pub.publish(tf2_msgs.TFMessage(transforms=[
            _tf("odom", "base_link", stamp, *T) for stamp, T in T_ODOM_BASE.items()]))
        stamp_ns = 10 * S + S // 20  # a quarter of the way between the /tf samples
        while not _has_transform(node, stamp_ns):
            assert time.monotonic() < deadline, "the node's TF buffer did not fill"
            executor.spin_once(timeout_sec=0.05)

        R_board = Rotation.from_rotvec([0.2, -0.25, 0.1]).as_matrix()
        t_board = np.array([-0.1, -0.05, 0.55])
        rgb = render_board_view(BOARD, K, R_board, t_board, 640, 480)
        reference = Pipeline.from_config(PipelineConfig.from_mapping({"fiducial": {
            "object_id": "board", "cols": 9, "rows": 6, "square_size_m": 0.025}}))
        [in_camera] = reference.process(rgb, CameraModel(K, np.zeros(0), 640, 480), 0.0).poses

        def frame(ns: int, frame_id: str = CAMERA) -> bool:
            header = Header(stamp=Time(sec=ns // S, nanosec=ns % S), frame_id=frame_id)
            info = _info()
            info.header = header
            return node.handle_frame(rgb_to_image_msg(rgb, header), info, time.monotonic())

        assert frame(stamp_ns)
        while not (poses and detections and object_frames) and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        [pose], [array] = poses, detections
        assert pose.header.frame_id == "odom" == array.header.frame_id
        assert pose.header.stamp == Time(sec=10, nanosec=S // 20) == array.header.stamp
        T = _odom_from_camera(stamp_ns)
        R, t = msg_to_pose(pose.pose.pose)
        np.testing.assert_allclose(R, T[:3, :3] @ in_camera.R, atol=1e-9)
        np.testing.assert_allclose(t, T[:3, :3] @ in_camera.t + T[:3, 3], atol=1e-9)
        B = np.kron(np.eye(2), T[:3, :3])
        np.testing.assert_allclose(np.reshape(pose.pose.covariance, (6, 6)),
                                   B @ in_camera.covariance @ B.T, rtol=1e-6, atol=1e-15)
        [det] = array.detections
        assert det.results[0].pose.pose == pose.pose.pose
        [obj] = [f for f in object_frames if f.header.stamp == pose.header.stamp]
        assert (obj.header.frame_id, obj.child_frame_id) == ("odom", "board_0")
        p = obj.transform.translation
        np.testing.assert_allclose([p.x, p.y, p.z], t, atol=1e-12)

        # no transform at the stamp: after the newest /tf sample (waited 0.3 s), or no frame_id
        assert not frame(11 * S)
        assert not frame(stamp_ns + 1, frame_id="")
        values = node.diagnostics_values()
        assert values["errors.output_frame"] == 2
        assert "output_frame 'odom': the image's header.frame_id is empty" in node.stats.last_error
        n_poses, n_arrays = len(poses), len(detections)
        executor.spin_once(timeout_sec=0.3)
        assert (len(poses), len(detections)) == (n_poses, n_arrays)  # nothing published
        assert frame(stamp_ns + S // 10)  # the next good frame: the link's other end
        while len(poses) == n_poses and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        T = _odom_from_camera(stamp_ns + S // 10)
        np.testing.assert_allclose(msg_to_pose(poses[-1].pose.pose)[1],
                                   T[:3, :3] @ in_camera.t + T[:3, 3], atol=1e-9)
    finally:
        executor.shutdown()
        node.destroy_node()
        probe.destroy_node()


def _has_transform(node: PerceptionNode, stamp_ns: int) -> bool:
    from dvc_perception.ros.tf_buffer import TransformUnavailable

    try:
        node.tf_buffer.lookup("odom", CAMERA, stamp_ns)
    except TransformUnavailable:
        return False
    return True


def test_the_missing_transform_warning_names_both_frames(ctx, capfd):
    node = PerceptionNode(context=ctx, parameter_overrides=[
        Parameter("torch_threads", value=0), Parameter("output_frame", value="base_link"),
        Parameter("tf_timeout_s", value=0.0)])
    try:
        header = Header(stamp=Time(sec=5), frame_id=CAMERA)
        info = _info()
        info.header = header
        rgb = np.full((480, 640, 3), 128, np.uint8)
        assert not node.handle_frame(rgb_to_image_msg(rgb, header), info, time.monotonic())
        assert node.diagnostics_values()["errors.output_frame"] == 1
        err = capfd.readouterr().err
        assert "frame skipped (output_frame)" in err
        assert f"no transform from '{CAMERA}' to 'base_link' at 5000000000 ns" in err
    finally:
        node.destroy_node()


def test_replay_reads_the_bags_tf_and_expresses_poses_in_the_output_frame(tmp_path):
    """The same scene in a bag (image, camera_info, /tf_static once at the start, /tf after the
    images, as a recorder may order them): the replay's poses equal the composed reference; an
    image after the last /tf sample becomes an error record of kind output_frame."""
    from dvc_perception.bag.io import AtomicBagWriter, BagReader, deserialize
    from dvc_perception.bag.replay import replay_bag

    R_board = Rotation.from_rotvec([0.2, -0.25, 0.1]).as_matrix()
    rgb = render_board_view(BOARD, K, R_board, np.array([-0.1, -0.05, 0.55]), 640, 480)
    stamps = [10 * S + S // 20, 10 * S + S // 10, 11 * S]
    with AtomicBagWriter(tmp_path / "in") as w:
        w.write_message("/tf_static", tf2_msgs.TFMessage(transforms=[
            _tf("base_link", "camera_link", 0, *T_BASE_LINK_CAM),
            _tf("camera_link", CAMERA, 0, *T_LINK_OPTICAL)]), 0)
        for ns in stamps:
            header = Header(stamp=Time(sec=ns // S, nanosec=ns % S), frame_id=CAMERA)
            info = _info()
            info.header = header
            w.write_message("/camera/image_raw", rgb_to_image_msg(rgb, header), ns)
            w.write_message("/camera/camera_info", info, ns)
        for ns, T in T_ODOM_BASE.items():
            w.write_message("/tf", tf2_msgs.TFMessage(transforms=[_tf("odom", "base_link", ns,
                                                                       *T)]), 12 * S + ns)
    summary = replay_bag(tmp_path / "in", tmp_path / "out", progress=False, parameters={
        "output_frame": "odom", "pipeline.fiducial.cols": 9, "pipeline.fiducial.rows": 6,
        "pipeline.fiducial.square_size_m": 0.025})
    assert summary.frames_ok == 2 and [e.kind for e in summary.errors] == ["output_frame"]
    assert "'cam_optical' to 'odom' at 11000000000 ns" in summary.errors[0].message
    reference = Pipeline.from_config(PipelineConfig.from_mapping({"fiducial": {
        "object_id": "board", "cols": 9, "rows": 6, "square_size_m": 0.025}}))
    [in_camera] = reference.process(rgb, CameraModel(K, np.zeros(0), 640, 480), 0.0).poses
    with BagReader(tmp_path / "out") as reader:
        got = [deserialize(m, PoseWithCovarianceStamped)
               for m in reader.messages(["/perception_node/board/pose"])]
    assert [m.header.frame_id for m in got] == ["odom", "odom"]
    for msg, ns in zip(got, stamps):
        T = _odom_from_camera(ns)
        R, t = msg_to_pose(msg.pose.pose)
        np.testing.assert_allclose(R, T[:3, :3] @ in_camera.R, atol=1e-9)
        np.testing.assert_allclose(t, T[:3, :3] @ in_camera.t + T[:3, 3], atol=1e-9)
