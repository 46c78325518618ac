# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Depth from the camera's own motion in the pipeline's depth slot (``depth_source: multiview``).

- `motion_depth_settings`: the one map from ``pipeline.multiview`` to `MotionDepthSettings`.
- `MultiviewDepth`: the depth source. Unlike a single-image `DepthSource` it needs each frame's
  stamp and camera pose (`Pipeline.process(..., camera_to_world=)`), keeps a window of recent
  frames (`motion_depth.MotionDepthEstimator`) and reports why a frame has no depth
  (`DepthEstimate.status`). With ``fallback: network`` such a frame gets the depth network's.
- `CameraPoseBuffer`: stamped camera poses (a PoseStamped topic), thread-safe, looked up at an
  image stamp (`geometry.stamped.StampedTransforms`): linear interpolation of the translation
  and slerp of the rotation between the two poses around the stamp, never extrapolated, refused
  across a gap wider than ``max_pose_gap_s``.

Depth statuses (`FrameResult.depth_status`, ``depth.<status>`` on /diagnostics): ``ok``;
``first_frame`` and ``no_motion`` (no earlier frame far enough: the first frame of a window, a
static or purely rotating camera); ``no_pose`` (no camera pose at the stamp); ``bad_pose`` (a
camera pose that is not a rigid transform: NaN, not a rotation). Only ``ok`` frames carry the
estimator's depth and its per-pixel confidence (`DepthEstimate.confidence`); the others carry
none (``FrameResult.depth`` None: nothing is published for them) unless the fallback gives the
network's (which has no confidence).

ROS-free: the node converts messages and calls these.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from dvc_perception.config import MultiviewConfig
from dvc_perception.errors import InputError
from dvc_perception.geometry.so3 import quaternion_to_matrix
from dvc_perception.geometry.stamped import (
    AFTER,
    BEFORE,
    EMPTY,
    SampleUnavailable,
    StampedTransforms,
    wait_for_sample,
)
from dvc_perception.motion_depth.estimator import MotionDepthEstimator, MotionDepthSettings
from dvc_perception.motion_depth.keyframes import KeyframeRule, check_pose
from dvc_perception.motion_depth.pose_refine import PoseRefineSettings
from dvc_perception.motion_depth.sweep import SweepSettings
from dvc_perception.pipeline.sources import DepthSource

DEPTH_OK = "ok"
#: No new depth (as ``no_motion``), but the last depth moved into this frame by the odometry
#: (`motion_depth.estimator.STATUS_CARRIED`); published as ``ok`` is.
DEPTH_CARRIED = "carried"
DEPTH_FIRST_FRAME = "first_frame"
DEPTH_NO_MOTION = "no_motion"
DEPTH_NO_POSE = "no_pose"
DEPTH_BAD_POSE = "bad_pose"
#: Every status of a multiview frame, in /diagnostics order.
DEPTH_STATUSES = (DEPTH_OK, DEPTH_CARRIED, DEPTH_FIRST_FRAME, DEPTH_NO_MOTION, DEPTH_NO_POSE,
                  DEPTH_BAD_POSE)
#: What a status other than ``ok`` means, for warnings and replay summaries (`DepthEstimate`
#: details a bad pose's problem itself).
DEPTH_STATUS_NOTES = {
    DEPTH_FIRST_FRAME: "the first frame of a window (start, new image size, stamp going back)",
    DEPTH_NO_MOTION: "no earlier frame far enough from this one (min_baseline_m) or with "
                     "parallax in the images (min_parallax_px): a static, slow or purely "
                     "rotating camera",
    DEPTH_NO_POSE: "no camera pose for this frame",
    DEPTH_BAD_POSE: "the camera pose is not a rigid transform (NaN/inf, or not a rotation)",
}
#: Dynamic poses kept behind the newest one by a live node [s] (as tf2's cache).
DEFAULT_POSE_CACHE_S = 10.0


def motion_depth_settings(config: MultiviewConfig) -> MotionDepthSettings:
    """The estimator settings of ``pipeline.multiview``.

    Settings the node does not expose keep the estimator's own defaults.
    """
    return MotionDepthSettings(
        internal_width=config.internal_width,
        min_confidence=config.min_confidence,
        temporal_fusion=config.temporal_fusion,
        max_relative_std=config.max_relative_std,
        min_parallax_px=config.min_parallax_px,
        keyframes=dataclasses.replace(KeyframeRule(), min_baseline_m=config.min_baseline_m,
                                      max_sources=config.max_sources),
        sweep=dataclasses.replace(SweepSettings(), min_depth_m=config.min_depth_m,
                                  max_depth_m=config.max_depth_m, planes=config.planes),
        pose_refine=dataclasses.replace(PoseRefineSettings(), enabled=config.refine_poses),
    )


