# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""`perception_node`: camera topics in; poses, detections, object frames, depth, diagnostics out.

A lifecycle node: *configure* reads the parameters and builds the `Pipeline`; *activate* creates
the subscriptions, the publishers and the worker thread; *deactivate* stops the worker (within 2 s)
and removes them. With ``autostart`` (default) it configures and activates itself at start-up.

Data flow: subscription callbacks only stamp, match (`StampMatcher`) and queue (`KeepLatestWorker`,
keep-latest, drops counted). The worker calls `handle_frame`, which is `process_frame` (message
conversion + pipeline, synchronous, raises on bad input) followed by `publish_outputs`. A bag
replay calls the same two methods without the thread. Bad frames are counted on /diagnostics and
warned about (throttled); the node keeps running.

Outputs per processed frame (all with the input image's header; with ``output_frame`` the poses,
detections, markers and object frames carry that frame_id, looked up on /tf + /tf_static at the
image stamp by `TransformBuffer`): ``~/detections``
(vision_msgs/Detection3DArray, every frame, empty when nothing is found), ``~/<object_id>/pose``
(the best-scoring instance of each object found; nothing for an object not found), ``~/poses``,
``~/markers``, object frames on ``/tf``. Where vision_msgs or tf2_msgs cannot be imported, the
outputs that need them are off (logged once, listed on /diagnostics as ``outputs_off``).

Depth from motion (``pipeline.depth_source: multiview``): camera poses arrive on
``pipeline.multiview.pose_topic`` (PoseStamped, kept in a `CameraPoseBuffer`) or from /tf
(``pose_type: tf``). The depth runs on a second worker thread so that it never holds up the
poses: each frame's poses are published as soon as they are found, and the frame goes on to the
depth thread when it is idle (else it gets no depth: ``depth.busy``); the depth thread looks up
the camera pose at the image stamp (waiting up to ``max_pose_gap_s`` for a late one), runs
`Pipeline.estimate_depth` and publishes ~/depth/image_raw, ~/depth/confidence (32FC1 in [0, 1],
NaN where the depth is), ~/depth/camera_info and ~/points.
A replay computes every frame's depth in `process_frame`, synchronously. Outcomes per frame
(``depth.ok``, ``depth.no_motion``, ``depth.no_pose``, ...) are counted on /diagnostics.

