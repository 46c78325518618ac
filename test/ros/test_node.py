# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""perception_node end to end: the node runs in its own process, this process publishes images
and camera_info and listens to the outputs. Real rclpy and Fast DDS, no mocks; DDS isolated by
the environment set in conftest.py (inherited by the node process); every wait is bounded."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pytest
import rclpy
import yaml
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseArray, PoseWithCovarianceStamped
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from dvc_perception.config import FiducialConfig
from dvc_perception.demo.boards import render_board_view
from dvc_perception.pipeline.fiducial import CHESSBOARD_FLAGS, SUBPIX_CRITERIA
from dvc_perception.ros.convert import rgb_to_image_msg

pytestmark = [pytest.mark.ros, pytest.mark.slow]

NODE = "/perception_node"
BOARD = FiducialConfig(object_id="board", board_type="chessboard", cols=9, rows=6,
                       square_size_m=0.025)
K_SYN = np.array([[600.0, 0.0, 319.5], [0.0, 600.0, 239.5], [0.0, 0.0, 1.0]])
WAIT_S = 30.0  # generous: the machine is a loaded 2-core box


def _params(tmp: Path) -> Path:
    params = {
        "perception_node": {
            "ros__parameters": {
                "reliable_inputs": True,
                "worker_queue_size": 20,  # every bad frame must reach the handler
                "diagnostics_period_s": 0.3,
                "warn_throttle_s": 0.5,
                "sync": {"mode": "exact", "queue_size": 30},  # a burst of bad frames fits
                "pipeline": {
                    "fiducial": {
                        "object_id": BOARD.object_id, "board_type": "chessboard",
                        "cols": BOARD.cols, "rows": BOARD.rows,
                        "square_size_m": BOARD.square_size_m,
                    },
                },
            }
        }
    }
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def _ns(stamp: Time) -> int:
    return stamp.sec * 10**9 + stamp.nanosec


@dataclass
class Probe:
    """The test's side: publishers of the inputs, subscribers of the outputs."""

    ctx: Context
    executor: SingleThreadedExecutor
    image_pub: object
    info_pub: object
    poses: dict[int, PoseWithCovarianceStamped] = field(default_factory=dict)
    arrays: dict[int, PoseArray] = field(default_factory=dict)
    diagnostics: list[DiagnosticArray] = field(default_factory=list)
    next_ns: int = 1000 * 10**9

    def spin_until(self, done: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not done() and time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.05)
        return done()

    def stamp(self) -> Time:
        self.next_ns += 50_000_123  # a 20 Hz camera
        return Time(sec=self.next_ns // 10**9, nanosec=self.next_ns % 10**9)

    def send(self, image: Image, info: CameraInfo | None, stamp: Time | None = None) -> Time:
        stamp = stamp or self.stamp()
        image.header.stamp = stamp
        if info is not None:
            info.header.stamp = stamp
            self.info_pub.publish(info)
        self.image_pub.publish(image)
        self.spin_until(lambda: False, 0.15)  # pace a burst: KEEP_LAST histories must not overflow
        return stamp

    def frame(self, image: Image, info: CameraInfo, tries: int = 3) -> tuple[PoseArray, object]:
        """Send a good frame (fresh stamp) until its PoseArray comes back; bounded retries."""
        for _ in range(tries):
            stamp = self.send(image, info)
            key = _ns(stamp)
            if self.spin_until(lambda k=key: k in self.arrays, WAIT_S / tries):
                self.spin_until(lambda k=key: k in self.poses, 1.0)
                return self.arrays[key], self.poses.get(key)
        raise AssertionError(f"no PoseArray for {tries} frames within {WAIT_S} s")

    def latest_diagnostics(self, timeout: float = 10.0) -> dict[str, str]:
        """The values of the next /diagnostics message (or the last one after `timeout`)."""
        n = len(self.diagnostics)
        self.spin_until(lambda: len(self.diagnostics) > n, timeout)
        assert self.diagnostics, "no /diagnostics"
        return {kv.key: kv.value for kv in self.diagnostics[-1].status[0].values}


@pytest.fixture(scope="module")
def node_process(tmp_path_factory, node_runner) -> Iterator[subprocess.Popen]:
    tmp = tmp_path_factory.mktemp("node")
    yield from node_runner(_params(tmp), tmp / "node.log")


@pytest.fixture(scope="module")
def probe(node_process) -> Iterator[Probe]:
    ctx = Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("test_probe", context=ctx)
    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    deep = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)  # bursts of bad frames
    p = Probe(ctx, SingleThreadedExecutor(context=ctx),
              node.create_publisher(Image, "image", deep),
              node.create_publisher(CameraInfo, "camera_info", deep))
    node.create_subscription(PoseWithCovarianceStamped, f"{NODE}/board/pose",
                             lambda m: p.poses.__setitem__(_ns(m.header.stamp), m), reliable)
    node.create_subscription(PoseArray, f"{NODE}/poses",
                             lambda m: p.arrays.__setitem__(_ns(m.header.stamp), m), reliable)
    node.create_subscription(DiagnosticArray, "/diagnostics", p.diagnostics.append, reliable)
    p.executor.add_node(node)
    discovered = p.spin_until(
        lambda: node_process.poll() is not None or (
            node.count_subscribers("image") > 0 and node.count_publishers(f"{NODE}/poses") > 0
        ),
        60.0,
    ) and node_process.poll() is None
    if not discovered:
        text = node_process.log_path.read_text()
        raise AssertionError(f"node not discovered within 60 s; node log:\n{text}")
    yield p
    p.executor.shutdown()
    node.destroy_node()
    rclpy.shutdown(context=ctx)


