# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Live parameters of perception_node in this process (real rclpy, private Context): a live
change is validated against the whole configuration and applied to the running node and
pipeline (the next frame obeys); a parameter read at configure is refused with the reason while
the node is configured and accepted while it is not; read-only ones are refused by rclpy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from rclpy.context import Context
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import Header

from dvc_perception.config import FiducialConfig, live_parameter_names, node_parameter_names
from dvc_perception.demo.boards import render_board_view
from dvc_perception.pipeline.fiducial import FiducialSource
from dvc_perception.pipeline.pipeline import Pipeline
from dvc_perception.ros.convert import rgb_to_image_msg
from dvc_perception.ros.params import parameter_descriptors
from dvc_perception.ros.perception_node import PerceptionNode

pytestmark = pytest.mark.ros

K = np.array([[600.0, 0.0, 319.5], [0.0, 600.0, 239.5], [0.0, 0.0, 1.0]])
DEMO_MODEL = Path(__file__).resolve().parents[2] / "models" / "pose_demo_object.onnx"
BOARD = FiducialConfig()  # the node's default board: 9 x 6 inner corners, 25 mm squares
R_BOARD = Rotation.from_rotvec([0.15, -0.2, 0.05]).as_matrix()
T_BOARD = np.array([-0.1, -0.06, 0.6])


@pytest.fixture(scope="module")
def board_rgb() -> np.ndarray:
    return render_board_view(BOARD, K, R_BOARD, T_BOARD, 640, 480)


@pytest.fixture(scope="module")
def demo_frame(demo_object_frame) -> tuple[np.ndarray, CameraInfo]:
    info = _info()
    info.k = demo_object_frame.K.ravel().tolist()
    info.p = np.column_stack([demo_object_frame.K, np.zeros(3)]).ravel().tolist()
    return demo_object_frame.rgb, info


def _info(frame_id: str = "cam") -> CameraInfo:
    info = CameraInfo(width=640, height=480, distortion_model="plumb_bob")
    info.header.frame_id = frame_id
    info.k = K.ravel().tolist()
    info.d = [0.0] * 5
    info.p = np.column_stack([K, np.zeros(3)]).ravel().tolist()
    return info


def _node(ctx: Context, pipeline_factory=None, **params) -> PerceptionNode:
    defaults = {"autostart": False, "torch_threads": 0}
    overrides = [Parameter(k, value=v) for k, v in {**defaults, **params}.items()]
    node = PerceptionNode(context=ctx, pipeline_factory=pipeline_factory,
                          parameter_overrides=overrides)
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS, node.startup_error
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS, node.startup_error
    return node


def _frame(rgb: np.ndarray, sec: int, frame_id: str = "cam"):
    return rgb_to_image_msg(rgb, Header(stamp=Time(sec=sec), frame_id=frame_id))


def _set(node: PerceptionNode, name: str, value):
    [result] = node.set_parameters([Parameter(name, value=value)])
    return result


def test_min_score_applies_to_the_next_frame_and_back(ctx, demo_frame):
    rgb, info = demo_frame
    node = _node(ctx, **{"pipeline.keypoint_source": "network",
                         "pipeline.network.model_path": str(DEMO_MODEL)})
    try:
        before = node.process_frame(_frame(rgb, 1), info)
        assert len(before.result.poses) == 1 and before.result.poses[0].score < 1.0
        assert len(before.detections.detections) == 1
        result = _set(node, "pipeline.min_score", 1.0)
        assert result.successful, result.reason
        assert node.pipeline.config.min_score == 1.0 == node.config.pipeline.min_score
        after = node.process_frame(_frame(rgb, 2), info)
        assert after.result.poses == [] and after.pose_msgs == {}
        assert after.detections is not None and list(after.detections.detections) == []
        assert after.detections.header.stamp == Time(sec=2)
        assert after.transforms is None  # nothing found: no object frame
        assert _set(node, "pipeline.min_score", 0.5).successful
        again = node.process_frame(_frame(rgb, 3), info)
        assert len(again.result.poses) == 1
        np.testing.assert_allclose(again.result.poses[0].t, before.result.poses[0].t, atol=1e-9)
        assert _set(node, "pipeline.network.min_objectness", 1.0).successful  # applied to the
        assert node.process_frame(_frame(rgb, 4), info).result.poses == []  # network source
    finally:
        node.destroy_node()


@pytest.mark.parametrize("name, value", [
    ("pipeline.network.model_path", "/tmp/other.onnx"),
    ("pipeline.network.backend", "torch"),
    ("pipeline.network.precision", "int8"),
    ("pipeline.network.device", "cpu"),
    ("pipeline.network.engine_cache_dir", "/tmp/engines"),
    ("pipeline.keypoint_source", "network"),
    ("pipeline.fiducial.cols", 7),
    ("pipeline.refine.enabled", True),
    ("pipeline.refine.contour_source", "render"),
])
def test_configure_time_parameter_is_refused_while_configured(ctx, name, value):
    node = _node(ctx)
    try:
        before = node.get_parameter(name).value
        result = _set(node, name, value)
        assert not result.successful
        assert name in result.reason and "read at configure" in result.reason, result.reason
        assert node.get_parameter(name).value == before
        # unconfigured, the same change is accepted and the next configure reads it
        node.trigger_deactivate()
        node.trigger_cleanup()
        assert _set(node, name, value).successful
        assert node.get_parameter(name).value == value
    finally:
        node.destroy_node()


