# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Convert a BOP-format scene (Hodan et al., BOP benchmark) into a rosbag2.

The bag holds what a camera driver and a ground-truth recorder would have written:
``/camera/image_raw`` (rgb8), ``/camera/camera_info``, ``/ground_truth/poses`` (PoseArray) and one
``/ground_truth/<object_id>/pose`` (PoseStamped) per annotated object. BOP stores no time stamps,
so frames are stamped at `rate_hz` in image-id order. BOP units (mm) become metres.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np

from dvc_perception.bag.io import AtomicBagWriter
from dvc_perception.datasets.bop import (
    bop_frame_stamp_ns,
    bop_object_id,
    bop_object_ids,
    read_bop_scene,
)
from dvc_perception.errors import BagError
from dvc_perception.synth.synth_bag import (
    CAMERA_INFO_TOPIC,
    IMAGE_TOPIC,
    POSES_TOPIC,
    object_pose_topic,
)


def bop_scene_to_bag(
    dataset_dir: str | Path,
    scene: str,
    out: str | Path,
    *,
    storage: str = "mcap",
    rate_hz: float = 10.0,
    frame_id: str = "camera_optical_frame",
    dataset_name: str | None = None,
    object_ids: Mapping[int, str] | None = None,
    overwrite: bool = False,
) -> int:
    """Write the bag; returns the number of frames written.

    Args:
        dataset_dir: BOP dataset root (holds models/ and the split folders).
        scene: scene folder relative to `dataset_dir`, e.g. ``test/000002``.
        out: output bag directory (written atomically).
        storage: ``mcap`` or ``sqlite3``.
        rate_hz: stamping rate; frame k is stamped at ``1 s + k / rate_hz``.
        frame_id: camera optical frame of every header.
        dataset_name: prefix of object ids (``<dataset_name>_obj_XX``) for every object; by
            default objects with a shipped description keep its id (`bop_object_ids`: matched
            by mesh checksum) and the others are prefixed with the dataset folder's name.
        object_ids: BOP obj_id -> object id, when the caller has `bop_object_ids` already.
        overwrite: replace an existing bag at `out` (only once the new one is complete).
    """
    from builtin_interfaces.msg import Time
    from geometry_msgs.msg import PoseArray, PoseStamped
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from dvc_perception.ros.convert import intrinsics_to_camera_info_msg, pose_to_msg

    if rate_hz <= 0:
        raise BagError(f"rate_hz must be > 0, got {rate_hz}")
    frames = read_bop_scene(dataset_dir, scene)
    name = dataset_name or Path(dataset_dir).resolve().name
    ids: Mapping[int, str] = {}
    if object_ids is not None:
        ids = object_ids
    elif dataset_name is None and any((Path(dataset_dir) / "models").glob("obj_*.ply")):
        ids = bop_object_ids(dataset_dir)
    with AtomicBagWriter(out, storage, overwrite=overwrite) as writer:
        for k, frame in enumerate(frames):
            stamp_ns = bop_frame_stamp_ns(k, rate_hz)
            header = Header(
                stamp=Time(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9), frame_id=frame_id
            )
            bgr = cv2.imread(str(frame.rgb_path), cv2.IMREAD_COLOR)
            if bgr is None:
                raise BagError(f"cannot decode image {frame.rgb_path}")
            rgb = np.ascontiguousarray(bgr[:, :, ::-1])
            height, width = rgb.shape[:2]
            image = Image(
                header=header, height=height, width=width, encoding="rgb8",
                is_bigendian=0, step=3 * width, data=rgb.tobytes(),
            )  # fmt: skip
            info = intrinsics_to_camera_info_msg(frame.K, width, height, header)
            writer.write_message(IMAGE_TOPIC, image, stamp_ns)
            writer.write_message(CAMERA_INFO_TOPIC, info, stamp_ns)
            array = PoseArray(header=header)
            for obj_id, R, t in frame.poses:
                pose = pose_to_msg(R, t)
                array.poses.append(pose)
                writer.write_message(
                    object_pose_topic(ids.get(obj_id) or bop_object_id(name, obj_id)),
                    PoseStamped(header=header, pose=pose),
                    stamp_ns,
                )
            writer.write_message(POSES_TOPIC, array, stamp_ns)
    return len(frames)
