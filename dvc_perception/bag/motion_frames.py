# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""A bag's camera frames with their camera poses, read as `replay` reads them for multiview.

`read_motion_frames(bag, config)` picks the topics as `bag.replay` does (`choose_image_topic`,
`detect_camera_topics`, `choose_pose_topic`), pairs each image with its camera_info by the
node's ``sync`` mode (`read_camera_infos`), reads every camera pose first
(`read_camera_poses`) and looks each image's pose up at its stamp within
``pipeline.multiview.max_pose_gap_s``, times ``camera_extrinsic``, as the node does
(`PerceptionNode.camera_pose_at`). The intrinsics are the node's camera model's
(`camera_info_to_camera_model` with ``pipeline.input_rectified``). No node is started.
`node_config` builds the node's configuration from a params file and overrides without rclpy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dvc_perception.errors import BagError, ConfigError, DvcError


@dataclass(frozen=True)
class MotionFrame:
    """One image of the bag with what multiview depth needs.

    Attributes:
        stamp_ns: the image's header stamp [ns].
        rgb: (H, W, 3) uint8.
        K: (3, 3) float64 pinhole intrinsics of the image [px].
        camera_to_world: (4, 4) float64 camera optical frame in the world frame [m]; None: no
            pose at this stamp (`note` says why).
        note: why there is no pose ("" when there is).
    """

    stamp_ns: int
    rgb: np.ndarray
    K: np.ndarray
    camera_to_world: np.ndarray | None
    note: str = ""


@dataclass(frozen=True)
class MotionTopics:
    """The topics `read_motion_frames` chose, and how many images the image topic has."""

    image: str
    camera_info: str
    pose: str
    images: int


def node_config(params_file: str | Path | None = None,
                parameters: Mapping[str, Any] | None = None) -> Any:
    """The node's `NodeConfig` from its params file (default: the shipped one) and overrides.

    Raises:
        ConfigError: a bad file, an unknown parameter name or an invalid value.
    """
    from dvc_perception.config import (
        NodeConfig,
        check_parameter_names,
        check_params_file,
        unflatten,
    )
    from dvc_perception.resources import find_share_file

    path = Path(params_file or find_share_file("config/perception.yaml"))
    values = check_params_file(path)
    check_parameter_names(dict(parameters or {}), source="--param")
    return NodeConfig.from_mapping(unflatten({**values, **dict(parameters or {})}))


def motion_topics(bag: str | Path, config: Any, image_topic: str = "",
                  camera_info_topic: str = "", pose_topic: str = "") -> MotionTopics:
    """The image, camera_info and camera pose topics of `bag` (`bag.replay`'s choice).

    Raises:
        BagError: no camera image topic, camera_info topic or PoseStamped camera pose topic
            (each message names what is expected), or an unreadable bag.
        ConfigError: ``pipeline.multiview.pose_type`` is not ``pose_stamped``.
    """
    from dvc_perception.bag.io import BagReader
    from dvc_perception.bag.replay import (
        choose_image_topic,
        choose_pose_topic,
        detect_camera_topics,
    )

    mv = config.pipeline.multiview
    if mv.pose_type != "pose_stamped":
        raise ConfigError(f"pipeline.multiview.pose_type {mv.pose_type!r}: reading camera poses "
                          "from a bag needs pose_stamped (a geometry_msgs/PoseStamped topic)")
    with BagReader(bag) as reader:
        topics = reader.topics()
        image_topic, _ = choose_image_topic(topics, image_topic)
        image_topic, camera_info_topic = detect_camera_topics(topics, image_topic,
                                                              camera_info_topic)
        pose = choose_pose_topic(topics, image_topic, mv.pose_topic, pose_topic)
        return MotionTopics(image_topic, camera_info_topic, pose, topics[image_topic].count)


def read_motion_frames(bag: str | Path, config: Any, topics: MotionTopics,
                       log: Callable[[str], None] | None = None) -> Iterator[MotionFrame]:
    """Every image of ``topics.image`` in bag order with its intrinsics and camera pose.

    Args:
        bag: rosbag2 directory or file.
        config: the node's `NodeConfig` (`node_config`).
        topics: from `motion_topics`.
        log: called with one-line notes (poses read, skipped messages).

    Raises:
        BagError: unreadable bag, an image without a matching camera_info (naming the sync
            mode), a message that does not deserialize; `InputError` for a bad camera_info.
    """
    from sensor_msgs.msg import CompressedImage, Image

    from dvc_perception.bag.io import BagReader, deserialize
    from dvc_perception.bag.replay import (
        COMPRESSED_IMAGE_TYPE,
        ReplaySummary,
        read_camera_infos,
        read_camera_poses,
    )
    from dvc_perception.pipeline.multiview import pose_from_xyz_quaternion
    from dvc_perception.ros import convert

    mv = config.pipeline.multiview
    extrinsic = pose_from_xyz_quaternion(mv.camera_extrinsic)
    summary = ReplaySummary(str(bag), "", topics.image, topics.camera_info)
    with BagReader(bag) as reader:
        compressed = reader.topics()[topics.image].msgtype == COMPRESSED_IMAGE_TYPE
        index = read_camera_infos(reader, topics.camera_info, config.sync, summary, log)
        poses = read_camera_poses(reader, mv, topics.image, topics.pose, summary, log)
        for k, m in enumerate(reader.messages([topics.image])):
            msg = deserialize(m, CompressedImage if compressed else Image, k, bag)
            stamp_ns = convert.stamp_to_ns(msg.header.stamp)
            info = index.find(stamp_ns, m.timestamp_ns)
            if info is None:
                raise BagError(f"bag {bag}: no camera_info on {topics.camera_info} matches the "
                               f"image at {stamp_ns} ns (sync.mode {config.sync.mode})")
            rgb = (convert.compressed_msg_to_rgb(msg) if compressed
                   else convert.image_msg_to_rgb(msg))
            camera = convert.camera_info_to_camera_model(info, config.pipeline.input_rectified)
            K = camera.K.detach().cpu().numpy().astype(np.float64)
            try:
                T = poses.lookup(stamp_ns, mv.max_pose_gap_s) @ extrinsic
            except DvcError as err:  # PoseUnavailable
                yield MotionFrame(stamp_ns, rgb, K, None, str(err))
                continue
            yield MotionFrame(stamp_ns, rgb, K, T)