def test_configure_time_change_is_used_by_the_next_configure(ctx, board_rgb):
    node = _node(ctx)
    try:
        node.trigger_deactivate()
        node.trigger_cleanup()
        assert _set(node, "pipeline.fiducial.object_id", "plate").successful
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.pipeline.object_ids == ("plate",)
        out = node.process_frame(_frame(board_rgb, 1), _info())
        assert set(out.pose_msgs) == {"plate"}
    finally:
        node.destroy_node()


@pytest.mark.parametrize("name, value, reason", [
    ("worker_queue_size", 4, "read-only"),  # descriptor read_only: rclpy refuses it
    ("reliable_inputs", True, "read-only"),
    ("pipeline.network.backend", "bogus", "pipeline.network.backend: expected one of"),
    ("pipeline.network.precision", "fp64", "pipeline.network.precision: expected one of"),
    ("pipeline.network.device", "gpu0", "pipeline.network.device"),
    ("sync.mode", "closest", "sync.mode: expected one of"),
    ("tf_prefix", "/robot", "tf_prefix"),
    ("pipeline.min_score", 1.5, "pipeline.min_score"),
])
def test_invalid_or_read_only_change_is_refused_with_the_reason(ctx, name, value, reason):
    node = _node(ctx)
    try:
        before = node.get_parameter(name).value
        result = _set(node, name, value)
        assert not result.successful and reason in result.reason, result.reason
        assert node.get_parameter(name).value == before
    finally:
        node.destroy_node()


def test_unsupported_engine_combination_is_refused_naming_the_choice(ctx):
    node = _node(ctx)
    try:
        node.trigger_deactivate()
        node.trigger_cleanup()
        result = _set(node, "pipeline.network.precision", "fp16")  # backend onnxruntime
        assert not result.successful
        assert "fp16" in result.reason and "onnxruntime" in result.reason, result.reason
    finally:
        node.destroy_node()


def test_node_settings_apply_live(ctx, board_rgb):
    node = _node(ctx, diagnostics_period_s=1.0, **{"sync.mode": "approximate"})
    try:
        matcher = node._matcher
        matcher.counters.no_camera_info = 3  # counted before the change: must survive it
        assert _set(node, "sync.mode", "exact").successful
        assert node._matcher is not matcher and node._matcher.mode == "exact"
        assert node._matcher.counters.no_camera_info == 3
        assert _set(node, "sync.tolerance_s", 0.02).successful
        assert node._matcher.tolerance_ns == 0  # exact ignores the tolerance
        assert _set(node, "sync.mode", "approximate").successful
        assert node._matcher.tolerance_ns == 20_000_000
        assert _set(node, "diagnostics_period_s", 0.25).successful
        assert node._timer.timer_period_ns == 250_000_000
        assert _set(node, "marker_axis_length_m", 0.3).successful
        out = node.process_frame(_frame(board_rgb, 1), _info())
        marker = out.markers.markers[0]
        tip, origin = marker.points[1], marker.points[0]
        length = np.linalg.norm([tip.x - origin.x, tip.y - origin.y, tip.z - origin.z])
        assert abs(length - 0.3) < 1e-9
    finally:
        node.destroy_node()


def test_tf_prefix_and_publish_tf_apply_live(ctx, board_rgb, capfd):
    node = _node(ctx)
    try:
        out = node.process_frame(_frame(board_rgb, 1), _info())
        assert [t.child_frame_id for t in out.transforms.transforms] == ["board_0"]
        assert _set(node, "tf_prefix", "robot1/").successful
        out = node.process_frame(_frame(board_rgb, 2), _info())
        [tf] = out.transforms.transforms
        assert tf.child_frame_id == "robot1/board_0" and tf.header.frame_id == "cam"
        assert tf.header.stamp == Time(sec=2)
        assert _set(node, "publish_tf", False).successful
        assert node.process_frame(_frame(board_rgb, 3), _info()).transforms is None
        assert _set(node, "publish_tf", True).successful
        no_frame = node.process_frame(_frame(board_rgb, 4, frame_id=""), _info())
        assert no_frame.transforms is None and len(no_frame.pose_msgs) == 1  # TF skipped only
        node.publish_outputs(no_frame)
        assert "object frames not sent on /tf" in capfd.readouterr().err
    finally:
        node.destroy_node()


