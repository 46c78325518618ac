# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""ROS-free per-frame pipeline: keypoints -> undistortion -> robust weighted PnP -> poses.

``Pipeline.from_config(path_or_dict).process(image_rgb, camera, stamp) -> FrameResult``.
Keypoints come from a pluggable `KeypointSource` (the fiducial source or the keypoint network);
depth from an optional `DepthSource` (the depth network; None: no depth). Importing this module
loads neither rclpy nor tensorrt.

Per detection: undistort the keypoints (`CameraModel.undistort_points`), fit all of them with the
confidence-weighted PnP (EPnP + Levenberg-Marquardt); when a keypoint is off by more than
``pnp.threshold_px`` (or ``pnp.always_ransac``), `solve_pnp_ransac` instead (MSAC hypotheses, then
weighted LM on the inliers). Score = sum of inlier confidences / N; poses that are invalid or
below ``min_score`` are dropped; the covariance is the solver's. 4 keypoints suffice.

``keypoint_source: network`` / ``depth_source: network`` use `pipeline.network`
(``pipeline.network.model_path`` / ``depth_model_path`` / ``backend`` / ``precision`` / ``device``
/ ``engine_cache_dir``, passed to `engines.load_engine`): the frame is letterboxed
to the network input, the engine runs, keypoints go back with `Letterbox.points_to_source` and
depth with `Letterbox.depth_to_source` (nearest, NaN in the padding); object ids and 3D keypoints
come from the model metadata. A missing model fails at configure, naming the path. Any other
source can be passed directly: ``Pipeline(config, source, depth_source)``.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dvc_perception.config import ROS_NAME_TOKEN, PipelineConfig
from dvc_perception.engines.preprocess import check_rgb_image
from dvc_perception.errors import (
    ConfigError,
    EngineUnavailableError,
    InputError,
    ModelSpecError,
    ShapeError,
)
from dvc_perception.geometry.camera import CameraModel
from dvc_perception.geometry.pnp import warm_up as warm_up_pnp
from dvc_perception.geometry.synthetic import synthetic_pnp_problem
from dvc_perception.pipeline.pose import estimate_poses
from dvc_perception.pipeline.sources import DepthSource, KeypointDetection, KeypointSource


@dataclass(frozen=True)
class ObjectPose:
    """One detected object's pose, object-in-camera: ``X_cam = R @ X_obj + t``.

    Attributes:
        object_id: the object's id (a ROS name token).
        R: (3, 3) float64 rotation, object frame to camera optical frame.
        t: (3,) float64 m, object origin in the camera optical frame.
        score: in [0, 1], confidence-weighted fraction of keypoints that are PnP inliers.
        covariance: (6, 6) float64, ROS order (tx, ty, tz [m], rx, ry, rz [rad], small angles of
            a left perturbation ``R = exp([dθ]x) R_hat``), from the solver.
        keypoints_2d: (N, 2) float64 px, the keypoints as found in the input image.
        n_inliers: number of RANSAC inliers among the N keypoints.
        instance: this pose's rank among the frame's poses of the same object id, by score
            (0: the best; several instances of one object each get their own pose).
    """

    object_id: str
    R: np.ndarray
    t: np.ndarray
    score: float
    covariance: np.ndarray
    keypoints_2d: np.ndarray
    n_inliers: int
    instance: int = 0


@dataclass(frozen=True)
class FrameResult:
    """What the pipeline found in one frame.

    Attributes:
        stamp: the frame's time [s], as given to `Pipeline.process`.
        poses: objects whose pose is valid and scored at least `min_score`.
        depth: (H, W) float32 m at the input resolution, NaN where unknown; None without a
            depth source.
        timings: stage durations [ms] (``detect_ms``, ``pnp_ms``, ``depth_ms``, ``total_ms``).
    """

    stamp: float
    poses: list[ObjectPose]
    depth: np.ndarray | None
    timings: dict[str, float] = field(default_factory=dict)


