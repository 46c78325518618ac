# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Frozen configuration dataclasses of the pipeline and of the ROS node.

These dataclasses are the single source of truth for every setting: `from_mapping` rejects
unknown keys, `__post_init__` raises `ConfigError` naming the bad value, and the ROS node
declares one parameter per leaf field (dotted names, e.g. ``pipeline.fiducial.board_type``)
with a descriptor built from the field's ``metadata`` (``doc`` with unit, ``range``, ``choices``,
``read_only``, ``live``). `config/perception.yaml` lists the same parameters; a test checks that
the YAML, the descriptors and these defaults agree.

Three kinds of parameter: ``read_only`` ones are set at start-up only (params file, ``-p``);
``live`` ones can change on the running node (``ros2 param set``), which applies them to the next
frames; the others are read at configure and can change only while the node is unconfigured.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dvc_perception.config_utils import dataclass_from_mapping
from dvc_perception.errors import ConfigError

#: A ROS name token: letters, digits and underscores, not starting with a digit.
ROS_NAME_TOKEN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

BOARD_TYPES = ("chessboard", "aruco_grid", "charuco")
KEYPOINT_SOURCES = ("fiducial", "network")
DEPTH_SOURCES = ("none", "network", "multiview")
#: ``pipeline.multiview.pose_type``: where the camera poses come from. nav_msgs/Odometry is not
#: offered: nav_msgs is not among the ROS packages this project builds on (PyPI wheels).
POSE_TYPES = ("pose_stamped", "tf")
#: ``pipeline.multiview.fallback``: the depth of frames without usable motion.
DEPTH_FALLBACKS = ("none", "network")
#: ``pipeline.multiview.pose_topic``: a ROS topic name (relative, absolute or private).
TOPIC_PATTERN = re.compile(r"^[~/]?[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*$")
#: ``pipeline.refine.contour_source``: the sparse viewpoint model built at configure (fast per
#: frame) or a contour rendered from the mesh at every correspondence iteration (slow).
CONTOUR_SOURCES = ("model", "render")
#: Segment scales of the refiner's full coarse-to-fine schedule, px (`RefineSettings.scales`);
#: ``pipeline.refine.pyramid_levels`` keeps the finest N.
REFINE_SCALES = (6, 4, 2, 1)
#: The line standard-deviation floors that go with `REFINE_SCALES`, px.
REFINE_MIN_SIGMA_PX = (15.0, 5.0, 3.5, 1.5)
SYNC_MODES = ("exact", "approximate", "latest")
IMAGE_TRANSPORTS = ("raw", "compressed")
#: Inference backends (`engines.load.BACKENDS`); ``auto``: TensorRT when it and a CUDA device
#: exist, else ONNX Runtime.
NETWORK_BACKENDS = ("auto", "onnxruntime", "tensorrt", "torch")
#: Inference precisions (`engines.base.PRECISIONS`); int8 needs a QDQ model (or, on TensorRT, a
#: calibrator).
PRECISIONS = ("fp32", "fp16", "int8")
#: ``pipeline.network.device``: empty (the backend's default), ``cpu``, ``cuda`` or ``cuda:N``.
DEVICE_PATTERN = re.compile(r"^(|cpu|cuda(:[0-9]+)?)$")
#: ``tf_prefix``: empty, or a TF frame-name prefix (no leading slash, no spaces).
TF_PREFIX_PATTERN = re.compile(r"^([A-Za-z0-9_][A-Za-z0-9_./-]*)?$")
ARUCO_DICTIONARIES = (
    "DICT_4X4_50", "DICT_4X4_100", "DICT_4X4_250", "DICT_4X4_1000",
    "DICT_5X5_50", "DICT_5X5_100", "DICT_5X5_250", "DICT_5X5_1000",
    "DICT_6X6_50", "DICT_6X6_100", "DICT_6X6_250", "DICT_6X6_1000",
    "DICT_7X7_50", "DICT_7X7_100", "DICT_7X7_250", "DICT_7X7_1000",
    "DICT_ARUCO_ORIGINAL", "DICT_APRILTAG_16h5", "DICT_APRILTAG_25h9",
    "DICT_APRILTAG_36h10", "DICT_APRILTAG_36h11",
)  # fmt: skip


def _f(default: Any, doc: str, **meta: Any) -> Any:
    """A dataclass field whose metadata documents it.

    Metadata: `doc`, `range`, `choices`, `read_only` (start-up only), `live` (applied to the
    running node when set).
    """
    return field(default=default, metadata={"doc": doc, **meta})


