# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Write synthetic frames to a rosbag2 (mcap or sqlite3) with the `rosbags` library (no rclpy).

Topics (all stamped ``start_ns + i * 1e9 / fps`` with ``frame_id`` = `frame_id`):

- ``/camera/image_raw`` sensor_msgs/Image ``rgb8``
- ``/camera/camera_info`` sensor_msgs/CameraInfo (``plumb_bob``, zero distortion, P = [K | 0])
- ``/camera/depth/ground_truth`` sensor_msgs/Image ``32FC1`` metres, NaN = nothing (REP 118)
- ``/ground_truth/poses`` geometry_msgs/PoseArray: the frame's object instances in
  `SynthFrame.object_ids` order (sorted ids; every copy of an object, copies adjacent)
- ``/ground_truth/<object_id>/pose`` geometry_msgs/PoseStamped, for frames where the object is
  present (every frame of a sequence): one message per instance, all with the frame's stamp, in
  instance order (as `bag.bop` writes BOP's multi-instance scenes). A reader keyed by (topic,
  stamp), like `bag.evaluate`, keeps only one of several copies; the PoseArray carries them all.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from dvc_perception.errors import BagError, ConfigError
from dvc_perception.geometry.so3 import matrix_to_quaternion
from dvc_perception.synth.scenes import SceneSampler, SynthFrame

# The topics of a bag with ground truth (written here, by `bag.bop` and by the demo's samples).
IMAGE_TOPIC = "/camera/image_raw"
CAMERA_INFO_TOPIC = "/camera/camera_info"
DEPTH_TOPIC = "/camera/depth/ground_truth"
#: The camera optical frame in the world frame (PoseStamped, header.frame_id = the world frame),
#: as odometry or a SLAM system gives it; written by `bag.rgbd` (`rgbd2bag`). Not under
#: GROUND_TRUTH_PREFIX: it is an input of multi-view depth, not an object to score.
CAMERA_POSE_TOPIC = "/camera/pose"
GROUND_TRUTH_PREFIX = "/ground_truth/"
POSES_TOPIC = GROUND_TRUTH_PREFIX + "poses"


def object_pose_topic(object_id: str) -> str:
    """``/ground_truth/<object_id>/pose``."""
    return f"{GROUND_TRUTH_PREFIX}{object_id}/pose"


def write_bag(
    sampler: SceneSampler,
    path: str | Path,
    num_frames: int,
    *,
    fps: float = 10.0,
    storage: str = "mcap",
    frame_id: str = "camera_optical_frame",
    start_ns: int = 1_700_000_000_000_000_000,
    progress: bool = True,
) -> Path:
    """Render frames ``0 .. num_frames - 1`` of `sampler` into a new rosbag2 at `path`.

    Args:
        sampler: the scene sampler (use ``SynthConfig(sequence=True)`` for camera motion).
        path: bag directory to create (must not exist).
        num_frames: number of frames.
        fps: frame rate of the stamps [Hz].
        storage: "mcap" or "sqlite3".
        frame_id: camera optical frame id of every header.
        start_ns: stamp of frame 0 [ns since the epoch].
        progress: show a tqdm progress bar.

    Returns:
        The bag directory.

    Raises:
        ConfigError: bad fps / storage / frame count.
        BagError: the bag exists or cannot be written.
    """
    return write_frames_to_bag(
        (sampler.sample(i) for i in range(num_frames)),
        path,
        num_frames=num_frames,
        object_ids=[o.object_id for o in sampler.objects],
        fps=fps,
        storage=storage,
        frame_id=frame_id,
        start_ns=start_ns,
        progress=progress,
    )


