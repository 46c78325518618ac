# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""perception_node in this process (real rclpy, private Context): lifecycle transitions, the
synchronous per-frame handler (what a bag replay calls), compressed input, configure errors."""

from __future__ import annotations

import array
import os
import sys
import threading
import time

import cv2
import numpy as np
import pytest
import rclpy
import rclpy.executors
from builtin_interfaces.msg import Time
from lifecycle_msgs.msg import State
from rclpy.context import Context
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, CompressedImage
from std_msgs.msg import Header

from dvc_perception.errors import ConfigError
from dvc_perception.ros.convert import rgb_to_image_msg
from dvc_perception.ros.perception_node import PerceptionNode

pytestmark = pytest.mark.ros


def _info(w: int = 64, h: int = 48) -> CameraInfo:
    info = CameraInfo(width=w, height=h, distortion_model="plumb_bob")
    info.k = [50.0, 0.0, 31.5, 0.0, 50.0, 23.5, 0.0, 0.0, 1.0]
    info.d = [0.0] * 5
    return info


def _node(ctx: Context, **params) -> PerceptionNode:
    # torch_threads 0: leave the pytest process's torch settings alone
    defaults = {"autostart": False, "torch_threads": 0}
    overrides = [Parameter(k, value=v) for k, v in {**defaults, **params}.items()]
    return PerceptionNode(context=ctx, parameter_overrides=overrides)


def test_lifecycle_configure_activate_deactivate_cleanup(ctx):
    node = _node(ctx)
    try:
        assert node.pipeline is None
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.pipeline is not None and not node._subs
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert node.count_subscribers("image") == 1  # the node's own subscription
        assert {s.topic_name for s in node._subs} == {"/image", "/camera_info"}
        assert node._worker is not None and node._worker.running
        topics = {p.topic_name for p in [*node._pubs.values(), *node._pose_pubs.values()]}
        assert {"/perception_node/poses", "/perception_node/board/pose",
                "/perception_node/markers", "/perception_node/overlay", "/diagnostics"} <= topics
        assert "/perception_node/depth/image_raw" not in topics  # no depth source: no depth topics
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        assert node._worker is None and not node._subs and not node._pubs
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS  # and back again
        assert node._worker is not None and node._worker.running and len(node._subs) == 2
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
        assert node.pipeline is None
    finally:
        node.destroy_node()


def test_deactivate_stops_a_busy_worker_within_2s(ctx):
    node = _node(ctx)
    try:
        node.trigger_configure()
        node.trigger_activate()
        release = threading.Event()
        started = threading.Event()

        def slow_frame(item) -> None:  # a frame that takes 1 s (a slow network on a CPU)
            started.set()
            release.wait(1.0)

        node._worker._handler = slow_frame
        node._worker.submit(("frame", None, 0.0))
        assert started.wait(5.0)
        t0 = time.monotonic()
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        assert time.monotonic() - t0 < 2.0
    finally:
        release.set()
        node.destroy_node()


def _sockets() -> int:
    """Sockets this process holds (a DDS participant holds several)."""
    fds = os.listdir("/proc/self/fd")
    return sum(os.readlink(f"/proc/self/fd/{fd}").startswith("socket:") for fd in fds
               if os.path.exists(f"/proc/self/fd/{fd}"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts sockets in /proc")
def test_destroy_node_ends_its_dds_participant(ctx):
    # rclpy's LifecycleNode leaves its state machine (holding the node) to the garbage
    # collector; until a collection ran, the participant's sockets and threads lived on.
    before = _sockets()
    node = _node(ctx)
    node.trigger_configure()
    node.trigger_activate()
    assert _sockets() > before
    node.destroy_node()
    assert not node._worker and _sockets() == before
    with pytest.raises(ConfigError):  # a node that fails in its constructor, too
        _node(ctx, **{"pipeline.min_score": 2.0})
    assert _sockets() == before


def test_autostart_reaches_active(ctx):
    node = PerceptionNode(context=ctx, parameter_overrides=[Parameter("torch_threads", value=0)])
    try:
        assert node._state_machine.current_state[0] == State.PRIMARY_STATE_ACTIVE
        assert not node.startup_error
    finally:
        node.destroy_node()


@pytest.mark.parametrize(
    "param, value, message",
    [
        ("pipeline.fiducial.object_id", "1board", "ROS name token"),
        ("pipeline.keypoint_source", "network", "network"),
        ("pipeline.fiducial.board_type", "hexboard", "board_type"),
    ],
)
def test_bad_parameters_fail_configure_with_the_value_named(ctx, param, value, message):
    overrides = [Parameter(param, value=value), Parameter("torch_threads", value=0)]
    node = PerceptionNode(context=ctx, parameter_overrides=overrides)
    try:
        assert message in node.startup_error, node.startup_error
        assert node._state_machine.current_state[0] == State.PRIMARY_STATE_UNCONFIGURED
    finally:
        node.destroy_node()


def test_out_of_range_parameter_is_refused_by_the_descriptor(ctx):
    with pytest.raises(ConfigError, match=r"pipeline.min_score.*\[0.0, 1.0\].*2.0"):
        PerceptionNode(
            context=ctx, parameter_overrides=[Parameter("pipeline.min_score", value=2.0)]
        )


def test_wrong_type_parameter_is_refused_naming_the_type(ctx):
    with pytest.raises(ConfigError, match=r"pipeline.min_score.*expected a float.*'high'"):
        PerceptionNode(
            context=ctx, parameter_overrides=[Parameter("pipeline.min_score", value="high")]
        )


def test_unknown_parameter_name_is_refused_with_the_closest_name(ctx):
    with pytest.raises(ConfigError, match=r"'pipeline.min_scor'.*did you mean "
                                          r"'pipeline.min_score'"):
        _node(ctx, **{"pipeline.min_scor": 0.9})


def test_rclpy_own_parameters_are_accepted_as_overrides(ctx):
    node = _node(ctx, use_sim_time=True)
    try:
        assert node.get_parameter("use_sim_time").value is True
    finally:
        node.destroy_node()


@pytest.mark.parametrize("name, value, reason", [
    ("sync.mode", "bogus", "sync.mode: expected one of"),
    ("pipeline.keypoint_source", "nets", "pipeline.keypoint_source: expected one of"),
    ("pipeline.fiducial.marker_size_m", 0.5, "smaller than its square"),
])
def test_runtime_change_to_an_invalid_value_is_refused_with_the_reason(ctx, name, value, reason):
    node = _node(ctx)
    try:
        before = node.get_parameter(name).value
        if name.startswith("pipeline.fiducial"):
            node.set_parameters([Parameter("pipeline.fiducial.board_type", value="charuco")])
        [result] = node.set_parameters([Parameter(name, value=value)])
        assert not result.successful and reason in result.reason, result.reason
        assert node.get_parameter(name).value == before
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    finally:
        node.destroy_node()


def test_runtime_change_to_a_valid_choice_is_accepted(ctx):
    node = _node(ctx)
    try:
        [result] = node.set_parameters([Parameter("sync.mode", value="exact")])
        assert result.successful, result.reason
        assert node.get_parameter("sync.mode").value == "exact"
    finally:
        node.destroy_node()


def test_process_frame_is_synchronous_and_keeps_the_header_compressed(ctx):
    node = _node(ctx, image_transport="compressed")
    try:
        node.trigger_configure()
        node.trigger_activate()
        rgb = np.full((48, 64, 3), 200, np.uint8)
        ok, png = cv2.imencode(".png", rgb)
        msg = CompressedImage(format="png")
        msg.header = Header(stamp=Time(sec=7, nanosec=9), frame_id="cam")
        msg.data = array.array("B", png.tobytes())
        out = node.process_frame(msg, _info())
        assert out.header.stamp == msg.header.stamp and out.header.frame_id == "cam"
        assert out.pose_array.header == out.header and out.result.poses == []
        assert out.depth_msg is None
        np.testing.assert_array_equal(out.image_rgb, rgb)
        assert node.handle_frame(msg, _info(), time.monotonic())
        assert node.stats.frames_processed == 1
        # a bad frame is counted, not raised
        assert not node.handle_frame(msg, _info(w=32), time.monotonic())
        assert node.diagnostics_values()["errors.size_mismatch"] == 1
        raw = rgb_to_image_msg(rgb, Header(frame_id="cam"))
        raw.encoding = "16UC1"  # a depth encoding, not a colour image
        assert not node.handle_frame(raw, _info(), time.monotonic())
        assert node.diagnostics_values()["errors.image"] == 1
    finally:
        node.destroy_node()


def test_qos_and_overlay_only_when_subscribed(ctx):
    from rclpy.qos import HistoryPolicy, ReliabilityPolicy
    from sensor_msgs.msg import Image

    for reliable in (False, True):
        node = _node(ctx, reliable_inputs=reliable)
        try:
            node.trigger_configure()
            node.trigger_activate()
            for sub in node._subs:
                want = ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT
                assert sub.qos_profile.reliability == want
            for pub in [*node._pubs.values(), *node._pose_pubs.values()]:
                assert pub.qos_profile.reliability == ReliabilityPolicy.RELIABLE
                assert pub.qos_profile.history == HistoryPolicy.KEEP_LAST
                assert pub.qos_profile.depth == 5
            if reliable:
                continue
            rgb = np.full((48, 64, 3), 90, np.uint8)
            msg = rgb_to_image_msg(rgb, Header(stamp=Time(sec=1), frame_id="cam"))
            got: list[Image] = []
            probe = rclpy.create_node("overlay_probe", context=ctx)
            try:
                out = node.process_frame(msg, _info())
                node.publish_outputs(out)  # nobody listens: no overlay drawn
                probe.create_subscription(Image, "/perception_node/overlay", got.append, 5)
                executor = rclpy.executors.SingleThreadedExecutor(context=ctx)
                executor.add_node(probe)
                deadline = time.monotonic() + 10.0
                while node._pubs["overlay"].get_subscription_count() == 0:
                    assert time.monotonic() < deadline, "overlay subscriber not discovered"
                    executor.spin_once(timeout_sec=0.05)
                assert not got
                node.publish_outputs(out)
                while not got and time.monotonic() < deadline:
                    executor.spin_once(timeout_sec=0.05)
                assert got and got[0].header.frame_id == "cam" and got[0].width == 64
                executor.shutdown()
            finally:
                probe.destroy_node()
        finally:
            node.destroy_node()


class PlaneDepth:
    """A `DepthSource` seeing a fronto-parallel plane at 2 m, unknown (NaN) in the top rows."""

    backend = "test:plane"

    def estimate(self, image_rgb: np.ndarray, K: np.ndarray) -> np.ndarray:
        depth = np.full(image_rgb.shape[:2], 2.0, np.float32)
        depth[:4] = np.nan
        return depth


def test_depth_outputs_with_a_plugged_depth_source(ctx):
    from sensor_msgs.msg import Image, PointCloud2

    from dvc_perception.pipeline.pipeline import Pipeline, make_keypoint_source

    def factory(config):
        return Pipeline(config, make_keypoint_source(config), PlaneDepth())

    node = PerceptionNode(
        context=ctx, pipeline_factory=factory,
        parameter_overrides=[Parameter("torch_threads", value=0), Parameter("points_decimation",
                                                                              value=8)],
    )
    probe = rclpy.create_node("depth_probe", context=ctx)
    try:
        depth_msgs: list[Image] = []
        infos: list[CameraInfo] = []
        clouds: list[PointCloud2] = []
        probe.create_subscription(Image, "/perception_node/depth/image_raw", depth_msgs.append, 5)
        probe.create_subscription(CameraInfo, "/perception_node/depth/camera_info", infos.append,
                                  5)
        probe.create_subscription(PointCloud2, "/perception_node/points", clouds.append, 5)
        executor = rclpy.executors.SingleThreadedExecutor(context=ctx)
        executor.add_node(probe)
        deadline = time.monotonic() + 10.0
        while node._pubs["points"].get_subscription_count() == 0 or (
            node._pubs["depth"].get_subscription_count() == 0
        ):
            assert time.monotonic() < deadline, "depth subscribers not discovered"
            executor.spin_once(timeout_sec=0.05)
        msg = rgb_to_image_msg(np.zeros((48, 64, 3), np.uint8),
                               Header(stamp=Time(sec=3, nanosec=4), frame_id="cam"))
        assert node.handle_frame(msg, _info(), time.monotonic())
        while not (depth_msgs and infos and clouds) and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        assert depth_msgs and infos and clouds
        published = {name for name, _ in node.get_topic_names_and_types()}
        # image_transport's pairing: <ns>/image_raw next to <ns>/camera_info; the old name is gone
        assert {"/perception_node/depth/image_raw",
                "/perception_node/depth/camera_info"} <= published
        assert "/perception_node/depth" not in published
        d = depth_msgs[0]
        assert d.encoding == "32FC1" and (d.width, d.height) == (64, 48)
        stamp = msg.header.stamp
        assert d.header.stamp == stamp == infos[0].header.stamp == clouds[0].header.stamp
        values = np.frombuffer(d.data, np.float32).reshape(48, 64)
        assert np.isnan(values[:4]).all() and np.all(values[4:] == 2.0)
        assert list(infos[0].k) == list(_info().k)
        pts = np.frombuffer(clouds[0].data, np.float32).reshape(-1, 3)
        assert len(pts) == 8 * 5  # 64/8 x 48/8 decimated pixels, minus the NaN first row
        assert np.allclose(pts[:, 2], 2.0)
        executor.shutdown()
    finally:
        probe.destroy_node()
        node.destroy_node()