def _check_range(section: str, obj: Any) -> None:
    """Raise ConfigError for a field outside its `range` or `choices` metadata."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            continue
        expected_type = type(f.default)
        if expected_type is tuple:  # a double array: any sequence of numbers, kept as a tuple
            object.__setattr__(obj, f.name, _float_tuple(f"{section}.{f.name}", value,
                                                         len(f.default)))
            continue
        if expected_type is float and isinstance(value, int) and not isinstance(value, bool):
            object.__setattr__(obj, f.name, float(value))  # YAML writes 1 for 1.0: same value
            value = float(value)
        if not isinstance(value, expected_type) or (
            expected_type is int and isinstance(value, bool)
        ):
            raise ConfigError(
                f"{section}.{f.name}: expected {expected_type.__name__}, "
                f"got {type(value).__name__} {value!r}"
            )
        if "range" in f.metadata:
            lo, hi = f.metadata["range"]
            if not lo <= value <= hi:
                raise ConfigError(f"{section}.{f.name}: expected in [{lo}, {hi}], got {value!r}")
        if "choices" in f.metadata and value not in f.metadata["choices"]:
            raise ConfigError(
                f"{section}.{f.name}: expected one of {list(f.metadata['choices'])}, "
                f"got {value!r}"
            )


def _float_tuple(name: str, value: Any, length: int) -> tuple[float, ...]:
    """`value` as a tuple of `length` finite floats; ConfigError naming `name` otherwise.

    Accepts a list, tuple or array of numbers (rclpy gives double arrays as ``array.array``).
    """
    try:
        items = list(value)
    except TypeError:
        items = None
    if items is None or len(items) != length or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in items
    ):
        raise ConfigError(f"{name}: expected a list of {length} numbers, got {value!r}")
    numbers = tuple(float(v) for v in items)
    if not all(math.isfinite(v) for v in numbers):
        raise ConfigError(f"{name}: expected finite numbers, got {list(numbers)}")
    return numbers


@dataclass(frozen=True)
class FiducialConfig:
    """A calibration target used as a keypoint source (`keypoint_source: fiducial`).

    Board frame (all types): origin at the board's top-left corner as printed (OpenCV's
    convention), x right along a row, y down along a column, z into the board; metres.
    """

    object_id: str = _f("board", "object id of the board; a ROS name token (topic ~/<id>/pose)")
    board_type: str = _f(
        "chessboard",
        "chessboard (inner corners, must be fully visible), aruco_grid (GridBoard) or charuco "
        "(ChArUco; works partially visible)",
        choices=BOARD_TYPES,
    )
    cols: int = _f(
        9,
        "chessboard: inner corners per row; aruco_grid: markers per row; charuco: squares per row",
        range=(2, 100),
    )
    rows: int = _f(
        6,
        "chessboard: inner corners per column; aruco_grid: markers per column; charuco: squares "
        "per column",
        range=(2, 100),
    )
    square_size_m: float = _f(0.025, "chessboard/charuco square side [m]", range=(1e-4, 10.0))
    marker_size_m: float = _f(
        0.018, "aruco_grid/charuco marker side [m] (charuco: < square_size_m)", range=(1e-4, 10.0)
    )
    marker_separation_m: float = _f(
        0.006, "aruco_grid gap between markers [m]", range=(0.0, 10.0)
    )
    dictionary: str = _f("DICT_5X5_100", "ArUco dictionary name", choices=ARUCO_DICTIONARIES)
    legacy_pattern: bool = _f(
        False, "charuco: boards made by OpenCV < 4.6 with an even row count (legacy layout)"
    )
    subpixel_window_px: int = _f(
        5, "chessboard/charuco: half size of the cornerSubPix search window [px]; 0 disables",
        range=(0, 30),
    )
    min_keypoints: int = _f(
        4, "fewest detected keypoints for a pose (>= 4: partial boards still give poses)",
        range=(4, 10000),
    )

    def __post_init__(self) -> None:
        _check_range("pipeline.fiducial", self)
        if not ROS_NAME_TOKEN.match(self.object_id):
            raise ConfigError(
                "pipeline.fiducial.object_id: expected a ROS name token (letters, digits, "
                f"underscores, not starting with a digit), got {self.object_id!r}"
            )
        if self.board_type == "charuco" and self.marker_size_m >= self.square_size_m:
            raise ConfigError(
                "pipeline.fiducial.marker_size_m: a ChArUco marker must be smaller than its "
                f"square ({self.square_size_m} m), got {self.marker_size_m} m"
            )


@dataclass(frozen=True)
class PnPConfig:
    """Robust pose estimation from keypoints (RANSAC, then weighted Levenberg-Marquardt)."""

    threshold_px: float = _f(
        4.0, "RANSAC inlier threshold on undistorted reprojection error [px]", range=(0.1, 100.0),
        live=True,
    )
    num_hypotheses: int = _f(
        64, "RANSAC minimal-set hypotheses per frame", range=(1, 4096), live=True
    )
    always_ransac: bool = _f(
        False,
        "false: first fit all keypoints (EPnP + LM) and run RANSAC only when a keypoint is off "
        "by more than threshold_px (fiducial detections rarely have outliers; ~5x faster); "
        "true: RANSAC on every frame",
        live=True,
    )
    max_iterations: int = _f(
        30, "Levenberg-Marquardt iterations of the refinement", range=(1, 500), live=True
    )
    seed: int = _f(
        0, "RANSAC random seed (results are reproducible per frame)", range=(0, 2**31 - 1),
        live=True,
    )

    def __post_init__(self) -> None:
        _check_range("pipeline.pnp", self)


@dataclass(frozen=True)
class NetworkConfig:
    """The keypoint/depth networks (`keypoint_source: network`, `depth_source: network`)."""

    model_path: str = _f("", "keypoint network ONNX file (metadata: objects, keypoints, input)")
    depth_model_path: str = _f(
        "", "depth network ONNX file (used when depth_source is network, and by "
        "multiview.fallback network)"
    )
    backend: str = _f(
        "onnxruntime",
        "inference backend; auto: tensorrt when TensorRT and a CUDA device exist, else "
        "onnxruntime (/diagnostics reports the one running)",
        choices=NETWORK_BACKENDS,
    )
    precision: str = _f(
        "fp32",
        "inference precision; onnxruntime: fp32, or int8 with a QDQ model; torch: fp32, or fp16 "
        "on CUDA; tensorrt: all three",
        choices=PRECISIONS,
    )
    device: str = _f(
        "", "inference device: empty (the backend's default: CUDA when available), cpu, cuda or "
        "cuda:N"
    )
    engine_cache_dir: str = _f(
        "", "TensorRT engine cache directory (engines are reused across restarts); empty: "
        "$XDG_CACHE_HOME/dvc_perception/engines (default ~/.cache/dvc_perception/engines)"
    )
    min_objectness: float = _f(
        0.5, "objects whose network objectness is lower are not reported", range=(0.0, 1.0),
        live=True,
    )
    detector_model_path: str = _f(
        "", "detector network ONNX file: when set, every detected instance is cropped from the "
        "full-resolution image (at the crop scale model_path was trained with) and its "
        "keypoints come from model_path on the crop; empty: model_path sees the whole image"
    )
    min_detection_score: float = _f(
        0.3, "detections with a lower score are not cropped (two-stage only; the centre score, "
        "or with a verifier the geometric mean of it and the verifier's class probability)",
        range=(0.0, 1.0), live=True,
    )
    verifier_model_path: str = _f(
        "", "box verifier ONNX file (two-stage only): when set, the detector's best "
        "verifier_candidates boxes per class are cropped from the full-resolution image and "
        "re-scored by this crop classifier; empty: the detector's own scores"
    )
    verifier_candidates: int = _f(
        10, "boxes per class the verifier re-scores (with verifier_model_path)", range=(1, 100),
    )

    def __post_init__(self) -> None:
        _check_range("pipeline.network", self)
        if not DEVICE_PATTERN.match(self.device):
            raise ConfigError(
                "pipeline.network.device: expected '' (the backend's default), 'cpu', 'cuda' or "
                f"'cuda:N', got {self.device!r}"
            )
        unsupported = _unsupported_engine_choice(self.backend, self.precision, self.device)
        if unsupported:
            raise ConfigError(unsupported)


def _unsupported_engine_choice(backend: str, precision: str, device: str) -> str:
    """Why (backend, precision, device) cannot run whatever the model, or "" when it may.

    Model- and machine-dependent refusals (int8 needs a QDQ model on onnxruntime, no CUDA
    device, TensorRT not installed) come from `engines.load_engine` at configure.
    """
    if backend == "onnxruntime" and precision == "fp16":
        return ("pipeline.network.precision: fp16 is not supported by backend onnxruntime "
                "(fp32, or int8 with a QDQ model); use the torch or tensorrt backend for fp16")
    if backend == "torch" and precision == "int8":
        return ("pipeline.network.precision: int8 is not supported by backend torch (fp32, or "
                "fp16 on CUDA); use onnxruntime or tensorrt with a QDQ model")
    if backend == "torch" and precision == "fp16" and device == "cpu":
        return ("pipeline.network.precision: fp16 with backend torch needs a CUDA device, got "
                "pipeline.network.device 'cpu'")
    if backend == "tensorrt" and device == "cpu":
        return ("pipeline.network.device: backend tensorrt runs on 'cuda' or 'cuda:N', got "
                "'cpu'")
    return ""


@dataclass(frozen=True)
class RefineConfig:
    """Render-and-compare refinement of the PnP poses (`refine.refine_pose`).

    Score of a refined pose: ``pnp_score * exp(-cost_weight * cost)``, cost the refiner's final
    alignment cost (`RefineResult.cost`: ~0.2-0.3 for a well aligned outline, log 2 = 0.69
    where the colours cannot tell object from background, more for a wrong pose), so at
    ``cost_weight`` 1 a pose whose outline is no better than chance has its score halved.
    """

    enabled: bool = _f(
        False,
        "refine every PnP pose by aligning the object's mesh outline with the image (objects "
        "with a mesh in config/objects/<id>.yaml; a board is not refined); the mesh and contour "
        "models are loaded at configure",
    )
    contour_source: str = _f(
        "model",
        "model: contours from a sparse viewpoint model built per object at configure (a few "
        "seconds each; fast per frame); render: rendered from the mesh at every step (slow)",
        choices=CONTOUR_SOURCES,
    )
    pyramid_levels: int = _f(
        4, "coarse-to-fine levels: the finest N of the segment scales 6, 4, 2, 1 px",
        range=(1, len(REFINE_SCALES)), live=True,
    )
    iterations: int = _f(
        2, "Gauss-Newton steps per pyramid level", range=(1, 50), live=True
    )
    passes: int = _f(
        1, "runs of the whole coarse-to-fine schedule (each restarts the colour statistics)",
        range=(1, 10), live=True,
    )
    num_points: int = _f(
        200, "contour points (correspondence lines) per instance; with contour_source model at "
        "most the count at configure", range=(8, 2000), live=True,
    )
    edge_weight: float = _f(
        5.0, "weight of the image-edge term next to the colour-region term (0: region only)",
        range=(0.0, 100.0), live=True,
    )
    cost_weight: float = _f(
        1.0, "score of a refined pose = PnP score * exp(-cost_weight * alignment cost); 0: the "
        "PnP score", range=(0.0, 100.0), live=True,
    )
    threads: int = _f(
        1, "poses refined at once, each on its own thread (the search's starts, several "
        "instances); the result does not depend on it; more than the CPU's free cores only "
        "adds overhead", range=(1, 64), live=True,
    )

    def __post_init__(self) -> None:
        _check_range("pipeline.refine", self)


@dataclass(frozen=True)
class SearchConfig:
    """Pose search in every detector box with the object's mesh alone (`refine.search`).

    Replaces the keypoint network's PnP in the two-stage path: each box of the detector is
    searched by refining ``num_rotations`` starts spread over all rotations, each placed to fill
    the box, and the refined pose of lowest alignment cost is reported, scored ``detection
    score * exp(-refine.cost_weight * cost)``, so boxes scored under ``pipeline.min_score``
    are not searched (they could not be published). Needs ``pipeline.refine.enabled`` (its settings
    and meshes are used) and a detector (``network.detector_model_path``). About 4 ms per start
    per box on one CPU core: for acquisition with tracking, not for every frame.
    """

    enabled: bool = _f(
        False,
        "search each detector box's pose with the mesh (needs pipeline.refine.enabled and a "
        "detector) instead of PnP on the keypoint network's output",
    )
    num_rotations: int = _f(
        200, "starting rotations per box, spread uniformly over all rotations (seeded: the same "
        "starts every frame)", range=(1, 5000), live=True,
    )
    def __post_init__(self) -> None:
        _check_range("pipeline.search", self)


@dataclass(frozen=True)
class TrackingConfig:
    """Tracking by refinement (`pipeline.tracking`); needs ``pipeline.refine.enabled``.

    Each instance's last refined pose starts the next frame's refinement; the keypoint source
    runs every ``detect_every`` frames (every frame while nothing is tracked) and on any frame
    where a track's alignment cost exceeds ``max_cost``, which re-initialises the track or,
    without a detection of its object, ends it (reported lost, its pose no longer published).
    A track's colour histograms persist across frames, updated at ``colour_learning_rate``.
    """

    enabled: bool = _f(
        False,
        "follow every refined pose from frame to frame (needs pipeline.refine.enabled): the "
        "last pose starts the next frame's refinement; lost tracks are not published",
    )
    detect_every: int = _f(
        5, "run the keypoint source every N-th frame (1: every frame) and whenever a track "
        "fails", range=(1, 1000), live=True,
    )
    max_cost: float = _f(
        0.5, "a track whose refined alignment cost exceeds this is re-initialised by a "
        "detection of its object, or lost (0.2-0.35: well aligned on clean renders, 0.4-0.8 "
        "on cluttered real images; log 2 = 0.69: colours no better than chance)",
        range=(0.0, 10.0), live=True,
    )
    colour_learning_rate: float = _f(
        0.2, "weight of each frame's colour histograms in a track's running ones (SRT3D: 0.2); "
        "a re-initialised track starts new ones", range=(0.01, 1.0), live=True,
    )

    def __post_init__(self) -> None:
        _check_range("pipeline.tracking", self)


@dataclass(frozen=True)
class MultiviewConfig:
    """Depth from the camera's own motion (``depth_source: multiview``, `motion_depth`).

    The camera optical frame's pose at each image stamp comes from ``pose_topic``
    (geometry_msgs/PoseStamped, interpolated between the two poses around the stamp: linear
    translation, slerp rotation) or from TF (``pose_type: tf``), times ``camera_extrinsic``.
    The estimator keeps a window of recent frames and sweeps planes between each frame and the
    earlier frames its keyframe rule picks (`motion_depth.keyframes`). The estimator's settings
    are live: a change starts a new window (the next frame has no depth yet).
    """

    pose_topic: str = _f(
        "camera_pose",
        "pose_type pose_stamped: geometry_msgs/PoseStamped topic of the camera (or of a body "
        "carrying it, see camera_extrinsic) in a fixed world frame; relative: remap it (a "
        "replay maps it to the bag's PoseStamped topic in the image's namespace)",
    )
    pose_type: str = _f(
        "pose_stamped",
        "pose_stamped (pose_topic) or tf (world_frame -> the image's frame_id on /tf and "
        "/tf_static at the image stamp); nav_msgs/Odometry is not supported (nav_msgs is not "
        "available to this package)",
        choices=POSE_TYPES,
    )
    world_frame: str = _f(
        "world", "pose_type tf: the fixed frame the camera moves in (a TF frame name)"
    )
    camera_extrinsic: tuple[float, ...] = _f(
        (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0),
        "the camera optical frame in the frame the poses are of: x y z [m] qx qy qz qw (unit "
        "quaternion); identity: the poses are the optical frame's",
    )
    max_pose_gap_s: float = _f(
        0.1,
        "pose_type pose_stamped: the poses just before and after an image stamp may be at most "
        "this far apart [s]; an image outside the poses' coverage or in a larger gap gets no "
        "depth (depth.no_pose on /diagnostics); live nodes wait up to this long for a late pose",
        range=(0.0, 10.0), live=True,
    )
    fallback: str = _f(
        "none",
        "depth of frames without usable motion (first frame, static or purely rotating camera, "
        "no camera pose): none (no depth published for them) or network (the depth network of "
        "pipeline.network.depth_model_path, which must be set)",
        choices=DEPTH_FALLBACKS,
    )
    internal_width: int = _f(
        320, "width the depth is computed at [px] (aspect kept, never upsampled); the output "
        "has the input's size", range=(16, 4096), live=True,
    )
    min_confidence: float = _f(
        0.2, "pixels whose match confidence (1 - best / second-best cost) is lower are NaN",
        range=(0.0, 0.99), live=True,
    )
    min_depth_m: float = _f(0.3, "nearest depth hypothesis [m]", range=(0.01, 100.0), live=True)
    max_depth_m: float = _f(
        6.0, "farthest depth hypothesis [m] (more than min_depth_m)", range=(0.02, 1000.0),
        live=True,
    )
    planes: int = _f(
        64, "depth hypotheses, uniform in inverse depth from max_depth_m to min_depth_m",
        range=(3, 512), live=True,
    )
    max_sources: int = _f(
        4, "earlier frames matched with each frame to adjust the poses (the sweep uses 3 of "
        "them, spread from the shortest to the longest baseline)", range=(1, 16), live=True,
    )
    min_baseline_m: float = _f(
        0.03, "an earlier frame is compared only when the camera moved at least this far from "
        "it [m]; without one the frame's status is no_motion", range=(0.001, 0.25), live=True,
    )
    min_parallax_px: float = _f(
        3.0, "refine_poses: an earlier frame is swept only when its matched features moved at "
        "least this far beyond what the rotation explains (median, px at internal_width): "
        "odometry noise is not taken for a baseline; without one the status is no_motion",
        range=(0.0, 100.0), live=True,
    )
    refine_poses: bool = _f(
        True, "correct the window's relative poses with matched image features before the "
        "sweep (absorbs pose noise of about a centimetre and a degree)", live=True,
    )
    temporal_fusion: bool = _f(
        True, "fuse each frame's depth with the previous frames' (moved into this frame, "
        "inverse-variance weighted); off: each frame's own sweep only", live=True,
    )
    max_relative_std: float = _f(
        0.1, "temporal_fusion: pixels whose estimated depth std exceeds this fraction of their "
        "depth are NaN (lower: sparser and more accurate)", range=(0.001, 10.0), live=True,
    )
    refiner_model: str = _f(
        "", "ONNX file of the learned depth refiner (tools/train_depth_refiner.py) run on the "
        "classical depth before upsampling: denser; its confidence (probability of being "
        "within about 10 %) replaces the classical one, pixels under 0.5 are NaN; empty: "
        "classical only (read at configure: a missing or wrong file fails the configure)",
    )

    def __post_init__(self) -> None:
        _check_range("pipeline.multiview", self)
        if not TOPIC_PATTERN.match(self.pose_topic):
            raise ConfigError(
                "pipeline.multiview.pose_topic: expected a ROS topic name (relative, /absolute "
                f"or ~/private; letters, digits, underscores, '/'), got {self.pose_topic!r}"
            )
        if (not self.world_frame or not TF_PREFIX_PATTERN.match(self.world_frame)
                or self.world_frame.endswith("/")):
            raise ConfigError(
                "pipeline.multiview.world_frame: expected a TF frame name (letters, digits, "
                f"_ . / -, not starting or ending with '/'), got {self.world_frame!r}"
            )
        if self.min_depth_m >= self.max_depth_m:
            raise ConfigError(
                f"pipeline.multiview.max_depth_m: expected more than min_depth_m "
                f"({self.min_depth_m} m), got {self.max_depth_m} m"
            )
        norm = math.sqrt(sum(v * v for v in self.camera_extrinsic[3:]))
        if abs(norm - 1.0) > 1e-3:
            raise ConfigError(
                "pipeline.multiview.camera_extrinsic: expected x y z qx qy qz qw with a unit "
                f"quaternion, got {list(self.camera_extrinsic)} (quaternion norm {norm:.6g})"
            )


@dataclass(frozen=True)
class PipelineConfig:
    """The ROS-free per-frame pipeline (`Pipeline.from_config`)."""

    keypoint_source: str = _f(
        "fiducial", "fiducial (calibration board via OpenCV) or network", choices=KEYPOINT_SOURCES
    )
    depth_source: str = _f(
        "none", "none (no ~/depth/image_raw, ~/points), network (the depth network: "
        "pipeline.network.depth_model_path) or multiview (depth from the camera's own motion "
        "and poses: pipeline.multiview)", choices=DEPTH_SOURCES,
    )
    input_rectified: bool = _f(
        False,
        "true: images are rectified (image_rect), CameraInfo P is used with no distortion; "
        "false: raw images, CameraInfo K + D (plumb_bob, rational_polynomial)",
        live=True,
    )
    min_score: float = _f(
        0.5, "poses with a lower score (inlier and confidence fraction) are dropped",
        range=(0.0, 1.0), live=True,
    )
    fiducial: FiducialConfig = field(default_factory=FiducialConfig)
    pnp: PnPConfig = field(default_factory=PnPConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    refine: RefineConfig = field(default_factory=RefineConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    multiview: MultiviewConfig = field(default_factory=MultiviewConfig)

    def __post_init__(self) -> None:
        _check_range("pipeline", self)
        if self.tracking.enabled and not self.refine.enabled:
            raise ConfigError("pipeline.tracking.enabled: true needs pipeline.refine.enabled: "
                              "true (tracks follow objects by refinement)")
        if self.search.enabled and not self.refine.enabled:
            raise ConfigError("pipeline.search.enabled: true needs pipeline.refine.enabled: true "
                              "(the search refines starts with the object meshes)")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> PipelineConfig:
        """Build from a (nested) mapping, e.g. the ``pipeline:`` section of a YAML file."""
        return dataclass_from_mapping(cls, values, section="pipeline")

    @classmethod
    def from_yaml(cls, path: str | Path) -> PipelineConfig:
        """Read a YAML file: a plain pipeline mapping, or a ROS params file of the node.

        In a ROS params file (``<node>: ros__parameters: pipeline: ...``) the ``pipeline``
        section is used.
        """
        return cls.from_mapping(pipeline_section(load_yaml(path)))


@dataclass(frozen=True)
class SyncConfig:
    """Matching of `image` and `camera_info` by header stamp."""

    mode: str = _f(
        "approximate",
        "exact (same stamp), approximate (within tolerance_s) or latest (last camera_info, for "
        "drivers that latch it)",
        choices=SYNC_MODES, live=True,
    )
    tolerance_s: float = _f(
        0.005, "approximate: largest stamp difference [s]", range=(0.0, 1.0), live=True
    )
    queue_size: int = _f(
        10, "messages waiting for a partner, per topic; older ones are dropped and counted",
        range=(1, 1000), read_only=True,
    )

    def __post_init__(self) -> None:
        _check_range("sync", self)


@dataclass(frozen=True)
class NodeConfig:
    """The ROS node `perception_node`; leaf fields are its parameters (dotted names)."""

    autostart: bool = _f(
        True, "configure and activate at start-up (false: wait for lifecycle transitions)",
        read_only=True,
    )
    image_transport: str = _f(
        "raw", "raw (sensor_msgs/Image on `image`) or compressed (CompressedImage jpeg/png on "
        "`image/compressed`)", choices=IMAGE_TRANSPORTS, read_only=True,
    )
    reliable_inputs: bool = _f(
        False, "RELIABLE input QoS (bag replay); false: sensor-data (BEST_EFFORT) QoS",
        read_only=True,
    )
    worker_queue_size: int = _f(
        1, "frames waiting for the worker; when full the oldest is dropped and counted",
        range=(1, 100), read_only=True,
    )
    torch_threads: int = _f(
        1,
        "torch intra-op threads of the node process, set at configure; 0 keeps torch's default "
        "(the per-frame PnP solves are small: one thread is fastest, many threads contend on "
        "busy CPUs)",
        range=(0, 256), read_only=True,
    )
    diagnostics_period_s: float = _f(
        1.0, "period of /diagnostics [s]", range=(0.05, 60.0), live=True
    )
    warn_throttle_s: float = _f(
        5.0, "least time between two warnings of the same kind [s]", range=(0.0, 3600.0),
        live=True,
    )
    points_decimation: int = _f(
        4, "~/points keeps every n-th pixel in u and v", range=(1, 64), live=True
    )
    marker_axis_length_m: float = _f(
        0.1, "length of the axes drawn on ~/markers and ~/overlay [m]", range=(1e-4, 10.0),
        live=True,
    )
    publish_tf: bool = _f(
        True, "broadcast every pose on /tf: child <tf_prefix><object_id>_<instance> of the "
        "image's frame_id, at the image stamp (skipped, with a warning, when frame_id is empty)",
        live=True,
    )
    tf_prefix: str = _f(
        "", "prefix of the object frames on /tf (e.g. robot1/); empty: none", live=True
    )
    output_frame: str = _f(
        "", "frame the poses, covariances, detections, markers and object frames are expressed "
        "in (e.g. base_link), from /tf and /tf_static at the image stamp; a frame without that "
        "transform is dropped and counted (errors.output_frame); empty: the image's frame_id"
    )
    tf_timeout_s: float = _f(
        0.2, "with output_frame (and pipeline.multiview.pose_type tf): how long a frame waits "
        "for /tf to reach its stamp [s]",
        range=(0.0, 10.0), live=True,
    )
    sync: SyncConfig = field(default_factory=SyncConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)

    def __post_init__(self) -> None:
        _check_range("node", self)
        if not TF_PREFIX_PATTERN.match(self.tf_prefix):
            raise ConfigError(
                "tf_prefix: expected empty or a TF frame prefix (letters, digits, _ . / -, not "
                f"starting with '/'), got {self.tf_prefix!r}"
            )
        if not TF_PREFIX_PATTERN.match(self.output_frame) or self.output_frame.endswith("/"):
            raise ConfigError(
                "output_frame: expected empty or a TF frame name (letters, digits, _ . / -, not "
                f"starting or ending with '/'), got {self.output_frame!r}"
            )

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> NodeConfig:
        """Build from the node's nested ``ros__parameters`` mapping."""
        return dataclass_from_mapping(cls, values, section="perception_node")