def write_frames_to_bag(
    frames: object,
    path: str | Path,
    *,
    num_frames: int,
    object_ids: Sequence[str],
    fps: float = 10.0,
    storage: str = "mcap",
    frame_id: str = "camera_optical_frame",
    start_ns: int = 1_700_000_000_000_000_000,
    progress: bool = True,
) -> Path:
    """Write an iterable of `SynthFrame` (e.g. a `ShardReader`) as in `write_bag`."""
    from rosbags.rosbag2 import StoragePlugin, Writer, WriterError
    from rosbags.typesys import Stores, get_typestore
    from tqdm import tqdm

    if fps <= 0 or num_frames < 1:
        raise ConfigError(f"bag: fps must be > 0 and num_frames >= 1, got {fps}, {num_frames}")
    plugins = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
    if storage not in plugins:
        raise ConfigError(f"bag storage must be one of {sorted(plugins)}, got {storage!r}")
    path = Path(path)
    if path.exists():
        raise BagError(f"bag output already exists: {path}")
    ts = get_typestore(Stores.ROS2_KILTED)
    msgs = _MessageFactory(ts, frame_id)
    try:
        with Writer(path, version=9, storage_plugin=plugins[storage]) as writer:
            conn = {
                IMAGE_TOPIC: writer.add_connection(
                    IMAGE_TOPIC, "sensor_msgs/msg/Image", typestore=ts
                ),
                CAMERA_INFO_TOPIC: writer.add_connection(
                    CAMERA_INFO_TOPIC, "sensor_msgs/msg/CameraInfo", typestore=ts
                ),
                DEPTH_TOPIC: writer.add_connection(
                    DEPTH_TOPIC, "sensor_msgs/msg/Image", typestore=ts
                ),
                POSES_TOPIC: writer.add_connection(
                    POSES_TOPIC, "geometry_msgs/msg/PoseArray", typestore=ts
                ),
            }
            for oid in object_ids:
                topic = object_pose_topic(oid)
                conn[topic] = writer.add_connection(
                    topic, "geometry_msgs/msg/PoseStamped", typestore=ts
                )
            it = tqdm(frames, total=num_frames, desc="bag", unit="frame", disable=not progress)
            for i, frame in enumerate(it):
                if i >= num_frames:
                    break
                stamp = start_ns + round(i * 1e9 / fps)
                for topic, typename, msg in msgs.frame_messages(frame, stamp):
                    if topic not in conn:
                        raise BagError(f"frame {frame.index} has an unknown object topic {topic}")
                    writer.write(conn[topic], stamp, ts.serialize_cdr(msg, typename))
    except WriterError as err:
        raise BagError(f"cannot write bag {path}: {err}") from err
    return path


class _MessageFactory:
    """Builds rosbags message objects for one `SynthFrame`."""

    def __init__(self, typestore: object, frame_id: str) -> None:
        t = typestore.types  # type: ignore[attr-defined]
        self.t = t
        self.frame_id = frame_id

    def header(self, stamp_ns: int) -> object:
        t = self.t
        stamp = t["builtin_interfaces/msg/Time"](
            sec=int(stamp_ns // 1_000_000_000), nanosec=int(stamp_ns % 1_000_000_000)
        )
        return t["std_msgs/msg/Header"](stamp=stamp, frame_id=self.frame_id)

    def pose(self, R: np.ndarray, t_vec: np.ndarray) -> object:
        t = self.t
        q = matrix_to_quaternion(torch.as_tensor(R, dtype=torch.float64)).numpy()  # x, y, z, w
        return t["geometry_msgs/msg/Pose"](
            position=t["geometry_msgs/msg/Point"](
                x=float(t_vec[0]), y=float(t_vec[1]), z=float(t_vec[2])
            ),
            orientation=t["geometry_msgs/msg/Quaternion"](
                x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3])
            ),
        )

    def frame_messages(self, frame: SynthFrame, stamp_ns: int) -> list[tuple[str, str, object]]:
        t = self.t
        h, w = frame.depth.shape
        header = self.header(stamp_ns)
        image = t["sensor_msgs/msg/Image"](
            header=header, height=h, width=w, encoding="rgb8", is_bigendian=0, step=3 * w,
            data=np.ascontiguousarray(frame.rgb, dtype=np.uint8).reshape(-1),
        )  # fmt: skip
        depth = t["sensor_msgs/msg/Image"](
            header=header, height=h, width=w, encoding="32FC1", is_bigendian=0, step=4 * w,
            data=np.ascontiguousarray(frame.depth, dtype="<f4").view(np.uint8).reshape(-1),
        )  # fmt: skip
        K = np.asarray(frame.K, dtype=np.float64)
        P = np.concatenate([K, np.zeros((3, 1))], axis=1)
        info = t["sensor_msgs/msg/CameraInfo"](
            header=header, height=h, width=w, distortion_model="plumb_bob",
            d=np.zeros(5), k=K.reshape(-1).copy(), r=np.eye(3).reshape(-1), p=P.reshape(-1),
            binning_x=0, binning_y=0,
            roi=t["sensor_msgs/msg/RegionOfInterest"](
                x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
            ),
        )  # fmt: skip
        poses = [self.pose(R, tv) for R, tv in zip(frame.R, frame.t)]
        out: list[tuple[str, str, object]] = [
            (IMAGE_TOPIC, "sensor_msgs/msg/Image", image),
            (CAMERA_INFO_TOPIC, "sensor_msgs/msg/CameraInfo", info),
            (DEPTH_TOPIC, "sensor_msgs/msg/Image", depth),
            (POSES_TOPIC, "geometry_msgs/msg/PoseArray",
             t["geometry_msgs/msg/PoseArray"](header=header, poses=poses)),
        ]  # fmt: skip
        for oid, pose in zip(frame.object_ids, poses):
            out.append(
                (
                    object_pose_topic(oid),
                    "geometry_msgs/msg/PoseStamped",
                    t["geometry_msgs/msg/PoseStamped"](header=header, pose=pose),
                )
            )
        return out