def _network_model_path(config: PipelineConfig, key: str, source: str) -> Path:
    """``pipeline.network.<key>`` as an existing file; ConfigError/ModelSpecError otherwise."""
    value = getattr(config.network, key)
    if not value:
        raise ConfigError(
            f"pipeline.{source} 'network' needs pipeline.network.{key} (an exported ONNX "
            "model); it is empty"
        )
    path = Path(value).expanduser()
    if not path.is_file():
        raise ModelSpecError(f"pipeline.network.{key}: model file {str(path)!r} does not exist")
    return path


def default_engine_cache_dir() -> Path:
    """Where TensorRT engines are cached when ``pipeline.network.engine_cache_dir`` is empty.

    ``$XDG_CACHE_HOME/dvc_perception/engines``, else ``~/.cache/dvc_perception/engines``; the
    cache key hashes the model bytes, precision, TensorRT version and GPU (`engines.cache`), so
    one directory serves every model and a restart reuses the engine instead of rebuilding it.
    """
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "dvc_perception" / "engines"


@dataclass(frozen=True)
class EngineSettings:
    """The engine arguments of `pipeline.network`, as `engines.load_engine` takes them.

    Attributes:
        backend: "auto" | "onnxruntime" | "tensorrt" | "torch".
        precision: "fp32" | "fp16" | "int8".
        device: None (the backend's default), "cpu", "cuda" or "cuda:N".
        cache_dir: TensorRT engine cache directory.
    """

    backend: str
    precision: str
    device: str | None
    cache_dir: Path

    @classmethod
    def from_config(cls, config: PipelineConfig) -> EngineSettings:
        """``pipeline.network``'s backend, precision, device ("" -> None) and cache dir."""
        net = config.network
        cache_dir = Path(net.engine_cache_dir).expanduser() if net.engine_cache_dir else (
            default_engine_cache_dir())
        return cls(net.backend, net.precision, net.device or None, cache_dir)

    def describe(self) -> str:
        """``backend 'x', precision 'y', device 'z'`` for error messages."""
        return (f"pipeline.network.backend {self.backend!r}, precision {self.precision!r}, "
                f"device {self.device or '(default)'!r}")


def _engine_error(err: ConfigError | EngineUnavailableError, settings: EngineSettings,
                  what: str) -> ConfigError | EngineUnavailableError:
    """`err` again (same type), prefixed with the engine choice that could not be loaded."""
    return type(err)(f"{what} with {settings.describe()}: {err}")


def make_keypoint_source(config: PipelineConfig) -> KeypointSource:
    """The keypoint source named by `config.keypoint_source`.

    ``network`` with ``network.detector_model_path`` set is the two-stage source (detector on
    the whole image, keypoints on a crop of every instance); without it the keypoint model sees
    the whole letterboxed image (one pose per object id).

    Raises:
        ConfigError: ``network`` with an empty ``network.model_path``.
        ModelSpecError: the keypoint model is missing or does not describe itself (path named).
        EngineUnavailableError: the network backend cannot run here.
        ConfigError: the backend / precision / device choice does not suit the model (named).
    """
    if config.keypoint_source == "fiducial":
        from dvc_perception.pipeline.fiducial import FiducialSource

        return FiducialSource(config.fiducial)
    from dvc_perception.pipeline.network import NetworkKeypointSource, TwoStageKeypointSource

    path = _network_model_path(config, "model_path", "keypoint_source")
    net = config.network
    engine = EngineSettings.from_config(config)
    try:
        if net.detector_model_path:
            detector = _network_model_path(config, "detector_model_path", "keypoint_source")
            return TwoStageKeypointSource(
                detector, path, engine.backend, min_detection_score=net.min_detection_score,
                precision=engine.precision, device=engine.device, cache_dir=engine.cache_dir,
            )
        return NetworkKeypointSource(
            path, engine.backend, min_objectness=net.min_objectness, precision=engine.precision,
            device=engine.device, cache_dir=engine.cache_dir,
        )
    except (ConfigError, EngineUnavailableError) as err:
        raise _engine_error(err, engine, f"keypoint model {path.name}") from err


