# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Replay a rosbag2 through the perception node's own per-frame code, synchronously.

Each image goes through `PerceptionNode.process_frame` (the same message conversion, camera
model and pipeline a live node runs), with no worker thread and no queue, so nothing is dropped:
every input image yields its output messages, or one error record on ``<node>/frame_errors``
(diagnostic_msgs/DiagnosticArray, the input header, the reason). Processed frames also get a
timing record on ``<node>/frame_timings`` (DiagnosticArray; key ``<stage>_ms``), which is
excluded when comparing replays. Outputs carry the input stamps and are written atomically.

Image <-> camera_info pairing follows the node's ``sync.mode``: ``exact`` and ``approximate``
compare header stamps, ``latest`` takes the last camera_info recorded before the image.

With ``pipeline.depth_source: multiview`` every camera pose of the bag is read first (poses
may be recorded after their image), from the pose topic `choose_pose_topic` picks (the bag's
PoseStamped topic in the image's namespace: ``/camera/image_raw`` -> ``/camera/pose``), or
every /tf and /tf_static with ``pose_type: tf``; each frame's depth is then computed
synchronously, and `ReplaySummary.depth_status` counts the outcomes; a frame with depth also gets
its confidence on ``<node>/depth/confidence`` (32FC1 in [0, 1], as the live node publishes it).
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dvc_perception.bag.io import (
    IMAGE_TYPE,
    AtomicBagWriter,
    BagMessage,
    BagReader,
    TopicInfo,
    deserialize,
    find_topics_by_type,
)
from dvc_perception.errors import BagError, ConfigError

COMPRESSED_IMAGE_TYPE = "sensor_msgs/msg/CompressedImage"
IMAGE_TYPES = (IMAGE_TYPE, COMPRESSED_IMAGE_TYPE)
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
POSE_STAMPED_TYPE = "geometry_msgs/msg/PoseStamped"
#: Object pose ground truth of synthetic bags: never a camera pose topic.
_GROUND_TRUTH_PREFIX = "/ground_truth/"
#: Colour and mono sensor_msgs/Image encodings (REP 104 names, lower case), besides those the
#: node converts (`dvc_perception.ros.convert.IMAGE_ENCODINGS`) and ``bayer_*``; depth (32FC1,
#: 16UC1) and the other generic ``<bits><type>C<n>`` encodings are never auto-picked.
COLOUR_ENCODINGS = frozenset({
    "rgb8", "bgr8", "rgba8", "bgra8", "rgb16", "bgr16", "rgba16", "bgra16", "mono8", "mono16",
    "yuv422", "yuv422_yuy2", "uyvy", "yuyv", "nv12", "nv21", "nv24",
})  # fmt: skip
#: Skipped camera_info messages named one by one through `replay_bag`'s `log`.
MAX_LOGGED = 10
#: Error-record kind of a frame that failed with an untyped exception (not a `DvcError`): a
#: library error or a bug, recorded so the replay goes on (KeyboardInterrupt still stops it).
UNEXPECTED_KIND = "unexpected"


@dataclass(frozen=True)
class FrameError:
    """A frame that produced no outputs: its stamp [ns], the kind of problem and the reason."""

    stamp_ns: int
    kind: str
    message: str


@dataclass
class ReplaySummary:
    """What a replay did. ``frames_in == frames_ok + len(errors)`` always holds."""

    input_bag: str
    output_bag: str
    image_topic: str
    camera_info_topic: str
    frames_in: int = 0
    frames_ok: int = 0
    detections: int = 0
    errors: list[FrameError] = field(default_factory=list)
    wall_s: float = 0.0
    pipeline_ms: list[float] = field(default_factory=list)
    image_topic_reason: str = ""
    bad_camera_info: int = 0
    pose_topic: str = ""
    depth_status: dict[str, int] = field(default_factory=dict)
    depth_fallback: int = 0
    depth_notes: list[str] = field(default_factory=list)

    @property
    def bad_images(self) -> int:
        """Image messages that did not deserialize (error records of kind ``deserialize``)."""
        return sum(e.kind == "deserialize" for e in self.errors)

    @property
    def frames_per_s(self) -> float:
        """Replay throughput (all frames, wall clock)."""
        return self.frames_in / self.wall_s if self.wall_s > 0 else 0.0


def is_colour_encoding(encoding: str) -> bool:
    """Whether a sensor_msgs/Image `encoding` is a colour or mono camera image (not depth)."""
    from dvc_perception.ros.convert import IMAGE_ENCODINGS

    enc = encoding.lower()
    return enc in IMAGE_ENCODINGS or enc in COLOUR_ENCODINGS or enc.startswith("bayer_")


def _describe(info: TopicInfo) -> str:
    """``rgb8`` / ``encoding unknown`` for an Image topic, ``CompressedImage`` otherwise."""
    if info.msgtype == COMPRESSED_IMAGE_TYPE:
        return "CompressedImage"
    return info.encoding or "encoding unknown"


def _is_camera_image(info: TopicInfo) -> bool:
    if info.msgtype == COMPRESSED_IMAGE_TYPE:
        return True
    return info.msgtype == IMAGE_TYPE and is_colour_encoding(info.encoding)


def _is_compressed_twin(topic: str, topics: Sequence[str]) -> bool:
    """Whether `topic` is ``<t>/compressed`` of a raw topic ``<t>`` also in `topics`."""
    suffix = "/compressed"
    return topic.endswith(suffix) and topic[: -len(suffix)] in topics


def _check_image_topic(topics: Mapping[str, TopicInfo], image_topic: str) -> None:
    """Raise `BagError` unless `image_topic` is an image topic that can be a camera image."""
    if image_topic not in topics:
        raise BagError(f"image topic {image_topic} is not in the bag; it has {sorted(topics)}")
    info = topics[image_topic]
    if info.msgtype not in IMAGE_TYPES:
        raise BagError(
            f"image topic {image_topic} has type {info.msgtype}; expected one of {IMAGE_TYPES}"
        )
    if info.encoding and not _is_camera_image(info):
        raise BagError(
            f"image topic {image_topic} has encoding {info.encoding!r}, which is not a colour "
            "or mono image (depth or other data); the perception node needs a colour or mono "
            "camera image (rgb8, bgr8, mono8, ...)"
        )


def choose_image_topic(
    topics: Mapping[str, TopicInfo], image_topic: str = "", option: str = "--image-topic"
) -> tuple[str, str]:
    """The camera image topic of a bag (the given one, checked, or the one auto-detected).

    Candidates are the Image topics with a colour or mono encoding (`is_colour_encoding`, read
    from the first messages into ``TopicInfo.encoding``) and the CompressedImage topics: depth
    images (32FC1, 16UC1) are never picked. Among several, names without "depth" or "overlay"
    win, and a raw ``<topic>`` wins over its own ``<topic>/compressed``.

    Args:
        topics: the bag's topics (`BagReader.topics`).
        image_topic: the topic asked for; auto-detected when empty.
        option: the command-line option that sets it, named in errors.

    Returns:
        The topic and why it was chosen, e.g. ``("/camera/image_raw", "auto-detected, rgb8")``.

    Raises:
        BagError: the given topic is missing or not a camera image, or no single candidate.
    """
    if image_topic:
        _check_image_topic(topics, image_topic)
        return image_topic, f"given, {_describe(topics[image_topic])}"
    found = [t for t in sorted(topics) if topics[t].msgtype in IMAGE_TYPES]
    candidates = [t for t in found if _is_camera_image(topics[t])]
    preferred = [t for t in candidates if "depth" not in t and "overlay" not in t] or candidates
    preferred = [t for t in preferred if not _is_compressed_twin(t, preferred)]
    if len(preferred) == 1:
        return preferred[0], f"auto-detected, {_describe(topics[preferred[0]])}"
    listed = ", ".join(f"{t} ({_describe(topics[t])})" for t in (preferred or found)) or "none"
    problem = "several candidates" if preferred else (
        "no colour or mono camera image topic; image topics found")  # fmt: skip
    raise BagError(
        f"cannot auto-detect the image topic: {problem}: {listed} (all topics: "
        f"{sorted(topics)}); pass {option} with the camera's colour or mono image topic"
    )


def detect_camera_topics(
    topics: Mapping[str, TopicInfo], image_topic: str = "", camera_info_topic: str = ""
) -> tuple[str, str]:
    """Pick the image and camera_info topics (given ones are checked, missing ones detected).

    The image topic follows `choose_image_topic`. With several camera_info candidates, the one
    in the image's namespace wins (``/cam/image_raw`` -> ``/cam/camera_info``); otherwise the
    choice is ambiguous and raises.

    Raises:
        BagError: a topic is missing, has the wrong type, or cannot be chosen unambiguously.
    """
    image_topic, _ = choose_image_topic(topics, image_topic)
    if camera_info_topic:
        if topics.get(camera_info_topic, TopicInfo("", "", 0)).msgtype != CAMERA_INFO_TYPE:
            raise BagError(f"camera_info topic {camera_info_topic} is not a CameraInfo topic")
    else:
        infos = find_topics_by_type(dict(topics), CAMERA_INFO_TYPE)
        namespace = image_topic.rsplit("/", 1)[0]
        same_ns = [t for t in infos if t.rsplit("/", 1)[0] == namespace and "depth" not in t]
        pick = same_ns if len(same_ns) == 1 else infos
        if len(pick) != 1:
            raise BagError(
                f"cannot auto-detect the camera_info topic for {image_topic}: candidates "
                f"{pick or 'none'}; pass it explicitly"
            )
        camera_info_topic = pick[0]
    return image_topic, camera_info_topic


def choose_pose_topic(
    topics: Mapping[str, TopicInfo], image_topic: str, node_pose_topic: str = "",
    pose_topic: str = "",
) -> str:  # fmt: skip
    """The camera pose topic (geometry_msgs/PoseStamped) of a bag, for multiview depth.

    The given `pose_topic` is checked; else the node's ``pipeline.multiview.pose_topic``
    (`node_pose_topic`) where the bag has it (absolute, or relative in the image's namespace
    or the root); else the bag's PoseStamped topics outside ``/ground_truth/``: the one in the
    image's namespace (``/camera/image_raw`` -> ``/camera/pose``), or the only one.

    Raises:
        BagError: the given topic is missing or not PoseStamped; none or several candidates.
    """
    if pose_topic:
        if pose_topic not in topics:
            raise BagError(f"pose topic {pose_topic} is not in the bag; it has {sorted(topics)}")
        if topics[pose_topic].msgtype != POSE_STAMPED_TYPE:
            raise BagError(f"pose topic {pose_topic} has type {topics[pose_topic].msgtype}; "
                           f"expected {POSE_STAMPED_TYPE}")
        return pose_topic
    namespace = image_topic.rsplit("/", 1)[0]
    poses = [t for t in find_topics_by_type(dict(topics), POSE_STAMPED_TYPE)
             if not t.startswith(_GROUND_TRUTH_PREFIX)]
    name = node_pose_topic.lstrip("~/")
    for candidate in ((node_pose_topic,) if node_pose_topic.startswith("/") else (
            f"{namespace}/{name}", f"/{name}")):  # fmt: skip
        if candidate in poses:
            return candidate
    same_ns = [t for t in poses if t.rsplit("/", 1)[0] == namespace]
    pick = same_ns if len(same_ns) == 1 else poses
    if len(pick) != 1:
        raise BagError(
            f"cannot find the camera pose topic for {image_topic} (pipeline.depth_source "
            f"multiview needs the camera's poses): geometry_msgs/PoseStamped candidates "
            f"{pick or 'none'} (all topics: {sorted(topics)}); pass --pose-topic, or use "
            "--param pipeline.multiview.pose_type:=tf with a bag that has /tf"
        )
    return pick[0]


class CameraInfoIndex:
    """Camera_info messages by header stamp and by record time, for the node's sync modes."""

    def __init__(self, entries: list[tuple[int, int, Any]], mode: str, tolerance_s: float) -> None:
        self.mode = mode
        self.tolerance_ns = int(round(tolerance_s * 1e9))
        self.by_stamp = sorted(((s, i) for i, (s, _, _) in enumerate(entries)))
        self.by_record = sorted(((r, i) for i, (_, r, _) in enumerate(entries)))
        self.entries = entries

    def find(self, stamp_ns: int, record_ns: int) -> Any | None:
        """The camera_info of an image at `stamp_ns` recorded at `record_ns` [ns], or None."""
        if self.mode == "latest":
            k = bisect.bisect_right(self.by_record, (record_ns, len(self.entries)))
            return self.entries[self.by_record[k - 1][1]][2] if k > 0 else None
        stamps = [s for s, _ in self.by_stamp]
        k = bisect.bisect_left(stamps, stamp_ns)
        best: tuple[int, int] | None = None
        for j in (k - 1, k):
            if 0 <= j < len(stamps):
                diff = abs(stamps[j] - stamp_ns)
                if best is None or diff < best[0]:
                    best = (diff, self.by_stamp[j][1])
        limit = 0 if self.mode == "exact" else self.tolerance_ns
        if best is None or best[0] > limit:
            return None
        return self.entries[best[1]][2]


def replay_bag(
    input_bag: str | Path,
    output_bag: str | Path,
    *,
    params_file: str | Path | None = None,
    parameters: Mapping[str, Any] | None = None,
    image_topic: str = "",
    camera_info_topic: str = "",
    storage: str = "mcap",
    copy_inputs: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    on_frame: Callable[[int, int], None] | None = None,
    log: Callable[[str], None] | None = None,
    initial_poses: Mapping[int, Sequence[Any]] | None = None,
    pose_topic: str = "",
) -> ReplaySummary:
    """Run every image of `input_bag` through the node's per-frame code into `output_bag`.

    An image message that does not deserialize becomes an error record of kind
    ``deserialize``, stamped with its record time (its header is unreadable); a camera_info
    message that does not deserialize is skipped and counted (``bad_camera_info``). A frame
    whose processing raises an untyped exception (an OpenCV error, a bug) becomes an error
    record of kind ``unexpected`` naming the exception type. The replay goes on after each;
    KeyboardInterrupt and SystemExit still stop it.

    Args:
        input_bag: rosbag2 directory or file (mcap or sqlite3).
        output_bag: bag directory to write (atomically; nothing is left if replay fails).
        params_file: the node's ROS parameter YAML (default: the shipped config/perception.yaml).
        parameters: parameter overrides by dotted name (``{"sync.mode": "exact"}``).
        image_topic: image topic (Image or CompressedImage); auto-detected when empty.
        camera_info_topic: camera_info topic; auto-detected when empty.
        storage: output storage, ``mcap`` or ``sqlite3``.
        copy_inputs: also copy every input topic into the output bag.
        overwrite: replace an existing output bag.
        progress: show a progress bar.
        on_frame: called as ``on_frame(done, total)`` after each frame.
        log: called with one-line notes: the topics chosen and why, skipped camera_info.
        initial_poses: image stamp [ns] -> `pipeline.pose.InitialPose` list: each frame's
            poses are refined from these instead of detected (``--init gt-perturbed``; a
            frame missing here gets none); None: the node's keypoint source.
        pose_topic: ``depth_source: multiview``: the camera pose topic (PoseStamped);
            chosen by `choose_pose_topic` when empty.

    Raises:
        BagError: unreadable, truncated or corrupt bag, missing topics, image stamps out of
            order, an output bag that cannot be written; multiview depth without a camera
            pose topic (unless ``multiview.fallback`` is ``network``).
        ConfigError: invalid parameters.
    """
    t_start = time.perf_counter()
    with BagReader(input_bag) as reader:
        topics = reader.topics()
        image_topic, why = choose_image_topic(topics, image_topic)
        image_topic, camera_info_topic = detect_camera_topics(
            topics, image_topic, camera_info_topic
        )
        summary = ReplaySummary(str(input_bag), str(output_bag), image_topic, camera_info_topic,
                                image_topic_reason=why)  # fmt: skip
        if log is not None:
            log(f"replay: image topic {image_topic} ({why}), camera_info {camera_info_topic}")
        compressed = topics[image_topic].msgtype == COMPRESSED_IMAGE_TYPE
        with _replay_node(params_file, parameters, compressed) as node:
            index = read_camera_infos(reader, camera_info_topic, node.config.sync, summary, log)
            if node.tf_buffer is not None:  # output_frame, multiview from tf: all of TF first
                node.tf_buffer = _read_transforms(reader, log)
            if node.pose_buffer is not None:  # multiview: every camera pose first
                node.pose_buffer = read_camera_poses(reader, node.config.pipeline.multiview,
                                                     image_topic, pose_topic, summary, log)
            copy = sorted(topics) if copy_inputs else []
            with AtomicBagWriter(output_bag, storage, overwrite=overwrite) as writer:
                bar = _Progress(topics[image_topic].count, progress, on_frame)
                _replay_images(reader, writer, node, index, summary, copy, bar, initial_poses)
    summary.wall_s = time.perf_counter() - t_start
    return summary


def _read_transforms(reader: BagReader, log: Callable[[str], None] | None) -> Any:
    """A `TransformBuffer` with every transform of the bag's /tf and /tf_static.

    No cache limit: a frame then finds the samples on both sides of its stamp, as the live node
    does by waiting. Messages that do not deserialize and unusable transforms are skipped.
    """
    from dvc_perception.ros.tf_buffer import TransformBuffer

    buffer = TransformBuffer(cache_s=None)
    topics = reader.topics()
    found = [t for t in ("/tf_static", "/tf") if t in topics]
    if found:
        from tf2_msgs.msg import TFMessage

        bad = 0
        for k, m in enumerate(reader.messages(found)):
            try:
                msg = deserialize(m, TFMessage, k)
            except BagError:
                bad += 1
                continue
            bad += buffer.add_message(msg, static=m.topic == "/tf_static")
        if bad and log is not None:
            log(f"replay: skipped {bad} unusable transforms of {' and '.join(found)}")
    elif log is not None:
        log("replay: output_frame or pipeline.multiview.pose_type tf is set but the bag has "
            "no /tf or /tf_static: every frame will lack the transform")
    return buffer


def read_camera_poses(
    reader: BagReader, mv: Any, image_topic: str, pose_topic: str, summary: ReplaySummary,
    log: Callable[[str], None] | None,
) -> Any:  # fmt: skip
    """A `CameraPoseBuffer` with every camera pose of the bag (no age limit).

    `mv`: the node's ``pipeline.multiview`` (`MultiviewConfig`). Poses that do not deserialize
    or are not rigid transforms (NaN, a zero quaternion) are skipped and counted in the log; a
    frame between usable poses interpolates as live. Also read by `bag.motion_frames`.

    Raises:
        BagError: no camera pose topic (`choose_pose_topic`), unless the node falls back to
            the depth network, which then gives every frame's depth.
    """
    from geometry_msgs.msg import PoseStamped

    from dvc_perception.errors import DvcError
    from dvc_perception.pipeline.multiview import CameraPoseBuffer
    from dvc_perception.ros.convert import pose_msg_to_matrix

    buffer = CameraPoseBuffer(max_age_s=None)
    try:
        topic = choose_pose_topic(reader.topics(), image_topic, mv.pose_topic, pose_topic)
    except BagError as err:
        if mv.fallback != "network" or pose_topic:
            raise
        if log is not None:
            log(f"replay: {err}; every frame's depth comes from the fallback network")
        return buffer
    summary.pose_topic = topic
    bad: list[str] = []
    for k, m in enumerate(reader.messages([topic])):
        try:
            msg = deserialize(m, PoseStamped, k)
            buffer.add(_stamp_ns(msg.header.stamp), pose_msg_to_matrix(msg.pose))
        except DvcError as err:
            bad.append(str(err))
    if log is not None:
        log(f"replay: camera poses from {topic}: {len(buffer)} usable"
            + (f", {len(bad)} skipped (first: {bad[0]})" if bad else ""))
    return buffer


def read_camera_infos(
    reader: BagReader, topic: str, sync: Any, summary: ReplaySummary,
    log: Callable[[str], None] | None,
) -> CameraInfoIndex:  # fmt: skip
    """Every readable camera_info of `topic`; the others are skipped and counted in `summary`.

    `sync`: the node's `SyncConfig` (how `CameraInfoIndex.find` pairs them with images).
    """
    from sensor_msgs.msg import CameraInfo

    entries = []
    for k, m in enumerate(reader.messages([topic])):
        try:
            msg = deserialize(m, CameraInfo, k)
        except BagError as err:
            summary.bad_camera_info += 1
            if log is not None and summary.bad_camera_info <= MAX_LOGGED:
                log(f"replay: skipped camera_info {err}")
            continue
        entries.append((_stamp_ns(msg.header.stamp), m.timestamp_ns, msg))
    return CameraInfoIndex(entries, sync.mode, sync.tolerance_s)


class _Progress:
    """The progress bar and the `on_frame` callback of a replay."""

    def __init__(
        self, total: int, show: bool, on_frame: Callable[[int, int], None] | None
    ) -> None:
        from tqdm import tqdm

        self.total = total
        self.on_frame = on_frame
        self.bar = tqdm(total=total, desc="replay", unit="frame", disable=not show)

    def update(self, done: int) -> None:
        """One more frame done (`done` so far)."""
        self.bar.update(1)
        if self.on_frame is not None:
            self.on_frame(done, self.total)

    def close(self) -> None:
        """Close the bar."""
        self.bar.close()


def _replay_images(
    reader: BagReader, writer: AtomicBagWriter, node: Any, index: CameraInfoIndex,
    summary: ReplaySummary, copy: Sequence[str], progress: _Progress,
    initial_poses: Mapping[int, Sequence[Any]] | None = None,
) -> None:  # fmt: skip
    """Every image of ``summary.image_topic`` through the node; `copy` topics copied as is."""
    from sensor_msgs.msg import CompressedImage, Image

    image_topic = summary.image_topic
    compressed = reader.topics()[image_topic].msgtype == COMPRESSED_IMAGE_TYPE
    image_cls = CompressedImage if compressed else Image
    fqn = node.get_fully_qualified_name().rstrip("/")
    last_stamp = -1
    try:
        for m in _messages(reader, [image_topic, *copy]):
            if copy:
                writer.write_raw(m.topic, m.msgtype, m.timestamp_ns, m.rawdata)
            if m.topic != image_topic:
                continue
            summary.frames_in += 1
            try:
                image = deserialize(m, image_cls, summary.frames_in - 1)
            except BagError as err:
                _write_error(writer, fqn, _record_header(m.timestamp_ns), m.timestamp_ns,
                             "deserialize", f"{err} (the header is unreadable: this record "
                             "carries the record time)", summary)  # fmt: skip
            else:
                last_stamp = stamp = _check_order(image, m, last_stamp)
                options = {} if initial_poses is None else {
                    "initial_poses": list(initial_poses.get(stamp, []))}
                _replay_frame(node, writer, fqn, image, index.find(stamp, m.timestamp_ns),
                              m.timestamp_ns, summary, options)  # fmt: skip
            progress.update(summary.frames_in)
    finally:
        progress.close()
    if summary.frames_in == 0:
        raise BagError(f"bag {summary.input_bag} has no messages on {image_topic}")


def _check_order(image: Any, m: BagMessage, last_stamp: int) -> int:
    """The image's stamp [ns]; raises `BagError` when it is before `last_stamp`."""
    stamp = _stamp_ns(image.header.stamp)
    if stamp < last_stamp:
        raise BagError(
            f"image stamps out of order on {m.topic}: {stamp} ns after {last_stamp} ns (record "
            f"time {m.timestamp_ns} ns); replay needs non-decreasing stamps (reorder the bag, "
            "e.g. by header stamp)"
        )
    return stamp


def _record_header(record_ns: int) -> Any:
    """A header stamped with a record time, for a message whose own header is unreadable."""
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    return Header(stamp=Time(sec=record_ns // 1_000_000_000, nanosec=record_ns % 1_000_000_000))


def _messages(reader: BagReader, topics: Sequence[str]) -> Iterator[Any]:
    seen: set[str] = set()
    wanted = [t for t in topics if not (t in seen or seen.add(t))]
    yield from reader.messages(wanted)


def _replay_frame(
    node: Any, writer: AtomicBagWriter, fqn: str, image: Any, info: Any, record_ns: int,
    summary: ReplaySummary, options: Mapping[str, Any] | None = None,
) -> None:  # fmt: skip
    """Process one image and write its outputs, or its error record.

    `options`: extra keyword arguments of ``node.process_frame`` (``initial_poses``).
    """
    from dvc_perception.errors import DvcError

    if info is None:
        mode = node.config.sync.mode
        _write_error(writer, fqn, image.header, record_ns, "camera_info",
                     f"no camera_info matches this image (sync.mode {mode})", summary)  # fmt: skip
        return
    try:
        out = node.process_frame(image, info, tf_timeout_s=0.0, **(options or {}))
    except DvcError as err:
        kind = getattr(err, "kind", type(err).__name__)
        _write_error(writer, fqn, image.header, record_ns, kind, str(err), summary)
        return
    except Exception as err:  # noqa: BLE001 - untyped (e.g. cv2.error): this frame's record
        _write_error(writer, fqn, image.header, record_ns, UNEXPECTED_KIND,
                     f"{type(err).__name__}: {' '.join(str(err).split())}", summary)  # fmt: skip
        return
    for object_id, msg in out.pose_msgs.items():
        writer.write_message(f"{fqn}/{object_id}/pose", msg, record_ns)
    writer.write_message(f"{fqn}/poses", out.pose_array, record_ns)
    writer.write_message(f"{fqn}/markers", out.markers, record_ns)
    if out.detections is not None:  # every frame, empty when nothing is found (as live)
        writer.write_message(f"{fqn}/detections", out.detections, record_ns)
    if out.transforms is not None:
        writer.write_message("/tf", out.transforms, record_ns)
    if out.depth_msg is not None:
        writer.write_message(f"{fqn}/depth/image_raw", out.depth_msg, record_ns)
        if out.confidence_msg is not None:
            writer.write_message(f"{fqn}/depth/confidence", out.confidence_msg, record_ns)
        writer.write_message(f"{fqn}/depth/camera_info", out.depth_info, record_ns)
    _write_timings(writer, fqn, out.header, record_ns,
                   {**out.result.timings, **out.timings})  # fmt: skip
    summary.frames_ok += 1
    summary.detections += len(out.pose_msgs)
    status = out.result.depth_status
    if status != "none":
        summary.depth_status[status] = summary.depth_status.get(status, 0) + 1
        summary.depth_fallback += int(out.result.depth_fallback)
        if out.depth_note and len(summary.depth_notes) < MAX_LOGGED:
            summary.depth_notes.append(f"frame {_stamp_ns(out.header.stamp)} ns: {status}: "
                                       f"{out.depth_note}")  # fmt: skip
    summary.pipeline_ms.append(float(out.timings.get("pipeline_ms", 0.0)))


def _write_timings(
    writer: AtomicBagWriter, fqn: str, header: Any, record_ns: int, timings: Mapping[str, float]
) -> None:
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

    status = DiagnosticStatus(
        level=DiagnosticStatus.OK, name=f"{fqn}: timings", hardware_id=header.frame_id,
        values=[KeyValue(key=k, value=f"{v:.4f}") for k, v in sorted(timings.items())],
    )  # fmt: skip
    writer.write_message(f"{fqn}/frame_timings", DiagnosticArray(header=header, status=[status]),
                         record_ns)  # fmt: skip


def _write_error(
    writer: AtomicBagWriter, fqn: str, header: Any, record_ns: int, kind: str, message: str,
    summary: ReplaySummary,
) -> None:  # fmt: skip
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

    status = DiagnosticStatus(
        level=DiagnosticStatus.ERROR, name=f"{fqn}: frame", message=message,
        hardware_id=header.frame_id, values=[KeyValue(key="kind", value=kind)],
    )  # fmt: skip
    writer.write_message(f"{fqn}/frame_errors", DiagnosticArray(header=header, status=[status]),
                         record_ns)  # fmt: skip
    summary.errors.append(FrameError(_stamp_ns(header.stamp), kind, message))


def _stamp_ns(stamp: Any) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def _parameter(name: str, value: Any) -> Any:
    """The rclpy Parameter of an override.

    A list of numbers for a double-array parameter becomes floats (YAML writes 1 for 1.0, as
    the config dataclasses accept).

    Raises:
        ConfigError: a value rclpy cannot type (a list mixing types).
    """
    from rclpy.parameter import Parameter

    from dvc_perception.ros.params import parameter_defaults

    if isinstance(parameter_defaults().get(name), tuple) and isinstance(value, list) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        value = [float(v) for v in value]
    try:
        return Parameter(name, value=value)
    except TypeError as err:
        raise ConfigError(f"--param {name}: {err}") from err


class _replay_node:  # noqa: N801 - a context manager used like a function
    """A configured (not activated) PerceptionNode in a private rclpy context."""

    def __init__(
        self, params_file: str | Path | None, parameters: Mapping[str, Any] | None,
        compressed: bool,
    ) -> None:  # fmt: skip
        self.params_file = params_file
        self.parameters = dict(parameters or {})
        self.compressed = compressed
        self.context: Any = None
        self.node: Any = None

    def __enter__(self) -> Any:
        import rclpy
        from rclpy.context import Context

        from dvc_perception.config import check_parameter_names, check_params_file
        from dvc_perception.resources import find_share_file
        from dvc_perception.ros.perception_node import PerceptionNode

        params_file = Path(self.params_file or find_share_file("config/perception.yaml"))
        check_params_file(params_file)  # before rclpy, which would raise a raw RCLError
        check_parameter_names(self.parameters, source="--param")
        self.context = Context()
        rclpy.init(args=["replay", "--ros-args", "--params-file", str(params_file)],
                   context=self.context)  # fmt: skip
        overrides = {"autostart": False, "reliable_inputs": True, **self.parameters}
        if self.compressed:
            overrides.setdefault("image_transport", "compressed")
        try:
            self.node = PerceptionNode(
                context=self.context,
                parameter_overrides=[_parameter(k, v) for k, v in overrides.items()],
            )
            from rclpy.lifecycle import TransitionCallbackReturn

            if self.node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                reason = getattr(self.node, "startup_error", "") or "configure failed"
                raise ConfigError(f"perception_node did not configure: {reason}")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self.node

    def __exit__(self, *exc: object) -> None:
        import rclpy

        if self.node is not None:
            self.node.destroy_node()
            self.node = None
        if self.context is not None and self.context.ok():
            rclpy.shutdown(context=self.context)
        self.context = None