def load_yaml(path: str | Path, what: str = "config file") -> Any:
    """Parse a YAML file (safe loader: no Python objects), empty -> ``{}``.

    Args:
        path: the file.
        what: what the file is, for the messages (``"object description"``).

    Raises:
        ConfigError: naming the path, when it is absent, not a file, not UTF-8 text or not
            valid YAML (with the line).
    """
    import yaml

    p = Path(path)
    if not p.is_file():
        state = "is a directory, not a file" if p.is_dir() else "does not exist"
        raise ConfigError(f"{what} {str(p)!r} {state}")
    try:
        return yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as err:
        raise ConfigError(f"{what} {str(p)!r} is not UTF-8 text (a YAML file was expected): "
                          f"{err.reason} at byte {err.start}") from err
    except yaml.YAMLError as err:
        reason = " ".join(str(err).split())
        raise ConfigError(f"{what} {str(p)!r} is not valid YAML: {reason}") from err


def load_yaml_mapping(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """`load_yaml` for a file that must hold a mapping.

    Raises:
        ConfigError: as `load_yaml`, or when the document is not a mapping.
    """
    data = load_yaml(path, what)
    if not isinstance(data, Mapping):
        raise ConfigError(f"{what} {str(path)!r}: expected a mapping, got {type(data).__name__}")
    return dict(data)


def ros_parameters_section(document: Any, node_name: str = "perception_node") -> dict[str, Any]:
    """The ``ros__parameters`` mapping of `node_name` in a ROS params document.

    Accepts ``<node>:``, ``/**:`` and namespaced keys (``/ns/<node>:``) as ROS does.
    """
    if not isinstance(document, Mapping):
        raise ConfigError(f"params file: expected a mapping, got {type(document).__name__}")
    for key, value in document.items():
        if not isinstance(value, Mapping) or "ros__parameters" not in value:
            continue
        if key in ("/**", node_name) or str(key).rsplit("/", 1)[-1] == node_name:
            params = value["ros__parameters"] or {}
            if not isinstance(params, Mapping):
                raise ConfigError(f"params file: '{key}: ros__parameters:' must be a mapping, "
                                  f"got {type(params).__name__}")
            return dict(params)
    raise ConfigError(
        f"params file: no '{node_name}: ros__parameters:' (or '/**:') section; "
        f"found keys {sorted(map(str, document))}"
    )


def pipeline_section(document: Any) -> Mapping[str, Any]:
    """The pipeline mapping from a plain pipeline YAML or from a node params file."""
    if isinstance(document, Mapping) and any(
        isinstance(v, Mapping) and "ros__parameters" in v for v in document.values()
    ):
        return ros_parameters_section(document).get("pipeline", {})
    if not isinstance(document, Mapping):
        raise ConfigError(f"pipeline config: expected a mapping, got {type(document).__name__}")
    return document


def flatten_dataclass(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Leaf fields of a (nested) config dataclass as ``{"a.b.c": value}``."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        name = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            out.update(flatten_dataclass(value, prefix=f"{name}."))
        else:
            out[name] = value
    return out


def field_metadata(cls: type, prefix: str = "") -> dict[str, Mapping[str, Any]]:
    """Metadata (`doc`, `range`, `choices`, `read_only`, `live`) of every leaf field, by name."""
    out: dict[str, Mapping[str, Any]] = {}
    instance = cls()
    for f in dataclasses.fields(instance):  # type: ignore[arg-type]
        value = getattr(instance, f.name)
        name = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            out.update(field_metadata(type(value), prefix=f"{name}."))
        else:
            out[name] = f.metadata
    return out


def unflatten(values: Mapping[str, Any]) -> dict[str, Any]:
    """``{"a.b": 1}`` -> ``{"a": {"b": 1}}`` (the inverse of `flatten_dataclass`)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"parameter {key!r} clashes with a value at {part!r}")
        node[leaf] = value
    return out


#: Parameters rclpy declares on every node itself; a params file or override may set them.
ROS_OWN_PARAMETERS = ("use_sim_time", "start_type_description_service")
#: Name prefixes of parameters rclpy declares when a subscription is created (QoS overrides).
ROS_OWN_PREFIXES = ("qos_overrides.",)


def node_parameter_names() -> tuple[str, ...]:
    """Every parameter name of `perception_node` (dotted leaf names of `NodeConfig`)."""
    return tuple(flatten_dataclass(NodeConfig()))


def check_parameter_names(names: Any, *, source: str) -> None:
    """Refuse parameter names `perception_node` does not have, naming the closest known one.

    Args:
        names: dotted parameter names (``pipeline.min_score``).
        source: where they came from, for the message (a file, ``--param``, an override).

    Raises:
        ConfigError: for the first unknown name (sorted), with the closest known name.
    """
    import difflib

    known = node_parameter_names()
    unknown = sorted(
        n for n in names
        if n not in known and n not in ROS_OWN_PARAMETERS and not n.startswith(ROS_OWN_PREFIXES)
    )  # fmt: skip
    if not unknown:
        return
    name = unknown[0]
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    more = f" (and {len(unknown) - 1} more: {unknown[1:]})" if len(unknown) > 1 else ""
    raise ConfigError(
        f"{source}: unknown parameter {name!r}{hint}{more}; perception_node's parameters are "
        "listed in config/perception.yaml"
    )


def live_parameter_names() -> tuple[str, ...]:
    """Parameters the running node applies when they change (metadata ``live``)."""
    return tuple(name for name, meta in field_metadata(NodeConfig).items() if meta.get("live"))


def flatten_mapping(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested parameter mapping as ``{"a.b.c": value}`` (ROS params-file nesting)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_mapping(value, prefix=f"{name}."))
        else:
            out[name] = value
    return out


def check_params_file(path: str | Path, node_name: str = "perception_node") -> dict[str, Any]:
    """Read a ROS params file for `node_name` and check it before rclpy sees it.

    rclpy raises a raw RCLError on a file that is absent or not YAML, and silently ignores a
    section under another node's name and names the node does not declare; this says which.

    Returns:
        The node's parameters from the file, by dotted name.

    Raises:
        ConfigError: absent or malformed file, no section for `node_name` (or ``/**``), or a
            parameter name the node does not have.
    """
    document = load_yaml(path)
    try:
        section = ros_parameters_section(document, node_name)
    except ConfigError as err:
        reason = str(err).replace("params file: ", "", 1)
        raise ConfigError(f"params file {str(path)!r}: {reason}") from err
    values = flatten_mapping(section)
    check_parameter_names(values, source=f"params file {str(path)!r}")
    return values