def make_depth_source(config: PipelineConfig) -> DepthSource | None:
    """The depth source named by `config.depth_source` (None for ``none``).

    Raises:
        ConfigError: ``network`` with an empty ``network.depth_model_path``.
        ModelSpecError: the depth model is missing or does not describe itself (path named).
        EngineUnavailableError: the network backend cannot run here.
        ConfigError: the backend / precision / device choice does not suit the model (named).
    """
    if config.depth_source == "none":
        no_depth: DepthSource | None = None
        return no_depth
    from dvc_perception.pipeline.network import NetworkDepthSource

    path = _network_model_path(config, "depth_model_path", "depth_source")
    engine = EngineSettings.from_config(config)
    try:
        return NetworkDepthSource(path, engine.backend, precision=engine.precision,
                                  device=engine.device, cache_dir=engine.cache_dir)
    except (ConfigError, EngineUnavailableError) as err:
        raise _engine_error(err, engine, f"depth model {path.name}") from err


def rank_instances(poses: list[ObjectPose]) -> list[ObjectPose]:
    """The poses grouped by object id, best score first, ``instance`` = rank within the id.

    Object ids keep the order of their first pose; sorting is stable for equal scores.
    """
    order: dict[str, list[ObjectPose]] = {}
    for pose in poses:
        order.setdefault(pose.object_id, []).append(pose)
    return [dataclasses.replace(p, instance=k)
            for group in order.values()
            for k, p in enumerate(sorted(group, key=lambda q: -q.score))]


def check_frame(image_rgb: np.ndarray, camera: CameraModel) -> tuple[int, int]:
    """(width, height) of a frame the pipeline can process.

    Raises:
        ShapeError: `image_rgb` is not (H, W, 3) uint8.
        InputError: the image size differs from the camera's.
    """
    w, h = check_rgb_image(image_rgb)
    if (w, h) != (camera.width, camera.height):
        raise InputError(f"image is {w}x{h} but its camera model is "
                         f"{camera.width}x{camera.height}")
    return w, h


