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

``depth_source: multiview`` (`pipeline.multiview`) computes depth from the camera's own motion:
``process(..., camera_to_world=T)`` gives each frame's camera pose, the `MultiviewDepth` source
keeps a window of recent frames, and `FrameResult.depth_status` says why a frame has no depth
(``first_frame``, ``no_motion``, ``no_pose``, ``bad_pose``; ``fallback: network`` gives such a
frame the depth network's depth instead). ``process(..., with_depth=False)`` leaves the depth out
(status ``deferred``) for a caller that runs `estimate_depth` on another thread (the node).

With ``pipeline.refine.enabled``, all poses of a frame are then refined in one batched
`refine.refine_pose` call (render-and-compare on the frame's RGB, the frame's camera) with each
object's mesh from ``config/objects/<id>.yaml`` (`render.objects`); the meshes, and with
``refine.contour_source: model`` their contour models, are loaded once at construction.
R, t and covariance become the refiner's, and the score becomes
``pnp_score * exp(-refine.cost_weight * cost)`` (cost: `RefineResult.cost`, the final
alignment cost), thresholded by ``min_score`` again, so a pose whose outline does not match the
image loses its score. An instance the refiner reports unusable (no finite cost, fewer than its
``min_lines`` lines fitted: behind the camera, outside the image) keeps its PnP pose, score and
covariance. Objects without a mesh (a calibration board) are not refined
(`Pipeline.refine_notes` says why).

``process(..., initial_poses=[InitialPose, ...])`` skips the keypoint source and refines the
given poses instead (score ``initial score * exp(-refine.cost_weight * cost)``); an instance
whose refinement is unusable is not reported (nothing was measured in this frame). With
``pipeline.tracking.enabled`` (needs refinement) the pipeline keeps tracks between frames
(`pipeline.tracking`): each track's last pose starts the next frame's refinement, the keypoint
source runs every ``tracking.detect_every`` frames or when a track's cost passes
``tracking.max_cost``, and tracks that end are reported in `FrameResult.lost`. Each track keeps
its colour histograms across frames (`refine.ColourStatistics`, updated at
``tracking.colour_learning_rate`` per frame); a detection that re-initialises a track drops them.

With ``pipeline.search.enabled`` (needs refinement and the two-stage source's detector) the
keypoint network is not run: each detector box is searched with the object's mesh
(`refine.search.search_pose`: ``search.num_rotations`` starts over all rotations, each fitted to
the box and refined, the lowest-cost pose kept), score ``detection score * exp(-cost_weight *
cost)``. With tracking, this is the detection that starts and re-initialises tracks.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dvc_perception.config import (
    REFINE_MIN_SIGMA_PX,
    REFINE_SCALES,
    ROS_NAME_TOKEN,
    PipelineConfig,
    RefineConfig,
)
from dvc_perception.engines.preprocess import check_rgb_image
from dvc_perception.errors import (
    ConfigError,
    DvcError,
    EngineUnavailableError,
    InputError,
    ModelSpecError,
    ShapeError,
)
from dvc_perception.geometry.camera import CameraModel
from dvc_perception.geometry.pnp import warm_up as warm_up_pnp
from dvc_perception.geometry.synthetic import synthetic_pnp_problem
from dvc_perception.pipeline.multiview import DEPTH_OK, DepthEstimate, MultiviewDepth
from dvc_perception.pipeline.pose import InitialPose, estimate_poses
from dvc_perception.pipeline.sources import DepthSource, KeypointDetection, KeypointSource
from dvc_perception.pipeline.tracking import LostTrack, Tracker
from dvc_perception.refine import (
    ColourStatistics,
    ContourModel,
    RefineSettings,
    build_contour_model,
    refine_pose,
)
from dvc_perception.render.mesh import Mesh

#: What the refiner aligns per object: its mesh (``contour_source: render``) or its sparse
#: contour model (``contour_source: model``).
RefineModel = Mesh | ContourModel


@dataclass(frozen=True)
class ObjectPose:
    """One detected object's pose, object-in-camera: ``X_cam = R @ X_obj + t``.

    Attributes:
        object_id: the object's id (a ROS name token).
        R: (3, 3) float64 rotation, object frame to camera optical frame.
        t: (3,) float64 m, object origin in the camera optical frame.
        score: in [0, 1], confidence-weighted fraction of keypoints that are PnP inliers; after
            refinement times ``exp(-refine.cost_weight * refine_cost)``; from the pose search
            (``pipeline.search``): the detection score times that factor.
        covariance: (6, 6) float64, ROS order (tx, ty, tz [m], rx, ry, rz [rad], small angles of
            a left perturbation ``R = exp([dθ]x) R_hat``), from the solver (PnP's, or the
            refiner's when the pose was refined).
        keypoints_2d: (N, 2) float64 px, the keypoints as found in the input image.
        n_inliers: number of RANSAC inliers among the N keypoints.
        instance: this pose's rank among the frame's poses of the same object id, by score
            (0: the best; several instances of one object each get their own pose).
        refine_cost: the refiner's final alignment cost (`RefineResult.cost`); None when the
            pose was not refined (refinement off, no mesh, or the refiner found it unusable).
        track_id: with ``pipeline.tracking``, the track this pose belongs to; None otherwise
            (and for poses that start no track).
    """

    object_id: str
    R: np.ndarray
    t: np.ndarray
    score: float
    covariance: np.ndarray
    keypoints_2d: np.ndarray
    n_inliers: int
    instance: int = 0
    refine_cost: float | None = None
    track_id: int | None = None


@dataclass(frozen=True)
class FrameResult:
    """What the pipeline found in one frame.

    Attributes:
        stamp: the frame's time [s], as given to `Pipeline.process`.
        poses: objects whose pose is valid and scored at least `min_score`.
        depth: (H, W) float32 m at the input resolution, NaN where unknown; None without a
            depth source, or when the depth source has none for this frame (`depth_status`).
        timings: stage durations [ms] (``detect_ms``, ``pnp_ms``, ``refine_ms`` (0 with
            refinement off), ``depth_ms``, ``total_ms``; with tracking ``track_ms``, the
            tracks' refinement; 0 for the stages that did not run).
        lost: tracks that ended in this frame (``pipeline.tracking``); their poses are not in
            `poses`.
        depth_status: ``none`` (no depth source), ``deferred`` (``with_depth=False``), ``ok``,
            or why a multiview frame has no depth of its own (`pipeline.multiview`).
        depth_fallback: the depth is the fallback network's (``multiview.fallback: network``).
        depth_confidence: (H, W) float32 in [0, 1] of a multiview depth, NaN where `depth` is;
            None without one (no depth, a depth network, the fallback's depth).
        depth_detail: why a multiview frame has no depth of its own, in words
            (`DepthEstimate.detail`); "" otherwise.
    """

    stamp: float
    poses: list[ObjectPose]
    depth: np.ndarray | None
    timings: dict[str, float] = field(default_factory=dict)
    lost: list[LostTrack] = field(default_factory=list)
    depth_status: str = "none"
    depth_fallback: bool = False
    depth_confidence: np.ndarray | None = None
    depth_detail: str = ""


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
    if net.verifier_model_path and not net.detector_model_path:
        raise ConfigError("pipeline.network.verifier_model_path re-scores detector boxes: it "
                          "needs pipeline.network.detector_model_path (the two-stage source)")
    try:
        if net.detector_model_path:
            detector = _network_model_path(config, "detector_model_path", "keypoint_source")
            verifier = (_network_model_path(config, "verifier_model_path", "keypoint_source")
                        if net.verifier_model_path else None)
            return TwoStageKeypointSource(
                detector, path, engine.backend, min_detection_score=net.min_detection_score,
                precision=engine.precision, device=engine.device, cache_dir=engine.cache_dir,
                verifier_path=verifier, verifier_candidates=net.verifier_candidates,
            )
        return NetworkKeypointSource(
            path, engine.backend, min_objectness=net.min_objectness, precision=engine.precision,
            device=engine.device, cache_dir=engine.cache_dir,
        )
    except (ConfigError, EngineUnavailableError) as err:
        raise _engine_error(err, engine, f"keypoint model {path.name}") from err


def make_depth_source(config: PipelineConfig) -> DepthSource | MultiviewDepth | None:
    """The depth source named by `config.depth_source` (None for ``none``).

    ``multiview`` is a `MultiviewDepth` (with the depth network as its fallback when
    ``multiview.fallback`` is ``network``).

    Raises:
        ConfigError: ``network`` (or the ``network`` fallback) with an empty
            ``network.depth_model_path``.
        ModelSpecError: the depth model is missing or does not describe itself (path named).
        EngineUnavailableError: the network backend cannot run here.
        ConfigError: the backend / precision / device choice does not suit the model (named).
    """
    if config.depth_source == "none":
        no_depth: DepthSource | None = None
        return no_depth
    if config.depth_source == "multiview":
        fallback = None
        if config.multiview.fallback == "network":
            fallback = _network_depth_source(config, "multiview.fallback")
        return MultiviewDepth(config.multiview, fallback)
    return _network_depth_source(config, "depth_source")


def _network_depth_source(config: PipelineConfig, option: str) -> DepthSource:
    """The depth network of ``network.depth_model_path`` (`option`: what asked for it)."""
    from dvc_perception.pipeline.network import NetworkDepthSource

    path = _network_model_path(config, "depth_model_path", option)
    engine = EngineSettings.from_config(config)
    try:
        return NetworkDepthSource(path, engine.backend, precision=engine.precision,
                                  device=engine.device, cache_dir=engine.cache_dir)
    except (ConfigError, EngineUnavailableError) as err:
        raise _engine_error(err, engine, f"depth model {path.name}") from err


def refine_settings(config: RefineConfig) -> RefineSettings:
    """The `RefineSettings` of ``pipeline.refine`` (the finest ``pyramid_levels`` scales)."""
    n = config.pyramid_levels
    return RefineSettings(scales=REFINE_SCALES[-n:], min_sigma_px=REFINE_MIN_SIGMA_PX[-n:],
                          iterations=config.iterations, passes=config.passes,
                          num_points=config.num_points, edge_weight=config.edge_weight,
                          threads=config.threads)


def load_refine_models(config: PipelineConfig, keypoint_source: KeypointSource
                       ) -> tuple[dict[str, RefineModel], list[str]]:
    """The refiner's model of every object of `keypoint_source` that has a mesh.

    Each object id's description ``config/objects/<id>.yaml`` (`render.objects.find_object_yaml`)
    gives the mesh; with ``refine.contour_source: model`` its sparse contour model is built
    (`refine.build_contour_model`, ``refine.num_points`` points per view; seconds per object).
    A fiducial board, and an object without a description or mesh, get none.

    Returns:
        (models by object id, one line per object that is not refined, saying why).

    Raises:
        MeshError: a description's mesh has no vertices or faces (the refiner cannot use it).
    """
    from dvc_perception.pipeline.fiducial import FiducialSource
    from dvc_perception.refine.contour import mesh_arrays
    from dvc_perception.render.objects import find_object_yaml, load_object

    models: dict[str, RefineModel] = {}
    notes: list[str] = []
    for object_id in keypoint_source.object_ids:
        if isinstance(keypoint_source, FiducialSource):
            notes.append(f"pipeline.refine: {object_id!r} is a calibration board: not refined")
            continue
        try:
            description = load_object(find_object_yaml(object_id))
        except DvcError as err:  # reported, not hidden: the node logs the notes at configure
            why = " ".join(str(err).split())
            notes.append(f"pipeline.refine: {object_id!r} has no object mesh ({why}): not "
                         "refined")
            continue
        mesh = description.mesh
        if config.refine.contour_source == "model":
            models[object_id] = build_contour_model(mesh, num_points=config.refine.num_points)
        else:
            mesh_arrays(mesh)  # an empty mesh fails here, not on the first frame
            models[object_id] = mesh
    return models, notes


def model_radius_m(model: RefineModel) -> float:
    """Largest distance of the model's surface from the object origin [m]."""
    if isinstance(model, ContourModel):
        return float(model.radius_m)
    return float(model.vertices.detach().double().norm(dim=1).max())


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
        refine_models: with ``refine.enabled``, the refiner's model (mesh or contour model) by
            object id, to reuse models built before; None: `load_refine_models`. Objects
            missing here are not refined. Ignored with refinement off.

    ``refine.enabled`` and ``refine.contour_source`` are read here (models are built once);
    the other ``refine`` settings, like ``min_score`` and ``pnp``, are read per frame from
    `config`.
    """

    def __init__(
        self,
        config: PipelineConfig,
        keypoint_source: KeypointSource,
        depth_source: DepthSource | MultiviewDepth | None = None,
        refine_models: Mapping[str, RefineModel] | None = None,
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
        #: Why an object is not refined, one line each (logged by the node at configure).
        self.refine_notes: list[str] = []
        self.refine_models: dict[str, RefineModel] = {}
        if config.refine.enabled:
            if refine_models is None:
                self.refine_models, self.refine_notes = load_refine_models(
                    config, keypoint_source)
            else:
                self.refine_models = dict(refine_models)
                self.refine_notes = [f"pipeline.refine: {i!r} has no model given: not refined"
                                     for i in keypoint_source.object_ids
                                     if i not in self.refine_models]
        self._refine_settings: tuple[RefineConfig, RefineSettings] | None = None
        if config.search.enabled:
            self._check_search_ready()
        #: The tracks (``tracking.enabled``, read here); None without tracking.
        self.tracker: Tracker | None = None
        if config.tracking.enabled:
            self.tracker = Tracker({i: 2.0 * model_radius_m(m)
                                    for i, m in self.refine_models.items()})
        self._warm_up_pose_path()
        self._warm_up_refiner()

    def _check_search_ready(self) -> None:
        """ConfigError unless ``pipeline.search`` can run: a detector and every class's mesh."""
        if not callable(getattr(self.keypoint_source, "detect_boxes", None)):
            raise ConfigError(f"pipeline.search.enabled: true needs a detector (the two-stage "
                              f"network source, network.detector_model_path); "
                              f"{self.keypoint_source.backend} gives no boxes")
        if missing := [i for i in self.keypoint_source.object_ids if i not in self.refine_models]:
            raise ConfigError(f"pipeline.search.enabled: true needs a mesh of every detector "
                              f"class; none for {missing} ({'; '.join(self.refine_notes)})")

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

    def _warm_up_refiner(self) -> None:
        """Refine one pose of every refiner model on a small synthetic frame (refinement on).

        Loads the compiled kernels (numba, from its disk cache) so the first real frame does
        not pay for them. The result is not used.
        """
        if not (self.config.refine.enabled and self.refine_models):
            return
        width, height = 160, 120
        camera = CameraModel(np.array([[200.0, 0.0, 79.5], [0.0, 200.0, 59.5], [0.0, 0.0, 1.0]]),
                             [], width, height)
        image = np.full((height, width, 3), 60, np.uint8)
        image[40:80, 60:100] = 200  # something to align with
        models = list(self.refine_models.values())
        radii = [model_radius_m(m) for m in models]
        t = np.array([[0.0, 0.0, 5.0 * max(r, 1e-3)] for r in radii])
        R = np.repeat(np.eye(3)[None], len(models), axis=0)
        refine_pose(image, camera, models, R, t, self._current_refine_settings())

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

    def process(self, image_rgb: np.ndarray, camera: CameraModel, stamp: float,
                initial_poses: Sequence[InitialPose] | None = None,
                camera_to_world: np.ndarray | None = None,
                with_depth: bool = True) -> FrameResult:
        """Poses (and depth) of one frame.

        Args:
            image_rgb: (H, W, 3) uint8 RGB, as captured (distorted unless rectified).
            camera: the image's camera; its width and height must be W and H.
            stamp: the frame's time [s] (carried into the result).
            initial_poses: None: poses from the keypoint source (and the tracks, with
                tracking). Given: these poses refined against the frame instead, no keypoint
                source, tracks untouched (unusable refinements are not reported).
            camera_to_world: ``depth_source: multiview``: (4, 4) the camera optical frame's
                pose in a fixed world frame at `stamp` [m]; None: no pose (no depth, status
                ``no_pose``). Ignored by the other depth sources.
            with_depth: False: no depth in this call (status ``deferred``; the caller runs
                `estimate_depth`).

        Returns:
            The frame's `FrameResult`.

        Raises:
            ShapeError: `image_rgb` is not (H, W, 3) uint8.
            InputError: the image size differs from the camera's; an initial pose's object
                has no refiner model.
            ConfigError: `initial_poses` with ``pipeline.refine.enabled`` false.
        """
        t0 = time.perf_counter()
        w, h = check_frame(image_rgb, camera)
        lost: list[LostTrack] = []
        if initial_poses is not None:
            refined, _ = self._refine_initial(initial_poses, image_rgb, camera)
            poses = [p for p in refined if p is not None and p.score >= self.config.min_score]
            stages = {"detect_ms": 0.0, "pnp_ms": 0.0,
                      "refine_ms": 1e3 * (time.perf_counter() - t0)}
        elif self.tracker is not None:
            poses, lost, stages = self._track(image_rgb, camera, stamp)
        else:
            poses, stages = self._detect(image_rgb, camera)
        poses = rank_instances(poses)
        t2r = time.perf_counter()
        found = DepthEstimate(None, "none")
        if self.depth_source is not None:
            found = (self.estimate_depth(image_rgb, camera, stamp, camera_to_world)
                     if with_depth else DepthEstimate(None, "deferred"))  # fmt: skip
        t3 = time.perf_counter()
        timings = {**stages, "depth_ms": 1e3 * (t3 - t2r), "total_ms": 1e3 * (t3 - t0)}
        return FrameResult(stamp=float(stamp), poses=poses, depth=found.depth, timings=timings,
                           lost=lost, depth_status=found.status,
                           depth_fallback=found.fallback,
                           depth_confidence=found.confidence,
                           depth_detail=found.detail)  # fmt: skip

    def estimate_depth(self, image_rgb: np.ndarray, camera: CameraModel, stamp: float,
                       camera_to_world: np.ndarray | None = None) -> DepthEstimate:
        """The depth source's depth of one frame (what `process` runs with `with_depth`).

        Thread-safe against `process(..., with_depth=False)` on another thread (the two touch
        different sources); calls of this method must come from one thread at a time.

        Args:
            image_rgb: (H, W, 3) uint8 RGB.
            camera: the image's camera (its pinhole K is used).
            stamp: the frame's time [s].
            camera_to_world: see `process`.

        Returns:
            The depth (None: no depth source, or none for this frame), its status and, from
            multiview depth, its confidence.

        Raises:
            ShapeError: `image_rgb` is not (H, W, 3) uint8, or the source's depth (or its
                confidence) does not have the image's size.
            InputError: the image size differs from the camera's.
        """
        t0 = time.perf_counter()
        w, h = check_frame(image_rgb, camera)
        source = self.depth_source
        if source is None:
            return DepthEstimate(None, "none")
        K = camera.K.detach().cpu().numpy()
        if isinstance(source, MultiviewDepth):
            found = source.estimate(image_rgb, K, stamp, camera_to_world, self.config.multiview)
        else:
            found = DepthEstimate(np.asarray(source.estimate(image_rgb, K), dtype=np.float32),
                                  DEPTH_OK)  # fmt: skip
        if found.depth is not None and found.depth.shape != (h, w):
            raise ShapeError(f"depth: expected shape ({h}, {w}), got {found.depth.shape}")
        if found.confidence is not None and found.confidence.shape != (h, w):
            raise ShapeError(f"depth confidence: expected shape ({h}, {w}), got "
                             f"{found.confidence.shape}")
        return dataclasses.replace(found, ms=1e3 * (time.perf_counter() - t0))

    def _detect(self, image_rgb: np.ndarray, camera: CameraModel
                ) -> tuple[list[ObjectPose], dict[str, float]]:
        """Keypoint source -> PnP -> refinement (when on): the poses and the stage times [ms]."""
        if self.config.search.enabled:
            return self._search(image_rgb, camera)
        t0 = time.perf_counter()
        detections = self.keypoint_source.detect(image_rgb)
        t1 = time.perf_counter()
        poses = [pose for d in detections for pose in self._estimate_pose(d, camera)]
        t2 = time.perf_counter()
        if self.config.refine.enabled and self.refine_models:
            poses = self._refine(poses, image_rgb, camera)
        t3 = time.perf_counter()
        return poses, {"detect_ms": 1e3 * (t1 - t0), "pnp_ms": 1e3 * (t2 - t1),
                       "refine_ms": 1e3 * (t3 - t2)}

    def _search(self, image_rgb: np.ndarray, camera: CameraModel
                ) -> tuple[list[ObjectPose], dict[str, float]]:
        """Detector boxes -> `refine.search.search_pose` per box: the poses and stage times."""
        from dvc_perception.refine.search import SearchSettings, search_pose

        t0 = time.perf_counter()
        boxes = self.keypoint_source.detect_boxes(image_rgb)  # type: ignore[attr-defined]
        t1 = time.perf_counter()
        cfg = self.config.search
        settings = SearchSettings(num_rotations=cfg.num_rotations)
        refine = self._current_refine_settings()
        weight = self.config.refine.cost_weight
        poses = []
        for box in boxes:
            # the pose's score is the box's times exp(-weight * cost) <= 1 (cost >= 0): a box
            # under min_score cannot be published, so it is not searched (~0.8 s saved each)
            if float(box.score) < self.config.min_score:
                continue
            object_id = self.keypoint_source.object_ids[box.class_index]
            found = search_pose(image_rgb, camera, self.refine_models[object_id], box.box_xywh,
                                settings, refine)
            if not math.isfinite(found.cost):
                continue
            pose = ObjectPose(object_id, found.R, found.t,
                              float(box.score) * math.exp(-weight * found.cost),
                              found.covariance, np.zeros((0, 2)), 0, refine_cost=found.cost)
            if pose.score >= self.config.min_score:
                poses.append(pose)
        return poses, {"detect_ms": 1e3 * (t1 - t0), "pnp_ms": 0.0,
                       "refine_ms": 1e3 * (time.perf_counter() - t1)}

    def _track(self, image_rgb: np.ndarray, camera: CameraModel, stamp: float
               ) -> tuple[list[ObjectPose], list[LostTrack], dict[str, float]]:
        """One tracking step (`pipeline.tracking`): poses, lost tracks, stage times [ms]."""
        tracker, settings = self.tracker, self.config.tracking
        if tracker is None:
            raise ConfigError("Pipeline._track: tracking is off")
        min_score = self.config.min_score
        tracker.begin_frame(stamp)
        t0 = time.perf_counter()
        followed, colours = self._refine_initial(tracker.starts(), image_rgb, camera,
                                                 tracker.colour_priors())
        stages = {"detect_ms": 0.0, "pnp_ms": 0.0, "refine_ms": 0.0,
                  "track_ms": 1e3 * (time.perf_counter() - t0)}
        detected = None
        if tracker.detection_due(followed, settings.detect_every, settings.max_cost, min_score):
            detected, detect_stages = self._detect(image_rgb, camera)
            stages.update(detect_stages)
        poses, lost = tracker.update(followed, detected, settings.max_cost, min_score, colours)
        return poses, lost, stages

    def _current_refine_settings(self) -> RefineSettings:
        """`refine_settings` of ``config.refine`` and ``tracking.colour_learning_rate``.

        Rebuilt when either changes.
        """
        key = (self.config.refine, self.config.tracking.colour_learning_rate)
        cached = self._refine_settings
        if cached is None or cached[0] != key:
            settings = dataclasses.replace(refine_settings(self.config.refine),
                                           colour_learning_rate=key[1])
            cached = (key, settings)
            self._refine_settings = cached
        return cached[1]

    def _refine(self, poses: list[ObjectPose], image_rgb: np.ndarray, camera: CameraModel
                ) -> list[ObjectPose]:
        """The PnP poses after one batched `refine_pose` (the module docstring's rules)."""
        chosen = [k for k, p in enumerate(poses) if p.object_id in self.refine_models]
        if not chosen:
            return poses
        refined, _ = self._align([poses[k] for k in chosen], image_rgb, camera)
        out = list(poses)
        for k, pose in zip(chosen, refined):
            if pose is not None:  # else the PnP pose, score and covariance stay
                out[k] = pose
        return [p for p in out if p.score >= self.config.min_score]

    def _refine_initial(self, starts: Sequence[InitialPose], image_rgb: np.ndarray,
                        camera: CameraModel,
                        colour_priors: Sequence[ColourStatistics | None] | None = None
                        ) -> tuple[list[ObjectPose | None], tuple[ColourStatistics | None, ...]]:
        """Each of `starts` refined (None where unusable, no `min_score`), and its colours.

        The colours: each refinement's final colour statistics (`_align`).

        Raises:
            ConfigError: refinement is off.
            InputError: an object of `starts` has no refiner model.
        """
        if not self.config.refine.enabled:
            raise ConfigError("refining from initial poses needs pipeline.refine.enabled: true")
        if missing := sorted({s.object_id for s in starts} - set(self.refine_models)):
            raise InputError(f"initial poses of {missing}: no refiner model (objects with "
                             f"one: {sorted(self.refine_models)})")
        empty = np.zeros((0, 2))
        return self._align([
            ObjectPose(s.object_id, np.asarray(s.R, np.float64), np.asarray(s.t, np.float64),
                       float(s.score), np.zeros((6, 6)), empty, 0, track_id=s.track_id)
            for s in starts], image_rgb, camera, colour_priors)  # fmt: skip

    def _align(self, poses: list[ObjectPose], image_rgb: np.ndarray, camera: CameraModel,
               colour_priors: Sequence[ColourStatistics | None] | None = None
               ) -> tuple[list[ObjectPose | None], tuple[ColourStatistics | None, ...]]:
        """`poses` after one batched `refine_pose` (None: unusable), and their colours.

        The colours: the refiner's final colour statistics per pose (`RefineResult.colours`).

        R, t and covariance become the refiner's, ``refine_cost`` its cost, the score is
        multiplied by ``exp(-refine.cost_weight * cost)``. Every object needs a refiner model.
        `colour_priors`: `refine_pose`'s, one per pose (None: none).
        """
        if not poses:
            return [], ()
        settings = self._current_refine_settings()
        found = refine_pose(image_rgb, camera, [self.refine_models[p.object_id] for p in poses],
                            np.stack([p.R for p in poses]), np.stack([p.t for p in poses]),
                            settings, colour_priors)  # fmt: skip
        usable = found.usable(settings.min_lines).numpy()
        weight = self.config.refine.cost_weight
        return [None if not usable[b] else dataclasses.replace(
            pose, R=found.R[b].numpy().astype(np.float64),
            t=found.t[b].numpy().astype(np.float64),
            covariance=found.covariance[b].numpy().astype(np.float64),
            score=pose.score * math.exp(-weight * float(found.cost[b])),
            refine_cost=float(found.cost[b]),
        ) for b, pose in enumerate(poses)], found.colours  # fmt: skip

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