def pose_from_xyz_quaternion(values: tuple[float, ...] | np.ndarray) -> np.ndarray:
    """(7,) x y z [m] qx qy qz qw -> (4, 4) float64 transform (the quaternion normalised).

    Raises:
        InputError: not 7 finite numbers, or a zero quaternion.
    """
    v = np.asarray(values, np.float64).reshape(-1)
    if v.shape != (7,) or not np.all(np.isfinite(v)) or np.linalg.norm(v[3:]) == 0.0:
        raise InputError(f"pose: expected 7 finite numbers x y z qx qy qz qw with a non-zero "
                         f"quaternion, got {v.tolist()}")
    T = np.eye(4)
    T[:3, :3] = quaternion_to_matrix(torch.as_tensor(v[3:])).numpy()
    T[:3, 3] = v[:3]
    return T


class PoseUnavailable(InputError):
    """No camera pose at an image stamp.

    None received, the stamp outside the poses' coverage, or the poses around it too far apart.
    """


class _NotYet(PoseUnavailable):
    """The stamp is after the newest pose (a newer one may still come)."""


class CameraPoseBuffer:
    """Stamped poses of one moving frame in a fixed world frame, looked up at a stamp.

    Thread-safe; the poses are a `geometry.stamped.StampedTransforms`.

    Args:
        max_age_s: poses older than this behind the newest one are dropped [s]; None keeps
            every pose (a bag replay, which loads all of them first).
    """

    def __init__(self, max_age_s: float | None = DEFAULT_POSE_CACHE_S) -> None:
        self._poses = StampedTransforms(None if max_age_s is None else int(max_age_s * 1e9))
        self._changed = threading.Condition()

    def __len__(self) -> int:
        with self._changed:
            return len(self._poses)

    def add(self, stamp_ns: int, T_world_pose: np.ndarray) -> None:
        """Add the pose (4, 4) [m] at `stamp_ns` (a pose at a stamp already held replaces it).

        Raises:
            InputError: not a rigid transform (`check_pose`): the caller counts and skips it.
        """
        T = check_pose(T_world_pose, name=f"pose at {stamp_ns} ns")
        with self._changed:
            self._poses.insert(stamp_ns, T[:3, :3], T[:3, 3])
            self._changed.notify_all()

    def lookup(self, stamp_ns: int, max_gap_s: float, timeout_s: float = 0.0) -> np.ndarray:
        """The pose (4, 4) at `stamp_ns`, interpolated between the poses around it.

        Translation linear, rotation along the geodesic (slerp), never extrapolated.

        Args:
            stamp_ns: the image stamp [ns].
            max_gap_s: the poses just before and after the stamp may be at most this far apart.
            timeout_s: how long to wait for a pose after the stamp when none has arrived yet
                (odometry often comes after the image it belongs to).

        Raises:
            PoseUnavailable: naming the stamp and the poses' coverage.
        """
        max_gap_ns = int(round(max_gap_s * 1e9))
        return wait_for_sample(self._changed, lambda: self._lookup(stamp_ns, max_gap_ns),
                               timeout_s, retry_on=_NotYet, give_up=PoseUnavailable)

    def _lookup(self, stamp_ns: int, max_gap_ns: int) -> np.ndarray:
        try:
            R, t = self._poses.lookup(stamp_ns, max_gap_ns)
        except SampleUnavailable as err:
            head = f"no camera pose at {stamp_ns} ns: "
            span = f"poses from {err.oldest_ns} to {err.newest_ns} ns"
            if err.reason == EMPTY:
                raise _NotYet(f"{head}no pose received") from None
            if err.reason == AFTER:
                raise _NotYet(f"{head}{span}; the stamp is {err.outside_ms:.1f} ms after the "
                              "newest") from None
            if err.reason == BEFORE:
                raise PoseUnavailable(f"{head}{span}; the stamp is {err.outside_ms:.1f} ms "
                                      "before the oldest") from None
            raise PoseUnavailable(
                f"{head}the poses around it are {err.gap_ns / 1e9:.3f} s apart, more than "
                f"pipeline.multiview.max_pose_gap_s ({max_gap_ns / 1e9:g} s)"
            ) from None
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = R, t
        return T


@dataclass(frozen=True)
class DepthEstimate:
    """Depth of one frame and why (not) (`MultiviewDepth.estimate`, `Pipeline.estimate_depth`).

    Attributes:
        depth: (H, W) float32 m, NaN where unknown; None: no depth for this frame.
        status: one of `DEPTH_STATUSES` (a single-image depth source: ``ok``).
        fallback: the depth is the fallback network's (status not ``ok``).
        detail: why the status is not ``ok`` (the pose's problem), "" otherwise.
        ms: time taken [ms].
        confidence: (H, W) float32 in [0, 1] of the multiview depth, NaN where the depth is;
            None when the source gives none (no depth, a depth network, the fallback).
    """

    depth: np.ndarray | None
    status: str
    fallback: bool = False
    detail: str = ""
    ms: float = 0.0
    confidence: np.ndarray | None = None