def _info(K: np.ndarray, D: np.ndarray, w: int, h: int, frame_id: str) -> CameraInfo:
    info = CameraInfo(width=w, height=h, distortion_model="plumb_bob")
    info.header.frame_id = frame_id
    info.k = K.ravel().tolist()
    info.d = D.ravel().tolist()
    info.p = np.column_stack([K, np.zeros(3)]).ravel().tolist()
    return info


def _rotation_error_rad(q_xyzw: list[float], R: np.ndarray) -> float:
    return float(np.linalg.norm(
        (Rotation.from_quat(q_xyzw) * Rotation.from_matrix(R).inv()).as_rotvec()
    ))


def _pose_of(msg) -> tuple[np.ndarray, list[float]]:
    p, q = msg.position, msg.orientation
    return np.array([p.x, p.y, p.z]), [q.x, q.y, q.z, q.w]


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "mono8", "bgra8"])
def test_synthetic_chessboard_pose_within_1cm_2deg_headers_kept(probe, encoding):
    rng = np.random.default_rng(len(encoding) + ord(encoding[0]))
    R = Rotation.from_rotvec(rng.normal(0.0, 0.25, 3)).as_matrix()
    t = np.array([rng.uniform(-0.12, 0.0), rng.uniform(-0.08, 0.0), rng.uniform(0.45, 0.7)])
    rgb = render_board_view(BOARD, K_SYN, R, t, 640, 480)
    image = rgb_to_image_msg(rgb, Header(frame_id="cam_optical"), encoding)
    pose_array, pose = probe.frame(image, _info(K_SYN, np.zeros(5), 640, 480, "cam_optical"))
    assert pose is not None, "board not found"
    assert pose.header.frame_id == "cam_optical" == pose_array.header.frame_id
    assert pose.header.stamp == image.header.stamp == pose_array.header.stamp
    t_est, q_est = _pose_of(pose.pose.pose)
    assert np.linalg.norm(t_est - t) < 0.01
    assert np.degrees(_rotation_error_rad(q_est, R)) < 2.0
    assert len(pose_array.poses) == 1
    cov = np.array(pose.pose.covariance).reshape(6, 6)
    assert np.all(np.isfinite(cov)) and np.allclose(cov, cov.T, atol=1e-12 + 1e-6 * abs(cov).max())
    assert np.all(np.linalg.eigvalsh(0.5 * (cov + cov.T)) > 0.0)