def test_input_rectified_applies_live(ctx):
    node = _node(ctx)
    try:
        info = _info()
        P = K.copy()
        P[0, 0] = P[1, 1] = 580.0  # rectified intrinsics differ from the raw ones
        info.p = np.column_stack([P, np.zeros(3)]).ravel().tolist()
        assert float(node.camera_model(info).K[0, 0]) == 600.0
        assert _set(node, "pipeline.input_rectified", True).successful
        assert float(node.camera_model(info).K[0, 0]) == 580.0
    finally:
        node.destroy_node()


class _CroppingSource:
    """A keypoint source shaped like the two-stage one: a writable objectness threshold and a
    read-only detection threshold (a property without a setter)."""

    def __init__(self, config: FiducialConfig) -> None:
        self._inner = FiducialSource(config)
        self.backend = "test:cropping"
        self.object_ids = self._inner.object_ids
        self.min_objectness = 0.5

    @property
    def min_detection_score(self) -> float:
        return 0.3

    def detect(self, image_rgb):
        return self._inner.detect(image_rgb)


def test_source_thresholds_apply_or_are_refused_by_what_the_source_allows(ctx):
    node = _node(ctx, pipeline_factory=lambda c: Pipeline(c, _CroppingSource(c.fiducial)))
    try:
        assert _set(node, "pipeline.network.min_objectness", 0.8).successful
        assert node.pipeline.keypoint_source.min_objectness == 0.8
        result = _set(node, "pipeline.network.min_detection_score", 0.6)
        assert not result.successful
        assert "min_detection_score" in result.reason and "_CroppingSource" in result.reason
        assert node.get_parameter("pipeline.network.min_detection_score").value == 0.3
        assert node.config.pipeline.network.min_detection_score == 0.3  # nothing half-applied
    finally:
        node.destroy_node()


def test_refine_settings_apply_live(ctx):
    node = _node(ctx)
    try:
        for name, value in (("pipeline.refine.iterations", 5),
                            ("pipeline.refine.cost_weight", 0.5),
                            ("pipeline.refine.pyramid_levels", 2)):
            result = _set(node, name, value)
            assert result.successful, result.reason
        refine = node.pipeline.config.refine
        assert (refine.iterations, refine.cost_weight, refine.pyramid_levels) == (5, 0.5, 2)
        assert node.config.pipeline.refine == refine
        result = _set(node, "pipeline.refine.iterations", 0)
        assert not result.successful and "pipeline.refine.iterations" in result.reason
    finally:
        node.destroy_node()


def test_tracking_settings_apply_live_and_enabled_is_read_at_configure(ctx):
    node = _node(ctx, **{"pipeline.refine.enabled": True})
    try:
        assert node.pipeline.tracker is None
        for name, value in (("pipeline.tracking.detect_every", 2),
                            ("pipeline.tracking.max_cost", 0.4),
                            ("pipeline.tracking.colour_learning_rate", 0.35)):
            result = _set(node, name, value)
            assert result.successful, result.reason
        tracking = node.pipeline.config.tracking
        assert (tracking.detect_every, tracking.max_cost, tracking.colour_learning_rate) == (
            2, 0.4, 0.35)
        assert node.pipeline._current_refine_settings().colour_learning_rate == 0.35
        result = _set(node, "pipeline.tracking.colour_learning_rate", 0.0)
        assert not result.successful and "colour_learning_rate" in result.reason
        result = _set(node, "pipeline.tracking.enabled", True)
        assert not result.successful and "read at configure" in result.reason, result.reason
        result = _set(node, "pipeline.tracking.detect_every", 0)
        assert not result.successful and "pipeline.tracking.detect_every" in result.reason
        node.trigger_deactivate()
        node.trigger_cleanup()
        assert _set(node, "pipeline.tracking.enabled", True).successful
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS, node.startup_error
        assert node.pipeline.tracker is not None
        result = _set(node, "pipeline.refine.enabled", False)  # configure-time, and tracking
        assert not result.successful                            # needs it: refused either way
    finally:
        node.destroy_node()


def test_descriptors_say_when_a_change_takes_effect():
    live = set(live_parameter_names())
    assert {"pipeline.min_score", "pipeline.network.min_objectness", "publish_tf", "tf_prefix",
            "diagnostics_period_s", "warn_throttle_s", "pipeline.refine.iterations",
            "pipeline.refine.pyramid_levels", "pipeline.refine.cost_weight",
            "pipeline.tracking.detect_every", "pipeline.tracking.max_cost",
            "pipeline.tracking.colour_learning_rate"} <= live
    assert not live & {"pipeline.network.model_path", "pipeline.network.backend",
                       "pipeline.network.precision", "pipeline.network.device",
                       "pipeline.keypoint_source", "image_transport", "reliable_inputs",
                       "pipeline.refine.enabled", "pipeline.refine.contour_source",
                       "pipeline.tracking.enabled"}
    for name, d in parameter_descriptors().items():
        assert name in node_parameter_names()
        if name in live:
            assert "live" in d.additional_constraints and not d.read_only, name
        elif not d.read_only:
            assert "read at configure" in d.additional_constraints, name