Parameters: ``live`` ones (thresholds, rates, ``publish_tf``, ``tf_prefix``; see
`config.live_parameter_names`) are validated against the whole configuration and applied to the
running node and pipeline by the set-parameters callback; the others are read at configure and
refused with a reason while the node is configured.
"""

from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseArray, PoseStamped, PoseWithCovarianceStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

from dvc_perception.config import (
    FiducialConfig,
    NodeConfig,
    PipelineConfig,
    check_params_file,
    flatten_dataclass,
    live_parameter_names,
)
from dvc_perception.errors import ConfigError, DvcError, InputError
from dvc_perception.geometry.camera import CameraModel
from dvc_perception.pipeline.multiview import (
    CameraPoseBuffer,
    MultiviewDepth,
    pose_from_xyz_quaternion,
)
from dvc_perception.pipeline.overlay import draw_overlay
from dvc_perception.pipeline.pipeline import FrameResult, Pipeline, check_frame
from dvc_perception.pipeline.pose import InitialPose
from dvc_perception.ros import convert
from dvc_perception.ros.convert import ObjectBox
from dvc_perception.ros.diagnostics import (
    FrameStats,
    build_diagnostics,
    model_file_value,
    source_engine_values,
)
from dvc_perception.ros.matcher import StampMatcher
from dvc_perception.ros.params import (
    declare_node_parameters,
    proposed_node_config,
    read_node_config,
)
from dvc_perception.ros.qos import input_qos, output_qos, tf_qos, tf_static_listener_qos
from dvc_perception.ros.tf_buffer import TransformBuffer
from dvc_perception.ros.worker import KeepLatestWorker

NODE_NAME = "perception_node"


@dataclass
class FrameOutputs:
    """Everything one frame publishes (built by `process_frame`, sent by `publish_outputs`).

    Attributes:
        header: the input image's header (stamp, frame_id), copied to every output (the pose
            outputs carry ``output_frame`` instead when it is set).
        result: the pipeline's result.
        image_rgb: (H, W, 3) uint8 input image (for ~/overlay).
        camera: the frame's camera model.
        camera_info: the matched camera_info message.
        pose_msgs: one PoseWithCovarianceStamped per detected object id (its best instance;
            ~/poses and the markers carry every instance).
        pose_array: all detected poses.
        markers: axis markers, namespace per object id.
        depth_msg: 32FC1 depth, None without depth.
        depth_info: camera_info of the depth, None without depth.
        confidence_msg: 32FC1 confidence of the multiview depth in [0, 1] (NaN where the depth
            is), the depth's header; None without depth or from another depth source.
        depth_note: why a multiview frame has no depth of its own ("" when it has, or with
            another depth source): the camera pose's problem, or no motion.
        timings: node-side durations [ms]: ``convert_ms`` (+ ``publish_ms`` once published).
        detections: vision_msgs/Detection3DArray of every pose (empty when none); None where
            vision_msgs cannot be imported.
        transforms: tf2_msgs/TFMessage of every pose; None when there is no pose, TF is off
            (``publish_tf``, no tf2_msgs) or the image has no frame_id.
    """

    header: Header
    result: FrameResult
    image_rgb: Any
    camera: CameraModel
    camera_info: CameraInfo
    pose_msgs: dict[str, PoseWithCovarianceStamped]
    pose_array: PoseArray
    markers: MarkerArray
    depth_msg: Image | None
    depth_info: CameraInfo | None
    timings: dict[str, float] = field(default_factory=dict)
    detections: Any = None
    transforms: Any = None
    depth_note: str = ""
    confidence_msg: Image | None = None


class PerceptionNode(LifecycleNode):
    """The perception lifecycle node.

    Args:
        node_name: the node's name.
        pipeline_factory: builds the pipeline from the parameters at configure; default
            `Pipeline.from_config`. The slot for keypoint / depth sources that `from_config`
            does not know (``Pipeline(config, my_source, my_depth)``).
        **node_kwargs: forwarded to `rclpy.lifecycle.LifecycleNode` (``context``,
            ``parameter_overrides``, ``namespace``, ...).

    Raises:
        ConfigError: an override names a parameter the node does not have (with the closest
            known name), or has the wrong type or an out-of-range value.
    """

    def __init__(
        self,
        node_name: str = NODE_NAME,
        pipeline_factory: Callable[[PipelineConfig], Pipeline] | None = None,
        **node_kwargs: Any,
    ) -> None:
        super().__init__(node_name, **node_kwargs)
        self._pipeline_factory = pipeline_factory or Pipeline.from_config
        self._worker: KeepLatestWorker[tuple[Any, CameraInfo, float]] | None = None
        #: ``depth_source: multiview``: the depth thread (frames while it is busy get none)
        self._depth_worker: KeepLatestWorker[FrameOutputs] | None = None
        try:
            declare_node_parameters(self)
        except ConfigError:
            self.destroy_node()
            raise
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.config: NodeConfig | None = None
        self.pipeline: Pipeline | None = None
        self.stats = FrameStats()
        self.startup_error: str = ""
        self.startup_unexpected = False  # the start-up error was not a typed DvcError
        self._matcher: StampMatcher[tuple[Any, float], CameraInfo] | None = None
        self._subs: list[Any] = []
        self._pubs: dict[str, Any] = {}
        self._pose_pubs: dict[str, Any] = {}
        self._timer: Any = None
        self._camera_cache: tuple[tuple[Any, ...], CameraModel] | None = None
        self._last_warn: dict[str, float] = {}
        self._problems_reported = 0
        self._tf_pub: Any = None
        self._boxes: dict[str, ObjectBox] = {}
        self._engine_values: dict[str, str] = {}
        #: /tf + /tf_static with `output_frame` or ``multiview.pose_type: tf`` (filled by
        #: subscriptions, or by a bag replay)
        self.tf_buffer: TransformBuffer | None = None
        #: ``multiview.pose_type: pose_stamped``: the camera poses (filled by the pose
        #: subscription, or by a bag replay)
        self.pose_buffer: CameraPoseBuffer | None = None
        self._extrinsic = np.eye(4)  # T_pose_camera of multiview.camera_extrinsic
        self.message_types, self.outputs_off = optional_output_types()
        for topic, reason in self.outputs_off.items():  # once per node: not a per-frame warning
            self.get_logger().warning(f"{topic} is off: {reason}")
        if self.get_parameter("autostart").value:
            self._autostart()

    # ------------------------------------------------------------------ lifecycle
    def _autostart(self) -> None:
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            self.startup_error = self.startup_error or "configure failed"
            return
        if self.trigger_activate() != TransitionCallbackReturn.SUCCESS:
            self.startup_error = self.startup_error or "activate failed"

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Read and validate the parameters, build the pipeline."""
        try:
            config = read_node_config(self)
            pipeline = self._pipeline_factory(config.pipeline)
            matcher: StampMatcher[tuple[Any, float], CameraInfo] = StampMatcher(
                config.sync.mode, config.sync.tolerance_s, config.sync.queue_size
            )
            boxes, notes = object_boxes(pipeline)
            notes += pipeline.refine_notes  # objects pipeline.refine leaves alone, and why
            engine_values = pipeline_engine_values(pipeline, config.pipeline)
            if config.output_frame and "tf" not in self.message_types:
                raise ConfigError(f"output_frame {config.output_frame!r} needs /tf and "
                                  f"/tf_static: {self.outputs_off['/tf']}")  # fmt: skip
            pose_from = _multiview_pose_from(config.pipeline)
            if pose_from == "tf" and "tf" not in self.message_types:
                raise ConfigError("pipeline.multiview.pose_type tf needs /tf and /tf_static: "
                                  f"{self.outputs_off['/tf']}")
            extrinsic = pose_from_xyz_quaternion(config.pipeline.multiview.camera_extrinsic)
        except DvcError as err:
            self.startup_error = f"configure: {err}"
            self.get_logger().error(self.startup_error)
            return TransitionCallbackReturn.FAILURE
        except Exception as err:  # noqa: BLE001 - not a typed error: log it with its cause
            self.startup_error = f"configure: unexpected {type(err).__name__}: {err}"
            self.startup_unexpected = True
            self.get_logger().error(f"{self.startup_error}\n{traceback.format_exc()}")
            return TransitionCallbackReturn.FAILURE
        self.config, self.pipeline, self._matcher = config, pipeline, matcher
        self._boxes, self._engine_values = boxes, engine_values
        self.tf_buffer = TransformBuffer() if config.output_frame or pose_from == "tf" else None
        self.pose_buffer = CameraPoseBuffer() if pose_from == "pose_stamped" else None
        self._extrinsic = extrinsic
        for note in notes:
            self.get_logger().info(note)
        if config.torch_threads > 0:
            import torch

            torch.set_num_threads(config.torch_threads)
        self.get_logger().info(
            f"configured: {pipeline.backend}; objects {list(pipeline.object_ids)}; "
            f"sync {config.sync.mode}; input {config.image_transport}"
        )
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Create publishers, subscriptions, the worker thread and the diagnostics timer."""
        if self.config is None or self.pipeline is None:
            return TransitionCallbackReturn.FAILURE
        cfg = self.config
        out = output_qos()
        self._pose_pubs = {
            oid: self.create_publisher(PoseWithCovarianceStamped, f"~/{oid}/pose", out)
            for oid in self.pipeline.object_ids
        }
        self._pubs = {
            "poses": self.create_publisher(PoseArray, "~/poses", out),
            "markers": self.create_publisher(MarkerArray, "~/markers", out),
            "overlay": self.create_publisher(Image, "~/overlay", out),
            "diagnostics": self.create_publisher(DiagnosticArray, "/diagnostics", out),
        }
        detection_type = self.message_types.get("detections")
        if detection_type is not None:
            self._pubs["detections"] = self.create_publisher(detection_type, "~/detections", out)
        tf_type = self.message_types.get("tf")
        if tf_type is not None:  # publish_tf is live: the publisher exists while active
            self._tf_pub = self.create_publisher(tf_type, "/tf", tf_qos())
        if self.pipeline.depth_source is not None:
            self._pubs["depth"] = self.create_publisher(Image, "~/depth/image_raw", out)
            self._pubs["depth_info"] = self.create_publisher(
                CameraInfo, "~/depth/camera_info", out
            )
            self._pubs["points"] = self.create_publisher(PointCloud2, "~/points", out)
        if isinstance(self.pipeline.depth_source, MultiviewDepth):
            self._pubs["depth_confidence"] = self.create_publisher(
                Image, "~/depth/confidence", out
            )
        self._worker = KeepLatestWorker(
            self._work, maxsize=cfg.worker_queue_size, on_error=self._on_worker_error
        )
        self._worker.start()
        qos = input_qos(cfg.reliable_inputs)
        overrides = QoSOverridingOptions.with_default_policies()
        if cfg.image_transport == "compressed":
            image_sub = self.create_subscription(
                CompressedImage, "image/compressed", self._on_image, qos,
                qos_overriding_options=overrides, event_callbacks=self._lost_events("image"),
            )
        else:
            image_sub = self.create_subscription(
                Image, "image", self._on_image, qos, qos_overriding_options=overrides,
                event_callbacks=self._lost_events("image"),
            )
        info_sub = self.create_subscription(
            CameraInfo, "camera_info", self._on_camera_info, qos,
            qos_overriding_options=overrides, event_callbacks=self._lost_events("camera_info"),
        )
        self._subs = [image_sub, info_sub]
        if self.pose_buffer is not None:
            self._subs.append(self.create_subscription(
                PoseStamped, cfg.pipeline.multiview.pose_topic, self._on_camera_pose, qos,
                qos_overriding_options=overrides,
                event_callbacks=self._lost_events("camera_pose"),
            ))  # fmt: skip
        if isinstance(self.pipeline.depth_source, MultiviewDepth):
            self._depth_worker = KeepLatestWorker(
                self.handle_depth, maxsize=1, on_error=self._on_worker_error,
                name="dvc-perception-depth",
            )  # fmt: skip
            self._depth_worker.start()
        if self.tf_buffer is not None and tf_type is not None:  # listen as tf2_ros does
            self._subs += [
                self.create_subscription(tf_type, "/tf", self._on_tf, tf_qos()),
                self.create_subscription(tf_type, "/tf_static", self._on_tf_static,
                                         tf_static_listener_qos()),
            ]
        self._timer = self.create_timer(cfg.diagnostics_period_s, self.publish_diagnostics)
        self.get_logger().info("active")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop the worker (within 2 s) and remove subscriptions, publishers and the timer."""
        self._teardown()
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Forget the pipeline (a new configure re-reads the parameters)."""
        self._teardown()
        self.config, self.pipeline, self._matcher = None, None, None
        self.tf_buffer = None
        self.pose_buffer = None
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop everything."""
        self._teardown()
        return TransitionCallbackReturn.SUCCESS

    def destroy_node(self) -> None:
        """Stop the worker threads, then destroy the node and its lifecycle state machine.

        rclpy's `LifecycleNode.destroy_node` leaves the state machine, which holds the node's
        handle, to the garbage collector: the node's DDS participant (its sockets and threads)
        then lives on until some later collection, in whichever thread runs it. Destroying it
        here ends the participant with the node.
        """
        self._stop_worker_or_warn()
        super().destroy_node()
        self._state_machine.destroy_when_not_in_use()

    def _stop_worker_or_warn(self) -> None:
        if not self.stop_worker(2.0):
            self.get_logger().warning("worker did not stop within 2 s (a frame is still running)")

    def stop_worker(self, timeout_s: float = 2.0) -> bool:
        """Stop the worker threads (frames, depth); True when they ended within `timeout_s`."""
        worker, self._worker = self._worker, None
        depth_worker, self._depth_worker = self._depth_worker, None
        deadline = time.monotonic() + timeout_s
        stopped = True if worker is None else worker.stop(timeout_s)
        if depth_worker is not None:
            stopped = depth_worker.stop(max(0.0, deadline - time.monotonic())) and stopped
        return stopped

    def _teardown(self) -> None:
        self._stop_worker_or_warn()
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs = []
        tf_pub, self._tf_pub = self._tf_pub, None
        for pub in [*self._pubs.values(), *self._pose_pubs.values(), tf_pub]:
            if pub is not None:
                self.destroy_publisher(pub)
        self._pubs, self._pose_pubs = {}, {}
        if self._timer is not None:
            self.destroy_timer(self._timer)
            self._timer = None
        if self._matcher is not None:
            self._matcher.reset()

    def _lost_events(self, topic: str) -> SubscriptionEventCallbacks:
        """Event callbacks counting messages the middleware lost before any callback saw them.

        The RMW's message-lost event (Fast DDS, Cyclone DDS) reports samples dropped from the
        reader's history (e.g. a depth-1 best-effort queue overrun while the node was busy);
        they appear on /diagnostics as ``dropped.middleware_lost.<topic>``. Where the RMW has no
        such event, rclpy leaves it unset and the counter stays 0 (``use_default_callbacks``
        keeps rclpy's incompatible-QoS warnings).
        """
        def lost(info: Any) -> None:
            self.stats.middleware_lost(topic, int(info.total_count_change))

        return SubscriptionEventCallbacks(message_lost=lost)

    # ------------------------------------------------------------------ callbacks
    def _on_image(self, msg: Image | CompressedImage) -> None:
        now = time.monotonic()
        self.stats.image_received(now)
        matcher = self._matcher
        if matcher is None:
            return
        problem = convert.frame_id_problem(msg.header)
        if problem is not None:  # outputs carry the image's frame_id: useless for TF when empty
            self._warn("frame_id", problem)
        before = _drop_total(matcher)
        pairs = matcher.add_image(convert.stamp_to_ns(msg.header.stamp), (msg, now))
        self._warn_on_sync_drops(matcher, before)
        self._submit(pairs)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        matcher = self._matcher
        if matcher is None:
            return
        before = _drop_total(matcher)
        pairs = matcher.add_camera_info(convert.stamp_to_ns(msg.header.stamp), msg)
        self._warn_on_sync_drops(matcher, before)
        self._submit(pairs)

    def _on_tf(self, msg: Any) -> None:
        self._add_transforms(msg, static=False)

    def _on_tf_static(self, msg: Any) -> None:
        self._add_transforms(msg, static=True)

    def _on_camera_pose(self, msg: PoseStamped) -> None:
        buffer = self.pose_buffer
        if buffer is None:
            return
        try:
            buffer.add(convert.stamp_to_ns(msg.header.stamp), convert.pose_msg_to_matrix(msg.pose))
        except DvcError as err:
            self.stats.camera_pose(False, str(err))
            self._warn("camera_pose", f"camera pose skipped: {err}")
            return
        self.stats.camera_pose(True)

    def _add_transforms(self, msg: Any, static: bool) -> None:
        buffer = self.tf_buffer
        if buffer is not None and buffer.add_message(msg, static=static):
            self._warn("tf_input", f"skipped transforms of {'/tf_static' if static else '/tf'} "
                       "with an empty or repeated frame name, or a non-finite or zero rotation "
                       "or translation")  # fmt: skip

    def _submit(self, pairs: list[tuple[tuple[Any, float], CameraInfo]]) -> None:
        worker = self._worker
        for (image_msg, received), info in pairs:
            if worker is not None:
                worker.submit((image_msg, info, received))

    def _warn_on_sync_drops(self, matcher: StampMatcher[Any, Any], before: int) -> None:
        if _drop_total(matcher) > before:
            c = matcher.counters
            self._warn(
                "sync",
                f"images dropped by camera_info matching ({matcher.mode}): no camera_info "
                f"{c.no_camera_info}, unmatched {c.unmatched_images}, out of order "
                f"{c.out_of_order}",
            )

    def _work(self, item: tuple[Any, CameraInfo, float]) -> None:
        image_msg, info, received = item
        self.handle_frame(image_msg, info, received)

    def _on_worker_error(self, err: BaseException) -> None:
        self.stats.error("pipeline", f"{type(err).__name__}: {err}")
        self._warn("worker", f"frame failed unexpectedly: {type(err).__name__}: {err}")

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Validate a parameter change against the whole configuration; apply live ones.

        Unconfigured: any valid value is accepted (configure reads it). Configured: a change
        of a parameter that is not live is refused with the reason; live ones are applied to
        the running node and pipeline before the change is accepted (the next frames obey).
        """
        try:
            proposed = proposed_node_config(self, params)
        except ConfigError as err:
            return SetParametersResult(successful=False, reason=str(err))
        config = self.config
        if config is None:
            return SetParametersResult(successful=True)
        running, wanted = flatten_dataclass(config), flatten_dataclass(proposed)
        changed = sorted(name for name in running if running[name] != wanted[name])
        live = set(live_parameter_names())
        fixed = [name for name in changed if name not in live]
        if fixed:
            return SetParametersResult(successful=False, reason=(
                f"{', '.join(fixed)}: read at configure, cannot change while the node is "
                "configured (deactivate and clean up the node, set it, configure again)"))
        try:
            self._apply_live(proposed, changed)
        except ConfigError as err:
            return SetParametersResult(successful=False, reason=str(err))
        if changed:
            self.get_logger().info(
                "applied: " + ", ".join(f"{name}={wanted[name]!r}" for name in changed))
        return SetParametersResult(successful=True)

    def _apply_live(self, config: NodeConfig, changed: list[str]) -> None:
        """Make the running node use `config` (only live fields differ from `self.config`).

        Raises:
            ConfigError: a change this node's keypoint source cannot take while running
                (checked before anything is changed).
        """
        pipeline = self.pipeline
        source_values = {"pipeline.network.min_objectness": config.pipeline.network.min_objectness,
                         "pipeline.network.min_detection_score":
                         config.pipeline.network.min_detection_score}
        source = pipeline.keypoint_source if pipeline is not None else None
        for name in source_values:
            attribute = name.rsplit(".", 1)[1]
            if name in changed and _writable(source, attribute) is False:
                raise ConfigError(
                    f"{name}: the running keypoint source ({type(source).__name__}) cannot "
                    "change it live; set it while the node is unconfigured"
                )
        if pipeline is not None:
            pipeline.config = config.pipeline  # min_score, pnp: read per frame by the pipeline
            for name, value in source_values.items():
                attribute = name.rsplit(".", 1)[1]
                if name in changed and _writable(source, attribute):
                    setattr(source, attribute, value)
        old, self.config = self.config, config
        matcher = self._matcher
        if matcher is not None and old is not None and old.sync != config.sync:
            fresh: StampMatcher[tuple[Any, float], CameraInfo] = StampMatcher(
                config.sync.mode, config.sync.tolerance_s, config.sync.queue_size
            )
            matcher.reset()  # images still waiting are counted as dropped
            fresh.counters = matcher.counters  # /diagnostics counters keep counting
            self._matcher = fresh
        if "diagnostics_period_s" in changed and self._timer is not None:
            self.destroy_timer(self._timer)
            self._timer = self.create_timer(config.diagnostics_period_s,
                                            self.publish_diagnostics)

    def _warn(self, kind: str, message: str) -> None:
        """A warning at most once per `warn_throttle_s` per kind."""
        period = self.config.warn_throttle_s if self.config is not None else 5.0
        now = time.monotonic()
        if now - self._last_warn.get(kind, -1e18) >= period:
            self._last_warn[kind] = now
            self.get_logger().warning(message)

    # ------------------------------------------------------------------ per frame
    def handle_frame(
        self, image_msg: Image | CompressedImage, info: CameraInfo, received: float
    ) -> bool:
        """Process and publish one matched frame; bad input is counted, warned about, skipped.

        Args:
            image_msg: the image.
            info: its camera_info.
            received: steady-clock time [s] the image arrived (for the latency statistics).

        Returns:
            True when published, False when the frame was rejected (counted on /diagnostics).
        """
        depth_worker = self._depth_worker  # multiview: the depth runs after, on its thread
        try:
            outputs = self.process_frame(image_msg, info, with_depth=depth_worker is None)
        except _FrameRejected as rejected:
            self.stats.error(rejected.kind, str(rejected.error))
            self._warn(rejected.kind, f"frame skipped ({rejected.kind}): {rejected.error}")
            return False
        self.publish_outputs(outputs)
        if depth_worker is not None and not depth_worker.submit_if_idle(outputs):
            self.stats.depth_busy()
        for track in outputs.result.lost:  # not published: no stale pose as current
            self.stats.track_lost()
            self._warn("tracking", f"track {track.track_id} of {track.object_id} lost: "
                       f"{track.reason}")
        now = time.monotonic()
        overhead = outputs.timings.get("convert_ms", 0.0) + outputs.timings.get("publish_ms", 0.0)
        self.stats.frame_done(received, now, overhead, len(outputs.result.poses))
        return True

    def handle_depth(self, outputs: FrameOutputs) -> bool:
        """The multiview depth of a frame whose poses are out (the depth thread's handler).

        Looks up the camera pose at the image stamp (waiting up to ``max_pose_gap_s`` for a
        late pose; ``tf_timeout_s`` with ``pose_type: tf``), runs `Pipeline.estimate_depth`,
        counts the outcome and publishes the depth outputs when there is depth.

        Returns:
            True when depth was published.
        """
        config, pipeline = self.config, self.pipeline
        if config is None or pipeline is None:
            return False
        mv = config.pipeline.multiview
        timeout = config.tf_timeout_s if mv.pose_type == "tf" else mv.max_pose_gap_s
        header = outputs.header
        camera_to_world, why = self.camera_pose_at(header, timeout)
        try:
            found = pipeline.estimate_depth(outputs.image_rgb, outputs.camera,
                                            convert.stamp_to_ns(header.stamp) * 1e-9,
                                            camera_to_world)  # fmt: skip
        except DvcError as err:
            self.stats.error("pipeline", f"depth: {err}")
            self._warn("depth", f"no depth for the frame: {err}")
            return False
        note = why or found.detail
        self.stats.depth_done(found.status, found.fallback, found.ms, note)
        if found.status in ("no_pose", "bad_pose"):  # no_motion: a robot standing still
            self._warn(f"depth_{found.status}", f"no depth from motion ({found.status}): {note}")
        if found.depth is None:
            return False
        confidence_msg = None
        if found.confidence is not None:
            confidence_msg = convert.depth_to_image_msg(found.confidence, header)
        self._publish_depth(found.depth, convert.depth_to_image_msg(found.depth, header),
                            convert.depth_camera_info(outputs.camera_info, header),
                            outputs.camera, header, confidence_msg)  # fmt: skip
        return True

    def camera_pose_at(self, header: Header, timeout_s: float) -> tuple[np.ndarray | None, str]:
        """The camera optical frame's pose (4, 4) in the world frame at the image stamp.

        ``pipeline.multiview``: the pose topic's or TF's pose times ``camera_extrinsic``; None
        and the reason when there is none.

        Args:
            header: the image's header (stamp; frame_id for ``pose_type: tf``).
            timeout_s: how long to wait for a pose after the stamp.
        """
        config = self.config
        if config is None:
            return None, "the node is not configured"
        mv = config.pipeline.multiview
        stamp_ns = convert.stamp_to_ns(header.stamp)
        try:
            if mv.pose_type == "tf":
                if self.tf_buffer is None or not header.frame_id.strip():
                    return None, ("the image's header.frame_id is empty: the camera cannot be "
                                  "looked up in TF")
                R, t = self.tf_buffer.lookup(mv.world_frame, header.frame_id, stamp_ns,
                                             timeout_s)  # fmt: skip
                T = np.eye(4)
                T[:3, :3], T[:3, 3] = R, t
            else:
                if self.pose_buffer is None:
                    return None, "no camera pose buffer (pose_type is not pose_stamped)"
                T = self.pose_buffer.lookup(stamp_ns, mv.max_pose_gap_s, timeout_s)
        except InputError as err:  # PoseUnavailable, TransformUnavailable: no pose, and why
            return None, str(err)
        return T @ self._extrinsic, ""

    def camera_model(self, info: CameraInfo) -> CameraModel:
        """The `CameraModel` of `info` (cached while camera_info does not change)."""
        if self.config is None:
            raise InputError("camera_model: the node is not configured")
        rectified = self.config.pipeline.input_rectified  # live: part of the key
        key = (
            tuple(info.k), tuple(info.d), tuple(info.p), info.width, info.height,
            info.distortion_model, info.binning_x, info.binning_y, info.roi.x_offset,
            info.roi.y_offset, info.roi.width, info.roi.height, rectified,
        )
        cached = self._camera_cache
        if cached is not None and cached[0] == key:
            return cached[1]
        camera = convert.camera_info_to_camera_model(info, rectified)
        self._camera_cache = (key, camera)
        return camera

    def process_frame(self, image_msg: Image | CompressedImage, info: CameraInfo,
                      tf_timeout_s: float | None = None,
                      initial_poses: Sequence[InitialPose] | None = None,
                      with_depth: bool = True) -> FrameOutputs:
        """Convert the messages, run the pipeline, build every output message (no publishing).

        Synchronous and thread-agnostic: the worker thread and a bag replay both call it.

        Args:
            image_msg: the image.
            info: its camera_info.
            tf_timeout_s: with ``output_frame``, how long to wait for /tf to reach the image
                stamp; None: the ``tf_timeout_s`` parameter (a replay, whose buffer already
                holds the whole bag, passes 0).
            initial_poses: poses (camera frame) to refine instead of detecting
                (`Pipeline.process`); a replay's ``--init gt-perturbed`` passes them.
            with_depth: False: no depth here (the live node's depth thread computes it);
                with ``depth_source: multiview`` the camera pose at the stamp is looked up
                (waiting `tf_timeout_s`; None: no wait for a pose) and passed on.

        Raises:
            _FrameRejected: (an `InputError` subclass) with the kind of bad input; kind
                ``output_frame`` when the camera's transform at the stamp is unknown.
        """
        config = self.config  # one snapshot per frame: live changes apply from the next frame
        if self.pipeline is None or config is None:
            raise _FrameRejected("pipeline", InputError("the node is not configured"))
        t0 = time.perf_counter()
        try:
            if isinstance(image_msg, CompressedImage):
                rgb = convert.compressed_msg_to_rgb(image_msg)
            else:
                rgb = convert.image_msg_to_rgb(image_msg)
        except DvcError as err:
            raise _FrameRejected("image", err) from err
        try:
            camera = self.camera_model(info)
        except DvcError as err:
            raise _FrameRejected("camera_info", err) from err
        try:
            check_frame(rgb, camera)
        except DvcError as err:  # name the ROI / binning rule when camera_info uses them
            rule = convert.camera_info_size_rule(info)
            error = InputError(f"{err}{rule}") if rule else err
            raise _FrameRejected("size_mismatch", error) from err
        header = Header(stamp=image_msg.header.stamp, frame_id=image_msg.header.frame_id)
        stamp = convert.stamp_to_ns(header.stamp) * 1e-9
        camera_to_world, depth_note = None, ""
        if with_depth and isinstance(self.pipeline.depth_source, MultiviewDepth):
            camera_to_world, depth_note = self.camera_pose_at(header, tf_timeout_s or 0.0)
        t1 = time.perf_counter()
        try:
            result = self.pipeline.process(rgb, camera, stamp, initial_poses,
                                           camera_to_world=camera_to_world,
                                           with_depth=with_depth)  # fmt: skip
        except DvcError as err:
            raise _FrameRejected("pipeline", err) from err
        t2 = time.perf_counter()
        poses, pose_header = result.poses, header
        if config.output_frame and config.output_frame != header.frame_id:
            timeout = config.tf_timeout_s if tf_timeout_s is None else tf_timeout_s
            try:
                R, t = self._camera_in_output_frame(header, config.output_frame, timeout)
            except DvcError as err:
                raise _FrameRejected("output_frame", err) from err
            poses = [convert.pose_in_frame(p, R, t) for p in poses]
            pose_header = Header(stamp=header.stamp, frame_id=config.output_frame)
        pose_msgs = {p.object_id: convert.object_pose_to_msg(p, pose_header)  # the best instance
                     for p in poses if p.instance == 0}
        pose_array = convert.poses_to_pose_array(poses, pose_header)
        markers = convert.poses_to_marker_array(poses, pose_header, config.marker_axis_length_m)
        detections = transforms = None
        if "detections" in self.message_types:
            detections = convert.poses_to_detection_array(poses, pose_header, self._boxes)
        if ("tf" in self.message_types and config.publish_tf and poses
                and pose_header.frame_id.strip()):
            transforms = convert.poses_to_tf_message(poses, pose_header, config.tf_prefix)
        depth_msg = depth_info = confidence_msg = None
        if result.depth is not None:
            depth_msg = convert.depth_to_image_msg(result.depth, header)
            depth_info = convert.depth_camera_info(info, header)
            if result.depth_confidence is not None:
                confidence_msg = convert.depth_to_image_msg(result.depth_confidence, header)
        t3 = time.perf_counter()
        timings = {"convert_ms": 1e3 * ((t1 - t0) + (t3 - t2)), "pipeline_ms": 1e3 * (t2 - t1)}
        if result.depth_status in ("ok", "carried", "none", "deferred", "first_frame"):
            depth_note = ""
        elif not depth_note:
            # MultiviewDepth already words every status (DEPTH_STATUS_NOTES when nothing finer)
            depth_note = result.depth_detail or result.depth_status
        return FrameOutputs(
            header, result, rgb, camera, info, pose_msgs, pose_array, markers, depth_msg,
            depth_info, timings, detections=detections, transforms=transforms,
            depth_note=depth_note, confidence_msg=confidence_msg,
        )

    def _camera_in_output_frame(self, header: Header, output_frame: str, timeout_s: float
                                ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """``T_output_camera`` at the image stamp (R (3, 3), t (3,) m).

        Raises:
            InputError: the image has no frame_id, or the transform is unknown at the stamp
                (`TransformUnavailable`, naming both frames).
        """
        buffer = self.tf_buffer
        if buffer is None:
            raise InputError("output_frame is set but the node has no TF buffer (not configured)")
        if not header.frame_id.strip():
            raise InputError(f"output_frame {output_frame!r}: the image's header.frame_id is "
                             "empty, so the camera cannot be placed in TF")  # fmt: skip
        return buffer.lookup(output_frame, header.frame_id, convert.stamp_to_ns(header.stamp),
                             timeout_s)  # fmt: skip

    def publish_outputs(self, outputs: FrameOutputs) -> None:
        """Publish a frame's outputs (overlay and points only when someone subscribes)."""
        t0 = time.perf_counter()
        pubs = self._pubs
        if not pubs:
            return
        for object_id, msg in outputs.pose_msgs.items():
            pub = self._pose_pubs.get(object_id)
            if pub is not None:
                pub.publish(msg)
        pubs["poses"].publish(outputs.pose_array)
        pubs["markers"].publish(outputs.markers)
        if outputs.detections is not None and "detections" in pubs:
            pubs["detections"].publish(outputs.detections)  # every frame, empty included
        tf_pub = self._tf_pub
        if outputs.transforms is not None and tf_pub is not None:
            tf_pub.publish(outputs.transforms)
        elif (tf_pub is not None and outputs.result.poses and self.config is not None
              and self.config.publish_tf and not outputs.header.frame_id.strip()):
            self._warn("tf", "object frames not sent on /tf: the image's header.frame_id is "
                       "empty (no parent frame); set the camera driver's frame_id")
        if outputs.depth_msg is not None and outputs.result.depth is not None:
            self._publish_depth(outputs.result.depth, outputs.depth_msg, outputs.depth_info,
                                outputs.camera, outputs.header,
                                outputs.confidence_msg)  # fmt: skip
        if pubs["overlay"].get_subscription_count() > 0 and self.config is not None:
            drawn = draw_overlay(
                outputs.image_rgb, outputs.result.poses, outputs.camera,
                self.config.marker_axis_length_m,
            )
            pubs["overlay"].publish(convert.rgb_to_image_msg(drawn, outputs.header))
        outputs.timings["publish_ms"] = 1e3 * (time.perf_counter() - t0)

    def _publish_depth(self, depth: np.ndarray, depth_msg: Image, depth_info: CameraInfo | None,
                       camera: CameraModel, header: Header,
                       confidence_msg: Image | None = None) -> None:  # fmt: skip
        """~/depth/image_raw, ~/depth/camera_info and (when subscribed) ~/points.

        With `confidence_msg` (multiview depth) also ~/depth/confidence, the depth's header.
        """
        pubs = self._pubs
        if "depth" not in pubs:
            return
        pubs["depth"].publish(depth_msg)
        if confidence_msg is not None and "depth_confidence" in pubs:
            pubs["depth_confidence"].publish(confidence_msg)
        pubs["depth_info"].publish(depth_info)
        if pubs["points"].get_subscription_count() > 0 and self.config is not None:
            K = camera.K.detach().cpu().numpy()
            pubs["points"].publish(convert.depth_to_point_cloud(
                depth, K, header, self.config.points_decimation))

    def diagnostics_values(self) -> dict[str, float | int | str]:
        """Everything /diagnostics reports, as a flat mapping."""
        values = self.stats.snapshot()
        if self._matcher is not None:
            c = self._matcher.counters
            values["dropped.no_camera_info"] = c.no_camera_info
            values["dropped.unmatched"] = c.unmatched_images
            values["dropped.out_of_order"] = c.out_of_order
            values["sync.resets"] = c.resets
        worker = self._worker
        values["dropped.worker"] = worker.dropped if worker is not None else 0
        values["backend"] = self.pipeline.backend if self.pipeline is not None else "none"
        tracker = getattr(self.pipeline, "tracker", None)  # None: no pipeline, no tracking
        values["tracking.active"] = len(tracker.tracks) if tracker is not None else 0
        if self.pipeline is not None and isinstance(self.pipeline.depth_source, MultiviewDepth):
            values.update(self.stats.depth_snapshot())
        values.update(self._engine_values)
        values["outputs_off"] = "; ".join(
            f"{topic} ({reason})" for topic, reason in self.outputs_off.items()) or "none"
        return values

    def publish_diagnostics(self) -> None:
        """Publish /diagnostics (timer callback)."""
        pub = self._pubs.get("diagnostics")
        if pub is None:
            return
        values = self.diagnostics_values()
        problems = sum(
            int(v) for k, v in values.items()
            if k.startswith(("errors.", "dropped.no_camera_info", "dropped.out_of_order"))
        )
        new_problems = problems - self._problems_reported
        self._problems_reported = problems
        message = f"{new_problems} frames rejected in the last period" if new_problems else "ok"
        if new_problems and values.get("last_error"):
            message += f"; last: {values['last_error']}"
        pub.publish(
            build_diagnostics(
                f"{self.get_name()}: pipeline", str(values["backend"]), values,
                self.get_clock().now().to_msg(), new_problems > 0, message,
            )
        )


class _FrameRejected(InputError):
    """A frame is unusable; `kind` says which stage rejected it (for the diagnostics)."""

    def __init__(self, kind: str, error: BaseException) -> None:
        super().__init__(f"{kind}: {error}")
        self.kind = kind
        self.error = error


def _writable(obj: Any, attribute: str) -> bool | None:
    """Whether `obj.attribute` can be assigned (None: `obj` has no such attribute).

    False for a property without a setter.
    """
    if obj is None or not hasattr(obj, attribute):
        return None
    prop = getattr(type(obj), attribute, None)
    return not (isinstance(prop, property) and prop.fset is None)


def optional_output_types() -> tuple[dict[str, type], dict[str, str]]:
    """Message types of the outputs whose packages a robot may lack, and why any is off.

    Returns:
        (``{"detections": Detection3DArray, "tf": TFMessage}`` for the importable ones,
        ``{topic: reason}`` for the others).
    """
    types: dict[str, type] = {}
    off: dict[str, str] = {}
    try:
        from vision_msgs.msg import Detection3DArray

        types["detections"] = Detection3DArray
    except ImportError as err:
        off["~/detections"] = (f"vision_msgs cannot be imported ({err}); install "
                               "ros-$ROS_DISTRO-vision-msgs")
    try:
        from tf2_msgs.msg import TFMessage

        types["tf"] = TFMessage
    except ImportError as err:
        off["/tf"] = f"tf2_msgs cannot be imported ({err}); install ros-$ROS_DISTRO-tf2-msgs"
    return types, off


def board_box(config: FiducialConfig) -> ObjectBox:
    """The printed pattern of a calibration board as a box in the board frame (z = 0).

    Chessboard: origin at the first inner corner, one square beyond the inner corners on every
    side; ChArUco: origin at a pattern corner, ``cols x rows`` squares; ArUco grid: origin at
    a pattern corner, markers and the gaps between them (`demo.boards` renders the same).
    """
    sq, m, gap = config.square_size_m, config.marker_size_m, config.marker_separation_m
    if config.board_type == "chessboard":
        lo, hi = (-sq, -sq), (config.cols * sq, config.rows * sq)
    elif config.board_type == "charuco":
        lo, hi = (0.0, 0.0), (config.cols * sq, config.rows * sq)
    else:
        lo, hi = (0.0, 0.0), (config.cols * m + (config.cols - 1) * gap,
                              config.rows * m + (config.rows - 1) * gap)
    corners = np.array([[lo[0], lo[1], 0.0], [hi[0], hi[1], 0.0]])
    return ObjectBox.from_points(corners, f"{config.board_type} layout")


def object_boxes(pipeline: Pipeline) -> tuple[dict[str, ObjectBox], list[str]]:
    """The bounding box of every object the pipeline reports (for ``~/detections``).

    Per object id, the first that exists: the board layout (fiducial source); the mesh of the
    shipped object description ``config/objects/<id>.yaml`` (its vertices' box); the model's
    3D keypoints (network sources; smaller than the object: keypoints lie on its surface); a
    zero-size box at the object origin.

    Returns:
        (boxes by object id, one log line per object whose box is not from a mesh or board).
    """
    from dvc_perception.pipeline.fiducial import FiducialSource
    from dvc_perception.render.objects import find_object_yaml, load_object

    source = pipeline.keypoint_source
    boxes: dict[str, ObjectBox] = {}
    notes: list[str] = []
    for object_id in pipeline.object_ids:
        if isinstance(source, FiducialSource):
            boxes[object_id] = board_box(source.config)
            continue
        try:
            description = load_object(find_object_yaml(object_id))
            vertices = description.mesh.vertices.detach().cpu().double().numpy()
            boxes[object_id] = ObjectBox.from_points(vertices, str(description.mesh_path))
            continue
        except DvcError as err:
            why = " ".join(str(err).split())
        points = getattr(source, "points_obj", {}).get(object_id)
        if points is not None:
            boxes[object_id] = ObjectBox.from_points(points, "3D keypoints")
            notes.append(f"~/detections: bbox of {object_id!r} from its 3D keypoints (no "
                         f"object mesh: {why})")
        else:
            boxes[object_id] = ObjectBox(np.zeros(3), np.zeros(3), "unknown")
            notes.append(f"~/detections: bbox of {object_id!r} has size 0 (no object mesh: "
                         f"{why}; the source gives no 3D keypoints)")
    return boxes, notes


def pipeline_engine_values(pipeline: Pipeline, config: PipelineConfig) -> dict[str, str]:
    """/diagnostics entries of what runs: engines (backend, device, precision) and models.

    ``keypoints.*`` and ``depth.*`` come from the engine objects (``auto`` shows the backend it
    resolved to); ``model.*`` name each model file in use with a short sha256; ``pnp`` is the
    pose solver's (float64 on the CPU, whatever the network runs on).
    """
    values = source_engine_values("keypoints", pipeline.keypoint_source)
    if pipeline.depth_source is not None:
        values.update(source_engine_values("depth", pipeline.depth_source))
    net = config.network
    if config.keypoint_source == "network":
        values["model.keypoints"] = model_file_value(net.model_path)
        if net.detector_model_path:
            values["model.detector"] = model_file_value(net.detector_model_path)
            if net.verifier_model_path:
                values["model.verifier"] = model_file_value(net.verifier_model_path)
    depth_network = config.depth_source == "network" or (
        config.depth_source == "multiview" and config.multiview.fallback == "network")
    if depth_network and pipeline.depth_source is not None:
        values["model.depth"] = model_file_value(net.depth_model_path)
    values["pnp"] = "float64 on cpu"
    values["precision"] = "; ".join(
        f"{role} {values[role + '.precision']}" for role in ("keypoints", "depth")
        if role + ".precision" in values) + "; pnp float64"
    return values


def _multiview_pose_from(config: PipelineConfig) -> str:
    """Where multiview depth takes camera poses from: ``pose_stamped``, ``tf``, or "" (none)."""
    return config.multiview.pose_type if config.depth_source == "multiview" else ""


def _drop_total(matcher: StampMatcher[Any, Any]) -> int:
    c = matcher.counters
    return c.no_camera_info + c.unmatched_images + c.out_of_order


def check_ros_arguments(args: list[str]) -> None:
    """Check the params files named in `args` before rclpy parses them.

    rclpy raises a raw RCLError on a params file that is absent or not YAML, and ignores a
    file without a section for this node; both become a `ConfigError` naming the file.
    Unknown parameter names are refused when the node declares its parameters.

    Raises:
        ConfigError: naming the file and what is wrong with it.
    """
    node_name = NODE_NAME
    ros = False
    files: list[str] = []
    for i, arg in enumerate(args):
        if arg == "--ros-args":
            ros = True
        elif arg == "--" and ros:
            ros = False
        elif ros and arg in ("--params-file",):
            if i + 1 >= len(args):
                raise ConfigError("--params-file: expected a file name after it")
            files.append(args[i + 1])
        elif ros and arg.startswith(("__node:=", "__name:=")):
            node_name = arg.split(":=", 1)[1]
        elif ros and i > 0 and args[i - 1] in ("-r", "--remap") and ":=" in arg:
            key, value = arg.split(":=", 1)
            if key.rsplit(":", 1)[-1] in ("__node", "__name"):
                node_name = value
    for path in files:
        check_params_file(path, node_name)


def _init_ros(args: list[str]) -> None:
    """`rclpy.init` with the arguments checked first; RCL argument errors become typed."""
    import rclpy
    from rclpy.exceptions import InvalidNodeNameException

    check_ros_arguments(args)
    try:
        rclpy.init(args=args)
    except (RuntimeError, InvalidNodeNameException) as err:  # _rclpy.RCLError: bad arguments
        raise ConfigError(f"ROS arguments refused: {' '.join(str(err).split())}") from err


def main(args: list[str] | None = None) -> int:
    """Run the node until SIGINT / shutdown; Humble, Jazzy and Kilted compatible.

    Returns:
        0 on a clean stop; 2 when the arguments, parameters or model files are invalid (one
        line on stderr, or the node's fatal log line, naming the file or parameter); 1 when
        start-up failed unexpectedly (logged with the cause and traceback).
    """
    try:
        return run_node(list(args if args is not None else sys.argv))
    except DvcError as err:
        print(f"perception_node: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2


def run_node(args: list[str]) -> int:
    """`main` without the error printing: raises `ConfigError` on bad arguments/parameters."""
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    _init_ros(args)
    node = None
    rc = 0
    try:
        node = PerceptionNode()
        if node.startup_error:
            node.get_logger().fatal(f"start-up failed: {node.startup_error}")
            rc = 1 if node.startup_unexpected else 2
        else:
            executor = SingleThreadedExecutor()
            executor.add_node(node)
            executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.stop_worker(2.0)
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return rc


if __name__ == "__main__":
    sys.exit(main())