def _opencv_reference(gray: np.ndarray, K: np.ndarray, D: np.ndarray) -> list[tuple]:
    """OpenCV's solvePnP on OpenCV's corners, undistorted (the pipeline's objective: see
    test_pipeline.test_real_chessboard_matches_opencv_solvepnp), for both corner labellings."""
    found, corners = cv2.findChessboardCorners(gray, (9, 6), flags=CHESSBOARD_FLAGS)
    assert found
    corners = cv2.cornerSubPix(gray, corners, (5, 5), (-1, -1), SUBPIX_CRITERIA)
    ideal = cv2.undistortPointsIter(corners, K, D, None, K,
                                    (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12))
    i, j = np.meshgrid(np.arange(9), np.arange(6))
    obj = np.stack([i.ravel(), j.ravel(), np.zeros(54)], 1) * BOARD.square_size_m
    refs = []
    for order in (ideal, ideal[::-1]):  # the node may label the board from either end
        ok, rvec, tvec = cv2.solvePnP(obj, order, K, None, flags=cv2.SOLVEPNP_ITERATIVE)
        assert ok
        refs.append((cv2.Rodrigues(rvec)[0], tvec.ravel()))
    return refs


def test_real_chessboard_matches_opencv_solvepnp(probe, chessboard_dir):
    from dvc_perception.geometry.camera import CameraModel

    camera = CameraModel.from_opencv_yaml(chessboard_dir / "intrinsics.yml", "M1", width=640,
                                          height=480)
    K, D = camera.K.numpy(), camera.opencv_distortion()  # 8 coefficients: rational_polynomial
    for name in ("left01.jpg", "left06.jpg", "left12.jpg"):
        gray = cv2.imread(str(chessboard_dir / name), cv2.IMREAD_GRAYSCALE)
        h, w = gray.shape
        image = rgb_to_image_msg(cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB), Header(frame_id="left"),
                                 "mono8")
        info = _info(K, D, w, h, "left")
        info.distortion_model = camera.distortion_model
        _, pose = probe.frame(image, info)
        assert pose is not None, name
        t_est, q_est = _pose_of(pose.pose.pose)
        errors = [
            (np.linalg.norm(t_est - t_ref) / np.linalg.norm(t_ref),
             _rotation_error_rad(q_est, R_ref))
            for R_ref, t_ref in _opencv_reference(gray, K, D)
        ]
        rel_t, rot = min(errors)
        assert rel_t < 1e-3 and rot < 1e-3, (name, errors)


def test_published_covariance_equals_the_pipelines(probe):
    """Spot check: the 36 numbers are the pipeline's (6, 6) covariance, row-major, ROS order."""
    from dvc_perception.config import PipelineConfig
    from dvc_perception.geometry.camera import CameraModel
    from dvc_perception.pipeline.pipeline import Pipeline

    R = Rotation.from_rotvec([0.2, -0.3, 0.1]).as_matrix()
    t = np.array([-0.1, -0.05, 0.55])
    rgb = render_board_view(BOARD, K_SYN, R, t, 640, 480)
    _, pose = probe.frame(rgb_to_image_msg(rgb, Header(frame_id="c")),
                          _info(K_SYN, np.zeros(5), 640, 480, "c"))
    pipeline = Pipeline.from_config(PipelineConfig.from_mapping({"fiducial": {
        "object_id": "board", "cols": 9, "rows": 6, "square_size_m": 0.025}}))
    ref = pipeline.process(rgb, CameraModel(K_SYN, np.zeros(0), 640, 480), 0.0).poses[0]
    np.testing.assert_allclose(np.array(pose.pose.covariance).reshape(6, 6), ref.covariance,
                               rtol=1e-6, atol=1e-15)