class MultiviewDepth:
    """The depth source of ``depth_source: multiview``: one `MotionDepthEstimator` (stateful).

    Args:
        config: ``pipeline.multiview`` at construction; `estimate` takes the current one, and a
            change of the estimator's settings starts a new window.
        fallback: the single-image depth source of ``fallback: network``; None: no fallback.
        warm_up: run the estimator once on small synthetic frames (a throwaway estimator), so
            the first real frame does not pay for loading the compiled kernels.
    """

    def __init__(self, config: MultiviewConfig, fallback: DepthSource | None = None,
                 warm_up: bool = True) -> None:
        self.fallback = fallback
        self._settings = motion_depth_settings(config)
        #: ``refiner_model`` (read at construction): the learned refiner, None: classical only
        self._refiner = None
        if config.refiner_model:
            from dvc_perception.pipeline.depth_refiner import DepthRefiner

            self._refiner = DepthRefiner(config.refiner_model)
        self._estimator = MotionDepthEstimator(self._settings, self._refiner)
        self._lock = threading.Lock()
        self.backend = "multiview:plane-sweep" + (
            f" (fallback {fallback.backend})" if fallback is not None else "")
        if warm_up:
            _warm_up(self._settings)

    def reset(self) -> None:
        """Forget the stored frames (the next frame starts a new window)."""
        with self._lock:
            self._estimator.reset()

    def estimate(self, image_rgb: np.ndarray, K: np.ndarray, stamp: float,
                 camera_to_world: np.ndarray | None, config: MultiviewConfig) -> DepthEstimate:
        """Depth of `image_rgb` (H, W, 3) uint8 at `stamp` [s].

        Args:
            image_rgb: the frame.
            K: (3, 3) pinhole intrinsics [px].
            stamp: the frame's time [s]; a stamp going back starts a new window.
            camera_to_world: (4, 4) the camera optical frame in the world frame [m]; None:
                no pose (status ``no_pose``).
            config: the current ``pipeline.multiview`` (live settings).

        Raises:
            ShapeError, InputError: a bad image or K (a bad pose is status ``bad_pose``).
        """
        t0 = time.perf_counter()
        status, detail, depth = DEPTH_NO_POSE, DEPTH_STATUS_NOTES[DEPTH_NO_POSE], None
        confidence = None
        if camera_to_world is not None:
            try:
                pose = check_pose(camera_to_world)
            except InputError as err:
                status, detail = DEPTH_BAD_POSE, str(err)
            else:
                with self._lock:
                    settings = motion_depth_settings(config)
                    if settings != self._settings:  # live change: a new window
                        self._estimator = MotionDepthEstimator(settings, self._refiner)
                        self._settings = settings
                    result = self._estimator.estimate(image_rgb, K, pose, stamp)
                status = result.status
                detail = result.note or DEPTH_STATUS_NOTES.get(status, "")
                if status in (DEPTH_OK, DEPTH_CARRIED):
                    depth = result.depth
                    confidence = _depth_confidence(result.confidence, depth)
        fallback = False
        if depth is None and self.fallback is not None:
            depth = np.asarray(self.fallback.estimate(image_rgb, K), np.float32)
            fallback = True
        return DepthEstimate(depth, status, fallback, detail, 1e3 * (time.perf_counter() - t0),
                             confidence)


def _depth_confidence(confidence: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """The estimator's confidence (H, W) -> float32 in [0, 1], NaN where `depth` is not finite.

    The estimator gives 0 where it has no depth; NaN marks those pixels as the depth does.
    """
    conf = np.clip(np.asarray(confidence, np.float32), 0.0, 1.0)
    return np.where(np.isfinite(depth), conf, np.float32(np.nan)).astype(np.float32)


def _warm_up(settings: MotionDepthSettings) -> None:
    """Two small textured frames 0.3 m apart through a throwaway estimator.

    Loads the compiled kernels (numba's disk cache) and OpenCV's SIFT; the result is not used.
    """
    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(rng.integers(0, 256, (48, 96)).astype(np.uint8), (0, 0), 1.0)
    K = np.array([[60.0, 0.0, 31.5], [0.0, 60.0, 23.5], [0.0, 0.0, 1.0]])
    warm = MotionDepthEstimator(dataclasses.replace(settings, internal_width=64))
    for k in range(2):
        T = np.eye(4)
        T[0, 3] = 0.3 * k  # more than the largest min_baseline_m
        shift = 4 * k
        rgb = np.repeat(texture[:, shift:shift + 64, None], 3, axis=2)
        warm.estimate(np.ascontiguousarray(rgb), K, T, float(k))