class Pipeline:
    """Per-frame pose (and optional depth) estimation, independent of ROS.

    Args:
        config: pipeline settings.
        keypoint_source: where keypoints come from (any `KeypointSource`).
        depth_source: optional depth estimator; None gives ``FrameResult.depth = None``.
    """

    def __init__(
        self,
        config: PipelineConfig,
        keypoint_source: KeypointSource,
        depth_source: DepthSource | None = None,
    ) -> None:
        for object_id in keypoint_source.object_ids:
            if not ROS_NAME_TOKEN.match(object_id):
                raise ConfigError(
                    f"object id {object_id!r} of {keypoint_source.backend}: expected a ROS name "
                    "token (letters, digits, underscores, not starting with a digit)"
                )
        self.config = config
        self.keypoint_source = keypoint_source
        self.depth_source = depth_source
        self._warm_up_pose_path()

    def _warm_up_pose_path(self) -> None:
        """Run the per-frame pose code once (direct fit and RANSAC) on a synthetic detection.

        Loads the compiled solver (`pnp.warm_up`) and pays every first-call cost here, so the
        first real frame is as fast as the rest.
        """
        warm_up_pnp()
        problem = synthetic_pnp_problem(1, 17, 0.5, seed=0, outlier_ratio=0.2)
        for always_ransac in (False, True):
            settings = dataclasses.replace(self.config.pnp, always_ransac=always_ransac)
            estimate_poses(problem.keypoints_px, problem.points_obj, problem.K,
                           problem.weights, settings)

    @classmethod
    def from_config(cls, config: PipelineConfig | Mapping[str, Any] | str | Path) -> Pipeline:
        """Build from a `PipelineConfig`, a mapping, or a YAML file (plain or ROS params file)."""
        if isinstance(config, (str, Path)):
            config = PipelineConfig.from_yaml(config)
        elif isinstance(config, Mapping):
            config = PipelineConfig.from_mapping(config)
        elif not isinstance(config, PipelineConfig):
            raise ConfigError(
                f"Pipeline.from_config: expected a PipelineConfig, mapping or path, got "
                f"{type(config).__name__}"
            )
        return cls(config, make_keypoint_source(config), make_depth_source(config))

    @property
    def object_ids(self) -> tuple[str, ...]:
        """Every object id this pipeline can report."""
        return tuple(self.keypoint_source.object_ids)

    @property
    def backend(self) -> str:
        """Description of the keypoint (and depth) backends, for diagnostics."""
        depth = self.depth_source.backend if self.depth_source is not None else "none"
        return f"keypoints={self.keypoint_source.backend}; depth={depth}"

    def process(self, image_rgb: np.ndarray, camera: CameraModel, stamp: float) -> FrameResult:
        """Poses (and depth) of one frame.

        Args:
            image_rgb: (H, W, 3) uint8 RGB, as captured (distorted unless rectified).
            camera: the image's camera; its width and height must be W and H.
            stamp: the frame's time [s] (carried into the result).

        Returns:
            The frame's `FrameResult`.

        Raises:
            ShapeError: `image_rgb` is not (H, W, 3) uint8.
            InputError: the image size differs from the camera's.
        """
        t0 = time.perf_counter()
        w, h = check_frame(image_rgb, camera)
        detections = self.keypoint_source.detect(image_rgb)
        t1 = time.perf_counter()
        poses = [pose for d in detections for pose in self._estimate_pose(d, camera)]
        poses = rank_instances(poses)
        t2 = time.perf_counter()
        depth = None
        if self.depth_source is not None:
            K = camera.K.detach().cpu().numpy()
            depth = np.asarray(self.depth_source.estimate(image_rgb, K), dtype=np.float32)
            if depth.shape != (h, w):
                raise ShapeError(f"depth: expected shape ({h}, {w}), got {depth.shape}")
        t3 = time.perf_counter()
        timings = {
            "detect_ms": 1e3 * (t1 - t0),
            "pnp_ms": 1e3 * (t2 - t1),
            "depth_ms": 1e3 * (t3 - t2),
            "total_ms": 1e3 * (t3 - t0),
        }
        return FrameResult(stamp=float(stamp), poses=poses, depth=depth, timings=timings)

    def _estimate_pose(self, det: KeypointDetection, camera: CameraModel) -> list[ObjectPose]:
        """Robust weighted PnP of one detection: [pose], or [] when invalid or below min_score."""
        n = det.keypoints_px.shape[0]
        if n < 4:
            return []
        uv = torch.as_tensor(det.keypoints_px, dtype=torch.float64).unsqueeze(0)
        uv_ideal = camera.undistort_points(uv) if camera.has_distortion else uv
        x3d = torch.as_tensor(det.points_obj, dtype=torch.float64).unsqueeze(0)
        weights = torch.as_tensor(det.confidence, dtype=torch.float64).unsqueeze(0)
        K = camera.K.to(torch.float64).unsqueeze(0)
        found = estimate_poses(uv_ideal, x3d, K, weights, self.config.pnp)
        if not bool(found.valid[0]):
            return []
        inliers = found.inliers[0].cpu().numpy()
        score = float(det.confidence[inliers].sum() / n)
        if score < self.config.min_score:
            return []
        pose = ObjectPose(
            object_id=det.object_id,
            R=found.R[0].cpu().numpy().astype(np.float64),
            t=found.t[0].cpu().numpy().astype(np.float64),
            score=score,
            covariance=found.covariance[0].cpu().numpy().astype(np.float64),
            keypoints_2d=det.keypoints_px.copy(),
            n_inliers=int(inliers.sum()),
        )
        return [pose]