def test_binned_roi_frame_gives_the_full_resolution_pose(probe, node_process):
    """A 1280x960 distorted view of the board, and the same sensor read out with an ROI and 2x2
    binning (block means of the ROI: 480x360) under camera_info with the full-resolution K, D
    (REP 104): the two poses agree. image_geometry's convention (cx' = (cx - x_offset) / 2)
    moves the binned board 0.21-0.24 mm sideways here, beyond the tolerance."""
    from dvc_perception.demo.boards import board_texture
    from dvc_perception.geometry.camera import CameraModel
    from dvc_perception.render.planar import render_planar_texture

    K = np.array([[1200.0, 0.0, 639.5], [0.0, 1200.0, 479.5], [0.0, 0.0, 1.0]])
    D = np.array([-0.12, 0.05, 0.0008, -0.0006, 0.0])
    R = Rotation.from_rotvec([0.25, -0.2, 0.1]).as_matrix()
    centre = np.array([4.0, 2.5, 0.0]) * BOARD.square_size_m  # the board's middle
    t = np.array([0.02, -0.01, 0.5]) - R @ centre
    texture, A = board_texture(BOARD, 4000.0)
    grey = render_planar_texture(texture, A, CameraModel(K, D, 1280, 960, "plumb_bob"), R, t,
                                 supersample=2).astype(np.float64)
    x0, y0, w, h, b = 160, 96, 960, 720, 2
    binned = grey[y0:y0 + h, x0:x0 + w].reshape(h // b, b, w // b, b).mean(axis=(1, 3))

    def mono(img: np.ndarray) -> Image:
        return rgb_to_image_msg(np.repeat(img.round().astype(np.uint8)[:, :, None], 3, 2),
                                Header(frame_id="c"), "mono8")

    full_info = _info(K, D, 1280, 960, "c")
    roi_info = _info(K, D, 1280, 960, "c")
    roi_info.binning_x = roi_info.binning_y = b
    roi_info.roi.x_offset, roi_info.roi.y_offset, roi_info.roi.width, roi_info.roi.height = (
        x0, y0, w, h)
    roi_info.roi.do_rectify = True
    centres, normals = [], []
    for image, info in ((mono(grey), full_info), (mono(binned), roi_info)):
        _, pose = probe.frame(image, info)
        assert pose is not None, (image.width, image.height)
        t_est, q_est = _pose_of(pose.pose.pose)
        R_est = Rotation.from_quat(q_est).as_matrix()
        centres.append(R_est @ centre + t_est)
        normals.append(R_est[:, 2])
    c_full, c_binned = centres
    np.testing.assert_allclose(c_full, R @ centre + t, atol=2e-4)  # the premise: 0.2 mm
    assert np.abs(c_binned - c_full)[:2].max() < 8e-5, 1e3 * (c_binned - c_full)  # 0.08 mm
    assert abs(c_binned[2] - c_full[2]) < 3e-4
    assert np.degrees(np.arccos(min(1.0, normals[0] @ normals[1]))) < 0.2

    # the full-resolution image under the binned camera_info: refused, with the rule
    before = probe.latest_diagnostics()
    probe.send(mono(grey), roi_info)
    _, pose = probe.frame(mono(binned), roi_info)  # the next good frame is answered
    assert pose is not None
    assert probe.spin_until(lambda: int(probe.latest_diagnostics(1.0)["errors.size_mismatch"])
                            > int(before["errors.size_mismatch"]), WAIT_S)
    log = node_process.log_path.read_text()
    assert "image is 1280x960 but its camera model is 480x360" in log
    assert "binning 2x2: the image must be the ROI size // binning = 480x360 px" in log


def test_bad_inputs_are_counted_and_the_node_keeps_running(probe, node_process):
    rgb = render_board_view(BOARD, K_SYN, np.eye(3), np.array([-0.1, -0.06, 0.6]), 640, 480)
    good_info = _info(K_SYN, np.zeros(5), 640, 480, "c")
    probe.frame(rgb_to_image_msg(rgb, Header(frame_id="c")), good_info)  # baseline, connected
    before = probe.latest_diagnostics()

    bad_encoding = rgb_to_image_msg(rgb, Header(frame_id="c"))
    bad_encoding.encoding = "16UC1"
    probe.send(bad_encoding, good_info)
    truncated = rgb_to_image_msg(rgb, Header(frame_id="c"))
    truncated.data = truncated.data[: len(truncated.data) // 2]
    probe.send(truncated, good_info)
    def image() -> Image:
        return rgb_to_image_msg(rgb, Header(frame_id="c"))

    probe.send(image(), _info(K_SYN, np.zeros(5), 320, 240, "c"))  # size mismatch
    probe.send(image(), _info(np.zeros((3, 3)), np.zeros(5), 640, 480, "c"))  # zero K
    nan_k = K_SYN.copy()
    nan_k[0, 0] = np.nan
    probe.send(image(), _info(nan_k, np.zeros(5), 640, 480, "c"))
    wild_d = np.array([1e6, 0.0, 0.0, 0.0, 0.0])  # implausible distortion
    probe.send(image(), _info(K_SYN, wild_d, 640, 480, "c"))
    far_pp = K_SYN.copy()
    far_pp[0, 2] = 1e6  # principal point a million pixels outside the image
    probe.send(image(), _info(far_pp, np.zeros(5), 640, 480, "c"))
    huge = rgb_to_image_msg(np.zeros((2, 32767, 3), np.uint8), Header(frame_id="c"))
    probe.send(huge, _info(K_SYN, np.zeros(5), 32767, 2, "c"))  # beyond OpenCV's sides
    probe.send(rgb_to_image_msg(rgb, Header(frame_id="")), good_info)  # answered, warned
    for _ in range(3):  # images whose camera_info never comes
        probe.send(rgb_to_image_msg(rgb, Header(frame_id="c")), None)
    last = probe.stamp()
    probe.send(rgb_to_image_msg(rgb, Header(frame_id="c")), good_info, stamp=last)
    older = Time(sec=last.sec, nanosec=last.nanosec - 1)  # 1 ns older than the last
    probe.send(rgb_to_image_msg(rgb, Header(frame_id="c")), good_info, stamp=older)

    # still alive and working: a good frame comes back with its pose
    _, pose = probe.frame(rgb_to_image_msg(rgb, Header(frame_id="c")), good_info)
    assert pose is not None and node_process.poll() is None

    def grew(key: str, after: dict[str, str]) -> int:
        return int(after[key]) - int(before[key])

    deadline = time.monotonic() + WAIT_S
    while True:
        after = probe.latest_diagnostics()
        counts = {k: grew(k, after) for k in (
            "errors.image", "errors.size_mismatch", "errors.camera_info",
            "dropped.out_of_order", "dropped.unmatched")}
        expected = {"errors.image": 3, "errors.size_mismatch": 1, "errors.camera_info": 4,
                    "dropped.out_of_order": 1, "dropped.unmatched": 3}
        if all(counts[k] >= v for k, v in expected.items()) or time.monotonic() > deadline:
            break
    assert all(counts[k] >= v for k, v in expected.items()), (counts, after)
    assert float(after["latency_p50_ms"]) > 0.0
    # the subscriptions listen to the middleware's message-lost event (none lost here)
    assert int(after["dropped.middleware_lost.image"]) >= 0
    assert "fiducial:chessboard" in after["backend"]
    log = node_process.log_path.read_text()
    assert "frame skipped (image)" in log and "16UC1" in log
    assert "header.frame_id is ''" in log  # its own kind: not throttled away by the others
    assert "Traceback" not in log


def test_sigint_stops_within_2s_and_exits_0_without_traceback(probe, node_process):
    assert node_process.poll() is None
    t0 = time.monotonic()
    node_process.send_signal(signal.SIGINT)
    rc = node_process.wait(15.0)
    elapsed = time.monotonic() - t0
    log = node_process.log_path.read_text()
    assert rc == 0, log
    assert "Traceback" not in log, log
    # the worker stop itself is bounded by 2 s (test_node_lifecycle); interpreter and DDS
    # teardown add some time on a loaded machine
    assert elapsed < 10.0
